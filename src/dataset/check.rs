//! `dataset check`: one finding per problem per image, with a severity, for everything that
//! would silently hurt a fine-tune (files the trainer refuses, conversions, small or stretched
//! photos, duplicates, filtered outliers, text overlays).

use super::images::{load_rgb, ImageProblem, ProblemKind};
use super::tone::{robust_center, tone, Tone};
use super::{overlay, par_map, phash, relative_name, scan, stretch, DatasetError};
use crate::imagestats::thumbnail;
use crate::train::buckets::BucketSpec;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Self::Info),
            "warning" => Ok(Self::Warning),
            "error" => Ok(Self::Error),
            _ => Err(format!("unknown severity {s:?}: use error, warning or info")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Unreadable,
    Unsupported,
    TooSmall,
    TooLarge,
    Aspect,
    Stretched,
    Duplicate,
    Filter,
    TextOverlay,
    ExifOrientation,
    Cmyk,
    HighBitDepth,
    Alpha,
    /// A Git LFS pointer stands where the photo should be.
    LfsPointer,
    /// The extension names another format than the content (the content is used).
    Extension,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageFindings {
    pub file: String,
    pub findings: Vec<Finding>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub images: Vec<ImageFindings>,
}

impl CheckReport {
    pub fn count(&self, at_least: Severity) -> usize {
        self.images.iter().flat_map(|i| &i.findings).filter(|f| f.severity >= at_least).count()
    }
}

/// What one decodable image measured.
struct Measured {
    size: (u32, u32),
    conversions: super::images::SourceInfo,
    phash: u64,
    tone: Tone,
    grain_skew: Option<f32>,
    text: Option<overlay::TextLine>,
}

fn measure(path: &Path) -> Result<Measured, ImageProblem> {
    let img = load_rgb(path)?;
    let thumb = thumbnail(&img.rgb, 256);
    Ok(Measured {
        size: img.original_size,
        phash: phash::phash(&thumb),
        tone: tone(&thumb),
        grain_skew: stretch::grain_skew(&img.rgb),
        text: overlay::find_text(&img.rgb),
        conversions: img.source,
    })
}

/// Aspect ratios cameras and phones produce (long side / short side).
const CAMERA_RATIOS: &[f32] = &[1.0, 1.25, 4.0 / 3.0, 1.5, 1.6, 16.0 / 9.0];

/// The size rules a check follows: the trainer's.
#[derive(Debug, Clone)]
pub enum Sizes {
    /// `bucketing: true` (the default): a photo is a problem only when no bucket takes it
    /// (skipped: an error naming `min_bucket_reso`), when it trains alone in a smaller bucket of
    /// its own size (a warning), or when its aspect ratio is beyond the widest bucket (cropped:
    /// a warning, an error when less than half of it is kept).
    Buckets { spec: BucketSpec, table: Vec<(u32, u32)> },
    /// `bucketing: false`: every photo is cropped to a `resolution`² square (a shorter side under
    /// it is upscaled: a warning, an error under half; 2:1 or wider a warning, 4:1 an error).
    Square { resolution: u32 },
}

impl Sizes {
    /// The rules of a run with `bucketing: true` at `spec`.
    pub fn buckets(spec: BucketSpec) -> Self {
        Sizes::Buckets { table: spec.resolutions(), spec }
    }
}

/// Checks every image under `dir` against `sizes` (the trainer's size rules), plus the
/// per-image and dataset-wide findings that do not depend on them.
pub fn check(dir: &Path, sizes: &Sizes) -> Result<CheckReport, DatasetError> {
    let found = scan(dir)?;
    if found.images.is_empty() && found.unsupported.is_empty() {
        return Err(super::no_images(dir, &found));
    }
    let measured = par_map(&found.images, |p| measure(p));
    let mut images: Vec<ImageFindings> =
        found.images.iter().map(|p| ImageFindings { file: relative_name(dir, p), findings: Vec::new(), path: p.clone() }).collect();

    for (entry, m) in images.iter_mut().zip(&measured) {
        match m {
            Ok(m) => per_image(&mut entry.findings, m, sizes),
            Err(p) => entry.findings.push(problem_finding(p)),
        }
    }
    duplicates(&mut images, &measured);
    filter_outliers(&mut images, &measured);

    for (p, note) in &found.notes {
        if let Some(entry) = images.iter_mut().find(|i| &i.path == p) {
            entry.findings.push(Finding { kind: Kind::Extension, severity: Severity::Info, message: note.clone() });
        }
    }
    for u in &found.unsupported {
        images.push(ImageFindings {
            file: relative_name(dir, &u.path),
            findings: vec![Finding { kind: Kind::Unsupported, severity: Severity::Error, message: u.reason.clone() }],
            path: u.path.clone(),
        });
    }
    for (p, why) in &found.skipped {
        images.push(ImageFindings {
            file: relative_name(dir, p),
            findings: vec![Finding { kind: Kind::Unreadable, severity: Severity::Error, message: format!("skipped: {why}") }],
            path: p.clone(),
        });
    }
    images.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(CheckReport { images })
}

fn problem_finding(p: &ImageProblem) -> Finding {
    let kind = match p.kind {
        ProblemKind::Unreadable | ProblemKind::Truncated => Kind::Unreadable,
        ProblemKind::Unsupported => Kind::Unsupported,
        ProblemKind::TooLarge => Kind::TooLarge,
        ProblemKind::LfsPointer => Kind::LfsPointer,
    };
    Finding { kind, severity: Severity::Error, message: p.reason.clone() }
}

fn per_image(out: &mut Vec<Finding>, m: &Measured, sizes: &Sizes) {
    let mut add = |kind, severity, message: String| out.push(Finding { kind, severity, message });
    let (w, h) = m.size;
    let short = w.min(h);
    let ratio = w.max(h) as f32 / short.max(1) as f32;
    let camera = CAMERA_RATIOS.iter().any(|r| (ratio / r - 1.0).abs() < 0.02);
    match sizes {
        Sizes::Buckets { spec, table } => {
            // The trainer's own placement (`BucketSpec::place`), so the check says what training will do.
            match spec.place(table, w, h) {
                Err(reason) => add(Kind::TooSmall, Severity::Error, format!("training skips it: {reason}")),
                Ok(p) if !table.contains(&p.bucket) => add(
                    Kind::TooSmall,
                    Severity::Warning,
                    format!(
                        "{w}×{h} is smaller than its {}-px bucket and buckets never upscale: it trains alone at {}×{}, fewer pixels than \
                         the others (a bucket side under min_bucket_reso {} would skip it)",
                        spec.resolution, p.bucket.0, p.bucket.1, spec.min_side
                    ),
                ),
                Ok(_) => {}
            }
            let widest = table.iter().map(|&(bw, bh)| bw.max(bh) as f32 / bw.min(bh) as f32).fold(1.0, f32::max);
            if ratio > widest * 1.02 {
                let kept = widest / ratio;
                let severity = if kept < 0.5 { Severity::Error } else { Severity::Warning };
                add(
                    Kind::Aspect,
                    severity,
                    format!(
                        "{w}×{h} is {ratio:.2}:1, beyond the widest bucket ({widest:.2}:1 at {} px): training crops it to that bucket and keeps {:.0}% of it",
                        spec.resolution,
                        100.0 * kept
                    ),
                );
            } else if !camera {
                add(Kind::Aspect, Severity::Info, format!("{w}×{h} is {ratio:.2}:1, not a camera format: cropped, or stretched?"));
            }
        }
        Sizes::Square { resolution } => {
            let resolution = *resolution;
            if short < resolution {
                let severity = if short * 2 < resolution { Severity::Error } else { Severity::Warning };
                add(
                    Kind::TooSmall,
                    severity,
                    format!("{w}×{h}: the shorter side {short} px is below the training resolution {resolution}: the square crop upscales it and trains blur"),
                );
            }
            if ratio >= 2.0 {
                let severity = if ratio >= 4.0 { Severity::Error } else { Severity::Warning };
                add(Kind::Aspect, severity, format!("{w}×{h} is {ratio:.2}:1: the square training crop keeps only {:.0}% of it", 100.0 / ratio));
            } else if !camera {
                add(Kind::Aspect, Severity::Info, format!("{w}×{h} is {ratio:.2}:1, not a camera format: cropped, or stretched?"));
            }
        }
    }
    if let Some(skew) = m.grain_skew {
        let strong = skew.abs() >= stretch::STRONG;
        if strong || (skew.abs() >= stretch::HINT && !camera) {
            let axis = if skew > 0.0 { "horizontally" } else { "vertically" };
            add(
                Kind::Stretched,
                Severity::Warning,
                format!(
                    "likely stretched {axis}: the grain is smeared along one axis (skew {skew:+.2}){}; the model learns squashed shapes",
                    if camera { "" } else { " and the aspect ratio is not a camera format" }
                ),
            );
        }
    }
    if let Some(t) = &m.text {
        let place = match t.y {
            y if y < 0.33 => "top",
            y if y < 0.66 => "middle",
            _ => "bottom",
        };
        add(
            Kind::TextOverlay,
            Severity::Warning,
            format!(
                "{} {} text-like shapes in a row near the {place}: a caption or watermark trains into every image; crop or retouch it",
                t.glyphs, t.colour
            ),
        );
    }
    let s = &m.conversions;
    if s.exif_orientation != 1 {
        add(
            Kind::ExifOrientation,
            Severity::Info,
            format!(
                "EXIF orientation {}: training uses it upright, like diffusers' exif_transpose; check that is how it should look",
                s.exif_orientation
            ),
        );
    }
    if s.cmyk {
        add(
            Kind::Cmyk,
            Severity::Warning,
            "CMYK (a print export): converted to RGB without its colour profile, so colours may shift; export it as sRGB".into(),
        );
    }
    if s.bits_per_channel > 8 {
        add(Kind::HighBitDepth, Severity::Info, format!("{}-bit per channel: reduced to 8-bit for training", s.bits_per_channel));
    }
    if s.transparent_pixels {
        add(
            Kind::Alpha,
            Severity::Warning,
            "has transparent pixels: training sees the colour hidden under them (often black); flatten it onto a background".into(),
        );
    } else if s.has_alpha {
        add(Kind::Alpha, Severity::Info, "has an alpha channel (fully opaque): dropped for training".into());
    }
}

fn duplicates(images: &mut [ImageFindings], measured: &[Result<Measured, ImageProblem>]) {
    for j in 0..measured.len() {
        let Ok(b) = &measured[j] else { continue };
        let closest = (0..j)
            .filter_map(|i| measured[i].as_ref().ok().map(|a| (i, phash::distance(a.phash, b.phash))))
            .filter(|&(_, d)| d <= phash::NEAR_DUPLICATE_BITS)
            .min_by_key(|&(_, d)| d);
        if let Some((i, d)) = closest {
            let what = if d == 0 { "a duplicate" } else { "a near-duplicate" };
            let message = format!(
                "{what} of {} (perceptual hash distance {d}/64): the scene counts twice in training; --fix keeps {}",
                images[i].file, images[i].file
            );
            images[j].findings.push(Finding { kind: Kind::Duplicate, severity: Severity::Warning, message });
        }
    }
}

/// Robust z-scores against the set need enough photos to define "normal".
const MIN_SET_FOR_OUTLIERS: usize = 8;
const OUTLIER_Z: f32 = 3.5;

fn filter_outliers(images: &mut [ImageFindings], measured: &[Result<Measured, ImageProblem>]) {
    let tones: Vec<(usize, Tone)> = measured.iter().enumerate().filter_map(|(i, m)| m.as_ref().ok().map(|m| (i, m.tone))).collect();
    let stat = |f: fn(&Tone) -> f32, floor: f32| {
        let values: Vec<f32> = tones.iter().map(|(_, t)| f(t)).collect();
        let (m, s) = robust_center(&values);
        (m, s.max(floor))
    };
    let chroma = stat(|t| t.chroma, 3.0);
    let contrast = stat(|t| t.contrast, 2.0);
    let enough = tones.len() >= MIN_SET_FOR_OUTLIERS;
    for (i, t) in &tones {
        let mut reasons = Vec::new();
        // A saturation slider pushed past the file's range clips whatever the set looks like.
        if t.clipped > 0.15 {
            reasons.push(format!("{:.0}% of its pixels have a colour channel clipped (oversaturated)", t.clipped * 100.0));
        }
        if enough {
            let z = |v: f32, (m, s): (f32, f32)| (v - m) / s;
            if z(t.chroma, chroma) > OUTLIER_Z && t.clipped <= 0.15 {
                reasons.push(format!("saturation {:.0} against the set's typical {:.0} (oversaturated or a vivid filter)", t.chroma, chroma.0));
            }
            if z(t.chroma, chroma) < -OUTLIER_Z {
                reasons
                    .push(format!("saturation {:.0} against the set's typical {:.0} (black-and-white or desaturating filter)", t.chroma, chroma.0));
            }
            if z(t.contrast, contrast).abs() > OUTLIER_Z {
                reasons.push(format!("contrast {:.0} against the set's typical {:.0} (HDR or heavy tone filter)", t.contrast, contrast.0));
            }
        }
        if !reasons.is_empty() {
            let message = format!("{}: the model would learn the filter as part of the style", reasons.join("; "));
            images[*i].findings.push(Finding { kind: Kind::Filter, severity: Severity::Warning, message });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;
    use image::imageops;
    use std::fs;

    fn buckets(res: usize) -> Sizes {
        Sizes::buckets(BucketSpec::new(res, None, None, 64, 8).unwrap())
    }

    fn finding(r: &CheckReport, file: &str, kind: Kind) -> Finding {
        let i = r.images.iter().find(|i| i.file == file).unwrap_or_else(|| panic!("{file} not listed"));
        i.findings.iter().find(|f| f.kind == kind).unwrap_or_else(|| panic!("{file}: no {kind:?} in {:?}", i.findings)).clone()
    }

    #[test]
    fn sizes_follow_the_bucket_rules_or_the_square_crop() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        // At 512 (64-px steps) the widest bucket is 1024×256, 4:1.
        fs::write(d.join("pano.png"), gen::png(&gen::photo(2000, 400, 1))).unwrap();
        fs::write(d.join("ribbon.png"), gen::png(&gen::photo(3000, 300, 2))).unwrap();
        fs::write(d.join("wide.png"), gen::png(&gen::photo(1200, 400, 3))).unwrap();
        fs::write(d.join("small.png"), gen::png(&gen::photo(400, 300, 4))).unwrap();
        let r = check(d, &buckets(512)).unwrap();
        let pano = finding(&r, "pano.png", Kind::Aspect);
        assert!(pano.severity == Severity::Warning && pano.message.contains("keeps 80%"), "5:1 against 4:1: {pano:?}");
        let ribbon = finding(&r, "ribbon.png", Kind::Aspect);
        assert!(ribbon.severity == Severity::Error && ribbon.message.contains("keeps 40%"), "{ribbon:?}");
        // 3:1 is no problem for buckets: the 768×256 bucket takes it whole.
        assert_eq!(finding(&r, "wide.png", Kind::Aspect).severity, Severity::Info);
        assert_eq!(finding(&r, "small.png", Kind::TooSmall).severity, Severity::Warning, "trains at 384×256, its own bucket");

        let square = check(d, &Sizes::Square { resolution: 512 }).unwrap();
        assert_eq!(finding(&square, "wide.png", Kind::Aspect).severity, Severity::Warning, "a square crop keeps a third");
        assert_eq!(finding(&square, "pano.png", Kind::Aspect).severity, Severity::Error);
        let small = finding(&square, "small.png", Kind::TooSmall);
        assert!(small.severity == Severity::Warning && small.message.contains("upscales"), "{small:?}");
    }

    fn kinds(r: &CheckReport, file: &str) -> Vec<Kind> {
        r.images.iter().find(|i| i.file == file).unwrap_or_else(|| panic!("{file} not listed")).findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn the_bundled_sky_photos_are_clean() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sky-photos");
        let r = check(&dir, &buckets(512)).unwrap();
        assert_eq!(r.images.len(), 11);
        let found: Vec<_> = r.images.iter().filter(|i| !i.findings.is_empty()).collect();
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn flawed_images_get_their_findings() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for seed in 0..8 {
            fs::write(d.join(format!("clean{seed}.jpg")), gen::jpeg(&gen::photo(640, 480, seed))).unwrap();
        }
        fs::write(d.join("dup.jpg"), gen::jpeg(&imageops::resize(&gen::photo(640, 480, 3), 700, 525, imageops::FilterType::Lanczos3))).unwrap();
        fs::write(d.join("small.png"), gen::png(&gen::photo(400, 300, 9))).unwrap();
        fs::write(d.join("tiny.png"), gen::png(&gen::photo(200, 150, 10))).unwrap();
        fs::write(d.join("strip.jpg"), gen::jpeg(&gen::photo(2400, 520, 11))).unwrap();
        fs::write(d.join("vivid.jpg"), gen::jpeg(&gen::oversaturate(&gen::photo(640, 480, 12)))).unwrap();
        let mut text = gen::photo(640, 480, 13);
        gen::draw_text(&mut text, "© SKYPHOTO", 60, 400, 4, [255, 255, 255]);
        fs::write(d.join("text.jpg"), gen::jpeg(&text)).unwrap();
        fs::write(d.join("rotated.jpg"), gen::with_exif_orientation(&gen::jpeg(&gen::photo(640, 480, 14)), 6)).unwrap();
        fs::write(d.join("cmyk.jpg"), gen::cmyk_jpeg(640, 512, [10, 60, 90, 0])).unwrap();
        fs::write(d.join("deep.png"), gen::png16(&gen::photo(640, 480, 15))).unwrap();
        fs::write(d.join("clear.png"), gen::png_alpha(&gen::photo(640, 480, 16), true)).unwrap();
        let jpg = gen::jpeg(&gen::photo(640, 480, 17));
        fs::write(d.join("cut.jpg"), &jpg[..jpg.len() / 2]).unwrap();
        fs::write(d.join("bomb.jpg"), gen::jpeg_claiming_size(&jpg, 30000, 30000)).unwrap();
        fs::write(d.join("fake.png"), b"this is text").unwrap();
        fs::write(d.join("phone.heic"), b"....").unwrap();
        let wide = imageops::resize(&gen::photo(640, 480, 18), 960, 480, imageops::FilterType::Triangle);
        fs::write(d.join("stretched.png"), gen::png(&wide)).unwrap();

        let r = check(d, &buckets(448)).unwrap();
        assert_eq!(kinds(&r, "dup.jpg"), [Kind::Duplicate]);
        assert!(r.images.iter().find(|i| i.file == "dup.jpg").unwrap().findings[0].message.contains("clean3.jpg"));
        // Buckets at 448: 400×300 trains alone at 384×256 (a warning); 200×150's bucket 192×128
        // is under min_bucket_reso 192 (skipped: an error); 2400×520 (4.6:1) fits the 896×192 bucket.
        assert_eq!(kinds(&r, "small.png"), [Kind::TooSmall]);
        let small = &finding(&r, "small.png", Kind::TooSmall);
        assert!(small.severity == Severity::Warning && small.message.contains("384×256"), "{small:?}");
        let tiny = finding(&r, "tiny.png", Kind::TooSmall);
        assert!(tiny.severity == Severity::Error && tiny.message.contains("min_bucket_reso 192"), "{tiny:?}");
        assert_eq!(finding(&r, "strip.jpg", Kind::Aspect).severity, Severity::Info, "within the bucket range, only not a camera ratio");
        assert!(!kinds(&r, "strip.jpg").contains(&Kind::TooSmall));
        assert_eq!(kinds(&r, "vivid.jpg"), [Kind::Filter]);
        assert_eq!(kinds(&r, "text.jpg"), [Kind::TextOverlay]);
        assert_eq!(kinds(&r, "rotated.jpg"), [Kind::ExifOrientation]);
        assert_eq!(kinds(&r, "cmyk.jpg")[0], Kind::Cmyk, "a flat colour may also be a contrast outlier");
        assert_eq!(kinds(&r, "deep.png"), [Kind::HighBitDepth]);
        assert_eq!(kinds(&r, "clear.png"), [Kind::Alpha]);
        assert_eq!(kinds(&r, "cut.jpg"), [Kind::Unreadable]);
        assert_eq!(kinds(&r, "bomb.jpg"), [Kind::TooLarge]);
        assert_eq!(kinds(&r, "fake.png"), [Kind::Unsupported]);
        assert_eq!(kinds(&r, "phone.heic"), [Kind::Unsupported]);
        assert!(kinds(&r, "stretched.png").contains(&Kind::Stretched), "{:?}", kinds(&r, "stretched.png"));
        for seed in 0..8 {
            assert_eq!(kinds(&r, &format!("clean{seed}.jpg")), [], "clean{seed}");
        }
        assert!(r.count(Severity::Error) >= 5);
    }
}
