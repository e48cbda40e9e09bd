//! Commits: `POST /api/models/{repo}/preupload/{rev}` and the NDJSON
//! `POST /api/models/{repo}/commit/{rev}`.

use super::auth::{commit_at, Who};
use super::store::{FileRec, Store};
use super::{base_url, fail, fail_code, flag, io_fail, json_reply, query, BodyBytes, JsonBody, Reply, Repo, Shared};
use crate::card::repo_card_errors;
use crate::hub::protocol::*;
use crate::names;
use crate::repo_id::validate_repo_path;
use axum::extract::{Extension, RawQuery, State as S};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;

/// `POST /api/models/{repo}/preupload/{rev}`: each file's upload mode (`regular` or `lfs`) and
/// the oid the remote has for it, so unchanged files are skipped.
pub(super) async fn preupload(S(state): S<Shared>, Extension(who): Extension<Who>, repo: Repo, JsonBody(req): JsonBody<PreuploadRequest>) -> Reply {
    who.write(&state, repo.target())?;
    let (_, c) = commit_at(&state, repo.target(), &repo.rev)?;
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

/// `POST /api/models/{repo}/commit/{rev}[?create_pr=1]`: an NDJSON commit (a `header` line,
/// then `file` (base64), `lfsFile` (a stored sha256), `deletedFile` and `deletedFolder` lines),
/// checked against `parentCommit` (412 when the branch moved), as huggingface_hub's
/// `_commit_api.py` sends it.
pub(super) async fn commit(
    S(state): S<Shared>,
    Extension(who): Extension<Who>,
    repo: Repo,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    BodyBytes(body): BodyBytes,
) -> Reply {
    let (id, rev, create_pr) = (&repo.id, repo.rev.as_str(), flag(&query(q.as_deref()), "create_pr"));
    who.write(&state, repo.target())?;
    let store = state.repos(repo.kind);
    let text = std::str::from_utf8(&body).map_err(|_| fail(StatusCode::BAD_REQUEST, "commit body is not UTF-8"))?;
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
    let refs = store.refs(id);
    let head = refs.get(rev).cloned().ok_or_else(|| fail_code(StatusCode::NOT_FOUND, "RevisionNotFound", format!("branch {rev} does not exist")))?;
    let base = match parent_commit {
        Some(p) if create_pr => {
            store.resolve(id, &p).ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("parentCommit {p} is not a commit of {id}")))?
        }
        Some(p) if !head.starts_with(&p) || p.len() < 5 => {
            return Err(fail(StatusCode::PRECONDITION_FAILED, "A commit has happened since. Please refresh and try again."));
        }
        _ => head.clone(),
    };
    let mut files = store.commit(id, &base).map(|c| c.files).unwrap_or_default();
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
                if path == names::README {
                    // Like the Hub: a card whose metadata breaks its repo type's rules is
                    // refused, with the validate-yaml messages as a list.
                    let errors = repo_card_errors(&String::from_utf8_lossy(&bytes), repo.kind);
                    if !errors.is_empty() {
                        let list: String = errors.iter().map(|e| format!("\n- {e}")).collect();
                        return Err(fail(StatusCode::BAD_REQUEST, format!("Invalid metadata in README.md.{list}")));
                    }
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
    let oid = store.write_commit(id, vec![base], &summary, &description, files).map_err(io_fail)?;
    let web = base_url(&headers);
    let pr_url = if create_pr {
        let n = store.next_pr_number(id);
        store.set_ref(id, &format!("refs/pr/{n}"), &oid).map_err(io_fail)?;
        Some(format!("{web}/{}/discussions/{n}", repo.target()))
    } else {
        store.set_ref(id, rev, &oid).map_err(io_fail)?;
        None
    };
    json_reply(
        StatusCode::OK,
        &CommitResponse {
            success: Some(true),
            commit_url: format!("{web}/{}/commit/{oid}", repo.target()),
            commit_oid: oid,
            pull_request_url: pr_url,
        },
    )
}
