//! The DreamBooth LoRA loop: prepare every example once (VAE latents cached on disk, captions
//! encoded once, or every step through the kept encoders with `train_text_encoder`), then for
//! each optimizer step draw a batch, noise it, predict, take the (min-SNR weighted) MSE,
//! backpropagate into the LoRA factors only, clip, AdamW, and write logs, checkpoints and
//! validation images. A step's randomness and data order depend only on (seed, step), so
//! `resume_from_checkpoint: latest` continues exactly where an interrupted run was.

use super::buckets::{self, BucketSpec};
use super::checkpoint::{self, Checkpoint};
use super::config::{CaptionSource, Precision, ResolvedPrecision, TrainConfig};
use super::examples::{cut, default_cache_dir, file_sha, pick_offset, square_box, time_ids, CacheError, CachedLatents, CropBox, LatentCache};
use super::lora_params::TrainableLora;
use super::loss_scale::LossScaler;
use super::memory::{self, MemoryPlan, StepShape};
use super::objective::{normal, step_rng, weighted_mse, Objective, Prediction};
use super::optim::{clip_grad_norm, learning_rate, Optimizer};
use super::validation_loss::{self, HeldOut};
use crate::dataset;
use crate::diffusion::autoencoder::VaeConfig;
use crate::diffusion::config::{Architecture, PipelineFiles};
use crate::diffusion::schedulers::NoiseSchedule;
use crate::diffusion::unet::SdxlConditioning;
use crate::generate::pipeline::{to_rgb8, GenerateError, Pipeline};
use crate::generate::prompts::TextEncoders;
use crate::generate::sampling::Conditioning;
use crate::names;
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Model(#[from] GenerateError),
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{}: {detail}", .path.display())]
    Io { path: PathBuf, detail: String },
    #[error("the loss became {value} at step {step}; training stopped. {kept} Try a lower learning_rate, precision f32, or max_grad_norm 1.0.")]
    NonFinite { step: usize, value: f32, kept: String },
    /// Writing or reading a checkpoint (a full disk is a failure, a checkpoint that does not
    /// fit is bad input: see `crate::exit`).
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Cache(#[from] super::examples::CacheError),
    #[error(transparent)]
    Lora(#[from] super::lora_params::LoraParamsError),
    /// The preflight estimate says the step cannot fit the device (checked before loading weights).
    #[error(transparent)]
    DoesNotFit(#[from] memory::DoesNotFit),
}

/// Writes the saved LoRA again in each other layout train.yaml's `lora_formats` lists, beside it.
fn write_other_formats(cfg: &TrainConfig, lora_file: &Path, unet: &crate::diffusion::unet::UNetConfig) -> Result<(), TrainError> {
    use crate::diffusion::lora::export::{BaseLayout, ExportFormat};
    let base = BaseLayout::from_unet_config(unet);
    for f in cfg.lora_formats.iter().filter(|f| **f != ExportFormat::Peft) {
        let out = cfg.output_dir.join(f.file_name());
        crate::diffusion::lora::LoraWeights::load(lora_file)
            .and_then(|l| l.export_to(*f, &base, &out))
            .map_err(|e| TrainError::Io { path: out.clone(), detail: e.to_string() })?;
    }
    Ok(())
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.to_path_buf(), detail: e.to_string() }
}

/// What the trainer reports while it runs (the CLI draws progress bars from these);
/// `ValidationLoss` is the held-out photos' loss after `step` (0: before training).
#[derive(Debug, Clone)]
pub enum Event {
    Skipped {
        file: PathBuf,
        reason: String,
    },
    Note(String),
    Preparing {
        done: usize,
        total: usize,
    },
    Started {
        total_steps: usize,
        start_step: usize,
        examples: usize,
        trainable_params: usize,
    },
    /// A finished optimizer step: `lr` is the scheduled learning rate; with Prodigy `d` is its
    /// adapted step size (the effective step is d × lr, prodigyopt's `d * lr`), `None` with AdamW.
    Step {
        step: usize,
        total: usize,
        loss: f32,
        lr: f64,
        d: Option<f64>,
        seconds: f64,
    },
    Checkpoint {
        path: PathBuf,
    },
    Validation {
        step: usize,
        images: Vec<PathBuf>,
    },
    ValidationLoss {
        step: usize,
        loss: f32,
    },
}

/// One prepared example: latent distributions (plain, and mirrored when random_flip), each with
/// its crop and, with `masked_loss`, its mask on the latent grid ([1, h, w]); and the index of its
/// prompt embedding.
pub(super) struct Example {
    pub(super) variants: Vec<(CachedLatents, CropBox, Option<Tensor>)>,
    pub(super) prompt: usize,
}

/// Encoded prompts: sequence [1, 77, D] and, for SDXL, pooled [1, P]. With
/// `train_text_encoder` the encoders are kept (`live`) and every step encodes its prompts through
/// them, so the text-encoder LoRA gets gradients; the cached embeddings are then unused.
pub(super) struct Prompts {
    texts: Vec<String>,
    seq: Vec<Tensor>,
    pooled: Vec<Option<Tensor>>,
    pub(super) live: Option<TextEncoders>,
    /// The caption each prompt was made from (None: the instance or class prompt alone), and
    /// the run's caption augmentation ([`super::caption_augment`]).
    captions: Vec<Option<String>>,
    pub(super) augment: Option<super::caption_augment::PromptAugment>,
}

impl Prompts {
    pub(super) fn index(&mut self, enc: &TextEncoders, text: &str) -> Result<usize, TrainError> {
        if let Some(i) = self.texts.iter().position(|t| t == text) {
            return Ok(i);
        }
        let (seq, pooled) = enc.encode(text)?;
        self.captions.push(None);
        self.texts.push(text.to_string());
        self.seq.push(seq.to_dtype(DType::F32)?);
        self.pooled.push(pooled.map(|p| p.to_dtype(DType::F32)).transpose()?);
        Ok(self.texts.len() - 1)
    }

    /// Prompt `i`'s (sequence, pooled) embeddings in f32: encoded now through the (trainable)
    /// encoders when they are kept, else the cached ones.
    pub(super) fn embeddings(&self, i: usize) -> Result<(Tensor, Option<Tensor>), TrainError> {
        match &self.live {
            Some(enc) => {
                let (seq, pooled) = enc.encode(&self.texts[i])?;
                Ok((seq.to_dtype(DType::F32)?, pooled.map(|p| p.to_dtype(DType::F32)).transpose()?))
            }
            None => Ok((self.seq[i].clone(), self.pooled[i].clone())),
        }
    }

    /// [`Prompts::index`] for a prompt made from `caption`, which caption augmentation may change.
    pub(super) fn index_captioned(&mut self, enc: &TextEncoders, text: &str, caption: Option<&str>) -> Result<usize, TrainError> {
        let i = self.index(enc, text)?;
        if self.captions[i].is_none() {
            self.captions[i] = caption.map(String::from);
        }
        Ok(i)
    }

    /// Prompt `i`'s embeddings for the sample `key` names (step, position in the run): its
    /// caption dropped or shuffled as the run's caption augmentation draws (no key, or no
    /// augmentation: [`Prompts::embeddings`]).
    pub(super) fn embeddings_for(&self, i: usize, key: Option<(u64, u64)>) -> Result<(Tensor, Option<Tensor>), TrainError> {
        use super::caption_augment::Drawn;
        let (Some(aug), Some(caption), Some((step, sample))) = (&self.augment, &self.captions[i], key) else {
            return self.embeddings(i);
        };
        match aug.rule.draw(caption, step, sample) {
            Drawn::AsIs => self.embeddings(i),
            Drawn::Dropped => self.embeddings(aug.instance.expect("encoded when caption_dropout is on")),
            Drawn::Shuffled(c) => {
                let enc = self.live.as_ref().or(aug.kept.as_ref()).expect("the encoders are kept with shuffle_tags");
                let (seq, pooled) = enc.encode(&aug.prompt(&c))?;
                Ok((seq.to_dtype(DType::F32)?, pooled.map(|p| p.to_dtype(DType::F32)).transpose()?))
            }
        }
    }
}

/// The modules diffusers' DreamBooth LoRA scripts adapt in the text encoders with
/// `--train_text_encoder` (CLIP attention).
pub const TEXT_ENCODER_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "out_proj"];

/// A LoRA on each text encoder's attention (`text_encoder`, and `text_encoder_2` for SDXL) at the
/// UNet LoRA's rank and alpha, DoRA when the UNet's is (as diffusers passes `use_dora` to both).
pub(super) fn text_encoder_loras(
    enc: &TextEncoders,
    rank: usize,
    alpha: f64,
    dora: bool,
    seed: u64,
    device: &Device,
) -> Result<Vec<TrainableLora>, TrainError> {
    let targets: Vec<String> = TEXT_ENCODER_TARGETS.map(String::from).to_vec();
    let mut out = Vec::new();
    for (i, (component, adapters)) in enc.components().iter().zip(&enc.adapters).enumerate() {
        let mut l = TrainableLora::new(component, adapters, &adapters.shapes(), &targets, rank, alpha, seed ^ ((i as u64 + 1) << 32), device)?;
        if dora {
            l.use_dora(adapters)?;
        }
        out.push(l);
    }
    Ok(out)
}

/// `c` cut from the autograd graph: a validation render must not keep the text encoders' graph
/// (and with it every sampling step's activations) alive.
fn detached(c: Conditioning) -> Conditioning {
    Conditioning {
        negative: c.negative.detach(),
        positive: c.positive.detach(),
        pooled: c.pooled.map(|(n, p)| (n.detach(), p.detach())),
        time_ids: c.time_ids,
    }
}

/// A run's sizes, from train.yaml and the pipeline's configs alone (no weights loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSizes {
    /// The training resolution in pixels: `resolution`, else the UNet's `sample_size` × the
    /// VAE's downscale factor (diffusers' default height/width).
    pub resolution: usize,
    /// The VAE's downscale factor (8 for SD 1.5 and SDXL).
    pub vae_factor: usize,
    /// The bucket rules with `bucketing: true`, with sides a multiple of the VAE's factor × 2
    /// per UNet downsampling; `None` trains every photo at the square.
    pub buckets: Option<BucketSpec>,
}

