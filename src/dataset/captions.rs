//! Captions beside the photos: sidecar `name.txt` files, or the Hub imagefolder's metadata file
//! (`metadata.jsonl` or `metadata.csv`, a `file_name` column plus a caption column), and a TSV
//! form for editing them all in one file. Writes are atomic and never drop other metadata columns.
//! The conventions are those of the Hub's `imagefolder` loader (datasets' "Image dataset" docs):
//! `file_name` relative to the folder, one metadata file, any other columns kept as features.

use super::relative_name;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const METADATA_FILE: &str = "metadata.jsonl";
/// The CSV form of the imagefolder metadata (a header row with `file_name`).
pub const METADATA_CSV: &str = "metadata.csv";
/// The caption columns tried, in this order, when `caption_column` is not set: `text` is
/// diffusers' `--caption_column` default, `caption` and `prompt` what other trainers write.
pub const CAPTION_COLUMNS: &[&str] = &["text", "caption", "prompt"];
const TSV_HEADER: &str = "file_name\ttext";

/// Where captions come from: `name.txt` beside each image, the metadata file, or none (every
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
    #[error("no {METADATA_FILE} or {METADATA_CSV} in {}: add one (rows of {{\"file_name\": ..., \"text\": ...}}) or use sidecar .txt captions", dir.display())]
    NoMetadata { dir: PathBuf },
    #[error("{} and {} are both in {}: the Hub's imagefolder reads one metadata file; keep one", METADATA_FILE, METADATA_CSV, dir.display())]
    TwoMetadata { dir: PathBuf },
    #[error("{}: {}; its columns are {}. Name the caption column with `caption_column: COLUMN` in train.yaml (or --caption-column COLUMN)", path.display(), why, columns.join(", "))]
    NoColumn { path: PathBuf, columns: Vec<String>, why: String },
    #[error("{} and {} would both write {}: rename one of the images", a.display(), b.display(), txt.display())]
    SidecarClash { a: PathBuf, b: PathBuf, txt: PathBuf },
    #[error("captions cannot be written to the instance prompt: choose sidecar or metadata")]
    InstanceTarget,
}

/// The metadata file in `dir`, if any (`Err` when both forms are there).
pub fn metadata_path(dir: &Path) -> Result<Option<PathBuf>, CaptionError> {
    let (jsonl, csv) = (dir.join(METADATA_FILE), dir.join(METADATA_CSV));
    match (jsonl.is_file(), csv.is_file()) {
        (true, true) => Err(CaptionError::TwoMetadata { dir: dir.to_path_buf() }),
        (true, false) => Ok(Some(jsonl)),
        (false, true) => Ok(Some(csv)),
        (false, false) => Ok(None),
    }
}

