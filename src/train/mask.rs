//! Masked loss (`masked_loss: true`), as kohya sd-scripts' `--masked_loss`: a mask per photo
//! (white trains, black is ignored) cut with the photo's own resize, mirror and crop, averaged
//! over each latent cell (torch `interpolate(mode="area")`, exact here because crops are whole
//! latent cells), and multiplied into the per-element squared error before its mean, as
//! kohya's `apply_masked_loss` does. The mask is `photo.mask.png` beside the photo
//! ([`crate::names::MASK_SUFFIX`], its red channel, as kohya reads a conditioning-image mask), or
//! else the photo's own alpha channel; a photo with neither trains unmasked (all ones, as kohya
//! treats a missing mask).

use super::examples::{cut, CropBox};
use candle_core::{DType, Device, Result, Tensor};
use image::GrayImage;
use std::path::{Path, PathBuf};

/// `sky-1.jpg` → `sky-1.mask.png` beside it.
pub fn mask_path(photo: &Path) -> PathBuf {
    let stem = photo.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    photo.with_file_name(format!("{stem}{}", crate::names::MASK_SUFFIX))
}

/// The mask of `photo` (upright, `size` = the photo's (w, h)): its `.mask.png`, else `alpha`,
/// else `None`. A mask file that cannot be read or is not the photo's size is an error naming it.
pub fn load(photo: &Path, size: (u32, u32), alpha: Option<&GrayImage>) -> std::result::Result<Option<GrayImage>, String> {
    let path = mask_path(photo);
    if !path.exists() {
        return Ok(alpha.cloned());
    }
    let img = crate::dataset::images::load_rgb(&path).map_err(|e| format!("masked_loss: {e}"))?;
    if img.rgb.dimensions() != size {
        let (mw, mh) = img.rgb.dimensions();
        return Err(format!(
            "masked_loss: {}: the mask is {mw}×{mh} but its photo is {}×{} (after EXIF orientation): save the mask at the photo's size",
            path.display(),
            size.0,
            size.1
        ));
    }
    Ok(Some(GrayImage::from_fn(size.0, size.1, |x, y| image::Luma([img.rgb.get_pixel(x, y).0[0]]))))
}

/// The mask on the latent grid, [1, h/f, w/f] in [0, 1]: cut like the photo (`b`), then each
/// f×f cell averaged. `b.target_size` is a multiple of `f` (the resolution and bucket steps are).
pub fn latent_mask(mask: &GrayImage, b: &CropBox, f: u32, device: &Device) -> Result<Tensor> {
    let crop = cut(mask, b);
    let (w, h) = crop.dimensions();
    let (lw, lh) = (w / f, h / f);
    let mut out = vec![0f32; (lw * lh) as usize];
    for (x, y, p) in crop.enumerate_pixels() {
        if let Some(v) = out.get_mut(((y / f).min(lh - 1) * lw + (x / f).min(lw - 1)) as usize) {
            *v += p.0[0] as f32;
        }
    }
    let scale = 1.0 / (255.0 * (f * f) as f32);
    Tensor::from_vec(out.into_iter().map(|v| v * scale).collect::<Vec<_>>(), (1, lh as usize, lw as usize), device)
}

