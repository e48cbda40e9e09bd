//! Where the horizon sits and how much of each photo is sky. A set whose photos all put a low
//! horizon under a big sky teaches the model to look up at every scene.

use crate::dataset::color::Lab;
use image::RgbImage;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Composition {
    /// Height of the horizon above the bottom edge, 0..1; `None` when no clear split exists.
    pub horizon: Option<f32>,
    /// Share of the picture above the horizon that reads as sky (brighter or smoother part on top).
    pub sky_fraction: f32,
    /// The brighter, smoother part is on top.
    pub sky_on_top: bool,
}

/// Rows need to differ by this much (ΔE between the two halves' mean colours) to call a split a horizon.
const MIN_CONTRAST: f32 = 8.0;

pub fn composition(thumb: &RgbImage) -> Composition {
    let (w, h) = (thumb.width() as usize, thumb.height() as usize);
    let rows: Vec<(Lab, f32)> = (0..h)
        .map(|y| {
            let (mut l, mut a, mut b, mut tex) = (0f32, 0f32, 0f32, 0f32);
            let mut prev: Option<Lab> = None;
            for x in 0..w {
                let p = Lab::from_rgb(thumb.get_pixel(x as u32, y as u32).0);
                (l, a, b) = (l + p.l, a + p.a, b + p.b);
                if let Some(q) = prev {
                    tex += (p.l - q.l).abs();
                }
                prev = Some(p);
            }
            let n = w.max(1) as f32;
            (Lab { l: l / n, a: a / n, b: b / n }, tex / n)
        })
        .collect();
    let mut best: Option<(usize, f32)> = None;
    for y in (h / 20).max(1)..h - (h / 20).max(1) {
        let (top, bottom) = (mean(&rows[..y]), mean(&rows[y..]));
        let score = top.0.dist2(bottom.0) * (y * (h - y)) as f32 / (h * h) as f32;
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((y, score));
        }
    }
    let Some((y, _)) = best else {
        return Composition { horizon: None, sky_fraction: 1.0, sky_on_top: true };
    };
    let (top, bottom) = (mean(&rows[..y]), mean(&rows[y..]));
    if top.0.dist2(bottom.0).sqrt() < MIN_CONTRAST {
        return Composition { horizon: None, sky_fraction: 1.0, sky_on_top: true };
    }
    let sky_on_top = top.0.l > bottom.0.l || top.1 < bottom.1;
    let split = y as f32 / h as f32;
    Composition {
        horizon: Some(1.0 - split),
        sky_fraction: if sky_on_top { split } else { 1.0 - split },
        sky_on_top,
    }
}

fn mean(rows: &[(Lab, f32)]) -> (Lab, f32) {
    let n = rows.len().max(1) as f32;
    let (l, a, b, t) = rows.iter().fold((0f32, 0f32, 0f32, 0f32), |s, (c, t)| (s.0 + c.l, s.1 + c.a, s.2 + c.b, s.3 + t));
    (Lab { l: l / n, a: a / n, b: b / n }, t / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;

    #[test]
    fn finds_the_horizon_of_a_synthetic_sky() {
        // The generator puts the horizon at 60-75% of the height from the top.
        for seed in 0..5 {
            let c = composition(&gen::photo(128, 96, seed));
            let horizon = c.horizon.expect("a horizon");
            let expected = 1.0 - (0.6 + 0.15 * (seed % 5) as f32 / 5.0);
            assert!((horizon - expected).abs() < 0.06, "seed {seed}: {horizon} vs {expected}");
            assert!(c.sky_on_top && (c.sky_fraction - (1.0 - expected)).abs() < 0.06);
        }
        let flat = composition(&RgbImage::from_pixel(64, 48, image::Rgb([100, 140, 220])));
        assert_eq!(flat.horizon, None);
    }
}
