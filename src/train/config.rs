//! `train.yaml`: every training setting, typed. Unknown keys are an error naming the key (a typo
//! silently falling back to a default is how a run trains the wrong thing). Every key can also
//! be given as a flag (`--learning-rate 5e-5`); flags override the file.

pub use crate::dataset::captions::CaptionSource;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the training config: {detail}", .path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{origin}: {detail}")]
    Invalid { origin: String, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when built with `--features cuda` and a GPU is present, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

fn default_captions() -> CaptionSource {
    CaptionSource::Sidecar
}
fn default_template() -> String {
    "{instance_prompt}, {caption}".into()
}
fn default_targets() -> Vec<String> {
    ["to_q", "to_k", "to_v", "to_out.0"].iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// A diffusers pipeline: Hub repo id (`namespace/name[@revision]`) or a local folder.
    pub base_model: String,
    /// Folder of training photos.
    pub dataset: PathBuf,
    /// The trigger phrase, e.g. "a photo of SKY".
    pub instance_prompt: String,
    /// sidecar (`photo.txt`; images without one get the instance prompt alone; a folder with no
    /// sidecars but a metadata file uses that) | metadata (`metadata.jsonl` or `metadata.csv`,
    /// the Hub imagefolder's forms) | instance (the instance prompt for every image).
    #[serde(default = "default_captions")]
    pub captions: CaptionSource,
    /// The metadata column holding the captions. Default: the first of `text`, `caption`,
    /// `prompt` the file has (see `dataset::captions::CAPTION_COLUMNS`); a file with none of
    /// them is an error that lists its columns.
    #[serde(default)]
    pub caption_column: Option<String>,
    /// How a per-image caption becomes the training prompt.
    #[serde(default = "default_template")]
    pub caption_template: String,
    /// Square training size in pixels (multiple of 8). Default: the model's native size.
    #[serde(default)]
    pub resolution: Option<usize>,
    /// Center crop (default: a random crop, chosen once per image from the seed).
    #[serde(default)]
    pub center_crop: bool,
    /// Also train on mirrored images (each step picks one of the two at random).
    #[serde(default)]
    pub random_flip: bool,
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// LoRA alpha; the update is scaled by alpha / rank. Default: = rank.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Linear layers (diffusers names, matched by suffix) that get a LoRA.
    #[serde(default = "default_targets")]
    pub target_modules: Vec<String>,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    #[serde(default)]
    pub lr_scheduler: LrSchedule,
    #[serde(default)]
    pub lr_warmup_steps: usize,
    /// Optimizer steps. Default 500 unless `num_epochs` is given.
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default)]
    pub num_epochs: Option<usize>,
    #[serde(default = "one")]
    pub train_batch_size: usize,
    #[serde(default = "one")]
    pub gradient_accumulation_steps: usize,
    /// Recompute each UNet resnet and transformer block in backward instead of keeping its
    /// activations: much less memory for about one extra forward per step; same gradients.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub precision: Precision,
    #[serde(default)]
    pub device: DeviceChoice,
    /// Min-SNR loss weighting (Hang et al. 2023); 5.0 is the usual value.
    #[serde(default)]
    pub min_snr_gamma: Option<f64>,
    #[serde(default)]
    pub noise_offset: f64,
    #[serde(default = "default_clip")]
    pub max_grad_norm: f64,
    #[serde(default = "default_beta1")]
    pub adam_beta1: f64,
    #[serde(default = "default_beta2")]
    pub adam_beta2: f64,
    #[serde(default = "default_wd")]
    pub adam_weight_decay: f64,
    #[serde(default = "default_eps")]
    pub adam_epsilon: f64,
    /// Prior preservation: also train on images of the class, so the class keeps its meaning.
    #[serde(default)]
    pub with_prior_preservation: bool,
    #[serde(default)]
    pub class_prompt: Option<String>,
    /// Class images; missing ones are generated with the base model.
    #[serde(default)]
    pub class_data_dir: Option<PathBuf>,
    #[serde(default = "default_class_images")]
    pub num_class_images: usize,
    #[serde(default = "default_prior_weight")]
    pub prior_loss_weight: f64,
    #[serde(default)]
    pub validation_prompt: Option<String>,
    /// Render validation images every N steps (and always at the end).
    #[serde(default)]
    pub validation_steps: Option<usize>,
    #[serde(default = "default_validation_images")]
    pub num_validation_images: usize,
    #[serde(default = "default_validation_inference_steps")]
    pub validation_inference_steps: usize,
    #[serde(default)]
    pub validation_guidance: Option<f64>,
    /// Write a checkpoint every N optimizer steps (0: only at the end).
    #[serde(default)]
    pub checkpointing_steps: usize,
    /// Keep only the newest K checkpoints.
    #[serde(default)]
    pub checkpoints_total_limit: Option<usize>,
    /// `latest` or a checkpoint folder.
    #[serde(default)]
    pub resume_from_checkpoint: Option<String>,
    /// The Hub id (`namespace/name`) the model card's `base_model` names when `base_model` is a
    /// local folder that is not an hf-hub cache snapshot (`models--org--name/snapshots/…`, whose id
    /// is read from the path). Without either the card leaves `base_model` out and says so.
    #[serde(default)]
    pub base_model_id: Option<String>,
    /// Card license (default: the base family's: openrail++ for SDXL, creativeml-openrail-m for SD 1.x).
    #[serde(default)]
    pub license: Option<String>,
    pub output_dir: PathBuf,
    /// VAE latent cache (default: $HF_HOME/hfsky/latent-cache).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_rank() -> usize {
    4
}
fn default_lr() -> f64 {
    1e-4
}
fn one() -> usize {
    1
}
fn default_clip() -> f64 {
    1.0
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_wd() -> f64 {
    1e-2
}
fn default_eps() -> f64 {
    1e-8
}
fn default_class_images() -> usize {
    100
}
fn default_prior_weight() -> f64 {
    1.0
}
fn default_validation_images() -> usize {
    2
}
fn default_validation_inference_steps() -> usize {
    25
}

impl TrainConfig {
    /// Reads `path` (YAML), applies `--key value` overrides, resolves relative paths against the
    /// config file's folder, and checks every value.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let (mut map, origin, base) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read { path: p.into(), detail: e.to_string() })?;
                let v: serde_yaml::Value = serde_yaml::from_str(&text)
                    .map_err(|e| ConfigError::Invalid { origin: p.display().to_string(), detail: format!("not valid YAML: {e}") })?;
                let map = match v {
                    serde_yaml::Value::Mapping(m) => m,
                    serde_yaml::Value::Null => serde_yaml::Mapping::new(),
                    _ => return Err(ConfigError::Invalid { origin: p.display().to_string(), detail: "expected a mapping of key: value".into() }),
                };
                (map, p.display().to_string(), p.parent().map(Path::to_path_buf).unwrap_or_default())
            }
            None => (serde_yaml::Mapping::new(), "flags".to_string(), PathBuf::new()),
        };
        apply_overrides(&mut map, overrides)?;
        let mut cfg: TrainConfig = serde_yaml::from_value(serde_yaml::Value::Mapping(map))
            .map_err(|e| ConfigError::Invalid { origin: origin.clone(), detail: e.to_string() })?;
        // Paths in the file are relative to the file, like every config format people know.
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut cfg.dataset);
        rebase(&mut cfg.output_dir);
        if let Some(d) = cfg.class_data_dir.as_mut() {
            rebase(d);
        }
        if let Some(d) = cfg.cache_dir.as_mut() {
            rebase(d);
        }
        if !cfg.base_model.contains('/') || Path::new(&cfg.base_model).exists() || cfg.base_model.starts_with('.') {
            let mut p = PathBuf::from(&cfg.base_model);
            rebase(&mut p);
            if p.exists() {
                cfg.base_model = p.display().to_string();
            }
        }
        cfg.check().map_err(|detail| ConfigError::Invalid { origin, detail })?;
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
        match (self.captions, caption.map(str::trim).filter(|c| !c.is_empty())) {
            (CaptionSource::Instance, _) | (_, None) => self.instance_prompt.clone(),
            (_, Some(c)) => self.caption_template.replace("{instance_prompt}", &self.instance_prompt).replace("{caption}", c),
        }
    }
}

