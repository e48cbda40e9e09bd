//! Perceptual hash (the DCT "pHash" of the imagehash library): 64 bits that survive resizing,
//! re-compression and small edits, so near-duplicate photos sit a few bits apart.

use image::{imageops, GrayImage, RgbImage};

pub fn phash(rgb: &RgbImage) -> u64 {
    let gray: GrayImage = image::DynamicImage::ImageRgb8(rgb.clone()).resize_exact(32, 32, imageops::FilterType::Triangle).to_luma8();
    let px: Vec<f32> = gray.pixels().map(|p| f32::from(p.0[0])).collect();
    let cos: Vec<f32> = (0..8 * 32).map(|i| ((2 * (i % 32) + 1) as f32 * (i / 32) as f32 * std::f32::consts::PI / 64.0).cos()).collect();
    // Separable DCT-II, keeping only the 8×8 lowest frequencies.
    let mut rows = [[0f32; 8]; 32];
    for (y, row) in rows.iter_mut().enumerate() {
        for (u, v) in row.iter_mut().enumerate() {
            *v = (0..32).map(|x| px[y * 32 + x] * cos[u * 32 + x]).sum();
        }
    }
    let mut coeffs = [0f32; 64];
    for v in 0..8 {
        for u in 0..8 {
            coeffs[v * 8 + u] = (0..32).map(|y| rows[y][u] * cos[v * 32 + y]).sum();
        }
    }
    let mut sorted = coeffs;
    sorted.sort_by(f32::total_cmp);
    let median = (sorted[31] + sorted[32]) / 2.0;
    coeffs.iter().enumerate().fold(0u64, |h, (i, &c)| if c > median { h | 1 << i } else { h })
}

pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// At most this many differing bits (of 64) counts as the same photo.
pub const NEAR_DUPLICATE_BITS: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;

    #[test]
    fn survives_resizing_and_recompression_but_separates_different_photos() {
        let a = gen::photo(400, 300, 1);
        let resized = imageops::resize(&a, 333, 250, imageops::FilterType::Lanczos3);
        let recompressed = image::load_from_memory(&gen::jpeg(&a)).unwrap().to_rgb8();
        let h = phash(&a);
        assert!(distance(h, phash(&resized)) <= 4, "{}", distance(h, phash(&resized)));
        assert!(distance(h, phash(&recompressed)) <= 4);
        for seed in 2..6 {
            let d = distance(h, phash(&gen::photo(400, 300, seed)));
            assert!(d > NEAR_DUPLICATE_BITS * 2, "seed {seed}: {d}");
        }
    }
}