/// The source a folder uses: its metadata file if present, else sidecars if any exist, else
/// the instance prompt.
pub fn detect_source(dir: &Path, images: &[PathBuf]) -> CaptionSource {
    if dir.join(METADATA_FILE).is_file() || dir.join(METADATA_CSV).is_file() {
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

/// The captions of a folder's images and where they came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Captions {
    /// One slot per image, in the images' order: `None` where an image has none. (Not in the
    /// JSON form, which is the summary every command prints beside its own rows.)
    #[serde(skip)]
    pub captions: Vec<Option<String>>,
    /// The source actually read.
    pub source: CaptionSource,
    /// The metadata file read (source `metadata`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The metadata column read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The column was picked as the first of [`CAPTION_COLUMNS`] present (not named by the user).
    pub column_guessed: bool,
    /// Sidecars were asked for, none exist, and the folder's metadata file was read instead.
    pub sidecars_absent: bool,
    /// Images with no caption or an empty one: they train with the instance prompt alone.
    pub fallback: usize,
}

impl Captions {
    /// One line for every command's output: where the captions came from, which column, and
    /// how many photos fall back to the instance prompt.
    pub fn describe(&self) -> String {
        let n = self.captions.len();
        let from = match self.source {
            CaptionSource::Instance => return format!("captions: none (captions: instance): all {n} photo(s) train with the instance prompt"),
            CaptionSource::Sidecar => "sidecar .txt files".to_string(),
            CaptionSource::Metadata => {
                let file = self.file.as_deref().and_then(Path::file_name).map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                let column = self.column.as_deref().unwrap_or("text");
                let how = if self.column_guessed {
                    format!(" (the first of {} it has; set caption_column to choose another)", CAPTION_COLUMNS.join(", "))
                } else {
                    String::new()
                };
                let instead = if self.sidecars_absent { " (no sidecar .txt captions exist, so the metadata file is used)" } else { "" };
                format!("{file} column \"{column}\"{how}{instead}")
            }
        };
        format!("captions from {from}: {} of {n} photo(s) fall back to the instance prompt (no caption)", self.fallback)
    }
}

/// One caption per image, in the same order, from `source`; `column` names the metadata
/// column (default: the first of [`CAPTION_COLUMNS`] the file has). Sidecar text and metadata
/// captions are trimmed of surrounding whitespace. When `source` is sidecar (train.yaml's
/// default) but no image has a sidecar and the folder has a metadata file, that file is read,
/// and [`Captions::sidecars_absent`] says so.
pub fn load_captions(dir: &Path, images: &[PathBuf], source: CaptionSource, column: Option<&str>) -> Result<Captions, CaptionError> {
    let sidecars_absent = source == CaptionSource::Sidecar && !images.iter().any(|p| sidecar_path(p).is_file()) && metadata_path(dir)?.is_some();
    let source = if sidecars_absent { CaptionSource::Metadata } else { source };
    let mut out =
        Captions { captions: vec![None; images.len()], source, file: None, column: None, column_guessed: false, sidecars_absent, fallback: 0 };
    match source {
        CaptionSource::Instance => {}
        CaptionSource::Sidecar => out.captions = images.iter().map(|p| read_sidecar(&sidecar_path(p))).collect::<Result<_, _>>()?,
        CaptionSource::Metadata => {
            let meta = read_metadata(dir, images)?;
            let (col, guessed) = meta.caption_column(column, false)?;
            let mut by_name: HashMap<&str, &MetaRow> = meta.rows.iter().map(|r| (r.file_name.as_str(), r)).collect();
            out.captions = images
                .iter()
                .map(|p| match by_name.remove(relative_name(dir, p).as_str()) {
                    Some(r) => r.caption(&meta.path, &col),
                    None => Ok(None),
                })
                .collect::<Result<_, _>>()?;
            out.file = Some(meta.path);
            out.column = Some(col);
            out.column_guessed = guessed;
        }
    }
    out.fallback = out.captions.iter().filter(|c| c.as_deref().is_none_or(|c| c.trim().is_empty())).count();
    Ok(out)
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
    /// 1-based line (JSON Lines) or record (CSV, counting the header) in the file, for errors.
    line: usize,
    fields: Map<String, Value>,
}

impl MetaRow {
    fn caption(&self, path: &Path, column: &str) -> Result<Option<String>, CaptionError> {
        match self.fields.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => Err(CaptionError::Line {
                path: path.to_path_buf(),
                line: self.line,
                reason: format!("caption column \"{column}\" must be a string, found {other}"),
            }),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Jsonl,
    Csv,
}

struct Metadata {
    path: PathBuf,
    format: Format,
    /// Column names: the CSV header; `file_name` then every other key of the JSON rows.
    columns: Vec<String>,
    rows: Vec<MetaRow>,
}

impl Metadata {
    /// The caption column: `requested`, else the first of [`CAPTION_COLUMNS`] present; with
    /// `for_writing`, a file with no column besides `file_name` gets `text`. Returns whether
    /// the column was guessed.
    fn caption_column(&self, requested: Option<&str>, for_writing: bool) -> Result<(String, bool), CaptionError> {
        let no_column = |why: String| CaptionError::NoColumn { path: self.path.clone(), columns: self.columns.clone(), why };
        if let Some(c) = requested {
            if c == "file_name" {
                return Err(no_column("caption_column \"file_name\" is the image's name, not its caption".into()));
            }
            // Writing may add the column the user named.
            if for_writing || self.columns.iter().any(|k| k == c) {
                return Ok((c.to_string(), false));
            }
            return Err(no_column(format!("no column \"{c}\" (caption_column)")));
        }
        if let Some(c) = CAPTION_COLUMNS.iter().find(|c| self.columns.iter().any(|k| k == *c)) {
            return Ok((c.to_string(), true));
        }
        if for_writing && self.columns.iter().all(|k| k == "file_name") {
            return Ok(("text".to_string(), true));
        }
        Err(no_column(format!("no caption column: none of {} is there", CAPTION_COLUMNS.join(", "))))
    }
}

fn read_metadata(dir: &Path, images: &[PathBuf]) -> Result<Metadata, CaptionError> {
    let Some(path) = metadata_path(dir)? else {
        return Err(CaptionError::NoMetadata { dir: dir.to_path_buf() });
    };
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8(b).map_err(|_| CaptionError::NotUtf8 { path: path.clone() })?,
        Err(source) => return Err(CaptionError::Read { path, source }),
    };
    let text = text.trim_start_matches('\u{feff}');
    let format = if path.ends_with(METADATA_CSV) { Format::Csv } else { Format::Jsonl };
    let raw = match format {
        Format::Jsonl => parse_jsonl(&path, text)?,
        Format::Csv => parse_csv(&path, text)?,
    };
    // JSON rows keep no key order here (serde_json sorts keys): `file_name` first, then the rest.
    let mut columns: Vec<String> = raw.header.unwrap_or_else(|| vec!["file_name".into()]);
    let known: HashMap<String, ()> = images.iter().map(|p| (relative_name(dir, p), ())).collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rows = Vec::new();
    for (line, fields) in raw.rows {
        let err = |reason: String| CaptionError::Line { path: path.clone(), line, reason };
        for k in fields.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        let Some(Value::String(raw_name)) = fields.get("file_name") else {
            return Err(err("no \"file_name\" string: every row must name its image".into()));
        };
        let file_name = raw_name.trim_start_matches("./").to_string();
        if !known.contains_key(&file_name) {
            return Err(err(format!("file_name {raw_name:?} does not match any image in {}: fix the name or remove the row", dir.display())));
        }
        if let Some(first) = seen.insert(file_name.clone(), line) {
            return Err(err(format!("{file_name:?} already has a row on line {first}: keep one")));
        }
        rows.push(MetaRow { file_name, line, fields });
    }
    Ok(Metadata { path, format, columns, rows })
}

struct RawRows {
    header: Option<Vec<String>>,
    rows: Vec<(usize, Map<String, Value>)>,
}

fn parse_jsonl(path: &Path, text: &str) -> Result<RawRows, CaptionError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| CaptionError::Line { path: path.to_path_buf(), line: n, reason };
        match serde_json::from_str(line) {
            Ok(Value::Object(m)) => rows.push((n, m)),
            Ok(_) => return Err(err("not a JSON object: each line must be {\"file_name\": ..., \"text\": ...}".into())),
            Err(e) => return Err(err(format!("malformed JSON ({e}): fix or remove the line"))),
        }
    }
    Ok(RawRows { header: None, rows })
}

