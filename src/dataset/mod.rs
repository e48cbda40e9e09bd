//! A folder of training photos: finding the images, loading them the way diffusers' training
//! scripts do, their captions, and the checks and report that show what a model will learn.

pub mod blip;
pub mod captioning;
pub mod captions;
pub mod check;
pub mod fix;
#[cfg(feature = "heif")]
mod heif;
pub mod hub_source;
pub mod images;
pub mod overlay;
pub mod phash;
pub mod report;
pub mod stretch;
pub mod synth;
pub mod tone;

#[cfg(any(test, feature = "test-support"))]
pub mod testgen;

use crate::sniff::FileKind;
use std::path::{Path, PathBuf};

/// Extensions of the photo formats `load_rgb` decodes (lowercase, compared case-insensitively).
/// Only used to name what to put in a folder: files are judged by their content ([`crate::sniff`]).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"];

/// Photo formats people drop into a dataset that we cannot decode: reported, never silently
/// skipped. A file with one of these names is looked at whatever its content.
pub const UNSUPPORTED_EXTENSIONS: &[&str] =
    &["heic", "heif", "hif", "avif", "jxl", "jp2", "psd", "svg", "raw", "dng", "cr2", "cr3", "nef", "arw", "orf", "rw2", "raf", "ico", "exr", "hdr"];

/// Camera RAW files: TIFF containers by their magic bytes, but sensor data, not a picture.
const RAW_EXTENSIONS: &[&str] = &["raw", "dng", "cr2", "cr3", "nef", "arw", "orf", "rw2", "raf"];

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset folder {0} does not exist: pass the folder that holds your photos")]
    Missing(PathBuf),
    #[error("{0} is not a folder: pass the folder that holds your photos, not a single file")]
    NotADir(PathBuf),
    #[error("no images in {dir}: put photos ({}) in it{found}", IMAGE_EXTENSIONS.join(", "))]
    NoImages { dir: PathBuf, found: String },
    #[error("cannot read folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A photo hfsky recognised but cannot decode, with what to do about it.
#[derive(Debug, Clone)]
pub struct Unsupported {
    pub path: PathBuf,
    /// Its format by content (`Unknown` for a camera RAW named by its extension).
    pub kind: FileKind,
    pub reason: String,
}

/// What a walk over a dataset folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files to decode, sorted by their path relative to the folder: every file whose content
    /// is a decodable photo, whatever its name, and every photo-named file whose content is
    /// empty, unknown or a Git LFS pointer (its load says what is wrong with it, by name).
    pub images: Vec<PathBuf>,
    /// Photos in formats this build cannot decode (HEIC without the codec, RAW, ...).
    pub unsupported: Vec<Unsupported>,
    /// Entries that could not be visited (symlink loops, permissions), with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Images whose extension names another format than their content (still used).
    pub notes: Vec<(PathBuf, String)>,
}

/// The images in `dir` and its subfolders (like the Hub's imagefolder), sorted; hidden files and
/// folders (".git", macOS "._photo.jpg" resource forks) are ignored and symlink loops are skipped.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let scan = scan(dir)?;
    if scan.images.is_empty() {
        return Err(no_images(dir, &scan));
    }
    Ok(scan.images)
}

