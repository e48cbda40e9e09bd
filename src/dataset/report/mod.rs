//! `dataset report`: what the set will teach, before training. Colour clusters and their
//! blends, the hue histogram, composition, caption vocabulary, and the aspect-ratio buckets
//! training will use ([`crate::train::buckets`]) with a thumbnail of each photo cropped as
//! training crops it, as JSON and HTML.

pub mod clusters;
pub mod html;
pub mod vocabulary;

use super::images::load_rgb;
use super::{par_map, relative_name};
use crate::html::pct;
use crate::imagestats::colour::{hsv, Lab};
use crate::imagestats::composition::{self, Composition};
use crate::imagestats::hue::{self, HueBin};
use crate::imagestats::{kmeans, thumbnail};
use crate::train::buckets::{self, BucketSpec, Placement};
use clusters::{Blend, Cluster, HUE_BINS};
use std::path::{Path, PathBuf};
use vocabulary::Vocabulary;

/// Thumbnail size for the analysis: colours and composition do not need more.
const THUMB: u32 = 96;
/// Pixels per image that enter the k-means (a stride over the thumbnail).
const SAMPLES_PER_IMAGE: usize = 600;
/// Total k-means points, so 1,000 photos cluster as fast as 100.
const MAX_SAMPLES: usize = 60_000;
/// The longer side of a photo's thumbnail in the HTML page.
const THUMB_PX: u32 = 120;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("none of the {0} images could be read: run `hfsky dataset check` to see why")]
    NothingReadable(usize),
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub images: usize,
    pub unreadable: Vec<String>,
    pub clusters: Vec<Cluster>,
    pub blends: Vec<Blend>,
    pub hue_histogram: Vec<HueBin>,
    pub composition: CompositionSummary,
    pub vocabulary: Vocabulary,
    /// The resolution the buckets are made for.
    pub resolution: u32,
    /// The buckets photos fall in, the most photos first.
    pub buckets: Vec<ReportBucket>,
    /// (photo, why) for photos too small for any bucket: training skips them.
    pub too_small: Vec<(String, String)>,
    pub findings: Vec<String>,
    /// Photo name → its training crop (centred) as a `data:image/jpeg;base64,…` URI, for the
    /// HTML page only.
    #[serde(skip)]
    pub thumbnails: std::collections::BTreeMap<String, String>,
}

/// One aspect-ratio bucket and the photos in it.
#[derive(Debug, serde::Serialize)]
pub struct ReportBucket {
    pub width: u32,
    pub height: u32,
    pub count: usize,
    pub images: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct CompositionSummary {
    pub with_horizon: usize,
    pub sky_on_top: usize,
    pub mean_sky_fraction: f32,
    pub median_horizon: Option<f32>,
    /// Images whose horizon height (from the bottom) falls in each fifth: 0-20%, ..., 80-100%.
    pub horizon_histogram: [usize; 5],
    pub per_image: Vec<(String, Composition)>,
}

struct ImageData {
    samples: Vec<Lab>,
    hues: [u64; HUE_BINS],
    composition: Composition,
    /// The photo's bucket (w, h), or why it has none.
    bucket: Result<(u32, u32), String>,
    thumbnail: Option<String>,
}

/// The centred training crop of `img` at `p`, cut from the original pixels (the crop's rectangle
/// scaled back, so a large photo is not resized whole), shrunk to a thumbnail, as a JPEG data URI.
fn crop_thumbnail(img: &image::RgbImage, p: &Placement) -> String {
    use base64::Engine;
    let (w, h) = img.dimensions();
    let (sx, sy) = (p.resized.0 as f64 / w as f64, p.resized.1 as f64 / h as f64);
    let (top, left) = buckets::centre(p);
    let (x, y) = ((left as f64 / sx) as u32, (top as f64 / sy) as u32);
    let cw = ((p.bucket.0 as f64 / sx).round() as u32).clamp(1, w - x);
    let ch = ((p.bucket.1 as f64 / sy).round() as u32).clamp(1, h - y);
    let crop = image::imageops::crop_imm(img, x, y, cw, ch).to_image();
    let thumb = thumbnail(&crop, THUMB_PX);
    let mut jpeg = Vec::new();
    let encoded = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80).encode_image(&thumb);
    match encoded {
        Ok(()) => format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&jpeg)),
        Err(_) => String::new(),
    }
}

