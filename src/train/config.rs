//! `train.yaml`: every training setting, typed. Each key is declared once, in [`train_keys!`]
//! below: its doc comment is both the `hfsky train --help` text and the reference, its type is
//! checked by serde (the file) and clap (the flag), and its default applies when neither sets it.
//! Unknown keys are an error naming the key (a typo silently falling back to a default is how a
//! run trains the wrong thing): serde's for the file, clap's for a flag. Flags override the file.

pub use crate::dataset::captions::CaptionSource;
pub use crate::dataset::hub_source::DatasetSource;
use crate::model_ref::ModelRef;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the training config: {detail}", .path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{origin}: {detail}")]
    Invalid { origin: String, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
    Linear,
}

impl LrSchedule {
    /// The name train.yaml, training_summary.json and the model card use.
    pub fn as_str(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
            LrSchedule::Linear => "linear",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Resolved per device ([`Precision::resolve`]): bf16 on a GPU that has it, f16 with dynamic
    /// loss scaling on one that does not (T4, V100), f32 on the CPU.
    #[default]
    Auto,
    /// f32 weights and compute.
    F32,
    /// bf16 frozen weights, f32 LoRA factors and optimizer state.
    Bf16,
    /// f16 frozen weights, f32 LoRA factors and optimizer state.
    F16,
}

/// What a run's `precision` became on its device: the frozen weights' dtype, and whether the loss
/// is scaled (f16 only: gradients that would underflow in half precision, as accelerate's fp16
/// mixed precision does with torch's `GradScaler`). LoRA factors and optimizer state stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedPrecision {
    pub weights: candle_core::DType,
    pub loss_scaling: bool,
}

impl ResolvedPrecision {
    /// How training_summary.json and the model card record it.
    pub fn label(&self) -> String {
        let dtype = match self.weights {
            candle_core::DType::BF16 => "bf16",
            candle_core::DType::F16 => "f16",
            _ => "f32",
        };
        if self.loss_scaling {
            format!("{dtype} (dynamic loss scaling)")
        } else {
            dtype.to_string()
        }
    }
}

impl Precision {
    /// The precision on a device: `gpu` (a CUDA device) and whether it has bf16 kernels
    /// (compute capability ≥ 8.0). `auto`: bf16 where supported, else f16 with loss scaling on a
    /// GPU, f32 on the CPU (half precision there is slower than f32 and candle's CPU backend has
    /// no bf16 matmul). An explicit choice the device cannot run is an error naming what to use.
    pub fn resolve(self, gpu: bool, bf16: bool) -> Result<ResolvedPrecision, String> {
        use candle_core::DType;
        let (weights, loss_scaling) = match self {
            Precision::Auto if gpu && bf16 => (DType::BF16, false),
            Precision::Auto if gpu => (DType::F16, true),
            Precision::Auto | Precision::F32 => (DType::F32, false),
            Precision::F16 => (DType::F16, true),
            Precision::Bf16 if !gpu => {
                return Err("precision: bf16 needs a GPU (candle's CPU backend has no bf16 matmul); use precision: auto, f32 or f16 on the CPU".into())
            }
            Precision::Bf16 if !bf16 => {
                return Err("precision: bf16 needs a GPU with compute capability 8.0 or newer (A100, A10, RTX 30/40, L4, H100); \
                            on this one use precision: auto (f16 with loss scaling) or f16"
                    .into())
            }
            Precision::Bf16 => (DType::BF16, false),
        };
        Ok(ResolvedPrecision { weights, loss_scaling })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when built with `--features cuda` and a GPU is present, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// The adapter trained on each target linear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Lora,
    /// LoRA on the target linears plus the resnet convolutions and attention projections.
    Locon,
    Dora,
}

/// The optimizer of the LoRA factors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// torch.optim.AdamW with the adam_* keys.
    #[default]
    #[value(name = "adamw")]
    AdamW,
    /// Prodigy (prodigyopt): Adam with a step size estimated during the run; learning_rate
    /// becomes a multiplier of it (1.0).
    Prodigy,
}

impl OptimizerKind {
    /// The name train.yaml, training_summary.json and the model card use.
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Prodigy => "prodigy",
        }
    }
}

