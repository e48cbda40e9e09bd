//! Euler (and Euler ancestral) on the σ-parametrised ODE, as diffusers' EulerDiscreteScheduler /
//! EulerAncestralDiscreteScheduler. Latents live in the σ scale: x = x₀ + σ·ε.

use super::schedule::{karras_sigmas, spaced_timesteps, Layout, NoiseSchedule, SchedulerConfig, TimestepSpacing};
use super::{lin, Scheduler, SchedulerError};
use crate::diffusion::noise::NoiseStream;
use candle_core::{Result, Tensor};

pub struct Euler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_sigma: f64,
    v_prediction: bool,
    /// Some → ancestral sampling: one fresh `randn_like(sample)` per step, after the initial
    /// latents, as EulerAncestralDiscreteScheduler.step draws with the pipeline's generator.
    noise: Option<NoiseStream>,
}

impl Euler {
    pub fn new(
        schedule: NoiseSchedule,
        c: &SchedulerConfig,
        steps: usize,
        ancestral: Option<NoiseStream>,
    ) -> std::result::Result<Self, SchedulerError> {
        let mut timesteps = spaced_timesteps(c, steps, Layout::Euler)?;
        let mut sigmas: Vec<f64> = timesteps.iter().map(|t| schedule.sigma_at(*t)).collect();
        if c.use_karras_sigmas {
            // Karras levels between the spaced schedule's own ends, each visited at the
            // (fractional) timestep of that σ.
            sigmas = karras_sigmas(sigmas[sigmas.len() - 1], sigmas[0], steps);
            timesteps = sigmas.iter().map(|s| schedule.sigma_to_t(*s)).collect();
        }
        // final_sigmas_type "zero" (the default): the last step lands on the clean sample.
        sigmas.push(0.0);
        let max = sigmas.iter().cloned().fold(0.0, f64::max);
        let init_sigma = if c.spacing() == TimestepSpacing::Leading { (max * max + 1.0).sqrt() } else { max };
        Ok(Euler { timesteps, sigmas, init_sigma, v_prediction: c.prediction_type == "v_prediction", noise: ancestral })
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_sigma
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i];
        sample.affine(1.0 / (s * s + 1.0).sqrt(), 0.0)
    }

    fn step(&mut self, out: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let (s, s_next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = if self.v_prediction {
            let c = 1.0 / (s * s + 1.0);
            lin(c, sample, -s / (s * s + 1.0).sqrt(), out)?
        } else {
            lin(1.0, sample, -s, out)?
        };
        let derivative = lin(1.0 / s, sample, -1.0 / s, &x0)?;
        match &mut self.noise {
            None => lin(1.0, sample, s_next - s, &derivative),
            Some(stream) => {
                let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s)).max(0.0).sqrt();
                let down = (s_next * s_next - up * up).max(0.0).sqrt();
                let moved = lin(1.0, sample, down - s, &derivative)?;
                let noise = stream.randn_like(sample)?;
                lin(1.0, &moved, up, &noise)
            }
        }
    }
}
