//! What a render looks like in numbers, per image and per side (one set of settings over N
//! seeds); how far apart two sides are; and the changes between them, in words.
//!
//! Everything is measured on a thumbnail of at most [`THUMB`] pixels: colour statistics and
//! composition do not need more, and 1024² renders measure in milliseconds.

use crate::html::pct;
use crate::imagestats::colour::{hsv, Family, Lab};
use crate::imagestats::hue;
pub use crate::imagestats::hue::hue_emd;
use crate::imagestats::{composition, kmeans, thumbnail};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longer side of the thumbnail images are measured on.
pub const THUMB: u32 = 128;
/// Hue histogram bins (10° each, bin 0 starting at HSV red).
pub const HUE_BINS: usize = 36;
/// Colours in an image's and a side's palette (fewer when the picture has fewer).
pub const PALETTE_SIZE: usize = 5;
/// Horizontal bands of the vertical luminance profile.
pub const BANDS: usize = 16;
/// Pixels whose RGB channels differ by less than this (HSV chroma, 0..1; 13 of 255) are grey
/// to the hue histogram: JPEG noise on a grey sky must not paint it with hues.
pub const MIN_HUE_CHROMA: f32 = 0.05;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("the image is empty ({width}x{height} pixels): there is nothing to measure")]
    EmptyImage { width: u32, height: u32 },
    #[error("no images to aggregate: a side needs at least one rendered image")]
    NoImages,
}

/// One colour of a palette and the share of pixels nearest to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swatch {
    pub lab: Lab,
    pub hex: String,
    pub family: Family,
    pub share: f64,
}

/// The statistics of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageStats {
    /// Size of the image measured (not of its thumbnail).
    pub width: u32,
    pub height: u32,
    /// Mean colour in CIELAB.
    pub mean_lab: Lab,
    /// Mean CIELAB chroma (how colourful, 0 for greys).
    pub chroma: f64,
    /// Mean HSV saturation and value (brightness), 0..1.
    pub saturation: f64,
    pub brightness: f64,
    /// [`HUE_BINS`] bins of HSV hue, each pixel weighted by its HSV chroma (max − min channel) so
    /// greys add nothing; sums to 1, or all zeros for an image without colour.
    pub hue_histogram: Vec<f64>,
    /// Up to [`PALETTE_SIZE`] dominant colours (k-means in CIELAB, deterministic), largest first.
    pub palette: Vec<Swatch>,
    /// Share of pixels in each colour family (every family present; thresholds in
    /// [`Lab::family`]: grey/black/white = chroma below 12).
    pub families: BTreeMap<Family, f64>,
    /// Mean L* (0..100) of [`BANDS`] horizontal bands, top of the image first.
    pub luminance_profile: Vec<f64>,
    /// Horizon height above the bottom edge (0..1), `None` when no clear split exists.
    pub horizon: Option<f64>,
    /// Share of the picture on the sky side of the horizon (1 without a horizon).
    pub sky_fraction: f64,
}

impl ImageStats {
    pub fn measure(image: &RgbImage) -> Result<ImageStats, StatsError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(StatsError::EmptyImage { width, height });
        }
        let thumb = thumbnail(image, THUMB);
        let n = f64::from(thumb.width() * thumb.height());
        let mut labs = Vec::with_capacity(n as usize);
        let (mut l, mut a, mut b, mut chroma, mut sat, mut val) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
        let mut hues = vec![0f64; HUE_BINS];
        let mut counts: BTreeMap<Family, usize> = Family::ALL.iter().map(|&f| (f, 0)).collect();
        for p in thumb.pixels() {
            let lab = Lab::from_rgb(p.0);
            (l, a, b, chroma) = (l + f64::from(lab.l), a + f64::from(lab.a), b + f64::from(lab.b), chroma + f64::from(lab.chroma()));
            let (h, s, v) = hsv(p.0);
            (sat, val) = (sat + f64::from(s), val + f64::from(v));
            if s * v >= MIN_HUE_CHROMA {
                hues[hue::bin(h, HUE_BINS)] += f64::from(s * v);
            }
            *counts.entry(lab.family()).or_default() += 1;
            labs.push(lab);
        }
        let weighted: Vec<(Lab, f64)> = labs.iter().map(|&p| (p, 1.0)).collect();
        let palette = palette(&weighted);
        let comp = composition::composition(&thumb);
        Ok(ImageStats {
            width,
            height,
            mean_lab: Lab { l: (l / n) as f32, a: (a / n) as f32, b: (b / n) as f32 },
            chroma: chroma / n,
            saturation: sat / n,
            brightness: val / n,
            hue_histogram: normalise(hues),
            palette,
            families: counts.into_iter().map(|(f, c)| (f, c as f64 / n)).collect(),
            luminance_profile: composition::luminance_profile(&thumb, BANDS).into_iter().map(f64::from).collect(),
            horizon: comp.horizon.map(f64::from),
            sky_fraction: f64::from(comp.sky_fraction),
        })
    }
}

