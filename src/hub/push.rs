//! `push`: one folder → one commit. preupload → LFS batch (basic/multipart) → NDJSON commit
//! with `parentCommit`. Unchanged files are skipped, stored LFS objects are never re-sent, and
//! a push with nothing to change makes no commit.

use super::client::HubClient;
use super::error::HubError;
use super::protocol::*;
use crate::hash::{git_blob_sha1, sha256_file_progress};
use crate::repo_id::{validate_repo_path, RepoId};
use base64::Engine;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{header, Method};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub repo: RepoId,
    pub revision: String,
    pub private: Option<bool>,
    pub create_pr: bool,
    pub message: String,
    pub description: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub delete: Vec<String>,
    pub show_progress: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PushOutcome {
    NothingToPush { repo: String, revision: String, commit: Option<String>, unchanged: usize },
    Committed {
        repo: String,
        revision: String,
        commit: String,
        commit_url: String,
        pull_request_url: Option<String>,
        added: Vec<String>,
        deleted: Vec<String>,
        unchanged: usize,
        uploaded_lfs_bytes: u64,
        reused_lfs_objects: usize,
    },
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
    let meta = std::fs::metadata(dir).map_err(|e| {
        HubError::Invalid(format!("cannot read folder {}: {e} (pass an existing folder to push)", dir.display()))
    })?;
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
        let entry = entry.map_err(|e| HubError::Invalid(format!("cannot read {}: {e}", dir.display())))?;
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

fn bar(show: bool, len: u64, msg: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

struct Planned {
    file: LocalFile,
    /// sha256 for LFS files, git blob sha1 for regular ones: what the Hub compares.
    oid: String,
    size: u64,
    lfs: bool,
}

pub async fn push_folder(client: &HubClient, dir: &Path, opts: &PushOptions) -> Result<PushOutcome, HubError> {
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

    client.create_repo(&opts.repo, opts.private, true).await?;
    let head = client.model_info(&opts.repo, Some(&opts.revision)).await?.sha;

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
    } else {
        client.preupload(&opts.repo, &opts.revision, preupload.clone(), opts.create_pr).await?
    };

    // Hash after preupload, so each file gets only the id its upload mode needs.
    let total: u64 = preupload.iter().map(|p| p.size).sum();
    let hash_bar = bar(opts.show_progress, total, "hashing");
    let mut planned = Vec::new();
    let mut unchanged = 0usize;
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
            sha256_file_progress(&f.abs, |n| hash_bar.set_position(base + n)).map_err(HubError::io(&f.abs))?
        } else {
            let bytes = std::fs::read(&f.abs).map_err(HubError::io(&f.abs))?;
            hash_bar.inc(bytes.len() as u64);
            git_blob_sha1(&bytes)
        };
        if std::fs::metadata(&f.abs).map_err(HubError::io(&f.abs))?.len() != pre.size {
            return Err(HubError::Invalid(format!("{} changed while being pushed; run the push again", f.abs.display())));
        }
        if answer.oid.as_deref() == Some(oid.as_str()) {
            unchanged += 1;
            continue;
        }
        planned.push(Planned { file: f, oid, size: pre.size, lfs });
    }
    hash_bar.finish_and_clear();

    let mut deleted = Vec::new();
    if !opts.delete.is_empty() {
        let remote = client.list_tree(&opts.repo, &opts.revision).await?;
        let local: std::collections::HashSet<String> =
            scan_folder(dir, &opts.include, &opts.exclude)?.into_iter().map(|f| f.path_in_repo).collect();
        deleted = remote
            .into_iter()
            .filter(|e| e.kind == "file" && delete_globs.is_match(&e.path) && !local.contains(&e.path))
            .map(|e| e.path)
            .collect();
    }

    if planned.is_empty() && deleted.is_empty() {
        return Ok(PushOutcome::NothingToPush {
            repo: opts.repo.to_string(),
            revision: opts.revision.clone(),
            commit: head,
            unchanged,
        });
    }

    let (uploaded, reused) = upload_lfs(client, opts, &planned).await?;

    let mut lines = vec![CommitLine::Header {
        summary: opts.message.clone(),
        description: opts.description.clone(),
        parent_commit: head,
    }];
    for p in &planned {
        if p.lfs {
            lines.push(CommitLine::LfsFile {
                path: p.file.path_in_repo.clone(),
                algo: Some("sha256".into()),
                oid: p.oid.clone(),
                size: Some(p.size),
            });
        } else {
            let bytes = std::fs::read(&p.file.abs).map_err(HubError::io(&p.file.abs))?;
            lines.push(CommitLine::File {
                content: base64::engine::general_purpose::STANDARD.encode(bytes),
                path: p.file.path_in_repo.clone(),
                encoding: "base64".into(),
            });
        }
    }
    lines.extend(deleted.iter().map(|p| CommitLine::DeletedFile { path: p.clone() }));
    let resp = client.commit(&opts.repo, &opts.revision, &lines, opts.create_pr).await?;
    Ok(PushOutcome::Committed {
        repo: opts.repo.to_string(),
        revision: opts.revision.clone(),
        commit: resp.commit_oid,
        commit_url: resp.commit_url,
        pull_request_url: resp.pull_request_url,
        added: planned.iter().map(|p| p.file.path_in_repo.clone()).collect(),
        deleted,
        unchanged,
        uploaded_lfs_bytes: uploaded,
        reused_lfs_objects: reused,
    })
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
    let answers = client.lfs_batch(&opts.repo, &opts.revision, &objects, opts.create_pr).await?;
    let batch_url = client.url(&format!("/{}.git/info/lfs/objects/batch", opts.repo));
    let todo: Vec<_> = answers.iter().filter(|a| a.actions.as_ref().is_some_and(|x| x.upload.is_some())).collect();
    if let Some(err) = answers.iter().find_map(|a| a.error.as_ref().map(|e| (a, e))) {
        return Err(HubError::Protocol {
            url: batch_url,
            detail: format!("the server refused LFS object {} (HTTP {}): {}", err.0.oid, err.1.code, err.1.message),
        });
    }
    let total: u64 = todo.iter().map(|a| a.size).sum();
    let pb = bar(opts.show_progress, total, "uploading");
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
    pb.finish_and_clear();
    Ok((total, objects.len() - todo.len()))
}

