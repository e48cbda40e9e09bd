//! `dataset check --fix OUT`: a cleaned copy for training. Upright 8-bit RGB, the shorter side
//! brought down to the training resolution, flagged and duplicate photos left out and listed,
//! captions carried along. The original folder is only ever read.

use super::captions::{detect_source, load_captions, save_captions, CaptionError, CaptionSource};
use super::check::{CheckReport, Kind, Severity};
use super::images::load_rgb;
use image::imageops::{resize, FilterType};
use std::path::{Path, PathBuf};

pub const DROPPED_LIST: &str = "dropped.tsv";

#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("--fix folder {} is not empty: choose a new folder (nothing was written)", .0.display())]
    NotEmpty(PathBuf),
    #[error("--fix folder {} is inside the dataset {}: choose a folder outside it", out.display(), dir.display())]
    Inside { out: PathBuf, dir: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Captions(#[from] CaptionError),
}

#[derive(Debug, serde::Serialize)]
pub struct FixOutcome {
    pub out: PathBuf,
    pub written: usize,
    pub dropped: Vec<Dropped>,
}

#[derive(Debug, serde::Serialize)]
pub struct Dropped {
    pub file: String,
    pub reason: String,
}

/// Write the copy. Images with a finding at or above `drop_at`, and the later photo of each
/// duplicate pair, are left out.
pub fn fix(dir: &Path, report: &CheckReport, out: &Path, resolution: u32, drop_at: Severity) -> Result<FixOutcome, FixError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FixError::Write { path, source }
    };
    if let (Ok(d), Ok(o)) = (dir.canonicalize(), absolute_parentwise(out)) {
        if o.starts_with(&d) {
            return Err(FixError::Inside { out: out.to_path_buf(), dir: dir.to_path_buf() });
        }
    }
    if std::fs::read_dir(out).is_ok_and(|mut e| e.next().is_some()) {
        return Err(FixError::NotEmpty(out.to_path_buf()));
    }
    std::fs::create_dir_all(out).map_err(werr(out))?;

    let mut kept_src = Vec::new();
    let mut kept_dst = Vec::new();
    let mut dropped = Vec::new();
    for img in &report.images {
        let blocking = img.findings.iter().find(|f| f.severity >= drop_at || f.kind == Kind::Duplicate);
        if let Some(f) = blocking {
            dropped.push(Dropped { file: img.file.clone(), reason: format!("{}: {}", kind_name(f.kind), f.message) });
            continue;
        }
        let loaded = match load_rgb(&img.path) {
            Ok(l) => l,
            Err(e) => {
                dropped.push(Dropped { file: img.file.clone(), reason: e.reason });
                continue;
            }
        };
        let (w, h) = loaded.original_size;
        let short = w.min(h);
        let rgb = if short > resolution {
            let s = resolution as f64 / short as f64;
            resize(&loaded.rgb, ((w as f64 * s).round() as u32).max(1), ((h as f64 * s).round() as u32).max(1), FilterType::Lanczos3)
        } else {
            loaded.rgb
        };
        let rel = Path::new(&img.file);
        let jpeg = rel.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
        let dst = out.join(if jpeg { rel.with_extension("jpg") } else { rel.with_extension("png") });
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(werr(parent))?;
        }
        let saved = if jpeg {
            std::fs::File::create(&dst).map_err(werr(&dst)).and_then(|f| {
                image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 95)
                    .encode_image(&rgb)
                    .map_err(|e| FixError::Write { path: dst.clone(), source: std::io::Error::other(e) })
            })
        } else {
            rgb.save(&dst).map_err(|e| FixError::Write { path: dst.clone(), source: std::io::Error::other(e) })
        };
        saved?;
        kept_src.push(img.path.clone());
        kept_dst.push(dst);
    }

    let source = detect_source(dir, &kept_src);
    if source != CaptionSource::Instance {
        let captions = load_captions(dir, &kept_src, source, None)?;
        save_captions(out, &kept_dst, &captions.captions, captions.source, captions.column.as_deref())?;
    }
    let mut list = String::from("file\treason\n");
    for d in &dropped {
        list.push_str(&format!("{}\t{}\n", d.file, d.reason.replace(['\t', '\n'], " ")));
    }
    let list_path = out.join(DROPPED_LIST);
    std::fs::write(&list_path, list).map_err(werr(&list_path))?;
    Ok(FixOutcome { out: out.to_path_buf(), written: kept_dst.len(), dropped })
}

fn kind_name(k: Kind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// `path` made absolute through its nearest existing ancestor (it may not exist yet).
fn absolute_parentwise(path: &Path) -> std::io::Result<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    loop {
        match cur.canonicalize() {
            Ok(c) => return Ok(missing.iter().rev().fold(c, |acc: PathBuf, m| acc.join(m))),
            Err(_) => {
                let Some(name) = cur.file_name().map(|n| n.to_os_string()) else { return Err(std::io::ErrorKind::NotFound.into()) };
                missing.push(name);
                cur.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::check::check;
    use crate::dataset::testgen as gen;
    use std::fs;

    #[test]
    fn writes_a_clean_resized_copy_and_lists_what_it_dropped() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("in");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a.jpg"), gen::with_exif_orientation(&gen::jpeg(&gen::photo(800, 600, 1)), 6)).unwrap();
        fs::write(d.join("b.png"), gen::png16(&gen::photo(700, 600, 2))).unwrap();
        fs::write(d.join("c.jpg"), gen::jpeg(&gen::photo(700, 600, 2))).unwrap();
        let jpg = gen::jpeg(&gen::photo(640, 480, 3));
        fs::write(d.join("cut.jpg"), &jpg[..jpg.len() / 2]).unwrap();
        fs::write(d.join("a.txt"), "sky a").unwrap();
        fs::write(d.join("b.txt"), "sky b").unwrap();
        let before: Vec<_> = ["a.jpg", "b.png", "c.jpg"].iter().map(|n| fs::read(d.join(n)).unwrap()).collect();

        let report =
            check(&d, &crate::dataset::check::Sizes::buckets(crate::train::buckets::BucketSpec::new(512, None, None, 64, 8).unwrap())).unwrap();
        let out = t.path().join("out");
        let o = fix(&d, &report, &out, 512, Severity::Error).unwrap();
        assert_eq!(o.written, 2);
        let dropped: Vec<_> = o.dropped.iter().map(|x| x.file.as_str()).collect();
        assert_eq!(dropped, ["c.jpg", "cut.jpg"], "duplicate of b.png, truncated: {:?}", o.dropped);
        let a = image::open(out.join("a.jpg")).unwrap();
        assert_eq!((a.width(), a.height()), (512, 683), "upright, shorter side at the resolution");
        let b = image::open(out.join("b.png")).unwrap();
        assert_eq!(b.color(), image::ColorType::Rgb8);
        assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "sky a");
        let list = fs::read_to_string(out.join(DROPPED_LIST)).unwrap();
        assert!(list.contains("cut.jpg\tunreadable: ") && list.contains("c.jpg\tduplicate: "), "{list}");
        for (n, bytes) in ["a.jpg", "b.png", "c.jpg"].iter().zip(before) {
            assert_eq!(fs::read(d.join(n)).unwrap(), bytes, "{n} untouched");
        }
        assert!(matches!(fix(&d, &report, &out, 512, Severity::Error), Err(FixError::NotEmpty(_))));
        assert!(matches!(fix(&d, &report, &d.join("sub"), 512, Severity::Error), Err(FixError::Inside { .. })));
    }
}
