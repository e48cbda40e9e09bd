//! `download`: files into the standard Hugging Face cache (the layout huggingface_hub reads),
//! through hf-hub.
//!
//! hf-hub 1.0.0 follows *relative* redirects on its metadata HEAD and then reads the final
//! answer's headers, so a relative LFS redirect would lose `X-Linked-Etag`/`X-Repo-Commit`;
//! the Hub (and our offline Hub) answer LFS files with an absolute redirect, which it handles.
//! Its `get_file_metadata`/`download_file_stream` follow CDN redirects wrongly, so we only use
//! `download_file`, and list files with our own client.

use super::client::HubClient;
use super::error::HubError;
use crate::redact::redact;
use crate::repo_id::{validate_repo_path, RepoId};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub repo: RepoId,
    pub revision: Option<String>,
    pub files: Vec<String>,
    pub local_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Downloaded {
    pub path_in_repo: String,
    pub local_path: PathBuf,
}

pub async fn download(client: &HubClient, opts: &DownloadOptions) -> Result<Vec<Downloaded>, HubError> {
    let revision = opts.revision.clone().unwrap_or_else(|| "main".to_string());
    let files = if opts.files.is_empty() {
        client.list_tree(&opts.repo, &revision).await?.into_iter().filter(|e| e.kind == "file").map(|e| e.path).collect()
    } else {
        opts.files.clone()
    };
    // A server must not be able to make us write outside the cache or --local-dir.
    for f in &files {
        validate_repo_path(f).map_err(|e| HubError::Invalid(e.to_string()))?;
    }
    let mut builder = hf_hub::HFClient::builder().endpoint(client.endpoint());
    if let Some(t) = client.token() {
        builder = builder.token(t.expose());
    }
    let hf = builder.build().map_err(|e| HubError::Download(redact(&e.to_string())))?;
    let repo = hf.model(opts.repo.namespace.clone(), opts.repo.name.clone());
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let path = repo
            .download_file()
            .filename(f.clone())
            .revision(revision.clone())
            .maybe_local_dir(opts.local_dir.clone())
            .send()
            .await
            .map_err(|e| HubError::Download(redact(&format!("{} ({}/{} at {revision}): {e}", f, client.endpoint(), opts.repo))))?;
        out.push(Downloaded { path_in_repo: f, local_path: path });
    }
    Ok(out)
}

/// Files of a revision selected by globs, into the cache; returns the snapshot folder.
/// With `HF_HUB_OFFLINE=1` only the cache is consulted.
pub async fn snapshot(client: &HubClient, repo: &RepoId, revision: Option<&str>, allow: Vec<String>) -> Result<PathBuf, HubError> {
    let mut builder = hf_hub::HFClient::builder().endpoint(client.endpoint());
    if let Some(t) = client.token() {
        builder = builder.token(t.expose());
    }
    let hf = builder.build().map_err(|e| HubError::Download(redact(&e.to_string())))?;
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "ON" | "YES"));
    hf.model(repo.namespace.clone(), repo.name.clone())
        .snapshot_download()
        .maybe_revision(revision.map(String::from))
        .allow_patterns(allow)
        .local_files_only(offline)
        .send()
        .await
        .map_err(|e| HubError::Download(redact(&format!("{repo} from {}: {e}", client.endpoint()))))
}