/// Like `list_images`, but also returns what could not be used, for `dataset check`. Each file's
/// first bytes decide what it is ([`crate::sniff`]); its extension only adds a note.
pub fn scan(dir: &Path) -> Result<Scan, DatasetError> {
    let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DatasetError::Missing(dir.to_path_buf()),
        _ => DatasetError::Io { path: dir.to_path_buf(), source: e },
    })?;
    if !meta.is_dir() {
        return Err(DatasetError::NotADir(dir.to_path_buf()));
    }
    let mut out = Scan::default();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_path_buf();
                if e.depth() == 0 {
                    return Err(DatasetError::Io { path, source: e.into() });
                }
                let why = if e.loop_ancestor().is_some() { "symlink loop".to_string() } else { e.to_string() };
                out.skipped.push((path, why));
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.into_path();
        // A loss mask beside its photo (`masked_loss`) is not a photo of the set.
        if path.file_name().is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(crate::names::MASK_SUFFIX)) {
            continue;
        }
        let ext = extension(&path).unwrap_or_default();
        let photo_name = IMAGE_EXTENSIONS.contains(&ext.as_str()) || UNSUPPORTED_EXTENSIONS.contains(&ext.as_str());
        if RAW_EXTENSIONS.contains(&ext.as_str()) {
            let reason = format!("{} is a camera RAW file, not a finished photo: export it as JPEG or PNG", ext.to_uppercase());
            out.unsupported.push(Unsupported { path, kind: FileKind::Unknown, reason });
            continue;
        }
        let kind = match crate::sniff::sniff_file(&path) {
            Ok(k) => k,
            Err(e) if photo_name => {
                out.skipped.push((path, format!("cannot read the file: {e}")));
                continue;
            }
            Err(_) => continue,
        };
        if images::decodes(kind) {
            if let Some(note) = kind.extension_note(&path) {
                out.notes.push((path.clone(), note));
            }
            out.images.push(path);
        } else if kind.is_other_image() {
            out.unsupported.push(Unsupported { reason: images::unsupported_reason(kind), path, kind });
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) || (photo_name && matches!(kind, FileKind::Empty | FileKind::LfsPointer)) {
            // Its load names the problem: empty, a Git LFS pointer, or not a photo at all.
            out.images.push(path);
        } else if photo_name {
            let reason = format!("{} files cannot be decoded for training: convert it to JPEG or PNG", ext.to_uppercase());
            out.unsupported.push(Unsupported { path, kind, reason });
        }
    }
    // walkdir sorts siblings; sorting whole relative paths keeps "a/b.jpg" vs "a.jpg" stable too.
    out.images.sort();
    out.unsupported.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

pub(crate) fn no_images(dir: &Path, scan: &Scan) -> DatasetError {
    let found = match scan.unsupported.first() {
        Some(u) => format!(" (found {} file(s) in formats hfsky cannot read, e.g. {}: {})", scan.unsupported.len(), u.path.display(), u.reason),
        None => String::new(),
    };
    DatasetError::NoImages { dir: dir.to_path_buf(), found }
}

fn extension(path: &Path) -> Option<String> {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// `f` over `items` on all cores, results in order. Each worker holds one decoded photo at a
/// time, so memory stays at a few photos however large the set.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(items.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let results = std::sync::Mutex::new(&mut slots);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    slots.into_iter().map(|r| r.expect("every item processed")).collect()
}