/// `--learning-rate 5e-5 --center-crop --target-modules to_q,to_v` → YAML keys and values.
fn apply_overrides(map: &mut serde_yaml::Mapping, args: &[String]) -> Result<(), ConfigError> {
    let bad = |detail: String| ConfigError::Invalid { origin: "flags".into(), detail };
    let mut i = 0;
    while i < args.len() {
        let Some(raw) = args[i].strip_prefix("--") else {
            return Err(bad(format!("unexpected argument {:?}: settings are given as --key value", args[i])));
        };
        let (key, inline) = match raw.split_once('=') {
            Some((k, v)) => (k.replace('-', "_"), Some(v.to_string())),
            None => (raw.replace('-', "_"), None),
        };
        let value = match inline {
            Some(v) => v,
            None if i + 1 < args.len() && !args[i + 1].starts_with("--") => {
                i += 1;
                args[i].clone()
            }
            None => "true".to_string(),
        };
        let parsed = if key == "target_modules" {
            serde_yaml::Value::Sequence(value.split(',').map(|s| serde_yaml::Value::String(s.trim().to_string())).collect())
        } else if [
            "base_model",
            "base_model_id",
            "instance_prompt",
            "caption_template",
            "caption_column",
            "class_prompt",
            "validation_prompt",
            "resume_from_checkpoint",
            "license",
        ]
        .contains(&key.as_str())
        {
            // Free text stays text even when it looks like a number or `yes`.
            serde_yaml::Value::String(value)
        } else {
            serde_yaml::from_str(&value).unwrap_or(serde_yaml::Value::String(value))
        };
        map.insert(serde_yaml::Value::String(key), parsed);
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = TrainConfig::load(Some(&p), &[]).unwrap();
        assert_eq!(c.dataset, d.path().join("./photos"));
        assert_eq!(c.output_dir, d.path().join("./out"));
        assert_eq!(c.base_model, "stabilityai/stable-diffusion-xl-base-1.0");
        assert_eq!(c.resolution, Some(512));
        assert_eq!(c.lora_scale(), 1.0);
        assert_eq!(c.prompt_for(Some("orange sunset over a lake")), "a photo of SKY, orange sunset over a lake");
        assert_eq!(c.prompt_for(None), "a photo of SKY");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &format!("{MINIMAL}learning_rat: 1e-4\n"));
        let e = TrainConfig::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("learning_rat") && e.contains("train.yaml"), "{e}");
        let p = write(d.path(), &format!("{MINIMAL}resolution: 500\n"));
        let e = TrainConfig::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("resolution") && e.contains("multiple of 8"), "{e}");
        let e = TrainConfig::load(Some(&p), &["--bogus".into(), "1".into()]).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), MINIMAL);
        let args: Vec<String> = [
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
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = TrainConfig::load(Some(&p), &args).unwrap();
        assert_eq!(c.learning_rate, 5e-5);
        assert!(c.center_crop);
        assert_eq!(c.target_modules, vec!["to_q", "to_v"]);
        assert_eq!(c.instance_prompt, "1234");
        assert_eq!(c.max_steps, Some(7));
        assert!(c.gradient_checkpointing);
        assert!(!TrainConfig::load(Some(&p), &[]).unwrap().gradient_checkpointing, "off by default");
    }

    #[test]
    fn precision_auto_is_the_default_and_resolves_per_device() {
        use candle_core::DType;
        let d = tempfile::tempdir().unwrap();
        let c = TrainConfig::load(Some(&write(d.path(), MINIMAL)), &[]).unwrap();
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
        let c = TrainConfig::load(Some(&write(d.path(), MINIMAL)), &["--precision".into(), "f16".into()]).unwrap();
        assert_eq!(c.precision, Precision::F16);
    }
}