/// A CSV with a header row (RFC 4180 quoting, as pandas writes it); an empty cell is no value.
fn parse_csv(path: &Path, text: &str) -> Result<RawRows, CaptionError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let line_err = |line: usize, reason: String| CaptionError::Line { path: path.to_path_buf(), line, reason };
    let header: Vec<String> =
        reader.headers().map_err(|e| line_err(1, format!("unreadable CSV header ({e})")))?.iter().map(|h| h.trim().to_string()).collect();
    if !header.iter().any(|h| h == "file_name") {
        return Err(line_err(
            1,
            format!("the header has no \"file_name\" column (it has {}): the first row names the columns, e.g. file_name,text", header.join(", ")),
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            line_err(line, format!("malformed CSV ({e}): every row needs the header's {} cells", header.len()))
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let fields =
            header.iter().zip(record.iter()).filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect();
        rows.push((line, fields));
    }
    Ok(RawRows { header: Some(header), rows })
}

/// Write every `Some` caption to `target`; images with `None` keep whatever they had. A
/// metadata file keeps its form (JSON Lines or CSV), its other columns and its caption column
/// (`column`, else the one [`load_captions`] would read, else `text`). Returns how many
/// captions were written.
pub fn save_captions(
    dir: &Path,
    images: &[PathBuf],
    captions: &[Option<String>],
    target: CaptionSource,
    column: Option<&str>,
) -> Result<usize, CaptionError> {
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
                Err(CaptionError::NoMetadata { .. }) => {
                    Metadata { path: dir.join(METADATA_FILE), format: Format::Jsonl, columns: vec!["file_name".into()], rows: Vec::new() }
                }
                Err(e) => return Err(e),
            };
            let (col, _) = meta.caption_column(column, true)?;
            if !meta.columns.contains(&col) {
                meta.columns.push(col.clone());
            }
            let index: HashMap<String, usize> = meta.rows.iter().enumerate().map(|(i, r)| (r.file_name.clone(), i)).collect();
            let mut n = 0;
            for (img, cap) in images.iter().zip(captions) {
                let Some(c) = cap else { continue };
                let name = relative_name(dir, img);
                let value = Value::String(c.clone());
                match index.get(&name) {
                    Some(&i) => {
                        meta.rows[i].fields.insert(col.clone(), value);
                    }
                    None => {
                        let mut fields = Map::new();
                        fields.insert("file_name".into(), Value::String(name.clone()));
                        fields.insert(col.clone(), value);
                        meta.rows.push(MetaRow { file_name: name, line: 0, fields });
                    }
                }
                n += 1;
            }
            let bytes = match meta.format {
                Format::Jsonl => {
                    meta.rows.iter().map(|r| serde_json::to_string(&r.fields).expect("JSON object") + "\n").collect::<String>().into_bytes()
                }
                Format::Csv => {
                    let mut w = csv::Writer::from_writer(Vec::new());
                    let werr = |e: csv::Error| CaptionError::Write { path: meta.path.clone(), source: std::io::Error::other(e) };
                    w.write_record(&meta.columns).map_err(werr)?;
                    for r in &meta.rows {
                        let cells = meta.columns.iter().map(|k| match r.fields.get(k) {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Null) | None => String::new(),
                            Some(other) => other.to_string(),
                        });
                        w.write_record(cells).map_err(werr)?;
                    }
                    w.into_inner().map_err(|e| CaptionError::Write { path: meta.path.clone(), source: std::io::Error::other(e.to_string()) })?
                }
            };
            write_atomic(&meta.path, &bytes)?;
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
        let caps = load_captions(t.path(), &imgs, CaptionSource::Sidecar, None).unwrap().captions;
        assert_eq!(caps, [Some("a red sky".into()), Some(String::new()), None]);
        assert_eq!(detect_source(t.path(), &imgs), CaptionSource::Sidecar);
        fs::write(t.path().join("c.txt"), [0xFF, 0xFE, 0x00]).unwrap();
        let e = load_captions(t.path(), &imgs, CaptionSource::Sidecar, None).unwrap_err();
        assert!(matches!(e, CaptionError::NotUtf8 { .. }) && e.to_string().contains("c.txt"), "{e}");
    }

    #[test]
    fn metadata_rows_map_to_images_by_file_name() {
        let (t, imgs) = dataset(&["a.jpg", "sub/b.jpg", "c.jpg"]);
        fs::write(
            t.path().join(METADATA_FILE),
            "{\"file_name\": \"a.jpg\", \"text\": \"storm\"}\n\n{\"file_name\": \"./sub/b.jpg\", \"text\": \"dusk \", \"prompt\": \"x\"}\n",
        )
        .unwrap();
        let c = load_captions(t.path(), &imgs, CaptionSource::Metadata, None).unwrap();
        assert_eq!(c.captions, [Some("storm".into()), Some("dusk".into()), None]);
        assert_eq!((c.column.as_deref(), c.column_guessed, c.fallback), (Some("text"), true, 1));
        assert_eq!(detect_source(t.path(), &imgs), CaptionSource::Metadata);
        let c = load_captions(t.path(), &imgs, CaptionSource::Instance, None).unwrap();
        assert_eq!((c.captions, c.fallback), (vec![None, None, None], 3));
        let c = load_captions(t.path(), &imgs, CaptionSource::Metadata, Some("prompt")).unwrap();
        assert_eq!(c.captions, [None, Some("x".into()), None]);
        assert!(!c.column_guessed);
    }

    /// The shared field cases (tests/fixtures/field-cases/caption-columns): captions in a
    /// `caption` column, in `metadata.csv`, and in a column no default names.
    #[test]
    fn field_caption_columns_are_all_found() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/field-cases/caption-columns");
        let expected: HashMap<String, String> = serde_json::from_str(&fs::read_to_string(root.join("expected_captions.json")).unwrap()).unwrap();
        for (case, column, file, guessed) in [
            ("caption-column", None, METADATA_FILE, "caption"),
            ("metadata-csv", None, METADATA_CSV, "text"),
            ("docs-example-column", Some("additional_feature"), METADATA_FILE, "additional_feature"),
        ] {
            let dir = root.join(case);
            let images = crate::dataset::list_images(&dir).unwrap();
            // train.yaml's default source is sidecar: a folder with only a metadata file still has its captions read.
            let c = load_captions(&dir, &images, CaptionSource::Sidecar, column).unwrap();
            assert!(c.sidecars_absent, "{case}");
            assert_eq!(c.fallback, 0, "{case}: {}", c.describe());
            assert_eq!(c.column.as_deref(), Some(guessed), "{case}");
            assert_eq!(c.file.as_deref().and_then(Path::file_name).unwrap(), file, "{case}");
            for (img, cap) in images.iter().zip(&c.captions) {
                assert_eq!(cap.as_deref(), Some(expected[&relative_name(&dir, img)].as_str()), "{case}");
            }
            let line = c.describe();
            assert!(line.contains(file) && line.contains(guessed) && line.contains("0 of 3 photo(s) fall back"), "{line}");
        }
        let dir = root.join("docs-example-column");
        let images = crate::dataset::list_images(&dir).unwrap();
        let e = load_captions(&dir, &images, CaptionSource::Metadata, None).unwrap_err();
        assert!(matches!(e, CaptionError::NoColumn { .. }), "{e}");
        let msg = e.to_string();
        for needle in ["metadata.jsonl", "file_name, additional_feature", "text, caption, prompt", "caption_column"] {
            assert!(msg.contains(needle), "{needle} in {msg}");
        }
        let e = load_captions(&dir, &images, CaptionSource::Metadata, Some("caption")).unwrap_err().to_string();
        assert!(e.contains("no column \"caption\"") && e.contains("additional_feature"), "{e}");
    }

    #[test]
    fn csv_metadata_is_read_and_written_in_place() {
        let (t, imgs) = dataset(&["a.jpg", "b.jpg", "c.jpg"]);
        let csv = t.path().join(METADATA_CSV);
        fs::write(&csv, "\u{feff}file_name,score,text\na.jpg,7,\"red, sky\"\nb.jpg,3,\n").unwrap();
        let c = load_captions(t.path(), &imgs, CaptionSource::Metadata, None).unwrap();
        assert_eq!(c.captions, [Some("red, sky".into()), None, None]);
        assert_eq!(c.fallback, 2);
        let n = save_captions(t.path(), &imgs, &[None, Some("b \"quoted\"".into()), Some("c".into())], CaptionSource::Metadata, None).unwrap();
        assert_eq!(n, 2);
        assert_eq!(fs::read_to_string(&csv).unwrap(), "file_name,score,text\na.jpg,7,\"red, sky\"\nb.jpg,3,\"b \"\"quoted\"\"\"\nc.jpg,,c\n");
        assert!(!t.path().join(METADATA_FILE).exists());
        fs::write(t.path().join(METADATA_FILE), "").unwrap();
        assert!(matches!(load_captions(t.path(), &imgs, CaptionSource::Metadata, None), Err(CaptionError::TwoMetadata { .. })));
        fs::remove_file(t.path().join(METADATA_FILE)).unwrap();
        for (text, line, needle) in [
            ("name,text\na.jpg,x\n", 1, "no \"file_name\" column"),
            ("file_name,text\na.jpg,x,extra\n", 2, "malformed CSV"),
            ("file_name,text\nzz.jpg,x\n", 2, "zz.jpg"),
        ] {
            fs::write(&csv, text).unwrap();
            let e = load_captions(t.path(), &imgs, CaptionSource::Metadata, None).unwrap_err();
            assert!(matches!(e, CaptionError::Line { line: l, .. } if l == line), "{e}");
            assert!(e.to_string().contains(needle) && e.to_string().contains("metadata.csv"), "{e}");
        }
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
            let e = load_captions(t.path(), &imgs, CaptionSource::Metadata, None).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, CaptionError::Line { line: l, .. } if l == line), "{msg}");
            assert!(msg.contains(needle) && msg.contains("metadata.jsonl"), "{msg}");
        }
        fs::remove_file(&meta).unwrap();
        let e = load_captions(t.path(), &imgs, CaptionSource::Metadata, None).unwrap_err();
        assert!(matches!(e, CaptionError::NoMetadata { .. }), "{e}");
    }

    #[test]
    fn writing_metadata_keeps_other_columns_and_the_files_caption_column() {
        let (t, imgs) = dataset(&["a.jpg", "b.jpg", "c.jpg"]);
        fs::write(t.path().join(METADATA_FILE), "{\"file_name\": \"a.jpg\", \"prompt\": \"old\", \"score\": 7}\n").unwrap();
        let n = save_captions(t.path(), &imgs, &[Some("new a".into()), None, Some("new c".into())], CaptionSource::Metadata, None).unwrap();
        assert_eq!(n, 2);
        let text = fs::read_to_string(t.path().join(METADATA_FILE)).unwrap();
        let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows[0], serde_json::json!({"file_name": "a.jpg", "prompt": "new a", "score": 7}));
        assert_eq!(rows[1], serde_json::json!({"file_name": "c.jpg", "prompt": "new c"}));
        let caps = load_captions(t.path(), &imgs, CaptionSource::Metadata, None).unwrap().captions;
        assert_eq!(caps, [Some("new a".into()), None, Some("new c".into())]);
    }

    #[test]
    fn writing_sidecars_round_trips_and_refuses_clashes() {
        let (t, imgs) = dataset(&["a.jpg", "b.jpg"]);
        save_captions(t.path(), &imgs, &[Some("one".into()), Some("two\nlines".into())], CaptionSource::Sidecar, None).unwrap();
        assert_eq!(load_captions(t.path(), &imgs, CaptionSource::Sidecar, None).unwrap().captions, [Some("one".into()), Some("two\nlines".into())]);
        assert!(matches!(save_captions(t.path(), &imgs, &[None, None], CaptionSource::Instance, None), Err(CaptionError::InstanceTarget)));
        let (t, imgs) = dataset(&["x.jpg", "x.png"]);
        let e = save_captions(t.path(), &imgs, &[Some("1".into()), Some("2".into())], CaptionSource::Sidecar, None).unwrap_err();
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
