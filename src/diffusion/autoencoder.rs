//! AutoencoderKL (diffusers' VAE): encode an image in [-1, 1] to a latent Gaussian, decode latents.
//! Same tensor names as diffusers' `vae/diffusion_pytorch_model.safetensors`.

use super::config::{read_json, PipelineError};
use super::fused::attention::attention;
use super::fused::conv::Conv2d;
use super::fused::norm::GroupNorm;
use super::unet::resnet::{conv, nearest_2x};
use candle_core::{bail, Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub latent_channels: usize,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub force_upcast: bool,
    pub mid_block_add_attention: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub act_fn: String,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![64],
            layers_per_block: 1,
            norm_num_groups: 32,
            latent_channels: 4,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            act_fn: "silu".into(),
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
        }
    }
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> std::result::Result<Self, PipelineError> {
        let c: VaeConfig = read_json(path)?;
        let bad = |detail: String| PipelineError::BadConfig { path: path.to_path_buf(), detail };
        if c.act_fn != "silu" {
            return Err(bad(format!("act_fn {:?} is not supported (silu)", c.act_fn)));
        }
        if c.down_block_types.iter().any(|t| t != "DownEncoderBlock2D") || c.up_block_types.iter().any(|t| t != "UpDecoderBlock2D") {
            return Err(bad("only DownEncoderBlock2D/UpDecoderBlock2D VAEs are supported".into()));
        }
        if c.down_block_types.len() != c.block_out_channels.len() || c.up_block_types.len() != c.block_out_channels.len() {
            return Err(bad("down/up_block_types must have one entry per block_out_channels".into()));
        }
        Ok(c)
    }

    /// How much smaller latents are than images.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

const EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    fn new(vb: VarBuilder, groups: usize, cin: usize, cout: usize) -> Result<Self> {
        Ok(Resnet {
            norm1: GroupNorm::load(vb.pp("norm1"), groups, cin, EPS, true)?,
            conv1: conv(vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            norm2: GroupNorm::load(vb.pp("norm2"), groups, cout, EPS, true)?,
            conv2: conv(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            shortcut: if cin != cout { Some(conv(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)?) } else { None },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        self.conv2.forward_with(&self.norm2.forward(&h)?, None, Some(&skip))
    }
}

/// Single-head self-attention over spatial positions, with a residual.
#[derive(Debug, Clone)]
struct SpatialAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SpatialAttention {
    fn new(vb: VarBuilder, groups: usize, c: usize) -> Result<Self> {
        Ok(SpatialAttention {
            norm: GroupNorm::load(vb.pp("group_norm"), groups, c, EPS, false)?,
            q: linear(c, c, vb.pp("to_q"))?,
            k: linear(c, c, vb.pp("to_k"))?,
            v: linear(c, c, vb.pp("to_v"))?,
            out: linear(c, c, vb.pp("to_out.0"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let (q, k, v) = (self.q.forward(&t)?, self.k.forward(&t)?, self.v.forward(&t)?);
        // One head over all positions; chunked, so a 1024 px image's 16384² scores are never whole.
        let o = self.out.forward(&attention(&q, &k, &v, 1)?)?;
        o.transpose(1, 2)?.reshape((b, c, h, w))? + x
    }
}

#[derive(Debug, Clone)]
struct Mid {
    r0: Resnet,
    attn: Option<SpatialAttention>,
    r1: Resnet,
}

impl Mid {
    fn new(vb: VarBuilder, cfg: &VaeConfig, c: usize) -> Result<Self> {
        let g = cfg.norm_num_groups;
        Ok(Mid {
            r0: Resnet::new(vb.pp("resnets.0"), g, c, c)?,
            attn: if cfg.mid_block_add_attention { Some(SpatialAttention::new(vb.pp("attentions.0"), g, c)?) } else { None },
            r1: Resnet::new(vb.pp("resnets.1"), g, c, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.r0.forward(x)?;
        if let Some(a) = &self.attn {
            h = a.forward(&h)?;
        }
        self.r1.forward(&h)
    }
}

#[derive(Debug, Clone)]
pub struct AutoencoderKl {
    config: VaeConfig,
    enc_conv_in: Conv2d,
    enc_blocks: Vec<(Vec<Resnet>, Option<Conv2d>)>,
    enc_mid: Mid,
    enc_norm: GroupNorm,
    enc_conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: Mid,
    dec_blocks: Vec<(Vec<Resnet>, Option<Conv2d>)>,
    dec_norm: GroupNorm,
    dec_conv_out: Conv2d,
}

impl AutoencoderKl {
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let last = ch[n - 1];
        let lat = cfg.latent_channels;
        let e = vb.pp("encoder");
        let mut enc_blocks = Vec::with_capacity(n);
        let mut cin = ch[0];
        for (i, &cout) in ch.iter().enumerate() {
            let b = e.pp(format!("down_blocks.{i}"));
            let resnets = (0..cfg.layers_per_block)
                .map(|j| Resnet::new(b.pp(format!("resnets.{j}")), g, if j == 0 { cin } else { cout }, cout))
                .collect::<Result<Vec<_>>>()?;
            let down = if i + 1 < n { Some(conv(b.pp("downsamplers.0.conv"), cout, cout, 3, 2, 0)?) } else { None };
            enc_blocks.push((resnets, down));
            cin = cout;
        }
        let d = vb.pp("decoder");
        let mut dec_blocks = Vec::with_capacity(n);
        let mut cin = last;
        for (i, &cout) in ch.iter().rev().enumerate() {
            let b = d.pp(format!("up_blocks.{i}"));
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| Resnet::new(b.pp(format!("resnets.{j}")), g, if j == 0 { cin } else { cout }, cout))
                .collect::<Result<Vec<_>>>()?;
            let up = if i + 1 < n { Some(conv(b.pp("upsamplers.0.conv"), cout, cout, 3, 1, 1)?) } else { None };
            dec_blocks.push((resnets, up));
            cin = cout;
        }
        Ok(AutoencoderKl {
            enc_conv_in: conv(e.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            enc_blocks,
            enc_mid: Mid::new(e.pp("mid_block"), cfg, last)?,
            enc_norm: GroupNorm::load(e.pp("conv_norm_out"), g, last, EPS, true)?,
            enc_conv_out: conv(e.pp("conv_out"), last, 2 * lat, 3, 1, 1)?,
            quant_conv: if cfg.use_quant_conv { Some(conv(vb.pp("quant_conv"), 2 * lat, 2 * lat, 1, 1, 0)?) } else { None },
            post_quant_conv: if cfg.use_post_quant_conv { Some(conv(vb.pp("post_quant_conv"), lat, lat, 1, 1, 0)?) } else { None },
            dec_conv_in: conv(d.pp("conv_in"), lat, last, 3, 1, 1)?,
            dec_mid: Mid::new(d.pp("mid_block"), cfg, last)?,
            dec_blocks,
            dec_norm: GroupNorm::load(d.pp("conv_norm_out"), g, ch[0], EPS, true)?,
            dec_conv_out: conv(d.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the weights were loaded in (inputs must match it).
    pub fn dtype(&self) -> candle_core::DType {
        self.enc_conv_in.weight().dtype()
    }

    /// The latent distribution of images in [-1, 1]: (mean, std).
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.config.downscale();
        let (_, _, h, w) = x.dims4()?;
        if h % f != 0 || w % f != 0 {
            bail!("vae: image size {h}x{w} is not a multiple of {f}");
        }
        let mut h = self.enc_conv_in.forward(x)?;
        for (resnets, down) in &self.enc_blocks {
            for r in resnets {
                h = r.forward(&h)?;
            }
            if let Some(d) = down {
                // diffusers pads right and bottom by one before the stride-2 conv.
                h = d.forward(&h.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(D::Minus2, 0, 1)?)?;
            }
        }
        h = self.enc_mid.forward(&h)?;
        h = self.enc_conv_out.forward(&self.enc_norm.forward(&h)?)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let lat = self.config.latent_channels;
        let mean = h.narrow(1, 0, lat)?;
        let logvar = h.narrow(1, lat, lat)?.clamp(-30f32, 20f32)?;
        Ok((mean, (logvar * 0.5)?.exp()?))
    }

    /// Decodes (unscaled) latents to images in about [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        h = self.dec_mid.forward(&self.dec_conv_in.forward(&h)?)?;
        for (resnets, up) in &self.dec_blocks {
            for r in resnets {
                h = r.forward(&h)?;
            }
            if let Some(u) = up {
                h = u.forward(&nearest_2x(&h)?)?;
            }
        }
        self.dec_conv_out.forward(&self.dec_norm.forward(&h)?)
    }

    /// Diffusion latents (scaled) → images in [0, 1], as the pipelines' `output_type="pt"`.
    pub fn latents_to_image(&self, latents: &Tensor) -> Result<Tensor> {
        self.latents_to_image_unclamped(latents)?.clamp(0f32, 1f32)
    }

    /// `latents_to_image` before clamping to [0, 1], where overflow (NaN/inf) is still visible.
    pub fn latents_to_image_unclamped(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = (latents / self.config.scaling_factor)?;
        if let Some(shift) = self.config.shift_factor {
            z = (z + shift)?;
        }
        (self.decode(&z)? / 2.0)? + 0.5
    }

    /// Images in [-1, 1] → diffusion latents from the distribution's mean (scaled), or from
    /// `mean + std·noise` when `noise` is given (training).
    pub fn image_to_latents(&self, x: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        let (mean, std) = self.encode(x)?;
        let z = match noise {
            Some(n) => (mean + (std * n)?)?,
            None => mean,
        };
        let z = match self.config.shift_factor {
            Some(s) => (z - s)?,
            None => z,
        };
        z * self.config.scaling_factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::rel_error;
    use crate::diffusion::testing::{pipeline_dir, reference};
    use candle_core::{DType, Device};

    fn load(name: &str) -> AutoencoderKl {
        let dir = pipeline_dir(name).join("vae");
        let cfg = VaeConfig::from_file(&dir.join("config.json")).unwrap();
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("diffusion_pytorch_model.safetensors")], DType::F32, &Device::Cpu) }.unwrap();
        AutoencoderKl::new(vb, &cfg).unwrap()
    }

    #[test]
    fn encode_and_decode_match_diffusers() {
        for name in ["tiny-sd15", "tiny-sdxl"] {
            let vae = load(name);
            let r = reference(name);
            let (mean, std) = vae.encode(&r["vae.image"]).unwrap();
            let e_mean = rel_error(&mean, &r["vae.latent_mean"]).unwrap();
            let e_std = rel_error(&std, &r["vae.latent_std"]).unwrap();
            let e_dec = rel_error(&vae.decode(&r["vae.latent_mean"]).unwrap(), &r["vae.decoded"]).unwrap();
            assert!(e_mean < 1e-4 && e_std < 1e-4 && e_dec < 1e-4, "{name}: mean {e_mean:e} std {e_std:e} decode {e_dec:e}");
        }
    }

    #[test]
    fn bad_sizes_and_missing_tensors_are_named() {
        let vae = load("tiny-sd15");
        let x = Tensor::zeros((1, 3, 60, 64), DType::F32, &Device::Cpu).unwrap();
        assert!(vae.encode(&x).unwrap_err().to_string().contains("multiple of 8"));
        let cfg = VaeConfig::from_file(&pipeline_dir("tiny-sd15").join("vae/config.json")).unwrap();
        let vb = VarBuilder::from_tensors(std::collections::HashMap::new(), DType::F32, &Device::Cpu);
        let err = AutoencoderKl::new(vb, &cfg).unwrap_err().to_string();
        assert!(err.contains("cannot find tensor encoder."), "{err}");
    }
}
