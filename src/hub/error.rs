//! Hub errors. Every HTTP failure carries what a user (or a support thread) needs: status,
//! method, token-free URL, request id and the Hub's own error code and message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// An HTTP error answer (boxed, like `Conflict`, so every `Result<_, HubError>` stays small).
    #[error("{0}")]
    Http(Box<HttpFailure>),
    #[error("could not reach {url}: {detail} (after {attempts} attempt(s); check --endpoint / HF_ENDPOINT and your network)")]
    Network { url: String, detail: String, attempts: u32 },
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    /// No usable credential could be obtained (e.g. an OIDC id token or its exchange).
    #[error("{0}")]
    Auth(String),
    /// The branch moved during the push and the new commits touched files this push writes.
    #[error("{0}")]
    Conflict(Box<PushConflict>),
    #[error("{0}")]
    Download(String),
}

/// The Hub's HTTP error answer: status, request, `X-Request-Id`, `X-Error-Code` and message.
#[derive(Debug)]
pub struct HttpFailure {
    pub status: u16,
    pub method: String,
    pub url: String,
    pub request_id: Option<String>,
    pub error_code: Option<String>,
    pub message: String,
}

/// A push refused because its branch moved to `head` with commits that changed `paths`, which
/// this push writes too.
#[derive(Debug, thiserror::Error)]
#[error("{repo}@{revision} changed while pushing: commit {head} also changed {}; nothing was committed. Re-run the push to publish on top of it (or use --create-pr to open a pull request)", .paths.join(", "))]
pub struct PushConflict {
    pub repo: String,
    pub revision: String,
    pub head: String,
    pub paths: Vec<String>,
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let HttpFailure { status, method, url, request_id, error_code, message } = self;
        f.write_str(&http_message(*status, method, url, request_id.as_deref(), error_code.as_deref(), message))
    }
}

fn http_message(status: u16, method: &str, url: &str, request_id: Option<&str>, error_code: Option<&str>, message: &str) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut s = format!("HTTP {status} {reason} from {method} {url}");
    let mut details = vec![];
    if let Some(code) = error_code {
        details.push(format!("error code: {code}"));
    }
    details.push(format!("request id: {}", request_id.unwrap_or("none")));
    s.push_str(&format!(" ({})", details.join(", ")));
    if !message.is_empty() {
        s.push_str(&format!(": {message}"));
    }
    let hint = match (status, error_code) {
        (400..=499, _) if url.ends_with("/oauth/token") => {
            " — the repo's Trusted Publishers settings on the Hub decide which CI repository, workflow and branch may publish"
        }
        (401, _) => " — the token is missing or invalid: run `hfsky login` or set HF_TOKEN",
        (403, _) => " — the token may not write here: a `write` or fine-grained `repo.write` token is needed",
        (412, _) => " — the branch moved since this push started: run the command again",
        (404, Some("RepoNotFound")) => " — check the repo id, or that your token can see a private repo",
        (404, Some("RevisionNotFound")) => " — that branch/revision does not exist",
        (429, _) => " — rate limited by the Hub: wait and retry",
        _ => "",
    };
    s.push_str(hint);
    s
}

impl HubError {
    pub fn status(&self) -> Option<u16> {
        match self {
            HubError::Http(f) => Some(f.status),
            _ => None,
        }
    }

    pub fn error_code(&self) -> Option<&str> {
        match self {
            HubError::Http(f) => f.error_code.as_deref(),
            _ => None,
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
        let path = path.into();
        move |source| HubError::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_error_names_everything() {
        let e = HubError::Http(Box::new(HttpFailure {
            status: 404,
            method: "GET".into(),
            url: "http://h/api/models/a/b".into(),
            request_id: Some("req-1".into()),
            error_code: Some("RepoNotFound".into()),
            message: "Repository not found".into(),
        }));
        let s = e.to_string();
        for part in ["404", "GET http://h/api/models/a/b", "req-1", "RepoNotFound", "Repository not found"] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
    }
}