fn normalise(mut h: Vec<f64>) -> Vec<f64> {
    let total: f64 = h.iter().sum();
    if total > 0.0 {
        h.iter_mut().for_each(|x| *x /= total);
    }
    h
}

/// K-means over weighted colours, as swatches whose shares sum to 1.
fn palette(points: &[(Lab, f64)]) -> Vec<Swatch> {
    let centres = kmeans::kmeans_weighted(points, PALETTE_SIZE);
    let total: f64 = centres.iter().map(|c| c.1).sum();
    centres.into_iter().map(|(lab, w)| Swatch { lab, hex: lab.hex(), family: lab.family(), share: w / total.max(f64::MIN_POSITIVE) }).collect()
}

/// Mean and spread (sample standard deviation, 0 for a single value) of a feature over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return Spread { mean: 0.0, sd: 0.0 };
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt() } else { 0.0 };
        Spread { mean, sd }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabSpread {
    pub l: Spread,
    pub a: Spread,
    pub b: Spread,
}

/// The statistics of one side (one set of settings over several seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideStats {
    /// Mean colour in CIELAB: per channel, mean and spread of the images' means.
    pub mean_lab: LabSpread,
    pub chroma: Spread,
    pub saturation: Spread,
    pub brightness: Spread,
    /// The images' hue histograms averaged (images without colour left out); sums to 1, or all
    /// zeros when no image has colour.
    pub hue_histogram: Vec<f64>,
    /// K-means over the images' pooled palettes, weighted by share; shares sum to 1.
    pub palette: Vec<Swatch>,
    pub families: BTreeMap<Family, Spread>,
    /// Per band (top first): mean and spread of L*.
    pub luminance_profile: Vec<Spread>,
    /// Over the images where a horizon was found (`None` when in none).
    pub horizon: Option<Spread>,
    /// How many images have a horizon.
    pub with_horizon: usize,
    pub sky_fraction: Spread,
    /// The per-image statistics, in the order given (seed order).
    pub images: Vec<ImageStats>,
}

impl SideStats {
    pub fn aggregate(images: &[ImageStats]) -> Result<SideStats, StatsError> {
        if images.is_empty() {
            return Err(StatsError::NoImages);
        }
        let over = |f: &dyn Fn(&ImageStats) -> f64| Spread::of(images.iter().map(f));
        let coloured: Vec<&ImageStats> = images.iter().filter(|i| i.hue_histogram.iter().sum::<f64>() > 0.0).collect();
        let hue_histogram = normalise((0..HUE_BINS).map(|k| coloured.iter().map(|i| i.hue_histogram.get(k).copied().unwrap_or(0.0)).sum()).collect());
        let n = images.len() as f64;
        let pooled: Vec<(Lab, f64)> = images.iter().flat_map(|i| i.palette.iter().map(|s| (s.lab, s.share / n))).collect();
        let horizons: Vec<f64> = images.iter().filter_map(|i| i.horizon).collect();
        Ok(SideStats {
            mean_lab: LabSpread {
                l: over(&|i| f64::from(i.mean_lab.l)),
                a: over(&|i| f64::from(i.mean_lab.a)),
                b: over(&|i| f64::from(i.mean_lab.b)),
            },
            chroma: over(&|i| i.chroma),
            saturation: over(&|i| i.saturation),
            brightness: over(&|i| i.brightness),
            hue_histogram,
            palette: palette(&pooled),
            families: Family::ALL.iter().map(|&f| (f, over(&|i| i.families.get(&f).copied().unwrap_or(0.0)))).collect(),
            luminance_profile: (0..BANDS).map(|k| over(&|i| i.luminance_profile.get(k).copied().unwrap_or(0.0))).collect(),
            with_horizon: horizons.len(),
            horizon: (!horizons.is_empty()).then(|| Spread::of(horizons)),
            sky_fraction: over(&|i| i.sky_fraction),
            images: images.to_vec(),
        })
    }

