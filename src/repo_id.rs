//! Repository ids (`namespace/name`) and in-repo paths, validated the same way by client and server.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("invalid repo id {0:?}: expected `namespace/name` (e.g. `alice/sky-lora`), letters, digits, `-`, `_`, `.`; no `..`, no spaces, at most 96 characters per part")]
    RepoId(String),
    #[error("invalid path {0:?} in repo: {1}")]
    Path(String, &'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoId {
    pub namespace: String,
    pub name: String,
}

/// One part of a repo id (namespace or name) per the Hub's naming rules.
pub fn valid_part(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 96
        && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !p.starts_with(['-', '.'])
        && !p.ends_with(['-', '.'])
        && !p.contains("..")
        && !p.contains("--")
}

impl RepoId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(ns), Some(name), None) if valid_part(ns) && valid_part(name) => Ok(RepoId { namespace: ns.to_string(), name: name.to_string() }),
            _ => Err(IdError::RepoId(s.to_string())),
        }
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// As `namespace/name`, the form every Hub API and `--json` document uses.
impl serde::Serialize for RepoId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for RepoId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoId::parse(s)
    }
}

/// The kind of Hub repository: what its URLs are prefixed with and where the standard cache keeps
/// it (hub-protocol.md: `/api/{models,datasets}/…`, `{prefix}{repo_id}/resolve/…` with prefix `""`
/// or `datasets/`, cache folders `models--…` and `datasets--…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    /// A model repo (huggingface_hub's `repo_type=None`).
    #[default]
    Model,
    /// A dataset repo.
    Dataset,
}

impl RepoType {
    /// The singular name the API uses in bodies (`type`, `repoType`).
    pub fn as_str(self) -> &'static str {
        match self {
            RepoType::Model => "model",
            RepoType::Dataset => "dataset",
        }
    }

    /// The `/api/{plural}/` segment, also the cache folder's first part.
    pub fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
        }
    }

    /// What comes before `namespace/name` in web, resolve and git URLs (`""` or `datasets/`).
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
        }
    }
}

impl fmt::Display for RepoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repo of a given type, as every Hub URL names one. A bare [`RepoId`] converts to a model
/// repo, like huggingface_hub's default `repo_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoRef<'a> {
    pub kind: RepoType,
    pub id: &'a RepoId,
}

impl<'a> RepoRef<'a> {
    pub fn dataset(id: &'a RepoId) -> Self {
        RepoRef { kind: RepoType::Dataset, id }
    }
}

impl<'a> From<&'a RepoId> for RepoRef<'a> {
    fn from(id: &'a RepoId) -> Self {
        RepoRef { kind: RepoType::Model, id }
    }
}

/// As the Hub's web path: `alice/sky-lora`, `datasets/alice/sky-photos`.
impl fmt::Display for RepoRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.url_prefix(), self.id)
    }
}

/// A relative, forward-slash path inside a repo that cannot escape it.
pub fn validate_repo_path(p: &str) -> Result<(), IdError> {
    let bad = |why| Err(IdError::Path(p.to_string(), why));
    if p.is_empty() {
        return bad("empty path");
    }
    if p.starts_with('/') || p.contains('\\') || p.contains(':') && p.len() > 1 && p.as_bytes()[1] == b':' {
        return bad("absolute paths are not allowed");
    }
    if p.contains('\0') || p.contains('\n') || p.contains('\r') {
        return bad("control characters are not allowed");
    }
    for seg in p.split('/') {
        match seg {
            "" => return bad("empty path segment"),
            "." | ".." => return bad("`.` and `..` segments are not allowed"),
            ".git" => return bad("`.git` is reserved"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_ids() {
        let id = RepoId::parse("alice/sky-lora_v1.2").unwrap();
        assert_eq!(id.namespace, "alice");
        assert_eq!(id.to_string(), "alice/sky-lora_v1.2");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in ["foo", "a/b/c", "../x", "user/na me", "/x", "x/", "a/..", "a/b..c", "-a/b", ""] {
            assert!(RepoId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn repo_refs_name_their_urls() {
        let id = RepoId::parse("alice/sky").unwrap();
        assert_eq!(RepoRef::from(&id).to_string(), "alice/sky");
        assert_eq!(RepoRef::dataset(&id).to_string(), "datasets/alice/sky");
        assert_eq!((RepoType::Dataset.plural(), RepoType::Dataset.as_str()), ("datasets", "dataset"));
    }

    #[test]
    fn rejects_escaping_paths() {
        for bad in ["../x", "a/../../b", "/etc/passwd", "a//b", ".git/config", "C:/x", "a\\b", "./a"] {
            assert!(validate_repo_path(bad).is_err(), "{bad} should be rejected");
        }
        validate_repo_path("samples/image_0.png").unwrap();
        validate_repo_path(".gitattributes").unwrap();
    }
}
