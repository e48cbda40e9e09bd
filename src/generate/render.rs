//! One place that turns a set of generation settings into images: `hfsky generate`, the offline
//! Hub's inference route and both sides of `hfsky compare` render through it, so a seed and a
//! settings record mean the same thing everywhere.

use super::pipeline::{to_rgb8, variant_for, GenerateError, LoraMode, Pipeline};
use super::prompts::TextEncoders;
use super::sampling::Conditioning;
use super::settings::{check_size, ImageSettings, SettingsError};
use super::source::{resolve_lora, resolve_pipeline, resolve_vae, SourceError};
use crate::diffusion::config::{Architecture, PipelineError, PipelineFiles};
use crate::diffusion::lora::{LoraError, LoraWeights};
use crate::diffusion::noise::{NoiseKind, NoiseStream};
use crate::diffusion::schedulers::{resolve_kind, SchedulerKind, SchedulerOverrides};
use crate::hub::HubClient;
use crate::model_ref::ModelRef;
use candle_core::{DType, Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Lora(#[from] LoraError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("--dtype bf16 needs a CUDA GPU (build with --features cuda); on the CPU use --dtype f16 (half the memory) or f32")]
    Bf16OnCpu,
    #[error("{0}: the LoRA has no weights for this pipeline's UNet or text encoders")]
    LoraMatchesNothing(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
}

impl RenderError {
    /// Errors the user can fix by changing what they asked for (exit code 2), as opposed to a
    /// failure while computing.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RenderError::Source(SourceError::Hub(_)) | RenderError::Io { .. } | RenderError::Tensor(_) => false,
            RenderError::Generate(g) => !matches!(g, GenerateError::Model(_) | GenerateError::VaeOverflow { .. }),
            _ => true,
        }
    }
}

/// What to render. `None` fields take the pipeline's own defaults (see [`Renderer::settings`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenderSpec {
    /// Diffusers pipeline folder or Hub repo.
    pub model: ModelRef,
    /// LoRA: a .safetensors file, a folder, or a Hub repo.
    pub lora: Option<ModelRef>,
    pub lora_scale: f64,
    pub lora_mode: LoraMode,
    pub prompt: String,
    pub negative: String,
    pub steps: usize,
    /// Classifier-free guidance; `None`: 7.5 for SD 1.x, 5.0 for SDXL (diffusers' defaults).
    pub guidance: Option<f64>,
    /// `None`: the pipeline's scheduler_config.json.
    pub scheduler: Option<SchedulerKind>,
    /// Keys set over the pipeline's scheduler_config.json (Karras sigmas, timestep spacing,
    /// steps offset); empty in specs written before they existed.
    #[serde(default, skip_serializing_if = "SchedulerOverrides::is_empty")]
    pub scheduler_config: SchedulerOverrides,
    /// `None`: the UNet's sample_size × the VAE's downscale factor (512 for SD 1.5, 1024 for SDXL).
    pub width: Option<usize>,
    pub height: Option<usize>,
    #[serde(with = "dtype_name")]
    pub dtype: DType,
    /// Replacement VAE: a folder or a Hub repo.
    pub vae: Option<ModelRef>,
    /// The generator a seed's noise comes from; specs written before `--noise` existed used
    /// hfsky's own, so that is what an absent field means.
    #[serde(default = "legacy_noise")]
    pub noise: NoiseKind,
}

fn legacy_noise() -> NoiseKind {
    NoiseKind::Hfsky
}

impl RenderSpec {
    pub fn new(model: ModelRef, prompt: impl Into<String>) -> Self {
        RenderSpec {
            model,
            lora: None,
            lora_scale: 1.0,
            lora_mode: LoraMode::Live,
            prompt: prompt.into(),
            negative: String::new(),
            steps: 30,
            guidance: None,
            scheduler: None,
            scheduler_config: SchedulerOverrides::default(),
            width: None,
            height: None,
            dtype: DType::F32,
            vae: None,
            noise: NoiseKind::TorchCpu,
        }
    }
}

