//! UNet2DConditionModel (diffusers-faithful): SD 1.x/2.x and SDXL layouts, per-sample timesteps,
//! SDXL "text_time" added conditioning, LoRA-aware linears on every attention / feed-forward /
//! embedding projection, and only differentiable ops (so LoRA gradients are exact).
//!
//! Layout: [`config`] (config.json and its resolution), [`embeddings`] (timestep sinusoids and
//! MLPs), [`resnet`] (resnets, down/up samplers), [`attention`] (transformer blocks),
//! [`blocks`] (down/mid/up blocks), and the model here.

pub mod attention;
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod resnet;

pub use config::UNetConfig;

use crate::diffusion::fused::conv::Conv2d;
use crate::diffusion::fused::norm::GroupNorm;
use crate::diffusion::nn::Adapters;
use blocks::{DownBlock, MidBlock, Shared, UpBlock};
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use config::Plan;
use embeddings::{timestep_embedding, TimestepEmbedding};

/// SDXL's added conditioning: pooled text embeddings [B, P] and size/crop ids [B, 6]
/// (`original_h, original_w, crop_top, crop_left, target_h, target_w`).
#[derive(Debug, Clone)]
pub struct SdxlConditioning {
    pub text_embeds: Tensor,
    pub time_ids: Tensor,
}

#[derive(Debug, Clone)]
struct AddEmbedding {
    time_dim: usize,
    in_dim: usize,
    mlp: TimestepEmbedding,
}

#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    config: UNetConfig,
    dtype: DType,
    device: Device,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<AddEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Cross-attention widths the blocks expect (checked against encoder_hidden_states).
    cross_attention_dims: Vec<usize>,
    /// Recompute resnets and transformer blocks in backward instead of keeping their activations.
    gradient_checkpointing: bool,
}

