//! `hfsky hub serve`: an offline Hub on loopback that speaks the Hub's HTTP protocol
//! (whoami-v2, repos, tree, paths-info, preupload, LFS batch basic/multipart, NDJSON commit,
//! resolve with the Hub's headers and redirects, validate-yaml), with auth and fault injection;
//! and the Inference Providers' text-to-image routes, rendered locally (see `inference`).
//!
//! The routes are declared in [`router`], one axum route per Hub endpoint (paths as
//! huggingface_hub 2.4.0's `hf_api.py` / `file_download.py` / `lfs.py` build them), and the
//! handlers live by protocol area: [`auth`] (whoami, OIDC token exchange, who may touch which
//! repo), [`repos`] (create, branch, info, tree, paths-info, validate-yaml), [`commit`]
//! (preupload, NDJSON commit), [`lfs`] (batch API, uploads, storage), [`files`] (resolve).
//! Every request passes [`gate`] first: fault injection, `X-Request-Id`, and the bearer token.

mod auth;
mod commit;
mod faults;
mod files;
mod inference;
mod lfs;
mod oidc;
mod repos;
mod store;

pub use faults::Faults;
pub use inference::{InferenceConfig, InferenceRenderer, RenderDtype, RenderFailure, RenderJob, RenderProfile, RenderedPng, REPLICATE_LORA_MODEL};
pub use oidc::{OidcTrust, TrustedIssuer, TrustedSubject};
pub use store::Store;

use crate::repo_id::{RepoId, RepoRef, RepoType};
use auth::Who;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

struct State {
    cfg: ServeConfig,
    /// Port of the storage listener that LFS downloads redirect to. A different origin, like
    /// the Hub's CDN: clients then read the file metadata from the 302 itself, as they must.
    storage_port: u16,
    /// Model repos (and every blob).
    store: Store,
    /// Dataset repos, over the same blobs.
    datasets: Store,
    uploads: Mutex<HashMap<String, lfs::Upload>>,
    grants: oidc::Grants,
    // Serialises ref updates so parentCommit checks and commits are atomic.
    commit_lock: tokio::sync::Mutex<()>,
    infer: inference::InferState,
}

impl State {
    /// The repos of `kind`.
    fn repos(&self, kind: RepoType) -> &Store {
        match kind {
            RepoType::Model => &self.store,
            RepoType::Dataset => &self.datasets,
        }
    }
}

type Shared = Arc<State>;

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

