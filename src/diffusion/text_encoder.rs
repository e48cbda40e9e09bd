//! CLIP text encoders as transformers computes them (CLIPTextModel and
//! CLIPTextModelWithProjection), with LoRA-aware projections, and the prompt embeddings
//! SD 1.5 and SDXL pipelines build from them.

use super::config::{read_json, PipelineError};
use super::nn::{softmax_last_dim, Adapters, LayerNorm, Linear};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{embedding, Embedding, VarBuilder};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub projection_dim: Option<usize>,
    #[serde(default = "eos")]
    pub eos_token_id: u32,
    #[serde(default)]
    pub architectures: Vec<String>,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}
fn eos() -> u32 {
    2
}

impl ClipConfig {
    pub fn from_file(path: &Path) -> std::result::Result<Self, PipelineError> {
        let c: ClipConfig = read_json(path)?;
        if !matches!(c.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(PipelineError::BadConfig { path: path.to_path_buf(), detail: format!("hidden_act {:?} is not supported", c.hidden_act) });
        }
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(PipelineError::BadConfig { path: path.to_path_buf(), detail: "hidden_size is not divisible by num_attention_heads".into() });
        }
        Ok(c)
    }

    pub fn with_projection(&self) -> bool {
        self.architectures.iter().any(|a| a == "CLIPTextModelWithProjection")
    }
}

#[derive(Debug, Clone)]
struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What the encoder returns.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    pub last_hidden_state: Tensor,
    /// The input of the last layer (`hidden_states[-2]`), which SDXL conditions on.
    pub penultimate: Tensor,
    /// The final-normed state at the EOS position.
    pub pooled: Tensor,
    /// `text_projection(pooled)` for CLIPTextModelWithProjection.
    pub text_embeds: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct ClipTextModel {
    config: ClipConfig,
    tok: Embedding,
    pos: Embedding,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Option<Tensor>,
}

