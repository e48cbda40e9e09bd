//! `push`: one folder → one commit. preupload → LFS batch (basic/multipart) → NDJSON commit
//! with `parentCommit`. Unchanged files are skipped, stored LFS objects are never re-sent, and
//! a push with nothing to change makes no commit.

use super::client::HubClient;
use super::error::{HubError, PushConflict};
use super::protocol::*;
use crate::hash::{git_blob_sha1, sha256_file_progress};
use crate::names;
use crate::repo_id::{validate_repo_path, RepoId, RepoRef, RepoType};
use base64::Engine;
use futures_util::StreamExt;
use reqwest::{header, Method};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub repo: RepoId,
    /// A model repo, or a dataset repo (`push --repo-type dataset`).
    pub repo_type: RepoType,
    pub revision: String,
    pub private: Option<bool>,
    pub create_pr: bool,
    pub message: String,
    pub description: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub delete: Vec<String>,
    /// Upload Git LFS pointer files as they are (refused by default: a pointer where weights
    /// or photos should be means the folder came from a clone made without git-lfs).
    pub allow_lfs_pointers: bool,
    /// Where progress goes (nowhere by default): the command line draws it as bars.
    pub reporter: Reporter,
}

impl PushOptions {
    /// The target with its type, as the client's URLs need it.
    pub fn target(&self) -> RepoRef<'_> {
        RepoRef { kind: self.repo_type, id: &self.repo }
    }

    /// A push of a whole folder to `main` of `repo`, no globs, no progress reported.
    pub fn new(repo: RepoId, message: &str) -> PushOptions {
        PushOptions {
            repo,
            repo_type: RepoType::Model,
            revision: "main".into(),
            private: None,
            create_pr: false,
            message: message.into(),
            description: String::new(),
            include: vec![],
            exclude: vec![],
            delete: vec![],
            allow_lfs_pointers: false,
            reporter: Reporter::default(),
        }
    }
}

/// What a push does to one file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    Add,
    Update,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub action: FileAction,
    pub size: u64,
    pub lfs: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    Committed,
    NothingToPush,
    DryRun,
}

/// The result of a push (or of a dry run), as `--json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushOutcome {
    pub status: PushStatus,
    pub repo: String,
    pub revision: String,
    /// The new commit; for "nothing to push" the existing head; none for a dry run.
    pub commit_oid: Option<String>,
    pub commit_url: Option<String>,
    pub pr_url: Option<String>,
    /// The commit the push builds on (after any rebase).
    pub parent_commit: Option<String>,
    /// Files added, updated or deleted (would be, for a dry run).
    pub files: Vec<FileChange>,
    pub unchanged: usize,
    /// Bytes of the added and updated files.
    pub total_bytes: u64,
    pub uploaded_lfs_bytes: u64,
    pub reused_lfs_objects: usize,
    /// The repo / branch did not exist and was (would be) created.
    pub new_repo: bool,
    pub new_branch: bool,
    /// How often the commit was rebased onto a concurrent change that touched other files.
    pub rebased: u32,
}

/// A local file selected for the push.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path_in_repo: String,
    pub abs: PathBuf,
}

