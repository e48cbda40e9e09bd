//! `hfsky hub serve`: an offline Hub on loopback that speaks the Hub's HTTP protocol
//! (whoami-v2, repos, tree, paths-info, preupload, LFS batch basic/multipart, NDJSON commit,
//! resolve with the Hub's headers and redirects, validate-yaml), with auth and fault injection;
//! and the Inference Providers' text-to-image routes, rendered locally (see `inference`).

mod faults;
mod inference;
mod oidc;
mod store;

pub use faults::Faults;
pub use inference::{InferenceConfig, InferenceRenderer, RenderFailure, RenderJob, RenderProfile, RenderedPng, REPLICATE_LORA_MODEL};
pub use oidc::{OidcTrust, TrustedIssuer, TrustedSubject};
pub use store::Store;

use crate::hash::sha256_hex;
use crate::hub::protocol::*;
use crate::repo_id::{validate_repo_path, RepoId};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use base64::Engine;
use futures_util::StreamExt;
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use store::FileRec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub user: String,
    pub role: String,
    pub secret: String,
}

impl TokenSpec {
    /// `NAME:ROLE:SECRET`, role `read` or `write`.
    pub fn parse(s: &str) -> Result<TokenSpec, String> {
        let mut it = s.splitn(3, ':');
        let (user, role, secret) = match (it.next(), it.next(), it.next()) {
            (Some(u), Some(r), Some(t)) => (u, r, t),
            _ => return Err("--token expects NAME:ROLE:SECRET (e.g. alice:write:hf_xxx)".into()),
        };
        if RepoId::parse(&format!("{user}/x")).is_err() {
            return Err(format!("--token: {user:?} is not a valid user name"));
        }
        if !matches!(role, "read" | "write") {
            return Err(format!("--token: role must be read or write, got {role:?}"));
        }
        crate::token::Token::parse(secret).map_err(|e| format!("--token: {e}"))?;
        Ok(TokenSpec { user: user.into(), role: role.into(), secret: secret.into() })
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub root: PathBuf,
    pub tokens: Vec<TokenSpec>,
    pub faults: Option<Arc<Faults>>,
    /// LFS objects larger than this are uploaded in parts of this size.
    pub multipart_chunk: u64,
    /// Largest JSON/NDJSON request body accepted (LFS uploads stream and are not limited).
    pub max_body: usize,
    /// Trusted Publishers: which CI id tokens `/oauth/token` exchanges, for which repos.
    pub oidc: Option<OidcTrust>,
    /// The inference routes and provider mappings; `None`: no inference.
    pub inference: Option<InferenceConfig>,
}

/// Who is calling: a configured token, or a short-lived token from an OIDC exchange that may
/// touch only `scope`.
#[derive(Debug, Clone)]
struct Caller {
    user: String,
    role: String,
    display: String,
    scope: Option<RepoId>,
}

struct Upload {
    oid: String,
    size: u64,
}

struct State {
    cfg: ServeConfig,
    /// Port of the storage listener that LFS downloads redirect to. A different origin, like
    /// the Hub's CDN: clients then read the file metadata from the 302 itself, as they must.
    storage_port: u16,
    store: Store,
    uploads: Mutex<HashMap<String, Upload>>,
    grants: oidc::Grants,
    // Serialises ref updates so parentCommit checks and commits are atomic.
    commit_lock: tokio::sync::Mutex<()>,
    infer: inference::InferState,
}

/// An HTTP error the way the Hub sends it: status, `X-Error-Code`, `X-Error-Message`, JSON body.
#[derive(Debug)]
struct HubFail {
    status: StatusCode,
    code: Option<&'static str>,
    message: String,
    headers: Vec<(&'static str, String)>,
    /// OAuth endpoints answer `{"error": code, "error_description": message}` (RFC 6749 §5.2).
    oauth_error: Option<&'static str>,
}

fn fail(status: StatusCode, message: impl Into<String>) -> HubFail {
    HubFail { status, code: None, message: message.into(), headers: vec![], oauth_error: None }
}

fn fail_code(status: StatusCode, code: &'static str, message: impl Into<String>) -> HubFail {
    HubFail { status, code: Some(code), message: message.into(), headers: vec![], oauth_error: None }
}

impl HubFail {
    fn into_response(self) -> Response<Body> {
        let body = match self.oauth_error {
            Some(e) => serde_json::json!({ "error": e, "error_description": self.message }).to_string(),
            None => serde_json::json!({ "error": self.message }).to_string(),
        };
        let mut r = Response::builder().status(self.status).header(header::CONTENT_TYPE, "application/json");
        if let Some(code) = self.code {
            r = r.header("X-Error-Code", code);
        }
        if let Ok(v) = HeaderValue::from_str(&self.message.replace(['\n', '\r'], " ")) {
            r = r.header("X-Error-Message", v);
        }
        for (k, v) in self.headers {
            r = r.header(k, v);
        }
        r.body(Body::from(body)).expect("valid response")
    }
}

type Reply = Result<Response<Body>, HubFail>;

fn json_reply<T: serde::Serialize>(status: StatusCode, v: &T) -> Reply {
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(v).expect("serializable")))
        .expect("valid response"))
}

fn io_fail(e: std::io::Error) -> HubFail {
    fail(StatusCode::INTERNAL_SERVER_ERROR, format!("storage error: {e}"))
}