/// The sizes a run of `cfg` on the pipeline `files` trains at: what the trainer and the dry run
/// (`train-and-push --dry-run`) both place photos with. Errors: a pipeline config that does not
/// read (its category), a `resolution` or bucket key the model cannot use (bad input, naming the key).
pub fn run_sizes(cfg: &TrainConfig, files: &PipelineFiles) -> Result<RunSizes, TrainError> {
    let unet_json: serde_json::Value = files.config("unet").map_err(GenerateError::from)?;
    let vae_dir = files.component("vae").map_err(GenerateError::from)?;
    let f = VaeConfig::from_file(&vae_dir.join("config.json")).map_err(GenerateError::from)?.downscale();
    let native = unet_json["sample_size"].as_u64().unwrap_or(64) as usize * f;
    let res = cfg.resolution.unwrap_or(native);
    if !res.is_multiple_of(f) {
        return Err(TrainError::Input(format!("resolution: {res} is not a multiple of the VAE's downscale factor {f}")));
    }
    let buckets = if cfg.bucketing {
        let downsamplings = unet_json["down_block_types"].as_array().map_or(0, |b| b.len().saturating_sub(1));
        let multiple = f << downsamplings;
        Some(BucketSpec::new(res, cfg.min_bucket_reso, cfg.max_bucket_reso, cfg.bucket_reso_steps, multiple).map_err(TrainError::Input)?)
    } else {
        None
    };
    Ok(RunSizes { resolution: res, vae_factor: f, buckets })
}

