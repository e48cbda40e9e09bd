//! A loaded text-to-image pipeline (UNet, VAE, scheduler config, optional LoRA) and one image
//! per seed from prompt embeddings.

use super::sampling::{denoise, Conditioning};
use crate::diffusion::autoencoder::{AutoencoderKl, VaeConfig};
use crate::diffusion::config::{Architecture, PipelineError, PipelineFiles};
use crate::diffusion::lora::{LoraError, LoraWeights};
use crate::diffusion::nn::Adapters;
use crate::diffusion::noise::NoiseStream;
use crate::diffusion::schedulers::{build, SchedulerConfig, SchedulerError, SchedulerKind};
use crate::diffusion::unet::{SdxlConditioning, UNet2DConditionModel, UNetConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Lora(#[from] LoraError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("{0}")]
    Model(String),
    #[error("the VAE overflowed in {dtype} (NaN/inf or an all-black image): the original SDXL VAE cannot run in half precision; use --dtype f32, or a VAE fixed for fp16: --vae madebyollin/sdxl-vae-fp16-fix")]
    VaeOverflow { dtype: String },
}

/// How a LoRA is applied: on the activations at every forward (the trainer's form, exact in f32),
/// or fused into the weights once (what diffusers' `fuse_lora` and the Hub's inference run do;
/// in half precision the fused weights are rounded, as theirs are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraMode {
    Live,
    Fused,
}

fn model_err(what: &str) -> impl Fn(candle_core::Error) -> GenerateError + '_ {
    move |e| GenerateError::Model(format!("{what}: {e}"))
}

pub struct Pipeline {
    pub files: PipelineFiles,
    pub unet: UNet2DConditionModel,
    pub unet_adapters: Adapters,
    /// `None` while unloaded ([`Pipeline::unload_vae`]).
    vae: Option<AutoencoderKl>,
    vae_config: VaeConfig,
    /// The replacement VAE folder given to [`Pipeline::load`], to reload the same one.
    vae_dir: Option<std::path::PathBuf>,
    pub scheduler_config: SchedulerConfig,
    pub dtype: DType,
    pub device: Device,
}

/// The `fp16` weight files serve every half-precision run; a component computed in f32 (an
/// upcast VAE) still loads them, as diffusers does, and widens them.
pub fn variant_for(dtype: DType) -> Option<&'static str> {
    matches!(dtype, DType::F16 | DType::BF16).then_some("fp16")
}

