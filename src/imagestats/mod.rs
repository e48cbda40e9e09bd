//! Colour and composition measurements of pictures, shared by `dataset report` (what a set of
//! photos will teach) and `compare` (how two sets of renders differ): CIELAB and HSV, named
//! colour families, k-means palettes, hue histograms, horizon and luminance profile.

pub mod colour;
pub mod composition;
pub mod hue;
pub mod kmeans;

/// `rgb` scaled down so its longer side is at most `max` pixels (unchanged when smaller):
/// colour and composition statistics do not need more, and are much faster on it.
pub fn thumbnail(rgb: &image::RgbImage, max: u32) -> image::RgbImage {
    let (w, h) = rgb.dimensions();
    if w.max(h) <= max {
        return rgb.clone();
    }
    let s = max as f32 / w.max(h) as f32;
    // Through DynamicImage: its methods are compiled (optimised) inside the image crate, while
    // the generic imageops functions would be instantiated here, unoptimised in debug builds.
    image::DynamicImage::ImageRgb8(rgb.clone())
        .thumbnail_exact(((w as f32 * s).round() as u32).max(1), ((h as f32 * s).round() as u32).max(1))
        .into_rgb8()
}