/// Binds the Hub and its storage listener and serves until the process ends. Reports the
/// Hub's bound address via `on_ready`.
pub async fn serve(cfg: ServeConfig, addr: std::net::SocketAddr, on_ready: impl FnOnce(std::net::SocketAddr)) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let storage = tokio::net::TcpListener::bind(std::net::SocketAddr::new(addr.ip(), 0)).await?;
    let app = router(cfg, storage.local_addr()?.port())?;
    on_ready(listener.local_addr()?);
    let hub = axum::serve(listener, app.clone());
    let cdn = axum::serve(storage, app);
    tokio::try_join!(async { hub.await }, async { cdn.await })?;
    Ok(())
}

pub fn router(cfg: ServeConfig, storage_port: u16) -> std::io::Result<axum::Router> {
    let store = Store::open(&cfg.root)?;
    let state = Arc::new(State {
        cfg,
        storage_port,
        store,
        uploads: Mutex::new(HashMap::new()),
        grants: oidc::Grants::default(),
        commit_lock: tokio::sync::Mutex::new(()),
        infer: inference::InferState::default(),
    });
    Ok(axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Body| {
        let state = state.clone();
        async move { handle(state, method, uri, headers, body).await }
    }))
}

async fn handle(state: Arc<State>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response<Body> {
    let request_id = format!("req-{:016x}", rand::random::<u64>());
    let mut resp = if let Some(fault) = state.cfg.faults.as_ref().and_then(|f| f.draw()) {
        injected(fault, &state)
    } else {
        match route(&state, &method, &uri, &headers, body).await {
            Ok(r) => r,
            Err(f) => f.into_response(),
        }
    };
    resp.headers_mut().insert("X-Request-Id", HeaderValue::from_str(&request_id).expect("ascii"));
    resp
}

fn injected(fault: faults::Fault, state: &State) -> Response<Body> {
    match fault {
        faults::Fault::ServerError => fail(StatusCode::INTERNAL_SERVER_ERROR, "injected fault: internal error").into_response(),
        faults::Fault::TooManyRequests => {
            let secs = state.cfg.faults.as_ref().map(|f| f.retry_after_secs).unwrap_or(1);
            let mut f = fail(StatusCode::TOO_MANY_REQUESTS, "injected fault: rate limited");
            f.headers.push(("Retry-After", secs.to_string()));
            f.into_response()
        }
        faults::Fault::Drop => {
            // A body that fails mid-stream makes hyper abort the connection: the client sees a reset.
            let stream = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"partial\":")),
                Err(std::io::Error::other("injected fault: connection dropped")),
            ]);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, "4096")
                .body(Body::from_stream(stream))
                .expect("valid response")
        }
    }
}

fn decode(seg: &str) -> Result<String, HubFail> {
    percent_decode(seg).ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("bad percent-encoding in {seg:?}")))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `expand=a&expand[]=b` (huggingface_hub sends the first form, browsers the second).
fn expands(uri: &Uri) -> Vec<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "expand" || k == "expand[]")
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

/// Where LFS downloads are redirected: the request's host name on the storage port.
fn storage_url(state: &State, headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    format!("http://{name}:{}", state.storage_port)
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

async fn route(state: &Arc<State>, method: &Method, uri: &Uri, headers: &HeaderMap, body: Body) -> Reply {
    let raw: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let seg = |i: usize| raw.get(i).copied().unwrap_or("");
    if let (&Method::POST, ["oauth", "token"]) = (method, raw.as_slice()) {
        let bytes = read_body(state, body).await?;
        return token_exchange(state, headers, &bytes);
    }
    let caller = authenticate(state, headers)?;
    let caller = caller.as_ref();
    match (method.clone(), raw.as_slice()) {
        (Method::GET, ["api", "whoami-v2"]) => whoami(caller),
        (Method::POST, ["api", "models", _, _, "branch", _]) => {
            let id = repo_id(seg(2), seg(3))?;
            let branch = decode(seg(5))?;
            let bytes = read_body(state, body).await?;
            create_branch(state, caller, &id, &branch, &bytes).await
        }
        (Method::POST, ["api", "repos", "create"]) => create_repo(state, caller, read_json(state, body).await?),
        (Method::POST, ["api", "validate-yaml"]) => validate_yaml(read_json(state, body).await?),
        (Method::GET, ["api", "models", _, _]) | (Method::GET, ["api", "models", _, _, "revision", _]) => {
            let id = repo_id(seg(2), seg(3))?;
            let rev = if raw.len() == 6 { decode(seg(5))? } else { "main".into() };
            model_info(state, caller, &id, &rev, &expands(uri), headers)
        }
        (Method::GET, ["api", "models", _, _, "tree", _, ..]) => {
            let id = repo_id(seg(2), seg(3))?;
            let rev = decode(seg(5))?;
            let sub = raw[6..].iter().map(|s| decode(s)).collect::<Result<Vec<_>, _>>()?.join("/");
            tree(state, caller, &id, &rev, &sub, &query(uri), headers)
        }
        (Method::POST, ["api", "models", _, _, "paths-info", _]) => {
            let id = repo_id(seg(2), seg(3))?;
            let rev = decode(seg(5))?;
            let bytes = read_body(state, body).await?;
            paths_info(state, caller, &id, &rev, &bytes)
        }
        (Method::POST, ["api", "models", _, _, "preupload", _]) => {
            let id = repo_id(seg(2), seg(3))?;
            let rev = decode(seg(5))?;
            preupload(state, caller, &id, &rev, read_json(state, body).await?)
        }
        (Method::POST, ["api", "models", _, _, "commit", _]) => {
            let id = repo_id(seg(2), seg(3))?;
            let rev = decode(seg(5))?;
            let create_pr = matches!(query(uri).get("create_pr").map(String::as_str), Some("1" | "true" | "True"));
            let bytes = read_body(state, body).await?;
            commit(state, caller, &id, &rev, create_pr, &bytes, headers).await
        }
        (Method::POST, [ns, name_git, "info", "lfs", "objects", "batch"]) if name_git.ends_with(".git") => {
            let id = repo_id(ns, name_git.trim_end_matches(".git"))?;
            lfs_batch(state, caller, &id, read_json(state, body).await?, headers)
        }
        (Method::PUT, ["lfs-upload", upload_id]) => put_basic(state, upload_id, body).await,
        (Method::PUT, ["lfs-upload", upload_id, "part", n]) => put_part(state, upload_id, n, body).await,
        (Method::POST, ["lfs-upload", upload_id, "complete"]) => {
            let req: CompleteMultipart = read_json(state, body).await?;
            complete_multipart(state, upload_id, req)
        }
        (Method::POST, ["lfs-verify", ns, name]) => {
            let id = repo_id(ns, name)?;
            let req: LfsObject = read_json(state, body).await?;
            verify(state, caller, &id, req)
        }
        (Method::GET | Method::HEAD, ["lfs-objects", oid]) => lfs_object(state, oid, method == Method::HEAD).await,
        (Method::POST, ["hf-inference", "models", ns, name]) => {
            let route = inference::Route::HfInference(repo_id(ns, name)?);
            inference::answer(state, caller, route, &read_body(state, body).await?, headers).await
        }
        (Method::POST, ["fal-ai", rest @ ..]) if !rest.is_empty() => {
            let route = inference::Route::FalAi(rest.join("/"));
            inference::answer(state, caller, route, &read_body(state, body).await?, headers).await
        }
        (Method::POST, ["replicate", "v1", "models", owner, name, "predictions"]) => {
            let route = inference::Route::Replicate(Some(format!("{}/{}", decode(owner)?, decode(name)?)));
            inference::answer(state, caller, route, &read_body(state, body).await?, headers).await
        }
        (Method::POST, ["replicate", "v1", "predictions"]) => {
            inference::answer(state, caller, inference::Route::Replicate(None), &read_body(state, body).await?, headers).await
        }
        (Method::GET, ["inference-outputs", file]) => inference::output(state, file),
        (Method::GET | Method::HEAD, [ns, name, "resolve", rev, ..]) if raw.len() > 4 => {
            let id = repo_id(ns, name)?;
            let rev = decode(rev)?;
            let path = raw[4..].iter().map(|s| decode(s)).collect::<Result<Vec<_>, _>>()?.join("/");
            resolve(state, caller, &id, &rev, &path, method == Method::HEAD, headers).await
        }
        _ => Err(fail(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))),
    }
}

