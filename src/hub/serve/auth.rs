//! Who is calling and what they may touch: the bearer token (a configured token or a
//! short-lived OIDC grant), `GET /api/whoami-v2`, `POST /oauth/token`, and the handler
//! preamble ([`Who::read`], [`Who::write`]: repo lookup and permission in one call).

use super::{base_url, fail, fail_code, json_reply, oidc, store::CommitRec, BodyBytes, HubFail, Reply, Shared, State};
use crate::hub::protocol::*;
use crate::repo_id::{RepoId, RepoRef, RepoType};
use axum::extract::{Extension, State as S};
use axum::http::{header, HeaderMap, StatusCode};
use std::collections::HashMap;

/// Who is calling: a configured token, or a short-lived token from an OIDC exchange that may
/// touch only `scope`.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub user: String,
    pub role: String,
    pub display: String,
    pub scope: Option<RepoId>,
}

/// The caller of a request (None: no `Authorization` header), put in the request's extensions
/// by [`super::gate`].
#[derive(Debug, Clone)]
pub(super) struct Who(pub Option<Caller>);

impl Who {
    pub fn caller(&self) -> Option<&Caller> {
        self.0.as_ref()
    }

    /// Read access to `repo`: it exists and, if private, the caller owns it.
    pub fn read(&self, state: &State, repo: RepoRef<'_>) -> Result<(), HubFail> {
        require_read(state, self.caller(), repo)
    }

    /// Write access to an existing repo: the token may write to `repo`, and the repo exists.
    pub fn write(&self, state: &State, repo: RepoRef<'_>) -> Result<&Caller, HubFail> {
        let t = require_write(self.caller(), repo)?;
        require_read(state, self.caller(), repo)?;
        Ok(t)
    }
}

pub(super) fn authenticate(state: &State, headers: &HeaderMap) -> Result<Option<Caller>, HubFail> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().unwrap_or("");
    let secret = value.strip_prefix("Bearer ").unwrap_or("");
    let invalid = || fail(StatusCode::UNAUTHORIZED, "Invalid credentials in Authorization header");
    if secret.is_empty() {
        return Err(invalid());
    }
    if let Some(t) = state.cfg.tokens.iter().find(|t| t.secret == secret) {
        return Ok(Some(Caller { user: t.user.clone(), role: t.role.clone(), display: format!("offline-{}", t.role), scope: None }));
    }
    match state.grants.lookup(secret) {
        oidc::Lookup::Valid(g) => {
            Ok(Some(Caller { user: g.repo.namespace.clone(), role: "write".into(), display: format!("oidc:{}", g.subject), scope: Some(g.repo) }))
        }
        oidc::Lookup::Expired(g) => Err(fail(
            StatusCode::UNAUTHORIZED,
            format!("Invalid credentials in Authorization header: the short-lived token for {} has expired; exchange a new OIDC id token", g.repo),
        )),
        oidc::Lookup::Unknown => Err(invalid()),
    }
}

/// The token may write to `repo` (a write token of its namespace, or an OIDC grant for it, which
/// names a model repo); says nothing about whether the repo exists.
pub(super) fn require_write<'a>(caller: Option<&'a Caller>, repo: RepoRef<'_>) -> Result<&'a Caller, HubFail> {
    let id = repo.id;
    let t = caller.ok_or_else(|| fail(StatusCode::UNAUTHORIZED, "You must be authenticated to write: pass a token"))?;
    if t.role != "write" {
        return Err(fail(StatusCode::FORBIDDEN, format!("this token is read-only: it cannot write to {id}")));
    }
    if let Some(scope) = &t.scope {
        if scope != id || repo.kind != RepoType::Model {
            return Err(fail(StatusCode::FORBIDDEN, format!("this token is scoped to {scope} and cannot write to {repo}")));
        }
    }
    if t.user != id.namespace {
        return Err(fail(StatusCode::FORBIDDEN, format!("you ({}) have no write access to the namespace {}", t.user, id.namespace)));
    }
    Ok(t)
}

/// A private repo is visible only to its owner (and to a token scoped to it); others get the
/// Hub's "not found".
pub(super) fn require_read(state: &State, caller: Option<&Caller>, repo: RepoRef<'_>) -> Result<(), HubFail> {
    let id = repo.id;
    let owner = |t: &Caller| t.user == id.namespace && t.scope.as_ref().is_none_or(|s| s == id && repo.kind == RepoType::Model);
    match state.repos(repo.kind).meta(id) {
        Some(m) if !m.private || caller.is_some_and(owner) => Ok(()),
        _ => Err(fail_code(StatusCode::NOT_FOUND, "RepoNotFound", format!("Repository Not Found for url: {id}"))),
    }
}

