//! The denoising objective of diffusers' DreamBooth scripts: sample noise and per-sample
//! timesteps, noise the latents with the scheduler's ᾱ, predict, and take the MSE against ε or v,
//! optionally min-SNR weighted. Randomness comes from a generator derived from (seed, step), so a
//! resumed run draws exactly what an uninterrupted one would.

use crate::diffusion::schedulers::NoiseSchedule;
use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

impl Prediction {
    pub fn from_config(name: &str) -> std::result::Result<Self, String> {
        match name {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::VPrediction),
            other => Err(format!("scheduler prediction_type {other:?} is not supported for training (epsilon or v_prediction)")),
        }
    }
}

/// A generator for one purpose at one step: the same (seed, step, stream) always gives the same draws.
pub fn step_rng(seed: u64, step: u64, stream: u64) -> rand::rngs::StdRng {
    // splitmix64 finaliser over the three inputs: distinct streams never share a prefix.
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    rand::rngs::StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Standard normal samples (Box–Muller), f32.
pub fn normal(rng: &mut impl Rng, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        v.push((r * th.cos()) as f32);
        v.push((r * th.sin()) as f32);
    }
    v.truncate(n);
    Tensor::from_vec(v, shape, device)
}

/// What one batch trains on, ready for the UNet.
pub struct NoisedBatch {
    pub noisy: Tensor,
    pub timesteps: Tensor,
    pub target: Tensor,
    /// Per-sample loss weights [B] (min-SNR; ones otherwise).
    pub weights: Tensor,
}

#[derive(Clone)]
pub struct Objective {
    pub schedule: NoiseSchedule,
    pub prediction: Prediction,
    pub min_snr_gamma: Option<f64>,
    pub noise_offset: f64,
    /// Every sample at this timestep instead of a uniform draw (the validation loss measures at
    /// fixed timesteps, [`super::validation_loss`]); `None` in training.
    pub timestep: Option<usize>,
}

impl Objective {
    /// Noises `latents` [B, C, h, w] (already scaled) with draws from `rng`.
    pub fn noise(&self, latents: &Tensor, rng: &mut impl Rng) -> Result<NoisedBatch> {
        let (b, c, _, _) = latents.dims4()?;
        let device = latents.device();
        let mut noise = normal(rng, latents.dims(), device)?;
        if self.noise_offset > 0.0 {
            // A per-channel constant shift teaches the model to move overall brightness
            // (very dark or bright images), as in diffusers' --noise_offset.
            let off = (normal(rng, &[b, c, 1, 1], device)? * self.noise_offset)?;
            noise = noise.broadcast_add(&off)?;
        }
        let n = self.schedule.alphas_cumprod.len();
        let ts: Vec<usize> = (0..b).map(|_| self.timestep.unwrap_or_else(|| rng.random_range(0..n))).collect();
        let ac: Vec<f64> = ts.iter().map(|&t| self.schedule.alphas_cumprod[t]).collect();
        let col = |f: &dyn Fn(f64) -> f64| Tensor::from_vec(ac.iter().map(|&a| f(a) as f32).collect::<Vec<_>>(), (b, 1, 1, 1), device);
        let sqrt_a = col(&|a| a.sqrt())?;
        let sqrt_1ma = col(&|a| (1.0 - a).sqrt())?;
        let latents = latents.to_dtype(DType::F32)?;
        let noisy = (latents.broadcast_mul(&sqrt_a)? + noise.broadcast_mul(&sqrt_1ma)?)?;
        let target = match self.prediction {
            Prediction::Epsilon => noise,
            Prediction::VPrediction => (noise.broadcast_mul(&sqrt_a)? - latents.broadcast_mul(&sqrt_1ma)?)?,
        };
        let weights: Vec<f32> = ac
            .iter()
            .map(|&a| {
                let snr = a / (1.0 - a);
                match self.min_snr_gamma {
                    // Hang et al.: min(SNR, γ)/SNR for ε; v-prediction's target already carries
                    // a factor SNR+1, hence /(SNR+1) there (diffusers' compute_snr usage).
                    Some(g) => (snr.min(g) / if self.prediction == Prediction::VPrediction { snr + 1.0 } else { snr }) as f32,
                    None => 1.0,
                }
            })
            .collect();
        Ok(NoisedBatch {
            noisy,
            timesteps: Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), b, device)?,
            target,
            weights: Tensor::from_vec(weights, b, device)?,
        })
    }
}

/// Per-sample MSE (mean over C, h, w) times weights, averaged over the batch; f32.
pub fn weighted_mse(pred: &Tensor, target: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let diff = (pred.to_dtype(DType::F32)? - target)?;
    let per_sample = diff.sqr()?.flatten_from(1)?.mean(1)?;
    (per_sample * weights)?.mean(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> NoiseSchedule {
        let n = 1000;
        let betas: Vec<f64> = (0..n)
            .map(|i| {
                let s = 0.00085f64.sqrt() + (0.012f64.sqrt() - 0.00085f64.sqrt()) * i as f64 / (n - 1) as f64;
                s * s
            })
            .collect();
        let mut acc = 1.0;
        NoiseSchedule {
            alphas_cumprod: betas
                .iter()
                .map(|b| {
                    acc *= 1.0 - b;
                    acc
                })
                .collect(),
        }
    }

    #[test]
    fn the_same_step_draws_the_same_noise_and_timesteps() {
        let o = Objective { schedule: schedule(), prediction: Prediction::Epsilon, min_snr_gamma: Some(5.0), noise_offset: 0.1, timestep: None };
        let x = Tensor::ones((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let a = o.noise(&x, &mut step_rng(7, 3, 0)).unwrap();
        let b = o.noise(&x, &mut step_rng(7, 3, 0)).unwrap();
        let c = o.noise(&x, &mut step_rng(7, 4, 0)).unwrap();
        assert_eq!(a.noisy.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.noisy.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(a.noisy.flatten_all().unwrap().to_vec1::<f32>().unwrap(), c.noisy.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        // min-SNR weights are ≤ 1 and equal 1 exactly where SNR ≤ γ.
        let ts = a.timesteps.to_vec1::<f32>().unwrap();
        for (t, w) in ts.iter().zip(a.weights.to_vec1::<f32>().unwrap()) {
            let ac = o.schedule.alphas_cumprod[*t as usize];
            let snr = ac / (1.0 - ac);
            assert!((w as f64 - (snr.min(5.0) / snr)).abs() < 1e-5);
        }
    }

    #[test]
    fn noisy_latents_follow_the_forward_process() {
        let o = Objective { schedule: schedule(), prediction: Prediction::VPrediction, min_snr_gamma: None, noise_offset: 0.0, timestep: None };
        let x = normal(&mut step_rng(1, 1, 1), &[1, 4, 8, 8], &Device::Cpu).unwrap();
        let nb = o.noise(&x, &mut step_rng(1, 2, 0)).unwrap();
        let t = nb.timesteps.to_vec1::<f32>().unwrap()[0] as usize;
        let a = o.schedule.alphas_cumprod[t];
        // x0 = √ᾱ·x_t − √(1−ᾱ)·v for v-prediction.
        let x0 = ((&nb.noisy * a.sqrt()).unwrap() - (&nb.target * (1.0 - a).sqrt()).unwrap()).unwrap();
        assert!(crate::diffusion::nn::rel_error(&x0, &x).unwrap() < 1e-5);
    }
}