fn repo_id(ns: &str, name: &str) -> Result<RepoId, HubFail> {
    let ns = decode(ns)?;
    let name = decode(name)?;
    RepoId::parse(&format!("{ns}/{name}")).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn read_body(state: &State, body: Body) -> Result<bytes::Bytes, HubFail> {
    axum::body::to_bytes(body, state.cfg.max_body)
        .await
        .map_err(|_| fail(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {} bytes", state.cfg.max_body)))
}

async fn read_json<T: serde::de::DeserializeOwned>(state: &State, body: Body) -> Result<T, HubFail> {
    let bytes = read_body(state, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

// ---- auth ----

fn authenticate(state: &State, headers: &HeaderMap) -> Result<Option<Caller>, HubFail> {
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

fn require_write<'a>(caller: Option<&'a Caller>, id: &RepoId) -> Result<&'a Caller, HubFail> {
    let t = caller.ok_or_else(|| fail(StatusCode::UNAUTHORIZED, "You must be authenticated to write: pass a token"))?;
    if t.role != "write" {
        return Err(fail(StatusCode::FORBIDDEN, format!("this token is read-only: it cannot write to {id}")));
    }
    if let Some(scope) = &t.scope {
        if scope != id {
            return Err(fail(StatusCode::FORBIDDEN, format!("this token is scoped to {scope} and cannot write to {id}")));
        }
    }
    if t.user != id.namespace {
        return Err(fail(StatusCode::FORBIDDEN, format!("you ({}) have no write access to the namespace {}", t.user, id.namespace)));
    }
    Ok(t)
}

/// A private repo is visible only to its owner (and to a token scoped to it); others get the
/// Hub's "not found".
fn require_read(state: &State, caller: Option<&Caller>, id: &RepoId) -> Result<(), HubFail> {
    let owner = |t: &Caller| t.user == id.namespace && t.scope.as_ref().is_none_or(|s| s == id);
    match state.store.meta(id) {
        Some(m) if !m.private || caller.is_some_and(owner) => Ok(()),
        _ => Err(fail_code(StatusCode::NOT_FOUND, "RepoNotFound", format!("Repository Not Found for url: {id}"))),
    }
}

fn head_of(state: &State, id: &RepoId, rev: &str) -> Result<String, HubFail> {
    state.store.resolve(id, rev).ok_or_else(|| fail_code(StatusCode::NOT_FOUND, "RevisionNotFound", format!("Invalid rev id: {rev}")))
}

// ---- endpoints ----

fn whoami(caller: Option<&Caller>) -> Reply {
    let t = caller.ok_or_else(|| fail(StatusCode::UNAUTHORIZED, "Invalid credentials in Authorization header"))?;
    // A repo-scoped token looks like a fine-grained token with write access to that one repo.
    let (role, fine_grained) = match &t.scope {
        Some(repo) => (
            "fineGrained".to_string(),
            Some(FineGrained {
                global: vec![],
                scoped: vec![Scoped {
                    entity: Entity { kind: "model".into(), name: repo.to_string() },
                    permissions: vec!["repo.content.read".into(), "repo.write".into()],
                }],
            }),
        ),
        None => (t.role.clone(), None),
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
fn token_exchange(state: &State, headers: &HeaderMap, body: &[u8]) -> Reply {
    let oauth = |status: StatusCode, error: &'static str, message: String| HubFail { oauth_error: Some(error), ..fail(status, message) };
    let is_form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let req: TokenExchangeRequest = if is_form {
        let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        TokenExchangeRequest {
            grant_type: field("grant_type"),
            subject_token_type: field("subject_token_type"),
            subject_token: field("subject_token"),
            resource: form.get("resource").cloned(),
        }
    } else {
        serde_json::from_slice(body).map_err(|e| oauth(StatusCode::BAD_REQUEST, "invalid_request", format!("invalid token exchange request: {e}")))?
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
        .verify(&req.subject_token, &repo, &base_url(headers))
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

/// `POST /api/models/{repo}/branch/{branch}`: a new branch at `startingPoint` (default: main).
async fn create_branch(state: &State, caller: Option<&Caller>, id: &RepoId, branch: &str, body: &[u8]) -> Reply {
    require_write(caller, id)?;
    require_read(state, caller, id)?;
    let req: CreateBranchRequest = if body.is_empty() {
        CreateBranchRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?
    };
    if branch.is_empty() || branch.starts_with("refs/") || branch.contains("..") || branch.chars().any(|c| c.is_whitespace() || c == '~' || c == ':')
    {
        return Err(fail(StatusCode::BAD_REQUEST, format!("invalid branch name {branch:?}")));
    }
    let _guard = state.commit_lock.lock().await;
    if state.store.refs(id).contains_key(branch) {
        return Err(fail(StatusCode::CONFLICT, format!("branch {branch} already exists")));
    }
    let start = head_of(state, id, req.starting_point.as_deref().unwrap_or("main"))?;
    state.store.set_ref(id, branch, &start).map_err(io_fail)?;
    json_reply(StatusCode::OK, &serde_json::json!({}))
}

fn create_repo(state: &State, caller: Option<&Caller>, req: CreateRepoRequest) -> Reply {
    if req.kind.as_deref().is_some_and(|k| k != "model") {
        return Err(fail(StatusCode::BAD_REQUEST, "the offline Hub serves model repos only"));
    }
    let ns = match req.organization.clone() {
        Some(o) => o,
        None => caller.map(|t| t.user.clone()).unwrap_or_default(),
    };
    let id = RepoId::parse(&format!("{ns}/{}", req.name)).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
    require_write(caller, &id)?;
    let private = req.private.unwrap_or(false) || req.visibility.as_deref() == Some("private");
    let url = format!("/{id}");
    if !state.store.create_repo(&id, private).map_err(io_fail)? {
        let body = serde_json::json!({ "error": "You already created this model repo", "url": url });
        return json_reply(StatusCode::CONFLICT, &body);
    }
    json_reply(StatusCode::OK, &serde_json::json!({ "url": url, "name": id.to_string(), "id": id.to_string() }))
}

fn validate_yaml(req: serde_json::Value) -> Reply {
    let content = req["content"].as_str().unwrap_or("");
    let errors = match front_matter(content) {
        Ok(_) => vec![],
        Err(e) => vec![serde_json::json!({ "message": e })],
    };
    if errors.is_empty() {
        json_reply(StatusCode::OK, &serde_json::json!({ "warnings": [] }))
    } else {
        json_reply(StatusCode::BAD_REQUEST, &serde_json::json!({ "errors": errors }))
    }
}

/// The YAML metadata block of a model card, as a mapping (empty when there is none).
pub fn front_matter(readme: &str) -> Result<serde_json::Value, String> {
    let Some(rest) = readme.strip_prefix("---\n").or_else(|| readme.strip_prefix("---\r\n")) else {
        return Ok(serde_json::json!({}));
    };
    let end = rest.find("\n---").ok_or("the metadata block opened with --- is never closed")?;
    let yaml = &rest[..end];
    let v: serde_json::Value = serde_yaml::from_str(yaml).map_err(|e| format!("invalid YAML metadata: {e}"))?;
    match v {
        serde_json::Value::Object(_) => Ok(v),
        serde_json::Value::Null => Ok(serde_json::json!({})),
        _ => Err("the metadata must be a YAML mapping".into()),
    }
}

/// The metadata of a commit's model card (None without a README or with broken metadata).
fn card_of(state: &State, c: &store::CommitRec) -> Option<serde_json::Value> {
    let readme = c.files.get("README.md")?;
    front_matter(&std::fs::read_to_string(state.store.blob_path(&readme.sha256)).ok()?).ok()
}

/// Model info; with `expand`, only `id` and the expanded properties, as the Hub answers.
fn model_info(state: &State, caller: Option<&Caller>, id: &RepoId, rev: &str, expand: &[String], headers: &HeaderMap) -> Reply {
    require_read(state, caller, id)?;
    let meta = state.store.meta(id).expect("checked by require_read");
    let oid = head_of(state, id, rev)?;
    let c = state.store.commit(id, &oid).ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "missing commit"))?;
    let card = card_of(state, &c);
    let mut tags: Vec<String> =
        card.as_ref().and_then(|c| c["tags"].as_array().cloned()).unwrap_or_default().iter().filter_map(|t| t.as_str().map(String::from)).collect();
    tags.dedup();
    let pipeline_tag = inference::pipeline_tag(&c, card.as_ref());
    let library_name = card.as_ref().and_then(|c| c["library_name"].as_str()).map(String::from);
    let mappings = expand.iter().any(|e| e == "inferenceProviderMapping").then(|| inference::mappings(state, &c, card.as_ref(), meta.private, id));
    let info = ModelInfo {
        id: id.to_string(),
        author: Some(id.namespace.clone()),
        sha: Some(oid),
        private: meta.private,
        last_modified: Some(c.date.clone()),
        created_at: Some(meta.created_at),
        tags,
        siblings: c.files.iter().map(|(p, f)| sibling(p, f)).collect(),
        card_data: card,
    };
    let mut v = serde_json::to_value(&info).expect("serializable");
    v["modelId"] = serde_json::json!(id.to_string());
    v["_links"] = serde_json::json!({ "self": format!("{}/{id}", base_url(headers)) });
    if let Some(t) = pipeline_tag {
        v["pipeline_tag"] = t.into();
    }
    if let Some(l) = library_name {
        v["library_name"] = l.into();
    }
    let serde_json::Value::Object(mut all) = v else { unreachable!("model info is an object") };
    if expand.is_empty() {
        return json_reply(StatusCode::OK, &all);
    }
    let mut picked = serde_json::Map::new();
    for key in ["_id", "id"].iter().map(|k| k.to_string()).chain(expand.iter().cloned()) {
        if let Some(val) = all.remove(&key) {
            picked.insert(key, val);
        }
    }
    match &mappings {
        Some(m) => json_reply(StatusCode::OK, &inference::WithMappings { info: &picked, mappings: inference::Ordered(m) }),
        None => json_reply(StatusCode::OK, &picked),
    }
}

fn sibling(path: &str, f: &FileRec) -> Sibling {
    Sibling {
        rfilename: path.to_string(),
        size: Some(f.size),
        blob_id: Some(f.git_sha1.clone()),
        lfs: f.lfs.then(|| LfsPointerInfo {
            sha256: Some(f.sha256.clone()),
            oid: None,
            size: f.size,
            pointer_size: crate::hash::lfs_pointer(&f.sha256, f.size).len() as u64,
        }),
    }
}

fn tree_entry(path: &str, f: &FileRec) -> TreeEntry {
    TreeEntry {
        kind: "file".into(),
        path: path.into(),
        oid: f.git_sha1.clone(),
        size: f.size,
        lfs: f.lfs.then(|| LfsPointerInfo {
            sha256: None,
            oid: Some(f.sha256.clone()),
            size: f.size,
            pointer_size: crate::hash::lfs_pointer(&f.sha256, f.size).len() as u64,
        }),
    }
}

fn dir_entry(path: &str) -> TreeEntry {
    TreeEntry { kind: "directory".into(), path: path.into(), oid: crate::hash::git_blob_sha1(path.as_bytes()), size: 0, lfs: None }
}

const TREE_PAGE: usize = 1000;

fn tree(state: &State, caller: Option<&Caller>, id: &RepoId, rev: &str, sub: &str, q: &HashMap<String, String>, headers: &HeaderMap) -> Reply {
    require_read(state, caller, id)?;
    let oid = head_of(state, id, rev)?;
    let c = state.store.commit(id, &oid).ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "missing commit"))?;
    let recursive = matches!(q.get("recursive").map(String::as_str), Some("true" | "1" | "True"));
    let prefix = if sub.is_empty() { String::new() } else { format!("{sub}/") };
    let mut dirs = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for (p, f) in &c.files {
        let Some(rest) = p.strip_prefix(&prefix) else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        for i in 1..parts.len() {
            if recursive || i == 1 {
                dirs.insert(format!("{prefix}{}", parts[..i].join("/")));
            }
        }
        if recursive || parts.len() == 1 {
            entries.push(tree_entry(p, f));
        }
    }
    if !sub.is_empty() && entries.is_empty() && dirs.is_empty() {
        return Err(fail_code(StatusCode::NOT_FOUND, "EntryNotFound", format!("{sub} does not exist at {rev}")));
    }
    let mut all: Vec<TreeEntry> = dirs.iter().map(|d| dir_entry(d)).collect();
    all.extend(entries);
    all.sort_by(|a, b| a.path.cmp(&b.path));
    let start: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let page: Vec<_> = all.iter().skip(start).take(TREE_PAGE).cloned().collect();
    let mut resp = json_reply(StatusCode::OK, &page)?;
    if start + TREE_PAGE < all.len() {
        let next = format!(
            "{}/api/models/{id}/tree/{}{}?recursive={recursive}&expand=false&cursor={}",
            base_url(headers),
            encode_segment(rev),
            if sub.is_empty() { String::new() } else { format!("/{}", encode_path(sub)) },
            start + TREE_PAGE
        );
        resp.headers_mut().insert(header::LINK, HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).expect("ascii"));
    }
    Ok(resp)
}

fn paths_info(state: &State, caller: Option<&Caller>, id: &RepoId, rev: &str, body: &[u8]) -> Reply {
    require_read(state, caller, id)?;
    let oid = head_of(state, id, rev)?;
    let c = state.store.commit(id, &oid).ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "missing commit"))?;
    // huggingface_hub sends a form (`paths=a&paths=b`), huggingface.js sends JSON.
    let paths: Vec<String> = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v["paths"].as_array().map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect()).unwrap_or_default(),
        Err(_) => url::form_urlencoded::parse(body).filter(|(k, _)| k == "paths").map(|(_, v)| v.into_owned()).collect(),
    };
    let mut out = Vec::new();
    for p in paths {
        if let Some(f) = c.files.get(&p) {
            out.push(tree_entry(&p, f));
        } else if c.files.keys().any(|k| k.starts_with(&format!("{p}/"))) {
            out.push(dir_entry(&p));
        }
    }
    json_reply(StatusCode::OK, &out)
}

