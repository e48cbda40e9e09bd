//! The two content ids the Hub uses: sha256 (LFS oid) and the git blob sha1 (regular files' ETag).

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: String,
    pub git_sha1: String,
    pub size: u64,
}

pub fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hash a file in one pass, calling `progress` with the bytes read so far.
pub fn digest_file(path: &Path, mut progress: impl FnMut(u64)) -> std::io::Result<FileDigest> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut sha256 = Sha256::new();
    let mut sha1 = Sha1::new();
    sha1.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        sha1.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    if done != size {
        return Err(std::io::Error::other(format!(
            "{} changed size while being hashed ({} then {} bytes)",
            path.display(),
            size,
            done
        )));
    }
    Ok(FileDigest { sha256: hex::encode(sha256.finalize()), git_sha1: hex::encode(sha1.finalize()), size })
}

/// sha256 of a file, streaming, calling `progress` with the bytes read so far.
pub fn sha256_file_progress(path: &Path, mut progress: impl FnMut(u64)) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_file_progress(path, |_| {})
}

/// The Git-LFS pointer file git stores in place of an LFS object.
pub fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(git_blob_sha1(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(git_blob_sha1(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }

    #[test]
    fn file_digest_agrees_with_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let d = digest_file(&p, |_| {}).unwrap();
        assert_eq!(d.sha256, sha256_hex(&data));
        assert_eq!(d.git_sha1, git_blob_sha1(&data));
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(sha256_file(&p).unwrap(), d.sha256);
        assert!(lfs_pointer(&d.sha256, d.size).ends_with(&format!("size {}\n", d.size)));
    }
}
