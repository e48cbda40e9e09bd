//! Downloads: `resolve`.

use super::auth::{commit_at, Who};
use super::{fail_code, io_fail, storage_url, Reply, Repo, Shared};
use axum::body::Body;
use axum::extract::{Extension, State as S};
use axum::http::{header, HeaderMap, Method, Response, StatusCode};

/// `GET|HEAD /{repo}/resolve/{rev}/{path}`: a regular file with its git blob sha1 as ETag; an
/// LFS file as a 302 to the storage origin with the metadata (`X-Linked-Etag`,
/// `X-Linked-Size`, `X-Repo-Commit`) on the redirect itself, as huggingface_hub's
/// `file_download.py` reads it.
pub(super) async fn resolve(S(state): S<Shared>, Extension(who): Extension<Who>, method: Method, repo: Repo, headers: HeaderMap) -> Reply {
    let (rev, path, head_only) = (repo.rev.as_str(), repo.path.as_str(), method == Method::HEAD);
    who.read(&state, repo.target())?;
    let (oid, c) = commit_at(&state, repo.target(), rev)?;
    let Some(f) = c.files.get(path) else {
        let mut e = fail_code(StatusCode::NOT_FOUND, "EntryNotFound", format!("{path} does not exist at {rev}"));
        e.headers.push(("X-Repo-Commit", oid));
        return Err(e);
    };
    if f.lfs {
        // Like the Hub's CDN redirect: metadata on the 302 itself, absolute Location on another origin.
        return Ok(Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, format!("{}/lfs-objects/{}", storage_url(&state, &headers), f.sha256))
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