impl UNet2DConditionModel {
    /// Builds the network from diffusers-layout weights (`vb` at the UNet's root). Linears register
    /// in `adapters` under their diffusers module paths. A missing or mis-shaped tensor is an
    /// error naming it; an unsupported config value an error naming the field.
    pub fn new(vb: VarBuilder, config: &UNetConfig, adapters: &Adapters) -> Result<Self> {
        let plan: Plan = config.plan().map_err(candle_core::Error::msg)?;
        let c0 = config.block_out_channels[0];
        let shared = Shared {
            temb_channels: plan.time_embed_dim,
            groups: plan.groups,
            eps: config.norm_eps,
            linear_projection: config.use_linear_projection,
            downsample_padding: config.downsample_padding,
        };
        let conv_in = crate::diffusion::fused::conv::Conv2d::load_adapted(
            vb.pp("conv_in"),
            adapters,
            config.in_channels,
            c0,
            config.conv_in_kernel,
            1,
            (config.conv_in_kernel - 1) / 2,
        )?;
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), adapters, c0, plan.time_embed_dim, config.timestep_post_act.is_some())?;
        let add_embedding = match &plan.added {
            Some(a) => Some(AddEmbedding {
                time_dim: a.time_dim,
                in_dim: a.in_dim,
                mlp: TimestepEmbedding::new(vb.pp("add_embedding"), adapters, a.in_dim, plan.time_embed_dim, false)?,
            }),
            None => None,
        };
        let down_blocks = plan
            .down
            .iter()
            .enumerate()
            .map(|(i, p)| DownBlock::new(vb.pp("down_blocks").pp(i), adapters, p, &shared))
            .collect::<Result<Vec<_>>>()?;
        let mid_block = match &plan.mid {
            Some(m) => Some(MidBlock::new(vb.pp("mid_block"), adapters, m, &shared)?),
            None => None,
        };
        let up_blocks =
            plan.up.iter().enumerate().map(|(i, p)| UpBlock::new(vb.pp("up_blocks").pp(i), adapters, p, &shared)).collect::<Result<Vec<_>>>()?;
        let conv_norm_out = GroupNorm::load(vb.pp("conv_norm_out"), plan.groups, c0, config.norm_eps, true)?;
        let conv_out = crate::diffusion::fused::conv::Conv2d::load_adapted(
            vb.pp("conv_out"),
            adapters,
            c0,
            config.out_channels,
            config.conv_out_kernel,
            1,
            (config.conv_out_kernel - 1) / 2,
        )?;
        let mut cross_attention_dims: Vec<usize> = plan
            .down
            .iter()
            .chain(&plan.up)
            .filter(|b| b.attention)
            .map(|b| b.cross_attention_dim)
            .chain(plan.mid.iter().map(|m| m.cross_attention_dim))
            .collect();
        cross_attention_dims.sort_unstable();
        cross_attention_dims.dedup();
        Ok(UNet2DConditionModel {
            config: config.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
            conv_in,
            time_embedding,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            cross_attention_dims,
            gradient_checkpointing: false,
        })
    }

    /// Gradient checkpointing for training: each resnet and transformer block keeps only its
    /// input for backward and runs again there (one extra forward; see `diffusion::recompute`).
    /// Outputs and gradients are unchanged; without trainable inputs it costs nothing.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.gradient_checkpointing = on;
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Predicts noise (or whatever the model was trained for) for `sample` [B, C, H, W] at
    /// `timesteps` ([B], or one value for the whole batch; any numeric dtype), conditioned on
    /// `encoder_hidden_states` [B, M, D] and, for SDXL, `added`. Inputs are cast to the model's dtype.
    pub fn forward(&self, sample: &Tensor, timesteps: &Tensor, encoder_hidden_states: &Tensor, added: Option<&SdxlConditioning>) -> Result<Tensor> {
        let (b, c, height, width) = sample.dims4()?;
        if c != self.config.in_channels {
            bail!("unet: sample has {c} channels, the model takes {}", self.config.in_channels);
        }
        let (cb, _, cd) = encoder_hidden_states.dims3()?;
        if cb != b {
            bail!("unet: encoder_hidden_states batch {cb} differs from the sample batch {b}");
        }
        if !self.cross_attention_dims.iter().all(|&d| d == cd) {
            bail!("unet: encoder_hidden_states width {cd} does not fit the cross-attention width {:?}", self.cross_attention_dims);
        }
        let context = encoder_hidden_states.to_dtype(self.dtype)?;
        let sample = sample.to_dtype(self.dtype)?;

        let t = timesteps.flatten_all()?;
        let t = match t.dim(0)? {
            n if n == b => t,
            1 => t.broadcast_as(b)?.contiguous()?,
            n => bail!("unet: {n} timesteps for a batch of {b}"),
        };
        let t_emb = timestep_embedding(&t, self.config.block_out_channels[0], self.config.flip_sin_to_cos, self.config.freq_shift)?;
        let mut emb = self.time_embedding.forward(&t_emb.to_dtype(self.dtype)?)?;
        match (&self.add_embedding, added) {
            (Some(add), Some(cond)) => emb = (emb + self.added_embedding(add, cond, b)?)?,
            (Some(_), None) => {
                bail!("unet: this is an SDXL-style UNet (addition_embed_type \"text_time\"); it needs text_embeds and time_ids")
            }
            (None, Some(_)) => {
                bail!("unet: text_embeds/time_ids given, but this UNet has no added conditioning (addition_embed_type is null)")
            }
            (None, None) => {}
        }
        if self.config.time_embedding_act_fn.is_some() {
            emb = emb.silu()?;
        }

        let sample = if self.config.center_input_sample { sample.affine(2.0, -1.0)? } else { sample };
        let ckpt = self.gradient_checkpointing;
        let mut h = self.conv_in.forward(&sample)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&h, &emb, &context, ckpt)?;
            h = out;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, &emb, &context, ckpt)?;
        }
        // Sizes that are not multiples of 2^upsamplers: each upsampler targets its skip's size.
        let factor = 1usize << (self.up_blocks.len() - 1);
        let forward_upsample_size = height % factor != 0 || width % factor != 0;
        let mut upsample_size = None;
        let last = self.up_blocks.len() - 1;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let these = skips.split_off(skips.len() - block.num_skips());
            if i != last && forward_upsample_size {
                let (_, _, sh, sw) = skips.last().expect("a skip state below every up block").dims4()?;
                upsample_size = Some((sh, sw));
            }
            h = block.forward(&h, &these, &emb, &context, upsample_size, ckpt)?;
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&h)?)
    }

    /// SDXL: sinusoids of every time id, flattened per sample, after the pooled text embeddings,
    /// through `add_embedding`.
    fn added_embedding(&self, add: &AddEmbedding, cond: &SdxlConditioning, b: usize) -> Result<Tensor> {
        let (tb, p) = cond.text_embeds.dims2()?;
        let (ib, k) = cond.time_ids.dims2()?;
        if tb != b || ib != b {
            bail!("unet: text_embeds batch {tb} / time_ids batch {ib} differ from the sample batch {b}");
        }
        if p + k * add.time_dim != add.in_dim {
            bail!(
                "unet: text_embeds width {p} + {k} time ids × {} = {} does not match add_embedding's input width {}",
                add.time_dim,
                p + k * add.time_dim,
                add.in_dim
            );
        }
        let time = timestep_embedding(&cond.time_ids.flatten_all()?, add.time_dim, self.config.flip_sin_to_cos, self.config.freq_shift)?
            .reshape((b, k * add.time_dim))?
            .to_dtype(self.dtype)?;
        let x = Tensor::cat(&[&cond.text_embeds.to_dtype(self.dtype)?, &time], 1)?;
        add.mlp.forward(&x)
    }
}

#[cfg(test)]
mod tests;
