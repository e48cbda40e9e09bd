//! Writing a loaded LoRA in the layouts the clients read:
//! - **PEFT/diffusers** (`unet.<path>.lora_A.weight`, what `load_lora_weights` and the Hub read):
//!   plain LoRA/LoCon and PEFT DoRA. alpha/r is folded into `lora_B` and no
//!   `lora_adapter_metadata` is written, so diffusers infers each module's rank from its shapes
//!   and uses alpha = r (scale 1): exact for modules of different ranks too.
//! - **kohya** (`lora_unet_…`, `lora_te_`/`lora_te1_`/`lora_te2_`, `.lora_down/.lora_up/.alpha`,
//!   LyCORIS `hada_*`/`lokr_*`/`dora_scale` kept as they are), what kohya sd-scripts writes and
//!   A1111/Forge and ComfyUI load. SD 1.x modules keep diffusers' path with `_`; SDXL UNet modules
//!   take the SGM names kohya's SDXL networks use (`input_blocks_4_1_…`), text encoders keep
//!   `text_model_…`. Metadata: kohya's `ss_*` keys (base model version, rank, alpha, network
//!   module and args).
//! - **ComfyUI**: the kohya layout. ComfyUI's `comfy/lora.py` (`model_lora_keys_unet`,
//!   `model_lora_keys_clip`) maps `lora_unet_<diffusers path with _>` and the SGM names for
//!   SDXL, and `lora_te_`/`lora_te1_`/`lora_te2_` `text_model_…`; its `comfy/weight_adapter/`
//!   reads `lora_down/up/mid`, `alpha`, `dora_scale`, `hada_*`, `lokr_*`.

use super::keys;
use super::{Dora, Factors, LoraError, LoraModule, LoraWeights};
use candle_core::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};

/// The layout a LoRA is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Peft,
    Kohya,
    Comfyui,
}

impl std::fmt::Display for ExportFormat {
    /// The name `--to` and train.yaml's `lora_formats` take.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExportFormat::Peft => "peft",
            ExportFormat::Kohya => "kohya",
            ExportFormat::Comfyui => "comfyui",
        })
    }
}

impl ExportFormat {
    /// The file a training run writes this layout to.
    pub fn file_name(self) -> &'static str {
        match self {
            ExportFormat::Peft => crate::names::LORA_WEIGHTS,
            ExportFormat::Kohya => crate::names::LORA_WEIGHTS_KOHYA,
            ExportFormat::Comfyui => crate::names::LORA_WEIGHTS_COMFYUI,
        }
    }
}

/// What SGM block numbering and text-encoder prefixes need to know of the base UNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseLayout {
    pub sdxl: bool,
    pub layers_per_block: usize,
    /// Per up block: whether it has attention (then SGM puts its upsampler third, not second).
    pub up_has_attention: Vec<bool>,
}

impl BaseLayout {
    /// SD 1.x/2.x: 2 layers per block, up blocks [Up, CrossAttnUp ×3].
    pub fn sd15() -> Self {
        BaseLayout { sdxl: false, layers_per_block: 2, up_has_attention: vec![false, true, true, true] }
    }

    /// SDXL base: 2 layers per block, up blocks [CrossAttnUp ×2, Up].
    pub fn sdxl() -> Self {
        BaseLayout { sdxl: true, layers_per_block: 2, up_has_attention: vec![true, true, false] }
    }

    /// From a UNet's config (SDXL when it takes text/time added conditioning).
    pub fn from_unet_config(c: &crate::diffusion::unet::UNetConfig) -> Self {
        let layers_per_block = match &c.layers_per_block {
            crate::diffusion::unet::config::OneOrMany::One(n) => *n,
            crate::diffusion::unet::config::OneOrMany::Many(v) => v.first().copied().unwrap_or(2),
        };
        BaseLayout {
            sdxl: c.addition_embed_type.as_deref() == Some("text_time"),
            layers_per_block,
            up_has_attention: c.up_block_types.iter().map(|t| t.contains("CrossAttn")).collect(),
        }
    }