fn analyse(path: &Path, spec: &BucketSpec, table: &[(u32, u32)]) -> Option<ImageData> {
    let img = load_rgb(path).ok()?;
    let (w, h) = img.rgb.dimensions();
    let placement = spec.place(table, w, h);
    let thumbnail_uri = placement.as_ref().ok().map(|p| crop_thumbnail(&img.rgb, p)).filter(|t| !t.is_empty());
    let thumb = thumbnail(&img.rgb, THUMB);
    let px: Vec<[u8; 3]> = thumb.pixels().map(|p| p.0).collect();
    let stride = (px.len() / SAMPLES_PER_IMAGE).max(1);
    let samples = px.iter().step_by(stride).map(|&p| Lab::from_rgb(p)).collect();
    let mut hues = [0u64; HUE_BINS];
    for &p in &px {
        let (h, s, v) = hsv(p);
        if s >= 0.25 && v >= 0.2 {
            hues[hue::bin(h, HUE_BINS)] += 1;
        }
    }
    Some(ImageData { samples, hues, composition: composition::composition(&thumb), bucket: placement.map(|p| p.bucket), thumbnail: thumbnail_uri })
}

/// The report on `images` (in `dir`), buckets as training at `spec` makes them.
pub fn build(dir: &Path, images: &[PathBuf], captions: &[Option<String>], spec: &BucketSpec) -> Result<Report, ReportError> {
    let table = spec.resolutions();
    let data = par_map(images, |p| analyse(p, spec, &table));
    let names: Vec<String> = images.iter().map(|p| relative_name(dir, p)).collect();
    let unreadable: Vec<String> = names.iter().zip(&data).filter(|(_, d)| d.is_none()).map(|(n, _)| n.clone()).collect();
    let ok: Vec<(usize, &ImageData)> = data.iter().enumerate().filter_map(|(i, d)| d.as_ref().map(|d| (i, d))).collect();
    if ok.is_empty() {
        return Err(ReportError::NothingReadable(images.len()));
    }

    let all: Vec<Lab> = ok.iter().flat_map(|(_, d)| d.samples.iter().copied()).collect();
    let stride = (all.len() / MAX_SAMPLES).max(1);
    let points: Vec<Lab> = all.iter().step_by(stride).copied().collect();
    let centres = kmeans::kmeans(&points, clusters::K);
    // Per image: the share of its samples nearest each centre.
    let coverage: Vec<Vec<f32>> = ok
        .iter()
        .map(|(_, d)| {
            let mut c = vec![0f32; centres.len()];
            for s in &d.samples {
                c[kmeans::nearest(&centres, *s)] += 1.0;
            }
            let n = d.samples.len().max(1) as f32;
            c.iter().map(|x| x / n).collect()
        })
        .collect();
    let n_ok = ok.len() as f32;
    let cluster_list: Vec<Cluster> = centres
        .iter()
        .enumerate()
        .map(|(k, &lab)| {
            let behind: Vec<String> =
                ok.iter().zip(&coverage).filter(|(_, c)| c[k] >= clusters::COVERAGE).map(|((i, _), _)| names[*i].clone()).collect();
            Cluster {
                name: lab.name(),
                hex: lab.hex(),
                lab,
                pixel_share: coverage.iter().map(|c| c[k]).sum::<f32>() / n_ok,
                image_share: behind.len() as f32 / n_ok,
                images: behind,
            }
        })
        .collect();
    let blends = clusters::predict_blends(&cluster_list, &coverage);
    let mut hue_counts = [0u64; HUE_BINS];
    for (_, d) in &ok {
        for (t, h) in hue_counts.iter_mut().zip(d.hues) {
            *t += h;
        }
    }

    let per_image: Vec<(String, Composition)> = ok.iter().map(|(i, d)| (names[*i].clone(), d.composition)).collect();
    let mut horizons: Vec<f32> = per_image.iter().filter_map(|(_, c)| c.horizon).collect();
    horizons.sort_by(f32::total_cmp);
    let mut horizon_histogram = [0usize; 5];
    for h in &horizons {
        horizon_histogram[((h * 5.0) as usize).min(4)] += 1;
    }
    let comp = CompositionSummary {
        with_horizon: horizons.len(),
        sky_on_top: per_image.iter().filter(|(_, c)| c.horizon.is_some() && c.sky_on_top).count(),
        mean_sky_fraction: per_image.iter().map(|(_, c)| c.sky_fraction).sum::<f32>() / n_ok,
        median_horizon: horizons.get(horizons.len() / 2).copied(),
        horizon_histogram,
        per_image,
    };

    // Each image's dominant colourful cluster, for caption coverage.
    let mut dominant: Vec<Option<&'static str>> = vec![None; images.len()];
    for ((i, _), cov) in ok.iter().zip(&coverage) {
        dominant[*i] = cov
            .iter()
            .enumerate()
            .filter(|(k, &c)| centres[*k].chroma() >= Lab::GREY_CHROMA && c >= clusters::COVERAGE)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, _)| centres[k].name());
    }
    let vocabulary = vocabulary::vocabulary(captions, &dominant);
    let mut groups = std::collections::BTreeMap::<(u32, u32), Vec<String>>::new();
    let mut too_small = Vec::new();
    let mut thumbnails = std::collections::BTreeMap::new();
    for (i, d) in &ok {
        match &d.bucket {
            Ok(b) => groups.entry(*b).or_default().push(names[*i].clone()),
            Err(why) => too_small.push((names[*i].clone(), why.clone())),
        }
        if let Some(t) = &d.thumbnail {
            thumbnails.insert(names[*i].clone(), t.clone());
        }
    }
    let mut bucket_list: Vec<ReportBucket> =
        groups.into_iter().map(|((width, height), images)| ReportBucket { width, height, count: images.len(), images }).collect();
    bucket_list.sort_by(|a, b| b.count.cmp(&a.count).then((a.width, a.height).cmp(&(b.width, b.height))));
    let mut report = Report {
        images: images.len(),
        unreadable,
        clusters: cluster_list,
        blends,
        hue_histogram: hue::hue_bins(&hue_counts.map(|c| c as f64)),
        composition: comp,
        vocabulary,
        resolution: spec.resolution,
        buckets: bucket_list,
        too_small,
        findings: Vec::new(),
        thumbnails,
    };
    report.findings = findings(&report);
    Ok(report)
}

