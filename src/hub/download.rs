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
use crate::repo_id::{validate_repo_path, RepoId, RepoRef, RepoType};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a download reports while it runs; the CLI draws it (library code prints nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// These files are about to be fetched (cached ones included), `total_bytes` in all (from the repo listing; 0 when unknown).
    Start { files: usize, total_bytes: u64 },
    /// Bytes of one file received so far (a cached file reports nothing until `Done`).
    Progress { path: String, bytes: u64, total_bytes: u64 },
    /// One file is in the cache, `size` bytes.
    Done { path: String, size: u64 },
}

/// Where a [`HubClient`] sends [`DownloadEvent`]s (called from download tasks: must not block).
pub type OnDownload = Arc<dyn Fn(DownloadEvent) + Send + Sync>;

/// Forwards hf-hub's per-file byte counts for one file as [`DownloadEvent::Progress`].
struct Forward {
    path: String,
    on: OnDownload,
}

impl hf_hub::progress::ProgressHandler for Forward {
    fn on_progress(&self, event: &hf_hub::progress::ProgressEvent) {
        if let hf_hub::progress::ProgressEvent::Download(hf_hub::progress::DownloadEvent::Progress { files }) = event {
            for f in files {
                (self.on)(DownloadEvent::Progress { path: self.path.clone(), bytes: f.bytes_completed, total_bytes: f.total_bytes });
            }
        }
    }
}

fn hf_client(client: &HubClient) -> Result<hf_hub::HFClient, HubError> {
    let mut builder = hf_hub::HFClient::builder().endpoint(client.endpoint());
    if let Some(t) = client.token() {
        builder = builder.token(t.expose());
    }
    builder.build().map_err(|e| HubError::Download(redact(&e.to_string())))
}

/// `HF_HUB_OFFLINE` as huggingface_hub reads it (`constants.HF_HUB_OFFLINE`).
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "TRUE" | "ON" | "YES"))
}

/// Files of one repo revision fetched one by one into the standard cache, pinned to the commit
/// the first file resolved to (a branch that moves meanwhile does not mix two commits), with
/// [`DownloadEvent`]s to the client's progress sink. With `HF_HUB_OFFLINE=1` only the cache is read.
pub struct RepoFetcher {
    client: HubClient,
    hf: hf_hub::HFClient,
    repo: RepoId,
    kind: RepoType,
    revision: String,
    offline: bool,
}

impl RepoFetcher {
    /// A fetcher of `repo` (a bare [`RepoId`]: a model repo) at `revision` (default `main`).
    pub fn new<'a>(client: &HubClient, repo: impl Into<RepoRef<'a>>, revision: Option<&str>) -> Result<Self, HubError> {
        let repo = repo.into();
        Ok(RepoFetcher {
            client: client.clone(),
            hf: hf_client(client)?,
            repo: repo.id.clone(),
            kind: repo.kind,
            revision: revision.unwrap_or("main").to_string(),
            offline: hub_offline(),
        })
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    pub fn repo(&self) -> &RepoId {
        &self.repo
    }

    /// The repo with its type.
    pub fn target(&self) -> RepoRef<'_> {
        RepoRef { kind: self.kind, id: &self.repo }
    }

    /// The revision files are fetched at: the commit once the first file resolved.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// One file into the cache; returns its path in the snapshot folder. After the first file,
    /// the revision is pinned to the snapshot's commit.
    pub async fn file(&mut self, path_in_repo: &str) -> Result<PathBuf, HubError> {
        validate_repo_path(path_in_repo).map_err(|e| HubError::Invalid(e.to_string()))?;
        let progress =
            self.client.download_progress().map(|on| hf_hub::progress::Progress::new(Forward { path: path_in_repo.to_string(), on: on.clone() }));
        let local = self
            .hf
            .repository(any_kind(self.kind), self.repo.namespace.clone(), self.repo.name.clone())
            .download_file()
            .filename(path_in_repo.to_string())
            .revision(self.revision.clone())
            .local_files_only(self.offline)
            .maybe_progress(progress)
            .send()
            .await
            .map_err(|e| {
                let what = redact(&format!("{path_in_repo} ({}/{} at {}): {e}", self.client.endpoint(), self.target(), self.revision));
                match e {
                    // A gated repo whose conditions were not accepted, or a private one: the token decides (exit 3).
                    hf_hub::HFError::AuthRequired { .. } | hf_hub::HFError::Forbidden { .. } => HubError::Auth(format!(
                        "{what}: the repo is gated or private; accept its conditions on the Hub and log in (`hfsky login`, HF_TOKEN) with a token that can read it"
                    )),
                    _ => HubError::Download(what),
                }
            })?;
        if let Some(commit) = snapshot_commit(&local, path_in_repo) {
            self.revision = commit;
        }
        if let Some(on) = self.client.download_progress() {
            on(DownloadEvent::Done { path: path_in_repo.to_string(), size: std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0) });
        }
        Ok(local)
    }

    /// The repo's files at the pinned revision with their sizes: the Hub's tree listing, or
    /// offline the files of the cached snapshot folder `snapshot`.
    pub async fn list(&self, snapshot: &Path) -> Result<Vec<(String, u64)>, HubError> {
        if self.offline {
            let mut out = Vec::new();
            list_dir(snapshot, snapshot, &mut out).map_err(|e| HubError::Download(format!("{}: {e}", snapshot.display())))?;
            out.sort();
            return Ok(out);
        }
        Ok(self.client.list_tree(self.target(), &self.revision).await?.into_iter().filter(|e| e.kind == "file").map(|e| (e.path, e.size)).collect())
    }

    /// Several files, announced with their total size first.
    pub async fn files(&mut self, paths: &[String], total_bytes: u64) -> Result<Vec<PathBuf>, HubError> {
        if let Some(on) = self.client.download_progress() {
            on(DownloadEvent::Start { files: paths.len(), total_bytes });
        }
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            out.push(self.file(p).await?);
        }
        Ok(out)
    }
}

