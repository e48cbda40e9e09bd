//! Repos: `POST /api/repos/create`, `POST /api/{models,datasets}/{repo}/branch/{branch}`,
//! `GET /api/{models,datasets}/{repo}[/revision/{rev}]`, `GET …/tree/{rev}[/{path}]`,
//! `POST …/paths-info/{rev}`, `POST /api/validate-yaml` (paths as huggingface_hub 2.4.0's
//! `hf_api.py` builds them).

use super::auth::{commit_at, head_of, require_write, Who};
use super::store::FileRec;
use super::{base_url, card_of, expands, fail, fail_code, flag, inference, io_fail, json_reply, query, BodyBytes, JsonBody, Reply, Repo, Shared};
use crate::card::repo_card_errors;
use crate::hub::protocol::*;
use crate::repo_id::{RepoId, RepoRef, RepoType};
use axum::extract::{Extension, RawQuery, State as S};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};

/// `POST /api/{models,datasets}/{repo}/branch/{branch}`: a new branch at `startingPoint` (default: main).
pub(super) async fn create_branch(S(state): S<Shared>, Extension(who): Extension<Who>, repo: Repo, BodyBytes(body): BodyBytes) -> Reply {
    let (id, branch, store) = (&repo.id, repo.rev.as_str(), state.repos(repo.kind));
    who.write(&state, repo.target())?;
    let req: CreateBranchRequest = if body.is_empty() {
        CreateBranchRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?
    };
    if branch.is_empty() || branch.starts_with("refs/") || branch.contains("..") || branch.chars().any(|c| c.is_whitespace() || c == '~' || c == ':')
    {
        return Err(fail(StatusCode::BAD_REQUEST, format!("invalid branch name {branch:?}")));
    }
    let _guard = state.commit_lock.lock().await;
    if store.refs(id).contains_key(branch) {
        return Err(fail(StatusCode::CONFLICT, format!("branch {branch} already exists")));
    }
    let start = head_of(&state, repo.target(), req.starting_point.as_deref().unwrap_or("main"))?;
    store.set_ref(id, branch, &start).map_err(io_fail)?;
    json_reply(StatusCode::OK, &serde_json::json!({}))
}

/// `POST /api/repos/create` (`type`: model when absent, or dataset); answers the repo's
/// absolute web URL (`{endpoint}/datasets/{id}` for a dataset).
pub(super) async fn create_repo(
    S(state): S<Shared>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateRepoRequest>,
) -> Reply {
    let kind = match req.kind.as_deref() {
        None | Some("model") => RepoType::Model,
        Some("dataset") => RepoType::Dataset,
        Some(other) => return Err(fail(StatusCode::BAD_REQUEST, format!("the offline Hub serves model and dataset repos, not {other:?}"))),
    };
    let ns = match req.organization.clone() {
        Some(o) => o,
        None => who.caller().map(|t| t.user.clone()).unwrap_or_default(),
    };
    let id = RepoId::parse(&format!("{ns}/{}", req.name)).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
    require_write(who.caller(), RepoRef { kind, id: &id })?;
    let private = req.private.unwrap_or(false) || req.visibility.as_deref() == Some("private");
    // Absolute, as the Hub answers: huggingface_hub's RepoUrl reads the type from its prefix.
    let url = format!("{}/{}", base_url(&headers), RepoRef { kind, id: &id });
    if !state.repos(kind).create_repo(&id, private).map_err(io_fail)? {
        let body = serde_json::json!({ "error": format!("You already created this {kind} repo"), "url": url });
        return json_reply(StatusCode::CONFLICT, &body);
    }
    json_reply(StatusCode::OK, &serde_json::json!({ "url": url, "name": id.to_string(), "id": id.to_string() }))
}