/// The plain-language conclusions, most important first.
fn findings(r: &Report) -> Vec<String> {
    let mut out: Vec<String> = r.blends.iter().map(|b| format!("colours the model may blend: {}", b.text)).collect();
    let c = &r.composition;
    let readable = c.per_image.len();
    if c.with_horizon > 0 {
        let low = c.horizon_histogram[0] + c.horizon_histogram[1];
        let all_top = c.sky_on_top == c.with_horizon;
        let who = if all_top { "every photo with a horizon".to_string() } else { format!("{} of {} photos", c.sky_on_top, c.with_horizon) };
        if c.sky_on_top * 10 >= c.with_horizon * 8 && low * 10 >= c.with_horizon * 7 {
            out.push(format!(
                "{who} has the sky on top and {} put the horizon in the lower 40% (sky fills {} on average): expect scenes seen from below",
                if low == c.with_horizon { "all".to_string() } else { format!("{low}") },
                pct(c.mean_sky_fraction)
            ));
        } else if c.sky_on_top * 10 >= c.with_horizon * 8 {
            out.push(format!("{who} has the sky on top (sky fills {} on average)", pct(c.mean_sky_fraction)));
        }
        if c.horizon_histogram[3] + c.horizon_histogram[4] == 0 && c.with_horizon >= 5 {
            out.push("no photo puts the horizon in the upper 40%: ground-dominated views are missing".into());
        }
    }
    if readable > c.with_horizon {
        out.push(format!("{} photo(s) show no clear horizon (sky only, or no strong split)", readable - c.with_horizon));
    }
    let v = &r.vocabulary;
    if v.captioned == 0 {
        out.push("no captions: every photo trains with the instance prompt alone, so nothing in the text separates sunsets from storms".into());
    } else {
        if v.captioned < v.images {
            out.push(format!("{} of {} photos have no caption", v.images - v.captioned, v.images));
        }
        for cc in &v.colour_coverage {
            if cc.images * 10 >= v.images && cc.captions_naming_it * 2 < cc.images {
                out.push(format!(
                    "{} dominates {} photo(s) but only {} caption(s) say \"{}\": name it so prompts can ask for it",
                    cc.colour, cc.images, cc.captions_naming_it, cc.colour
                ));
            }
        }
    }
    if !r.too_small.is_empty() {
        let names: Vec<&str> = r.too_small.iter().map(|(n, _)| n.as_str()).collect();
        out.push(format!(
            "{} photo(s) are too small for any bucket at {} px and training skips them: {}",
            names.len(),
            r.resolution,
            names.join(", ")
        ));
    }
    if !r.unreadable.is_empty() {
        out.push(format!("{} image(s) could not be read and are not counted: run `hfsky dataset check`", r.unreadable.len()));
    }
    out
}