/// Settings a user gave explicitly (`generate`'s and `compare`'s flags); `None`: not given, so
/// whatever the spec already holds (the engine's default, or a card's validation setting) stays.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub lora_scale: Option<f64>,
    pub negative: Option<String>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    pub scheduler: Option<SchedulerKind>,
    pub scheduler_config: SchedulerOverrides,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub dtype: Option<DType>,
    pub vae: Option<ModelRef>,
    pub noise: Option<NoiseKind>,
}

impl Overrides {
    pub fn apply(&self, spec: &mut RenderSpec) {
        spec.lora_scale = self.lora_scale.unwrap_or(spec.lora_scale);
        spec.negative = self.negative.clone().unwrap_or(std::mem::take(&mut spec.negative));
        spec.steps = self.steps.unwrap_or(spec.steps);
        spec.guidance = self.guidance.or(spec.guidance);
        spec.scheduler = self.scheduler.or(spec.scheduler);
        let (mine, theirs) = (&self.scheduler_config, &mut spec.scheduler_config);
        theirs.use_karras_sigmas = mine.use_karras_sigmas.or(theirs.use_karras_sigmas);
        theirs.timestep_spacing = mine.timestep_spacing.or(theirs.timestep_spacing);
        theirs.steps_offset = mine.steps_offset.or(theirs.steps_offset);
        spec.width = self.width.or(spec.width);
        spec.height = self.height.or(spec.height);
        spec.dtype = self.dtype.unwrap_or(spec.dtype);
        spec.vae = self.vae.clone().or(spec.vae.take());
        spec.noise = self.noise.unwrap_or(spec.noise);
    }
}

pub fn dtype_label(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

pub fn parse_dtype(name: &str) -> Option<DType> {
    match name.to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Some(DType::F32),
        "f16" | "fp16" | "float16" => Some(DType::F16),
        "bf16" | "bfloat16" => Some(DType::BF16),
        _ => None,
    }
}

mod dtype_name {
    use candle_core::DType;
    pub fn serialize<S: serde::Serializer>(d: &DType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::dtype_label(*d))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DType, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(d)?;
        super::parse_dtype(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown dtype {name:?} (f32, f16 or bf16)")))
    }
}

/// The settings a render actually used, every default filled in.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResolvedSettings {
    pub model: String,
    pub model_dir: std::path::PathBuf,
    pub architecture: Architecture,
    pub lora: Option<String>,
    pub lora_sha256: Option<String>,
    pub lora_scale: f64,
    pub lora_mode: Option<LoraMode>,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: String,
    /// The scheduler config keys in effect (the pipeline's file, the spec's overrides, and the
    /// sampling class's defaults for what neither says): Karras sigmas only where the class
    /// reads them (Euler, DPM-Solver++).
    pub karras_sigmas: bool,
    pub timestep_spacing: String,
    pub steps_offset: usize,
    pub width: usize,
    pub height: usize,
    /// The side rendered when no size is asked for (UNet sample_size × VAE factor).
    pub default_size: usize,
    pub dtype: String,
    pub vae: Option<String>,
    /// `torch-cpu` or `hfsky`: whose generator turns a seed into noise.
    pub noise: String,
}

pub struct RenderedImage {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub settings: ImageSettings,
}

impl RenderedImage {
    pub fn to_image(&self) -> image::RgbImage {
        image::RgbImage::from_raw(self.width, self.height, self.rgb.clone()).expect("rgb buffer matches its size")
    }

    /// Writes the PNG with every setting in its text chunks.
    pub fn write_png(&self, path: &std::path::Path) -> Result<(), super::png_out::PngError> {
        super::png_out::write_png(path, self.width, self.height, &self.rgb, &self.settings.png_text())
    }
}

