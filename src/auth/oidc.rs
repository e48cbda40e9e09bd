//! Keyless publishing from CI ("Trusted Publishers"): a CI job's OIDC id token is exchanged at
//! `{endpoint}/oauth/token` (RFC 8693) for a short-lived Hub token scoped to one repo.
//!
//! The id token comes from, in order: `--oidc-token-file`, `HF_OIDC_SUBJECT_TOKEN` (or
//! huggingface_hub's `HF_OIDC_ID_TOKEN`), or GitHub Actions' id-token endpoint
//! (`ACTIONS_ID_TOKEN_REQUEST_URL` + `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, present only when the job
//! has `permissions: id-token: write`). Every id token is registered with the redactor.

use crate::hub::client::TokenRefresh;
use crate::hub::{HubClient, HubError};
use crate::redact::{redact, register_secret};
use crate::token::Token;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("GitHub Actions offered no OIDC id token (ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are unset): add `permissions: id-token: write` to the workflow job (`hfsky ci init` writes such a workflow)")]
    MissingPermission,
    #[error("--oidc needs an OIDC id token, and none is available here: run inside GitHub Actions with `permissions: id-token: write`, or pass one with --oidc-token-file FILE or HF_OIDC_SUBJECT_TOKEN (e.g. GitLab's `id_tokens`)")]
    NoSource,
    #[error("{source_name} is empty: it should hold the CI's OIDC id token (a JWT)")]
    EmptyIdToken { source_name: String },
    #[error("{source_name} does not hold a JWT (three base64url parts separated by dots): pass the CI's OIDC id token itself")]
    NotAJwt { source_name: String },
    #[error("cannot read the OIDC id token file {}: {source}", .path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("the CI's id-token endpoint refused to mint an OIDC token: {0}")]
    Mint(String),
    #[error("could not reach the CI's id-token endpoint: {0}")]
    MintNetwork(String),
    #[error("the Hub refused the OIDC token exchange for {resource}: {error}")]
    Refused { resource: String, error: HubError },
    #[error("the OIDC token exchange for {resource} failed: {error}")]
    Exchange { resource: String, error: HubError },
}

/// Where the CI's OIDC id token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenSource {
    File(PathBuf),
    Env(&'static str),
    GitHubActions,
}

impl std::fmt::Display for IdTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdTokenSource::File(p) => write!(f, "the file {}", p.display()),
            IdTokenSource::Env(v) => write!(f, "the {v} environment variable"),
            IdTokenSource::GitHubActions => write!(f, "GitHub Actions"),
        }
    }
}

const SUBJECT_TOKEN_VARS: [&str; 2] = ["HF_OIDC_SUBJECT_TOKEN", "HF_OIDC_ID_TOKEN"];

fn env_nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

impl IdTokenSource {
    /// The source to use: an explicit file, else an id token in the environment, else GitHub
    /// Actions when running there.
    pub fn detect(file: Option<PathBuf>) -> Result<IdTokenSource, OidcError> {
        if let Some(f) = file {
            return Ok(IdTokenSource::File(f));
        }
        if let Some(v) = SUBJECT_TOKEN_VARS.into_iter().find(|v| env_nonempty(v).is_some()) {
            return Ok(IdTokenSource::Env(v));
        }
        if env_nonempty("ACTIONS_ID_TOKEN_REQUEST_URL").is_some() {
            return Ok(IdTokenSource::GitHubActions);
        }
        if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
            return Err(OidcError::MissingPermission);
        }
        Err(OidcError::NoSource)
    }

    /// A current id token for `audience` (read again, or minted anew, on every call).
    pub async fn id_token(&self, http: &reqwest::Client, audience: &str) -> Result<String, OidcError> {
        let (raw, source_name) = match self {
            IdTokenSource::File(path) => (
                std::fs::read_to_string(path).map_err(|source| OidcError::File { path: path.clone(), source })?,
                format!("the OIDC id token file {}", path.display()),
            ),
            IdTokenSource::Env(var) => (std::env::var(var).unwrap_or_default(), format!("the {var} environment variable")),
            IdTokenSource::GitHubActions => (mint_github(http, audience).await?, "GitHub Actions' id-token answer".to_string()),
        };
        let jwt = raw.trim().to_string();
        register_secret(&jwt);
        if jwt.is_empty() {
            return Err(OidcError::EmptyIdToken { source_name });
        }
        if jwt.split('.').count() != 3 || jwt.chars().any(char::is_whitespace) {
            return Err(OidcError::NotAJwt { source_name });
        }
        Ok(jwt)
    }
}