/// `POST /api/validate-yaml`: the card's metadata parses and follows the Hub's rules for its
/// `repoType` ([`repo_card_errors`]; model when absent): 200 with `warnings`, or 400 with one
/// `errors[].message` per violation, as the Hub answers (hub-protocol.md §2.2).
pub(super) async fn validate_yaml(JsonBody(req): JsonBody<serde_json::Value>) -> Reply {
    let content = req["content"].as_str().unwrap_or("");
    let kind = if req["repoType"] == "dataset" { RepoType::Dataset } else { RepoType::Model };
    let errors: Vec<_> = repo_card_errors(content, kind).into_iter().map(|m| serde_json::json!({ "message": m })).collect();
    if errors.is_empty() {
        json_reply(StatusCode::OK, &serde_json::json!({ "warnings": [] }))
    } else {
        json_reply(StatusCode::BAD_REQUEST, &serde_json::json!({ "errors": errors }))
    }
}

/// `GET /api/{models,datasets}/{repo}[/revision/{rev}]`: model or dataset info (the same
/// fields but the model-only `modelId`, `pipeline_tag`, `library_name` and provider
/// mappings); with `expand`, only `id` and the expanded properties, as the Hub answers.
pub(super) async fn repo_info(S(state): S<Shared>, Extension(who): Extension<Who>, repo: Repo, RawQuery(q): RawQuery, headers: HeaderMap) -> Reply {
    let (id, expand, model) = (&repo.id, expands(q.as_deref()), repo.kind == RepoType::Model);
    who.read(&state, repo.target())?;
    let meta = state.repos(repo.kind).meta(id).expect("checked by Who::read");
    let (oid, c) = commit_at(&state, repo.target(), &repo.rev)?;
    let card = card_of(&state, &c);
    let mut tags: Vec<String> =
        card.as_ref().and_then(|c| c["tags"].as_array().cloned()).unwrap_or_default().iter().filter_map(|t| t.as_str().map(String::from)).collect();
    tags.dedup();
    let pipeline_tag = inference::pipeline_tag(&c, card.as_ref()).filter(|_| model);
    let library_name = card.as_ref().and_then(|c| c["library_name"].as_str()).map(String::from).filter(|_| model);
    let mappings =
        (model && expand.iter().any(|e| e == "inferenceProviderMapping")).then(|| inference::mappings(&state, &c, card.as_ref(), meta.private, id));
    let info = ModelInfo {
        id: id.to_string(),
        author: Some(id.namespace.clone()),
        sha: Some(oid),
        private: meta.private,
        last_modified: Some(c.date.clone()),
        created_at: Some(meta.created_at),
        tags,
        siblings: c.files.iter().map(|(p, f)| sibling(p, f)).collect(),
        card_data: card,
    };
    let mut v = serde_json::to_value(&info).expect("serializable");
    if model {
        v["modelId"] = serde_json::json!(id.to_string());
    }
    v["_links"] = serde_json::json!({ "self": format!("{}/{}", base_url(&headers), repo.target()) });
    if let Some(t) = pipeline_tag {
        v["pipeline_tag"] = t.into();
    }
    if let Some(l) = library_name {
        v["library_name"] = l.into();
    }
    let serde_json::Value::Object(mut all) = v else { unreachable!("model info is an object") };
    if expand.is_empty() {
        return json_reply(StatusCode::OK, &all);
    }
    let mut picked = serde_json::Map::new();
    for key in ["_id", "id"].iter().map(|k| k.to_string()).chain(expand.iter().cloned()) {
        if let Some(val) = all.remove(&key) {
            picked.insert(key, val);
        }
    }
    match &mappings {
        Some(m) => json_reply(StatusCode::OK, &inference::WithMappings { info: &picked, mappings: inference::Ordered(m) }),
        None => json_reply(StatusCode::OK, &picked),
    }
}

fn lfs_info(f: &FileRec, as_oid: bool) -> Option<LfsPointerInfo> {
    f.lfs.then(|| LfsPointerInfo {
        sha256: (!as_oid).then(|| f.sha256.clone()),
        oid: as_oid.then(|| f.sha256.clone()),
        size: f.size,
        pointer_size: crate::hash::lfs_pointer(&f.sha256, f.size).len() as u64,
    })
}