    /// Guesses the base from the LoRA itself: SDXL when it has a second text encoder, SGM block
    /// names, kohya's `ss_base_model_version` saying so, or attention with more than one
    /// transformer block (SD 1.x has one per block); SD 1.x when down block 0 has attention
    /// (SDXL's has none). `None` when nothing tells.
    pub fn guess(lora: &LoraWeights) -> Option<Self> {
        if let Some(v) = &lora.base_model_version {
            return Some(if v.contains("sdxl") { Self::sdxl() } else { Self::sd15() });
        }
        if lora.components.contains_key("text_encoder_2") {
            return Some(Self::sdxl());
        }
        let unet = lora.components.get("unet")?;
        if unet.keys().any(|k| lora.kohya_names && keys::is_sgm(k)) {
            return Some(Self::sdxl());
        }
        let sep = if lora.kohya_names { "_" } else { "." };
        let more_than_one = |k: &str| {
            k.split(&format!("transformer_blocks{sep}"))
                .nth(1)
                .and_then(|r| r.split(sep).next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n > 0)
        };
        if unet.keys().any(|k| more_than_one(k)) {
            return Some(Self::sdxl());
        }
        if unet.keys().any(|k| k.starts_with(&format!("down_blocks{sep}0{sep}attentions"))) {
            return Some(Self::sd15());
        }
        None
    }
}

/// Named tensors and the safetensors header metadata of an exported LoRA.
pub type Exported = (Vec<(String, Tensor)>, HashMap<String, String>);

/// Multi-word names in diffusers/transformers module paths, to rebuild dots from kohya's
/// underscores (as diffusers' `_convert_unet_lora_key`/`_convert_text_encoder_lora_key` do).
const JOINED: [&str; 26] = [
    "down_blocks",
    "up_blocks",
    "mid_block",
    "transformer_blocks",
    "to_q",
    "to_k",
    "to_v",
    "to_out",
    "proj_in",
    "proj_out",
    "conv_shortcut",
    "time_emb_proj",
    "time_embedding",
    "linear_1",
    "linear_2",
    "add_embedding",
    "conv_in",
    "conv_out",
    "text_model",
    "self_attn",
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "text_projection",
    "final_layer_norm",
];

/// kohya's underscored module name → the dotted path.
pub(crate) fn dotted(name: &str) -> String {
    let toks: Vec<&str> = name.split('_').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let joined = [3, 2].iter().find_map(|&n| {
            let j = toks.get(i..i + n)?.join("_");
            JOINED.contains(&j.as_str()).then_some((j, n))
        });
        match joined {
            Some((j, n)) => {
                out.push(j);
                i += n;
            }
            None => {
                out.push(toks[i].to_string());
                i += 1;
            }
        }
    }
    out.join(".")
}

impl LoraWeights {
    /// Module → dotted diffusers/transformers path, per component.
    fn dotted_modules(&self, base: &BaseLayout) -> Result<BTreeMap<String, BTreeMap<String, &LoraModule>>, LoraError> {
        let mut out: BTreeMap<String, BTreeMap<String, &LoraModule>> = BTreeMap::new();
        for (comp, modules) in &self.components {
            for (name, m) in modules {
                let path = if !self.kohya_names {
                    name.clone()
                } else if comp == "unet" && keys::is_sgm(name) {
                    let d = keys::sgm_to_diffusers(name, base.layers_per_block).ok_or_else(|| LoraError::Format {
                        path: self.path.clone(),
                        detail: format!("lora_unet_{name}: an SGM block name with no diffusers counterpart"),
                    })?;
                    dotted(&d)
                } else {
                    dotted(name)
                };
                out.entry(comp.clone()).or_default().insert(path, m);
            }
        }
        Ok(out)
    }

    /// alpha of a module as kohya writes it: its own, else from `lora_adapter_metadata`, else r.
    fn kohya_alpha(&self, component: &str, m: &LoraModule) -> Option<f64> {
        let rank = m.rank()? as f64;
        Some(match m.alpha {
            Some(a) if a != 0.0 => a,
            _ => self.metadata.get(component).map(|(r, a)| a / r * rank).unwrap_or(rank),
        })
    }

