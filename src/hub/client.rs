//! The Hub HTTP client (reqwest + rustls): auth, retries with backoff that honour `Retry-After`,
//! and one error shape for every failure.

use super::error::{HttpFailure, HubError};
use super::protocol::*;
use crate::redact::redact;
use crate::repo_id::{RepoRef, RepoType};
use crate::token::Token;
use futures_util::future::BoxFuture;
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 6, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// `HFSKY_RETRY_BASE_MS` / `HFSKY_MAX_ATTEMPTS` let tests and CI shorten the waits.
    pub fn from_env() -> Self {
        let mut p = RetryPolicy::default();
        if let Some(ms) = std::env::var("HFSKY_RETRY_BASE_MS").ok().and_then(|v| v.parse().ok()) {
            p.base_delay = Duration::from_millis(ms);
        }
        if let Some(n) = std::env::var("HFSKY_MAX_ATTEMPTS").ok().and_then(|v| v.parse().ok()) {
            p.max_attempts = std::cmp::max(1, n);
        }
        p
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(10));
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        exp.mul_f64(jitter).min(self.max_delay)
    }
}

/// Checks that an endpoint is an http(s) URL with a host and returns it without a trailing `/`.
pub fn normalize_endpoint(raw: &str) -> Result<String, HubError> {
    let bad =
        |why: &str| HubError::Invalid(format!("invalid endpoint {raw:?}: {why} (expected e.g. https://huggingface.co or http://127.0.0.1:8080)"));
    let url = url::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(bad("credentials and query strings are not allowed in the endpoint"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Obtains a fresh token when the current one is refused (401): short-lived tokens from an OIDC
/// exchange expire during long pushes and are exchanged again, once per refused request.
pub trait TokenRefresh: Send + Sync {
    fn refresh(&self) -> BoxFuture<'_, Result<Token, HubError>>;
}

#[derive(Clone)]
pub struct HubClient {
    endpoint: String,
    // Shared by clones, so a refreshed token serves every task of a push.
    token: Arc<RwLock<Option<Token>>>,
    refresher: Option<Arc<dyn TokenRefresh>>,
    http: reqwest::Client,
    retry: RetryPolicy,
    download_progress: Option<super::download::OnDownload>,
}

impl HubClient {
    pub fn new(endpoint: &str, token: Option<Token>) -> Result<Self, HubError> {
        let endpoint = normalize_endpoint(endpoint)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("hfsky/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by hand so Authorization never reaches a foreign host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| HubError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(HubClient {
            endpoint,
            token: Arc::new(RwLock::new(token)),
            refresher: None,
            http,
            retry: RetryPolicy::from_env(),
            download_progress: None,
        })
    }

    /// Re-obtains the token through `refresher` when the Hub answers 401.
    pub fn with_refresh(mut self, refresher: Arc<dyn TokenRefresh>) -> Self {
        self.refresher = Some(refresher);
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends the progress of file downloads ([`super::download::DownloadEvent`]) to `on`.
    pub fn with_download_progress(mut self, on: super::download::OnDownload) -> Self {
        self.download_progress = Some(on);
        self
    }

    pub fn download_progress(&self) -> Option<&super::download::OnDownload> {
        self.download_progress.as_ref()
    }

    pub fn token(&self) -> Option<Token> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn has_token(&self) -> bool {
        self.token.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint, path)
    }

    /// `/api/{models,datasets}/{id}{tail}`.
    fn api(&self, repo: RepoRef<'_>, tail: &str) -> String {
        self.url(&format!("/api/{}/{}{tail}", repo.kind.plural(), repo.id))
    }

    /// A request to a Hub URL, with the token when there is one.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let rb = self.http.request(method, url);
        match self.token() {
            Some(t) => rb.header(header::AUTHORIZATION, t.bearer()),
            None => rb,
        }
    }

    /// A request to a presigned storage URL: never carries the Hub token.
    pub fn storage_request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends with retries on 429, 5xx and connection failures; any other non-2xx becomes a
    /// `HubError::Http`. `build` is called once per attempt so bodies can be re-created.
    pub async fn execute<F>(&self, method: &str, url: &str, build: F) -> Result<Response, HubError>
    where
        F: Fn() -> Result<RequestBuilder, HubError>,
    {
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let last = attempt >= self.retry.max_attempts;
            match build()?.send().await {
                Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => return Ok(resp),
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !refreshed && self.refresher.is_some() => {
                    let refresher = self.refresher.as_ref().expect("checked");
                    tracing_retry(method, url, "HTTP 401: exchanging for a fresh token", Duration::ZERO);
                    let fresh = refresher.refresh().await?;
                    *self.token.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
                    refreshed = true;
                    attempt -= 1;
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && refreshed => {
                    let e = error_from_response(method, url, resp).await;
                    return Err(match e {
                        HubError::Http(mut f) => {
                            f.message = format!("{} (refused again right after exchanging for a fresh token)", f.message);
                            HubError::Http(f)
                        }
                        other => other,
                    });
                }
                Ok(resp) if !last && retryable(resp.status()) => {
                    let wait = retry_after(&resp).unwrap_or_else(|| self.retry.backoff(attempt - 1));
                    tracing_retry(method, url, &format!("HTTP {}", resp.status().as_u16()), wait);
                    tokio::time::sleep(wait).await;
                }
                Ok(resp) => return Err(error_from_response(method, url, resp).await),
                Err(e) if !last && transient(&e) => {
                    let wait = self.retry.backoff(attempt - 1);
                    tracing_retry(method, url, &describe_error(&e), wait);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(HubError::Network { url: url.to_string(), detail: describe_error(&e), attempts: attempt }),
            }
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(url: &str, resp: Response) -> Result<T, HubError> {
        let bytes = resp.bytes().await.map_err(|e| HubError::Network { url: url.into(), detail: describe_error(&e), attempts: 1 })?;
        serde_json::from_slice(&bytes).map_err(|e| HubError::Protocol { url: url.into(), detail: format!("invalid JSON: {e}") })
    }

    pub async fn whoami(&self) -> Result<WhoAmI, HubError> {
        if !self.has_token() {
            return Err(HubError::Invalid("not logged in: run `hfsky login` or set HF_TOKEN".into()));
        }
        let url = self.url("/api/whoami-v2");
        let resp = self.execute("GET", &url, || Ok(self.request(Method::GET, &url))).await?;
        Self::json(&url, resp).await
    }

    /// Creates a repo (a bare [`crate::repo_id::RepoId`]: a model repo); with `exist_ok` an existing one is fine.
    /// Returns the repo URL.
    pub async fn create_repo<'a>(&self, repo: impl Into<RepoRef<'a>>, private: Option<bool>, exist_ok: bool) -> Result<String, HubError> {
        let repo = repo.into();
        let id = repo.id;
        let url = self.url("/api/repos/create");
        let body = CreateRepoRequest {
            name: id.name.clone(),
            organization: Some(id.namespace.clone()),
            // huggingface_hub omits the type for models.
            kind: (repo.kind != RepoType::Model).then(|| repo.kind.as_str().to_string()),
            private,
            visibility: private.map(|p| if p { "private".into() } else { "public".into() }),
        };
        match self.execute("POST", &url, || Ok(self.request(Method::POST, &url).json(&body))).await {
            Ok(resp) => Ok(Self::json::<CreateRepoResponse>(&url, resp).await?.url),
            Err(e) if exist_ok && e.status() == Some(409) => Ok(format!("{}/{repo}", self.endpoint)),
            Err(e) if exist_ok && matches!(e.status(), Some(401..=403)) => {
                // No create rights, but the repo may exist and be writable: the Hub's own client does the same.
                match self.repo_info(repo, None).await {
                    Ok(_) => Ok(format!("{}/{repo}", self.endpoint)),
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// RFC 8693: a CI's OIDC id token for a short-lived token scoped to `resource`. Sent without
    /// any Authorization header; the id token is the credential.
    pub async fn exchange_oidc(&self, id_token: &str, resource: &str) -> Result<(Token, Option<u64>), HubError> {
        let url = self.url("/oauth/token");
        let body = TokenExchangeRequest {
            grant_type: TOKEN_EXCHANGE_GRANT.into(),
            subject_token_type: ID_TOKEN_TYPE.into(),
            subject_token: id_token.to_string(),
            resource: Some(resource.to_string()),
        };
        let resp = self.execute("POST", &url, || Ok(self.http.post(&url).json(&body))).await?;
        let answer: TokenExchangeResponse = Self::json(&url, resp).await?;
        let token = Token::parse(&answer.access_token)
            .map_err(|e| HubError::Protocol { url: url.clone(), detail: format!("the token exchange returned an unusable access_token: {e}") })?;
        Ok((token, answer.expires_in))
    }

    /// Creates `branch` at `starting_point` (default: the repo's main branch).
    pub async fn create_branch<'a>(&self, repo: impl Into<RepoRef<'a>>, branch: &str, starting_point: Option<&str>) -> Result<(), HubError> {
        let url = self.api(repo.into(), &format!("/branch/{}", encode_segment(branch)));
        let body = CreateBranchRequest { starting_point: starting_point.map(String::from) };
        self.execute("POST", &url, || Ok(self.request(Method::POST, &url).json(&body))).await?;
        Ok(())
    }

    /// `GET /api/{models,datasets}/{id}[/revision/{rev}]`: the fields model and dataset infos
    /// share (id, sha, siblings, card data, …).
    pub async fn repo_info<'a>(&self, repo: impl Into<RepoRef<'a>>, revision: Option<&str>) -> Result<ModelInfo, HubError> {
        let repo = repo.into();
        let url = match revision {
            Some(rev) => self.api(repo, &format!("/revision/{}", encode_segment(rev))),
            None => self.api(repo, ""),
        };
        let resp = self.execute("GET", &url, || Ok(self.request(Method::GET, &url))).await?;
        Self::json(&url, resp).await
    }

    /// Every file under the revision, following the `Link: rel="next"` pagination.
    pub async fn list_tree<'a>(&self, repo: impl Into<RepoRef<'a>>, revision: &str) -> Result<Vec<TreeEntry>, HubError> {
        let mut next = Some(self.api(repo.into(), &format!("/tree/{}?recursive=true&expand=false", encode_segment(revision))));
        let mut out = Vec::new();
        while let Some(url) = next.take() {
            let resp = self.execute("GET", &url, || Ok(self.request(Method::GET, &url))).await?;
            next = next_link(&resp);
            out.extend(Self::json::<Vec<TreeEntry>>(&url, resp).await?);
        }
        Ok(out)
    }

    pub async fn paths_info<'a>(&self, repo: impl Into<RepoRef<'a>>, revision: &str, paths: &[String]) -> Result<Vec<TreeEntry>, HubError> {
        let url = self.api(repo.into(), &format!("/paths-info/{}", encode_segment(revision)));
        let mut out = Vec::new();
        for chunk in paths.chunks(500) {
            let body = serde_json::json!({ "paths": chunk, "expand": false });
            let resp = self.execute("POST", &url, || Ok(self.request(Method::POST, &url).json(&body))).await?;
            out.extend(Self::json::<Vec<TreeEntry>>(&url, resp).await?);
        }
        Ok(out)
    }

    pub async fn preupload<'a>(
        &self,
        repo: impl Into<RepoRef<'a>>,
        revision: &str,
        files: Vec<PreuploadFile>,
        create_pr: bool,
    ) -> Result<Vec<PreuploadAnswer>, HubError> {
        let pr = if create_pr { "?create_pr=1" } else { "" };
        let url = self.api(repo.into(), &format!("/preupload/{}{pr}", encode_segment(revision)));
        let mut out = Vec::new();
        for chunk in files.chunks(256) {
            let body = PreuploadRequest { files: chunk.to_vec(), git_ignore: None };
            let resp = self.execute("POST", &url, || Ok(self.request(Method::POST, &url).json(&body))).await?;
            out.extend(Self::json::<PreuploadResponse>(&url, resp).await?.files);
        }
        Ok(out)
    }

    /// The Git LFS batch API under the git remote: `/{prefix}{id}.git/info/lfs/objects/batch`.
    pub async fn lfs_batch<'a>(
        &self,
        repo: impl Into<RepoRef<'a>>,
        revision: &str,
        objects: &[LfsObject],
        create_pr: bool,
    ) -> Result<Vec<LfsBatchObject>, HubError> {
        let url = self.url(&format!("/{}.git/info/lfs/objects/batch", repo.into()));
        let mut out = Vec::new();
        for chunk in objects.chunks(256) {
            let body = LfsBatchRequest {
                operation: "upload".into(),
                transfers: vec!["basic".into(), "multipart".into()],
                objects: chunk.to_vec(),
                hash_algo: Some("sha256".into()),
                // Omitted for PRs so that users without branch write access can still open one.
                git_ref: (!create_pr).then(|| serde_json::json!({ "name": revision })),
            };
            let resp = self
                .execute("POST", &url, || {
                    Ok(self
                        .request(Method::POST, &url)
                        .header(header::ACCEPT, "application/vnd.git-lfs+json")
                        .header(header::CONTENT_TYPE, "application/vnd.git-lfs+json")
                        .body(serde_json::to_vec(&body).expect("serializable")))
                })
                .await?;
            out.extend(Self::json::<LfsBatchResponse>(&url, resp).await?.objects);
        }
        Ok(out)
    }

    pub async fn commit<'a>(
        &self,
        repo: impl Into<RepoRef<'a>>,
        revision: &str,
        lines: &[CommitLine],
        create_pr: bool,
    ) -> Result<CommitResponse, HubError> {
        let pr = if create_pr { "?create_pr=1" } else { "" };
        let url = self.api(repo.into(), &format!("/commit/{}{pr}", encode_segment(revision)));
        let mut body = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut body, line).expect("serializable");
            body.push(b'\n');
        }
        let resp = self
            .execute("POST", &url, || Ok(self.request(Method::POST, &url).header(header::CONTENT_TYPE, "application/x-ndjson").body(body.clone())))
            .await?;
        Self::json(&url, resp).await
    }

    /// `POST /api/validate-yaml`: the Hub's own check of a repo card's metadata (the rules of
    /// `repo_type`'s cards).
    pub async fn validate_yaml(&self, readme: &str, repo_type: RepoType) -> Result<Vec<String>, HubError> {
        let url = self.url("/api/validate-yaml");
        let body = serde_json::json!({ "content": readme, "repoType": repo_type.as_str() });
        let resp = self.execute("POST", &url, || Ok(self.request(Method::POST, &url).json(&body))).await?;
        let v: serde_json::Value = Self::json(&url, resp).await?;
        Ok(v["warnings"].as_array().map(|w| w.iter().filter_map(|m| m["message"].as_str().map(String::from)).collect()).unwrap_or_default())
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

pub fn describe_error(e: &reqwest::Error) -> String {
    // reqwest's Display includes the URL, which we print separately.
    let mut s = e.without_url_ref().to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    redact(&s)
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let kind = if self.is_connect() {
            "connection failed"
        } else if self.is_timeout() {
            "timed out"
        } else if self.is_body() {
            "connection dropped while transferring the body"
        } else if self.is_request() {
            "request failed"
        } else if self.is_decode() {
            "could not read the response"
        } else {
            "HTTP error"
        };
        kind.to_string()
    }
}

