//! Where paired renders differ, pixel by pixel: for each seed both sides rendered from the same
//! noise, a heat map of |local − Hub| and, beside it, of |best ablation − Hub| (the local render
//! with the settings that closed most of the gap), so the report shows both how far apart the
//! images are and where the named cause brings them together.
//!
//! The difference of a pixel is the mean absolute difference of its R, G and B values, in [0, 1].
//! Every heat map uses one fixed scale, [`FULL_SCALE`], so maps of different seeds and ablations
//! compare by eye; colours follow matplotlib's "magma" ramp (black → purple → orange → pale
//! yellow), which stays ordered in lightness for readers with colour-vision deficiencies.

use super::run::{AblationResult, SideImage};
use image::{Rgb, RgbImage};
use serde::Serialize;
use std::path::Path;

/// A channel difference of this much (half the range) or more is drawn at the top of the ramp.
pub const FULL_SCALE: f64 = 0.5;

/// Five stops of matplotlib's magma colormap (t = 0, ¼, ½, ¾, 1), interpolated linearly.
const MAGMA: [[f64; 3]; 5] = [[0.0, 0.0, 4.0], [81.0, 18.0, 124.0], [183.0, 55.0, 121.0], [252.0, 137.0, 97.0], [252.0, 253.0, 191.0]];

/// One seed's images and heat maps (paths relative to the report's folder).
#[derive(Debug, Clone, Serialize)]
pub struct SeedDiff {
    pub seed: u64,
    pub hub: String,
    pub local: String,
    /// |local − Hub|, and its mean over every pixel and channel (0–1).
    pub local_heatmap: String,
    pub local_mean_abs: f64,
    pub ablation: Option<AblatedDiff>,
}

/// The best ablation's render of a seed against the Hub's.
#[derive(Debug, Clone, Serialize)]
pub struct AblatedDiff {
    pub change: String,
    pub image: String,
    pub heatmap: String,
    pub mean_abs: f64,
}

fn magma(t: f64) -> Rgb<u8> {
    let x = t.clamp(0.0, 1.0) * (MAGMA.len() - 1) as f64;
    let i = (x.floor() as usize).min(MAGMA.len() - 2);
    let f = x - i as f64;
    let c = |k: usize| (MAGMA[i][k] + (MAGMA[i + 1][k] - MAGMA[i][k]) * f).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// The heat map of |a − b| and its mean difference; `None` when the sizes differ (the Hub
/// rendered at another size: no pixel corresponds to another).
pub fn difference(a: &RgbImage, b: &RgbImage) -> Option<(RgbImage, f64)> {
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let mut total = 0.0;
    let map = RgbImage::from_fn(a.width(), a.height(), |x, y| {
        let (p, q) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
        let d = (0..3).map(|k| (p[k] as f64 - q[k] as f64).abs()).sum::<f64>() / (3.0 * 255.0);
        total += d;
        magma(d / FULL_SCALE)
    });
    Some((map, total / (a.width() as f64 * a.height() as f64).max(1.0)))
}

fn open(out: &Path, rel: &str) -> std::io::Result<RgbImage> {
    let path = out.join(rel);
    Ok(image::open(&path).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?.to_rgb8())
}

/// Writes the heat maps of every seed both sides rendered (paired runs only: unpaired renders
/// start from different noise, so their pixels do not correspond) into `out/heatmaps/`.
/// `best` is the ablation that closed most of the gap, if any was rendered.
pub fn seed_diffs(out: &Path, local: &[SideImage], hub: &[SideImage], best: Option<&AblationResult>) -> std::io::Result<Vec<SeedDiff>> {
    let dir = out.join("heatmaps");
    let mut diffs = Vec::new();
    for l in local {
        let Some(seed) = l.seed else { continue };
        let Some(h) = hub.iter().find(|h| h.seed == Some(seed)) else { continue };
        let (limg, himg) = (open(out, &l.file)?, open(out, &h.file)?);
        let Some((map, local_mean_abs)) = difference(&limg, &himg) else { continue };
        std::fs::create_dir_all(&dir)?;
        let save = |map: &RgbImage, name: String| -> std::io::Result<String> {
            map.save(dir.join(&name)).map_err(|e| std::io::Error::other(format!("{}: {e}", dir.join(&name).display())))?;
            Ok(format!("heatmaps/{name}"))
        };
        let local_heatmap = save(&map, format!("seed-{seed}-local.png"))?;
        let mut ablation = None;
        if let Some(a) = best {
            if let Some(img) = a.images.iter().find(|i| i.seed == Some(seed)) {
                if let Some((amap, mean_abs)) = difference(&open(out, &img.file)?, &himg) {
                    let heatmap = save(&amap, format!("seed-{seed}-ablation.png"))?;
                    ablation = Some(AblatedDiff { change: a.change.clone(), image: img.file.clone(), heatmap, mean_abs });
                }
            }
        }
        diffs.push(SeedDiff { seed, hub: h.file.clone(), local: l.file.clone(), local_heatmap, local_mean_abs, ablation });
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_are_black_and_the_scale_is_fixed() {
        let a = RgbImage::from_fn(4, 3, |x, y| Rgb([x as u8 * 60, y as u8 * 80, 200]));
        let (map, mean) = difference(&a, &a).unwrap();
        assert_eq!(mean, 0.0);
        assert!(map.pixels().all(|p| *p == Rgb([0, 0, 4])));
        // One pixel off by the full range in every channel: 1/12 of the image, drawn at the top.
        let mut b = a.clone();
        b.put_pixel(1, 1, Rgb([255 - a.get_pixel(1, 1)[0], 255 - a.get_pixel(1, 1)[1], 255 - a.get_pixel(1, 1)[2]]));
        let (map, mean) = difference(&a, &b).unwrap();
        let d = (0..3).map(|k| (a.get_pixel(1, 1)[k] as f64 - b.get_pixel(1, 1)[k] as f64).abs()).sum::<f64>() / 765.0;
        assert!((mean - d / 12.0).abs() < 1e-12);
        assert_eq!(*map.get_pixel(1, 1), magma(d / FULL_SCALE));
        assert_eq!(*map.get_pixel(0, 0), Rgb([0, 0, 4]));
        // Half the range is already the top of the ramp.
        assert_eq!(magma(1.0), Rgb([252, 253, 191]));
        assert_eq!(magma(7.0), magma(1.0));
        // Other sizes have no pixel-wise difference.
        assert!(difference(&a, &RgbImage::new(3, 4)).is_none());
    }

    #[test]
    fn the_ramp_gets_lighter_all_the_way() {
        let lum = |p: Rgb<u8>| 0.2126 * p[0] as f64 + 0.7152 * p[1] as f64 + 0.0722 * p[2] as f64;
        let steps: Vec<f64> = (0..=20).map(|i| lum(magma(i as f64 / 20.0))).collect();
        assert!(steps.windows(2).all(|w| w[1] > w[0]), "{steps:?}");
    }
}
