//! A reference to a model (a base pipeline, a LoRA, a VAE): a local path, or a Hub repo at an
//! optional revision. Parsed once where the user's text comes in (a clap flag, a card's
//! `base_model`, train.yaml), resolved once to local files by `generate::source` (through the
//! hf-hub cache, as diffusers' `from_pretrained` accepts either a folder or a repo id).

use crate::repo_id::RepoId;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// A file or folder that exists on this machine.
    Local(PathBuf),
    /// `namespace/name[@revision]`: a branch, tag or commit; `None` is the default branch.
    Hub { repo: RepoId, revision: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an existing file or folder nor a Hub repo id `namespace/name[@revision]`")]
pub struct ModelRefError(pub String);

impl ModelRef {
    /// An existing path wins over a repo id of the same spelling (`models/sd15` when that
    /// folder exists), as diffusers' `from_pretrained` checks `os.path.isdir` first; anything
    /// else must be `namespace/name[@revision]` with a non-empty revision.
    pub fn parse(s: &str) -> Result<ModelRef, ModelRefError> {
        let path = std::path::Path::new(s);
        if !s.is_empty() && path.exists() {
            return Ok(ModelRef::Local(path.to_path_buf()));
        }
        let (id, revision) = match s.split_once('@') {
            Some((id, rev)) if !rev.is_empty() && !rev.contains(char::is_whitespace) => (id, Some(rev.to_string())),
            Some(_) => return Err(ModelRefError(s.to_string())),
            None => (s, None),
        };
        let repo = RepoId::parse(id).map_err(|_| ModelRefError(s.to_string()))?;
        Ok(ModelRef::Hub { repo, revision })
    }

    /// The repo's default weights, e.g. a LoRA repo given by `--repo`.
    pub fn hub(repo: RepoId) -> ModelRef {
        ModelRef::Hub { repo, revision: None }
    }
}

/// As the user writes it: the path, or `namespace/name[@revision]`.
impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Local(p) => write!(f, "{}", p.display()),
            ModelRef::Hub { repo, revision: None } => write!(f, "{repo}"),
            ModelRef::Hub { repo, revision: Some(r) } => write!(f, "{repo}@{r}"),
        }
    }
}

/// What clap's value parser calls for `--model`, `--lora` and `--vae`.
impl std::str::FromStr for ModelRef {
    type Err = ModelRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelRef::parse(s)
    }
}

impl serde::Serialize for ModelRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ModelRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        ModelRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_win_then_repo_ids_with_revisions() {
        let d = tempfile::tempdir().unwrap();
        let local = d.path().to_str().unwrap();
        assert_eq!(ModelRef::parse(local).unwrap(), ModelRef::Local(d.path().to_path_buf()));
        let r = ModelRef::parse("stabilityai/sdxl-vae@fp16-fix").unwrap();
        assert_eq!(r, ModelRef::Hub { repo: RepoId::parse("stabilityai/sdxl-vae").unwrap(), revision: Some("fp16-fix".into()) });
        assert_eq!(r.to_string(), "stabilityai/sdxl-vae@fp16-fix");
        assert_eq!(ModelRef::parse("a/b").unwrap().to_string(), "a/b");
        for bad in ["not a model", "a/b@", "./missing/folder", "/no/such/model", "", "a/b/c"] {
            let e = ModelRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains("neither an existing file or folder nor a Hub repo id"), "{bad}: {e}");
        }
    }

    #[test]
    fn serde_is_the_written_form() {
        let r = ModelRef::parse("alice/sky-lora@main").unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j, "alice/sky-lora@main");
        assert_eq!(serde_json::from_value::<ModelRef>(j).unwrap(), r);
        assert!(serde_json::from_value::<ModelRef>(serde_json::json!("not a model")).is_err());
    }
}
