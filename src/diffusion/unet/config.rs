//! `UNet2DConditionModel`'s `config.json`, with diffusers' defaults, and its resolution into a
//! per-block plan. Every option diffusers would honour for the supported block types is either
//! implemented or refused with an error naming the field; options diffusers itself ignores for
//! these blocks (`resnet_skip_time_act`, `resnet_out_scale_factor`, `cross_attention_norm`,
//! `mid_block_only_cross_attention`, `addition_embed_type_num_heads`, `sample_size`) are accepted.

use crate::diffusion::config::{read_json, PipelineError};
use serde::Deserialize;
use std::path::Path;

/// A config value that diffusers accepts either as a scalar (same for every block) or as a list.
/// `Many` is tried first so that a nested `OneOrMany<OneOrMany<_>>` reads `[1, 2]` as a
/// per-block list rather than as one per-layer list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T: Clone> OneOrMany<T> {
    /// The per-block list; a list must have exactly `n` entries.
    fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>, String> {
        match self {
            OneOrMany::One(v) => Ok(vec![v.clone(); n]),
            OneOrMany::Many(v) if v.len() == n => Ok(v.clone()),
            OneOrMany::Many(v) => Err(format!("`{field}` has {} entries but there are {n} down blocks", v.len())),
        }
    }
}

fn d_true() -> bool {
    true
}
fn d_4() -> usize {
    4
}
fn d_1usize() -> usize {
    1
}
fn d_3() -> usize {
    3
}
fn d_1f() -> f64 {
    1.0
}
fn d_eps() -> f64 {
    1e-5
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_down() -> Vec<String> {
    ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> OneOrMany<usize> {
    OneOrMany::One(2)
}
fn d_false_list() -> OneOrMany<bool> {
    OneOrMany::One(false)
}
fn d_cross() -> OneOrMany<usize> {
    OneOrMany::One(1280)
}
fn d_tlayers() -> OneOrMany<OneOrMany<usize>> {
    OneOrMany::One(OneOrMany::One(1))
}
fn d_head_dim() -> Option<OneOrMany<usize>> {
    Some(OneOrMany::One(8))
}
fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}

/// `unet/config.json` as diffusers 0.42 reads it (fields missing from the file take diffusers'
/// defaults; unknown keys are ignored, as diffusers ignores them).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_4")]
    pub in_channels: usize,
    #[serde(default = "d_4")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_false_list")]
    pub only_cross_attention: OneOrMany<bool>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: OneOrMany<usize>,
    #[serde(default = "d_1usize")]
    pub downsample_padding: usize,
    #[serde(default = "d_1f")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_cross")]
    pub cross_attention_dim: OneOrMany<usize>,
    #[serde(default = "d_tlayers")]
    pub transformer_layers_per_block: OneOrMany<OneOrMany<usize>>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Vec<OneOrMany<usize>>>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: Option<OneOrMany<usize>>,
    #[serde(default)]
    pub num_attention_heads: Option<OneOrMany<usize>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// Only changes numerics below f32 (we always take the softmax in f32); see attention.rs.
    #[serde(default)]
    pub upcast_attention: Option<bool>,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "d_3")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_3")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default = "d_default")]
    pub attention_type: String,
    #[serde(default)]
    pub class_embeddings_concat: bool,
}

impl UNetConfig {
    /// Reads and checks a `config.json`; an unsupported value is an error naming the field.
    pub fn from_file(path: &Path) -> Result<Self, PipelineError> {
        let config: UNetConfig = read_json(path)?;
        config.plan().map_err(|detail| PipelineError::BadConfig { path: path.to_path_buf(), detail })?;
        Ok(config)
    }

    pub fn from_json(json: &str) -> Result<Self, String> {
        let config: UNetConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.plan()?;
        Ok(config)
    }

    /// SDXL-style added conditioning (`addition_embed_type: "text_time"`).
    pub fn has_text_time(&self) -> bool {
        self.addition_embed_type.as_deref() == Some("text_time")
    }