/// A retry is detail (`-v`), not a warning: the request may well succeed on the next attempt.
fn tracing_retry(method: &str, url: &str, why: &str, wait: Duration) {
    tracing::info!("retrying {method} {url} in {:.1}s ({why})", wait.as_secs_f64());
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(120)))
}

fn next_link(resp: &Response) -> Option<String> {
    let link = resp.headers().get(header::LINK)?.to_str().ok()?;
    link.split(',').find(|p| p.contains("rel=\"next\"")).and_then(|p| {
        let start = p.find('<')? + 1;
        let end = p.find('>')?;
        Some(p[start..end].to_string())
    })
}

fn header_str(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(redact)
}

/// Turns a non-2xx answer into `HubError::Http`, reading the Hub's error headers and body.
pub async fn error_from_response(method: &str, url: &str, resp: Response) -> HubError {
    let status = resp.status().as_u16();
    let request_id = header_str(&resp, "x-request-id");
    let error_code = header_str(&resp, "x-error-code");
    let header_msg = header_str(&resp, "x-error-message");
    let body = resp.text().await.unwrap_or_default();
    let body_msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| match &v["error"] {
            serde_json::Value::String(s) => Some(match v["error_description"].as_str() {
                Some(d) => format!("{d} ({s})"),
                None => s.clone(),
            }),
            serde_json::Value::Array(a) => {
                Some(a.iter().map(|x| x.as_str().map(String::from).unwrap_or(x.to_string())).collect::<Vec<_>>().join("; "))
            }
            _ => v["errors"].as_array().map(|a| a.iter().filter_map(|e| e["message"].as_str().map(String::from)).collect::<Vec<_>>().join("; ")),
        })
        .unwrap_or_else(|| body.chars().take(500).collect());
    let message = header_msg.unwrap_or(body_msg);
    HubError::Http(Box::new(HttpFailure {
        status,
        method: method.to_string(),
        url: url.to_string(),
        request_id,
        error_code,
        message: redact(message.trim()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(normalize_endpoint("https://huggingface.co/").unwrap(), "https://huggingface.co");
        assert_eq!(normalize_endpoint("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        for bad in ["huggingface.co", "ftp://x", "not a url", "http://u:p@h", "http://h/?q=1"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { max_attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        assert!(p.backoff(0) < Duration::from_millis(130));
        assert!(p.backoff(2) > Duration::from_millis(300));
        assert!(p.backoff(20) <= Duration::from_secs(1));
    }
}