/// Everything the model card and `train-and-push` need to know about a finished run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TrainSummary {
    pub base_model: String,
    /// The Hub id the model card names as `base_model` ([`crate::card::hub_base_model`]);
    /// `None` when `base_model` is a local folder with no known id.
    #[serde(default)]
    pub base_model_id: Option<String>,
    pub architecture: String,
    pub instance_prompt: String,
    pub resolution: usize,
    pub steps: usize,
    pub epochs: f64,
    pub rank: usize,
    pub alpha: f64,
    pub target_modules: Vec<String>,
    pub learning_rate: f64,
    /// The optimizer and its settings (runs from before `optimizer:` existed were AdamW).
    #[serde(default)]
    pub optimizer: super::optim::OptimizerSummary,
    pub lr_scheduler: String,
    pub train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub precision: String,
    pub min_snr_gamma: Option<f64>,
    pub noise_offset: f64,
    pub prior_preservation: Option<String>,
    pub captions: String,
    pub caption_template: String,
    /// Caption augmentation: the probability a caption was dropped for a step, and whether tags
    /// after the first `keep_tokens` were shuffled every step.
    #[serde(default)]
    pub caption_dropout: f64,
    #[serde(default)]
    pub shuffle_tags: bool,
    #[serde(default)]
    pub keep_tokens: usize,
    /// (file, training prompt) for every image trained on.
    pub examples: Vec<(String, String)>,
    /// The buckets trained on and how many photos each holds, the most first (one square with
    /// `bucketing: false`).
    #[serde(default)]
    pub buckets: Vec<buckets::BucketCount>,
    /// Each trained photo's bucket, original size and crop, in the order of `examples`.
    #[serde(default)]
    pub example_buckets: Vec<buckets::ExampleBucket>,
    pub skipped: Vec<(String, String)>,
    pub final_loss: Option<f32>,
    pub seconds: f64,
    /// The training process's peak resident memory (Linux `VmHWM`: loading, caching and
    /// training), in bytes; null where the OS does not report it.
    #[serde(default)]
    pub peak_host_memory_bytes: Option<u64>,
    /// The GPU memory in use at the highest point sampled (after each backward pass), in bytes;
    /// null on the CPU.
    #[serde(default)]
    pub peak_device_memory_bytes: Option<u64>,
    /// Whether gradient checkpointing ran (`auto` resolved), and the preflight estimate of a
    /// step's peak memory that decided it ([`memory::estimate`]), in bytes.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    #[serde(default)]
    pub estimated_step_memory_bytes: Option<u64>,
    pub validation: Option<ValidationSettings>,
    /// The held-out photos and how `val_loss` was measured; null without any.
    #[serde(default)]
    pub validation_loss: Option<validation_loss::ValidationLossSettings>,
    pub license: String,
    pub lora_file: String,
    /// The Hub dataset trained on (`dataset: namespace/name`), which the card names in `datasets`.
    #[serde(default)]
    pub hub_dataset: Option<String>,
}

/// The exact settings that reproduce the validation images.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ValidationSettings {
    pub prompt: String,
    pub negative_prompt: String,
    pub scheduler: String,
    pub steps: usize,
    pub guidance_scale: f64,
    pub width: usize,
    pub height: usize,
    pub lora_scale: f64,
    pub seeds: Vec<u64>,
    /// Files relative to the output folder, one per seed.
    pub images: Vec<String>,
}

/// The device a run uses, and for `auto` on the CPU why no GPU was used.
pub fn pick_device(choice: super::config::DeviceChoice) -> Result<(Device, Option<String>), TrainError> {
    use super::config::DeviceChoice::*;
    match choice {
        Cpu => Ok((Device::Cpu, None)),
        Cuda => crate::devices::open_cuda(0)
            .map(|d| (d, None))
            .map_err(|why| TrainError::Input(format!("device: cuda: {why}; or train on the CPU with device: cpu (or auto)"))),
        Auto => Ok(crate::devices::auto()),
    }
}

/// `precision` on `device` ([`Precision::resolve`]): bf16 support from the GPU's compute capability.
fn resolve_precision(p: Precision, device: &Device) -> Result<ResolvedPrecision, TrainError> {
    let gpu = !device.is_cpu();
    let bf16 = gpu && crate::devices::cuda().devices.first().is_some_and(|d| d.bf16);
    p.resolve(gpu, bf16).map_err(TrainError::Input)
}

pub(super) struct Prepared {
    pub(super) pipeline: Pipeline,
    pub(super) objective: Objective,
    pub(super) examples: Vec<Example>,
    pub(super) class_examples: Vec<Example>,
    pub(super) prompts: Prompts,
    pub(super) validation: Option<(Conditioning, String)>,
    pub(super) trained_on: Vec<(String, String)>,
    pub(super) skipped: Vec<(String, String)>,
    pub(super) res: usize,
    pub(super) xl: bool,
    pub(super) precision: ResolvedPrecision,
    pub(super) memory: MemoryPlan,
    pub(super) held_out: HeldOut,
}

pub struct Trainer<'a> {
    pub cfg: &'a TrainConfig,
    /// The resolved pipeline folder (local, or the hf-hub snapshot of `cfg.base_model`).
    pub model_dir: PathBuf,
    pub cache_dir: Option<PathBuf>,
}

