//! Colour and tone statistics of one photo, the raw material for spotting heavy filters and
//! oversaturation as outliers against the rest of the set.

use crate::imagestats::colour::{hsv, Lab};
use image::RgbImage;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Tone {
    /// Mean CIELAB chroma.
    pub chroma: f32,
    /// Share of strongly coloured pixels with a channel pinned at 0 or 255: the signature of a
    /// saturation slider pushed past what the file can hold.
    pub clipped: f32,
    /// Standard deviation of L* (global contrast).
    pub contrast: f32,
}

pub fn tone(thumb: &RgbImage) -> Tone {
    let n = (thumb.width() * thumb.height()).max(1) as f32;
    let mut chroma = 0.0;
    let mut clipped = 0usize;
    let mut ls: Vec<f32> = Vec::with_capacity(n as usize);
    for p in thumb.pixels() {
        let lab = Lab::from_rgb(p.0);
        chroma += lab.chroma();
        ls.push(lab.l);
        let (_, s, v) = hsv(p.0);
        if s > 0.6 && v > 0.2 && p.0.iter().any(|&c| c == 0 || c == 255) {
            clipped += 1;
        }
    }
    let mean_l = ls.iter().sum::<f32>() / n;
    let contrast = (ls.iter().map(|l| (l - mean_l).powi(2)).sum::<f32>() / n).sqrt();
    Tone { chroma: chroma / n, clipped: clipped as f32 / n, contrast }
}

/// Median and scaled median absolute deviation: a spread that a few wild photos cannot inflate.
pub fn robust_center(values: &[f32]) -> (f32, f32) {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let median = |s: &[f32]| if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    let m = median(&v);
    let mut dev: Vec<f32> = v.iter().map(|x| (x - m).abs()).collect();
    dev.sort_by(f32::total_cmp);
    (m, 1.4826 * median(&dev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;

    #[test]
    fn saturation_boosts_move_the_numbers() {
        let photo = gen::photo(128, 96, 2);
        let base = tone(&photo);
        let boosted = tone(&gen::oversaturate(&photo));
        assert!(boosted.chroma > base.chroma * 1.5, "{base:?} {boosted:?}");
        assert!(boosted.clipped > base.clipped + 0.1, "{base:?} {boosted:?}");
        let flat = tone(&RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128])));
        assert!(flat.contrast < 0.01 && flat.chroma < 1.0 && flat.clipped == 0.0, "{flat:?}");
    }

    #[test]
    fn robust_center_ignores_outliers() {
        let (m, s) = robust_center(&[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!(m, 3.0);
        assert!((s - 1.4826).abs() < 1e-4);
    }
}