/// `path` relative to `dir` with forward slashes: the `file_name` of HF imagefolder metadata.
pub fn relative_name(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn lists_supported_images_sorted_and_recursive() {
        let t = tempfile::tempdir().unwrap();
        for n in ["b.JPG", "a.png", "sub/c.webp", "notes.txt", "a.txt", ".hidden.jpg", "._b.JPG", ".git/x.png", "d.heic"] {
            touch(&t.path().join(n));
        }
        let got: Vec<String> = list_images(t.path()).unwrap().iter().map(|p| relative_name(t.path(), p)).collect();
        assert_eq!(got, ["a.png", "b.JPG", "sub/c.webp"]);
        let s = scan(t.path()).unwrap();
        assert_eq!(s.unsupported.len(), 1);
    }

    #[test]
    fn errors_name_the_folder_and_the_fix() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope");
        let e = list_images(&missing).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
        let file = t.path().join("f.jpg");
        touch(&file);
        assert!(matches!(list_images(&file), Err(DatasetError::NotADir(_))));
        let empty = t.path().join("empty");
        fs::create_dir(&empty).unwrap();
        touch(&empty.join("x.heic"));
        let e = list_images(&empty).unwrap_err().to_string();
        assert!(e.contains("no images in") && e.contains("x.heic") && e.contains("convert"), "{e}");
    }

    /// A phone export as people hand it over: real HEIC and AVIF files (made by
    /// tests/fixtures/field-photos/make.sh), JPEG data under .HEIC, a truncated and an empty
    /// JPEG, a Git LFS pointer named .jpg, a PNG without extension.
    #[test]
    fn content_decides_what_a_file_is_and_each_problem_is_named() {
        let field = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/field-photos");
        let t = tempfile::tempdir().unwrap();
        for f in ["sky.heic", "sky.avif", "IMG_0002.HEIC"] {
            fs::copy(field.join(f), t.path().join(f)).unwrap();
        }
        let jpg = testgen::jpeg(&testgen::photo(64, 48, 1));
        fs::write(t.path().join("cut.jpg"), &jpg[..jpg.len() / 2]).unwrap();
        fs::write(t.path().join("empty.JPG"), b"").unwrap();
        fs::write(t.path().join("lfs.jpg"), crate::lfs_pointer::tests::FIELD).unwrap();
        fs::write(t.path().join("download"), testgen::png(&testgen::photo(32, 32, 2))).unwrap();
        fs::write(t.path().join("notes.md"), b"# not a photo").unwrap();
        let s = scan(t.path()).unwrap();
        let names = |v: &[PathBuf]| v.iter().map(|p| relative_name(t.path(), p)).collect::<Vec<_>>();
        let unsupported: Vec<_> = s.unsupported.iter().map(|u| (relative_name(t.path(), &u.path), u.kind)).collect();
        if cfg!(feature = "heif") {
            assert_eq!(names(&s.images), ["IMG_0002.HEIC", "cut.jpg", "download", "empty.JPG", "lfs.jpg", "sky.avif", "sky.heic"]);
            assert!(unsupported.is_empty(), "{unsupported:?}");
        } else {
            assert_eq!(names(&s.images), ["IMG_0002.HEIC", "cut.jpg", "download", "empty.JPG", "lfs.jpg"]);
            assert_eq!(unsupported, [("sky.avif".to_string(), FileKind::Avif), ("sky.heic".to_string(), FileKind::Heic)]);
            assert!(s.unsupported[1].reason.contains("heif-convert"), "{}", s.unsupported[1].reason);
            assert_eq!(images::load_rgb(&t.path().join("sky.heic")).unwrap_err().kind, images::ProblemKind::Unsupported);
        }
        let notes: Vec<_> = s.notes.iter().map(|(p, n)| (relative_name(t.path(), p), n.as_str())).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].0 == "IMG_0002.HEIC" && notes[0].1.starts_with("JPEG data under a .heic name"), "{notes:?}");
        // The JPEG named .HEIC trains; each broken file says what it is, by name.
        let loaded = images::load_rgb(&t.path().join("IMG_0002.HEIC")).unwrap();
        assert_eq!(loaded.original_size, (96, 64));
        let kind = |n: &str| images::load_rgb(&t.path().join(n)).unwrap_err();
        assert_eq!(kind("cut.jpg").kind, images::ProblemKind::Truncated);
        assert!(kind("empty.JPG").to_string().contains("empty.JPG: the file is empty"), "{}", kind("empty.JPG"));
        let lfs = kind("lfs.jpg");
        assert_eq!(lfs.kind, images::ProblemKind::LfsPointer);
        assert!(lfs.to_string().contains("lfs.jpg: this is a Git LFS pointer") && lfs.to_string().contains("git lfs pull"), "{lfs}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_skipped_not_followed_forever() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("sub/a.jpg"));
        std::os::unix::fs::symlink(t.path(), t.path().join("sub/loop")).unwrap();
        std::os::unix::fs::symlink(t.path().join("gone.jpg"), t.path().join("dangling.jpg")).unwrap();
        let s = scan(t.path()).unwrap();
        assert_eq!(s.images, vec![t.path().join("sub/a.jpg")]);
        assert!(s.skipped.iter().any(|(_, why)| why == "symlink loop"), "{:?}", s.skipped);
        assert!(s.skipped.iter().any(|(p, _)| p.ends_with("dangling.jpg")), "{:?}", s.skipped);
    }
}