    /// The side's mean colour (mean of the images' mean Lab).
    pub fn mean_colour(&self) -> Lab {
        Lab { l: self.mean_lab.l.mean as f32, a: self.mean_lab.a.mean as f32, b: self.mean_lab.b.mean as f32 }
    }

    fn family(&self, f: Family) -> Spread {
        self.families.get(&f).copied().unwrap_or(Spread { mean: 0.0, sd: 0.0 })
    }
}

/// The parts of [`distance`], each divided by its largest possible value so that every term
/// lies in 0..1 whatever its unit, and none dominates by units alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistanceTerms {
    /// ΔE (CIE76) between the sides' mean colours / 100 (black against white).
    pub mean_colour: f64,
    /// Circular EMD between the hue histograms / 180° (all colour at opposite hues).
    pub hue: f64,
    /// L1 distance between the family shares / 2 (no family in common).
    pub families: f64,
    /// Mean |ΔL*| over the luminance profile's bands / 100.
    pub luminance_profile: f64,
    /// |Δ mean HSV saturation| (0..1).
    pub saturation: f64,
    /// |Δ mean HSV brightness| (0..1).
    pub brightness: f64,
}

impl DistanceTerms {
    /// The mean of the six terms: 0 for identical sides, about 1 at the extremes.
    pub fn total(&self) -> f64 {
        (self.mean_colour + self.hue + self.families + self.luminance_profile + self.saturation + self.brightness) / 6.0
    }
}

/// How different two sides look, from their means over seeds (see [`DistanceTerms`]).
/// Symmetric, 0 for identical sides.
pub fn distance(a: &SideStats, b: &SideStats) -> f64 {
    distance_terms(a, b).total()
}

pub fn distance_terms(a: &SideStats, b: &SideStats) -> DistanceTerms {
    let bands = a.luminance_profile.len().min(b.luminance_profile.len()).max(1);
    DistanceTerms {
        mean_colour: f64::from(a.mean_colour().dist2(b.mean_colour()).sqrt()) / 100.0,
        hue: side_hue_emd(a, b) / 180.0,
        families: Family::ALL.iter().map(|&f| (a.family(f).mean - b.family(f).mean).abs()).sum::<f64>() / 2.0,
        luminance_profile: a.luminance_profile.iter().zip(&b.luminance_profile).map(|(x, y)| (x.mean - y.mean).abs()).sum::<f64>()
            / bands as f64
            / 100.0,
        saturation: (a.saturation.mean - b.saturation.mean).abs(),
        brightness: (a.brightness.mean - b.brightness.mean).abs(),
    }
}

/// Circular earth mover's distance between two sides' hue histograms, in degrees (0..180; see
/// [`hue_emd`], which takes any two histograms of equal length).
pub fn side_hue_emd(a: &SideStats, b: &SideStats) -> f64 {
    hue_emd(&a.hue_histogram, &b.hue_histogram)
}

