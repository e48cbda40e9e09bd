//! `ResnetBlock2D` (time-conditioned, "default" time-embedding norm) and the conv down/up
//! samplers of the UNet blocks.

use crate::diffusion::fused::conv::Conv2d;
use crate::diffusion::fused::norm::GroupNorm;
use crate::diffusion::nn::{Adapters, Linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A frozen conv (weight + bias) of the diffusers layout under `vb`.
pub(crate) fn conv(vb: VarBuilder, in_ch: usize, out_ch: usize, kernel: usize, stride: usize, padding: usize) -> Result<Conv2d> {
    Conv2d::load(vb, in_ch, out_ch, kernel, stride, padding)
}

#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        adapters: &Adapters,
        in_ch: usize,
        out_ch: usize,
        temb_ch: usize,
        groups: usize,
        eps: f64,
        output_scale_factor: f64,
    ) -> Result<Self> {
        Ok(ResnetBlock2D {
            // Every resnet norm is followed by SiLU: one fused op each.
            norm1: GroupNorm::load(vb.pp("norm1"), groups, in_ch, eps, true)?,
            conv1: Conv2d::load_adapted(vb.pp("conv1"), adapters, in_ch, out_ch, 3, 1, 1)?,
            // A LoRA-aware linear so that adapters may target it (PEFT/kohya LoRAs sometimes do).
            time_emb_proj: Linear::new(vb.pp("time_emb_proj"), adapters, temb_ch, out_ch, true)?,
            norm2: GroupNorm::load(vb.pp("norm2"), groups, out_ch, eps, true)?,
            conv2: Conv2d::load_adapted(vb.pp("conv2"), adapters, out_ch, out_ch, 3, 1, 1)?,
            conv_shortcut: if in_ch != out_ch { Some(Conv2d::load_adapted(vb.pp("conv_shortcut"), adapters, in_ch, out_ch, 1, 1, 0)?) } else { None },
            output_scale_factor,
        })
    }

    /// `x`: [B, C, H, W]; `temb`: [B, T] (the UNet's time embedding, before the SiLU).
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let t = self.time_emb_proj.forward(&temb.silu()?)?;
        let h = self.conv1.forward_with(&self.norm1.forward(x)?, Some(&t), None)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = self.conv2.forward_with(&self.norm2.forward(&h)?, None, Some(&skip))?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out.affine(1.0 / self.output_scale_factor, 0.0)
        }
    }
}

/// `Downsample2D(use_conv=True)`: a stride-2 3×3 conv; with padding 0 diffusers pads right and
/// bottom by one first.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, adapters: &Adapters, channels: usize, padding: usize) -> Result<Self> {
        Ok(Downsample2D { conv: Conv2d::load_adapted(vb.pp("conv"), adapters, channels, channels, 3, 2, padding)?, pad_right_bottom: padding == 0 })
    }
}

impl Module for Downsample2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D(use_conv=True)`: nearest upsampling (2× or to the skip connection's size), 3×3 conv.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, adapters: &Adapters, channels: usize) -> Result<Self> {
        Ok(Upsample2D { conv: Conv2d::load_adapted(vb.pp("conv"), adapters, channels, channels, 3, 1, 1)? })
    }

    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let up = match size {
            Some((oh, ow)) if (oh, ow) != (2 * h, 2 * w) => nearest_to_size(x, oh, ow)?,
            _ => nearest_2x(x)?,
        };
        self.conv.forward(&up)
    }
}

/// Nearest 2× upsampling as broadcast + reshape.
///
/// Why not `upsample_nearest2d`: its backward in candle 0.11 runs one conv per channel and
/// overwrites rather than accumulates the input gradient; a broadcast's backward is a plain sum
/// (shared/reference/candle-notes.md §2). The values are identical.
pub fn nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, 2, w, 2))?.reshape((b, c, 2 * h, 2 * w))
}

/// PyTorch's `F.interpolate(size=…, mode="nearest")`: source index `floor(dst · in/out)`, with the
/// scale computed in f32 as PyTorch does; gathered with `index_select` (differentiable).
pub fn nearest_to_size(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let index = |inp: usize, out: usize| -> Result<Tensor> {
        let scale = inp as f32 / out as f32;
        let idx: Vec<u32> = (0..out).map(|d| ((d as f32 * scale).floor() as usize).min(inp - 1) as u32).collect();
        Tensor::from_vec(idx, out, x.device())
    };
    x.index_select(&index(h, out_h)?, 2)?.index_select(&index(w, out_w)?, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nearest_upsampling_matches_candle_and_torch_indexing() {
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu).unwrap().reshape((1, 2, 3, 4)).unwrap();
        let ours = nearest_2x(&x).unwrap();
        let candle = x.upsample_nearest2d(6, 8).unwrap();
        let d = (ours - candle).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0);
        // 3 → 5 rows: torch picks floor(d·0.6) = 0,0,1,1,2.
        let s = nearest_to_size(&x, 5, 4).unwrap();
        let rows: Vec<f32> = s.narrow(1, 0, 1).unwrap().narrow(3, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(rows, vec![0.0, 0.0, 4.0, 4.0, 8.0]);
    }
}