    /// Resolves the config into the layout of every block (diffusers' `__init__` logic).
    pub(crate) fn plan(&self) -> Result<Plan, String> {
        let unsupported = |field: &str, value: &dyn std::fmt::Debug, why: &str| -> Result<Plan, String> {
            Err(format!("unsupported UNet config: `{field}` = {value:?} ({why})"))
        };
        let n = self.down_block_types.len();
        if n == 0 {
            return Err("invalid UNet config: `down_block_types` is empty".into());
        }
        if self.up_block_types.len() != n {
            return Err(format!("invalid UNet config: `up_block_types` has {} entries, `down_block_types` {n}", self.up_block_types.len()));
        }
        if self.block_out_channels.len() != n {
            return Err(format!("invalid UNet config: `block_out_channels` has {} entries, `down_block_types` {n}", self.block_out_channels.len()));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return unsupported("act_fn", &self.act_fn, "only silu/swish is implemented");
        }
        let Some(groups) = self.norm_num_groups else {
            return unsupported("norm_num_groups", &self.norm_num_groups, "null is not supported");
        };
        if self.resnet_time_scale_shift != "default" {
            return unsupported("resnet_time_scale_shift", &self.resnet_time_scale_shift, "only \"default\" is implemented");
        }
        if self.time_embedding_type != "positional" {
            return unsupported("time_embedding_type", &self.time_embedding_type, "only \"positional\" is implemented");
        }
        for (field, v) in [("time_embedding_act_fn", &self.time_embedding_act_fn), ("timestep_post_act", &self.timestep_post_act)] {
            if let Some(v) = v {
                if !matches!(v.as_str(), "silu" | "swish") {
                    return unsupported(field, v, "only null or silu/swish is implemented");
                }
            }
        }
        if self.time_cond_proj_dim.is_some() {
            return unsupported("time_cond_proj_dim", &self.time_cond_proj_dim, "timestep conditioning (LCM) is not implemented");
        }
        if self.class_embed_type.is_some() {
            return unsupported("class_embed_type", &self.class_embed_type, "class embeddings are not implemented");
        }
        if self.num_class_embeds.is_some() {
            return unsupported("num_class_embeds", &self.num_class_embeds, "class embeddings are not implemented");
        }
        if self.class_embeddings_concat {
            return unsupported("class_embeddings_concat", &true, "class embeddings are not implemented");
        }
        // diffusers turns a bare `encoder_hid_dim` into a "text_proj" projection.
        if self.encoder_hid_dim_type.is_some() || self.encoder_hid_dim.is_some() {
            return unsupported(
                "encoder_hid_dim_type",
                &(&self.encoder_hid_dim_type, self.encoder_hid_dim),
                "encoder hidden-state projections are not implemented",
            );
        }
        if self.dual_cross_attention {
            return unsupported("dual_cross_attention", &true, "not implemented");
        }
        if self.attention_type != "default" {
            return unsupported("attention_type", &self.attention_type, "only \"default\" is implemented");
        }
        if self.dropout != 0.0 {
            // Inference ignores dropout, but a trainer built on this model would not apply it.
            return unsupported("dropout", &self.dropout, "only 0.0 is implemented");
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return unsupported("conv_in_kernel/conv_out_kernel", &(self.conv_in_kernel, self.conv_out_kernel), "even kernels are not implemented");
        }
        let only_cross = self.only_cross_attention.per_block(n, "only_cross_attention")?;
        if only_cross.iter().any(|&b| b) {
            return unsupported("only_cross_attention", &self.only_cross_attention, "only false is implemented");
        }

        let added = match self.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => {
                let Some(time_dim) = self.addition_time_embed_dim else {
                    return Err("invalid UNet config: `addition_embed_type` \"text_time\" needs `addition_time_embed_dim`".into());
                };
                let Some(in_dim) = self.projection_class_embeddings_input_dim else {
                    return Err("invalid UNet config: `addition_embed_type` \"text_time\" needs `projection_class_embeddings_input_dim`".into());
                };
                Some(AddedPlan { time_dim, in_dim })
            }
            Some(other) => return unsupported("addition_embed_type", &other, "only null or \"text_time\" is implemented"),
        };