    /// The tensors and header metadata of this LoRA in `format`, for a base of `base`'s layout.
    /// Errors name the module and why the format cannot hold it (PEFT/diffusers files hold no
    /// LoHa, LoKr, Tucker LoCon or LyCORIS-layout DoRA).
    pub fn export(&self, format: ExportFormat, base: &BaseLayout) -> Result<Exported, LoraError> {
        let modules = self.dotted_modules(base)?;
        let fail = |detail: String| LoraError::Format { path: self.path.clone(), detail };
        let mut tensors = Vec::new();
        let mut meta = HashMap::new();
        match format {
            ExportFormat::Peft => {
                for (comp, ms) in &modules {
                    for (path, m) in ms {
                        let s = self.alpha_over_rank(comp, m);
                        let Factors::Lora { down, up, mid: None } = &m.factors else {
                            return Err(fail(format!(
                                "{comp}.{path}: a {} module has no PEFT/diffusers form (diffusers loads LoRA, LoCon and DoRA); convert to kohya, which ComfyUI and A1111 load",
                                if matches!(m.factors, Factors::Lora { .. }) { "Tucker LoCon" } else { m.kind() }
                            )));
                        };
                        let up = up.affine(s, 0.0).map_err(|e| fail(e.to_string()))?;
                        tensors.push((format!("{comp}.{path}.lora_A.weight"), down.clone()));
                        tensors.push((format!("{comp}.{path}.lora_B.weight"), up));
                        match &m.dora {
                            None => {}
                            Some(Dora::Magnitude(v)) => tensors.push((format!("{comp}.{path}.lora_magnitude_vector"), v.clone())),
                            Some(Dora::Scale(_)) => {
                                return Err(fail(format!(
                                    "{comp}.{path}: a kohya/LyCORIS DoRA (`dora_scale`) differs from PEFT's (norm axis, ε, how the LoRA scale applies); keep it in kohya format"
                                )))
                            }
                        }
                    }
                }
                meta.insert("format".into(), "pt".into());
            }
            ExportFormat::Kohya | ExportFormat::Comfyui => {
                let mut kinds = std::collections::BTreeSet::new();
                let mut ranks: BTreeMap<usize, usize> = BTreeMap::new();
                let mut first_alpha = None;
                for (comp, ms) in &modules {
                    for (path, m) in ms {
                        let name =
                            self.kohya_name(comp, path, base).ok_or_else(|| fail(format!("{comp}.{path}: no kohya/SGM name for this module")))?;
                        let alpha = self.kohya_alpha(comp, m);
                        kinds.insert(m.kind());
                        if let Some(r) = m.rank() {
                            *ranks.entry(r).or_default() += 1;
                        }
                        first_alpha = first_alpha.or(alpha);
                        let mut put = |suffix: &str, t: &Tensor| tensors.push((format!("{name}.{suffix}"), t.clone()));
                        match &m.factors {
                            Factors::Lora { down, up, mid } => {
                                put("lora_down.weight", down);
                                put("lora_up.weight", up);
                                if let Some(t) = mid {
                                    put("lora_mid.weight", t);
                                }
                            }
                            Factors::Loha { w1a, w1b, w2a, w2b, t1, t2 } => {
                                for (k, t) in [
                                    ("hada_w1_a", Some(w1a)),
                                    ("hada_w1_b", Some(w1b)),
                                    ("hada_w2_a", Some(w2a)),
                                    ("hada_w2_b", Some(w2b)),
                                    ("hada_t1", t1.as_ref()),
                                    ("hada_t2", t2.as_ref()),
                                ] {
                                    if let Some(t) = t {
                                        put(k, t);
                                    }
                                }
                            }
                            Factors::Lokr { w1, w1a, w1b, w2, w2a, w2b, t2 } => {
                                for (k, t) in [
                                    ("lokr_w1", w1),
                                    ("lokr_w1_a", w1a),
                                    ("lokr_w1_b", w1b),
                                    ("lokr_w2", w2),
                                    ("lokr_w2_a", w2a),
                                    ("lokr_w2_b", w2b),
                                    ("lokr_t2", t2),
                                ] {
                                    if let Some(t) = t {
                                        put(k, t);
                                    }
                                }
                            }
                        }
                        match &m.dora {
                            None => {}
                            Some(Dora::Scale(t)) => put("dora_scale", t),
                            // LyCORIS' output-axis layout; equal to PEFT's at multiplier 1 up to its ε.
                            Some(Dora::Magnitude(v)) => put("dora_scale", &v.reshape((v.elem_count(), 1)).map_err(|e| fail(e.to_string()))?),
                        }
                        if let Some(a) = alpha {
                            put("alpha", &Tensor::new(a as f32, &candle_core::Device::Cpu).map_err(|e| fail(e.to_string()))?);
                        }
                    }
                }
                let lycoris = kinds.iter().any(|k| matches!(*k, "LoHa" | "LoKr" | "DoRA"))
                    || modules.values().flat_map(|m| m.values()).any(|m| matches!(&m.factors, Factors::Lora { mid: Some(_), .. }));
                let algo = if kinds.contains("LoHa") {
                    "loha"
                } else if kinds.contains("LoKr") {
                    "lokr"
                } else {
                    "locon"
                };
                meta.insert("ss_network_module".into(), if lycoris { "lycoris.kohya" } else { "networks.lora" }.into());
                let mut args = serde_json::Map::new();
                if lycoris {
                    args.insert("algo".into(), algo.into());
                }
                if kinds.contains("DoRA") {
                    args.insert("dora_wd".into(), "True".into());
                }
                if kinds.contains("LoCon") && !lycoris {
                    args.insert("conv_dim".into(), ranks.keys().next().map(|r| r.to_string()).unwrap_or_default().into());
                }
                if !args.is_empty() {
                    meta.insert("ss_network_args".into(), serde_json::Value::Object(args).to_string());
                }
                if let Some((r, _)) = ranks.iter().max_by_key(|(_, n)| **n) {
                    meta.insert("ss_network_dim".into(), r.to_string());
                }
                if let Some(a) = first_alpha {
                    meta.insert("ss_network_alpha".into(), a.to_string());
                }
                meta.insert("ss_base_model_version".into(), if base.sdxl { "sdxl_base_v1-0" } else { "sd_v1" }.into());
                meta.insert("ss_v2".into(), "False".into());
                meta.insert("ss_training_comment".into(), format!("converted by hfsky {} from {}", env!("CARGO_PKG_VERSION"), self.format));
            }
        }
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| t.to_dtype(DType::F32).map(|t| (k, t)))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(|e| fail(e.to_string()))?;
        Ok((tensors, meta))
    }

    /// The kohya key stem of a module (`lora_unet_…`, `lora_te_…`).
    fn kohya_name(&self, component: &str, path: &str, base: &BaseLayout) -> Option<String> {
        match component {
            "unet" if base.sdxl => {
                let up_attn = |b: usize| base.up_has_attention.get(b).copied().unwrap_or(true);
                Some(format!("lora_unet_{}", keys::diffusers_to_sgm(path, base.layers_per_block, up_attn)?))
            }
            "unet" => Some(format!("lora_unet_{}", path.replace('.', "_"))),
            te => {
                // kohya names CLIP layers as transformers 4 saved them, under `text_model`.
                let path = if path.starts_with("text_model.") || path.starts_with("text_projection") {
                    path.to_string()
                } else {
                    format!("text_model.{path}")
                };
                let prefix = match (te, base.sdxl) {
                    ("text_encoder", false) => "lora_te_",
                    ("text_encoder", true) => "lora_te1_",
                    _ => "lora_te2_",
                };
                Some(format!("{prefix}{}", path.replace('.', "_")))
            }
        }
    }

    /// Writes [`LoraWeights::export`] to `out` atomically.
    pub fn export_to(&self, format: ExportFormat, base: &BaseLayout, out: &std::path::Path) -> Result<usize, LoraError> {
        let (tensors, meta) = self.export(format, base)?;
        let n = tensors.len();
        crate::train::lora_params::write_safetensors(out, tensors, Some(meta))
            .map_err(|e| LoraError::Read { path: out.to_path_buf(), detail: e.to_string() })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_names_get_their_dots_back() {
        for (k, d) in [
            ("down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_out_0", "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0"),
            ("mid_block_resnets_1_time_emb_proj", "mid_block.resnets.1.time_emb_proj"),
            ("up_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj", "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj"),
            ("time_embedding_linear_1", "time_embedding.linear_1"),
            ("down_blocks_1_resnets_0_conv_shortcut", "down_blocks.1.resnets.0.conv_shortcut"),
            ("text_model_encoder_layers_11_self_attn_out_proj", "text_model.encoder.layers.11.self_attn.out_proj"),
            ("text_model_encoder_layers_0_mlp_fc2", "text_model.encoder.layers.0.mlp.fc2"),
            ("up_blocks_0_upsamplers_0_conv", "up_blocks.0.upsamplers.0.conv"),
        ] {
            assert_eq!(dotted(k), d);
        }
    }
}