/// A [`RenderSpec`]'s references as local files: what [`Renderer::load`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    /// The pipeline folder (with `model_index.json`).
    pub model_dir: std::path::PathBuf,
    /// The replacement VAE's folder (with `config.json`).
    pub vae_dir: Option<std::path::PathBuf>,
    /// The LoRA's `.safetensors` file.
    pub lora_file: Option<std::path::PathBuf>,
}

impl ModelPaths {
    /// Resolves each reference once: local paths are checked, Hub repos are fetched into the
    /// hf-hub cache (the weights of the spec's dtype, `fp16` for half precision).
    pub async fn resolve(spec: &RenderSpec, client: &HubClient) -> Result<ModelPaths, RenderError> {
        let variant = variant_for(spec.dtype);
        let model_dir = resolve_pipeline(&spec.model, client, variant).await?;
        let vae_dir = match &spec.vae {
            Some(v) => Some(resolve_vae(v, client, variant).await?),
            None => None,
        };
        let lora_file = match &spec.lora {
            Some(l) => Some(resolve_lora(l, client).await?),
            None => None,
        };
        Ok(ModelPaths { model_dir, vae_dir, lora_file })
    }
}

/// A pipeline loaded for one [`RenderSpec`]; renders any number of seeds.
pub struct Renderer {
    spec: RenderSpec,
    pipeline: Pipeline,
    cond: Conditioning,
    resolved: ResolvedSettings,
    model_sha256: String,
}

impl Renderer {
    /// The device renders run on: the first CUDA GPU in a `--features cuda` build, else the CPU.
    pub fn default_device() -> Device {
        crate::devices::auto().0
    }

    /// Checks what can be checked before anything is downloaded or loaded.
    fn check(spec: &RenderSpec, device: &Device) -> Result<(), RenderError> {
        if spec.steps == 0 {
            return Err(RenderError::Invalid("steps must be at least 1".into()));
        }
        if spec.prompt.trim().is_empty() {
            return Err(RenderError::Invalid("the prompt is empty".into()));
        }
        if spec.dtype == DType::BF16 && device.is_cpu() {
            // candle's CPU backend has no bf16 matmul; quietly computing in another precision
            // would make the recorded settings lie.
            return Err(RenderError::Bf16OnCpu);
        }
        Ok(())
    }

    /// Resolves the spec's model, VAE and LoRA ([`ModelPaths::resolve`], downloading Hub repos)
    /// and loads them off the async executor.
    pub async fn fetch_and_load(spec: &RenderSpec, client: &HubClient, device: Device) -> Result<Renderer, RenderError> {
        Renderer::check(spec, &device)?;
        let paths = ModelPaths::resolve(spec, client).await?;
        let spec = spec.clone();
        // Loading and prompt encoding are CPU-bound; keep them off the async executor.
        tokio::task::spawn_blocking(move || Renderer::load(&spec, &paths, device))
            .await
            .map_err(|e| RenderError::Invalid(format!("loading the pipeline panicked: {e}")))?
    }