fn preupload(state: &State, caller: Option<&Caller>, id: &RepoId, rev: &str, req: PreuploadRequest) -> Reply {
    require_write(caller, id)?;
    require_read(state, caller, id)?;
    let oid = head_of(state, id, rev)?;
    let c = state.store.commit(id, &oid).ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "missing commit"))?;
    let mut files = Vec::with_capacity(req.files.len());
    for f in req.files {
        validate_repo_path(&f.path).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
        let sample = base64::engine::general_purpose::STANDARD
            .decode(&f.sample)
            .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("sample of {} is not base64", f.path)))?;
        let lfs = likely_lfs(&f.path, f.size, &sample);
        let remote = c.files.get(&f.path).map(|r| if lfs { r.sha256.clone() } else { r.git_sha1.clone() });
        files.push(PreuploadAnswer { path: f.path, upload_mode: if lfs { "lfs" } else { "regular" }.into(), should_ignore: false, oid: remote });
    }
    json_reply(StatusCode::OK, &PreuploadResponse { files })
}

fn lfs_batch(state: &State, caller: Option<&Caller>, id: &RepoId, req: LfsBatchRequest, headers: &HeaderMap) -> Reply {
    require_write(caller, id)?;
    require_read(state, caller, id)?;
    if req.operation != "upload" {
        return Err(fail(StatusCode::BAD_REQUEST, "only the upload operation is supported"));
    }
    let multipart_ok = req.transfers.iter().any(|t| t == "multipart");
    let base = base_url(headers);
    let chunk = state.cfg.multipart_chunk;
    let mut multipart_used = false;
    let mut objects = Vec::with_capacity(req.objects.len());
    for o in req.objects {
        if o.oid.len() != 64 || !o.oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            objects.push(LfsBatchObject {
                oid: o.oid,
                size: o.size,
                authenticated: None,
                actions: None,
                error: Some(LfsObjectError { code: 422, message: "oid must be a sha256 hex digest".into() }),
            });
            continue;
        }
        if state.store.blob_size(&o.oid) == Some(o.size) {
            objects.push(LfsBatchObject { oid: o.oid, size: o.size, authenticated: Some(true), actions: None, error: None });
            continue;
        }
        let upload_id = hex::encode(rand::random::<[u8; 16]>());
        state.uploads.lock().unwrap_or_else(|e| e.into_inner()).insert(upload_id.clone(), Upload { oid: o.oid.clone(), size: o.size });
        let upload = if multipart_ok && o.size > chunk {
            multipart_used = true;
            let mut header = BTreeMap::new();
            header.insert("chunk_size".to_string(), chunk.to_string());
            for n in 1..=o.size.div_ceil(chunk) {
                header.insert(format!("{n:05}"), format!("{base}/lfs-upload/{upload_id}/part/{n}"));
            }
            LfsAction { href: format!("{base}/lfs-upload/{upload_id}/complete"), header, expires_in: Some(86400) }
        } else {
            LfsAction { href: format!("{base}/lfs-upload/{upload_id}"), header: BTreeMap::new(), expires_in: Some(86400) }
        };
        let verify = LfsAction { href: format!("{base}/lfs-verify/{id}"), header: BTreeMap::new(), expires_in: None };
        objects.push(LfsBatchObject {
            oid: o.oid,
            size: o.size,
            authenticated: Some(true),
            actions: Some(LfsActions { upload: Some(upload), verify: Some(verify) }),
            error: None,
        });
    }
    let transfer = if multipart_used { "multipart" } else { "basic" };
    let mut resp = json_reply(StatusCode::OK, &LfsBatchResponse { transfer: Some(transfer.into()), objects })?;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.git-lfs+json"));
    Ok(resp)
}