/// The commit a revision (branch, `refs/pr/N`, or a commit id) points to.
pub(super) fn head_of(state: &State, repo: RepoRef<'_>, rev: &str) -> Result<String, HubFail> {
    state.repos(repo.kind).resolve(repo.id, rev).ok_or_else(|| fail_code(StatusCode::NOT_FOUND, "RevisionNotFound", format!("Invalid rev id: {rev}")))
}

/// The commit a revision points to, read: (its id, the commit).
pub(super) fn commit_at(state: &State, repo: RepoRef<'_>, rev: &str) -> Result<(String, CommitRec), HubFail> {
    let oid = head_of(state, repo, rev)?;
    let c = state.repos(repo.kind).commit(repo.id, &oid).ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "missing commit"))?;
    Ok((oid, c))
}

/// `GET /api/whoami-v2`.
pub(super) async fn whoami(Extension(who): Extension<Who>) -> Reply {
    let t = who.caller().ok_or_else(|| fail(StatusCode::UNAUTHORIZED, "Invalid credentials in Authorization header"))?;
    // A repo-scoped token looks like a fine-grained token with write access to that one repo.
    let (role, fine_grained) = match &t.scope {
        Some(repo) => (
            TokenRole::FineGrained,
            Some(FineGrained {
                global: vec![],
                scoped: vec![Scoped {
                    entity: Entity { kind: "model".into(), name: repo.to_string() },
                    permissions: vec!["repo.content.read".into(), "repo.write".into()],
                }],
            }),
        ),
        None => (TokenRole::from_name(&t.role), None),
    };
    let who = WhoAmI {
        kind: "user".into(),
        name: t.user.clone(),
        fullname: Some(t.user.clone()),
        orgs: vec![],
        auth: Some(AuthInfo { kind: "access_token".into(), access_token: Some(AccessToken { display_name: t.display.clone(), role, fine_grained }) }),
    };
    json_reply(StatusCode::OK, &who)
}

/// `POST /oauth/token`: RFC 8693 token exchange of a CI's OIDC id token (JSON, as
/// huggingface_hub sends it, or a form, as RFC 8693 describes it).
pub(super) async fn token_exchange(S(state): S<Shared>, headers: HeaderMap, BodyBytes(body): BodyBytes) -> Reply {
    let oauth = |status: StatusCode, error: &'static str, message: String| HubFail { oauth_error: Some(error), ..fail(status, message) };
    let is_form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let req: TokenExchangeRequest = if is_form {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        TokenExchangeRequest {
            grant_type: field("grant_type"),
            subject_token_type: field("subject_token_type"),
            subject_token: field("subject_token"),
            resource: form.get("resource").cloned(),
        }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| oauth(StatusCode::BAD_REQUEST, "invalid_request", format!("invalid token exchange request: {e}")))?
    };
    if req.grant_type != TOKEN_EXCHANGE_GRANT {
        return Err(oauth(StatusCode::BAD_REQUEST, "unsupported_grant_type", format!("grant_type must be {TOKEN_EXCHANGE_GRANT}")));
    }
    if req.subject_token_type != ID_TOKEN_TYPE && req.subject_token_type != JWT_TOKEN_TYPE {
        return Err(oauth(StatusCode::BAD_REQUEST, "invalid_request", format!("subject_token_type must be {ID_TOKEN_TYPE}")));
    }
    let resource = req.resource.as_deref().unwrap_or("");
    let repo = RepoId::parse(resource).map_err(|e| {
        oauth(StatusCode::BAD_REQUEST, "invalid_target", format!("resource must be the model repo to publish to (namespace/name): {e}"))
    })?;
    let Some(trust) = &state.cfg.oidc else {
        return Err(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "this Hub trusts no OIDC issuer (start it with --trust-issuer and --trust-subject)".into(),
        ));
    };
    let grant = trust
        .verify(&req.subject_token, &repo, &base_url(&headers))
        .map_err(|r| oauth(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST), r.error, r.description))?;
    let ttl = trust.token_ttl.as_secs();
    let secret = state.grants.issue(grant);
    json_reply(
        StatusCode::OK,
        &TokenExchangeResponse {
            access_token: secret,
            issued_token_type: Some(ACCESS_TOKEN_TYPE.into()),
            token_type: "bearer".into(),
            expires_in: Some(ttl),
        },
    )
}