    /// Loads the pipeline, VAE and LoRA from local `paths` (the spec's references, resolved) and
    /// encodes the prompt; blocks for as long as that takes (seconds to minutes).
    pub fn load(spec: &RenderSpec, paths: &ModelPaths, device: Device) -> Result<Renderer, RenderError> {
        Renderer::check(spec, &device)?;
        let spec = spec.clone();
        let root = paths.model_dir.clone();
        let (vae_dir, lora_path) = (paths.vae_dir.clone(), paths.lora_file.clone());
        let files = PipelineFiles::open(&root)?;
        let unet_cfg: serde_json::Value = files.config("unet")?;
        let vae_cfg: serde_json::Value = files.config("vae")?;
        let factor = 1usize << vae_cfg["block_out_channels"].as_array().map(|v| v.len().saturating_sub(1)).unwrap_or(3);
        let default_side = unet_cfg["sample_size"].as_u64().unwrap_or(64) as usize * factor;
        let (width, height) = (spec.width.unwrap_or(default_side), spec.height.unwrap_or(default_side));
        check_size(width, height)?;
        let guidance = spec.guidance.unwrap_or(if files.architecture == Architecture::StableDiffusionXl { 5.0 } else { 7.5 });
        let variant = variant_for(spec.dtype);
        let mut pipeline = Pipeline::load(files.clone(), vae_dir.as_deref(), spec.dtype, device.clone())?;
        spec.scheduler_config.apply(&mut pipeline.scheduler_config);
        let kind = resolve_kind(spec.scheduler, &pipeline.scheduler_config).map_err(GenerateError::from)?;
        let sampled = pipeline.scheduler_config.for_kind(kind);
        // A scheduler config the sampler refuses (a steps offset past the trained timesteps)
        // fails here, before any rendering.
        crate::diffusion::schedulers::plan(kind, &pipeline.scheduler_config, spec.steps).map_err(GenerateError::from)?;
        let text = TextEncoders::load(&files, spec.dtype, &device)?;
        let lora_sha256 = match &lora_path {
            Some(path) => {
                let lora = LoraWeights::load(path)?;
                let n = pipeline.install_lora(&lora, spec.lora_scale, spec.lora_mode)? + text.install_lora(&lora, spec.lora_scale, spec.lora_mode)?;
                if n == 0 {
                    return Err(RenderError::LoraMatchesNothing(path.display().to_string()));
                }
                Some(crate::hash::sha256_file(path).map_err(|e| RenderError::Io { what: path.display().to_string(), source: e })?)
            }
            None => None,
        };
        let cond = text.conditioning(&spec.prompt, &spec.negative, height, width)?;
        let unet_weights = files.weights("unet", variant)?;
        let model_sha256 = unet_weights.sha256().map_err(|e| RenderError::Io { what: unet_weights.display(), source: e })?;
        let resolved = ResolvedSettings {
            model: spec.model.to_string(),
            model_dir: root,
            architecture: files.architecture,
            lora: lora_path.as_ref().map(|p| p.display().to_string()),
            lora_sha256,
            lora_scale: spec.lora_scale,
            lora_mode: spec.lora.is_some().then_some(spec.lora_mode),
            steps: spec.steps,
            guidance,
            scheduler: kind.class_name().to_string(),
            karras_sigmas: sampled.use_karras_sigmas,
            timestep_spacing: sampled.spacing().to_string(),
            steps_offset: sampled.steps_offset,
            width,
            height,
            default_size: default_side,
            dtype: dtype_label(spec.dtype).into(),
            vae: spec.vae.as_ref().map(ModelRef::to_string),
            noise: spec.noise.label().into(),
        };
        Ok(Renderer { spec, pipeline, cond, resolved, model_sha256 })
    }

    pub fn settings(&self) -> &ResolvedSettings {
        &self.resolved
    }

    pub fn spec(&self) -> &RenderSpec {
        &self.spec
    }

    /// Latents shape [1, C, h/f, w/f] of this render's size (for `--latents` files).
    pub fn latent_shape(&self) -> (usize, usize, usize, usize) {
        self.pipeline.latent_shape(self.resolved.height, self.resolved.width)
    }

    pub fn device(&self) -> &Device {
        &self.pipeline.device
    }

    /// One image from `seed` with the spec's generator: the initial latents, then Euler
    /// ancestral's step noise, drawn in that order from one stream (diffusers' order with
    /// `generator=torch.Generator("cpu").manual_seed(seed)` for `torch-cpu`).
    pub fn render(&self, seed: u64, progress: impl FnMut(usize)) -> Result<RenderedImage, RenderError> {
        let mut stream = NoiseStream::new(self.spec.noise, seed).drawn_in(self.spec.dtype);
        let noise = stream.initial(self.latent_shape(), &self.pipeline.device)?;
        self.render_stream(&noise, stream, Some(seed), None, progress)
    }