fn weights(
    files: &PipelineFiles,
    component: &str,
    variant: Option<&str>,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, GenerateError> {
    let w = files.weights(component, variant)?;
    crate::diffusion::weights::var_builder(&w.files, dtype, device).map_err(model_err(&w.display()))
}

impl Pipeline {
    /// Loads the UNet, VAE and scheduler config of a pipeline folder. `vae_dir` replaces the
    /// pipeline's VAE (a folder with config.json + weights); SDXL VAEs that need it run in f32.
    pub fn load(files: PipelineFiles, vae_dir: Option<&std::path::Path>, dtype: DType, device: Device) -> Result<Self, GenerateError> {
        let ucfg = UNetConfig::from_file(&files.component("unet")?.join("config.json"))?;
        if (files.architecture == Architecture::StableDiffusionXl) != ucfg.has_text_time() {
            return Err(GenerateError::Model(format!(
                "{}: the UNet config does not match a {:?} pipeline (addition_embed_type)",
                files.root.display(),
                files.architecture
            )));
        }
        let unet_adapters = Adapters::new();
        let variant = variant_for(dtype);
        let unet = UNet2DConditionModel::new(weights(&files, "unet", variant, dtype, &device)?, &ucfg, &unet_adapters).map_err(model_err("unet"))?;
        let vae = load_vae(&files, vae_dir, dtype, &device)?;
        let scheduler_config = files.config("scheduler")?;
        let vae_config = vae.config().clone();
        Ok(Pipeline {
            files,
            unet,
            unet_adapters,
            vae: Some(vae),
            vae_config,
            vae_dir: vae_dir.map(|d| d.to_path_buf()),
            scheduler_config,
            dtype,
            device,
        })
    }

    /// The VAE, or an error when it was unloaded and not reloaded (a caller's bug, reported
    /// rather than panicking mid-run).
    pub fn vae(&self) -> Result<&AutoencoderKl, GenerateError> {
        self.vae.as_ref().ok_or_else(|| GenerateError::Model("the VAE is unloaded (call reload_vae first)".into()))
    }

    /// The VAE's config, loaded or not (scaling and shift factors, downscale).
    pub fn vae_config(&self) -> &VaeConfig {
        &self.vae_config
    }

    /// Frees the VAE's weights: training needs it only to cache latents and to render validation
    /// images (diffusers' DreamBooth scripts `del vae` once latents are cached, too). On a GPU
    /// this is device memory; on the CPU the f32 SD VAE is 335 MB of RSS.
    pub fn unload_vae(&mut self) {
        if self.vae.take().is_some() {
            crate::runtime::release_free_memory();
        }
    }

    /// Loads the VAE again (same folder, dtype and device) if it was unloaded.
    pub fn reload_vae(&mut self) -> Result<(), GenerateError> {
        if self.vae.is_none() {
            self.vae = Some(load_vae(&self.files, self.vae_dir.as_deref(), self.dtype, &self.device)?);
        }
        Ok(())
    }

    /// Attaches a LoRA's UNet part at `scale`; returns how many modules it changed.
    pub fn apply_lora(&self, lora: &LoraWeights, scale: f64) -> Result<usize, GenerateError> {
        let n = self.install_lora(lora, scale, LoraMode::Live)?;
        if n == 0 {
            return Err(GenerateError::Model(format!("{}: the LoRA has no UNet weights", lora.path.display())));
        }
        Ok(n)
    }

    /// Attaches (live) or fuses (diffusers' `fuse_lora`) a LoRA's UNet part at `scale`; returns
    /// how many modules it changed (0 for a text-encoder-only LoRA).
    pub fn install_lora(&self, lora: &LoraWeights, scale: f64, mode: LoraMode) -> Result<usize, GenerateError> {
        Ok(match mode {
            LoraMode::Live => lora.apply("unet", &self.unet_adapters, scale)?,
            LoraMode::Fused => lora.fuse("unet", &self.unet_adapters, scale)?,
        })
    }

    /// Latents shape [1, C, h/f, w/f] for an image of `height`×`width`.
    pub fn latent_shape(&self, height: usize, width: usize) -> (usize, usize, usize, usize) {
        let f = self.vae_config.downscale();
        (1, self.unet.config().in_channels, height / f, width / f)
    }

    /// One image in [0, 1], [1, 3, H, W] f32, from unit noise; `stream` continues after
    /// `noise` for the sampler's per-step draws (Euler ancestral).
    #[expect(clippy::too_many_arguments, reason = "diffusers' pipeline call arguments, each named at every call site")]
    pub fn generate(
        &self,
        cond: &Conditioning,
        noise: &Tensor,
        scheduler: Option<SchedulerKind>,
        steps: usize,
        guidance: f64,
        stream: NoiseStream,
        on_step: impl FnMut(usize, usize),
    ) -> Result<Tensor, GenerateError> {
        let mut sched = build(scheduler, &self.scheduler_config, steps, stream)?;
        let mut f = |x: &Tensor, t: &Tensor, c: &Tensor, a: Option<(&Tensor, &Tensor)>| {
            let added = a.map(|(p, ids)| SdxlConditioning { text_embeds: p.clone(), time_ids: ids.clone() });
            // The loop and scheduler stay in f32 whatever the UNet computes in.
            self.unet.forward(x, t, c, added.as_ref())?.to_dtype(DType::F32)
        };
        let latents = denoise(&mut f, sched.as_mut(), &noise.to_device(&self.device).map_err(model_err("noise"))?, cond, guidance, on_step)
            .map_err(model_err("sampling"))?;
        if !all_finite(&latents).map_err(model_err("sampling"))? {
            return Err(GenerateError::Model(format!("the UNet produced NaN/inf latents in {:?}; run with --dtype f32", self.dtype)));
        }
        self.decode(&latents)
    }

    /// Latents → image in [0, 1] (f32), or `VaeOverflow` when a half-precision VAE overflowed:
    /// its NaNs/infs either survive or clamp every pixel to black.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor, GenerateError> {
        let vae_dtype = self.vae_dtype();
        let vae = self.vae()?;
        let raw = latents
            .to_dtype(vae_dtype)
            .and_then(|z| vae.latents_to_image_unclamped(&z))
            .and_then(|i| i.to_dtype(DType::F32))
            .map_err(model_err("vae"))?;
        let image = raw.clamp(0f32, 1f32).map_err(model_err("vae"))?;
        let half = matches!(vae_dtype, DType::F16 | DType::BF16);
        let black = || image.max_all().and_then(|m| m.to_scalar::<f32>()).map(|m| m <= 0.0);
        if !all_finite(&raw).map_err(model_err("vae"))? || (half && black().map_err(model_err("vae"))?) {
            return Err(GenerateError::VaeOverflow { dtype: format!("{vae_dtype:?}").to_lowercase() });
        }
        Ok(image)
    }

    fn vae_dtype(&self) -> DType {
        if self.vae_config.force_upcast {
            DType::F32
        } else {
            self.dtype
        }
    }
}

/// The pipeline's VAE, or the one in `vae_dir`; SDXL VAEs that need it (`force_upcast`) in f32.
fn load_vae(files: &PipelineFiles, vae_dir: Option<&std::path::Path>, dtype: DType, device: &Device) -> Result<AutoencoderKl, GenerateError> {
    let variant = variant_for(dtype);
    match vae_dir {
        Some(dir) => {
            let cfg = VaeConfig::from_file(&dir.join("config.json"))?;
            let vae_files =
                PipelineFiles { root: dir.parent().unwrap_or(dir).to_path_buf(), architecture: files.architecture, class_name: String::new() };
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("vae");
            let vdt = if cfg.force_upcast { DType::F32 } else { dtype };
            AutoencoderKl::new(weights(&vae_files, name, variant, vdt, device)?, &cfg).map_err(model_err("vae"))
        }
        None => {
            let cfg = VaeConfig::from_file(&files.component("vae")?.join("config.json"))?;
            let vdt = if cfg.force_upcast { DType::F32 } else { dtype };
            AutoencoderKl::new(weights(files, "vae", variant, vdt, device)?, &cfg).map_err(model_err("vae"))
        }
    }
}

fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter().all(|x| x.is_finite()))
}

/// [1, 3, H, W] in [0, 1] → row-major RGB bytes, rounded like torchvision's `to_pil_image`.
pub fn to_rgb8(image: &Tensor) -> candle_core::Result<(u32, u32, Vec<u8>)> {
    let (_, _, h, w) = image.dims4()?;
    let hwc = image.squeeze(0)?.permute((1, 2, 0))?.contiguous()?;
    let v = hwc.flatten_all()?.to_vec1::<f32>()?;
    Ok((w as u32, h as u32, v.iter().map(|x| (x * 255.0).round().clamp(0.0, 255.0) as u8).collect()))
}
