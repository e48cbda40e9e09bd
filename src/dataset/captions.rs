//! Captions beside the photos: sidecar `name.txt` files or the Hub imagefolder's
//! `metadata.jsonl` (`file_name` + `text`, or `prompt`), and a TSV form for editing them all in
//! one file. Writes are atomic (temp file + rename) and never drop other metadata columns.

use super::relative_name;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const METADATA_FILE: &str = "metadata.jsonl";
const TSV_HEADER: &str = "file_name\ttext";

/// Where captions come from: `name.txt` beside each image, `metadata.jsonl`, or none (every
/// image is trained with the one instance prompt, DreamBooth-style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionSource {
    Sidecar,
    Metadata,
    Instance,
}

impl std::str::FromStr for CaptionSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sidecar" => Ok(Self::Sidecar),
            "metadata" => Ok(Self::Metadata),
            "instance" => Ok(Self::Instance),
            _ => Err(format!("unknown caption source {s:?}: use sidecar, metadata or instance")),
        }
    }
}

impl std::fmt::Display for CaptionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sidecar => "sidecar",
            Self::Metadata => "metadata",
            Self::Instance => "instance",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptionError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} is not UTF-8 text: save it as UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{} line {line}: {reason}", path.display())]
    Line { path: PathBuf, line: usize, reason: String },
    #[error("no {METADATA_FILE} in {}: add one (rows of {{\"file_name\": ..., \"text\": ...}}) or use sidecar .txt captions", dir.display())]
    NoMetadata { dir: PathBuf },
    #[error("{} and {} would both write {}: rename one of the images", a.display(), b.display(), txt.display())]
    SidecarClash { a: PathBuf, b: PathBuf, txt: PathBuf },
    #[error("captions cannot be written to the instance prompt: choose sidecar or metadata")]
    InstanceTarget,
}

/// The source a folder uses: `metadata.jsonl` if present, else sidecars if any exist, else the
/// instance prompt.
pub fn detect_source(dir: &Path, images: &[PathBuf]) -> CaptionSource {
    if dir.join(METADATA_FILE).is_file() {
        CaptionSource::Metadata
    } else if images.iter().any(|p| sidecar_path(p).is_file()) {
        CaptionSource::Sidecar
    } else {
        CaptionSource::Instance
    }
}

pub fn sidecar_path(image: &Path) -> PathBuf {
    image.with_extension("txt")
}

/// One caption per image, in the same order: `None` where an image has none. Sidecar text and
/// metadata captions are trimmed of surrounding whitespace.
pub fn load_captions(dir: &Path, images: &[PathBuf], source: CaptionSource) -> Result<Vec<Option<String>>, CaptionError> {
    match source {
        CaptionSource::Instance => Ok(vec![None; images.len()]),
        CaptionSource::Sidecar => images.iter().map(|p| read_sidecar(&sidecar_path(p))).collect(),
        CaptionSource::Metadata => {
            let rows = read_metadata(dir, images)?;
            let mut by_name: HashMap<String, Option<String>> = rows.rows.into_iter().map(|r| (r.file_name, r.caption)).collect();
            Ok(images.iter().map(|p| by_name.remove(&relative_name(dir, p)).flatten()).collect())
        }
    }
}

fn read_sidecar(path: &Path) -> Result<Option<String>, CaptionError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| CaptionError::NotUtf8 { path: path.to_path_buf() })?;
            Ok(Some(text.trim_start_matches('\u{feff}').trim().to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaptionError::Read { path: path.to_path_buf(), source }),
    }
}

struct MetaRow {
    file_name: String,
    caption: Option<String>,
    fields: Map<String, Value>,
}

struct Metadata {
    rows: Vec<MetaRow>,
    /// The caption column the file already uses ("text" or "prompt").
    column: &'static str,
}

