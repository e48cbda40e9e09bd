//! Auto-captioning with BLIP (`BlipForConditionalGeneration`, e.g.
//! `Salesforce/blip-image-captioning-base`): candle-transformers' network, with the parts that
//! make it a drop-in for a transformers checkpoint done here — the config read with transformers'
//! defaults, the tied LM-head weight that transformers does not save, the image processor's
//! resize/rescale/normalize, and `generate`'s greedy decoding.

use crate::hub::download::snapshot;
use crate::hub::{HubClient, HubError};
use crate::model_ref::{ModelRef, ModelRefError};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{blip, blip_text};
use image::RgbImage;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The checkpoint `--model blip` means.
pub const DEFAULT_MODEL: &str = "Salesforce/blip-image-captioning-base";

/// transformers' tied LM head: saved checkpoints may leave it out (it is the word embeddings).
const LM_HEAD: &str = "text_decoder.cls.predictions.decoder.weight";
const WORD_EMBEDDINGS: &str = "text_decoder.bert.embeddings.word_embeddings.weight";

#[derive(Debug, thiserror::Error)]
pub enum BlipError {
    #[error("{}: {detail}", .path.display())]
    File { path: PathBuf, detail: String },
    #[error(transparent)]
    Hub(Box<HubError>),
    #[error("BLIP: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl From<HubError> for BlipError {
    fn from(e: HubError) -> Self {
        BlipError::Hub(Box::new(e))
    }
}

fn file_err(path: &Path) -> impl Fn(String) -> BlipError + '_ {
    move |detail| BlipError::File { path: path.to_path_buf(), detail }
}

/// The files a BLIP captioning model needs.
const PATTERNS: &[&str] =
    &["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "processor_config.json", "generation_config.json"];

/// `--model`'s value: `blip` names [`DEFAULT_MODEL`]; anything else is a [`ModelRef`] (a local
/// folder, or a Hub repo `namespace/name[@revision]`).
pub fn caption_model(spec: &str) -> Result<ModelRef, ModelRefError> {
    ModelRef::parse(if spec == "blip" { DEFAULT_MODEL } else { spec })
}

/// Resolves a BLIP model to its folder: a local one as it is, a Hub repo's files fetched through
/// hf-hub into the standard cache (honouring the client's endpoint).
pub async fn resolve(model: &ModelRef, client: &HubClient) -> Result<PathBuf, BlipError> {
    let dir = match model {
        ModelRef::Local(path) => path.clone(),
        ModelRef::Hub { repo, revision } => snapshot(client, repo, revision.as_deref(), PATTERNS.iter().map(|s| s.to_string()).collect()).await?,
    };
    for need in ["config.json", "model.safetensors", "tokenizer.json"] {
        if !dir.join(need).is_file() {
            return Err(BlipError::File {
                path: dir.join(need),
                detail: "missing: a BLIP captioning model needs config.json, model.safetensors and tokenizer.json".into(),
            });
        }
    }
    Ok(dir)
}

/// `config.json` with transformers' defaults for every field a saved config may leave out.
#[derive(Debug, Deserialize)]
struct ConfigFile {
    text_config: TextConfigFile,
    vision_config: VisionConfigFile,
    #[serde(default = "d512")]
    projection_dim: usize,
    #[serde(default = "d256")]
    image_text_hidden_size: usize,
}

#[derive(Debug, Deserialize)]
struct TextConfigFile {
    #[serde(default = "d30524")]
    vocab_size: usize,
    #[serde(default = "d768")]
    hidden_size: usize,
    #[serde(default = "d768")]
    encoder_hidden_size: usize,
    #[serde(default = "d3072")]
    intermediate_size: usize,
    #[serde(default = "d768")]
    projection_dim: usize,
    #[serde(default = "d12")]
    num_hidden_layers: usize,
    #[serde(default = "d8")]
    num_attention_heads: usize,
    #[serde(default = "d512")]
    max_position_embeddings: usize,
    #[serde(default = "gelu")]
    hidden_act: candle_nn::Activation,
    #[serde(default = "eps12")]
    layer_norm_eps: f64,
    #[serde(default = "d30522")]
    bos_token_id: u32,
    #[serde(default = "d102")]
    sep_token_id: u32,
    #[serde(default)]
    pad_token_id: u32,
}

#[derive(Debug, Deserialize)]
struct VisionConfigFile {
    #[serde(default = "d768")]
    hidden_size: usize,
    #[serde(default = "d3072")]
    intermediate_size: usize,
    #[serde(default = "d512")]
    projection_dim: usize,
    #[serde(default = "d12")]
    num_hidden_layers: usize,
    #[serde(default = "d12")]
    num_attention_heads: usize,
    #[serde(default = "d384")]
    image_size: usize,
    #[serde(default = "d16")]
    patch_size: usize,
    #[serde(default = "gelu")]
    hidden_act: candle_nn::Activation,
    #[serde(default = "eps5")]
    layer_norm_eps: f64,
}

// transformers' BlipConfig / BlipTextConfig / BlipVisionConfig defaults.
fn d8() -> usize {
    8
}
fn d12() -> usize {
    12
}
fn d16() -> usize {
    16
}
fn d256() -> usize {
    256
}
fn d384() -> usize {
    384
}
fn d512() -> usize {
    512
}
fn d768() -> usize {
    768
}
fn d3072() -> usize {
    3072
}
fn d30524() -> usize {
    30524
}
fn d30522() -> u32 {
    30522
}
fn d102() -> u32 {
    102
}
fn gelu() -> candle_nn::Activation {
    candle_nn::Activation::Gelu
}
fn eps12() -> f64 {
    1e-12
}
fn eps5() -> f64 {
    1e-5
}

/// The image processor's settings (`preprocessor_config.json`, or transformers 5's
/// `processor_config.json` holding them under `image_processor`).
#[derive(Debug, Clone, Deserialize)]
pub struct ImageProcessor {
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default)]
    size: Option<Size>,
    /// PIL resampling filter: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic.
    #[serde(default = "bicubic")]
    resample: u32,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "rescale")]
    rescale_factor: f64,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default = "clip_mean")]
    image_mean: [f64; 3],
    #[serde(default = "clip_std")]
    image_std: [f64; 3],
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct Size {
    height: u32,
    width: u32,
}

