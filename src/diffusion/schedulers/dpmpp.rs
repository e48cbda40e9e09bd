//! DPM-Solver++ 2M (midpoint), as diffusers' DPMSolverMultistepScheduler with its defaults:
//! first order on the first step, second order after, first order on the last step.

use super::schedule::{karras_sigmas, spaced_timesteps, Layout, NoiseSchedule, SchedulerConfig};
use super::{lin, Scheduler, SchedulerError};
use candle_core::{Result, Tensor};

pub struct Dpmpp2m {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    v_prediction: bool,
    lower_order_final: bool,
    previous_x0: Option<Tensor>,
}

impl Dpmpp2m {
    pub fn new(schedule: NoiseSchedule, c: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SchedulerError> {
        if c.algorithm_type != "dpmsolver++" || c.solver_type != "midpoint" || c.solver_order != 2 {
            return Err(SchedulerError::Unsupported(format!(
                "DPM-Solver with algorithm_type {:?}, solver_type {:?}, solver_order {} (supported: dpmsolver++, midpoint, 2)",
                c.algorithm_type, c.solver_type, c.solver_order
            )));
        }
        let mut timesteps = spaced_timesteps(c, steps, Layout::DpmSolver)?;
        let mut sigmas: Vec<f64> = timesteps.iter().map(|t| schedule.sigma_at(*t)).collect();
        if c.use_karras_sigmas {
            // Unlike Euler, DPM-Solver spans the whole trained range and rounds the timesteps
            // (keeping the Karras σ for the update).
            let last = schedule.alphas_cumprod.len() - 1;
            sigmas = karras_sigmas(schedule.sigma(0), schedule.sigma(last), steps);
            timesteps = sigmas.iter().map(|s| schedule.sigma_to_t(*s).round_ties_even()).collect();
        }
        let last = match c.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => 0.0,
            "sigma_min" => schedule.sigma(0),
            other => return Err(SchedulerError::Unsupported(format!("final_sigmas_type {other:?}"))),
        };
        sigmas.push(last);
        Ok(Dpmpp2m {
            timesteps,
            sigmas,
            v_prediction: c.prediction_type == "v_prediction",
            lower_order_final: c.lower_order_final || c.euler_at_final || last == 0.0,
            previous_x0: None,
        })
    }
}

/// (α_t, σ_t) of the VP process for a Karras σ.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

impl Scheduler for Dpmpp2m {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn step(&mut self, out: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let x0 = if self.v_prediction { lin(alpha_s0, sample, -sigma_s0, out)? } else { lin(1.0 / alpha_s0, sample, -sigma_s0 / alpha_s0, out)? };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let h = lambda(self.sigmas[i + 1]) - lambda(self.sigmas[i]);
        // exp(−h) − 1, which is −1 when the target σ is 0 (h = ∞).
        let em1 = (-h).exp() - 1.0;
        let ratio = if sigma_s0 > 0.0 { sigma_t / sigma_s0 } else { 0.0 };
        let last = i + 1 == self.timesteps.len();
        let first_order = self.previous_x0.is_none() || (last && self.lower_order_final);
        let next = if first_order {
            lin(ratio, sample, -alpha_t * em1, &x0)?
        } else {
            let prev = self.previous_x0.as_ref().expect("checked");
            let h0 = lambda(self.sigmas[i]) - lambda(self.sigmas[i - 1]);
            let r0 = h0 / h;
            // D1 = (x0 − x0_prev)/r0; midpoint update adds −½·α_t·(e^{−h}−1)·D1.
            let d1 = lin(1.0 / r0, &x0, -1.0 / r0, prev)?;
            let base = lin(ratio, sample, -alpha_t * em1, &x0)?;
            lin(1.0, &base, -0.5 * alpha_t * em1, &d1)?
        };
        self.previous_x0 = Some(x0);
        Ok(next)
    }
}
