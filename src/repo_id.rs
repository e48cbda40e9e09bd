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
    fn rejects_escaping_paths() {
        for bad in ["../x", "a/../../b", "/etc/passwd", "a//b", ".git/config", "C:/x", "a\\b", "./a"] {
            assert!(validate_repo_path(bad).is_err(), "{bad} should be rejected");
        }
        validate_repo_path("samples/image_0.png").unwrap();
        validate_repo_path(".gitattributes").unwrap();
    }
}
