//! Down blocks (`CrossAttnDownBlock2D` / `DownBlock2D`), the mid block
//! (`UNetMidBlock2DCrossAttn`) and up blocks (`CrossAttnUpBlock2D` / `UpBlock2D`).

use super::attention::Transformer2DModel;
use super::config::{BlockPlan, MidPlan};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::diffusion::nn::Adapters;
use crate::diffusion::recompute::checkpointed;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// What every block needs besides its own plan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub linear_projection: bool,
    pub downsample_padding: usize,
}

/// A resnet, recomputed in backward under gradient checkpointing.
fn resnet_forward(resnet: &ResnetBlock2D, x: &Tensor, temb: &Tensor, ckpt: bool) -> Result<Tensor> {
    if ckpt {
        let r = resnet.clone();
        checkpointed(x, temb, move |x, temb| r.forward(x, temb))
    } else {
        resnet.forward(x, temb)
    }
}

fn attention_layers(vb: &VarBuilder, adapters: &Adapters, plan: &BlockPlan, s: &Shared) -> Result<Vec<Transformer2DModel>> {
    if !plan.attention {
        return Ok(Vec::new());
    }
    (0..plan.num_layers)
        .map(|i| {
            Transformer2DModel::new(
                vb.pp("attentions").pp(i),
                adapters,
                plan.out_channels,
                plan.heads,
                plan.transformer_layers[i],
                plan.cross_attention_dim,
                s.groups,
                s.linear_projection,
            )
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub(crate) fn new(vb: VarBuilder, adapters: &Adapters, plan: &BlockPlan, s: &Shared) -> Result<Self> {
        let resnets = (0..plan.num_layers)
            .map(|i| {
                let in_ch = if i == 0 { plan.in_channels } else { plan.out_channels };
                ResnetBlock2D::new(vb.pp("resnets").pp(i), adapters, in_ch, plan.out_channels, s.temb_channels, s.groups, s.eps, 1.0)
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = attention_layers(&vb, adapters, plan, s)?;
        let downsampler = if plan.resample {
            Some(Downsample2D::new(vb.pp("downsamplers").pp(0), adapters, plan.out_channels, s.downsample_padding)?)
        } else {
            None
        };
        Ok(DownBlock { resnets, attentions, downsampler })
    }

    /// Returns the block output and the skip states (one per resnet, plus the downsampled one).
    /// `ckpt`: gradient checkpointing (resnets and transformer blocks recomputed in backward).
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, ckpt: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = x.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet_forward(resnet, &h, temb, ckpt)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context, ckpt)?;
            }
            skips.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h)?;
            skips.push(h.clone());
        }
        Ok((h, skips))
    }
}

#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub(crate) fn new(vb: VarBuilder, adapters: &Adapters, plan: &MidPlan, s: &Shared) -> Result<Self> {
        let c = plan.channels;
        // One attention (num_layers = 1) between two resnets.
        let resnets = (0..2)
            .map(|i| ResnetBlock2D::new(vb.pp("resnets").pp(i), adapters, c, c, s.temb_channels, s.groups, s.eps, plan.output_scale_factor))
            .collect::<Result<Vec<_>>>()?;
        let attentions = vec![Transformer2DModel::new(
            vb.pp("attentions").pp(0),
            adapters,
            c,
            plan.heads,
            plan.transformer_layers[0],
            plan.cross_attention_dim,
            s.groups,
            s.linear_projection,
        )?];
        Ok(MidBlock { resnets, attentions })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, ckpt: bool) -> Result<Tensor> {
        let mut h = resnet_forward(&self.resnets[0], x, temb, ckpt)?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = attn.forward(&h, context, ckpt)?;
            h = resnet_forward(resnet, &h, temb, ckpt)?;
        }
        Ok(h)
    }
}

#[derive(Debug, Clone)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    pub(crate) fn new(vb: VarBuilder, adapters: &Adapters, plan: &BlockPlan, s: &Shared) -> Result<Self> {
        let n = plan.num_layers;
        let resnets = (0..n)
            .map(|i| {
                let skip_ch = if i + 1 == n { plan.in_channels } else { plan.out_channels };
                let in_ch = if i == 0 { plan.prev_output_channels } else { plan.out_channels };
                ResnetBlock2D::new(vb.pp("resnets").pp(i), adapters, in_ch + skip_ch, plan.out_channels, s.temb_channels, s.groups, s.eps, 1.0)
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = attention_layers(&vb, adapters, plan, s)?;
        let upsampler = if plan.resample { Some(Upsample2D::new(vb.pp("upsamplers").pp(0), adapters, plan.out_channels)?) } else { None };
        Ok(UpBlock { resnets, attentions, upsampler })
    }

    /// How many skip states this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` in the order they were produced; the last one is consumed first.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        upsample_size: Option<(usize, usize)>,
        ckpt: bool,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - i];
            h = resnet_forward(resnet, &Tensor::cat(&[&h, skip], 1)?, temb, ckpt)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context, ckpt)?;
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&h, upsample_size),
            None => Ok(h),
        }
    }
}