fn yes() -> bool {
    true
}
fn bicubic() -> u32 {
    3
}
fn rescale() -> f64 {
    1.0 / 255.0
}
fn clip_mean() -> [f64; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn clip_std() -> [f64; 3] {
    [0.26862954, 0.26130258, 0.27577711]
}

impl ImageProcessor {
    fn load(dir: &Path, image_size: u32) -> Result<Self, BlipError> {
        let read = |name: &str| -> Result<Option<serde_json::Value>, BlipError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| file_err(&path)(format!("not valid JSON: {e}"))),
                Err(_) => Ok(None),
            }
        };
        let value = match (read("preprocessor_config.json")?, read("processor_config.json")?) {
            (Some(v), _) => v,
            (None, Some(v)) => v.get("image_processor").cloned().unwrap_or(v),
            (None, None) => serde_json::json!({}),
        };
        let mut p: ImageProcessor = serde_json::from_value(value).map_err(|e| file_err(&dir.join("preprocessor_config.json"))(e.to_string()))?;
        p.size.get_or_insert(Size { height: image_size, width: image_size });
        Ok(p)
    }

    /// `pixel_values` [1, 3, H, W], f32, as `BlipImageProcessor` makes them: resize (8-bit
    /// result, as PIL), rescale, normalize.
    pub fn pixel_values(&self, img: &RgbImage, device: &Device) -> Result<Tensor, BlipError> {
        use image::imageops::FilterType;
        let resized;
        let img = match self.size {
            Some(s) if self.do_resize && img.dimensions() != (s.width, s.height) => {
                let filter = match self.resample {
                    0 => FilterType::Nearest,
                    1 => FilterType::Lanczos3,
                    2 => FilterType::Triangle,
                    _ => FilterType::CatmullRom,
                };
                resized = image::imageops::resize(img, s.width, s.height, filter);
                &resized
            }
            _ => img,
        };
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        let mut data = vec![0f32; 3 * h * w];
        for (x, y, px) in img.enumerate_pixels() {
            for c in 0..3 {
                let mut v = px[c] as f64;
                if self.do_rescale {
                    v *= self.rescale_factor;
                }
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                data[c * h * w + y as usize * w + x as usize] = v as f32;
            }
        }
        Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
    }
}

