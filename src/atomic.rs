//! One way to replace a file, so an interrupted or failed write never leaves half a file under
//! the real name: the content goes to a uniquely named temporary file in the same folder
//! (`tempfile::Builder::tempfile_in`, created `0600` on Unix), is fsynced, renamed over the
//! target (`NamedTempFile::persist`), and the folder is fsynced so the rename survives a crash
//! (the sequence of the `atomicwrites` and `atomic-write-file` crates). On any failure the
//! temporary file is removed (`NamedTempFile`'s drop) and the target is untouched.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |file, _| file.write_all(bytes))
}

/// Replaces `path` with what `fill` writes: into the open temporary file, or through its path
/// (for writers that take a path, such as safetensors' `serialize_to_file`).
pub fn write_with(path: &Path, fill: impl FnOnce(&mut File, &Path) -> io::Result<()>) -> io::Result<()> {
    let dir = folder(path);
    let prefix = prefix(path);
    let mut tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempfile_in(dir)?;
    let tmp_path = tmp.path().to_path_buf();
    fill(tmp.as_file_mut(), &tmp_path)?;
    // A writer that went through the path wrote to the same inode: syncing our handle syncs it.
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_folder(dir)
}

/// Replaces `path` with `bytes`, readable by its owner only (`0600` on Unix), for secrets.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // tempfile creates its files 0600 on Unix, and the rename keeps the mode.
    write(path, bytes)
}

/// Puts an existing file's content at `path` in one step: a hard link where the filesystem
/// allows it, else a copy.
pub fn link_or_copy(src: &Path, path: &Path) -> io::Result<()> {
    let dir = folder(path);
    let prefix = prefix(path);
    let tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").make_in(dir, |p| match std::fs::hard_link(src, p) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => std::fs::copy(src, p).map(drop),
        Ok(()) => Ok(()),
    })?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_folder(dir)
}

/// Moves a file that was written and fsynced elsewhere on the same filesystem into place,
/// durably (the rename, then the target's folder fsynced).
pub fn persist(written: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(written, path)?;
    sync_folder(folder(path))
}

fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Temporary names show what they are for: `.{name}.{random}.tmp`.
fn prefix(path: &Path) -> String {
    format!(".{}.", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

#[cfg(unix)]
fn sync_folder(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_folder(_dir: &Path) -> io::Result<()> {
    // Windows cannot open a folder as a file; its rename (MoveFileEx) is durable on return.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(d.path()), ["a.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content_and_removes_the_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write(&p, b"old").unwrap();
        let e = write_with(&p, |f, _| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(d.path()), ["a.json"]);
    }

    #[test]
    fn writers_that_take_a_path_write_the_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.bin");
        write_with(&p, |_, tmp| std::fs::write(tmp, b"via path")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"via path");
        assert_eq!(names(d.path()), ["w.bin"]);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        write_private(&p, b"hf_x").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn links_or_copies_into_place() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("blob");
        std::fs::write(&src, b"blob").unwrap();
        std::fs::create_dir(d.path().join("snap")).unwrap();
        let p = d.path().join("snap/file.txt");
        link_or_copy(&src, &p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"blob");
        assert_eq!(names(&d.path().join("snap")), ["file.txt"]);
    }
}
