//! What one generation run is: the settings recorded in every PNG and sidecar, seed ranges,
//! initial noise (seeded, or read from a safetensors file to reproduce another implementation).

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--seeds {0:?}: expected A..B (e.g. 0..4, B exclusive) or a comma list")]
    Seeds(String),
    #[error("--width/--height must be positive multiples of 8, got {0}x{1}")]
    Size(usize, usize),
    #[error("{}: {detail}", .path.display())]
    Latents { path: std::path::PathBuf, detail: String },
}

/// `A..B` (B exclusive), `A..=B`, or `a,b,c`.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>, SettingsError> {
    let bad = || SettingsError::Seeds(spec.to_string());
    let seeds: Vec<u64> = if let Some((a, b)) = spec.split_once("..=") {
        let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        (a..=b).collect()
    } else if let Some((a, b)) = spec.split_once("..") {
        let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        (a..b).collect()
    } else {
        spec.split(',').map(|s| s.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?
    };
    if seeds.is_empty() || seeds.len() > 10_000 {
        return Err(bad());
    }
    Ok(seeds)
}

pub fn check_size(width: usize, height: usize) -> Result<(), SettingsError> {
    if width == 0 || height == 0 || !width.is_multiple_of(8) || !height.is_multiple_of(8) {
        return Err(SettingsError::Size(width, height));
    }
    Ok(())
}

/// Unit Gaussian noise [1, C, h, w] from `seed` with hfsky's own generator
/// ([`NoiseKind::Hfsky`](crate::diffusion::noise::NoiseKind)), reproducible across runs and platforms.
pub fn seeded_noise(seed: u64, shape: (usize, usize, usize, usize), device: &Device) -> candle_core::Result<Tensor> {
    crate::diffusion::noise::NoiseStream::new(crate::diffusion::noise::NoiseKind::Hfsky, seed).initial(shape, device)
}

/// Initial noise from a safetensors file holding exactly one tensor of the expected shape.
pub fn read_latents(path: &Path, expected: (usize, usize, usize, usize), device: &Device) -> Result<Tensor, SettingsError> {
    let err = |detail: String| SettingsError::Latents { path: path.to_path_buf(), detail };
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| err(e.to_string()))?;
    if tensors.len() != 1 {
        return Err(err(format!("expected exactly one tensor, found {}", tensors.len())));
    }
    let (name, t) = tensors.into_iter().next().expect("one tensor");
    let e = [expected.0, expected.1, expected.2, expected.3];
    if t.dims() != e {
        return Err(err(format!("tensor {name:?} has shape {:?}, expected {:?} ([1, latent channels, height/8, width/8])", t.dims(), e)));
    }
    t.to_dtype(DType::F32).map_err(|e| err(e.to_string()))
}

/// Everything that determines an image, written into the PNG and its JSON sidecar.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSettings {
    pub model: String,
    pub model_sha256: String,
    pub lora: Option<String>,
    pub lora_sha256: Option<String>,
    pub lora_scale: f64,
    /// `live` (on the activations) or `fused` (into the weights); absent without a LoRA.
    pub lora_mode: Option<super::pipeline::LoraMode>,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance_scale: f64,
    pub scheduler: String,
    /// The scheduler config keys the sampler ran with (diffusers' names: `use_karras_sigmas`,
    /// `timestep_spacing`, `steps_offset`).
    #[serde(rename = "use_karras_sigmas")]
    pub karras_sigmas: bool,
    pub timestep_spacing: String,
    pub steps_offset: usize,
    pub width: usize,
    pub height: usize,
    pub seed: Option<u64>,
    /// Whose generator turned the seed into noise: `torch-cpu` (diffusers'
    /// `torch.Generator("cpu").manual_seed(seed)`) or `hfsky`.
    pub noise: String,
    pub latents_file: Option<String>,
    pub dtype: String,
    /// The replacement VAE (--vae), when one was used.
    pub vae: Option<String>,
    pub hfsky_version: String,
}

impl ImageSettings {
    /// Key/value pairs for PNG text chunks (prefixed `hfsky:`), plus the whole JSON.
    pub fn png_text(&self) -> Vec<(String, String)> {
        let v = serde_json::to_value(self).expect("serializable");
        let mut out: Vec<(String, String)> = v
            .as_object()
            .expect("struct")
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (format!("hfsky:{k}"), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
            .collect();
        out.push(("hfsky:settings".into(), v.to_string()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_sizes() {
        assert_eq!(parse_seeds("0..4").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_seeds("2..=3").unwrap(), vec![2, 3]);
        assert_eq!(parse_seeds("7, 9").unwrap(), vec![7, 9]);
        assert!(parse_seeds("4..2").is_err());
        assert!(parse_seeds("x").is_err());
        assert!(check_size(64, 72).is_ok());
        assert!(check_size(63, 64).is_err());
    }

    #[test]
    fn seeded_noise_is_reproducible_unit_gaussian() {
        let a = seeded_noise(3, (1, 4, 32, 32), &Device::Cpu).unwrap();
        let b = seeded_noise(3, (1, 4, 32, 32), &Device::Cpu).unwrap();
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.06 && (var - 1.0).abs() < 0.1, "{mean} {var}");
    }

    #[test]
    fn latents_file_shape_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l.safetensors");
        let t = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&std::collections::HashMap::from([("latents".to_string(), t)]), &p).unwrap();
        assert!(read_latents(&p, (1, 4, 8, 8), &Device::Cpu).is_ok());
        let e = read_latents(&p, (1, 4, 16, 16), &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("[1, 4, 8, 8]") && e.contains("expected [1, 4, 16, 16]"), "{e}");
    }
}