        // diffusers quirk (issue #2011): `attention_head_dim` holds the number of heads unless
        // `num_attention_heads` is given; the head width is then out_channels / heads.
        // (diffusers 0.42 refuses `num_attention_heads` altogether; we read it as a head count.)
        let heads = match (&self.num_attention_heads, &self.attention_head_dim) {
            (Some(h), _) => h.per_block(n, "num_attention_heads")?,
            (None, Some(h)) => h.per_block(n, "attention_head_dim")?,
            (None, None) => return Err("invalid UNet config: neither `num_attention_heads` nor `attention_head_dim` is set".into()),
        };
        if heads.contains(&0) {
            return Err("invalid UNet config: a block has 0 attention heads".into());
        }
        let cross = self.cross_attention_dim.per_block(n, "cross_attention_dim")?;
        let layers = self.layers_per_block.per_block(n, "layers_per_block")?;
        let tlayers = self.transformer_layers_per_block.per_block(n, "transformer_layers_per_block")?;
        if self.reverse_transformer_layers_per_block.is_none() && tlayers.iter().any(|t| matches!(t, OneOrMany::Many(_))) {
            return Err("invalid UNet config: per-layer lists in `transformer_layers_per_block` need `reverse_transformer_layers_per_block` (asymmetric UNet)".into());
        }
        let per_layer = |t: &OneOrMany<usize>, count: usize, field: &str| -> Result<Vec<usize>, String> {
            match t {
                OneOrMany::One(v) => Ok(vec![*v; count]),
                OneOrMany::Many(v) if v.len() >= count => Ok(v[..count].to_vec()),
                OneOrMany::Many(v) => Err(format!("invalid UNet config: `{field}` entry {v:?} has fewer than {count} layers")),
            }
        };

        let block_kind = |t: &str, field: &str, cross_name: &str, plain_name: &str| -> Result<bool, String> {
            let t = t.strip_prefix("UNetRes").unwrap_or(t);
            if t == cross_name {
                Ok(true)
            } else if t == plain_name {
                Ok(false)
            } else {
                Err(format!("unsupported UNet config: `{field}` contains {t:?} (only {cross_name} and {plain_name} are implemented)"))
            }
        };

        let mut down = Vec::with_capacity(n);
        let mut out_ch = self.block_out_channels[0];
        for i in 0..n {
            let in_ch = out_ch;
            out_ch = self.block_out_channels[i];
            let attention = block_kind(&self.down_block_types[i], "down_block_types", "CrossAttnDownBlock2D", "DownBlock2D")?;
            down.push(BlockPlan {
                attention,
                in_channels: in_ch,
                out_channels: out_ch,
                prev_output_channels: 0,
                num_layers: layers[i],
                transformer_layers: per_layer(&tlayers[i], layers[i], "transformer_layers_per_block")?,
                heads: heads[i],
                cross_attention_dim: cross[i],
                resample: i + 1 < n,
            });
        }

        let mid = match self.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => Some(MidPlan {
                channels: self.block_out_channels[n - 1],
                transformer_layers: per_layer(&tlayers[n - 1], 1, "transformer_layers_per_block")?,
                heads: heads[n - 1],
                cross_attention_dim: cross[n - 1],
                output_scale_factor: self.mid_block_scale_factor,
            }),
            Some(other) => return unsupported("mid_block_type", &other, "only UNetMidBlock2DCrossAttn (or null) is implemented"),
        };

        let rev_channels: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let rev_tlayers: Vec<OneOrMany<usize>> = match &self.reverse_transformer_layers_per_block {
            Some(r) if r.len() == n => r.clone(),
            Some(r) => return Err(format!("invalid UNet config: `reverse_transformer_layers_per_block` has {} entries, expected {n}", r.len())),
            None => tlayers.iter().rev().cloned().collect(),
        };
        let mut up = Vec::with_capacity(n);
        let mut out_ch = rev_channels[0];
        for i in 0..n {
            let prev = out_ch;
            out_ch = rev_channels[i];
            let in_ch = rev_channels[(i + 1).min(n - 1)];
            let attention = block_kind(&self.up_block_types[i], "up_block_types", "CrossAttnUpBlock2D", "UpBlock2D")?;
            let num_layers = layers[n - 1 - i] + 1;
            up.push(BlockPlan {
                attention,
                in_channels: in_ch,
                out_channels: out_ch,
                prev_output_channels: prev,
                num_layers,
                transformer_layers: per_layer(&rev_tlayers[i], num_layers, "reverse_transformer_layers_per_block")?,
                heads: heads[n - 1 - i],
                cross_attention_dim: cross[n - 1 - i],
                resample: i + 1 < n,
            });
        }

        let time_embed_dim = self.time_embedding_dim.unwrap_or(self.block_out_channels[0] * 4);
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % groups != 0 {
                return Err(format!("invalid UNet config: `norm_num_groups` {groups} does not divide block_out_channels[{i}] = {c}"));
            }
        }
        Ok(Plan { groups, time_embed_dim, down, mid, up, added })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AddedPlan {
    /// Sinusoid width per time id.
    pub time_dim: usize,
    /// `add_embedding.linear_1` input: text_embeds width + ids × time_dim.
    pub in_dim: usize,
}