fn upload_of(state: &State, upload_id: &str) -> Result<(String, u64), HubFail> {
    state
        .uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(upload_id)
        .map(|u| (u.oid.clone(), u.size))
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "unknown or expired upload URL: ask the LFS batch endpoint again"))
}

/// Streams a request body to `path`, refusing more than `limit` bytes; returns (size, sha256).
async fn stream_to_file(body: Body, path: &Path, limit: u64) -> Result<(u64, String), HubFail> {
    let mut file = std::fs::File::create(path).map_err(io_fail)?;
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| fail(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}")))?;
        n += chunk.len() as u64;
        if n > limit {
            let _ = std::fs::remove_file(path);
            return Err(fail(StatusCode::BAD_REQUEST, format!("upload is larger than the announced {limit} bytes")));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io_fail)?;
    }
    file.sync_all().map_err(io_fail)?;
    Ok((n, hex::encode(hasher.finalize())))
}

async fn put_basic(state: &State, upload_id: &str, body: Body) -> Reply {
    let (oid, size) = upload_of(state, upload_id)?;
    let tmp = state.store.uploads_dir().join(format!("{upload_id}.part"));
    let (n, sha) = stream_to_file(body, &tmp, size).await?;
    adopt(state, &tmp, &oid, size, n, &sha)?;
    Ok(Response::builder().status(StatusCode::OK).header(header::ETAG, format!("\"{sha}\"")).body(Body::empty()).expect("valid"))
}