impl ClipTextModel {
    /// Weights with or without the `text_model.` prefix (transformers 5 drops it).
    pub fn new(vb: VarBuilder, config: &ClipConfig, adapters: &Adapters) -> Result<Self> {
        let c = config;
        let m = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") { vb.pp("text_model") } else { vb.clone() };
        let h = c.hidden_size;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = m.pp(format!("encoder.layers.{i}"));
                let a = l.pp("self_attn");
                Ok(Layer {
                    ln1: LayerNorm::load(l.pp("layer_norm1"), h, c.layer_norm_eps)?,
                    q: Linear::new(a.pp("q_proj"), adapters, h, h, true)?,
                    k: Linear::new(a.pp("k_proj"), adapters, h, h, true)?,
                    v: Linear::new(a.pp("v_proj"), adapters, h, h, true)?,
                    out: Linear::new(a.pp("out_proj"), adapters, h, h, true)?,
                    ln2: LayerNorm::load(l.pp("layer_norm2"), h, c.layer_norm_eps)?,
                    fc1: Linear::new(l.pp("mlp.fc1"), adapters, h, c.intermediate_size, true)?,
                    fc2: Linear::new(l.pp("mlp.fc2"), adapters, c.intermediate_size, h, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let projection = match (c.with_projection(), c.projection_dim) {
            (true, Some(p)) => Some(vb.get((p, h), "text_projection.weight")?),
            _ => None,
        };
        Ok(ClipTextModel {
            tok: embedding(c.vocab_size, h, m.pp("embeddings.token_embedding"))?,
            pos: embedding(c.max_position_embeddings, h, m.pp("embeddings.position_embedding"))?,
            layers,
            final_ln: LayerNorm::load(m.pp("final_layer_norm"), h, c.layer_norm_eps)?,
            projection,
            config: c.clone(),
        })
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        match self.config.hidden_act.as_str() {
            "gelu" => x.gelu_erf(),
            _ => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        }
    }

    /// `ids` [B, L] (u32).
    pub fn forward(&self, ids: &Tensor) -> Result<ClipOutput> {
        let (b, l) = ids.dims2()?;
        let dev = ids.device();
        let positions = Tensor::arange(0u32, l as u32, dev)?;
        let mut x = self.tok.forward(ids)?.broadcast_add(&self.pos.forward(&positions)?)?;
        let heads = self.config.num_attention_heads;
        let hd = self.config.hidden_size / heads;
        let mask: Vec<f32> = (0..l).flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (l, l), dev)?.to_dtype(x.dtype())?;
        let mut penultimate = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i + 1 == self.layers.len() {
                penultimate = x.clone();
            }
            let h = layer.ln1.forward(&x)?;
            let split = |t: Tensor| t.reshape((b, l, heads, hd))?.transpose(1, 2)?.contiguous();
            let q = split((layer.q.forward(&h)? * (hd as f64).powf(-0.5))?)?;
            let k = split(layer.k.forward(&h)?)?;
            let v = split(layer.v.forward(&h)?)?;
            let scores = q.matmul(&k.transpose(2, 3)?.contiguous()?)?.broadcast_add(&mask)?;
            let attn = softmax_last_dim(&scores)?.matmul(&v)?;
            let attn = attn.transpose(1, 2)?.reshape((b, l, heads * hd))?;
            x = (x + layer.out.forward(&attn)?)?;
            let h = layer.ln2.forward(&x)?;
            x = (&x + layer.fc2.forward(&self.act(&layer.fc1.forward(&h)?)?)?)?;
        }
        let last = self.final_ln.forward(&x)?;
        let ids_v = ids.to_vec2::<u32>()?;
        let eos = self.config.eos_token_id;
        // transformers: legacy configs (eos id 2) pool at argmax(ids); others at the first EOS.
        let positions: Vec<usize> = ids_v
            .iter()
            .map(|row| {
                if eos == 2 {
                    row.iter().enumerate().max_by_key(|(_, v)| **v).map(|(i, _)| i).unwrap_or(0)
                } else {
                    row.iter().position(|v| *v == eos).unwrap_or(row.len() - 1)
                }
            })
            .collect();
        let pooled =
            Tensor::cat(&positions.iter().enumerate().map(|(bi, &p)| last.i((bi, p)).and_then(|t| t.unsqueeze(0))).collect::<Result<Vec<_>>>()?, 0)?;
        let text_embeds = match &self.projection {
            Some(w) => Some(pooled.matmul(&w.to_dtype(pooled.dtype())?.t()?)?),
            None => None,
        };
        Ok(ClipOutput { last_hidden_state: last, penultimate, pooled, text_embeds })
    }
}

/// Loads the text encoder in `dir` (config.json + model.safetensors).
pub fn load(dir: &Path, weights: &Path, dtype: DType, device: &Device, adapters: &Adapters) -> std::result::Result<ClipTextModel, PipelineError> {
    let cfg = ClipConfig::from_file(&dir.join("config.json"))?;
    let err = |e: candle_core::Error| PipelineError::BadConfig { path: weights.to_path_buf(), detail: e.to_string() };
    let vb = super::weights::var_builder(&[weights], dtype, device).map_err(err)?;
    ClipTextModel::new(vb, &cfg, adapters).map_err(err)
}

/// SDXL conditions on both encoders' penultimate states, side by side.
pub fn concat_last(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[a, b], D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::rel_error;
    use crate::diffusion::testing::{pipeline_dir, reference};

    fn model(name: &str, comp: &str) -> ClipTextModel {
        let dir = pipeline_dir(name).join(comp);
        load(&dir, &dir.join("model.safetensors"), DType::F32, &Device::Cpu, &Adapters::new()).unwrap()
    }

    fn ids(r: &std::collections::HashMap<String, Tensor>, key: &str) -> Tensor {
        r[key].to_dtype(DType::U32).unwrap()
    }

    #[test]
    fn hidden_states_and_pooled_match_transformers() {
        let r = reference("tiny-sd15");
        let out = model("tiny-sd15", "text_encoder").forward(&ids(&r, "text.input_ids")).unwrap();
        assert!(rel_error(&out.last_hidden_state, &r["text.last_hidden_state"]).unwrap() < 1e-4);
        assert!(rel_error(&out.penultimate, &r["text.penultimate_hidden_state"]).unwrap() < 1e-4);
        let r = reference("tiny-sdxl");
        let out2 = model("tiny-sdxl", "text_encoder_2").forward(&ids(&r, "text.input_ids_2")).unwrap();
        assert!(rel_error(&out2.penultimate, &r["text.penultimate_hidden_state_2"]).unwrap() < 1e-4);
        let e = rel_error(out2.text_embeds.as_ref().unwrap(), &r["text.text_embeds_2"]).unwrap();
        assert!(e < 1e-4, "{e}");
        let out1 = model("tiny-sdxl", "text_encoder").forward(&ids(&r, "text.input_ids")).unwrap();
        assert!(rel_error(&concat_last(&out1.penultimate, &out2.penultimate).unwrap(), &r["prompt_embeds"]).unwrap() < 1e-4);
    }
}