pub struct Blip {
    model: blip::BlipForConditionalGeneration,
    tokenizer: tokenizers::Tokenizer,
    pub image_processor: ImageProcessor,
    bos: u32,
    sep: u32,
    pad: u32,
    /// New tokens at most per caption (transformers' `generate` default unless the model's
    /// generation_config.json sets max_new_tokens or max_length).
    pub max_new_tokens: usize,
    device: Device,
}

impl Blip {
    /// Loads a BLIP captioning model folder (f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, BlipError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| file_err(&cfg_path)(e.to_string()))?;
        let cfg: ConfigFile = serde_json::from_str(&text).map_err(|e| file_err(&cfg_path)(format!("not a BLIP config: {e}")))?;
        let t = &cfg.text_config;
        let v = &cfg.vision_config;
        let config = blip::Config {
            text_config: blip_text::Config {
                vocab_size: t.vocab_size,
                hidden_size: t.hidden_size,
                encoder_hidden_size: t.encoder_hidden_size,
                intermediate_size: t.intermediate_size,
                projection_dim: t.projection_dim,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                max_position_embeddings: t.max_position_embeddings,
                hidden_act: t.hidden_act,
                layer_norm_eps: t.layer_norm_eps,
                is_decoder: true,
            },
            vision_config: blip::VisionConfig {
                hidden_size: v.hidden_size,
                intermediate_size: v.intermediate_size,
                projection_dim: v.projection_dim,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                image_size: v.image_size,
                patch_size: v.patch_size,
                hidden_act: v.hidden_act,
                layer_norm_eps: v.layer_norm_eps,
            },
            projection_dim: cfg.projection_dim,
            image_text_hidden_size: cfg.image_text_hidden_size,
        };
        let weights = dir.join("model.safetensors");
        let mut tensors = candle_core::safetensors::load(&weights, device).map_err(|e| file_err(&weights)(e.to_string()))?;
        if !tensors.contains_key(LM_HEAD) {
            let tied = tensors
                .get(WORD_EMBEDDINGS)
                .cloned()
                .ok_or_else(|| file_err(&weights)(format!("has neither {LM_HEAD} nor {WORD_EMBEDDINGS}: not a BLIP captioning checkpoint")))?;
            tensors.insert(LM_HEAD.to_string(), tied);
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = blip::BlipForConditionalGeneration::new(&config, vb).map_err(|e| file_err(&weights)(e.to_string()))?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| file_err(&tok_path)(e.to_string()))?;
        let image_processor = ImageProcessor::load(dir, v.image_size as u32)?;
        Ok(Blip {
            model,
            tokenizer,
            image_processor,
            bos: t.bos_token_id,
            sep: t.sep_token_id,
            pad: t.pad_token_id,
            max_new_tokens: max_new_tokens(dir),
            device: device.clone(),
        })
    }

    /// The vision model's last hidden state for `pixel_values`.
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor, BlipError> {
        Ok(self.model.vision_model().forward(pixel_values)?)
    }

    /// Greedy decoding as transformers' `generate` with default settings: BOS, then the argmax
    /// token until SEP or `max_new_tokens`. Returns every id, BOS first (as `generate` does).
    pub fn generate(&mut self, pixel_values: &Tensor) -> Result<Vec<u32>, BlipError> {
        let embeds = self.image_embeds(pixel_values)?;
        self.model.reset_kv_cache();
        let mut ids = vec![self.bos];
        for step in 0..self.max_new_tokens {
            // The decoder keeps a key/value cache: after the first step only the new token goes in.
            let input = if step == 0 { &ids[..] } else { &ids[ids.len() - 1..] };
            let input = Tensor::new(input, &self.device)?.unsqueeze(0)?;
            let logits = self.model.text_decoder().forward(&input, &embeds)?;
            let last = logits.i((0, logits.dim(1)? - 1))?;
            let next = last.argmax(0)?.to_scalar::<u32>()?;
            ids.push(next);
            if next == self.sep {
                break;
            }
        }
        Ok(ids)
    }

    /// The caption text of generated ids (special tokens dropped, WordPiece joined).
    pub fn decode(&self, ids: &[u32]) -> Result<String, BlipError> {
        let words: Vec<u32> = ids.iter().copied().filter(|&i| i != self.bos && i != self.sep && i != self.pad).collect();
        let text =
            self.tokenizer.decode(&words, true).map_err(|e| BlipError::File { path: PathBuf::from("tokenizer.json"), detail: e.to_string() })?;
        Ok(text.trim().to_string())
    }

    /// One photo's caption.
    pub fn caption(&mut self, img: &RgbImage) -> Result<String, BlipError> {
        let px = self.image_processor.pixel_values(img, &self.device)?;
        let ids = self.generate(&px)?;
        self.decode(&ids)
    }
}

