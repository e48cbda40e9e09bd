//! Training examples: each photo resized (shorter side to the resolution), optionally mirrored,
//! cropped to a square (or, with `bucketing`, to its aspect-ratio bucket: [`super::buckets`]) — as diffusers' DreamBooth SDXL script does it, including the crop's
//! top-left and the original size that SDXL's time_ids are built from — then encoded by the VAE
//! once. The latent distribution (mean, std) is cached on disk under a key made of the image's
//! sha256, the VAE's identity, the crop's size, resize, offset and mirroring, so later runs skip the VAE.

use crate::diffusion::autoencoder::AutoencoderKl;
use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use image::{ImageBuffer, RgbImage};
use rand::Rng;
use std::path::{Path, PathBuf};

/// Where a training crop came from: SDXL's micro-conditioning (`original_size`,
/// `crops_coords_top_left`, `target_size`, all (height, width) / (top, left) as diffusers'
/// `add_time_ids` orders them) and what it takes to cut the same crop again (a mask follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CropBox {
    /// (height, width) of the photo after EXIF orientation, before resizing.
    pub original_size: (u32, u32),
    /// (top, left) of the crop in the resized image (for a mirrored image: in mirrored coordinates).
    pub top_left: (u32, u32),
    pub mirrored: bool,
    /// (height, width) the photo is resized to before the crop.
    pub resized_size: (u32, u32),
    /// (height, width) of the crop: the square resolution, or the photo's bucket.
    pub target_size: (u32, u32),
}

/// torchvision `Resize(res)`: the shorter side becomes `res`, the longer `int(res·long/short)`.
pub fn resized_size(w: u32, h: u32, res: u32) -> (u32, u32) {
    if w <= h {
        (res, ((res as u64 * h as u64) / w as u64) as u32)
    } else {
        (((res as u64 * w as u64) / h as u64) as u32, res)
    }
}

/// The (top, left) of a `res`×`res` crop of the resized image: centred (rounded like
/// torchvision's center_crop) or uniformly random.
pub fn pick_offset(w: u32, h: u32, res: u32, center: bool, rng: &mut impl Rng) -> (u32, u32) {
    let (nw, nh) = resized_size(w, h, res);
    if center {
        (((nh - res) as f64 / 2.0).round() as u32, ((nw - res) as f64 / 2.0).round() as u32)
    } else {
        (rng.random_range(0..=nh - res), rng.random_range(0..=nw - res))
    }
}

/// Resizes, mirrors if asked, and crops at `offset` (given in un-mirrored coordinates, so both
/// mirror images show the same part of the photo). The box records the crop as SDXL's script
/// does: in mirrored coordinates for a mirrored image.
pub fn crop_at(img: &RgbImage, res: u32, offset: (u32, u32), mirror: bool) -> (RgbImage, CropBox) {
    let (w, h) = img.dimensions();
    let b = square_box(w, h, res, offset, mirror);
    (cut(img, &b), b)
}

/// The box [`crop_at`] cuts from a `w`×`h` photo.
pub fn square_box(w: u32, h: u32, res: u32, offset: (u32, u32), mirror: bool) -> CropBox {
    let (nw, nh) = resized_size(w, h, res);
    let (top, left) = offset;
    let left = if mirror { nw - res - left } else { left };
    CropBox { original_size: (h, w), top_left: (top, left), mirrored: mirror, resized_size: (nh, nw), target_size: (res, res) }
}

/// The crop `b` describes, cut from `img` (the photo, or its mask: any pixel type): resized
/// (triangle filter) to `b.resized_size`, mirrored if `b.mirrored`, cropped at `b.top_left`.
pub fn cut<P>(img: &ImageBuffer<P, Vec<P::Subpixel>>, b: &CropBox) -> ImageBuffer<P, Vec<P::Subpixel>>
where
    P: image::Pixel + 'static,
    P::Subpixel: 'static,
{
    let (nh, nw) = b.resized_size;
    let resized = if (nw, nh) == img.dimensions() { img.clone() } else { image::imageops::resize(img, nw, nh, FilterType::Triangle) };
    let resized = if b.mirrored { image::imageops::flip_horizontal(&resized) } else { resized };
    image::imageops::crop_imm(&resized, b.top_left.1, b.top_left.0, b.target_size.1, b.target_size.0).to_image()
}

/// RGB bytes → [1, 3, H, W] in [-1, 1].
pub fn to_tensor(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img.as_raw().iter().map(|&b| b as f32 / 127.5 - 1.0).collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), device)?.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()
}

/// SDXL's add_time_ids for a crop: original (h, w), crop (top, left), target (h, w), as
/// diffusers' train_dreambooth_lora_sdxl.py `compute_time_ids` and kohya's sdxl_train_util build them.
pub fn time_ids(b: &CropBox) -> [f32; 6] {
    let (o, c, t) = (b.original_size, b.top_left, b.target_size);
    [o.0 as f32, o.1 as f32, c.0 as f32, c.1 as f32, t.0 as f32, t.1 as f32]
}

/// The latent distribution of one prepared image.
#[derive(Debug, Clone)]
pub struct CachedLatents {
    pub mean: Tensor,
    pub std: Tensor,
}