fn sibling(path: &str, f: &FileRec) -> Sibling {
    Sibling { rfilename: path.to_string(), size: Some(f.size), blob_id: Some(f.git_sha1.clone()), lfs: lfs_info(f, false) }
}

fn tree_entry(path: &str, f: &FileRec) -> TreeEntry {
    TreeEntry { kind: "file".into(), path: path.into(), oid: f.git_sha1.clone(), size: f.size, lfs: lfs_info(f, true) }
}

fn dir_entry(path: &str) -> TreeEntry {
    TreeEntry { kind: "directory".into(), path: path.into(), oid: crate::hash::git_blob_sha1(path.as_bytes()), size: 0, lfs: None }
}

const TREE_PAGE: usize = 1000;

/// `GET /api/{models,datasets}/{repo}/tree/{rev}[/{path}]` (`recursive`, `cursor`; pages of 1000 with a
/// `Link: <…>; rel="next"` header, as huggingface_hub's `paginate` follows).
pub(super) async fn tree(S(state): S<Shared>, Extension(who): Extension<Who>, repo: Repo, RawQuery(q): RawQuery, headers: HeaderMap) -> Reply {
    let (id, rev, sub, q) = (&repo.id, repo.rev.as_str(), repo.path.as_str(), query(q.as_deref()));
    who.read(&state, repo.target())?;
    let (_, c) = commit_at(&state, repo.target(), rev)?;
    let recursive = flag(&q, "recursive");
    let prefix = if sub.is_empty() { String::new() } else { format!("{sub}/") };
    let mut dirs = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for (p, f) in &c.files {
        let Some(rest) = p.strip_prefix(&prefix) else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        for i in 1..parts.len() {
            if recursive || i == 1 {
                dirs.insert(format!("{prefix}{}", parts[..i].join("/")));
            }
        }
        if recursive || parts.len() == 1 {
            entries.push(tree_entry(p, f));
        }
    }
    if !sub.is_empty() && entries.is_empty() && dirs.is_empty() {
        return Err(fail_code(StatusCode::NOT_FOUND, "EntryNotFound", format!("{sub} does not exist at {rev}")));
    }
    let mut all: Vec<TreeEntry> = dirs.iter().map(|d| dir_entry(d)).collect();
    all.extend(entries);
    all.sort_by(|a, b| a.path.cmp(&b.path));
    let start: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let page: Vec<_> = all.iter().skip(start).take(TREE_PAGE).cloned().collect();
    let mut resp = json_reply(StatusCode::OK, &page)?;
    if start + TREE_PAGE < all.len() {
        let next = format!(
            "{}/api/{}/{id}/tree/{}{}?recursive={recursive}&expand=false&cursor={}",
            base_url(&headers),
            repo.kind.plural(),
            encode_segment(rev),
            if sub.is_empty() { String::new() } else { format!("/{}", encode_path(sub)) },
            start + TREE_PAGE
        );
        resp.headers_mut().insert(header::LINK, HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).expect("ascii"));
    }
    Ok(resp)
}

/// `POST /api/{models,datasets}/{repo}/paths-info/{rev}`.
pub(super) async fn paths_info(S(state): S<Shared>, Extension(who): Extension<Who>, repo: Repo, BodyBytes(body): BodyBytes) -> Reply {
    who.read(&state, repo.target())?;
    let (_, c) = commit_at(&state, repo.target(), &repo.rev)?;
    // huggingface_hub sends a form (`paths=a&paths=b`), huggingface.js sends JSON.
    let paths: Vec<String> = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => v["paths"].as_array().map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect()).unwrap_or_default(),
        Err(_) => url::form_urlencoded::parse(&body).filter(|(k, _)| k == "paths").map(|(_, v)| v.into_owned()).collect(),
    };
    let mut out = Vec::new();
    for p in paths {
        if let Some(f) = c.files.get(&p) {
            out.push(tree_entry(&p, f));
        } else if c.files.keys().any(|k| k.starts_with(&format!("{p}/"))) {
            out.push(dir_entry(&p));
        }
    }
    json_reply(StatusCode::OK, &out)
}