fn read_metadata(dir: &Path, images: &[PathBuf]) -> Result<Metadata, CaptionError> {
    let path = dir.join(METADATA_FILE);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8(b).map_err(|_| CaptionError::NotUtf8 { path: path.clone() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CaptionError::NoMetadata { dir: dir.to_path_buf() }),
        Err(source) => return Err(CaptionError::Read { path, source }),
    };
    let known: HashMap<String, ()> = images.iter().map(|p| (relative_name(dir, p), ())).collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rows = Vec::new();
    let mut uses_prompt = false;
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| CaptionError::Line { path: path.clone(), line: n, reason };
        let fields: Map<String, Value> = match serde_json::from_str(line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(err("not a JSON object: each line must be {\"file_name\": ..., \"text\": ...}".into())),
            Err(e) => return Err(err(format!("malformed JSON ({e}): fix or remove the line"))),
        };
        let Some(Value::String(raw_name)) = fields.get("file_name") else {
            return Err(err("no \"file_name\" string: every row must name its image".into()));
        };
        let file_name = raw_name.trim_start_matches("./").to_string();
        if !known.contains_key(&file_name) {
            return Err(err(format!("file_name {raw_name:?} does not match any image in {}: fix the name or remove the row", dir.display())));
        }
        if let Some(first) = seen.insert(file_name.clone(), n) {
            return Err(err(format!("{file_name:?} already has a row on line {first}: keep one")));
        }
        let caption = match (fields.get("text"), fields.get("prompt")) {
            (Some(v), _) => Some(v),
            (None, Some(v)) => {
                uses_prompt = true;
                Some(v)
            }
            (None, None) => None,
        };
        let caption = match caption {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(other) => return Err(err(format!("caption must be a string, found {other}"))),
        };
        rows.push(MetaRow { file_name, caption, fields });
    }
    let column = if uses_prompt && !rows.iter().any(|r| r.fields.contains_key("text")) { "prompt" } else { "text" };
    Ok(Metadata { rows, column })
}

/// Write every `Some` caption to `target`; images with `None` keep whatever they had. Returns
/// how many captions were written.
pub fn save_captions(dir: &Path, images: &[PathBuf], captions: &[Option<String>], target: CaptionSource) -> Result<usize, CaptionError> {
    assert_eq!(images.len(), captions.len(), "one caption slot per image");
    match target {
        CaptionSource::Instance => Err(CaptionError::InstanceTarget),
        CaptionSource::Sidecar => {
            let mut owners: HashMap<PathBuf, &PathBuf> = HashMap::new();
            for (img, cap) in images.iter().zip(captions) {
                if cap.is_some() {
                    let txt = sidecar_path(img);
                    if let Some(other) = owners.insert(txt.clone(), img) {
                        return Err(CaptionError::SidecarClash { a: other.clone(), b: img.clone(), txt });
                    }
                }
            }
            let mut n = 0;
            for (img, cap) in images.iter().zip(captions) {
                if let Some(c) = cap {
                    write_atomic(&sidecar_path(img), c.as_bytes())?;
                    n += 1;
                }
            }
            Ok(n)
        }
        CaptionSource::Metadata => {
            let mut meta = match read_metadata(dir, images) {
                Ok(m) => m,
                Err(CaptionError::NoMetadata { .. }) => Metadata { rows: Vec::new(), column: "text" },
                Err(e) => return Err(e),
            };
            let index: HashMap<String, usize> = meta.rows.iter().enumerate().map(|(i, r)| (r.file_name.clone(), i)).collect();
            let mut n = 0;
            for (img, cap) in images.iter().zip(captions) {
                let Some(c) = cap else { continue };
                let name = relative_name(dir, img);
                let value = Value::String(c.clone());
                match index.get(&name) {
                    Some(&i) => {
                        meta.rows[i].fields.insert(meta.column.to_string(), value);
                    }
                    None => {
                        let mut fields = Map::new();
                        fields.insert("file_name".into(), Value::String(name.clone()));
                        fields.insert(meta.column.to_string(), value);
                        meta.rows.push(MetaRow { file_name: name, caption: Some(c.clone()), fields });
                    }
                }
                n += 1;
            }
            let mut text = String::new();
            for r in &meta.rows {
                text.push_str(&serde_json::to_string(&r.fields).expect("JSON object"));
                text.push('\n');
            }
            write_atomic(&dir.join(METADATA_FILE), text.as_bytes())?;
            Ok(n)
        }
    }
}

