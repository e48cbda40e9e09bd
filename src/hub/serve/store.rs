//! On-disk state of the offline Hub: content-addressed blobs, and per repo its metadata, refs
//! and commits (each commit records the whole tree). Everything is written atomically
//! (temp file + rename) so a restart finds exactly what was committed.

use crate::hash::{git_blob_sha1, sha256_hex};
use crate::hub::clock::now_rfc3339;
use crate::repo_id::{RepoId, RepoType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRec {
    pub sha256: String,
    pub git_sha1: String,
    pub size: u64,
    pub lfs: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRec {
    pub oid: String,
    pub parents: Vec<String>,
    pub summary: String,
    pub description: String,
    pub date: String,
    pub files: BTreeMap<String, FileRec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoMeta {
    pub id: String,
    pub private: bool,
    pub created_at: String,
}

pub const DEFAULT_GITATTRIBUTES: &str = "*.7z filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n*.ckpt filter=lfs diff=lfs merge=lfs -text\n*.gz filter=lfs diff=lfs merge=lfs -text\n*.h5 filter=lfs diff=lfs merge=lfs -text\n*.npy filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n*.pth filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.zip filter=lfs diff=lfs merge=lfs -text\n";

/// The repos of one type (models or datasets); the blobs and uploads are shared by both.
pub struct Store {
    root: PathBuf,
    kind: RepoType,
}

/// Writes a store file (creating its folder) with [`crate::atomic::write`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("store paths have parents"))?;
    crate::atomic::write(path, bytes)
}

impl Store {
    pub fn open(root: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        std::fs::create_dir_all(root.join("repos"))?;
        Ok(Store { root: root.to_path_buf(), kind: RepoType::Model })
    }

    /// The store of `kind`'s repos over the same blobs (models under `repos/`, datasets under
    /// `dataset-repos/`, so a model and a dataset may share a name, as on the Hub).
    pub fn of_kind(&self, kind: RepoType) -> Store {
        Store { root: self.root.clone(), kind }
    }

    fn kind_dir(&self, what: &str) -> PathBuf {
        match self.kind {
            RepoType::Model => self.root.join(what),
            RepoType::Dataset => self.root.join(format!("dataset-{what}")),
        }
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    fn repo_dir(&self, id: &RepoId) -> PathBuf {
        self.kind_dir("repos").join(&id.namespace).join(&id.name)
    }

    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(sha256)
    }

    pub fn blob_size(&self, sha256: &str) -> Option<u64> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        std::fs::metadata(self.blob_path(sha256)).ok().map(|m| m.len())
    }

    /// Stores inline content; returns its record.
    pub fn put_bytes(&self, bytes: &[u8], lfs: bool) -> std::io::Result<FileRec> {
        let sha256 = sha256_hex(bytes);
        let path = self.blob_path(&sha256);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(FileRec { sha256, git_sha1: git_blob_sha1(bytes), size: bytes.len() as u64, lfs })
    }

    /// Moves a fully received and verified upload into the blob store.
    pub fn adopt_blob(&self, tmp: &Path, sha256: &str) -> std::io::Result<()> {
        crate::atomic::persist(tmp, &self.blob_path(sha256))
    }

    /// Git stores an LFS file as its pointer; its blob id is the pointer's.
    pub fn lfs_pointer_sha1(sha256: &str, size: u64) -> String {
        git_blob_sha1(crate::hash::lfs_pointer(sha256, size).as_bytes())
    }

    pub fn meta(&self, id: &RepoId) -> Option<RepoMeta> {
        let bytes = std::fs::read(self.repo_dir(id).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn refs(&self, id: &RepoId) -> BTreeMap<String, String> {
        std::fs::read(self.repo_dir(id).join("refs.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn write_refs(&self, id: &RepoId, refs: &BTreeMap<String, String>) -> std::io::Result<()> {
        write_atomic(&self.repo_dir(id).join("refs.json"), &serde_json::to_vec_pretty(refs)?)
    }

    pub fn commit(&self, id: &RepoId, oid: &str) -> Option<CommitRec> {
        if oid.len() != 40 || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let bytes = std::fs::read(self.repo_dir(id).join("commits").join(format!("{oid}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A branch, a PR ref or a full commit id → commit id.
    pub fn resolve(&self, id: &RepoId, rev: &str) -> Option<String> {
        let refs = self.refs(id);
        if let Some(oid) = refs.get(rev) {
            return Some(oid.clone());
        }
        self.commit(id, rev).map(|c| c.oid)
    }

    /// Creates a repo with the Hub's initial commit (a default `.gitattributes`).
    /// Returns false if it already exists.
    pub fn create_repo(&self, id: &RepoId, private: bool) -> std::io::Result<bool> {
        if self.meta(id).is_some() {
            return Ok(false);
        }
        let meta = RepoMeta { id: id.to_string(), private, created_at: now_rfc3339() };
        let rec = self.put_bytes(DEFAULT_GITATTRIBUTES.as_bytes(), false)?;
        let mut files = BTreeMap::new();
        files.insert(".gitattributes".to_string(), rec);
        let oid = self.write_commit(id, vec![], "initial commit", "", files)?;
        let mut refs = BTreeMap::new();
        refs.insert("main".to_string(), oid);
        self.write_refs(id, &refs)?;
        // meta.json last: a crash mid-create leaves no half-made repo visible.
        write_atomic(&self.repo_dir(id).join("meta.json"), &serde_json::to_vec_pretty(&meta)?)?;
        Ok(true)
    }

    pub fn write_commit(
        &self,
        id: &RepoId,
        parents: Vec<String>,
        summary: &str,
        description: &str,
        files: BTreeMap<String, FileRec>,
    ) -> std::io::Result<String> {
        let date = now_rfc3339();
        let material = serde_json::to_vec(&(&parents, summary, description, &files, &date, rand::random::<u64>()))?;
        let oid = hex::encode(<sha1::Sha1 as sha2::Digest>::digest(&material));
        let rec = CommitRec { oid: oid.clone(), parents, summary: summary.into(), description: description.into(), date, files };
        write_atomic(&self.repo_dir(id).join("commits").join(format!("{oid}.json")), &serde_json::to_vec_pretty(&rec)?)?;
        Ok(oid)
    }

    pub fn set_ref(&self, id: &RepoId, name: &str, oid: &str) -> std::io::Result<()> {
        let mut refs = self.refs(id);
        refs.insert(name.to_string(), oid.to_string());
        self.write_refs(id, &refs)
    }

    /// A folder holding the files of commit `c` that `keep` accepts, under their repo paths:
    /// hard links into the blob store (copies where linking fails). Each file is made once, so
    /// later renders of the same commit reuse the folder.
    pub fn snapshot(&self, id: &RepoId, c: &CommitRec, keep: impl Fn(&str) -> bool) -> std::io::Result<PathBuf> {
        let dir = self.kind_dir("snapshots").join(&id.namespace).join(&id.name).join(&c.oid);
        for (path, f) in c.files.iter().filter(|(p, _)| keep(p)) {
            let target = dir.join(path);
            if target.is_file() {
                continue;
            }
            std::fs::create_dir_all(target.parent().expect("a file inside the snapshot"))?;
            crate::atomic::link_or_copy(&self.blob_path(&f.sha256), &target)?;
        }
        Ok(dir)
    }

    pub fn next_pr_number(&self, id: &RepoId) -> u64 {
        self.refs(id).keys().filter(|k| k.starts_with("refs/pr/")).count() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let id = RepoId::parse("alice/sky").unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(s.create_repo(&id, false).unwrap());
        assert!(!s.create_repo(&id, false).unwrap());
        let head = s.resolve(&id, "main").unwrap();
        drop(s);
        let s = Store::open(d.path()).unwrap();
        let c = s.commit(&id, &head).unwrap();
        assert!(c.files.contains_key(".gitattributes"));
        assert_eq!(s.resolve(&id, &head).as_deref(), Some(head.as_str()));
        let snap = s.snapshot(&id, &c, |p| p == ".gitattributes").unwrap();
        assert_eq!(std::fs::read_to_string(snap.join(".gitattributes")).unwrap(), DEFAULT_GITATTRIBUTES);
        assert_eq!(s.snapshot(&id, &c, |_| true).unwrap(), snap);
        let datasets = s.of_kind(RepoType::Dataset);
        assert!(datasets.meta(&id).is_none(), "a dataset is not the model of the same name");
        assert!(datasets.create_repo(&id, true).unwrap());
        assert!(datasets.meta(&id).unwrap().private && !s.meta(&id).unwrap().private);
    }
}