impl CachedLatents {
    /// A sample `mean + std·ε`, times the VAE's scaling factor (minus shift), as the scripts do each step.
    pub fn sample(&self, noise: &Tensor, scaling: f64, shift: Option<f64>) -> candle_core::Result<Tensor> {
        let z = (&self.mean + (&self.std * noise)?)?;
        let z = match shift {
            Some(s) => (z - s)?,
            None => z,
        };
        z * scaling
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {detail}", .path.display())]
    Io { path: PathBuf, detail: String },
    #[error("vae: {0}")]
    Vae(#[from] candle_core::Error),
}

pub struct LatentCache {
    dir: PathBuf,
    vae_id: String,
    pub hits: usize,
    pub misses: usize,
}

impl LatentCache {
    /// `vae_id` identifies the VAE's weights (their sha256) so a different VAE never reuses latents.
    pub fn new(dir: PathBuf, vae_id: String) -> Self {
        LatentCache { dir, vae_id, hits: 0, misses: 0 }
    }

    /// The crop's identity from explicit fields (sizes as `{w}x{h}`, the crop as `top,left`), so
    /// the key does not change with a `Debug` format.
    fn key(&self, image_sha: &str, b: &CropBox) -> String {
        let size = |(h, w): (u32, u32)| format!("{w}x{h}");
        let raw = format!(
            "{image_sha}|{}|target {}|resized {}|crop {},{}|mirrored {}",
            self.vae_id,
            size(b.target_size),
            size(b.resized_size),
            b.top_left.0,
            b.top_left.1,
            b.mirrored
        );
        crate::hash::sha256_hex(raw.as_bytes())
    }

    /// The cached distribution, or the VAE's encoding of `crop` (stored for next time).
    pub fn get_or_encode(
        &mut self,
        vae: &AutoencoderKl,
        image_sha: &str,
        b: &CropBox,
        crop: &RgbImage,
        device: &Device,
    ) -> Result<CachedLatents, CacheError> {
        let key = self.key(image_sha, b);
        let path = self.dir.join(&key[..2]).join(format!("{key}.safetensors"));
        if let Ok(t) = candle_core::safetensors::load(&path, device) {
            if let (Some(mean), Some(std)) = (t.get("mean"), t.get("std")) {
                self.hits += 1;
                return Ok(CachedLatents { mean: mean.clone(), std: std.clone() });
            }
        }
        let dtype = vae.dtype();
        let x = to_tensor(crop, device)?.to_dtype(dtype)?;
        let (mean, std) = vae.encode(&x)?;
        let (mean, std) = (mean.to_dtype(DType::F32)?.squeeze(0)?, std.to_dtype(DType::F32)?.squeeze(0)?);
        let io = |e: String| CacheError::Io { path: path.clone(), detail: e };
        std::fs::create_dir_all(path.parent().expect("cache file has a folder")).map_err(|e| io(e.to_string()))?;
        let tensors = vec![("mean".to_string(), mean.to_device(&Device::Cpu)?), ("std".to_string(), std.to_device(&Device::Cpu)?)];
        crate::atomic::write_with(&path, |_, tmp| safetensors::serialize_to_file(tensors, None, tmp).map_err(std::io::Error::other))
            .map_err(|e| io(e.to_string()))?;
        self.misses += 1;
        Ok(CachedLatents { mean, std })
    }
}

/// The default cache folder: `$HF_HOME/hfsky/latent-cache`.
pub fn default_cache_dir() -> PathBuf {
    crate::auth::paths::hf_home().join("hfsky").join("latent-cache")
}

/// sha256 of a file, for cache keys.
pub fn file_sha(path: &Path) -> Result<String, CacheError> {
    crate::hash::sha256_file(path).map_err(|e| CacheError::Io { path: path.to_path_buf(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn crops_follow_torchvision_geometry() {
        let img = RgbImage::from_fn(200, 100, |x, _| image::Rgb([x as u8, 0, 0]));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        // 200x100 → 128x64; centre crop starts at (128-64)/2 = 32.
        assert_eq!(pick_offset(200, 100, 64, true, &mut rng), (0, 32));
        let (c, b) = crop_at(&img, 64, (0, 10), false);
        assert_eq!(c.dimensions(), (64, 64));
        assert_eq!(b, CropBox { original_size: (100, 200), top_left: (0, 10), mirrored: false, resized_size: (64, 128), target_size: (64, 64) });
        assert_eq!(time_ids(&b), [100.0, 200.0, 0.0, 10.0, 64.0, 64.0]);
        for _ in 0..20 {
            let (t, l) = pick_offset(200, 100, 64, false, &mut rng);
            assert!(t == 0 && l <= 64);
        }
        // Mirrored: the same part of the photo, reversed; the box is in mirrored coordinates.
        let (m, bm) = crop_at(&img, 64, (0, 10), true);
        assert_eq!(bm.top_left, (0, 128 - 64 - 10));
        assert_eq!(m.get_pixel(0, 0), c.get_pixel(63, 0));
    }

    #[test]
    fn tensors_are_in_minus_one_to_one() {
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([255, 0, (x * y) as u8]));
        let t = to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [1, 3, 8, 8]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v[0], 1.0);
        assert_eq!(v[64], -1.0);
    }
}