async fn upload_basic(
    client: &HubClient,
    path: &Path,
    obj: &LfsBatchObject,
    href: &str,
    pb: &ProgressBar,
    start: u64,
) -> Result<(), HubError> {
    client
        .execute("PUT", href, || {
            pb.set_position(start);
            let file = std::fs::File::open(path).map_err(HubError::io(path))?;
            let pb = pb.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20);
            let stream = futures_util::StreamExt::inspect(stream, move |chunk| {
                if let Ok(c) = chunk {
                    pb.inc(c.len() as u64);
                }
            });
            Ok(client
                .storage_request(Method::PUT, href)
                .header(header::CONTENT_LENGTH, obj.size)
                .body(reqwest::Body::wrap_stream(stream)))
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
    pb: &ProgressBar,
) -> Result<(), HubError> {
    let chunk_size: u64 = chunk.parse().ok().filter(|c| *c > 0).ok_or_else(|| HubError::Protocol {
        url: upload.href.clone(),
        detail: format!("invalid multipart chunk_size {chunk:?}"),
    })?;
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
    let mut done: Vec<CompletePart> =
        futures_util::StreamExt::buffer_unordered(futures_util::stream::iter(uploads), PARALLEL_PARTS)
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
        let png: Vec<_> =
            scan_folder(d.path(), &["*.png".into()], &[]).unwrap().into_iter().map(|f| f.path_in_repo).collect();
        assert_eq!(png, vec!["sub/b.png"]);
        let no_png: Vec<_> =
            scan_folder(d.path(), &[], &["sub/*".into()]).unwrap().into_iter().map(|f| f.path_in_repo).collect();
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
    fn scan_refuses_missing_folder() {
        assert!(scan_folder(Path::new("/definitely/not/here"), &[], &[]).is_err());
    }
}