/// Replace `path` in one step ([`crate::atomic::write`]), so an interrupted write never
/// leaves half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CaptionError> {
    crate::atomic::write(path, bytes).map_err(|source| CaptionError::Write { path: path.to_path_buf(), source })
}

/// All captions as TSV (`file_name<TAB>text`, tab/newline/backslash escaped): one file to edit.
pub fn to_tsv(dir: &Path, images: &[PathBuf], captions: &[Option<String>]) -> String {
    let mut out = format!("{TSV_HEADER}\n");
    for (img, cap) in images.iter().zip(captions) {
        out.push_str(&escape(&relative_name(dir, img)));
        out.push('\t');
        out.push_str(&escape(cap.as_deref().unwrap_or("")));
        out.push('\n');
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Parse TSV rows into one caption slot per image (`None` for images the file does not list or
/// leaves empty).
/// `origin` names the file in errors.
pub fn from_tsv(dir: &Path, images: &[PathBuf], text: &str, origin: &Path) -> Result<Vec<Option<String>>, CaptionError> {
    let index: HashMap<String, usize> = images.iter().enumerate().map(|(i, p)| (relative_name(dir, p), i)).collect();
    let mut out: Vec<Option<String>> = vec![None; images.len()];
    let mut lines_of: HashMap<usize, usize> = HashMap::new();
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || (n == 1 && line == TSV_HEADER) {
            continue;
        }
        let err = |reason: String| CaptionError::Line { path: origin.to_path_buf(), line: n, reason };
        let Some((name, caption)) = line.split_once('\t') else {
            return Err(err("no tab between file name and caption: each line is FILE<TAB>CAPTION".into()));
        };
        if caption.contains('\t') {
            return Err(err("more than one tab: write a tab inside a caption as \\t".into()));
        }
        let name = unescape(name);
        let Some(&idx) = index.get(&name) else {
            return Err(err(format!("{name:?} is not an image in {}: fix the name or remove the line", dir.display())));
        };
        if let Some(first) = lines_of.insert(idx, n) {
            return Err(err(format!("{name:?} is already on line {first}: keep one")));
        }
        // An empty cell means "no caption yet", so exporting and importing unchanged writes nothing new.
        let caption = unescape(caption).trim().to_string();
        out[idx] = (!caption.is_empty()).then_some(caption);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionIssueKind {
    Missing,
    Empty,
    Duplicate,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptionIssue {
    pub file: String,
    pub kind: CaptionIssueKind,
    pub message: String,
}

/// Images without a caption, with an empty one, or sharing the exact caption of another image
/// (the model cannot tell them apart by their text).
pub fn caption_issues(dir: &Path, images: &[PathBuf], captions: &[Option<String>]) -> Vec<CaptionIssue> {
    let names: Vec<String> = images.iter().map(|p| relative_name(dir, p)).collect();
    let mut first_with: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, cap) in captions.iter().enumerate() {
        let file = names[i].clone();
        match cap.as_deref() {
            None => out.push(CaptionIssue { file, kind: CaptionIssueKind::Missing, message: "no caption".into() }),
            Some("") => out.push(CaptionIssue { file, kind: CaptionIssueKind::Empty, message: "the caption is empty".into() }),
            Some(c) => {
                if let Some(&j) = first_with.get(c) {
                    out.push(CaptionIssue { file, kind: CaptionIssueKind::Duplicate, message: format!("same caption as {}", names[j]) });
                } else {
                    first_with.insert(c, i);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dataset(names: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let t = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        for n in names {
            let p = t.path().join(n);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"img").unwrap();
            images.push(p);
        }
        (t, images)
    }

    #[test]
    fn sidecars_are_read_trimmed_and_missing_is_none() {
        let (t, imgs) = dataset(&["a.jpg", "b.png", "c.jpg"]);
        fs::write(t.path().join("a.txt"), "\u{feff}a red sky\n").unwrap();
        fs::write(t.path().join("b.txt"), "  ").unwrap();
        let caps = load_captions(t.path(), &imgs, CaptionSource::Sidecar).unwrap();
        assert_eq!(caps, [Some("a red sky".into()), Some(String::new()), None]);
        assert_eq!(detect_source(t.path(), &imgs), CaptionSource::Sidecar);
        fs::write(t.path().join("c.txt"), [0xFF, 0xFE, 0x00]).unwrap();
        let e = load_captions(t.path(), &imgs, CaptionSource::Sidecar).unwrap_err();
        assert!(matches!(e, CaptionError::NotUtf8 { .. }) && e.to_string().contains("c.txt"), "{e}");
    }

    #[test]
    fn metadata_rows_map_to_images_with_text_or_prompt() {
        let (t, imgs) = dataset(&["a.jpg", "sub/b.jpg", "c.jpg"]);
        fs::write(
            t.path().join(METADATA_FILE),
            "{\"file_name\": \"a.jpg\", \"text\": \"storm\"}\n\n{\"file_name\": \"./sub/b.jpg\", \"prompt\": \"dusk \"}\n",
        )
        .unwrap();
        let caps = load_captions(t.path(), &imgs, CaptionSource::Metadata).unwrap();
        assert_eq!(caps, [Some("storm".into()), Some("dusk".into()), None]);
        assert_eq!(detect_source(t.path(), &imgs), CaptionSource::Metadata);
        assert_eq!(load_captions(t.path(), &imgs, CaptionSource::Instance).unwrap(), [None, None, None]);
    }

    #[test]
    fn bad_metadata_names_the_line_and_file() {
        let (t, imgs) = dataset(&["a.jpg"]);
        let meta = t.path().join(METADATA_FILE);
        for (text, line, needle) in [
            ("{\"file_name\": \"a.jpg\", \"text\": \"x\"}\n{\"file_name\": \"gone.jpg\", \"text\": \"y\"}\n", 2, "gone.jpg"),
            ("{\"file_name\": \"a.jpg\", \"text\": \"x\"\n", 1, "malformed JSON"),
            ("[1, 2]\n", 1, "not a JSON object"),
            ("{\"text\": \"x\"}\n", 1, "file_name"),
            ("{\"file_name\": \"a.jpg\"}\n{\"file_name\": \"a.jpg\"}\n", 2, "line 1"),
            ("{\"file_name\": \"a.jpg\", \"text\": 3}\n", 1, "must be a string"),
        ] {
            fs::write(&meta, text).unwrap();
            let e = load_captions(t.path(), &imgs, CaptionSource::Metadata).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, CaptionError::Line { line: l, .. } if l == line), "{msg}");
            assert!(msg.contains(needle) && msg.contains("metadata.jsonl"), "{msg}");
        }
        fs::remove_file(&meta).unwrap();
        let e = load_captions(t.path(), &imgs, CaptionSource::Metadata).unwrap_err();
        assert!(matches!(e, CaptionError::NoMetadata { .. }), "{e}");
    }

    #[test]
    fn writing_metadata_keeps_other_columns_and_the_files_caption_column() {
        let (t, imgs) = dataset(&["a.jpg", "b.jpg", "c.jpg"]);
        fs::write(t.path().join(METADATA_FILE), "{\"file_name\": \"a.jpg\", \"prompt\": \"old\", \"score\": 7}\n").unwrap();
        let n = save_captions(t.path(), &imgs, &[Some("new a".into()), None, Some("new c".into())], CaptionSource::Metadata).unwrap();
        assert_eq!(n, 2);
        let text = fs::read_to_string(t.path().join(METADATA_FILE)).unwrap();
        let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows[0], serde_json::json!({"file_name": "a.jpg", "prompt": "new a", "score": 7}));
        assert_eq!(rows[1], serde_json::json!({"file_name": "c.jpg", "prompt": "new c"}));
        let caps = load_captions(t.path(), &imgs, CaptionSource::Metadata).unwrap();
        assert_eq!(caps, [Some("new a".into()), None, Some("new c".into())]);
    }

    #[test]
    fn writing_sidecars_round_trips_and_refuses_clashes() {
        let (t, imgs) = dataset(&["a.jpg", "b.jpg"]);
        save_captions(t.path(), &imgs, &[Some("one".into()), Some("two\nlines".into())], CaptionSource::Sidecar).unwrap();
        assert_eq!(load_captions(t.path(), &imgs, CaptionSource::Sidecar).unwrap(), [Some("one".into()), Some("two\nlines".into())]);
        assert!(matches!(save_captions(t.path(), &imgs, &[None, None], CaptionSource::Instance), Err(CaptionError::InstanceTarget)));
        let (t, imgs) = dataset(&["x.jpg", "x.png"]);
        let e = save_captions(t.path(), &imgs, &[Some("1".into()), Some("2".into())], CaptionSource::Sidecar).unwrap_err();
        assert!(matches!(e, CaptionError::SidecarClash { .. }), "{e}");
        assert!(!t.path().join("x.txt").exists(), "nothing written when refusing");
    }

    #[test]
    fn tsv_round_trips_escapes_and_reports_bad_lines() {
        let (t, imgs) = dataset(&["a.jpg", "sub/b c.jpg", "d.jpg"]);
        let caps = vec![Some("tab\there, back\\slash\nnew line".to_string()), Some("plain".into()), None];
        let tsv = to_tsv(t.path(), &imgs, &caps);
        assert!(tsv.starts_with("file_name\ttext\na.jpg\ttab\\there"), "{tsv}");
        let back = from_tsv(t.path(), &imgs, &tsv, Path::new("c.tsv")).unwrap();
        assert_eq!(back, caps);
        let partial = from_tsv(t.path(), &imgs, "d.jpg\tonly d\r\n", Path::new("c.tsv")).unwrap();
        assert_eq!(partial, [None, None, Some("only d".into())]);
        for (text, line, needle) in [
            ("file_name\ttext\na.jpg no tab\n", 2, "no tab"),
            ("zz.jpg\tx\n", 1, "zz.jpg"),
            ("a.jpg\tx\na.jpg\ty\n", 2, "line 1"),
            ("a.jpg\tx\ty\n", 1, "more than one tab"),
        ] {
            let e = from_tsv(t.path(), &imgs, text, Path::new("c.tsv")).unwrap_err();
            assert!(matches!(e, CaptionError::Line { line: l, .. } if l == line), "{e}");
            assert!(e.to_string().contains(needle) && e.to_string().starts_with("c.tsv line"), "{e}");
        }
    }

    #[test]
    fn issues_name_missing_empty_and_duplicated_captions() {
        let (t, imgs) = dataset(&["a.jpg", "b.jpg", "c.jpg", "d.jpg"]);
        let caps = vec![Some("sky".into()), None, Some(String::new()), Some("sky".into())];
        let issues = caption_issues(t.path(), &imgs, &caps);
        let kinds: Vec<_> = issues.iter().map(|i| (i.file.as_str(), i.kind)).collect();
        assert_eq!(kinds, [("b.jpg", CaptionIssueKind::Missing), ("c.jpg", CaptionIssueKind::Empty), ("d.jpg", CaptionIssueKind::Duplicate)]);
        assert!(issues[2].message.contains("a.jpg"));
    }

    #[test]
    fn caption_source_parses_and_serializes_lowercase() {
        assert_eq!("metadata".parse::<CaptionSource>().unwrap(), CaptionSource::Metadata);
        assert!("csv".parse::<CaptionSource>().is_err());
        assert_eq!(serde_json::to_string(&CaptionSource::Sidecar).unwrap(), "\"sidecar\"");
        assert_eq!(serde_json::from_str::<CaptionSource>("\"instance\"").unwrap(), CaptionSource::Instance);
    }
}