impl Trainer<'_> {
    /// Loads the model, reads and prepares every example (latents, prompt embeddings).
    pub(super) fn prepare(&self, on: &mut dyn FnMut(Event)) -> Result<Prepared, TrainError> {
        let cfg = self.cfg;
        let (device, why_cpu) = pick_device(cfg.device)?;
        if let Some(why) = why_cpu {
            on(Event::Note(format!("device auto: training on the CPU ({why})")));
        }
        let precision = resolve_precision(cfg.precision, &device)?;
        let dtype = precision.weights;
        let files = PipelineFiles::open(&self.model_dir).map_err(GenerateError::from)?;
        let xl = files.architecture == Architecture::StableDiffusionXl;

        // Photos and captions first: bad input should fail before any model is loaded.
        let dataset_dir = cfg.dataset.folder().map_err(|e| TrainError::Input(e.to_string()))?;
        let images = dataset::list_images(dataset_dir).map_err(|e| TrainError::Input(e.to_string()))?;
        let found = dataset::captions::load_captions(dataset_dir, &images, cfg.captions, cfg.caption_column.as_deref())
            .map_err(|e| TrainError::Input(e.to_string()))?;
        on(Event::Note(found.describe()));
        let (caption_source, captions) = (found.source, found.captions);
        let mut loaded: Vec<(PathBuf, dataset::images::LoadedImage, Option<String>)> = Vec::new();
        let mut skipped = Vec::new();
        for (path, caption) in images.iter().zip(captions) {
            match dataset::images::load_rgb(path) {
                Ok(img) => {
                    for c in &img.conversions {
                        on(Event::Note(format!("{}: {c}", path.display())));
                    }
                    loaded.push((path.clone(), img, caption));
                }
                Err(problem) => {
                    on(Event::Skipped { file: path.clone(), reason: problem.reason.clone() });
                    skipped.push((file_name(path), problem.reason));
                }
            }
        }
        if loaded.is_empty() {
            return Err(TrainError::Input(format!(
                "{}: none of the {} image(s) could be read; nothing to train on",
                dataset_dir.display(),
                images.len()
            )));
        }
        if caption_source == CaptionSource::Sidecar {
            let missing: Vec<String> = loaded.iter().filter(|(_, _, c)| c.is_none()).map(|(p, _, _)| file_name(p)).collect();
            if !missing.is_empty() {
                on(Event::Note(format!(
                    "{} image(s) have no caption .txt and train with the instance prompt alone: {}",
                    missing.len(),
                    missing.join(", ")
                )));
            }
        }

        // Resolution from the configs alone, so prompts can be encoded before the UNet is loaded.
        let RunSizes { resolution: res, vae_factor: f, buckets: spec } = run_sizes(cfg, &files)?;

        // Buckets from each photo's size alone, before any model is loaded: a photo too small for
        // any is skipped by name, and the largest bucket sizes the memory preflight (the square
        // when none fits: a step that cannot fit is said first).
        let placements = if let Some(spec) = spec {
            let table = spec.resolutions();
            let mut placements = Vec::new();
            for (path, img, caption) in std::mem::take(&mut loaded) {
                let (w, h) = img.rgb.dimensions();
                match spec.place(&table, w, h) {
                    Ok(p) => {
                        placements.push(Some(p));
                        loaded.push((path, img, caption));
                    }
                    Err(reason) => {
                        on(Event::Skipped { file: path.clone(), reason: reason.clone() });
                        skipped.push((file_name(&path), reason));
                    }
                }
            }
            let keys: Vec<(u32, u32)> = placements.iter().flatten().map(|p| (p.bucket.1, p.bucket.0)).collect();
            on(Event::Note(format!("aspect-ratio buckets at {res} px: {}", buckets::describe(&buckets::summary(&keys)))));
            placements
        } else {
            vec![None; loaded.len()]
        };
        let largest = placements.iter().flatten().map(|p| p.bucket.0 as usize * p.bucket.1 as usize).max().unwrap_or(res * res);
        let masks = if cfg.masked_loss {
            let mut masks = Vec::new();
            for (path, img, _) in &loaded {
                masks.push(super::mask::load(path, img.rgb.dimensions(), img.alpha.as_ref()).map_err(TrainError::Input)?);
            }
            let bare: Vec<String> = loaded.iter().zip(&masks).filter(|(_, m)| m.is_none()).map(|((p, _, _), _)| file_name(p)).collect();
            if !bare.is_empty() {
                on(Event::Note(format!(
                    "masked_loss: {} photo(s) have no mask ({} beside them or transparent pixels) and train unmasked, as kohya does: {}",
                    bare.len(),
                    crate::names::MASK_SUFFIX,
                    bare.join(", ")
                )));
            }
            masks
        } else {
            vec![None; loaded.len()]
        };

        // Memory, before any weight is loaded: the step's estimate against the device's free
        // memory decides `gradient_checkpointing: auto`, and a step that cannot fit stops here.
        let memory = self.memory_plan(&files, &device, dtype, res, f, largest)?;
        if loaded.is_empty() {
            return Err(TrainError::Input(format!(
                "{}: no photo fits a bucket (each was too small; see above): use larger photos, lower min_bucket_reso, or bucketing: false",
                cfg.dataset
            )));
        }
        if let Some(note) = &memory.note {
            on(Event::Note(note.clone()));
        }

        // Held-out photos go last and are prepared with the others, then split off below. They are
        // chosen among the photos that fit a bucket, so a photo skipped as too small is never one.
        let items: Vec<_> = loaded.into_iter().zip(placements).zip(masks).map(|((l, p), m)| (l, p, m)).collect();
        let (items, held_plan) = validation_loss::hold_out(dataset_dir, cfg.validation_split, cfg.seed, items, |((p, _, _), _, _)| p.as_path())
            .map_err(TrainError::Input)?;
        let (mut loaded, mut placements, mut masks) = (Vec::new(), Vec::new(), Vec::new());
        for (l, p, m) in items {
            loaded.push(l);
            placements.push(p);
            masks.push(m);
        }

        // Encode captions (and the validation prompt) once, before the UNet is loaded, and drop
        // the text encoders then: an SDXL pipeline's two encoders are 3.3 GB in f32 that would
        // otherwise sit beside the 10 GB UNet. Prior preservation generates class images with
        // the whole pipeline, so it keeps them until that is done; train_text_encoder keeps them
        // for the whole run.
        let text = TextEncoders::load(&files, dtype, &device)?;
        let mut prompts = Prompts { texts: vec![], seq: vec![], pooled: vec![], live: None, captions: vec![], augment: None };
        let mut trained_on = Vec::new();
        let mut prompt_ids = Vec::new();
        for (path, _, caption) in &loaded {
            let prompt = cfg.prompt_for(caption.as_deref());
            prompt_ids.push(prompts.index_captioned(&text, &prompt, cfg.caption_in_prompt(caption.as_deref()))?);
            trained_on.push((file_name(path), prompt));
        }
        let captions: Vec<String> = prompts.captions.iter().flatten().cloned().collect();
        prompts.augment = super::caption_augment::PromptAugment::prepare(cfg, &mut prompts, &text, &captions, &files, dtype, on)?;
        let validation = match &cfg.validation_prompt {
            Some(p) => Some((text.conditioning(p, "", res, res)?, p.clone())),
            None => None,
        };
        let text = if cfg.with_prior_preservation || cfg.train_text_encoder || cfg.shuffle_tags {
            Some(text)
        } else {
            drop(text);
            crate::runtime::release_free_memory();
            None
        };

        let pipeline = Pipeline::load(files.clone(), None, dtype, device.clone())?;
        let prediction = Prediction::from_config(&pipeline.scheduler_config.prediction_type).map_err(TrainError::Input)?;
        let objective = Objective {
            schedule: NoiseSchedule::new(&pipeline.scheduler_config).map_err(GenerateError::from)?,
            prediction,
            min_snr_gamma: cfg.min_snr_gamma,
            noise_offset: cfg.noise_offset,
            timestep: None,
        };

        let vae_weights = files.weights("vae", crate::generate::pipeline::variant_for(dtype)).map_err(GenerateError::from)?;
        let vae_sha = vae_weights.sha256().map_err(|e| CacheError::Io { path: vae_weights.files[0].clone(), detail: e.to_string() })?;
        let mut cache = LatentCache::new(self.cache_dir.clone().unwrap_or_else(default_cache_dir), vae_sha);
        let mut examples = Vec::new();
        let mut crop_rng = step_rng(cfg.seed, u64::MAX, 1);
        for (i, ((path, img, _), &p)) in loaded.iter().zip(&prompt_ids).enumerate() {
            on(Event::Preparing { done: i, total: loaded.len() });
            let sha = file_sha(path)?;
            let mirrors: &[bool] = if cfg.random_flip { &[false, true] } else { &[false] };
            // One crop offset per image, drawn from the seed, since the latents are cached.
            let (w, h) = img.rgb.dimensions();
            let boxes: Vec<CropBox> = match &placements[i] {
                Some(p) => {
                    let offset = buckets::pick_crop(p, cfg.center_crop, &mut crop_rng);
                    mirrors.iter().map(|&m| buckets::crop_box((w, h), p, offset, m)).collect()
                }
                None => {
                    let offset = pick_offset(w, h, res as u32, cfg.center_crop, &mut crop_rng);
                    mirrors.iter().map(|&m| square_box(w, h, res as u32, offset, m)).collect()
                }
            };
            let mut variants = Vec::new();
            for b in boxes {
                let latents = cache.get_or_encode(pipeline.vae()?, &sha, &b, &cut(&img.rgb, &b), &device)?;
                let mask = masks[i].as_ref().map(|m| super::mask::latent_mask(m, &b, f as u32, &device)).transpose()?;
                variants.push((latents, b, mask));
            }
            examples.push(Example { variants, prompt: p });
        }
        on(Event::Preparing { done: loaded.len(), total: loaded.len() });
        on(Event::Note(format!("latents: {} from cache, {} encoded", cache.hits, cache.misses)));
        let held_out = HeldOut::split_off(&mut examples, &mut trained_on, held_plan);
        if !held_out.is_empty() {
            let names: Vec<&str> = held_out.photos.iter().map(|(f, _)| f.as_str()).collect();
            on(Event::Note(format!("held out of training for val_loss: {}", names.join(", "))));
        }

        let class_examples = match &text {
            Some(text) if cfg.with_prior_preservation => {
                super::prior::class_examples(cfg, &pipeline, text, res, &mut prompts, &mut cache, &device, on)?
            }
            _ => Vec::new(),
        };
        if cfg.train_text_encoder {
            prompts.live = text;
        } else if let (Some(aug), true) = (prompts.augment.as_mut(), cfg.shuffle_tags) {
            aug.kept = text;
        } else {
            drop(text);
        }
        // Latents are cached: the VAE comes back only for validation renders.
        let mut pipeline = pipeline;
        pipeline.unload_vae();
        Ok(Prepared { pipeline, objective, examples, class_examples, prompts, validation, trained_on, skipped, res, xl, precision, memory, held_out })
    }

    /// [`memory::plan`] for this run: the UNet's parameter count and the LoRA's from the weight
    /// headers (nothing is loaded), the device's free memory, and the step's shape (prior
    /// preservation doubles the batch held for one backward pass).
    /// `largest` is the largest bucket's pixel count (resolution² without buckets): activations
    /// grow with it.
    fn memory_plan(
        &self,
        files: &PipelineFiles,
        device: &Device,
        dtype: DType,
        res: usize,
        downscale: usize,
        largest: usize,
    ) -> Result<MemoryPlan, TrainError> {
        let cfg = self.cfg;
        let unet_dir = files.component("unet").map_err(GenerateError::from)?;
        let ucfg = crate::diffusion::unet::UNetConfig::from_file(&unet_dir.join("config.json")).map_err(GenerateError::from)?;
        let plan = ucfg.plan().map_err(|e| TrainError::Input(format!("{}: {e}", unet_dir.join("config.json").display())))?;
        let w = files.weights("unet", crate::generate::pipeline::variant_for(dtype)).map_err(GenerateError::from)?;
        let header = crate::diffusion::weights::SafetensorsFiles::open(&w.files).map_err(|e| GenerateError::Model(format!("unet: {e}")))?;
        let (mut unet_params, mut lora_params) = (0u64, 0u64);
        for (name, shape) in header.shapes() {
            unet_params += shape.iter().product::<usize>() as u64;
            if let (Some(module), [out, inp]) = (name.strip_suffix(".weight"), shape) {
                if cfg.target_modules.iter().any(|t| super::lora_params::matches_target(module, t)) {
                    lora_params += (cfg.rank * (out + inp)) as u64;
                }
            }
        }
        // train_text_encoder: the encoders stay loaded beside the UNet and their attention gets
        // factors too (their activations, one 77-token sequence per image, are negligible);
        // shuffle_tags keeps them too, to encode each step's prompts, without factors.
        if cfg.train_text_encoder || cfg.shuffle_tags {
            let encoders: &[&str] =
                if files.architecture == Architecture::StableDiffusionXl { &["text_encoder", "text_encoder_2"] } else { &["text_encoder"] };
            for enc in encoders {
                let w = files.weights(enc, crate::generate::pipeline::variant_for(dtype)).map_err(GenerateError::from)?;
                let header = crate::diffusion::weights::SafetensorsFiles::open(&w.files).map_err(|e| GenerateError::Model(format!("{enc}: {e}")))?;
                for (name, shape) in header.shapes() {
                    unet_params += shape.iter().product::<usize>() as u64;
                    if let (Some(module), [out, inp]) = (name.strip_suffix(".weight"), shape) {
                        if cfg.train_text_encoder && TEXT_ENCODER_TARGETS.iter().any(|t| super::lora_params::matches_target(module, t)) {
                            lora_params += (cfg.rank * (out + inp)) as u64;
                        }
                    }
                }
            }
        }
        // Prodigy keeps two more f32 tensors per trainable value than AdamW (p0 and s).
        if cfg.optimizer == super::config::OptimizerKind::Prodigy {
            lora_params += lora_params / 2;
        }
        let batch = cfg.train_batch_size * if cfg.with_prior_preservation { 2 } else { 1 };
        let shape = StepShape { resolution: res, batch, checkpointing: false, dtype_bytes: dtype.size_in_bytes() };
        let (available, what) = if device.is_cpu() {
            (crate::devices::cpu().memory_free_bytes, "machine".to_string())
        } else {
            let gpu = crate::devices::cuda().devices.into_iter().next();
            (gpu.as_ref().and_then(|d| d.memory_free_bytes), gpu.map(|d| format!("GPU ({})", d.name)).unwrap_or_else(|| "GPU".into()))
        };
        let bucket_ratio = largest as f64 / (res * res) as f64;
        Ok(memory::plan(cfg.gradient_checkpointing, shape, available, &what, !device.is_cpu(), |s| {
            let mut m = memory::estimate_plan(&plan, unet_params, lora_params, downscale, s);
            m.activations = (m.activations as f64 * bucket_ratio) as u64;
            m
        })?)
    }

    pub fn run(&self, on: &mut dyn FnMut(Event)) -> Result<TrainSummary, TrainError> {
        let cfg = self.cfg;
        let started = Instant::now();
        let Prepared {
            mut pipeline,
            objective,
            examples,
            class_examples,
            prompts,
            validation,
            trained_on,
            skipped,
            res,
            xl,
            precision,
            memory,
            held_out,
        } = self.prepare(on)?;
        // f16 frozen weights: dynamic loss scaling, as accelerate's fp16 mixed precision does.
        let mut scaler = precision.loss_scaling.then(LossScaler::default);
        let device = pipeline.device.clone();
        pipeline.unet.set_gradient_checkpointing(memory.checkpointing);
        let mut peak_device: Option<u64> = None;

        // LoRA factors and optimizer.
        let shapes = pipeline.unet_adapters.shapes();
        let alpha = cfg.alpha.unwrap_or(cfg.rank as f64);
        let mut lora = TrainableLora::new("unet", &pipeline.unet_adapters, &shapes, &cfg.target_modules, cfg.rank, alpha, cfg.seed, &device)?;
        match cfg.network {
            super::config::Network::Lora => {}
            super::config::Network::Locon => drop(lora.add_locon(&pipeline.unet_adapters, cfg.seed)?),
            super::config::Network::Dora => lora.use_dora(&pipeline.unet_adapters)?,
        }
        let te_loras = match &prompts.live {
            Some(enc) => text_encoder_loras(enc, cfg.rank, alpha, lora.is_dora(), cfg.seed, &device)?,
            None => Vec::new(),
        };
        let loras: Vec<&TrainableLora> = std::iter::once(&lora).chain(&te_loras).collect();
        let vars: Vec<&candle_core::Var> = loras.iter().flat_map(|l| l.vars()).collect();
        let unet_vars = lora.vars().len();
        let text_encoder_lr = cfg.text_encoder_lr.unwrap_or(cfg.learning_rate);
        let mut opt = Optimizer::for_config(cfg, &vars)?;
        if let Some(note) = super::prodigy::learning_rate_note(cfg) {
            on(Event::Note(note));
        }

        let per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps;
        // Each example's bucket, (h, w): batches are drawn from one at a time.
        let bucket_keys: Vec<(u32, u32)> = examples.iter().map(|e| e.variants[0].1.target_size).collect();
        let batches_per_epoch = buckets::batches_per_epoch(&bucket_keys, cfg.train_batch_size);
        let total_steps = match (cfg.max_steps, cfg.num_epochs) {
            (Some(s), _) => s,
            (None, Some(e)) if cfg.bucketing => (e * batches_per_epoch).div_ceil(cfg.gradient_accumulation_steps),
            (None, Some(e)) => (e * examples.len()).div_ceil(per_step),
            (None, None) => 500,
        };
        std::fs::create_dir_all(&cfg.output_dir).map_err(io_err(&cfg.output_dir))?;
        let ckpt_dir = cfg.output_dir.join("checkpoints");
        let mut start_step = 0;
        if let Some(spec) = &cfg.resume_from_checkpoint {
            let ck = Checkpoint::find(&ckpt_dir, spec)?;
            if let Some(saved) = ck.restore(&loras, &mut opt)? {
                scaler = scaler.map(|_| saved);
            }
            start_step = ck.step;
            on(Event::Note(format!("resuming from {} (step {})", ck.dir.display(), ck.step)));
        }
        let log_path = cfg.output_dir.join(names::TRAINING_LOG);
        checkpoint::truncate_log(&log_path, start_step).map_err(io_err(&log_path))?;
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io_err(&log_path))?;

        on(Event::Started { total_steps, start_step, examples: examples.len(), trainable_params: loras.iter().map(|l| l.num_params()).sum() });
        let scaling = pipeline.vae_config().scaling_factor;
        let shift = pipeline.vae_config().shift_factor;
        let mut final_loss = None;
        let val_every = validation_loss::every(cfg.validation_steps, total_steps);
        let val_loss = |pipeline: &Pipeline| held_out.loss(pipeline, &objective, &prompts, scaling, shift, xl, cfg.seed);
        let mut final_val_loss = None;
        if !held_out.is_empty() && start_step == 0 {
            let v = val_loss(&pipeline)?;
            writeln!(log, "{}", serde_json::json!({ "step": 0, "val_loss": v })).map_err(io_err(&log_path))?;
            on(Event::ValidationLoss { step: 0, loss: v });
        }
        let mut last_ckpt: Option<PathBuf> = checkpoint::latest_complete(&ckpt_dir);
        for step in start_step..total_steps {
            let t0 = Instant::now();
            let lr = learning_rate(cfg.learning_rate, cfg.lr_scheduler, cfg.lr_warmup_steps, step, total_steps);
            // diffusers' two parameter groups: one schedule, each group scaled from its own rate.
            let te_lr = learning_rate(text_encoder_lr, cfg.lr_scheduler, cfg.lr_warmup_steps, step, total_steps);
            let lrs: Vec<f64> = (0..vars.len()).map(|i| if i < unet_vars { lr } else { te_lr }).collect();
            let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut step_loss = 0f32;
            for micro in 0..cfg.gradient_accumulation_steps {
                let first = (step * cfg.gradient_accumulation_steps + micro) * cfg.train_batch_size;
                let mut rng = step_rng(cfg.seed, step as u64, micro as u64);
                let idx: Vec<usize> = if cfg.bucketing {
                    buckets::micro_batch(cfg.seed, step * cfg.gradient_accumulation_steps + micro, &bucket_keys, cfg.train_batch_size)
                } else {
                    (first..first + cfg.train_batch_size).map(|k| epoch_order(cfg.seed, k, examples.len())).collect()
                };
                let keys = super::caption_augment::SampleKeys { step: step as u64, first: first as u64 };
                let mut loss = batch_loss(&pipeline, &objective, &examples, &idx, &prompts, Some(keys), scaling, shift, xl, &mut rng)?;
                if !class_examples.is_empty() {
                    let cidx: Vec<usize> =
                        (first..first + cfg.train_batch_size).map(|k| epoch_order(cfg.seed ^ 0xC1A55, k, class_examples.len())).collect();
                    let prior = batch_loss(&pipeline, &objective, &class_examples, &cidx, &prompts, None, scaling, shift, xl, &mut rng)?;
                    loss = (loss + (prior * cfg.prior_loss_weight)?)?;
                }
                let loss = (loss / cfg.gradient_accumulation_steps as f64)?;
                let value = loss.to_scalar::<f32>()?;
                if !value.is_finite() {
                    let kept = match &last_ckpt {
                        Some(p) => format!("The last good checkpoint is {} (resume_from_checkpoint: latest).", p.display()),
                        None => "No checkpoint was written yet.".to_string(),
                    };
                    return Err(TrainError::NonFinite { step: step + 1, value, kept });
                }
                step_loss += value;
                let g = match &scaler {
                    Some(s) => s.scale_loss(&loss)?.backward()?,
                    None => loss.backward()?,
                };
                // The high point of a step: every activation and every gradient exist now.
                if let Some(used) = crate::devices::memory_in_use(&device) {
                    peak_device = Some(peak_device.map_or(used, |p| p.max(used)));
                }
                for (slot, v) in grads.iter_mut().zip(&vars) {
                    if let Some(gv) = g.get(v.as_tensor()) {
                        *slot = Some(match slot.take() {
                            Some(acc) => (acc + gv)?,
                            None => gv.clone(),
                        });
                    }
                }
            }
            let finite = match &scaler {
                Some(s) => s.unscale(&mut grads)?,
                None => true,
            };
            if finite {
                clip_grad_norm(&mut grads, cfg.max_grad_norm)?;
                opt.step_each(&vars, &grads, &lrs)?;
            }
            if let Some(s) = &mut scaler {
                if !s.update(finite) {
                    on(Event::Note(format!("step {}: inf/NaN gradients in f16, step skipped, loss scale now {}", step + 1, s.scale())));
                }
            }
            let seconds = t0.elapsed().as_secs_f64();
            let done = step + 1;
            let mut line = serde_json::json!({ "step": done, "loss": step_loss, "lr": lr, "seconds": seconds });
            let measured = if !held_out.is_empty() && validation_loss::due(done, val_every, total_steps) { Some(val_loss(&pipeline)?) } else { None };
            if let Some(v) = measured {
                line["val_loss"] = v.into();
                final_val_loss = Some(v);
            }
            // Prodigy's step size is d × lr: the log shows the d it found.
            let d = opt.prodigy_d();
            if let Some(d) = d {
                line["d"] = d.into();
            }
            writeln!(log, "{line}").map_err(io_err(&log_path))?;
            final_loss = Some(step_loss);
            on(Event::Step { step: done, total: total_steps, loss: step_loss, lr, d, seconds });
            if let Some(v) = measured {
                on(Event::ValidationLoss { step: done, loss: v });
            }
            if cfg.checkpointing_steps > 0 && done % cfg.checkpointing_steps == 0 && done < total_steps {
                log.flush().map_err(io_err(&log_path))?;
                let path = checkpoint::save(&ckpt_dir, done, &loras, &opt, scaler.as_ref(), cfg.checkpoints_total_limit)?;
                on(Event::Checkpoint { path: path.clone() });
                last_ckpt = Some(path);
            }
            if let (Some(every), Some((cond, prompt))) = (cfg.validation_steps, &validation) {
                if every > 0 && done % every == 0 && done < total_steps {
                    let dir = cfg.output_dir.join("validation").join(format!("step-{done:06}"));
                    let v = render_validation(cfg, &mut pipeline, prompts.live.as_ref(), cond, prompt, res, &dir, &cfg.output_dir)?;
                    on(Event::Validation { step: done, images: v.images.iter().map(|i| cfg.output_dir.join(i)).collect() });
                }
            }
        }

        let lora_file = cfg.output_dir.join(names::LORA_WEIGHTS);
        super::lora_params::save_all(&loras, &lora_file)?;
        write_other_formats(cfg, &lora_file, pipeline.unet.config())?;
        let validation_settings = match &validation {
            Some((cond, prompt)) => {
                let v = render_validation(cfg, &mut pipeline, prompts.live.as_ref(), cond, prompt, res, &cfg.output_dir, &cfg.output_dir)?;
                on(Event::Validation { step: total_steps, images: v.images.iter().map(|i| cfg.output_dir.join(i)).collect() });
                Some(v)
            }
            None => None,
        };
        let summary = TrainSummary {
            base_model: cfg.base_model.to_string(),
            base_model_id: crate::card::hub_base_model(&cfg.base_model.to_string(), cfg.base_model_id.as_deref()).ok().flatten(),
            architecture: if xl { "sdxl".into() } else { "sd".into() },
            instance_prompt: cfg.instance_prompt.clone(),
            resolution: res,
            steps: total_steps,
            epochs: if cfg.bucketing {
                (total_steps * cfg.gradient_accumulation_steps) as f64 / batches_per_epoch as f64
            } else {
                (total_steps * per_step) as f64 / examples.len() as f64
            },
            rank: cfg.rank,
            alpha,
            target_modules: cfg.target_modules.clone(),
            learning_rate: cfg.learning_rate,
            optimizer: super::optim::OptimizerSummary::of(cfg, &opt),
            lr_scheduler: cfg.lr_scheduler.as_str().to_string(),
            train_batch_size: cfg.train_batch_size,
            gradient_accumulation_steps: cfg.gradient_accumulation_steps,
            precision: precision.label(),
            min_snr_gamma: cfg.min_snr_gamma,
            noise_offset: cfg.noise_offset,
            prior_preservation: cfg.with_prior_preservation.then(|| cfg.class_prompt.clone().unwrap_or_default()),
            captions: cfg.captions.to_string(),
            caption_template: cfg.caption_template.clone(),
            caption_dropout: cfg.caption_dropout,
            shuffle_tags: cfg.shuffle_tags,
            keep_tokens: cfg.keep_tokens,
            buckets: buckets::summary(&bucket_keys),
            example_buckets: trained_on
                .iter()
                .zip(&examples)
                .map(|((file, _), e)| buckets::ExampleBucket::new(file.clone(), &e.variants[0].1))
                .collect(),
            examples: trained_on,
            skipped,
            final_loss,
            seconds: started.elapsed().as_secs_f64(),
            peak_host_memory_bytes: crate::runtime::peak_host_memory_bytes(),
            peak_device_memory_bytes: peak_device,
            gradient_checkpointing: memory.checkpointing,
            estimated_step_memory_bytes: Some(memory.estimate.total()),
            validation: validation_settings,
            validation_loss: held_out.settings(objective.schedule.alphas_cumprod.len(), val_every, final_val_loss),
            license: cfg.license.clone().unwrap_or_else(|| if xl { "openrail++".into() } else { "creativeml-openrail-m".into() }),
            lora_file: names::LORA_WEIGHTS.into(),
            hub_dataset: cfg.dataset.hub_repo().map(|r| r.to_string()),
        };
        let summary_path = cfg.output_dir.join(names::TRAINING_SUMMARY);
        std::fs::write(&summary_path, serde_json::to_vec_pretty(&summary).expect("serializable")).map_err(io_err(&summary_path))?;
        let cfg_path = cfg.output_dir.join(names::TRAIN_CONFIG);
        std::fs::write(&cfg_path, serde_yaml::to_string(cfg).expect("serializable")).map_err(io_err(&cfg_path))?;
        super::report::write(&cfg.output_dir)
            .map_err(|e| TrainError::Io { path: cfg.output_dir.join(names::TRAINING_REPORT), detail: e.to_string() })?;
        Ok(summary)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The example at global sample position `k`: a fresh permutation of the examples each epoch.