/// hf-hub's name for a repo type.
fn any_kind(kind: RepoType) -> hf_hub::RepoTypeAny {
    match kind {
        RepoType::Model => hf_hub::RepoTypeAny::Model,
        RepoType::Dataset => hf_hub::RepoTypeAny::Dataset,
    }
}

/// `…/snapshots/<commit>/<path_in_repo>` → the commit.
fn snapshot_commit(local: &Path, path_in_repo: &str) -> Option<String> {
    let mut dir = local;
    for _ in path_in_repo.split('/') {
        dir = dir.parent()?;
    }
    let commit = dir.file_name()?.to_str()?;
    (dir.parent()?.file_name()? == "snapshots" && commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then(|| commit.to_string())
}

fn list_dir(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            list_dir(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            out.push((rel.to_string_lossy().replace('\\', "/"), size));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub repo: RepoId,
    /// A model repo, or a dataset repo (`download --repo-type dataset`).
    pub repo_type: RepoType,
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
    let target = RepoRef { kind: opts.repo_type, id: &opts.repo };
    let files = if opts.files.is_empty() {
        client.list_tree(target, &revision).await?.into_iter().filter(|e| e.kind == "file").map(|e| e.path).collect()
    } else {
        opts.files.clone()
    };
    // A server must not be able to make us write outside the cache or --local-dir.
    for f in &files {
        validate_repo_path(f).map_err(|e| HubError::Invalid(e.to_string()))?;
    }
    let hf = hf_client(client)?;
    let repo = hf.repository(any_kind(opts.repo_type), opts.repo.namespace.clone(), opts.repo.name.clone());
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let path = repo
            .download_file()
            .filename(f.clone())
            .revision(revision.clone())
            .maybe_local_dir(opts.local_dir.clone())
            .send()
            .await
            .map_err(|e| HubError::Download(redact(&format!("{} ({}/{} at {revision}): {e}", f, client.endpoint(), target))))?;
        out.push(Downloaded { path_in_repo: f, local_path: path });
    }
    Ok(out)
}

/// Files of a revision selected by globs, into the cache; returns the snapshot folder.
/// With `HF_HUB_OFFLINE=1` only the cache is consulted.
pub async fn snapshot(client: &HubClient, repo: &RepoId, revision: Option<&str>, allow: Vec<String>) -> Result<PathBuf, HubError> {
    let hf = hf_client(client)?;
    let offline = hub_offline();
    hf.model(repo.namespace.clone(), repo.name.clone())
        .snapshot_download()
        .maybe_revision(revision.map(String::from))
        .allow_patterns(allow)
        .local_files_only(offline)
        .send()
        .await
        .map_err(|e| HubError::Download(redact(&format!("{repo} from {}: {e}", client.endpoint()))))
}
