//! Git LFS pointer files: what a `git clone` made without git-lfs leaves in place of every large
//! file (weights, photos). Parsed per the Git LFS pointer spec (git-lfs `docs/spec.md`): UTF-8
//! `key value` lines, `version` first (`https://git-lfs.github.com/spec/v1`, or the pre-release
//! `https://hawser.github.com/spec/v1`), an `oid sha256:<64 hex>` and a `size`, under 1024 bytes.

use std::path::{Path, PathBuf};

/// The largest pointer the spec allows.
pub const MAX_POINTER_LEN: usize = 1024;

/// What a pointer stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsPointer {
    /// The object's sha256, lowercase hex.
    pub oid: String,
    /// The real file's size in bytes.
    pub size: u64,
}

/// `Some` when `bytes` (a whole file, or at least its first [`MAX_POINTER_LEN`] bytes) is a
/// Git LFS pointer.
pub fn parse(bytes: &[u8]) -> Option<LfsPointer> {
    if bytes.len() >= MAX_POINTER_LEN || !bytes.starts_with(b"version ") {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    let version = lines.next()?.strip_prefix("version ")?.trim();
    if !matches!(version, "https://git-lfs.github.com/spec/v1" | "https://hawser.github.com/spec/v1") {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines {
        if let Some(v) = line.strip_prefix("oid sha256:") {
            let v = v.trim();
            if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                oid = Some(v.to_ascii_lowercase());
            }
        } else if let Some(v) = line.strip_prefix("size ") {
            size = v.trim().parse().ok();
        }
    }
    Some(LfsPointer { oid: oid?, size: size? })
}

/// A file that is a pointer where the content was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} is {}", path.display(), self.what())]
pub struct PointerError {
    pub path: PathBuf,
    pub pointer: LfsPointer,
    pub pointer_len: u64,
}

impl PointerError {
    /// The message without the file name: what the file is and how to fetch the real one.
    pub fn what(&self) -> String {
        format!(
            "a Git LFS pointer ({} bytes standing for a {}-byte file, oid sha256:{}), not the file itself: the repository was cloned without \
             Git LFS. Fetch the real file with `git lfs install && git lfs pull` in the clone (or download it from the Hub again)",
            self.pointer_len,
            self.pointer.size,
            &self.pointer.oid[..12]
        )
    }
}

/// `Err` when the file at `path` is a Git LFS pointer. Reads at most [`MAX_POINTER_LEN`] bytes,
/// and nothing when the file is larger than a pointer can be; a file that cannot be opened is
/// `Ok` (the caller's own open reports that).
pub fn check_file(path: &Path) -> Result<(), PointerError> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if meta.len() >= MAX_POINTER_LEN as u64 {
        return Ok(());
    }
    let Ok(bytes) = std::fs::read(path) else { return Ok(()) };
    check_bytes(path, &bytes)
}

/// `Err` when `bytes` (the whole content of `path`) is a Git LFS pointer.
pub fn check_bytes(path: &Path, bytes: &[u8]) -> Result<(), PointerError> {
    match parse(bytes) {
        Some(pointer) => Err(PointerError { path: path.to_path_buf(), pointer, pointer_len: bytes.len() as u64 }),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// tests/fixtures/field-cases/lfs-pointer's pointer (from /work/shared/field-cases).
    pub(crate) const FIELD: &str =
        "version https://git-lfs.github.com/spec/v1\noid sha256:3327e29bf3899428f0dda69e7c1cfa854a030776086d4a36e954e3c2158a1966\nsize 3226184\n";

    #[test]
    fn pointers_are_parsed_per_the_spec() {
        let p = parse(FIELD.as_bytes()).unwrap();
        assert_eq!(p.size, 3_226_184);
        assert!(p.oid.starts_with("3327e29bf389"));
        // Extension lines (ext-0-foo) may sit between version and oid; CRLF from Windows clones.
        let ext = FIELD.replace("oid", "ext-0-foo sha256:aa\noid").replace('\n', "\r\n");
        assert_eq!(parse(ext.as_bytes()).unwrap().size, 3_226_184);
        assert!(parse(FIELD.replace("git-lfs.github.com", "example.com").as_bytes()).is_none());
        assert!(parse(FIELD.replace("size 3226184", "size x").as_bytes()).is_none());
        assert!(parse(FIELD.replace("3327e29b", "3327").as_bytes()).is_none(), "short oid");
        assert!(parse(b"version 1.0 of my notes").is_none());
        let long = format!("{FIELD}{}", "x".repeat(MAX_POINTER_LEN));
        assert!(parse(long.as_bytes()).is_none());
    }

    #[test]
    fn the_error_names_the_file_git_lfs_and_the_fix() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pytorch_lora_weights.safetensors");
        std::fs::write(&p, FIELD).unwrap();
        let e = check_file(&p).unwrap_err().to_string();
        for needle in ["pytorch_lora_weights.safetensors", "Git LFS pointer", "git lfs pull", "3226184-byte"] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
        std::fs::write(&p, vec![7u8; 4096]).unwrap();
        assert!(check_file(&p).is_ok());
        assert!(check_file(&t.path().join("missing")).is_ok());
    }
}
