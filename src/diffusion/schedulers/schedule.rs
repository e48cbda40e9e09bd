//! The training noise schedule (betas → ᾱ) and inference timestep spacing, as diffusers computes them.

use super::SchedulerError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: String,
    pub timestep_spacing: String,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub clip_sample: bool,
    pub thresholding: bool,
    pub rescale_betas_zero_snr: bool,
    pub use_karras_sigmas: bool,
    pub final_sigmas_type: Option<String>,
    pub solver_order: usize,
    pub algorithm_type: String,
    pub solver_type: String,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub interpolation_type: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            class_name: String::new(),
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            prediction_type: "epsilon".into(),
            timestep_spacing: "leading".into(),
            steps_offset: 0,
            set_alpha_to_one: true,
            clip_sample: false,
            thresholding: false,
            rescale_betas_zero_snr: false,
            use_karras_sigmas: false,
            final_sigmas_type: None,
            solver_order: 2,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
            interpolation_type: "linear".into(),
        }
    }
}

impl SchedulerConfig {
    pub fn check_supported(&self) -> Result<(), SchedulerError> {
        let bad = |what: String| Err(SchedulerError::Unsupported(what));
        if !matches!(self.prediction_type.as_str(), "epsilon" | "v_prediction") {
            return bad(format!("prediction_type {:?} is not supported (epsilon, v_prediction)", self.prediction_type));
        }
        if self.thresholding || self.clip_sample {
            return bad("thresholding / clip_sample are not supported".into());
        }
        if self.rescale_betas_zero_snr || self.use_karras_sigmas {
            return bad("rescale_betas_zero_snr / use_karras_sigmas are not supported yet".into());
        }
        if self.interpolation_type != "linear" {
            return bad(format!("interpolation_type {:?} is not supported", self.interpolation_type));
        }
        Ok(())
    }
}

/// ᾱ_t for every training timestep.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    pub fn new(c: &SchedulerConfig) -> Result<Self, SchedulerError> {
        c.check_supported()?;
        let n = c.num_train_timesteps;
        let linspace = |a: f64, b: f64| -> Vec<f64> { (0..n).map(|i| if n == 1 { a } else { a + (b - a) * i as f64 / (n - 1) as f64 }).collect() };
        let betas: Vec<f64> = match (&c.trained_betas, c.beta_schedule.as_str()) {
            (Some(b), _) => b.clone(),
            (None, "linear") => linspace(c.beta_start, c.beta_end),
            (None, "scaled_linear") => linspace(c.beta_start.sqrt(), c.beta_end.sqrt()).iter().map(|b| b * b).collect(),
            (None, other) => return Err(SchedulerError::Unsupported(format!("beta_schedule {other:?} is not supported"))),
        };
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(NoiseSchedule { alphas_cumprod })
    }

    /// σ_t = √((1−ᾱ)/ᾱ), the "Karras" noise level of a training timestep.
    pub fn sigma(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        ((1.0 - a) / a).sqrt()
    }

    /// σ at a fractional timestep, linearly interpolated like `np.interp`.
    pub fn sigma_at(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, (self.alphas_cumprod.len() - 1) as f64);
        let lo = t.floor() as usize;
        let hi = t.ceil() as usize;
        let w = t - lo as f64;
        self.sigma(lo) * (1.0 - w) + self.sigma(hi) * w
    }
}

/// Inference timesteps for `steps` steps per `timestep_spacing`. `denominator_extra` is 1 for
/// DPM-Solver, whose "leading" spacing divides by `steps + 1` and drops the last point.
pub fn spaced_timesteps(c: &SchedulerConfig, steps: usize, dpm_style: bool) -> Result<Vec<f64>, SchedulerError> {
    let n = c.num_train_timesteps;
    let k = if dpm_style { steps + 1 } else { steps };
    let mut ts: Vec<f64> = match c.timestep_spacing.as_str() {
        "leading" => {
            let ratio = n / k;
            (0..k).rev().map(|i| (i * ratio) as f64 + c.steps_offset as f64).collect()
        }
        "trailing" => {
            let ratio = n as f64 / steps as f64;
            (0..steps).map(|i| (n as f64 - i as f64 * ratio).round() - 1.0).collect()
        }
        "linspace" => (0..k).map(|i| ((n - 1) as f64 * i as f64 / (k - 1).max(1) as f64).round()).rev().collect(),
        other => return Err(SchedulerError::Unsupported(format!("timestep_spacing {other:?} is not supported"))),
    };
    if dpm_style && c.timestep_spacing != "trailing" {
        ts.truncate(steps);
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_config(kind: &str) -> SchedulerConfig {
        let j = crate::diffusion::testing::reference_json("tiny-sd15");
        serde_json::from_value(j[kind]["config"].clone()).unwrap()
    }

    #[test]
    fn timesteps_match_diffusers() {
        let j = crate::diffusion::testing::reference_json("tiny-sd15");
        for (kind, dpm) in [("sample.ddim", false), ("sample.euler", false), ("sample.dpmpp_2m", true)] {
            let c = fixture_config(kind);
            let want: Vec<f64> = j[kind]["timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(spaced_timesteps(&c, 4, dpm).unwrap(), want, "{kind}");
        }
        let mut c = fixture_config("sample.euler");
        c.timestep_spacing = "trailing".into();
        assert_eq!(spaced_timesteps(&c, 4, false).unwrap(), vec![999.0, 749.0, 499.0, 249.0]);
        c.timestep_spacing = "linspace".into();
        assert_eq!(spaced_timesteps(&c, 4, false).unwrap(), vec![999.0, 666.0, 333.0, 0.0]);
    }

    #[test]
    fn scaled_linear_schedule_endpoints() {
        let s = NoiseSchedule::new(&fixture_config("sample.ddim")).unwrap();
        assert!((s.alphas_cumprod[0] - (1.0 - 0.00085)).abs() < 1e-12);
        // SD's schedule ends at ᾱ_999 ≈ 0.0046601 (diffusers gives 0.00466009).
        assert!((s.alphas_cumprod[999] - 0.0046601).abs() < 1e-6, "{}", s.alphas_cumprod[999]);
    }
}