fn globs(patterns: &[String], flag: &str) -> Result<globset::GlobSet, HubError> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        let g = globset::Glob::new(p).map_err(|e| HubError::Invalid(format!("invalid {flag} pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build().map_err(|e| HubError::Invalid(format!("invalid {flag} patterns: {e}")))
}

/// Lists the files of `dir` to push, refusing anything that would escape it.
pub fn scan_folder(dir: &Path, include: &[String], exclude: &[String]) -> Result<Vec<LocalFile>, HubError> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| HubError::Invalid(format!("cannot read folder {}: {e} (pass an existing folder to push)", dir.display())))?;
    if !meta.is_dir() {
        return Err(HubError::Invalid(format!("{} is not a folder: push takes a folder", dir.display())));
    }
    let root = dir.canonicalize().map_err(HubError::io(dir))?;
    let inc = globs(include, "--include")?;
    let exc = globs(exclude, "--exclude")?;
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(&root).follow_links(true).sort_by_file_name().into_iter().filter_entry(|e| {
        // Git metadata and huggingface_hub's local-dir bookkeeping are never part of a model.
        let name = e.file_name().to_string_lossy();
        !(e.depth() > 0 && e.file_type().is_dir() && (name == ".git" || name == ".cache"))
    });
    for entry in walker {
        // A folder that cannot be read (permissions, a disk error) is an I/O failure, not bad input.
        let entry = entry.map_err(|e| HubError::Io { path: e.path().unwrap_or(dir).to_path_buf(), source: e.into() })?;
        if !entry.file_type().is_file() {
            continue;
        }
        if entry.path_is_symlink() || entry.depth() > 0 {
            let real = entry.path().canonicalize().map_err(HubError::io(entry.path()))?;
            if !real.starts_with(&root) {
                return Err(HubError::Invalid(format!(
                    "{} is a symlink to {}, outside {}: refusing to push it (copy the file in, or --exclude it)",
                    entry.path().display(),
                    real.display(),
                    dir.display()
                )));
            }
        }
        let rel = entry.path().strip_prefix(&root).expect("walk stays under root");
        let rel = rel
            .to_str()
            .ok_or_else(|| HubError::Invalid(format!("{} is not valid UTF-8; rename it", entry.path().display())))?
            .replace(std::path::MAIN_SEPARATOR, "/");
        validate_repo_path(&rel).map_err(|e| HubError::Invalid(e.to_string()))?;
        if (!include.is_empty() && !inc.is_match(&rel)) || exc.is_match(&rel) {
            continue;
        }
        files.push(LocalFile { path_in_repo: rel, abs: entry.path().to_path_buf() });
    }
    Ok(files)
}

/// The byte-counted phases of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Hashing the local files (sha256 for LFS files, git blob sha1 for the others).
    Hashing,
    /// Uploading the LFS objects the server does not have.
    Uploading,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Hashing => "hashing",
            Phase::Uploading => "uploading",
        }
    }
}

/// What a push reports while it works. The library only reports; the command line draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    /// A phase begins, with `total` bytes to go through.
    Start { phase: Phase, total: u64 },
    /// `done` bytes of the phase are through (it goes back when an upload is retried).
    Progress { phase: Phase, done: u64 },
    /// The phase is over.
    Finish { phase: Phase },
}

/// Receives a push's [`PushEvent`]s (from upload streams too, hence `Send + Sync`); the default
/// drops them.
#[derive(Clone, Default)]
pub struct Reporter(Option<Arc<dyn Fn(PushEvent) + Send + Sync>>);

impl Reporter {
    pub fn new(on: impl Fn(PushEvent) + Send + Sync + 'static) -> Reporter {
        Reporter(Some(Arc::new(on)))
    }

    fn emit(&self, e: PushEvent) {
        if let Some(on) = &self.0 {
            on(e);
        }
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Reporter(..)" } else { "Reporter(none)" })
    }
}

/// A phase's byte count, shared with the upload streams; every change is reported.
#[derive(Clone)]
struct Meter {
    reporter: Reporter,
    phase: Phase,
    done: Arc<AtomicU64>,
}

impl Meter {
    fn start(reporter: &Reporter, phase: Phase, total: u64) -> Meter {
        reporter.emit(PushEvent::Start { phase, total });
        Meter { reporter: reporter.clone(), phase, done: Arc::new(AtomicU64::new(0)) }
    }

    fn position(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.reporter.emit(PushEvent::Progress { phase: self.phase, done });
    }

    fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.reporter.emit(PushEvent::Progress { phase: self.phase, done });
    }

    fn finish(&self) {
        self.reporter.emit(PushEvent::Finish { phase: self.phase });
    }
}

struct Planned {
    file: LocalFile,
    /// sha256 for LFS files, git blob sha1 for regular ones: what the Hub compares.
    oid: String,
    size: u64,
    lfs: bool,
    action: FileAction,
}

