//! Git LFS: the batch API under the git remote, the upload URLs it hands out (basic and
//! multipart, as huggingface_hub 2.4.0's `lfs.py` uses them), verify, and the storage origin
//! that resolve redirects LFS downloads to.

use super::auth::{require_write, Who};
use super::{base_url, fail, io_fail, json_reply, no_route, repo_id, HubFail, JsonBody, PathParams, Reply, Repo, Shared, State};
use crate::hash::sha256_hex;
use crate::hub::protocol::*;
use crate::repo_id::RepoRef;
use axum::body::Body;
use axum::extract::{Extension, State as S};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use futures_util::StreamExt;
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// An upload URL handed out by the batch API: which object it must receive.
pub(super) struct Upload {
    oid: String,
    size: u64,
}

/// `POST /{repo}.git/info/lfs/objects/batch`: the Git LFS batch API (upload only), `basic`
/// or, for objects above `multipart_chunk`, huggingface_hub's `multipart` transfer.
pub(super) async fn batch(
    S(state): S<Shared>,
    Extension(who): Extension<Who>,
    PathParams((ns, name_git)): PathParams<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LfsBatchRequest>,
) -> Reply {
    // The batch API lives under the git remote: `{ns}/{name}.git/info/lfs`.
    if !name_git.ends_with(".git") {
        return Err(no_route(method, uri).await);
    }
    let name = name_git.trim_end_matches(".git");
    let id = &repo_id(&ns, name)?;
    who.write(&state, RepoRef { kind: super::kind_of(&uri), id })?;
    if req.operation != "upload" {
        return Err(fail(StatusCode::BAD_REQUEST, "only the upload operation is supported"));
    }
    let multipart_ok = req.transfers.iter().any(|t| t == "multipart");
    let base = base_url(&headers);
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

/// `PUT /lfs-upload/{id}`: a whole object (the `basic` transfer's upload action).
pub(super) async fn put_basic(S(state): S<Shared>, PathParams(upload_id): PathParams<String>, body: Body) -> Reply {
    let upload_id = upload_id.as_str();
    let state = &*state;
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

/// `PUT /lfs-upload/{id}/part/{n}`: one part of a `multipart` transfer.
pub(super) async fn put_part(S(state): S<Shared>, PathParams((upload_id, n)): PathParams<(String, String)>, body: Body) -> Reply {
    let (upload_id, state) = (upload_id.as_str(), &*state);
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

/// `POST /lfs-upload/{id}/complete`: joins the parts (checked against their ETags).
pub(super) async fn complete_multipart(
    S(state): S<Shared>,
    PathParams(upload_id): PathParams<String>,
    JsonBody(req): JsonBody<CompleteMultipart>,
) -> Reply {
    let (upload_id, state) = (upload_id.as_str(), &*state);
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

/// `POST /lfs-verify/{repo}`: the batch answer's verify action.
pub(super) async fn verify(S(state): S<Shared>, Extension(who): Extension<Who>, repo: Repo, JsonBody(req): JsonBody<LfsObject>) -> Reply {
    require_write(who.caller(), repo.target())?;
    match state.store.blob_size(&req.oid) {
        Some(s) if s == req.size => json_reply(StatusCode::OK, &serde_json::json!({})),
        Some(s) => Err(fail(StatusCode::BAD_REQUEST, format!("object {} has {s} bytes, not {}", req.oid, req.size))),
        None => Err(fail(StatusCode::NOT_FOUND, format!("object {} was not uploaded", req.oid))),
    }
}

/// `GET|HEAD /lfs-objects/{oid}`: the storage (CDN) side of an LFS download; needs no token.
pub(super) async fn object(S(state): S<Shared>, method: Method, PathParams(oid): PathParams<String>) -> Reply {
    let (oid, head_only) = (oid.as_str(), method == Method::HEAD);
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