impl Report {
    pub fn summary_lines(&self) -> Vec<String> {
        let mut out = vec![format!("{} images", self.images)];
        out.push(format!(
            "colour clusters: {}",
            self.clusters.iter().map(|c| format!("{} {} ({} of images)", c.name, c.hex, pct(c.image_share))).collect::<Vec<_>>().join(", ")
        ));
        out.push(format!(
            "buckets at {} px: {}",
            self.resolution,
            self.buckets.iter().map(|b| format!("{}×{} ({})", b.width, b.height, b.count)).collect::<Vec<_>>().join(", ")
        ));
        out.extend(self.findings.iter().map(|f| format!("- {f}")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;
    use image::{Rgb, RgbImage};

    /// A sky of one colour over dark ground, with a little grain.
    fn sky(rgb: [u8; 3], horizon_from_top: f32, seed: u32) -> RgbImage {
        let g = gen::photo(160, 120, seed);
        RgbImage::from_fn(160, 120, |x, y| {
            let n = g.get_pixel(x, y).0[0] as i32 / 32 - 4;
            if (y as f32) < 120.0 * horizon_from_top {
                Rgb(rgb.map(|c| (c as i32 + n).clamp(0, 255) as u8))
            } else {
                Rgb([25, 22, 20])
            }
        })
    }

    #[test]
    fn orange_sunsets_and_purple_storms_blend_to_pink_seen_from_below() {
        let t = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        for i in 0..10 {
            let colour = if i < 6 { [245, 140, 40] } else { [110, 50, 150] };
            let p = t.path().join(format!("{i}.png"));
            std::fs::write(&p, gen::png(&sky(colour, 0.75, i))).unwrap();
            images.push(p);
        }
        let caps: Vec<Option<String>> = (0..10).map(|i| Some(if i < 6 { "SKY sunset".to_string() } else { "SKY storm".into() })).collect();
        let r = build(t.path(), &images, &caps, &spec(512)).unwrap();
        let orange = r.clusters.iter().find(|c| c.name == "orange").expect("orange cluster");
        assert!((orange.image_share - 0.6).abs() < 1e-6, "{:?}", r.clusters);
        assert!(r.blends.iter().any(|b| b.text == "orange (60% of images) + purple (40%) → pink"), "{:?}", r.blends);
        assert!(
            r.findings.iter().any(|f| f.contains("every photo with a horizon has the sky on top") && f.contains("seen from below")),
            "{:?}",
            r.findings
        );
        assert!(r.findings.iter().any(|f| f.starts_with("orange dominates 6 photo(s) but only 0 caption(s)")), "{:?}", r.findings);
        assert_eq!(r.vocabulary.in_every_caption, ["sky"]);
        let html = html::render(&r).unwrap();
        assert!(html.contains("→ pink") && html.contains("seen from below"));
    }

    fn spec(res: usize) -> BucketSpec {
        BucketSpec::new(res, None, None, 64, 8).unwrap()
    }

    #[test]
    fn photos_are_grouped_in_their_training_buckets_with_cropped_thumbnails() {
        let t = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        // At 256 px (buckets 128…512): 3:2 → 320×192 (kohya's nearest), portrait 2:3 → 192×320,
        // a square → 256×256, and 100×60 too small (its own-size bucket 64×0 is under 128).
        for (name, w, h) in [("a.png", 600, 400), ("b.png", 450, 300), ("c.png", 400, 600), ("d.png", 300, 300), ("e.png", 100, 60)] {
            let p = t.path().join(name);
            std::fs::write(&p, gen::png(&gen::photo(w, h, 1))).unwrap();
            images.push(p);
        }
        let r = build(t.path(), &images, &vec![None; images.len()], &spec(256)).unwrap();
        let got: Vec<(u32, u32, Vec<&str>)> = r.buckets.iter().map(|b| (b.width, b.height, b.images.iter().map(String::as_str).collect())).collect();
        assert_eq!(got, [(320, 192, vec!["a.png", "b.png"]), (192, 320, vec!["c.png"]), (256, 256, vec!["d.png"])]);
        assert_eq!(r.too_small.len(), 1);
        assert_eq!(r.too_small[0].0, "e.png");
        assert!(r.findings.iter().any(|f| f.contains("too small for any bucket at 256 px") && f.ends_with("e.png")), "{:?}", r.findings);
        assert!(r.summary_lines().iter().any(|l| l == "buckets at 256 px: 320×192 (2), 192×320 (1), 256×256 (1)"));
        // The thumbnail is the centred crop, in the bucket's shape (320×192 → 120×72).
        let uri = &r.thumbnails["a.png"];
        use base64::Engine;
        let jpeg = base64::engine::general_purpose::STANDARD.decode(uri.strip_prefix("data:image/jpeg;base64,").unwrap()).unwrap();
        let thumb = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (120, 72));
        assert!(!r.thumbnails.contains_key("e.png"));
        let html = html::render(&r).unwrap();
        assert!(html.contains("320×192") && html.contains("data:image/jpeg;base64,"), "buckets and thumbnails in the page");
    }

    #[test]
    fn finds_the_horizon_of_a_synthetic_sky() {
        // The generator puts the horizon at 60-75% of the height from the top.
        for seed in 0..5 {
            let c = composition::composition(&gen::photo(128, 96, seed));
            let horizon = c.horizon.expect("a horizon");
            let expected = 1.0 - (0.6 + 0.15 * (seed % 5) as f32 / 5.0);
            assert!((horizon - expected).abs() < 0.06, "seed {seed}: {horizon} vs {expected}");
            assert!(c.sky_on_top && (c.sky_fraction - (1.0 - expected)).abs() < 0.06);
        }
        let flat = composition::composition(&RgbImage::from_pixel(64, 48, image::Rgb([100, 140, 220])));
        assert_eq!(flat.horizon, None);
    }

    #[test]
    fn the_bundled_sky_photos_report() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sky-photos");
        let images = crate::dataset::list_images(&dir).unwrap();
        let r = build(&dir, &images, &vec![None; images.len()], &spec(512)).unwrap();
        assert_eq!(r.images, 11);
        assert!(r.unreadable.is_empty());
        assert!(!r.clusters.is_empty() && r.clusters.len() <= clusters::K);
        let total: f32 = r.clusters.iter().map(|c| c.pixel_share).sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
        assert!(r.composition.with_horizon >= 8, "{:?}", r.composition);
        assert!(r.findings.iter().any(|f| f.starts_with("no captions")));
    }
}