/// What a push would change, computed without writing anything: `--dry-run` prints it, and
/// `commit_plan` carries it out.
pub struct PushPlan {
    pub repo: RepoId,
    pub revision: String,
    pub repo_exists: bool,
    pub branch_exists: bool,
    /// Head of the revision (of main when the branch does not exist yet).
    pub parent: Option<String>,
    changes: Vec<Planned>,
    pub unchanged: Vec<String>,
    pub deleted: Vec<String>,
}

impl PushPlan {
    pub fn files(&self) -> Vec<FileChange> {
        let mut out: Vec<FileChange> =
            self.changes.iter().map(|p| FileChange { path: p.file.path_in_repo.clone(), action: p.action, size: p.size, lfs: p.lfs }).collect();
        out.extend(self.deleted.iter().map(|p| FileChange { path: p.clone(), action: FileAction::Delete, size: 0, lfs: false }));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.deleted.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.changes.iter().map(|p| p.size).sum()
    }

    fn outcome(&self, status: PushStatus) -> PushOutcome {
        PushOutcome {
            status,
            repo: self.repo.to_string(),
            revision: self.revision.clone(),
            commit_oid: None,
            commit_url: None,
            pr_url: None,
            parent_commit: self.parent.clone(),
            files: self.files(),
            unchanged: self.unchanged.len(),
            total_bytes: self.total_bytes(),
            uploaded_lfs_bytes: 0,
            reused_lfs_objects: 0,
            new_repo: !self.repo_exists,
            new_branch: !self.branch_exists,
            rebased: 0,
        }
    }

    /// The outcome a dry run reports.
    pub fn dry_run_outcome(&self) -> PushOutcome {
        self.outcome(PushStatus::DryRun)
    }
}