/// transformers 5's default is 20 new tokens; a generation_config.json may say otherwise
/// (`max_length` counts the BOS token).
fn max_new_tokens(dir: &Path) -> usize {
    let cfg: serde_json::Value =
        std::fs::read(dir.join("generation_config.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    match (cfg["max_new_tokens"].as_u64(), cfg["max_length"].as_u64()) {
        (Some(n), _) => n as usize,
        (None, Some(l)) => (l as usize).saturating_sub(1).max(1),
        _ => 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::rel_error;
    use crate::diffusion::testing::fixtures_dir;

    fn reference() -> std::collections::HashMap<String, Tensor> {
        candle_core::safetensors::load(fixtures_dir().join("tiny-blip-reference.safetensors"), &Device::Cpu).unwrap()
    }

    fn reference_ids() -> Vec<u32> {
        let r = reference();
        r["ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect()
    }

    #[test]
    fn vision_model_and_first_logits_match_transformers() {
        let r = reference();
        let mut blip = Blip::load(&fixtures_dir().join("tiny-blip"), &Device::Cpu).unwrap();
        let embeds = blip.image_embeds(&r["pixel_values"]).unwrap();
        let e = rel_error(&embeds, &r["image_embeds"]).unwrap();
        assert!(e < 1e-5, "image_embeds: relative error {e}");
        blip.model.reset_kv_cache();
        let bos = Tensor::new(&[blip.bos], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits = blip.model.text_decoder().forward(&bos, &embeds).unwrap();
        let e = rel_error(&logits, &r["first_logits"]).unwrap();
        assert!(e < 1e-5, "first-step logits: relative error {e}");
    }

    #[test]
    fn greedy_caption_ids_equal_transformers_generate() {
        let r = reference();
        let mut blip = Blip::load(&fixtures_dir().join("tiny-blip"), &Device::Cpu).unwrap();
        // Same pixels as transformers: the decoding alone.
        let ids = blip.generate(&r["pixel_values"]).unwrap();
        assert_eq!(ids, reference_ids());
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures_dir().join("tiny-blip-reference.json")).unwrap()).unwrap();
        assert_eq!(blip.decode(&ids).unwrap(), json["caption"].as_str().unwrap());
    }

    #[test]
    fn photo_to_caption_matches_transformers_including_preprocessing() {
        let mut blip = Blip::load(&fixtures_dir().join("tiny-blip"), &Device::Cpu).unwrap();
        let img = image::open(fixtures_dir().join("tiny-blip-photo.png")).unwrap().to_rgb8();
        let px = blip.image_processor.pixel_values(&img, &Device::Cpu).unwrap();
        // PIL's and the image crate's bicubic differ by rounding (±1/255 on a few pixels).
        let diff = (&px - &reference()["pixel_values"]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 0.1, "pixel_values differ by up to {diff}");
        assert_eq!(blip.generate(&px).unwrap(), reference_ids());
        assert!(!blip.caption(&img).unwrap().is_empty());
    }
}
