//! Sinusoidal timestep features (`Timesteps` / `get_timestep_embedding`) and the MLP that embeds
//! them (`TimestepEmbedding`), used for the time embedding and SDXL's `add_embedding`.

use crate::diffusion::nn::{Adapters, Linear};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// diffusers' `get_timestep_embedding` with max_period 10000 and scale 1: `[N] → [N, dim]`, f32.
///
/// Why f32 throughout, whatever the model dtype: diffusers computes the frequencies and the
/// products `t·f` in float32 and only casts the result; for t ≈ 1000 the rounding of `t·f`
/// dominates the sin/cos error, so a different precision here would not match the reference.
pub fn timestep_embedding(timesteps: &Tensor, dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Result<Tensor> {
    let t = timesteps.flatten_all()?.to_dtype(DType::F32)?;
    let n = t.dim(0)?;
    let half = dim / 2;
    // Same operation order as PyTorch's float32 ops: (-ln(P) · i) / (half - shift), then exp.
    let neg_log = -(10000f64.ln()) as f32;
    let denom = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((neg_log * i as f32) / denom).exp()).collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.reshape((n, 1))?.broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let mut emb = if flip_sin_to_cos { Tensor::cat(&[cos, sin], 1)? } else { Tensor::cat(&[sin, cos], 1)? };
    if dim % 2 == 1 {
        emb = emb.pad_with_zeros(1, 0, 1)?;
    }
    Ok(emb)
}

/// `TimestepEmbedding`: linear_1 → SiLU → linear_2 (→ optional SiLU post-activation).
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    post_act: bool,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, adapters: &Adapters, in_dim: usize, out_dim: usize, post_act: bool) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: Linear::new(vb.pp("linear_1"), adapters, in_dim, out_dim, true)?,
            linear_2: Linear::new(vb.pp("linear_2"), adapters, out_dim, out_dim, true)?,
            post_act,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)?;
        if self.post_act {
            x.silu()
        } else {
            Ok(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sinusoid_layout_matches_diffusers() {
        // dim 6, flip: [cos(t f0), cos(t f1), cos(t f2), sin(t f0), sin(t f1), sin(t f2)], f_i = 10000^(-i/3).
        let t = Tensor::new(&[0f32, 2.0], &Device::Cpu).unwrap();
        let e = timestep_embedding(&t, 6, true, 0.0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e[0], vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        let f1 = 10000f64.powf(-1.0 / 3.0);
        assert!((e[1][1] as f64 - (2.0 * f1).cos()).abs() < 1e-6);
        assert!((e[1][4] as f64 - (2.0 * f1).sin()).abs() < 1e-6);
        let shifted = timestep_embedding(&t, 6, false, 1.0).unwrap().to_vec2::<f32>().unwrap();
        // shift 1: f_i = 10000^(-i/2), sin first.
        assert!((shifted[1][2] as f64 - (2.0 * 10000f64.powf(-1.0)).sin()).abs() < 1e-6);
        assert_eq!(timestep_embedding(&t, 7, true, 0.0).unwrap().dims(), &[2, 7]);
    }
}
