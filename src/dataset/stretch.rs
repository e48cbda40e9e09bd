//! Non-uniform stretching. A camera's grain is independent from pixel to pixel in both
//! directions; stretching along one axis interpolates it, so in flat areas neighbouring grain
//! becomes correlated along that axis only. Smooth sky gradients also correlate grain along
//! their bands, so on its own this is a hint; `dataset check` weighs it with the aspect ratio.

use image::RgbImage;

/// Centre crop analysed at full resolution: downsampling would erase the evidence.
const CROP: u32 = 384;

/// Lag-1 correlation of the grain along x minus along y, in the flatter half of a centre crop:
/// near 0 for a real photo, towards +1 when stretched horizontally, towards -1 when stretched
/// vertically. `None` when the image is too small or too clean (no grain) to tell.
pub fn grain_skew(rgb: &RgbImage) -> Option<f32> {
    let (w, h) = rgb.dimensions();
    let (cw, ch) = (w.min(CROP) as usize, h.min(CROP) as usize);
    if cw < 32 || ch < 32 {
        return None;
    }
    let (x0, y0) = ((w as usize - cw) / 2, (h as usize - ch) / 2);
    let raw = rgb.as_raw();
    let stride = w as usize * 3;
    let mut luma = Vec::with_capacity(cw * ch);
    for y in y0..y0 + ch {
        let row = &raw[y * stride + x0 * 3..y * stride + (x0 + cw) * 3];
        luma.extend(row.chunks_exact(3).map(|p| 2 * i32::from(p[0]) + 5 * i32::from(p[1]) + i32::from(p[2])));
    }
    // Laplacian residual (grain) and local structure strength, away from the border.
    let mut resid = vec![0i32; cw * ch];
    let mut structure = vec![i32::MAX; cw * ch];
    for y in 1..ch - 1 {
        for x in 1..cw - 1 {
            let i = y * cw + x;
            let (c, l, r, u, d) = (luma[i], luma[i - 1], luma[i + 1], luma[i - cw], luma[i + cw]);
            resid[i] = 4 * c - l - r - u - d;
            structure[i] = (r - l).abs() + (d - u).abs();
        }
    }
    // Grain is only measurable where there is no structure: keep the flatter half.
    let mut sorted: Vec<i32> = structure.iter().copied().filter(|&s| s != i32::MAX).collect();
    let mid = sorted.len() / 2;
    let threshold = *sorted.select_nth_unstable(mid).1;
    let (mut xx, mut xy, mut rr, mut n) = (0f64, 0f64, 0f64, 0usize);
    for y in 1..ch - 2 {
        for x in 1..cw - 2 {
            let i = y * cw + x;
            if structure[i] > threshold || structure[i + 1] > threshold || structure[i + cw] > threshold {
                continue;
            }
            let r = f64::from(resid[i]);
            rr += r * r;
            xx += r * f64::from(resid[i + 1]);
            xy += r * f64::from(resid[i + cw]);
            n += 1;
        }
    }
    // Under about one grey level of grain (heavily compressed or synthetic): nothing to measure.
    if n < 500 || rr / (n as f64) < 64.0 {
        return None;
    }
    Some(((xx - xy) / rr) as f32)
}

/// Beyond ±HINT the grain suggests stretching; beyond ±STRONG it is convincing on its own.
pub const HINT: f32 = 0.6;
pub const STRONG: f32 = 1.3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;
    use image::imageops::{resize, FilterType};

    #[test]
    fn stretched_grain_skews_and_uniform_resizes_do_not() {
        let photo = gen::photo(600, 450, 3);
        let s = grain_skew(&photo).unwrap();
        assert!(s.abs() < 0.2, "original {s}");
        let s = grain_skew(&resize(&photo, 400, 300, FilterType::Lanczos3)).unwrap();
        assert!(s.abs() < 0.2, "uniform resize {s}");
        let s = grain_skew(&resize(&photo, 900, 450, FilterType::Triangle)).unwrap();
        assert!(s > HINT, "stretched horizontally {s}");
        let s = grain_skew(&resize(&photo, 600, 700, FilterType::CatmullRom)).unwrap();
        assert!(s < -HINT, "stretched vertically {s}");
        assert_eq!(grain_skew(&RgbImage::from_pixel(100, 100, image::Rgb([90, 120, 200]))), None);
    }

    #[test]
    fn the_bundled_sky_photos_are_not_convincingly_stretched() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sky-photos");
        for p in crate::dataset::list_images(&dir).unwrap() {
            let s = grain_skew(&crate::dataset::images::load_rgb(&p).unwrap().rgb);
            assert!(s.is_none_or(|s| s.abs() < STRONG), "{}: {s:?}", p.display());
        }
    }
}