/// kohya's masked MSE: per sample the mean over (C, H, W) of (pred − target)² · mask, the mask
/// [B, 1, H, W] broadcast over channels; then times `weights` [B] (min-SNR) and the batch mean.
/// An all-ones mask gives [`super::objective::weighted_mse`] exactly.
pub fn masked_weighted_mse(pred: &Tensor, target: &Tensor, mask: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let diff = (pred.to_dtype(DType::F32)? - target)?;
    let per_sample = diff.sqr()?.broadcast_mul(mask)?.flatten_from(1)?.mean(1)?;
    (per_sample * weights)?.mean(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::objective::weighted_mse;

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn an_all_ones_mask_is_the_plain_loss() {
        let n = 2 * 4 * 3 * 5;
        let pred = t((0..n).map(|i| (i as f32 * 0.37).sin()).collect(), &[2, 4, 3, 5]);
        let target = t((0..n).map(|i| (i as f32 * 0.11).cos()).collect(), &[2, 4, 3, 5]);
        let w = t(vec![0.5, 2.0], &[2]);
        let ones = Tensor::ones((2, 1, 3, 5), DType::F32, &Device::Cpu).unwrap();
        let a = masked_weighted_mse(&pred, &target, &ones, &w).unwrap().to_scalar::<f32>().unwrap();
        let b = weighted_mse(&pred, &target, &w).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn masked_pixels_change_neither_loss_nor_gradient() {
        let n = 4 * 2 * 2;
        let target = t(vec![0.0; n], &[1, 4, 2, 2]);
        // Left column trained, right column masked.
        let mask = t(vec![1.0, 0.0, 1.0, 0.0], &[1, 1, 2, 2]);
        let w = t(vec![1.0], &[1]);
        let loss_of = |vals: Vec<f32>| {
            let p = candle_core::Var::from_tensor(&t(vals, &[1, 4, 2, 2])).unwrap();
            let l = masked_weighted_mse(p.as_tensor(), &target, &mask, &w).unwrap();
            let g = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (l.to_scalar::<f32>().unwrap(), g)
        };
        let base: Vec<f32> = (0..n).map(|i| 0.3 + i as f32 * 0.1).collect();
        let mut changed = base.clone();
        for (i, v) in changed.iter_mut().enumerate() {
            if i % 2 == 1 {
                *v += 7.0;
            }
        }
        let (l0, g0) = loss_of(base.clone());
        let (l1, g1) = loss_of(changed);
        assert_eq!(l0, l1, "masked pixels do not enter the loss");
        assert_eq!(g0, g1);
        assert!(g0.iter().enumerate().all(|(i, g)| (i % 2 == 1) == (*g == 0.0)), "zero gradient exactly where masked: {g0:?}");
        // kohya normalises by every element, masked or not: the mean of the kept squares over 16.
        let kept: f32 = base.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, v)| v * v).sum();
        assert!((l0 - kept / 16.0).abs() < 1e-6);
    }

    #[test]
    fn the_mask_follows_the_crop_and_mirror_and_averages_latent_cells() {
        // 8×4 mask, left half white; crop 4×4 at left 2 after no resize, f = 2.
        let m = GrayImage::from_fn(8, 4, |x, _| image::Luma([if x < 4 { 255 } else { 0 }]));
        let b = CropBox { original_size: (4, 8), top_left: (0, 2), mirrored: false, resized_size: (4, 8), target_size: (4, 4) };
        let l = latent_mask(&m, &b, 2, &Device::Cpu).unwrap();
        assert_eq!(l.dims(), [1, 2, 2]);
        assert_eq!(l.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [1.0, 0.0, 1.0, 0.0]);
        // Mirrored, the same crop in mirrored coordinates (left 8 - 4 - 2 = 2) shows it reversed.
        let bm = CropBox { mirrored: true, ..b };
        assert_eq!(latent_mask(&m, &bm, 2, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.0, 1.0, 0.0, 1.0]);
        // A cell half covered averages to a half.
        let b1 = CropBox { top_left: (0, 3), ..b };
        assert_eq!(latent_mask(&m, &b1, 2, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.5, 0.0, 0.5, 0.0]);
        let b2 = CropBox { top_left: (0, 1), target_size: (4, 6), ..b };
        let v = latent_mask(&m, &b2, 2, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, [1.0, 0.5, 0.0, 1.0, 0.5, 0.0]);
    }

    #[test]
    fn masks_come_from_the_mask_file_or_the_alpha_channel() {
        let d = tempfile::tempdir().unwrap();
        let photo = d.path().join("sky-1.jpg");
        assert_eq!(mask_path(&photo), d.path().join("sky-1.mask.png"));
        let alpha = GrayImage::from_pixel(4, 2, image::Luma([9]));
        assert_eq!(load(&photo, (4, 2), Some(&alpha)).unwrap(), Some(alpha.clone()));
        assert_eq!(load(&photo, (4, 2), None).unwrap(), None);
        image::RgbImage::from_fn(4, 2, |x, _| image::Rgb([x as u8 * 80, 0, 0])).save(mask_path(&photo)).unwrap();
        let m = load(&photo, (4, 2), Some(&alpha)).unwrap().unwrap();
        assert_eq!(m.get_pixel(3, 1).0, [240], "the file wins over the alpha channel; its red channel");
        let e = load(&photo, (5, 2), None).unwrap_err();
        assert!(e.contains("sky-1.mask.png") && e.contains("4×2") && e.contains("5×2"), "{e}");
    }
}