/// Declares the train.yaml keys: for each, its doc, type and default, written once. It emits
/// [`TrainConfig`] (the resolved settings) and [`TrainKeys`] (every key optional: one layer, from
/// the file or from flags), with the overlay and the defaults between them. Four forms:
/// `key: T,` (required), `key: Option<T>,` (may stay unset), `key: bool = d,` (a switch: `--key`
/// alone means true) and `key: T = d,`; an optional `#[arg(…)]` after the doc adds clap settings.
macro_rules! train_keys {
    (@munch [$($done:tt)*] $(#[doc = $doc:expr])* $(#[arg($($arg:tt)*)])? $key:ident : Option<$inner:ty>, $($rest:tt)*) => {
        train_keys!(@munch [$($done)* [$(#[doc = $doc])*] [$($($arg)*)?] $key: Option<$inner>, $inner, (optional);] $($rest)*);
    };
    (@munch [$($done:tt)*] $(#[doc = $doc:expr])* $key:ident : bool = $default:expr, $($rest:tt)*) => {
        train_keys!(@munch [$($done)* [$(#[doc = $doc])*] [num_args = 0..=1, default_missing_value = "true"] $key: bool, bool, (default $default);] $($rest)*);
    };
    (@munch [$($done:tt)*] $(#[doc = $doc:expr])* $(#[arg($($arg:tt)*)])? $key:ident : $ty:ty = $default:expr, $($rest:tt)*) => {
        train_keys!(@munch [$($done)* [$(#[doc = $doc])*] [$($($arg)*)?] $key: $ty, $ty, (default $default);] $($rest)*);
    };
    (@munch [$($done:tt)*] $(#[doc = $doc:expr])* $(#[arg($($arg:tt)*)])? $key:ident : $ty:ty, $($rest:tt)*) => {
        train_keys!(@munch [$($done)* [$(#[doc = $doc])*] [$($($arg)*)?] $key: $ty, $ty, (required);] $($rest)*);
    };
    (@munch [$([$(#[doc = $doc:expr])*] [$($arg:tt)*] $key:ident: $ty:ty, $flag:ty, ($($resolve:tt)*);)*]) => {
        /// Every training setting, resolved (file, flags and defaults applied; paths rebased;
        /// values checked). Serialized as-is to `train_config.yaml`.
        #[derive(Debug, Clone, Serialize)]
        pub struct TrainConfig {
            $($(#[doc = $doc])* pub $key: $ty,)*
        }

        /// The train.yaml keys, each optional: what the file sets, or what flags set. `--help`
        /// lists them with their docs; an unknown one is an error from serde (file) or clap (flag).
        #[derive(clap::Args, Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[command(next_help_heading = "Training settings (train.yaml keys; a flag overrides the file)")]
        pub struct TrainKeys {
            $($(#[doc = $doc])* #[arg(long, $($arg)*)] pub $key: Option<$flag>,)*
        }

        impl TrainKeys {
            /// `over`'s keys where set, else `self`'s.
            pub fn overlay(self, over: TrainKeys) -> TrainKeys {
                TrainKeys { $($key: over.$key.or(self.$key),)* }
            }

            /// Defaults for the keys neither layer set; a required key unset is an error naming it.
            fn resolve(self) -> Result<TrainConfig, String> {
                Ok(TrainConfig { $($key: train_keys!(@resolve self.$key, $key, $($resolve)*),)* })
            }
        }
    };
    (@resolve $value:expr, $key:ident, required) => {
        $value.ok_or_else(|| format!("missing field `{}`", stringify!($key)))?
    };
    (@resolve $value:expr, $key:ident, optional) => {
        $value
    };
    (@resolve $value:expr, $key:ident, default $default:expr) => {
        $value.unwrap_or_else(|| $default)
    };
    ($($keys:tt)*) => {
        train_keys!(@munch [] $($keys)*);
    };
}

train_keys! {
    /// A diffusers pipeline: Hub repo id (`namespace/name[@revision]`, through hf-hub, honours
    /// --endpoint) or a local folder.
    base_model: ModelRef,
    /// The training photos: a local folder, or a Hub dataset repo `namespace/name` in the
    /// imagefolder layout (images + metadata.jsonl/csv; a `train/` split folder when there is
    /// one), downloaded into the HF cache. An existing local path wins over a repo id.
    dataset: DatasetSource,
    /// With a Hub dataset: its branch, tag or commit. Default: main.
    dataset_revision: Option<String>,
    /// The trigger phrase, e.g. "a photo of SKY".
    instance_prompt: String,
    /// Where captions come from: sidecar (`photo.txt`; images without one get the instance prompt
    /// alone; a folder with no sidecars but a metadata file uses that) | metadata
    /// (`metadata.jsonl` or `metadata.csv`, the Hub imagefolder's forms: file_name + the caption
    /// column) | instance (the instance prompt for every image). Default: sidecar.
    captions: CaptionSource = CaptionSource::Sidecar,
    /// The metadata column holding the captions. Default: the first of text, caption, prompt the
    /// file has (a file with none of them is an error that lists its columns).
    caption_column: Option<String>,
    /// How a per-image caption becomes the training prompt. Default: "{instance_prompt}, {caption}".
    caption_template: String = "{instance_prompt}, {caption}".into(),
    /// Probability (0–1) that a photo's caption is left out at a step, so it trains with the
    /// instance prompt alone (kohya's `caption_dropout_rate`, SimpleTuner's
    /// `caption_dropout_probability`, which drop to the empty prompt; here the trigger phrase
    /// stays). Drawn per photo and step from the seed. Default: 0.
    caption_dropout: f64 = 0.0,
    /// Shuffle the comma-separated tags of each caption every step (kohya's `shuffle_caption`);
    /// the instance prompt never moves. The text encoders then stay loaded to encode each
    /// step's prompts (their weights' memory). Default: false.
    shuffle_tags: bool = false,
    /// With shuffle_tags: how many leading tags of the caption keep their place (kohya's
    /// `keep_tokens`, counting comma-separated tags). Default: 0.
    keep_tokens: usize = 0,
    /// Square training size in pixels, a multiple of 8. Default: the model's native size.
    resolution: Option<usize>,
    /// Center crop. Default: one random crop per image, drawn from the seed.
    center_crop: bool = false,
    /// Also train on mirrored images (each step picks one of the two at random).
    random_flip: bool = false,
    /// Aspect-ratio buckets (kohya's `enable_bucket`): each photo trains at the bucket of about
    /// resolution² pixels nearest its shape, sides multiples of `bucket_reso_steps`, resized to
    /// cover it and cropped as little as possible; one that would need upscaling gets its own
    /// size rounded down instead (kohya's `bucket_no_upscale` rule); each batch comes from one
    /// bucket. false: every photo is cropped to a resolution² square. Default: true.
    bucketing: bool = true,
    /// The smallest bucket side in pixels (kohya's name). Default: resolution / 2.
    min_bucket_reso: Option<usize>,
    /// The largest bucket side in pixels (kohya's name). Default: 2 × resolution.
    max_bucket_reso: Option<usize>,
    /// Bucket sides are multiples of this many pixels (kohya's name). Default: 64.
    bucket_reso_steps: usize = 64,
    /// Weight the loss per latent pixel by a mask (kohya's `masked_loss`): `photo.mask.png`
    /// beside each photo (white trains, black is ignored), else the photo's alpha channel; a
    /// photo with neither trains unmasked. Default: false.
    masked_loss: bool = false,
    /// LoRA rank. Default: 4.
    rank: usize = 4,
    /// LoRA alpha; the update is scaled by alpha / rank. Default: = rank.
    alpha: Option<f64>,
    /// Linear layers (diffusers names, matched by suffix) that get a LoRA; as a flag, comma
    /// separated. Default: to_q, to_k, to_v, to_out.0.
    #[arg(value_delimiter = ',')]
    target_modules: Vec<String> = ["to_q", "to_k", "to_v", "to_out.0"].map(String::from).to_vec(),
    /// lora (a low-rank update of each target linear) | locon (also the resnet convolutions and
    /// attention projections, as kohya's LoCon; saved as PEFT Conv2d LoRA) | dora (DoRA as PEFT's
    /// `use_dora`: a magnitude per output row trained too; saved as `lora_magnitude_vector`).
    /// Default: lora.
    network: Network = Network::Lora,
    /// Also train a LoRA on the CLIP text encoder(s)' attention (`q_proj`, `k_proj`, `v_proj`,
    /// `out_proj`; both encoders for SDXL), as diffusers' train_dreambooth_lora(_sdxl).py
    /// `--train_text_encoder`: prompts are encoded every step and the encoders stay loaded.
    /// Saved as `text_encoder.…`/`text_encoder_2.…` PEFT keys in the same file. Default: false.
    train_text_encoder: bool = false,
    /// The text-encoder LoRA's AdamW learning rate (same schedule and warmup as `learning_rate`).
    /// Default: = learning_rate.
    text_encoder_lr: Option<f64>,
    /// Layouts the trained LoRA is written in, side by side (all pushed by `train-and-push`): peft
    /// (pytorch_lora_weights.safetensors, for diffusers and the Hub; always written), kohya
    /// (…_kohya.safetensors, for A1111/Forge; SDXL in SGM block names) and comfyui
    /// (…_comfyui.safetensors); as a flag, comma separated. Default: peft.
    #[arg(value_delimiter = ',')]
    lora_formats: Vec<crate::diffusion::lora::export::ExportFormat> = vec![crate::diffusion::lora::export::ExportFormat::Peft],
    /// adamw | prodigy: the LoRA factors' optimizer. Prodigy (the `prodigyopt` package, as
    /// diffusers' `--optimizer prodigy`) estimates its own step size during the run, so
    /// learning_rate is a multiplier (leave it at 1.0); it takes the adam_beta1, adam_beta2,
    /// adam_epsilon and adam_weight_decay keys too. Default: adamw.
    optimizer: OptimizerKind = OptimizerKind::AdamW,
    /// Learning rate: AdamW's step size, or with Prodigy the multiplier of its adapted one.
    /// Default: 1e-4 with adamw, 1.0 with prodigy.
    learning_rate: f64 = 1e-4,
    /// Learning-rate schedule after warmup: constant | linear | cosine. Default: constant.
    lr_scheduler: LrSchedule = LrSchedule::Constant,
    /// Optimizer steps over which the learning rate ramps up linearly to `learning_rate`.
    /// Default: 0.
    lr_warmup_steps: usize = 0,
    /// Optimizer steps. Default 500 unless `num_epochs` is given.
    max_steps: Option<usize>,
    /// Passes over the photos, instead of `max_steps`.
    num_epochs: Option<usize>,
    /// Images per step. Default: 1.
    train_batch_size: usize = 1,
    /// Micro-batches whose gradients are averaged into each optimizer step. Default: 1.
    gradient_accumulation_steps: usize = 1,
    /// Recompute each UNet resnet and transformer block in backward instead of keeping its
    /// activations: much less memory for about one extra forward per step; same gradients.
    /// auto | true | false: auto turns it on only when the step would not fit the device's free
    /// memory without it (the preflight estimate, `train::memory`). Default: auto.
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    gradient_checkpointing: super::memory::Checkpointing = super::memory::Checkpointing::Auto,
    /// Seed of every random draw (crops, noise, timesteps, validation images). Default: 0.
    seed: u64 = 0,
    /// auto | f32 | f16 | bf16 (GPU, compute capability ≥ 8.0): the frozen weights' precision;
    /// LoRA factors and AdamW state stay f32. Default: auto.
    precision: Precision = Precision::Auto,
    /// auto | cpu | cuda (auto on the CPU says why: no CUDA build, no driver, init error).
    /// Default: auto.
    device: DeviceChoice = DeviceChoice::Auto,
    /// Min-SNR loss weighting (Hang et al. 2023); 5.0 is the usual value. Default: off.
    min_snr_gamma: Option<f64>,
    /// Scale of a random per-channel shift added to the training noise (diffusers'
    /// `--noise_offset`: lets the model learn very dark or bright images). Default: 0.
    noise_offset: f64 = 0.0,
    /// Clip the global gradient norm to this. Default: 1.0.
    max_grad_norm: f64 = 1.0,
    /// AdamW β1. Default: 0.9.
    adam_beta1: f64 = 0.9,
    /// AdamW β2. Default: 0.999.
    adam_beta2: f64 = 0.999,
    /// AdamW decoupled weight decay. Default: 1e-2.
    adam_weight_decay: f64 = 1e-2,
    /// AdamW ε. Default: 1e-8.
    adam_epsilon: f64 = 1e-8,
    /// Prodigy's `d_coef`: scales every estimate of the step size (prodigyopt's preferred knob;
    /// 0.5–2 typical). Default: 1.0.
    prodigy_d_coef: f64 = 1.0,
    /// Prodigy's `use_bias_correction` (Adam's bias correction in the step size). Default: true,
    /// as diffusers' DreamBooth scripts.
    prodigy_use_bias_correction: bool = true,
    /// Prodigy's `safeguard_warmup`: keeps the learning rate out of the step-size estimate's
    /// denominator, so lr_warmup_steps does not inflate it. Default: true, as diffusers'
    /// DreamBooth scripts.
    prodigy_safeguard_warmup: bool = true,
    /// Prior preservation: also train on images of the class, so the class keeps its meaning.
    with_prior_preservation: bool = false,
    /// The class prompt for prior preservation, e.g. "a photo of the sky".
    class_prompt: Option<String>,
    /// Class images; missing ones are generated with the base model.
    class_data_dir: Option<PathBuf>,
    /// Class images to have (generated up to this many). Default: 100.
    num_class_images: usize = 100,
    /// Weight of the class images' loss. Default: 1.0.
    prior_loss_weight: f64 = 1.0,
    /// Prompt of the validation images (none: no validation).
    validation_prompt: Option<String>,
    /// Every N steps: render the validation images (with `validation_prompt`) and log `val_loss`
    /// (with held-out photos); both always at the end. Default: images only at the end,
    /// `val_loss` ten times a run.
    validation_steps: Option<usize>,
    /// Photos held out of training, chosen from the seed, whose loss at fixed timesteps and noise
    /// is logged as `val_loss` in training_log.jsonl (a curve that turns up means over-fitting).
    /// A `validation/` folder inside the dataset holds photos out by hand instead. Default: 0.
    validation_split: usize = 0,
    /// Validation images, seeds seed..seed+n. Default: 2.
    num_validation_images: usize = 2,
    /// Denoising steps per validation image. Default: 25.
    validation_inference_steps: usize = 25,
    /// Validation guidance scale. Default: 7.5 (SD 1.x) / 5.0 (SDXL).
    validation_guidance: Option<f64>,
    /// Write a checkpoint every N optimizer steps (0: only at the end).
    checkpointing_steps: usize = 0,
    /// Keep only the newest K checkpoints.
    checkpoints_total_limit: Option<usize>,
    /// `latest` or a checkpoint folder.
    resume_from_checkpoint: Option<String>,
    /// The Hub id (`namespace/name`) the model card's `base_model` names when `base_model` is a
    /// local folder that is not an hf-hub cache snapshot (`models--org--name/snapshots/…`, whose
    /// id is read from the path). Without either the card leaves `base_model` out and says so.
    base_model_id: Option<String>,
    /// Card license. Default: the base family's: openrail++ for SDXL, creativeml-openrail-m for SD 1.x.
    license: Option<String>,
    /// Where the LoRA, model card, logs and checkpoints are written.
    output_dir: PathBuf,
    /// VAE latent cache. Default: $HF_HOME/hfsky/latent-cache.
    cache_dir: Option<PathBuf>,
}

impl TrainConfig {
    /// Reads `path` (YAML), overlays the keys given as `flags`, applies the defaults, and checks
    /// every value. Relative paths in the file are relative to the file's folder; those given as
    /// flags, to the working directory. Errors name the file (or `flags` when there is none).
    pub fn load(path: Option<&Path>, flags: TrainKeys) -> Result<Self, ConfigError> {
        let (file, origin) = match path {
            Some(p) => (read_file(p)?, p.display().to_string()),
            None => (TrainKeys::default(), "flags".to_string()),
        };
        let invalid = |detail: String| ConfigError::Invalid { origin: origin.clone(), detail };
        let mut keys = file.overlay(flags);
        // Prodigy's documented learning rate is 1.0 (a multiplier of the step size it finds).
        if keys.optimizer == Some(OptimizerKind::Prodigy) && keys.learning_rate.is_none() {
            keys.learning_rate = Some(1.0);
        }
        let cfg = keys.resolve().map_err(invalid)?;
        cfg.check().map_err(invalid)?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.instance_prompt.trim().is_empty() {
            return Err("instance_prompt: must not be empty (it is the trigger phrase, e.g. \"a photo of SKY\")".into());
        }
        if let Some(r) = self.resolution {
            if r == 0 || r % 8 != 0 {
                return Err(format!("resolution: {r} is not a positive multiple of 8"));
            }
        }
        if !self.caption_template.contains("{caption}") && self.captions != CaptionSource::Instance {
            return Err(format!("caption_template: {:?} has no {{caption}} placeholder, so captions would be ignored", self.caption_template));
        }
        if !(0.0..=1.0).contains(&self.caption_dropout) {
            return Err(format!("caption_dropout: {} must be a probability between 0 and 1", self.caption_dropout));
        }
        if self.keep_tokens > 0 && !self.shuffle_tags {
            return Err(format!("keep_tokens: {} only applies with shuffle_tags: true (add it, or remove keep_tokens)", self.keep_tokens));
        }
        if self.captions == CaptionSource::Instance && (self.caption_dropout > 0.0 || self.shuffle_tags) {
            let key = if self.shuffle_tags { "shuffle_tags" } else { "caption_dropout" };
            return Err(format!(
                "{key}: set, but captions: instance trains every photo on the instance prompt alone, so there is no caption to change"
            ));
        }
        for (name, v) in
            [("rank", self.rank), ("train_batch_size", self.train_batch_size), ("gradient_accumulation_steps", self.gradient_accumulation_steps)]
        {
            if v == 0 {
                return Err(format!("{name}: must be at least 1"));
            }
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(format!("learning_rate: {} must be a positive number", self.learning_rate));
        }
        if let Some(lr) = self.text_encoder_lr {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err(format!("text_encoder_lr: {lr} must be a positive number"));
            }
            if !self.train_text_encoder {
                return Err("text_encoder_lr: set, but train_text_encoder is false (add train_text_encoder: true, or remove it)".into());
            }
            if self.optimizer == OptimizerKind::Prodigy && lr != self.learning_rate {
                return Err(format!(
                    "text_encoder_lr: {lr} differs from learning_rate {}, but Prodigy adapts one step size shared by the UNet and the text \
                     encoders and (as prodigyopt) needs the same learning_rate for both; remove text_encoder_lr",
                    self.learning_rate
                ));
            }
        }
        if !(self.prodigy_d_coef > 0.0 && self.prodigy_d_coef.is_finite()) {
            return Err(format!("prodigy_d_coef: {} must be a positive number", self.prodigy_d_coef));
        }
        if matches!(self.max_steps, Some(0)) || matches!(self.num_epochs, Some(0)) {
            return Err("max_steps / num_epochs: must be at least 1".into());
        }
        if let Some(g) = self.min_snr_gamma {
            if g <= 0.0 {
                return Err(format!("min_snr_gamma: {g} must be positive"));
            }
        }
        if self.target_modules.is_empty() {
            return Err("target_modules: name at least one linear layer (e.g. to_q, to_k, to_v, to_out.0)".into());
        }
        if self.with_prior_preservation && self.class_prompt.as_deref().unwrap_or("").trim().is_empty() {
            return Err("class_prompt: required with with_prior_preservation (e.g. \"a photo of the sky\")".into());
        }
        if self.with_prior_preservation && self.class_data_dir.is_none() {
            return Err("class_data_dir: required with with_prior_preservation (missing class images are generated there)".into());
        }
        Ok(())
    }

    /// The LoRA scale alpha / rank.
    pub fn lora_scale(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64) / self.rank as f64
    }

    /// The prompt a caption trains with.
    pub fn prompt_for(&self, caption: Option<&str>) -> String {
        match self.caption_in_prompt(caption) {
            None => self.instance_prompt.clone(),
            Some(c) => fill_caption_template(&self.caption_template, &self.instance_prompt, c),
        }
    }

    /// The caption [`TrainConfig::prompt_for`] puts in the prompt (trimmed), or None when the
    /// prompt is the instance prompt alone.
    pub fn caption_in_prompt<'c>(&self, caption: Option<&'c str>) -> Option<&'c str> {
        match self.captions {
            CaptionSource::Instance => None,
            _ => caption.map(str::trim).filter(|c| !c.is_empty()),
        }
    }
}

/// `template` with `{instance_prompt}` and `{caption}` filled in.
pub fn fill_caption_template(template: &str, instance_prompt: &str, caption: &str) -> String {
    template.replace("{instance_prompt}", instance_prompt).replace("{caption}", caption)
}

/// The file's keys, with its relative paths made relative to its folder (like every config
/// format people know).
fn read_file(path: &Path) -> Result<TrainKeys, ConfigError> {
    let origin = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.into(), detail: e.to_string() })?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| ConfigError::Invalid { origin: origin(), detail: format!("not valid YAML: {e}") })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let rebase = |p: &mut PathBuf| {
        if p.is_relative() && !base.as_os_str().is_empty() {
            *p = base.join(&*p);
        }
    };
    // A base model is a local folder when one exists there; otherwise it stays a Hub repo id. It
    // is rebased before it is parsed, since parsing a reference checks where its path exists.
    let mut value = value;
    if let Some(serde_yaml::Value::String(model)) = value.get_mut("base_model") {
        if !model.contains('/') || Path::new(model.as_str()).exists() || model.starts_with('.') {
            let mut p = PathBuf::from(&*model);
            rebase(&mut p);
            if p.exists() {
                *model = p.display().to_string();
            }
        }
        // Checked here too so that the message names the key (serde's does not).
        ModelRef::parse(model).map_err(|e| ConfigError::Invalid { origin: origin(), detail: format!("base_model: {e}") })?;
    }
    let mut keys: TrainKeys = match value {
        serde_yaml::Value::Mapping(_) => {
            serde_yaml::from_value(value).map_err(|e| ConfigError::Invalid { origin: origin(), detail: e.to_string() })?
        }
        serde_yaml::Value::Null => TrainKeys::default(),
        _ => return Err(ConfigError::Invalid { origin: origin(), detail: "expected a mapping of key: value".into() }),
    };
    for p in [&mut keys.output_dir, &mut keys.class_data_dir, &mut keys.cache_dir].into_iter().flatten() {
        rebase(p);
    }
    if let Some(d) = keys.dataset.as_mut() {
        d.rebase(&base);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        keys: TrainKeys,
    }

    fn flags(args: &[&str]) -> TrainKeys {
        Flags::try_parse_from(std::iter::once("train").chain(args.iter().copied())).unwrap().keys
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("train.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str =
        "base_model: stabilityai/stable-diffusion-xl-base-1.0\ndataset: ./photos\ninstance_prompt: a photo of SKY\noutput_dir: ./out\n";

    #[test]
    fn the_issue_example_loads_and_paths_are_relative_to_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "base_model: stabilityai/stable-diffusion-xl-base-1.0\ndataset: ./photos\ninstance_prompt: \"a photo of SKY\"\ncaptions: sidecar\ncaption_template: \"{instance_prompt}, {caption}\"\nresolution: 512\nrank: 4\nalpha: 4\nlearning_rate: 1.0e-4\nmax_steps: 500\ntrain_batch_size: 1\nseed: 0\noutput_dir: ./out\nvalidation_prompt: \"a photo of SKY river\"\n",
        );
        let c = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap();
        assert_eq!(c.dataset, DatasetSource::Local(d.path().join("./photos")));
        assert_eq!(c.output_dir, d.path().join("./out"));
        assert_eq!(c.base_model.to_string(), "stabilityai/stable-diffusion-xl-base-1.0");
        assert_eq!(c.resolution, Some(512));
        assert_eq!(c.lora_scale(), 1.0);
        assert_eq!(c.prompt_for(Some("orange sunset over a lake")), "a photo of SKY, orange sunset over a lake");
        assert_eq!(c.prompt_for(None), "a photo of SKY");
    }

    #[test]
    fn base_model_is_a_reference_parsed_with_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("models/sd15")).unwrap();
        // A folder beside the file, written relative to it.
        let p = write(d.path(), &MINIMAL.replace("stabilityai/stable-diffusion-xl-base-1.0", "./models/sd15"));
        let c = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap();
        assert_eq!(c.base_model, ModelRef::Local(d.path().join("./models/sd15")));
        let p = write(d.path(), &MINIMAL.replace("stabilityai/stable-diffusion-xl-base-1.0", "alice/base@v2"));
        assert!(
            matches!(TrainConfig::load(Some(&p), TrainKeys::default()).unwrap().base_model, ModelRef::Hub { revision: Some(r), .. } if r == "v2")
        );
        let p = write(d.path(), &MINIMAL.replace("stabilityai/stable-diffusion-xl-base-1.0", "./no/such/folder"));
        let e = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string();
        assert!(e.contains("base_model") && e.contains("neither an existing file or folder nor a Hub repo id"), "{e}");
        let e = Flags::try_parse_from(["train", "--base-model", "not a model"]).unwrap_err().to_string();
        assert!(e.contains("--base-model") && e.contains("neither an existing file or folder"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &format!("{MINIMAL}learning_rat: 1e-4\n"));
        let e = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string();
        assert!(e.contains("learning_rat") && e.contains("train.yaml"), "{e}");
        let p = write(d.path(), &format!("{MINIMAL}resolution: 500\n"));
        let e = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string();
        assert!(e.contains("resolution") && e.contains("multiple of 8"), "{e}");
        let p = write(d.path(), &format!("{MINIMAL}text_encoder_lr: 1.0e-5\n"));
        let e = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string();
        assert!(e.contains("text_encoder_lr") && e.contains("train_text_encoder: true"), "a rate for encoders that are not trained: {e}");
        let p = write(d.path(), &format!("{MINIMAL}train_text_encoder: true\ntext_encoder_lr: 0\n"));
        let e = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string();
        assert!(e.contains("text_encoder_lr") && e.contains("positive"), "{e}");
        let e = Flags::try_parse_from(["train", "--learning-rat", "1"]).unwrap_err().to_string();
        assert!(e.contains("--learning-rat") && e.contains("--learning-rate"), "a typo is clap's error, with the key it meant: {e}");
        let e = TrainConfig::load(None, flags(&["--dataset", "photos", "--instance-prompt", "sky", "--output-dir", "out"])).unwrap_err().to_string();
        assert_eq!(e, "flags: missing field `base_model`");
    }

    #[test]
    fn flags_override_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), MINIMAL);
        let args = flags(&[
            "--learning-rate",
            "5e-5",
            "--center-crop",
            "--target-modules",
            "to_q,to_v",
            "--instance-prompt",
            "1234",
            "--max-steps=7",
            "--gradient-checkpointing",
            "true",
            "--output-dir",
            "elsewhere",
        ]);
        let c = TrainConfig::load(Some(&p), args).unwrap();
        assert_eq!(c.learning_rate, 5e-5);
        assert!(c.center_crop);
        assert_eq!(c.target_modules, vec!["to_q", "to_v"]);
        assert_eq!(c.instance_prompt, "1234");
        assert_eq!(c.max_steps, Some(7));
        assert_eq!(c.gradient_checkpointing, super::super::memory::Checkpointing::On);
        assert_eq!(c.output_dir, Path::new("elsewhere"), "a path given as a flag is relative to the working directory");
        assert_eq!(c.dataset, DatasetSource::Local(d.path().join("./photos")), "the file's keys stay where no flag is given");
        assert_eq!(
            TrainConfig::load(Some(&p), TrainKeys::default()).unwrap().gradient_checkpointing,
            super::super::memory::Checkpointing::Auto,
            "auto by default"
        );
    }

    #[test]
    fn precision_auto_is_the_default_and_resolves_per_device() {
        use candle_core::DType;
        let d = tempfile::tempdir().unwrap();
        let c = TrainConfig::load(Some(&write(d.path(), MINIMAL)), TrainKeys::default()).unwrap();
        assert_eq!(c.precision, Precision::Auto);
        let r = |p: Precision, gpu, bf16| p.resolve(gpu, bf16).map(|r| (r.weights, r.loss_scaling, r.label()));
        // auto: bf16 on an Ampere+ GPU, f16 with loss scaling on a T4, f32 on the CPU.
        assert_eq!(r(Precision::Auto, true, true).unwrap(), (DType::BF16, false, "bf16".into()));
        assert_eq!(r(Precision::Auto, true, false).unwrap(), (DType::F16, true, "f16 (dynamic loss scaling)".into()));
        assert_eq!(r(Precision::Auto, false, false).unwrap(), (DType::F32, false, "f32".into()));
        assert!(r(Precision::F16, false, false).unwrap().1, "f16 always scales its loss");
        assert_eq!(r(Precision::F32, true, true).unwrap().0, DType::F32);
        let e = r(Precision::Bf16, true, false).unwrap_err();
        assert!(e.contains("compute capability 8.0") && e.contains("precision: auto"), "{e}");
        assert!(r(Precision::Bf16, false, false).unwrap_err().contains("needs a GPU"));
        let c = TrainConfig::load(Some(&write(d.path(), MINIMAL)), flags(&["--precision", "f16"])).unwrap();
        assert_eq!(c.precision, Precision::F16);
    }

    #[test]
    fn defaults_apply_where_neither_file_nor_flag_sets_a_key() {
        let d = tempfile::tempdir().unwrap();
        let c = TrainConfig::load(Some(&write(d.path(), MINIMAL)), TrainKeys::default()).unwrap();
        assert_eq!((c.rank, c.learning_rate, c.train_batch_size, c.num_validation_images), (4, 1e-4, 1, 2));
        assert_eq!(c.target_modules, ["to_q", "to_k", "to_v", "to_out.0"]);
        assert_eq!(
            (c.captions, c.lr_scheduler, c.precision, c.device),
            (CaptionSource::Sidecar, LrSchedule::Constant, Precision::Auto, DeviceChoice::Auto)
        );
        assert_eq!(c.caption_template, "{instance_prompt}, {caption}");
        assert_eq!((c.resolution, c.alpha, c.max_steps), (None, None, None));
        // A flag beats the file, which beats the default.
        let p = write(d.path(), &format!("{MINIMAL}rank: 8\nseed: 3\n"));
        let c = TrainConfig::load(Some(&p), flags(&["--rank", "16", "--lr-scheduler", "cosine"])).unwrap();
        assert_eq!((c.rank, c.seed, c.lr_scheduler), (16, 3, LrSchedule::Cosine));
        assert!(Flags::try_parse_from(["train", "--lr-scheduler", "cosin"]).is_err(), "a bad value is clap's error");
    }

    #[test]
    fn every_key_has_a_flag_with_its_doc_and_a_line_in_the_readme() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        let cmd = Flags::command();
        let keys: Vec<_> = cmd.get_arguments().filter(|a| a.get_id() != "help").collect();
        assert!(keys.len() >= 45, "{}", keys.len());
        for a in keys {
            let key = a.get_id().as_str();
            assert_eq!(a.get_long(), Some(key.replace('_', "-").as_str()));
            assert!(a.get_help().is_some_and(|h| !h.to_string().is_empty()), "{key} has no doc");
            let line = |prefix| readme.contains(&format!("\n{prefix}{key}: "));
            assert!(line("") || line("# "), "README's train.yaml block has no `{key}:` line");
        }
    }

    #[test]
    fn prodigy_defaults_its_learning_rate_to_one_and_keeps_a_chosen_one() {
        let d = tempfile::tempdir().unwrap();
        let c = TrainConfig::load(Some(&write(d.path(), MINIMAL)), TrainKeys::default()).unwrap();
        assert_eq!((c.optimizer, c.learning_rate), (OptimizerKind::AdamW, 1e-4), "AdamW stays the default");
        let p = write(d.path(), &format!("{MINIMAL}optimizer: prodigy\n"));
        let c = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap();
        assert_eq!((c.optimizer, c.learning_rate), (OptimizerKind::Prodigy, 1.0));
        assert_eq!((c.prodigy_d_coef, c.prodigy_use_bias_correction, c.prodigy_safeguard_warmup), (1.0, true, true));
        assert!(super::super::prodigy::learning_rate_note(&c).is_none());
        let c = TrainConfig::load(Some(&p), flags(&["--learning-rate", "1e-4", "--prodigy-safeguard-warmup", "false"])).unwrap();
        assert_eq!((c.learning_rate, c.prodigy_safeguard_warmup), (1e-4, false), "a rate the user set is kept");
        let note = super::super::prodigy::learning_rate_note(&c).expect("a note for an AdamW-sized rate");
        assert!(note.contains("~1.0"), "{note}");
        let c = TrainConfig::load(Some(&write(d.path(), MINIMAL)), flags(&["--optimizer", "prodigy"])).unwrap();
        assert_eq!(c.learning_rate, 1.0, "the flag alone picks Prodigy's default too");
        assert_eq!(serde_yaml::to_string(&OptimizerKind::AdamW).unwrap().trim(), "adamw");
        assert!(Flags::try_parse_from(["train", "--optimizer", "adamw"]).is_ok());
        let p = write(d.path(), &format!("{MINIMAL}optimizer: prodigy\ntrain_text_encoder: true\ntext_encoder_lr: 0.5\n"));
        let e = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string();
        assert!(e.contains("text_encoder_lr") && e.contains("same learning_rate"), "{e}");
        let p = write(d.path(), &format!("{MINIMAL}optimizer: prodigy\ntrain_text_encoder: true\ntext_encoder_lr: 1.0\n"));
        assert!(TrainConfig::load(Some(&p), TrainKeys::default()).is_ok(), "an equal rate is what prodigyopt accepts");
        let p = write(d.path(), &format!("{MINIMAL}optimizer: prodigy\nprodigy_d_coef: 0\n"));
        assert!(TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string().contains("prodigy_d_coef"));
        let p = write(d.path(), &format!("{MINIMAL}optimizer: adam\n"));
        let e = TrainConfig::load(Some(&p), TrainKeys::default()).unwrap_err().to_string();
        assert!(e.contains("`adamw` or `prodigy`"), "{e}");
    }

    #[test]
    fn caption_augmentation_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let load = |extra: &str| TrainConfig::load(Some(&write(d.path(), &format!("{MINIMAL}{extra}"))), TrainKeys::default());
        let c = load("caption_dropout: 0.1\nshuffle_tags: true\nkeep_tokens: 2\n").unwrap();
        assert_eq!((c.caption_dropout, c.shuffle_tags, c.keep_tokens), (0.1, true, 2));
        for bad in ["caption_dropout: 1.5\n", "caption_dropout: -0.1\n", "caption_dropout: .nan\n"] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains("caption_dropout") && e.contains("between 0 and 1"), "{bad}: {e}");
        }
        assert!(load("caption_dropout: 1.0\n").is_ok() && load("caption_dropout: 0\n").is_ok());
        let e = load("keep_tokens: 1\n").unwrap_err().to_string();
        assert!(e.contains("keep_tokens") && e.contains("shuffle_tags: true"), "{e}");
        let e = load("captions: instance\nshuffle_tags: true\n").unwrap_err().to_string();
        assert!(e.contains("shuffle_tags") && e.contains("captions: instance"), "{e}");
        let e = load("captions: instance\ncaption_dropout: 0.2\n").unwrap_err().to_string();
        assert!(e.contains("caption_dropout"), "{e}");
        assert_eq!(c.caption_in_prompt(Some("  red, sky ")), Some("red, sky"));
        assert_eq!(c.caption_in_prompt(Some(" ")), None);
    }

    #[test]
    fn training_summary_names_the_schedule_as_train_yaml_does() {
        for s in [LrSchedule::Constant, LrSchedule::Cosine, LrSchedule::Linear] {
            assert_eq!(serde_yaml::to_string(&s).unwrap().trim(), s.as_str());
        }
    }
}