fn adopt(state: &State, tmp: &Path, oid: &str, size: u64, n: u64, sha: &str) -> Result<(), HubFail> {
    if n != size || sha != oid {
        let _ = std::fs::remove_file(tmp);
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("uploaded content does not match: announced {oid} ({size} bytes), received {sha} ({n} bytes)"),
        ));
    }
    state.store.adopt_blob(tmp, oid).map_err(io_fail)
}

async fn put_part(state: &State, upload_id: &str, n: &str, body: Body) -> Reply {
    let (_, size) = upload_of(state, upload_id)?;
    let part: u64 = n.parse().map_err(|_| fail(StatusCode::BAD_REQUEST, "bad part number"))?;
    let chunk = state.cfg.multipart_chunk;
    if part == 0 || part > size.div_ceil(chunk) {
        return Err(fail(StatusCode::BAD_REQUEST, format!("part {part} is out of range")));
    }
    let dir = state.store.uploads_dir().join(upload_id);
    std::fs::create_dir_all(&dir).map_err(io_fail)?;
    let path = dir.join(format!("{part:05}"));
    let (_, sha) = stream_to_file(body, &path, chunk).await?;
    Ok(Response::builder().status(StatusCode::OK).header(header::ETAG, format!("\"{sha}\"")).body(Body::empty()).expect("valid"))
}

