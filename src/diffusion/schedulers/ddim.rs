//! DDIM with η = 0 (deterministic), as diffusers' DDIMScheduler.

use super::schedule::{spaced_timesteps, Layout, NoiseSchedule, SchedulerConfig};
use super::{lin, Scheduler, SchedulerError};
use candle_core::{Result, Tensor};

pub struct Ddim {
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    step_ratio: usize,
    final_alpha_cumprod: f64,
    v_prediction: bool,
}

impl Ddim {
    pub fn new(schedule: NoiseSchedule, c: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        let final_alpha_cumprod = if c.set_alpha_to_one { 1.0 } else { schedule.alphas_cumprod[0] };
        Ok(Ddim {
            timesteps: spaced_timesteps(c, steps, Layout::Ddim)?,
            step_ratio: c.num_train_timesteps / steps,
            final_alpha_cumprod,
            schedule,
            v_prediction: c.prediction_type == "v_prediction",
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(&mut self, out: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let t = self.timesteps[i] as usize;
        let prev = t as i64 - self.step_ratio as i64;
        let a_t = self.schedule.alphas_cumprod[t];
        let a_prev = if prev >= 0 { self.schedule.alphas_cumprod[prev as usize] } else { self.final_alpha_cumprod };
        let (x0, eps) = if self.v_prediction {
            (lin(a_t.sqrt(), sample, -(1.0 - a_t).sqrt(), out)?, lin(a_t.sqrt(), out, (1.0 - a_t).sqrt(), sample)?)
        } else {
            (lin(1.0 / a_t.sqrt(), sample, -(1.0 - a_t).sqrt() / a_t.sqrt(), out)?, out.clone())
        };
        lin(a_prev.sqrt(), &x0, (1.0 - a_prev).sqrt(), &eps)
    }
}