fn epoch_order(seed: u64, k: usize, n: usize) -> usize {
    let epoch = k / n;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut step_rng(seed, epoch as u64, 0xE90C));
    order[k % n]
}

#[allow(clippy::too_many_arguments)]
pub(super) fn batch_loss(
    pipeline: &Pipeline,
    objective: &Objective,
    examples: &[Example],
    idx: &[usize],
    prompts: &Prompts,
    keys: Option<super::caption_augment::SampleKeys>,
    scaling: f64,
    shift: Option<f64>,
    xl: bool,
    rng: &mut rand::rngs::StdRng,
) -> Result<Tensor, TrainError> {
    use rand::Rng;
    let device = &pipeline.device;
    let mut latents = Vec::new();
    let mut seq = Vec::new();
    let mut pooled = Vec::new();
    let mut ids = Vec::new();
    let mut masks = Vec::new();
    for (j, &i) in idx.iter().enumerate() {
        let ex = &examples[i];
        let (lat, b, mask) = &ex.variants[if ex.variants.len() > 1 { rng.random_range(0..ex.variants.len()) } else { 0 }];
        masks.push(mask.clone());
        let eps = normal(rng, lat.mean.dims(), device)?;
        latents.push(lat.sample(&eps, scaling, shift)?.unsqueeze(0)?);
        let (s, p) = prompts.embeddings_for(ex.prompt, keys.map(|k| (k.step, k.first + j as u64)))?;
        seq.push(s);
        pooled.extend(p);
        ids.push(Tensor::new(&[time_ids(b)], device)?);
    }
    let latents = Tensor::cat(&latents, 0)?;
    let nb = objective.noise(&latents, rng)?;
    let added = if xl { Some(SdxlConditioning { text_embeds: Tensor::cat(&pooled, 0)?, time_ids: Tensor::cat(&ids, 0)? }) } else { None };
    let pred = pipeline.unet.forward(&nb.noisy, &nb.timesteps, &Tensor::cat(&seq, 0)?, added.as_ref())?;
    // Without a mask in the batch the plain MSE (what an all-ones mask gives exactly); a photo
    // without one beside masked ones weighs all ones, as kohya's missing mask does.
    if masks.iter().all(Option::is_none) {
        return Ok(weighted_mse(&pred, &nb.target, &nb.weights)?);
    }
    let (_, _, h, w) = latents.dims4()?;
    let ones = Tensor::ones((1, h, w), DType::F32, device)?;
    let masks: Vec<Tensor> = masks.into_iter().map(|m| m.unwrap_or_else(|| ones.clone()).unsqueeze(0)).collect::<Result<_, _>>()?;
    Ok(super::mask::masked_weighted_mse(&pred, &nb.target, &Tensor::cat(&masks, 0)?, &nb.weights)?)
}

