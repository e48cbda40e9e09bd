//! Where the horizon sits, how much of a picture is sky, and how brightness runs from top to
//! bottom. A set whose photos all put a low horizon under a big sky teaches the model to look up
//! at every scene.

use super::colour::Lab;
use image::RgbImage;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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
    if h < 2 {
        return Composition { horizon: None, sky_fraction: 1.0, sky_on_top: true };
    }
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
    Composition { horizon: Some(1.0 - split), sky_fraction: if sky_on_top { split } else { 1.0 - split }, sky_on_top }
}

fn mean(rows: &[(Lab, f32)]) -> (Lab, f32) {
    let n = rows.len().max(1) as f32;
    let (l, a, b, t) = rows.iter().fold((0f32, 0f32, 0f32, 0f32), |s, (c, t)| (s.0 + c.l, s.1 + c.a, s.2 + c.b, s.3 + t));
    (Lab { l: l / n, a: a / n, b: b / n }, t / n)
}

/// Mean L* (0..100) of `bands` horizontal bands of equal height, top band first. A picture
/// with fewer rows than bands repeats rows; an empty one reads 0.
pub fn luminance_profile(thumb: &RgbImage, bands: usize) -> Vec<f32> {
    let (w, h) = (thumb.width() as usize, thumb.height() as usize);
    if w == 0 || h == 0 {
        return vec![0.0; bands];
    }
    let rows: Vec<f64> =
        (0..h).map(|y| (0..w).map(|x| f64::from(Lab::from_rgb(thumb.get_pixel(x as u32, y as u32).0).l)).sum::<f64>() / w as f64).collect();
    (0..bands)
        .map(|i| {
            let y0 = i * h / bands;
            let y1 = ((i + 1) * h / bands).max(y0 + 1);
            (rows[y0..y1].iter().sum::<f64>() / (y1 - y0) as f64) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn half_and_half(w: u32, h: u32, split_from_top: u32, top: [u8; 3], bottom: [u8; 3]) -> RgbImage {
        RgbImage::from_fn(w, h, |_, y| Rgb(if y < split_from_top { top } else { bottom }))
    }

    #[test]
    fn a_bright_top_half_over_a_dark_one_has_its_horizon_in_the_middle() {
        let c = composition(&half_and_half(64, 64, 32, [200, 220, 250], [30, 40, 20]));
        assert!((c.horizon.unwrap() - 0.5).abs() < 0.02 && (c.sky_fraction - 0.5).abs() < 0.02 && c.sky_on_top, "{c:?}");
        let low = composition(&half_and_half(64, 80, 60, [200, 220, 250], [30, 40, 20]));
        assert!((low.horizon.unwrap() - 0.25).abs() < 0.02 && (low.sky_fraction - 0.75).abs() < 0.02, "{low:?}");
        // Upside down: the bright, smooth part is below, so the sky is the bottom part.
        let flipped = composition(&half_and_half(64, 80, 20, [30, 40, 20], [200, 220, 250]));
        assert!(!flipped.sky_on_top && (flipped.sky_fraction - 0.75).abs() < 0.02, "{flipped:?}");
        for (w, h) in [(0, 0), (5, 1), (1, 2)] {
            let c = composition(&RgbImage::new(w, h));
            assert_eq!(c.horizon, None, "{w}x{h}");
        }
    }

    #[test]
    fn luminance_profile_runs_top_to_bottom() {
        let p = luminance_profile(&half_and_half(10, 64, 16, [255, 255, 255], [0, 0, 0]), 4);
        assert_eq!(p.len(), 4);
        assert!((p[0] - 100.0).abs() < 0.1 && p[1..].iter().all(|l| l.abs() < 0.1), "{p:?}");
        // More bands than rows: rows repeat.
        let p = luminance_profile(&half_and_half(4, 2, 1, [255, 255, 255], [0, 0, 0]), 4);
        assert!(p[..2].iter().all(|l| (l - 100.0).abs() < 0.1) && p[2..].iter().all(|l| l.abs() < 0.1), "{p:?}");
        assert_eq!(luminance_profile(&RgbImage::new(0, 0), 3), vec![0.0; 3]);
    }
}