    /// One image from given initial noise; `latents_file` is recorded in the settings. Step
    /// noise comes from the spec's generator seeded with `seed` (0 when none), untouched by the
    /// initial draw, as diffusers does when `latents=` is passed with a generator.
    pub fn render_noise(
        &self,
        noise: &Tensor,
        seed: Option<u64>,
        latents_file: Option<String>,
        progress: impl FnMut(usize),
    ) -> Result<RenderedImage, RenderError> {
        let stream = NoiseStream::new(self.spec.noise, seed.unwrap_or(0)).drawn_in(self.spec.dtype);
        self.render_stream(noise, stream, seed, latents_file, progress)
    }

    fn render_stream(
        &self,
        noise: &Tensor,
        stream: NoiseStream,
        seed: Option<u64>,
        latents_file: Option<String>,
        mut progress: impl FnMut(usize),
    ) -> Result<RenderedImage, RenderError> {
        let r = &self.resolved;
        let image = self.pipeline.generate(&self.cond, noise, self.spec.scheduler, r.steps, r.guidance, stream, |i, _| progress(i))?;
        let (width, height, rgb) = to_rgb8(&image)?;
        let settings = ImageSettings {
            model: r.model.clone(),
            model_sha256: self.model_sha256.clone(),
            lora: r.lora.clone(),
            lora_sha256: r.lora_sha256.clone(),
            lora_scale: r.lora_scale,
            lora_mode: r.lora_mode,
            prompt: self.spec.prompt.clone(),
            negative_prompt: self.spec.negative.clone(),
            steps: r.steps,
            guidance_scale: r.guidance,
            scheduler: r.scheduler.clone(),
            karras_sigmas: r.karras_sigmas,
            timestep_spacing: r.timestep_spacing.clone(),
            steps_offset: r.steps_offset,
            width: r.width,
            height: r.height,
            seed,
            noise: r.noise.clone(),
            latents_file,
            dtype: r.dtype.clone(),
            vae: r.vae.clone(),
            hfsky_version: env!("CARGO_PKG_VERSION").into(),
        };
        Ok(RenderedImage { width, height, rgb, settings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json_with_dtype_names() {
        let mut s = RenderSpec::new(ModelRef::parse("tiny/sd15").unwrap(), "a photo of SKY");
        s.dtype = DType::F16;
        s.scheduler = Some(SchedulerKind::EulerAncestral);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["dtype"], "f16");
        assert_eq!(j["scheduler"], "euler-ancestral");
        assert_eq!(j["noise"], "torch-cpu");
        let back: RenderSpec = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(back, s);
        // A spec written before --noise existed meant hfsky's own generator.
        let mut old = j;
        old.as_object_mut().unwrap().remove("noise");
        assert_eq!(serde_json::from_value::<RenderSpec>(old).unwrap().noise, NoiseKind::Hfsky);
        assert!(serde_json::from_value::<RenderSpec>(serde_json::json!({"dtype": "f8"})).is_err());
    }

    #[test]
    fn bad_specs_are_bad_input() {
        let fixture = crate::diffusion::testing::pipeline_dir("tiny-sd15");
        let paths = ModelPaths { model_dir: fixture.clone(), vae_dir: None, lora_file: None };
        let mut s = RenderSpec::new(ModelRef::Local(fixture.clone()), "x");
        s.steps = 0;
        let e = Renderer::load(&s, &paths, Device::Cpu).err().unwrap();
        assert!(e.is_bad_input() && e.to_string().contains("steps"), "{e}");
        let mut s = RenderSpec::new(ModelRef::Local(fixture), "x");
        s.dtype = DType::BF16;
        let e = Renderer::load(&s, &paths, Device::Cpu).err().unwrap();
        assert!(matches!(e, RenderError::Bf16OnCpu));
    }
}