impl IntoResponse for HubFail {
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

/// The offline Hub's routes. Path parameters arrive percent-decoded (a revision sent as
/// `refs%2Fpr%2F1` is `refs/pr/1`); `{*path}` is a file path with its slashes. A request that
/// matches no route, or a route with another method, is the Hub's JSON 404.
pub fn router(cfg: ServeConfig, storage_port: u16) -> std::io::Result<axum::Router> {
    let store = Store::open(&cfg.root)?;
    let datasets = store.of_kind(RepoType::Dataset);
    let state = Arc::new(State {
        cfg,
        storage_port,
        store,
        datasets,
        uploads: Mutex::new(HashMap::new()),
        grants: oidc::Grants::default(),
        commit_lock: tokio::sync::Mutex::new(()),
        infer: inference::InferState::default(),
    });
    let mut router = axum::Router::new()
        // auth
        .route("/oauth/token", post(auth::token_exchange))
        .route("/api/whoami-v2", get(auth::whoami))
        // repos
        .route("/api/repos/create", post(repos::create_repo))
        .route("/api/validate-yaml", post(repos::validate_yaml))
        // LFS: uploads, storage (the batch API is per repo type, below)
        .route("/lfs-upload/{upload}", put(lfs::put_basic))
        .route("/lfs-upload/{upload}/part/{part}", put(lfs::put_part))
        .route("/lfs-upload/{upload}/complete", post(lfs::complete_multipart))
        .route("/lfs-verify/{ns}/{name}", post(lfs::verify))
        .route("/lfs-objects/{oid}", get(lfs::object).head(lfs::object));
    // The same routes for each repo type, under `/api/{models,datasets}/` and the web prefix
    // (`""`, `datasets/`); [`Repo`] reads the type back from the path.
    for kind in [RepoType::Model, RepoType::Dataset] {
        let api = format!("/api/{}/{{ns}}/{{name}}", kind.plural());
        let web = format!("/{}{{ns}}/{{name}}", kind.url_prefix());
        router = router
            .route(&api, get(repos::repo_info))
            .route(&format!("{api}/revision/{{rev}}"), get(repos::repo_info))
            .route(&format!("{api}/branch/{{rev}}"), post(repos::create_branch))
            .route(&format!("{api}/tree/{{rev}}"), get(repos::tree))
            .route(&format!("{api}/tree/{{rev}}/"), get(repos::tree))
            .route(&format!("{api}/tree/{{rev}}/{{*path}}"), get(repos::tree))
            .route(&format!("{api}/paths-info/{{rev}}"), post(repos::paths_info))
            // commits
            .route(&format!("{api}/preupload/{{rev}}"), post(commit::preupload))
            .route(&format!("{api}/commit/{{rev}}"), post(commit::commit))
            // the LFS batch API under the git remote (`{repo}.git/info/lfs`)
            .route(&format!("{web}/info/lfs/objects/batch"), post(lfs::batch))
            // downloads
            .route(&format!("{web}/resolve/{{rev}}/{{*path}}"), get(files::resolve).head(files::resolve));
    }
    Ok(router
        // inference providers
        .route("/hf-inference/models/{ns}/{name}", post(inference::hf_inference))
        .route("/fal-ai/{*model}", post(inference::fal_ai))
        .route("/replicate/v1/models/{ns}/{name}/predictions", post(inference::replicate_model))
        .route("/replicate/v1/predictions", post(inference::replicate))
        .route("/inference-outputs/{file}", get(inference::output))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state))
}

async fn no_route(method: Method, uri: Uri) -> HubFail {
    fail(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))
}