/// GitHub Actions: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=…` with the request token as
/// bearer; the answer is `{"value": "<jwt>"}`.
async fn mint_github(http: &reqwest::Client, audience: &str) -> Result<String, OidcError> {
    let (Some(url), Some(bearer)) = (env_nonempty("ACTIONS_ID_TOKEN_REQUEST_URL"), env_nonempty("ACTIONS_ID_TOKEN_REQUEST_TOKEN")) else {
        return Err(OidcError::MissingPermission);
    };
    register_secret(&bearer);
    let mut url = url::Url::parse(&url).map_err(|e| OidcError::Mint(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}")))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let shown = redact(&format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path()));
    let mut last = String::new();
    // A couple of quick retries: the runtime endpoint has transient hiccups too.
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
        }
        let resp = match http.get(url.clone()).bearer_auth(&bearer).header("Accept", "application/json").send().await {
            Ok(r) => r,
            Err(e) => {
                last = redact(&format!("{shown}: {}", crate::hub::client::describe_error(&e)));
                continue;
            }
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_server_error() {
            last = redact(&format!("{shown}: HTTP {status}"));
            continue;
        }
        if !status.is_success() {
            return Err(OidcError::Mint(redact(&format!("HTTP {status} from {shown}: {}", body.chars().take(300).collect::<String>()))));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| OidcError::Mint(format!("{shown} answered something that is not JSON ({e})")))?;
        return v["value"].as_str().map(String::from).ok_or_else(|| OidcError::Mint(format!("{shown} answered without a \"value\" field")));
    }
    Err(OidcError::MintNetwork(last))
}

/// One repo's OIDC login: mints (or reads) an id token and exchanges it; installed on a
/// `HubClient` it exchanges again when the short-lived token is refused mid-push.
pub struct OidcSession {
    pub resource: String,
    pub audience: String,
    pub source: IdTokenSource,
    exchanger: HubClient,
    http: reqwest::Client,
}

impl OidcSession {
    /// `audience` defaults to the endpoint (`HF_OIDC_AUDIENCE` overrides it), which for the
    /// public Hub is `https://huggingface.co`, the audience it validates.
    pub fn new(endpoint: &str, resource: &str, source: IdTokenSource) -> Result<OidcSession, HubError> {
        let exchanger = HubClient::new(endpoint, None)?;
        let audience = env_nonempty("HF_OIDC_AUDIENCE").unwrap_or_else(|| exchanger.endpoint().to_string());
        let http = reqwest::Client::builder()
            .user_agent(concat!("hfsky/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| HubError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(OidcSession { resource: resource.to_string(), audience, source, exchanger, http })
    }

    /// A fresh short-lived token and its lifetime in seconds (when the Hub says).
    pub async fn exchange(&self) -> Result<(Token, Option<u64>), OidcError> {
        let jwt = self.source.id_token(&self.http, &self.audience).await?;
        self.exchanger.exchange_oidc(&jwt, &self.resource).await.map_err(|error| match error {
            HubError::Http(ref f) if f.status < 500 => OidcError::Refused { resource: self.resource.clone(), error },
            error => OidcError::Exchange { resource: self.resource.clone(), error },
        })
    }
}

impl From<OidcError> for HubError {
    fn from(e: OidcError) -> HubError {
        match e {
            OidcError::Exchange { error: e @ HubError::Network { .. }, .. } => e,
            OidcError::MintNetwork(detail) => HubError::Network { url: "the CI's id-token endpoint".into(), detail, attempts: 3 },
            other => HubError::Auth(redact(&other.to_string())),
        }
    }
}

impl TokenRefresh for OidcSession {
    fn refresh(&self) -> BoxFuture<'_, Result<Token, HubError>> {
        Box::pin(async move { Ok(self.exchange().await.map_err(HubError::from)?.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_file_wins_and_a_bad_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("id-token");
        assert_eq!(IdTokenSource::detect(Some(f.clone())).unwrap(), IdTokenSource::File(f.clone()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let http = reqwest::Client::new();
        let src = IdTokenSource::File(f.clone());
        assert!(matches!(rt.block_on(src.id_token(&http, "a")), Err(OidcError::File { .. })));
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(rt.block_on(src.id_token(&http, "a")), Err(OidcError::EmptyIdToken { .. })));
        std::fs::write(&f, "hello world").unwrap();
        assert!(matches!(rt.block_on(src.id_token(&http, "a")), Err(OidcError::NotAJwt { .. })));
        std::fs::write(&f, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n").unwrap();
        assert_eq!(rt.block_on(src.id_token(&http, "a")).unwrap(), "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln");
        assert!(!redact("x eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln").contains("c2ln"));
    }
}