/// Renders the validation prompt for seeds seed..seed+n into `dir`; the returned settings name the
/// files relative to `root`.
#[allow(clippy::too_many_arguments)]
fn render_validation(
    cfg: &TrainConfig,
    pipeline: &mut Pipeline,
    live: Option<&TextEncoders>,
    cached: &Conditioning,
    prompt: &str,
    res: usize,
    dir: &Path,
    root: &Path,
) -> Result<ValidationSettings, TrainError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // The VAE is loaded only while rendering (it was freed once latents were cached), and with
    // `train_text_encoder` the trained encoders encode the prompt, as diffusers' validation does.
    pipeline.reload_vae()?;
    let live = live.map(|enc| enc.conditioning(prompt, "", res, res).map(detached)).transpose()?;
    let cond = live.as_ref().unwrap_or(cached);
    let xl = pipeline.files.architecture == Architecture::StableDiffusionXl;
    let guidance = cfg.validation_guidance.unwrap_or(if xl { 5.0 } else { 7.5 });
    let seeds: Vec<u64> = (0..cfg.num_validation_images as u64).map(|i| cfg.seed + i).collect();
    let mut images = Vec::new();
    for &seed in &seeds {
        let noise = crate::generate::settings::seeded_noise(seed, pipeline.latent_shape(res, res), &pipeline.device)?;
        let img = pipeline.generate(
            cond,
            &noise,
            None,
            cfg.validation_inference_steps,
            guidance,
            crate::diffusion::noise::NoiseStream::new(crate::diffusion::noise::NoiseKind::Hfsky, seed),
            |_, _| {},
        )?;
        let (w, h, px) = to_rgb8(&img)?;
        let path = dir.join(format!("validation-seed-{seed}.png"));
        let text = vec![("hfsky:prompt".to_string(), prompt.to_string()), ("hfsky:seed".to_string(), seed.to_string())];
        crate::generate::png_out::write_png(&path, w, h, &px, &text).map_err(|e| TrainError::Io { path: path.clone(), detail: e.to_string() })?;
        images.push(path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/"));
    }
    pipeline.unload_vae();
    Ok(ValidationSettings {
        prompt: prompt.to_string(),
        negative_prompt: String::new(),
        scheduler: pipeline.scheduler_config.class_name.clone(),
        steps: cfg.validation_inference_steps,
        guidance_scale: guidance,
        width: res,
        height: res,
        lora_scale: 1.0,
        seeds,
        images,
    })
}