/// How far two seeds of the same side lie apart on average: the mean [`distance`] between every
/// pair of its images (each as a side of one). `None` with fewer than two images. A gap between
/// two sides' means that is not clearly above this is within seed variation (conservatively:
/// means over N seeds vary less than single images do).
pub fn noise_floor(side: &SideStats) -> Option<f64> {
    let singles: Vec<SideStats> = side.images.iter().filter_map(|i| SideStats::aggregate(std::slice::from_ref(i)).ok()).collect();
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for (k, x) in singles.iter().enumerate() {
        for y in &singles[k + 1..] {
            sum += distance(x, y);
            pairs += 1;
        }
    }
    (pairs > 0).then(|| sum / pairs as f64)
}

/// One difference between two sides, in numbers and in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureChange {
    /// `mean_colour`, `hue`, `family.<name>` (e.g. `family.green`), `brightness`, `saturation`,
    /// `horizon`, `sky_fraction` or `luminance_profile`.
    pub feature: String,
    /// The side means, for scalar features (shares and HSV values 0..1, horizon height 0..1).
    pub from: Option<f64>,
    pub to: Option<f64>,
    /// The change in the feature's own unit: share or 0..1 value (signed, to − from), ΔE,
    /// degrees of hue EMD, or mean |ΔL*|.
    pub amount: f64,
    /// The change on the scale of [`DistanceTerms`] (0..1): what the list is ranked by.
    pub size: f64,
    /// |to − from| in pooled seed standard deviations, for scalar features with any spread:
    /// under ~2 the change is within seed variation.
    pub z: Option<f64>,
    /// e.g. "green share 3% → 31%", "mean colour ΔE 18.2 (orange → green)".
    pub message: String,
}

/// The changes from one side to another, largest first (ties in feature order); unchanged
/// features are left out.
pub fn feature_changes(from: &SideStats, to: &SideStats) -> Vec<FeatureChange> {
    let mut out = Vec::new();
    let scalar = |feature: String, x: Spread, y: Spread, message: String| {
        let pooled = ((x.sd * x.sd + y.sd * y.sd) / 2.0).sqrt();
        let d = y.mean - x.mean;
        FeatureChange {
            feature,
            from: Some(x.mean),
            to: Some(y.mean),
            amount: d,
            size: d.abs(),
            z: (pooled > 1e-12).then(|| d.abs() / pooled),
            message,
        }
    };
    let (ca, cb) = (from.mean_colour(), to.mean_colour());
    let de = f64::from(ca.dist2(cb).sqrt());
    let names = if ca.family() == cb.family() { format!("both {}", ca.name()) } else { format!("{} → {}", ca.name(), cb.name()) };
    out.push(FeatureChange {
        feature: "mean_colour".into(),
        from: None,
        to: None,
        amount: de,
        size: de / 100.0,
        z: None,
        message: format!("mean colour ΔE {de:.1} ({names})"),
    });

    let emd = side_hue_emd(from, to);
    let (pa, pb) = (peak_hue(&from.hue_histogram), peak_hue(&to.hue_histogram));
    let peaks = if pa == pb { format!("peak {pa} on both") } else { format!("peak {pa} → {pb}") };
    out.push(FeatureChange {
        feature: "hue".into(),
        from: None,
        to: None,
        amount: emd,
        size: emd / 180.0,
        z: None,
        message: format!("hue histogram shift {emd:.0}° ({peaks})"),
    });

    for f in Family::ALL {
        let (x, y) = (from.family(f), to.family(f));
        out.push(scalar(format!("family.{}", f.name()), x, y, format!("{} share {} → {}", f.name(), pct(x.mean), pct(y.mean))));
    }
    out.push(scalar(
        "brightness".into(),
        from.brightness,
        to.brightness,
        format!("mean brightness {:.2} → {:.2}", from.brightness.mean, to.brightness.mean),
    ));
    out.push(scalar(
        "saturation".into(),
        from.saturation,
        to.saturation,
        format!("mean saturation {:.2} → {:.2}", from.saturation.mean, to.saturation.mean),
    ));
    match (from.horizon, to.horizon) {
        (Some(x), Some(y)) => out.push(scalar("horizon".into(), x, y, format!("horizon height {:.2} → {:.2}", x.mean, y.mean))),
        // Without a horizon on one side, how much of the picture is sky still compares.
        _ => out.push(scalar(
            "sky_fraction".into(),
            from.sky_fraction,
            to.sky_fraction,
            format!(
                "sky fraction {} → {} (horizon found in {} of {} → {} of {} images)",
                pct(from.sky_fraction.mean),
                pct(to.sky_fraction.mean),
                from.with_horizon,
                from.images.len(),
                to.with_horizon,
                to.images.len()
            ),
        )),
    }

    let diffs: Vec<(f64, f64, f64)> =
        from.luminance_profile.iter().zip(&to.luminance_profile).map(|(x, y)| ((y.mean - x.mean).abs(), x.mean, y.mean)).collect();
    if !diffs.is_empty() {
        let mean = diffs.iter().map(|d| d.0).sum::<f64>() / diffs.len() as f64;
        let (k, &(_, x, y)) = diffs.iter().enumerate().max_by(|a, b| a.1 .0.total_cmp(&b.1 .0)).expect("non-empty");
        let place = ["top", "upper middle", "lower middle", "bottom"][(k * 4 / diffs.len()).min(3)];
        out.push(FeatureChange {
            feature: "luminance_profile".into(),
            from: None,
            to: None,
            amount: mean,
            size: mean / 100.0,
            z: None,
            message: format!("vertical luminance differs by {mean:.1} L* on average, most at the {place} (L* {x:.0} → {y:.0})"),
        });
    }
    out.retain(|c| c.size > 0.0);
    // Stable sort: equal sizes keep the order above.
    out.sort_by(|a, b| b.size.total_cmp(&a.size));
    out
}