fn is_commit_oid(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// (repo exists, revision head) — `None` heads for a missing repo or branch.
async fn remote_state(client: &HubClient, opts: &PushOptions) -> Result<(bool, Option<String>, Option<String>), HubError> {
    let main = match client.repo_info(opts.target(), None).await {
        Ok(info) => info.sha,
        Err(e) if e.error_code() == Some("RepoNotFound") || e.status() == Some(404) => return Ok((false, None, None)),
        Err(e) => return Err(e),
    };
    if opts.revision == "main" {
        return Ok((true, main.clone(), main));
    }
    match client.repo_info(opts.target(), Some(&opts.revision)).await {
        Ok(info) => Ok((true, info.sha, main)),
        Err(e) if e.error_code() == Some("RevisionNotFound") => Ok((true, None, main)),
        Err(e) => Err(e),
    }
}

/// Creates the repo and the branch a push targets when they are missing. Returns (new repo,
/// new branch).
pub async fn prepare_target(client: &HubClient, opts: &PushOptions) -> Result<(bool, bool), HubError> {
    let (exists, mut head, _) = remote_state(client, opts).await?;
    if !exists {
        client.create_repo(opts.target(), opts.private, true).await?;
        head = remote_state(client, opts).await?.1;
    }
    if head.is_some() {
        return Ok((!exists, false));
    }
    check_new_branch(opts)?;
    client.create_branch(opts.target(), &opts.revision, None).await?;
    Ok((!exists, true))
}

fn check_new_branch(opts: &PushOptions) -> Result<(), HubError> {
    if opts.create_pr {
        return Err(HubError::Invalid(format!(
            "--revision {} does not exist in {}: a pull request needs an existing base branch",
            opts.revision, opts.repo
        )));
    }
    if is_commit_oid(&opts.revision) || opts.revision.starts_with("refs/") {
        return Err(HubError::Invalid(format!("--revision {} does not exist in {} (only branches are created on push)", opts.revision, opts.repo)));
    }
    Ok(())
}

/// Refuses to publish Git LFS pointers as file contents: the Hub would store the ~130-byte stub
/// as the model, and every download would get the stub (the pointer check of
/// [`crate::lfs_pointer`]). All pointers are named in one error.
fn refuse_lfs_pointers(files: &[LocalFile]) -> Result<(), HubError> {
    let pointers: Vec<_> = files.iter().filter_map(|f| crate::lfs_pointer::check_file(&f.abs).err().map(|e| (f, e))).collect();
    let Some((_, first)) = pointers.first() else { return Ok(()) };
    let names: Vec<String> = pointers.iter().map(|(f, e)| format!("{} ({}-byte file)", f.path_in_repo, e.pointer.size)).collect();
    Err(HubError::Invalid(format!(
        "refusing to upload {} Git LFS pointer file(s) as content: {}. The folder comes from a clone made without Git LFS, so these \
         ~130-byte stubs stand where the real files should be; run `git lfs install && git lfs pull` in the clone and push again \
         (or pass --allow-lfs-pointers to upload the pointers as they are). First: {first}",
        pointers.len(),
        names.join(", ")
    )))
}

/// Checks a repo card's metadata with the Hub (the rules of `repo_type`'s cards) before
/// anything is uploaded.
async fn check_card(client: &HubClient, files: &[LocalFile], repo_type: RepoType) -> Result<(), HubError> {
    let Some(card) = files.iter().find(|f| f.path_in_repo == names::README) else { return Ok(()) };
    let text = std::fs::read_to_string(&card.abs).map_err(HubError::io(&card.abs))?;
    match client.validate_yaml(&text, repo_type).await {
        Ok(_) => Ok(()),
        Err(HubError::Http(f)) if matches!(f.status, 400 | 422) => Err(HubError::Invalid(format!(
            "{}: the {} card's metadata is invalid: {} (fix the YAML block between the --- lines)",
            card.abs.display(),
            repo_type,
            f.message
        ))),
        Err(e) => Err(e),
    }
}

/// Works out what pushing `dir` would change, without writing anything: the files to add,
/// update and delete, each with its upload mode, and the commit it would build on. Checks the
/// model card (README.md) metadata with the Hub's validate-yaml.
pub async fn plan_push(client: &HubClient, dir: &Path, opts: &PushOptions) -> Result<PushPlan, HubError> {
    let files = scan_folder(dir, &opts.include, &opts.exclude)?;
    let delete_globs = globs(&opts.delete, "--delete")?;
    if files.is_empty() && opts.delete.is_empty() {
        return Err(HubError::Invalid(format!(
            "nothing to push: {} has no files{}",
            dir.display(),
            if opts.include.is_empty() && opts.exclude.is_empty() { "" } else { " that pass --include/--exclude" }
        )));
    }
    if opts.message.trim().is_empty() {
        return Err(HubError::Invalid("the commit message is empty: pass --message".into()));
    }
    if !opts.allow_lfs_pointers {
        refuse_lfs_pointers(&files)?;
    }
    check_card(client, &files, opts.repo_type).await?;
    let (repo_exists, head, main) = remote_state(client, opts).await?;
    let branch_exists = head.is_some();
    if repo_exists && !branch_exists {
        check_new_branch(opts)?;
    }
    // A new branch starts at main: compare against it.
    let base_rev = if branch_exists { opts.revision.as_str() } else { "main" };

    let mut preupload = Vec::with_capacity(files.len());
    for f in &files {
        let mut sample = vec![0u8; 512];
        let mut fh = std::fs::File::open(&f.abs).map_err(HubError::io(&f.abs))?;
        let n = fh.read(&mut sample).map_err(HubError::io(&f.abs))?;
        sample.truncate(n);
        preupload.push(PreuploadFile {
            path: f.path_in_repo.clone(),
            sample: base64::engine::general_purpose::STANDARD.encode(&sample),
            size: fh.metadata().map_err(HubError::io(&f.abs))?.len(),
        });
    }
    let answers = if preupload.is_empty() {
        vec![]
    } else if repo_exists {
        client.preupload(opts.target(), base_rev, preupload.clone(), opts.create_pr).await?
    } else {
        // No repo to ask yet: the Hub's own rule, and nothing on the remote side.
        preupload
            .iter()
            .map(|p| {
                let sample = base64::engine::general_purpose::STANDARD.decode(&p.sample).unwrap_or_default();
                PreuploadAnswer {
                    path: p.path.clone(),
                    upload_mode: if likely_lfs(&p.path, p.size, &sample) { "lfs" } else { "regular" }.into(),
                    should_ignore: false,
                    oid: None,
                }
            })
            .collect()
    };

    // Hash after preupload, so each file gets only the id its upload mode needs.
    let total: u64 = preupload.iter().map(|p| p.size).sum();
    let hash_bar = Meter::start(&opts.reporter, Phase::Hashing, total);
    let mut changes = Vec::new();
    let mut unchanged = Vec::new();
    for (f, pre) in files.into_iter().zip(&preupload) {
        let answer = answers.iter().find(|a| a.path == f.path_in_repo).ok_or_else(|| HubError::Protocol {
            url: client.endpoint().into(),
            detail: format!("preupload did not answer for {}", f.path_in_repo),
        })?;
        if answer.should_ignore {
            continue;
        }
        // Empty files always go inline: storage backends refuse empty LFS uploads.
        let lfs = answer.upload_mode == "lfs" && pre.size > 0;
        let base = hash_bar.position();
        let oid = if lfs {
            sha256_file_progress(&f.abs, |n| hash_bar.set(base + n)).map_err(HubError::io(&f.abs))?
        } else {
            let bytes = std::fs::read(&f.abs).map_err(HubError::io(&f.abs))?;
            hash_bar.inc(bytes.len() as u64);
            git_blob_sha1(&bytes)
        };
        if std::fs::metadata(&f.abs).map_err(HubError::io(&f.abs))?.len() != pre.size {
            return Err(HubError::Invalid(format!("{} changed while being pushed; run the push again", f.abs.display())));
        }
        match answer.oid.as_deref() {
            Some(remote) if remote == oid => unchanged.push(f.path_in_repo),
            remote => {
                let action = if remote.is_some() { FileAction::Update } else { FileAction::Add };
                changes.push(Planned { file: f, oid, size: pre.size, lfs, action });
            }
        }
    }
    hash_bar.finish();

    let mut deleted = Vec::new();
    if !opts.delete.is_empty() && repo_exists {
        let remote = client.list_tree(opts.target(), base_rev).await?;
        let local: std::collections::HashSet<String> = scan_folder(dir, &opts.include, &opts.exclude)?.into_iter().map(|f| f.path_in_repo).collect();
        deleted =
            remote.into_iter().filter(|e| e.kind == "file" && delete_globs.is_match(&e.path) && !local.contains(&e.path)).map(|e| e.path).collect();
    }
    Ok(PushPlan {
        repo: opts.repo.clone(),
        revision: opts.revision.clone(),
        repo_exists,
        branch_exists,
        parent: if branch_exists { head } else { main },
        changes,
        unchanged,
        deleted,
    })
}

/// One folder → one commit: creates the repo/branch if needed, plans, uploads, commits.
pub async fn push_folder(client: &HubClient, dir: &Path, opts: &PushOptions) -> Result<PushOutcome, HubError> {
    // Bad input is refused before the repo or branch is created.
    if !opts.allow_lfs_pointers {
        refuse_lfs_pointers(&scan_folder(dir, &opts.include, &opts.exclude)?)?;
    }
    let (new_repo, new_branch) = prepare_target(client, opts).await?;
    let plan = plan_push(client, dir, opts).await?;
    let mut outcome = commit_plan(client, &plan, opts).await?;
    outcome.new_repo = new_repo;
    outcome.new_branch = new_branch;
    Ok(outcome)
}

const MAX_REBASES: u32 = 3;

/// Uploads and commits a plan made by `plan_push` after `prepare_target`. A concurrent commit
/// (412 on `parentCommit`) is rebased onto when it touched none of this push's files, and
/// refused with `HubError::Conflict` when it did.
pub async fn commit_plan(client: &HubClient, plan: &PushPlan, opts: &PushOptions) -> Result<PushOutcome, HubError> {
    if !plan.repo_exists || !plan.branch_exists {
        return Err(HubError::Invalid(format!("{}@{} does not exist yet: call prepare_target before planning the push", plan.repo, plan.revision)));
    }
    if plan.is_empty() {
        let mut o = plan.outcome(PushStatus::NothingToPush);
        o.commit_oid = plan.parent.clone();
        o.commit_url = plan.parent.as_ref().map(|oid| client.url(&format!("/{}/commit/{oid}", RepoRef { kind: opts.repo_type, id: &plan.repo })));
        return Ok(o);
    }
    let (uploaded, reused) = upload_lfs(client, opts, &plan.changes).await?;

    let mut file_lines = Vec::with_capacity(plan.changes.len() + plan.deleted.len());
    for p in &plan.changes {
        if p.lfs {
            file_lines.push(CommitLine::LfsFile {
                path: p.file.path_in_repo.clone(),
                algo: Some("sha256".into()),
                oid: p.oid.clone(),
                size: Some(p.size),
            });
        } else {
            let bytes = std::fs::read(&p.file.abs).map_err(HubError::io(&p.file.abs))?;
            if git_blob_sha1(&bytes) != p.oid {
                return Err(HubError::Invalid(format!("{} changed while being pushed; run the push again", p.file.abs.display())));
            }
            file_lines.push(CommitLine::File {
                content: base64::engine::general_purpose::STANDARD.encode(bytes),
                path: p.file.path_in_repo.clone(),
                encoding: "base64".into(),
            });
        }
    }
    file_lines.extend(plan.deleted.iter().map(|p| CommitLine::DeletedFile { path: p.clone() }));

    let mut parent = plan.parent.clone();
    let mut rebased = 0;
    loop {
        let mut lines =
            vec![CommitLine::Header { summary: opts.message.clone(), description: opts.description.clone(), parent_commit: parent.clone() }];
        lines.extend(file_lines.iter().cloned());
        match client.commit(opts.target(), &opts.revision, &lines, opts.create_pr).await {
            Ok(resp) => {
                let mut o = plan.outcome(PushStatus::Committed);
                o.commit_oid = Some(resp.commit_oid);
                o.commit_url = Some(resp.commit_url);
                o.pr_url = resp.pull_request_url;
                o.parent_commit = parent;
                o.uploaded_lfs_bytes = uploaded;
                o.reused_lfs_objects = reused;
                o.rebased = rebased;
                return Ok(o);
            }
            Err(e) if e.status() == Some(412) && rebased < MAX_REBASES => {
                let Some(old) = parent.clone() else { return Err(e) };
                let new = client.repo_info(opts.target(), Some(&opts.revision)).await?.sha.ok_or(e)?;
                let theirs = changed_between(client, opts.target(), &old, &new).await?;
                let ours: std::collections::HashSet<&str> = plan
                    .changes
                    .iter()
                    .map(|p| p.file.path_in_repo.as_str())
                    .chain(plan.unchanged.iter().map(String::as_str))
                    .chain(plan.deleted.iter().map(String::as_str))
                    .collect();
                let overlap: Vec<String> = theirs.into_iter().filter(|p| ours.contains(p.as_str())).collect();
                if !overlap.is_empty() {
                    return Err(HubError::Conflict(Box::new(PushConflict {
                        repo: opts.repo.to_string(),
                        revision: opts.revision.clone(),
                        head: new,
                        paths: overlap,
                    })));
                }
                parent = Some(new);
                rebased += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Paths whose content differs between two commits of a repo.
async fn changed_between(client: &HubClient, repo: RepoRef<'_>, old: &str, new: &str) -> Result<Vec<String>, HubError> {
    let files = |entries: Vec<TreeEntry>| -> std::collections::BTreeMap<String, String> {
        entries.into_iter().filter(|e| e.kind == "file").map(|e| (e.path, e.oid)).collect()
    };
    let before = files(client.list_tree(repo, old).await?);
    let after = files(client.list_tree(repo, new).await?);
    let mut changed: Vec<String> = after.iter().filter(|(p, oid)| before.get(*p) != Some(*oid)).map(|(p, _)| p.clone()).collect();
    changed.extend(before.keys().filter(|p| !after.contains_key(*p)).cloned());
    changed.sort();
    Ok(changed)
}

/// Uploads the LFS objects the server does not have yet. Returns (bytes sent, objects reused).
async fn upload_lfs(client: &HubClient, opts: &PushOptions, planned: &[Planned]) -> Result<(u64, usize), HubError> {
    let mut objects: Vec<LfsObject> = Vec::new();
    for p in planned.iter().filter(|p| p.lfs) {
        let o = LfsObject { oid: p.oid.clone(), size: p.size };
        if !objects.contains(&o) {
            objects.push(o);
        }
    }
    if objects.is_empty() {
        return Ok((0, 0));
    }
    let answers = client.lfs_batch(opts.target(), &opts.revision, &objects, opts.create_pr).await?;
    let batch_url = client.url(&format!("/{}.git/info/lfs/objects/batch", opts.target()));
    let todo: Vec<_> = answers.iter().filter(|a| a.actions.as_ref().is_some_and(|x| x.upload.is_some())).collect();
    if let Some(err) = answers.iter().find_map(|a| a.error.as_ref().map(|e| (a, e))) {
        return Err(HubError::Protocol {
            url: batch_url,
            detail: format!("the server refused LFS object {} (HTTP {}): {}", err.0.oid, err.1.code, err.1.message),
        });
    }
    let total: u64 = todo.iter().map(|a| a.size).sum();
    let pb = Meter::start(&opts.reporter, Phase::Uploading, total);
    for obj in &todo {
        let p = planned.iter().find(|p| p.lfs && p.oid == obj.oid).ok_or_else(|| HubError::Protocol {
            url: batch_url.clone(),
            detail: format!("LFS batch answered for an object we did not ask for: {}", obj.oid),
        })?;
        let actions = obj.actions.as_ref().expect("filtered on actions");
        let upload = actions.upload.as_ref().expect("filtered on upload");
        let start = pb.position();
        if let Some(chunk) = upload.header.get("chunk_size") {
            upload_multipart(client, &p.file.abs, obj, upload, chunk, &pb).await?;
        } else {
            upload_basic(client, &p.file.abs, obj, &upload.href, &pb, start).await?;
        }
        if let Some(verify) = &actions.verify {
            let body = serde_json::json!({ "oid": obj.oid, "size": obj.size });
            client
                .execute("POST", &verify.href, || {
                    let mut rb = client.request(Method::POST, &verify.href).json(&body);
                    for (k, v) in &verify.header {
                        rb = rb.header(k.as_str(), v.as_str());
                    }
                    Ok(rb)
                })
                .await?;
        }
    }
    pb.finish();
    Ok((total, objects.len() - todo.len()))
}

async fn upload_basic(client: &HubClient, path: &Path, obj: &LfsBatchObject, href: &str, pb: &Meter, start: u64) -> Result<(), HubError> {
    client
        .execute("PUT", href, || {
            pb.set(start);
            let file = std::fs::File::open(path).map_err(HubError::io(path))?;
            let pb = pb.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20);
            let stream = futures_util::StreamExt::inspect(stream, move |chunk| {
                if let Ok(c) = chunk {
                    pb.inc(c.len() as u64);
                }
            });
            Ok(client.storage_request(Method::PUT, href).header(header::CONTENT_LENGTH, obj.size).body(reqwest::Body::wrap_stream(stream)))
        })
        .await?;
    Ok(())
}

const PARALLEL_PARTS: usize = 4;

async fn upload_multipart(
    client: &HubClient,
    path: &Path,
    obj: &LfsBatchObject,
    upload: &LfsAction,
    chunk: &str,
    pb: &Meter,
) -> Result<(), HubError> {
    let chunk_size: u64 = chunk
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| HubError::Protocol { url: upload.href.clone(), detail: format!("invalid multipart chunk_size {chunk:?}") })?;
    let mut parts: Vec<(u32, &String)> = upload
        .header
        .iter()
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()))
        .filter_map(|(k, v)| k.parse().ok().map(|n| (n, v)))
        .collect();
    parts.sort_by_key(|(n, _)| *n);
    let expected = obj.size.div_ceil(chunk_size);
    if parts.len() as u64 != expected {
        return Err(HubError::Protocol {
            url: upload.href.clone(),
            detail: format!("multipart upload offers {} part URLs for {} parts", parts.len(), expected),
        });
    }
    // A few parts in flight, as huggingface.js does: one stream rarely fills the link.
    let uploads = parts.iter().enumerate().map(|(i, (number, url))| async move {
        let offset = i as u64 * chunk_size;
        let len = chunk_size.min(obj.size - offset) as usize;
        let mut buf = vec![0u8; len];
        let mut file = std::fs::File::open(path).map_err(HubError::io(path))?;
        file.seek(SeekFrom::Start(offset)).map_err(HubError::io(path))?;
        file.read_exact(&mut buf).map_err(HubError::io(path))?;
        let body = bytes::Bytes::from(buf);
        let resp = client.execute("PUT", url, || Ok(client.storage_request(Method::PUT, url).body(body.clone()))).await?;
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| HubError::Protocol { url: (*url).clone(), detail: "part upload answered without an ETag".into() })?
            .to_string();
        pb.inc(len as u64);
        Ok::<_, HubError>(CompletePart { part_number: *number, etag })
    });
    let mut done: Vec<CompletePart> = futures_util::StreamExt::buffer_unordered(futures_util::stream::iter(uploads), PARALLEL_PARTS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    done.sort_by_key(|p| p.part_number);
    let body = CompleteMultipart { oid: obj.oid.clone(), parts: done };
    client
        .execute("POST", &upload.href, || {
            Ok(client
                .storage_request(Method::POST, &upload.href)
                .header(header::ACCEPT, "application/vnd.git-lfs+json")
                .header(header::CONTENT_TYPE, "application/vnd.git-lfs+json")
                .body(serde_json::to_vec(&body).expect("serializable")))
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_applies_globs_and_skips_git() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sub")).unwrap();
        std::fs::create_dir_all(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join("a.safetensors"), b"x").unwrap();
        std::fs::write(d.path().join("sub/b.png"), b"y").unwrap();
        std::fs::write(d.path().join(".git/HEAD"), b"z").unwrap();
        let all: Vec<_> = scan_folder(d.path(), &[], &[]).unwrap().into_iter().map(|f| f.path_in_repo).collect();
        assert_eq!(all, vec!["a.safetensors", "sub/b.png"]);
        let png: Vec<_> = scan_folder(d.path(), &["*.png".into()], &[]).unwrap().into_iter().map(|f| f.path_in_repo).collect();
        assert_eq!(png, vec!["sub/b.png"]);
        let no_png: Vec<_> = scan_folder(d.path(), &[], &["sub/*".into()]).unwrap().into_iter().map(|f| f.path_in_repo).collect();
        assert_eq!(no_png, vec!["a.safetensors"]);
    }

    #[cfg(unix)]
    #[test]
    fn scan_refuses_symlinks_out_of_the_folder() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("link")).unwrap();
        let err = scan_folder(d.path(), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn lfs_pointers_are_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("README.md"), "# card").unwrap();
        std::fs::write(t.path().join("pytorch_lora_weights.safetensors"), crate::lfs_pointer::tests::FIELD).unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        std::fs::write(t.path().join("sub/photo.jpg"), crate::lfs_pointer::tests::FIELD.replace("3226184", "91")).unwrap();
        let files = scan_folder(t.path(), &[], &[]).unwrap();
        let e = refuse_lfs_pointers(&files).unwrap_err().to_string();
        for needle in [
            "2 Git LFS pointer file(s)",
            "pytorch_lora_weights.safetensors (3226184-byte file)",
            "sub/photo.jpg (91-byte file)",
            "git lfs pull",
            "--allow-lfs-pointers",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
        assert!(refuse_lfs_pointers(&files[..1]).is_ok(), "the card alone is fine");
    }

    #[test]
    fn scan_refuses_missing_folder() {
        assert!(scan_folder(Path::new("/definitely/not/here"), &[], &[]).is_err());
    }
}