/// One down or up block. For up blocks `in_channels` is diffusers' skip-connection width of the
/// last resnet and `prev_output_channels` the width coming from the block below.
#[derive(Debug, Clone)]
pub(crate) struct BlockPlan {
    pub attention: bool,
    pub in_channels: usize,
    pub out_channels: usize,
    pub prev_output_channels: usize,
    pub num_layers: usize,
    /// Transformer depth per resnet (only used when `attention`).
    pub transformer_layers: Vec<usize>,
    pub heads: usize,
    pub cross_attention_dim: usize,
    /// Downsampler (down blocks) or upsampler (up blocks).
    pub resample: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct MidPlan {
    pub channels: usize,
    pub transformer_layers: Vec<usize>,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub output_scale_factor: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub groups: usize,
    pub time_embed_dim: usize,
    pub down: Vec<BlockPlan>,
    pub mid: Option<MidPlan>,
    pub up: Vec<BlockPlan>,
    pub added: Option<AddedPlan>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::testing::pipeline_dir;

    #[test]
    fn fixture_configs_resolve_like_diffusers() {
        let sd = UNetConfig::from_file(&pipeline_dir("tiny-sd15").join("unet/config.json")).unwrap();
        let p = sd.plan().unwrap();
        assert!(p.added.is_none());
        assert_eq!((p.down[0].attention, p.down[0].heads, p.down[0].resample), (true, 4, true));
        assert_eq!((p.up[0].attention, p.up[0].num_layers, p.up[0].prev_output_channels, p.up[0].in_channels), (false, 2, 64, 32));
        let xl = UNetConfig::from_file(&pipeline_dir("tiny-sdxl").join("unet/config.json")).unwrap();
        let p = xl.plan().unwrap();
        assert_eq!(p.down[1].transformer_layers, vec![2]);
        assert_eq!((p.up[0].heads, p.up[0].transformer_layers.clone()), (4, vec![2, 2]));
        assert_eq!(p.mid.as_ref().unwrap().transformer_layers, vec![2]);
        let a = p.added.unwrap();
        assert_eq!((a.time_dim, a.in_dim), (8, 80));
    }

    #[test]
    fn defaults_are_sd15_and_unsupported_fields_are_named() {
        let c = UNetConfig::from_json("{}").unwrap();
        let p = c.plan().unwrap();
        assert_eq!(p.down.len(), 4);
        assert_eq!((p.down[3].attention, p.up[3].num_layers, p.time_embed_dim), (false, 3, 1280));
        for (json, field) in [
            (r#"{"resnet_time_scale_shift": "scale_shift"}"#, "resnet_time_scale_shift"),
            (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
            (r#"{"addition_embed_type": "text"}"#, "addition_embed_type"),
            (r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#, "mid_block_type"),
            (r#"{"only_cross_attention": [false, true, false, false]}"#, "only_cross_attention"),
            (r#"{"attention_head_dim": [8, 8]}"#, "attention_head_dim"),
            (r#"{"time_cond_proj_dim": 256}"#, "time_cond_proj_dim"),
            (r#"{"encoder_hid_dim": 768}"#, "encoder_hid_dim"),
            (r#"{"down_block_types": ["AttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#, "down_block_types"),
        ] {
            let err = UNetConfig::from_json(json).unwrap_err();
            assert!(err.contains(field), "{json}: {err}");
        }
    }
}
