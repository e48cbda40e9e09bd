//! Synthetic sky photos for tests and the benchmark: a gradient whose colours depend on the
//! seed, cloud texture, a dark ground below a horizon, and per-pixel sensor grain.

use image::{Rgb, RgbImage};

/// Deterministic hash noise in [0, 1).
fn noise(x: u32, y: u32, seed: u32) -> f32 {
    let mut h = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ seed.wrapping_mul(0xC2B2_AE3D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    (h & 0xFFFF) as f32 / 65536.0
}

/// Smooth value noise: photographic texture whose detail is the same in x and y.
fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (xi, yi) = (x.floor(), y.floor());
    let (fx, fy) = (x - xi, y - yi);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let (xi, yi) = (xi as u32, yi as u32);
    let a = noise(xi, yi, seed);
    let b = noise(xi + 1, yi, seed);
    let c = noise(xi, yi + 1, seed);
    let d = noise(xi + 1, yi + 1, seed);
    a + (b - a) * sx + (c - a) * sy + (a - b - c + d) * sx * sy
}

/// A sky-like photo: a gradient whose colours depend on `seed`, textured clouds, a dark
/// ground below a horizon, and per-pixel sensor noise.
pub fn sky(w: u32, h: u32, seed: u32) -> RgbImage {
    let hue = (seed % 7) as f32 / 7.0;
    let top = [0.15 + 0.5 * hue, 0.3 + 0.3 * (1.0 - hue), 0.8 - 0.4 * hue];
    let bottom = [0.95, 0.55 + 0.3 * hue, 0.3 + 0.4 * (1.0 - hue)];
    let horizon = 0.6 + 0.15 * ((seed % 5) as f32 / 5.0);
    let scale = 48.0 / (w.max(h) as f32 / 8.0).max(1.0);
    RgbImage::from_fn(w, h, |x, y| {
        let t = y as f32 / h as f32;
        let clouds = 0.6 * value_noise(x as f32 * scale / 6.0, y as f32 * scale / 6.0, seed)
            + 0.4 * value_noise(x as f32 * scale / 1.5, y as f32 * scale / 1.5, seed + 1);
        let grain = noise(x, y, seed + 2) - 0.5;
        let mut px = [0u8; 3];
        for (i, p) in px.iter_mut().enumerate() {
            let sky = top[i] + (bottom[i] - top[i]) * t + 0.25 * (clouds - 0.5);
            let v = if t > horizon { 0.12 + 0.1 * clouds } else { sky };
            *p = ((v + 0.04 * grain).clamp(0.0, 1.0) * 255.0) as u8;
        }
        Rgb(px)
    })
}