fn complete_multipart(state: &State, upload_id: &str, req: CompleteMultipart) -> Reply {
    let (oid, size) = upload_of(state, upload_id)?;
    if req.oid != oid {
        return Err(fail(StatusCode::BAD_REQUEST, "completion oid does not match the upload"));
    }
    let dir = state.store.uploads_dir().join(upload_id);
    let expected = size.div_ceil(state.cfg.multipart_chunk);
    if req.parts.len() as u64 != expected {
        return Err(fail(StatusCode::BAD_REQUEST, format!("expected {expected} parts, got {}", req.parts.len())));
    }
    let tmp = state.store.uploads_dir().join(format!("{upload_id}.joined"));
    let mut out = std::fs::File::create(&tmp).map_err(io_fail)?;
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    let mut parts = req.parts;
    parts.sort_by_key(|p| p.part_number);
    for (i, p) in parts.iter().enumerate() {
        if p.part_number as usize != i + 1 {
            return Err(fail(StatusCode::BAD_REQUEST, format!("part {} is missing", i + 1)));
        }
        let bytes = std::fs::read(dir.join(format!("{:05}", p.part_number)))
            .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("part {} was never uploaded", p.part_number)))?;
        if p.etag.trim_matches('"') != sha256_hex(&bytes) {
            return Err(fail(StatusCode::BAD_REQUEST, format!("ETag of part {} does not match", p.part_number)));
        }
        hasher.update(&bytes);
        out.write_all(&bytes).map_err(io_fail)?;
        n += bytes.len() as u64;
    }
    out.sync_all().map_err(io_fail)?;
    adopt(state, &tmp, &oid, size, n, &hex::encode(hasher.finalize()))?;
    let _ = std::fs::remove_dir_all(&dir);
    state.uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(upload_id);
    json_reply(StatusCode::OK, &serde_json::json!({}))
}

fn verify(state: &State, caller: Option<&Caller>, id: &RepoId, req: LfsObject) -> Reply {
    require_write(caller, id)?;
    match state.store.blob_size(&req.oid) {
        Some(s) if s == req.size => json_reply(StatusCode::OK, &serde_json::json!({})),
        Some(s) => Err(fail(StatusCode::BAD_REQUEST, format!("object {} has {s} bytes, not {}", req.oid, req.size))),
        None => Err(fail(StatusCode::NOT_FOUND, format!("object {} was not uploaded", req.oid))),
    }
}