/// The family name of the fullest hue bin, or "no colour".
fn peak_hue(histogram: &[f64]) -> &'static str {
    match histogram.iter().enumerate().filter(|(_, &x)| x > 0.0).max_by(|a, b| a.1.total_cmp(b.1)) {
        Some((k, _)) => Lab::from_rgb(hue::hsv_to_rgb(hue::centre(k, histogram.len()), 0.75, 0.9)).name(),
        None => "no colour",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn solid(rgb: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(64, 48, Rgb(rgb))
    }

    /// An orange sky over dark ground, the horizon `horizon_from_top` of the way down, with a
    /// little texture so it is not flat. Thumbnail-sized, so areas measure exactly.
    fn sunset(horizon_from_top: f32, seed: u32) -> RgbImage {
        RgbImage::from_fn(128, 96, |x, y| {
            let n = ((x * 7 + y * 13 + seed * 31) % 9) as i32 - 4;
            let base = if (y as f32) < 96.0 * horizon_from_top { [240, 140, 50] } else { [40, 32, 28] };
            Rgb(base.map(|c| (c + n).clamp(0, 255) as u8))
        })
    }

    /// `img` with its bottom `rows` rows painted green (a river coming up from the ground).
    fn green_stripe(img: &RgbImage, rows: u32) -> RgbImage {
        let h = img.height();
        RgbImage::from_fn(img.width(), h, |x, y| if y >= h - rows.min(h) { Rgb([40, 190, 60]) } else { *img.get_pixel(x, y) })
    }

    fn measure(img: &RgbImage) -> ImageStats {
        ImageStats::measure(img).unwrap()
    }

    fn side(images: &[RgbImage]) -> SideStats {
        SideStats::aggregate(&images.iter().map(measure).collect::<Vec<_>>()).unwrap()
    }

    fn share(s: &ImageStats, f: Family) -> f64 {
        s.families[&f]
    }

    #[test]
    fn solid_colours_fall_in_their_family() {
        let green = measure(&solid([30, 180, 40]));
        assert!((share(&green, Family::Green) - 1.0).abs() < 1e-9, "{:?}", green.families);
        let grey = measure(&solid([128, 128, 128]));
        assert!((share(&grey, Family::Grey) - 1.0).abs() < 1e-9, "{:?}", grey.families);
        assert!(grey.hue_histogram.iter().all(|&x| x == 0.0) && grey.saturation == 0.0, "greys have no hue");
        for (rgb, family) in [
            ([0xff, 0x8c, 0x00], Family::Orange),
            ([0x80, 0x00, 0x80], Family::Purple),
            ([0xff, 0xc0, 0xcb], Family::Pink),
            ([0x1e, 0x50, 0xdc], Family::Blue),
        ] {
            let s = measure(&solid(rgb));
            assert!((share(&s, family) - 1.0).abs() < 1e-9, "{rgb:02x?}: {:?}", s.families);
            assert_eq!(s.palette.len(), 1);
            assert_eq!(s.palette[0].family, family);
            assert!((s.palette[0].share - 1.0).abs() < 1e-9);
        }
        let total: f64 = green.families.values().sum();
        assert!((total - 1.0).abs() < 1e-9 && green.families.len() == Family::ALL.len());
    }

    #[test]
    fn hue_brightness_and_saturation_of_solid_colours() {
        let orange = measure(&solid([0xff, 0x8c, 0x00]));
        // HSV hue of #FF8C00 is 33°: bin 3 of 10° bins holds all the weight.
        assert!((orange.hue_histogram[3] - 1.0).abs() < 1e-9, "{:?}", orange.hue_histogram);
        assert!((orange.saturation - 1.0).abs() < 1e-6 && (orange.brightness - 1.0).abs() < 1e-6);
        let dim = measure(&solid([64, 32, 32]));
        assert!((dim.brightness - 64.0 / 255.0).abs() < 1e-6 && (dim.saturation - 0.5).abs() < 1e-6, "{dim:?}");
        let black = measure(&solid([0, 0, 0]));
        assert!(black.mean_lab.l.abs() < 0.01 && black.luminance_profile.iter().all(|&l| l.abs() < 0.01));
    }

    #[test]
    fn palette_shares_follow_the_areas() {
        let img = RgbImage::from_fn(100, 100, |x, _| Rgb(if x < 70 { [240, 140, 50] } else { [110, 50, 150] }));
        let s = measure(&img);
        assert_eq!(s.palette.len(), 2, "{:?}", s.palette);
        assert_eq!((s.palette[0].family, s.palette[1].family), (Family::Orange, Family::Purple));
        assert!((s.palette[0].share - 0.7).abs() < 0.02, "{:?}", s.palette);
        assert!(s.palette.iter().all(|p| p.hex.starts_with('#') && p.hex.len() == 7));
        // Deterministic: measuring again gives exactly the same numbers.
        assert_eq!(measure(&img), s);
    }

    #[test]
    fn composition_of_half_sky_half_ground() {
        let img = RgbImage::from_fn(200, 100, |_, y| Rgb(if y < 50 { [150, 190, 240] } else { [30, 35, 25] }));
        let s = measure(&img);
        let horizon = s.horizon.expect("a horizon");
        assert!((horizon - 0.5).abs() < 0.03 && (s.sky_fraction - 0.5).abs() < 0.03, "{s:?}");
        assert_eq!(s.luminance_profile.len(), BANDS);
        assert!(s.luminance_profile[0] > 70.0 && s.luminance_profile[BANDS - 1] < 20.0, "top first: {:?}", s.luminance_profile);
        assert_eq!((s.width, s.height), (200, 100));
    }

    #[test]
    fn empty_input_is_an_error_not_a_panic() {
        assert!(matches!(ImageStats::measure(&RgbImage::new(0, 10)), Err(StatsError::EmptyImage { width: 0, height: 10 })));
        assert!(matches!(SideStats::aggregate(&[]), Err(StatsError::NoImages)));
        let dot = measure(&RgbImage::from_pixel(1, 1, Rgb([200, 30, 30])));
        assert_eq!((dot.palette.len(), dot.horizon, dot.luminance_profile.len()), (1, None, BANDS));
    }

    #[test]
    fn aggregate_of_identical_images_has_no_spread() {
        let s = side(&[sunset(0.6, 1), sunset(0.6, 1), sunset(0.6, 1)]);
        assert_eq!(s.images.len(), 3);
        let one = &s.images[0];
        assert_eq!(s.brightness, Spread { mean: one.brightness, sd: 0.0 });
        assert!(s.families.values().chain(&s.luminance_profile).all(|x| x.sd == 0.0));
        assert!(s.horizon.unwrap().sd == 0.0 && s.mean_lab.l.sd == 0.0 && s.with_horizon == 3);
        for (x, y) in s.hue_histogram.iter().zip(&one.hue_histogram) {
            assert!((x - y).abs() < 1e-12);
        }
        let total: f64 = s.palette.iter().map(|p| p.share).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(s.palette[0].family, one.palette[0].family);
        assert_eq!(noise_floor(&s), Some(0.0));
    }

    #[test]
    fn aggregate_spread_and_side_palette_over_different_images() {
        let s = side(&[solid([30, 180, 40]), solid([30, 180, 40]), solid([0xff, 0x8c, 0x00])]);
        let g = s.families[&Family::Green];
        assert!((g.mean - 2.0 / 3.0).abs() < 1e-9 && (g.sd - (1.0f64 / 3.0).sqrt()).abs() < 1e-9, "{g:?}");
        assert_eq!(s.palette.iter().map(|p| p.family).collect::<Vec<_>>(), [Family::Green, Family::Orange]);
        assert!((s.palette[0].share - 2.0 / 3.0).abs() < 1e-9);
        // A grey image adds nothing to the side's hue histogram.
        let with_grey = side(&[solid([0xff, 0x8c, 0x00]), solid([128, 128, 128])]);
        assert!((with_grey.hue_histogram[3] - 1.0).abs() < 1e-9);
        assert_eq!(with_grey.with_horizon, 0);
        assert!(with_grey.horizon.is_none());
        let json = serde_json::to_value(&with_grey).unwrap();
        assert!(json["families"]["orange"]["mean"].as_f64().unwrap() > 0.49, "{json}");
        let back: SideStats = serde_json::from_value(json).unwrap();
        assert_eq!(back.families, with_grey.families);
    }

    #[test]
    fn distance_is_zero_for_the_same_side_symmetric_and_grows_towards_green() {
        let base = [sunset(0.6, 1), sunset(0.7, 2)];
        let a = side(&base);
        assert_eq!(distance(&a, &side(&base)), 0.0);
        let mut last = 0.0;
        for rows in [4, 16, 32, 48, 64, 80, 96] {
            let b = side(&[base[0].clone(), green_stripe(&base[1], rows)]);
            let d = distance(&a, &b);
            assert!((d - distance(&b, &a)).abs() < 1e-12, "symmetric");
            assert!(d > last, "{rows} green rows: {d} after {last} ({:?})", distance_terms(&a, &b));
            last = d;
        }
        // A sum of metrics, so the triangle inequality holds (ablation effects stay within 0..1
        // of the gap when an ablation lands between the sides).
        let (b, c) = (side(&[base[0].clone(), green_stripe(&base[1], 40)]), side(&[solid([40, 190, 60])]));
        assert!(distance(&a, &c) <= distance(&a, &b) + distance(&b, &c) + 1e-12);
        // Every term is on a 0..1 scale, so none dominates by its unit.
        let all_green = side(&[solid([40, 190, 60])]);
        let t = distance_terms(&side(&[solid([128, 128, 128])]), &all_green);
        for x in [t.mean_colour, t.hue, t.families, t.luminance_profile, t.saturation, t.brightness] {
            assert!((0.0..=1.0 + 1e-9).contains(&x), "{t:?}");
        }
    }

    #[test]
    fn distance_also_grows_as_a_picture_fades_to_green() {
        let img = sunset(0.6, 3);
        let a = side(std::slice::from_ref(&img));
        let mut last = 0.0;
        for t in [0.1f32, 0.3, 0.5, 0.7, 0.9] {
            let faded = RgbImage::from_fn(img.width(), img.height(), |x, y| {
                let p = img.get_pixel(x, y).0;
                Rgb([0, 1, 2].map(|c| (f32::from(p[c]) * (1.0 - t) + f32::from([40u8, 190, 60][c]) * t).round() as u8))
            });
            let d = distance(&a, &side(&[faded]));
            assert!(d > last, "fade {t}: {d} after {last}");
            last = d;
        }
    }

    #[test]
    fn noise_floor_is_the_mean_pairwise_seed_distance() {
        let imgs = [sunset(0.5, 1), sunset(0.6, 2), sunset(0.7, 3)];
        let s = side(&imgs);
        let single = |i: usize| side(std::slice::from_ref(&imgs[i]));
        let expected = (distance(&single(0), &single(1)) + distance(&single(0), &single(2)) + distance(&single(1), &single(2))) / 3.0;
        let floor = noise_floor(&s).unwrap();
        assert!(floor > 0.0 && (floor - expected).abs() < 1e-12, "{floor} vs {expected}");
        assert_eq!(noise_floor(&side(&imgs[..1])), None);
    }

    #[test]
    fn feature_changes_name_the_green_first() {
        let base = [sunset(0.6, 1), sunset(0.6, 2)];
        let local = side(&base);
        let hub = side(&[green_stripe(&base[0], 48), green_stripe(&base[1], 48)]);
        let changes = feature_changes(&local, &hub);
        let green = changes.iter().find(|c| c.feature == "family.green").expect("green changes");
        assert_eq!(green.message, "green share 0% → 50%");
        assert!((green.amount - 0.5).abs() < 1e-9 && green.from == Some(0.0));
        assert_eq!(changes[0].feature, "family.green", "{changes:#?}");
        for w in changes.windows(2) {
            assert!(w[0].size >= w[1].size, "ranked by size");
        }
        let colour = changes.iter().find(|c| c.feature == "mean_colour").unwrap();
        assert!(colour.message.starts_with("mean colour ΔE ") && colour.amount > 5.0, "{}", colour.message);
        let hue = changes.iter().find(|c| c.feature == "hue").unwrap();
        // The sky's orange still outweighs the river: HSV chroma 0.75 over 48 rows against 0.59.
        assert_eq!(hue.message, format!("hue histogram shift {:.0}° (peak orange on both)", hue.amount));
        assert!(hue.amount > 10.0, "{hue:?}");
        assert!(changes.iter().any(|c| c.feature == "luminance_profile" && c.message.contains("most at the bottom")), "{changes:#?}");
        // Reversed, the same changes with the signs flipped.
        let back = feature_changes(&hub, &local);
        let g = back.iter().find(|c| c.feature == "family.green").unwrap();
        assert_eq!(g.message, "green share 50% → 0%");
        assert!((g.amount + 0.5).abs() < 1e-9);
        assert!(feature_changes(&local, &local).is_empty());
    }

    #[test]
    fn feature_changes_report_brightness_horizon_and_seed_spread() {
        let dark = side(&[sunset(0.3, 1), sunset(0.35, 2)]);
        let bright = side(&[sunset(0.7, 1), sunset(0.75, 2)]);
        let changes = feature_changes(&dark, &bright);
        let horizon = changes.iter().find(|c| c.feature == "horizon").expect("horizon compared");
        assert!(horizon.message.starts_with("horizon height 0.6") && horizon.message.contains(" → 0.2"), "{}", horizon.message);
        assert!(horizon.z.unwrap() > 2.0, "well beyond the seeds' spread: {horizon:?}");
        let brightness = changes.iter().find(|c| c.feature == "brightness").unwrap();
        assert!(brightness.to > brightness.from && brightness.message.starts_with("mean brightness 0."), "{brightness:?}");
        // One side without any horizon: the sky fraction compares instead.
        let flat = side(&[solid([150, 190, 240])]);
        let c = feature_changes(&dark, &flat);
        assert!(c.iter().any(|c| c.feature == "sky_fraction" && c.message.contains("horizon found in 2 of 2 → 0 of 1 images")), "{c:#?}");
        assert_eq!(pct(0.004), "0.4%");
        assert_eq!(pct(0.31), "31%");
    }
}