/// In front of every route: an injected fault (drawn before anything else, like a flaky
/// network), else the caller from the bearer token (every route but the token exchange; a
/// token that is sent must be valid), and an `X-Request-Id` on every answer.
async fn gate(axum::extract::State(state): axum::extract::State<Shared>, mut req: Request, next: axum::middleware::Next) -> Response<Body> {
    let request_id = format!("req-{:016x}", rand::random::<u64>());
    let mut resp = if let Some(fault) = state.cfg.faults.as_ref().and_then(|f| f.draw()) {
        injected(fault, &state)
    } else if req.method() == Method::POST && req.uri().path() == "/oauth/token" {
        next.run(req).await
    } else {
        match auth::authenticate(&state, req.headers()) {
            Ok(caller) => {
                req.extensions_mut().insert(Who(caller));
                next.run(req).await
            }
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

// ---- extractors ----

/// Path parameters (percent-decoded by axum); a parameter that does not decode is the Hub's
/// JSON 400 rather than axum's plain-text one.
struct PathParams<T>(T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HubFail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HubFail> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad path: {}", e.body_text())))
    }
}

#[derive(serde::Deserialize)]
struct RepoParams {
    ns: String,
    name: String,
    rev: Option<String>,
    path: Option<String>,
}

/// The repo a `/…/{ns}/{name}/…` route names, with its type (a dataset under `/api/datasets/`
/// or `/datasets/`), the revision (`main` when the route has none) and the file path (empty
/// when it has none).
struct Repo {
    id: RepoId,
    kind: RepoType,
    rev: String,
    path: String,
}

impl Repo {
    fn target(&self) -> RepoRef<'_> {
        RepoRef { kind: self.kind, id: &self.id }
    }
}

/// The repo type a request path names: `/api/datasets/…` and `/datasets/…` are datasets.
fn kind_of(uri: &Uri) -> RepoType {
    let p = uri.path();
    if p.starts_with("/api/datasets/") || p.starts_with("/datasets/") {
        RepoType::Dataset
    } else {
        RepoType::Model
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Repo {
    type Rejection = HubFail;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HubFail> {
        let PathParams(p) = PathParams::<RepoParams>::from_request_parts(parts, state).await?;
        Ok(Repo {
            id: repo_id(&p.ns, &p.name)?,
            kind: kind_of(&parts.uri),
            rev: p.rev.unwrap_or_else(|| "main".into()),
            path: p.path.unwrap_or_default(),
        })
    }
}

fn repo_id(ns: &str, name: &str) -> Result<RepoId, HubFail> {
    RepoId::parse(&format!("{ns}/{name}")).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A JSON/NDJSON request body, at most `max_body` bytes (else the Hub's 413).
struct BodyBytes(bytes::Bytes);

impl FromRequest<Shared> for BodyBytes {
    type Rejection = HubFail;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, HubFail> {
        let max = state.cfg.max_body;
        axum::body::to_bytes(req.into_body(), max)
            .await
            .map(BodyBytes)
            .map_err(|_| fail(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {max} bytes")))
    }
}

/// A JSON request body, within `max_body`.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = HubFail;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, HubFail> {
        let BodyBytes(bytes) = BodyBytes::from_request(req, state).await?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
    }
}

/// `expand=a&expand[]=b` (huggingface_hub sends the first form, browsers the second).
fn expands(query: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "expand" || k == "expand[]")
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn query(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

/// A boolean query flag the way huggingface_hub sends it (`1`, `true`, `True`).
fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("1" | "true" | "True"))
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

/// The metadata of a commit's model card (None without a README or with broken metadata).
fn card_of(state: &State, c: &store::CommitRec) -> Option<serde_json::Value> {
    let readme = c.files.get(crate::names::README)?;
    crate::card::front_matter(&std::fs::read_to_string(state.store.blob_path(&readme.sha256)).ok()?).ok()
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

    const TOKEN: &str = "hf_aaaaaaaaaaaaaaaaaaaaaaaa";

    /// The offline Hub's router on loopback with one write token (alice's, [`TOKEN`]), an empty
    /// store in a temp folder, and a client.
    struct TestServer {
        rt: tokio::runtime::Runtime,
        base: String,
        http: reqwest::Client,
        _dir: tempfile::TempDir,
    }

    impl TestServer {
        fn start() -> TestServer {
            let dir = tempfile::tempdir().unwrap();
            let cfg = ServeConfig {
                root: dir.path().to_path_buf(),
                tokens: vec![TokenSpec { user: "alice".into(), role: "write".into(), secret: TOKEN.into() }],
                faults: None,
                multipart_chunk: 1 << 20,
                max_body: 1 << 20,
                oidc: None,
                inference: None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            rt.spawn(async move { axum::serve(listener, router(cfg, 9).unwrap()).await });
            TestServer { rt, base, http: reqwest::Client::new(), _dir: dir }
        }
    }

    /// The routes match as the Hub's: percent-encoded revisions with slashes, file paths with
    /// slashes, the `.git/info/lfs` suffix, and the Hub's JSON 404 (with `X-Request-Id`) for
    /// anything else, whatever the method.
    #[test]
    fn routes_match_like_the_hubs() {
        let TestServer { rt, base, http, _dir } = TestServer::start();
        let send = |method: &str, path: &str, body: &str| {
            let rb = http.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(TOKEN).body(body.to_string());
            rt.block_on(async {
                let r = rb.send().await.unwrap();
                let (status, id) = (r.status().as_u16(), r.headers().get("X-Request-Id").is_some());
                (status, r.text().await.unwrap(), id)
            })
        };
        assert_eq!(send("POST", "/api/repos/create", r#"{"name": "r", "type": "model"}"#).0, 200);
        let commit = concat!(
            r#"{"key": "header", "value": {"summary": "s", "description": ""}}"#,
            "\n",
            r#"{"key": "file", "value": {"path": "dir/a b.txt", "content": "aGk=", "encoding": "base64"}}"#
        );
        assert_eq!(send("POST", "/api/models/alice/r/commit/main", commit).0, 200);
        assert_eq!(send("POST", "/api/models/alice/r/branch/feat%2Fx", "").0, 200);
        for path in ["/alice/r/resolve/main/dir/a%20b.txt", "/alice/r/resolve/feat%2Fx/dir/a%20b.txt"] {
            assert_eq!(send("GET", path, ""), (200, "hi".to_string(), true), "{path}");
        }
        let info = send("GET", "/api/models/alice/r/revision/feat%2Fx", "");
        assert!(info.0 == 200 && info.1.contains(r#""rfilename":"dir/a b.txt""#), "{info:?}");
        let tree = send("GET", "/api/models/alice/r/tree/feat%2Fx/dir", "");
        assert!(tree.0 == 200 && tree.1.contains(r#""path":"dir/a b.txt""#), "{tree:?}");
        assert_eq!(send("GET", "/api/models/alice/r/tree/main/nothing", "").0, 404);
        let batch = r#"{"operation": "upload", "transfers": ["basic"], "objects": []}"#;
        assert_eq!(send("POST", "/alice/r.git/info/lfs/objects/batch", batch).0, 200);
        let (status, body, id) = send("POST", "/alice/r/info/lfs/objects/batch", batch);
        assert_eq!((status, body.as_str(), id), (404, r#"{"error":"no route for POST /alice/r/info/lfs/objects/batch"}"#, true));
        let (status, body, id) = send("PATCH", "/api/whoami-v2", "");
        assert_eq!((status, body.as_str(), id), (404, r#"{"error":"no route for PATCH /api/whoami-v2"}"#, true));
        let refused =
            rt.block_on(async { http.get(format!("{base}/nowhere")).bearer_auth("hf_bbbbbbbbbbbbbbbbbbbbbbbb").send().await.unwrap().status() });
        assert_eq!(refused.as_u16(), 401, "a token that is sent must be valid, on every route");
    }

    /// Dataset repos live beside models under their own routes: `/api/datasets/…`,
    /// `/datasets/{id}/resolve/…` and `/datasets/{id}.git/info/lfs`; a dataset and a model may
    /// share a name, and a user called `datasets` still has model repos.
    #[test]
    fn dataset_repos_have_the_hubs_routes() {
        let TestServer { rt, base, http, _dir } = TestServer::start();
        let send = |method: &str, path: &str, body: &str| {
            let rb = http.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(TOKEN).body(body.to_string());
            rt.block_on(async {
                let r = rb.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        };
        let created = send("POST", "/api/repos/create", r#"{"name": "r", "type": "dataset"}"#);
        assert!(created.0 == 200 && created.1.contains(&format!(r#""url":"{base}/datasets/alice/r""#)), "{created:?}");
        assert_eq!(send("POST", "/api/repos/create", r#"{"name": "r", "type": "space"}"#).0, 400);
        assert_eq!(send("GET", "/api/models/alice/r", "").0, 404, "the dataset is not a model");
        let commit = concat!(
            r#"{"key": "header", "value": {"summary": "s", "description": ""}}"#,
            "\n",
            r#"{"key": "file", "value": {"path": "train/metadata.jsonl", "content": "e30K", "encoding": "base64"}}"#
        );
        let c = send("POST", "/api/datasets/alice/r/commit/main", commit);
        assert!(c.0 == 200 && c.1.contains("/datasets/alice/r/commit/"), "{c:?}");
        assert_eq!(send("GET", "/datasets/alice/r/resolve/main/train/metadata.jsonl", ""), (200, "{}\n".to_string()));
        assert_eq!(send("GET", "/alice/r/resolve/main/train/metadata.jsonl", "").0, 404);
        let info = send("GET", "/api/datasets/alice/r/revision/main", "");
        assert!(info.0 == 200 && info.1.contains(r#""rfilename":"train/metadata.jsonl""#) && !info.1.contains("modelId"), "{info:?}");
        assert!(send("GET", "/api/datasets/alice/r/tree/main/train", "").1.contains(r#""path":"train/metadata.jsonl""#));
        let batch = r#"{"operation": "upload", "transfers": ["basic"], "objects": []}"#;
        assert_eq!(send("POST", "/datasets/alice/r.git/info/lfs/objects/batch", batch).0, 200);
        // The same name as a model, and a namespace named like the prefix.
        assert_eq!(send("POST", "/api/repos/create", r#"{"name": "r"}"#).0, 200);
        assert_eq!(send("GET", "/api/models/alice/r", "").0, 200);
        let r = send("GET", "/datasets/r/resolve/main/x", "");
        assert!(r.0 == 404 && r.1.contains("Repository Not Found"), "routed as the model datasets/r: {r:?}");
    }

    /// validate-yaml and the commit's card check refuse what the Hub refuses (a local path as
    /// `base_model`), with its status and message shape, and accept what it accepts.
    #[test]
    fn model_card_metadata_is_checked_like_the_hubs() {
        let TestServer { rt, base, http, _dir } = TestServer::start();
        let send = |path: &str, body: String| {
            let rb = http.post(format!("{base}{path}")).bearer_auth(TOKEN).body(body);
            rt.block_on(async {
                let r = rb.send().await.unwrap();
                (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
            })
        };
        let validate = |readme: &str| send("/api/validate-yaml", serde_json::json!({ "content": readme, "repoType": "model" }).to_string());
        let local = "---\nbase_model: /home/me/models/sd15\nlicense: mit\n---\n# x\n";
        let (status, body) = validate(local);
        assert_eq!(status, 400);
        assert_eq!(
            body,
            serde_json::json!({ "errors": [{ "message": "\"base_model\" with value \"/home/me/models/sd15\" is not valid. Use a model id from https://hf.co/models." }] })
        );
        let (status, body) = validate("---\nbase_model: [alice/base, C:\\\\sd]\nbase_model_relation: fork\ntags: {a: 1}\n---\n");
        assert_eq!(status, 400);
        let messages: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("C:\\\\sd") && messages[1].contains("base_model_relation") && messages[2].contains("\"tags\""), "{messages:?}");
        for ok in [
            "---\nbase_model: stable-diffusion-v1-5/stable-diffusion-v1-5\nbase_model_relation: adapter\n---\n",
            "---\nbase_model: gpt2\n---\n",
            "# no metadata\n",
        ] {
            assert_eq!(validate(ok), (200, serde_json::json!({ "warnings": [] })), "{ok}");
        }
        assert_eq!(send("/api/repos/create", r#"{"name": "r", "type": "model"}"#.into()).0, 200);
        let commit = |readme: &str| {
            let header = serde_json::json!({"key": "header", "value": {"summary": "s", "description": ""}});
            let file = serde_json::json!({"key": "file", "value": {"path": "README.md", "content": readme, "encoding": "utf-8"}});
            send("/api/models/alice/r/commit/main", format!("{header}\n{file}"))
        };
        let (status, body) = commit(local);
        assert_eq!(status, 400);
        assert_eq!(
            body["error"],
            "Invalid metadata in README.md.\n- \"base_model\" with value \"/home/me/models/sd15\" is not valid. Use a model id from https://hf.co/models."
        );
        assert_eq!(commit("---\nbase_model: alice/base\n---\n# ok\n").0, 200);
    }
}