async fn commit(state: &State, caller: Option<&Caller>, id: &RepoId, rev: &str, create_pr: bool, body: &[u8], headers: &HeaderMap) -> Reply {
    require_write(caller, id)?;
    require_read(state, caller, id)?;
    let text = std::str::from_utf8(body).map_err(|_| fail(StatusCode::BAD_REQUEST, "commit body is not UTF-8"))?;
    let mut lines = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: CommitLine =
            serde_json::from_str(l).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("malformed NDJSON commit line {}: {e}", i + 1)))?;
        lines.push(line);
    }
    let Some(CommitLine::Header { summary, description, parent_commit }) = lines.first().cloned() else {
        return Err(fail(StatusCode::BAD_REQUEST, "the first NDJSON line of a commit must be the header"));
    };
    if summary.trim().is_empty() {
        return Err(fail(StatusCode::BAD_REQUEST, "the commit summary (message) is empty"));
    }
    let _guard = state.commit_lock.lock().await;
    let refs = state.store.refs(id);
    let head = refs.get(rev).cloned().ok_or_else(|| fail_code(StatusCode::NOT_FOUND, "RevisionNotFound", format!("branch {rev} does not exist")))?;
    let base = match parent_commit {
        Some(p) if create_pr => {
            state.store.resolve(id, &p).ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("parentCommit {p} is not a commit of {id}")))?
        }
        Some(p) if !head.starts_with(&p) || p.len() < 5 => {
            return Err(fail(StatusCode::PRECONDITION_FAILED, "A commit has happened since. Please refresh and try again."));
        }
        _ => head.clone(),
    };
    let mut files = state.store.commit(id, &base).map(|c| c.files).unwrap_or_default();
    for line in &lines[1..] {
        match line {
            CommitLine::Header { .. } => return Err(fail(StatusCode::BAD_REQUEST, "only one header line is allowed")),
            CommitLine::File { content, path, encoding } => {
                validate_repo_path(path).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
                let bytes = match encoding.as_str() {
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(content)
                        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("content of {path} is not valid base64")))?,
                    "utf-8" | "utf8" => content.as_bytes().to_vec(),
                    other => return Err(fail(StatusCode::BAD_REQUEST, format!("unknown encoding {other:?} for {path}"))),
                };
                if path == "README.md" {
                    // Like the Hub: a model card whose metadata does not parse is refused.
                    front_matter(&String::from_utf8_lossy(&bytes))
                        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("Invalid metadata in README.md: {e}")))?;
                }
                files.insert(path.clone(), state.store.put_bytes(&bytes, false).map_err(io_fail)?);
            }
            CommitLine::LfsFile { path, oid, size, .. } => {
                validate_repo_path(path).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
                let stored = state.store.blob_size(oid).ok_or_else(|| {
                    fail(StatusCode::BAD_REQUEST, format!("{path}: LFS object {oid} is unknown: upload it through the LFS batch API first"))
                })?;
                if size.is_some_and(|s| s != stored) {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        format!("{path}: size {} does not match the stored LFS object ({stored} bytes)", size.unwrap_or(0)),
                    ));
                }
                let git_sha1 = Store::lfs_pointer_sha1(oid, stored);
                files.insert(path.clone(), FileRec { sha256: oid.clone(), git_sha1, size: stored, lfs: true });
            }
            CommitLine::DeletedFile { path } => {
                if files.remove(path).is_none() {
                    return Err(fail_code(StatusCode::NOT_FOUND, "EntryNotFound", format!("cannot delete {path}: no such file")));
                }
            }
            CommitLine::DeletedFolder { path } => {
                let prefix = format!("{}/", path.trim_end_matches('/'));
                files.retain(|p, _| !p.starts_with(&prefix));
            }
        }
    }
    let oid = state.store.write_commit(id, vec![base], &summary, &description, files).map_err(io_fail)?;
    let web = base_url(headers);
    let pr_url = if create_pr {
        let n = state.store.next_pr_number(id);
        state.store.set_ref(id, &format!("refs/pr/{n}"), &oid).map_err(io_fail)?;
        Some(format!("{web}/{id}/discussions/{n}"))
    } else {
        state.store.set_ref(id, rev, &oid).map_err(io_fail)?;
        None
    };
    json_reply(
        StatusCode::OK,
        &CommitResponse { success: Some(true), commit_url: format!("{web}/{id}/commit/{oid}"), commit_oid: oid, pull_request_url: pr_url },
    )
}

async fn resolve(state: &State, caller: Option<&Caller>, id: &RepoId, rev: &str, path: &str, head_only: bool, headers: &HeaderMap) -> Reply {
    require_read(state, caller, id)?;
    let oid = head_of(state, id, rev)?;
    let c = state.store.commit(id, &oid).ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "missing commit"))?;
    let Some(f) = c.files.get(path) else {
        let mut e = fail_code(StatusCode::NOT_FOUND, "EntryNotFound", format!("{path} does not exist at {rev}"));
        e.headers.push(("X-Repo-Commit", oid));
        return Err(e);
    };
    if f.lfs {
        // Like the Hub's CDN redirect: metadata on the 302 itself, absolute Location on another origin.
        return Ok(Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, format!("{}/lfs-objects/{}", storage_url(state, headers), f.sha256))
            .header(header::ETAG, format!("\"{}\"", f.sha256))
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256))
            .header("X-Linked-Size", f.size.to_string())
            .header("X-Repo-Commit", &oid)
            .header(header::CONTENT_LENGTH, "0")
            .body(Body::empty())
            .expect("valid"));
    }
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::ETAG, format!("\"{}\"", f.git_sha1))
        .header("X-Repo-Commit", &oid)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, f.size.to_string());
    if head_only {
        return Ok(builder.body(Body::empty()).expect("valid"));
    }
    let bytes = tokio::fs::read(state.store.blob_path(&f.sha256)).await.map_err(io_fail)?;
    Ok(builder.body(Body::from(bytes)).expect("valid"))
}

async fn lfs_object(state: &State, oid: &str, head_only: bool) -> Reply {
    let size = state.store.blob_size(oid).ok_or_else(|| fail(StatusCode::NOT_FOUND, "no such object"))?;
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::ETAG, format!("\"{oid}\""))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size.to_string());
    if head_only {
        return Ok(builder.body(Body::empty()).expect("valid"));
    }
    let file = tokio::fs::File::open(state.store.blob_path(oid)).await.map_err(io_fail)?;
    Ok(builder.body(Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))).expect("valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_specs_parse() {
        let t = TokenSpec::parse("alice:write:hf_aaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        assert_eq!((t.user.as_str(), t.role.as_str()), ("alice", "write"));
        assert!(TokenSpec::parse("alice:admin:hf_x").is_err());
        assert!(TokenSpec::parse("alice:hf_x").is_err());
        assert!(TokenSpec::parse("al ice:read:hf_x").is_err());
    }

    #[test]
    fn front_matter_is_checked() {
        assert_eq!(front_matter("---\nlicense: mit\ntags: [a]\n---\n# x").unwrap()["license"], "mit");
        assert!(front_matter("---\nlicense: [unclosed\n---\n").is_err());
        assert!(front_matter("---\nlicense: mit\n").is_err());
        assert_eq!(front_matter("# no metadata").unwrap(), serde_json::json!({}));
    }
}
