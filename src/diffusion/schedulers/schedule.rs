//! The training noise schedule (betas → ᾱ) and inference timestep spacing, as diffusers computes them.

use super::{SchedulerError, SchedulerKind};
use serde::{Deserialize, Serialize};

/// How the inference timesteps are spread over the training ones (diffusers'
/// `timestep_spacing`, Table 2 of Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
/// Steps are Flawed"): `leading` counts up from 0 in steps of `⌊T/n⌋` (plus `steps_offset`),
/// `trailing` counts down from `T−1`, `linspace` spreads `n` points evenly over `[0, T−1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TimestepSpacing {
    Leading,
    Linspace,
    Trailing,
}

impl TimestepSpacing {
    pub fn as_str(self) -> &'static str {
        match self {
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Linspace => "linspace",
            TimestepSpacing::Trailing => "trailing",
        }
    }
}

impl std::fmt::Display for TimestepSpacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scheduler config keys a render sets over the pipeline's `scheduler_config.json` (`generate
/// --karras-sigmas/--timestep-spacing/--steps-offset`, and compare's ablations); `None` keeps
/// the file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerOverrides {
    pub use_karras_sigmas: Option<bool>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<usize>,
}

impl SchedulerOverrides {
    pub fn is_empty(&self) -> bool {
        *self == SchedulerOverrides::default()
    }

    pub fn apply(&self, c: &mut SchedulerConfig) {
        if let Some(k) = self.use_karras_sigmas {
            c.use_karras_sigmas = k;
        }
        if let Some(s) = self.timestep_spacing {
            c.timestep_spacing = Some(s);
        }
        if let Some(o) = self.steps_offset {
            c.steps_offset = o;
        }
    }
}

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
    /// `None` (a config saved before diffusers had the key): the default of the scheduler class
    /// that samples, as `from_config` fills it in ([`SchedulerKind::default_timestep_spacing`]).
    pub timestep_spacing: Option<TimestepSpacing>,
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
            timestep_spacing: None,
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
    /// The config `kind` samples with, as diffusers' `kind.from_config(config)` builds it: an
    /// absent `timestep_spacing` takes `kind`'s default, and the classes without Karras sigmas
    /// (DDIM, Euler ancestral) ignore `use_karras_sigmas`.
    pub fn for_kind(&self, kind: SchedulerKind) -> SchedulerConfig {
        let mut c = self.clone();
        c.timestep_spacing = Some(self.timestep_spacing.unwrap_or(kind.default_timestep_spacing()));
        c.use_karras_sigmas = self.use_karras_sigmas && kind.has_karras_sigmas();
        c
    }

    /// The spacing in effect; call on a config from [`SchedulerConfig::for_kind`].
    pub fn spacing(&self) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(TimestepSpacing::Leading)
    }

    pub fn check_supported(&self) -> Result<(), SchedulerError> {
        let bad = |what: String| Err(SchedulerError::Unsupported(what));
        if !matches!(self.prediction_type.as_str(), "epsilon" | "v_prediction") {
            return bad(format!("prediction_type {:?} is not supported (epsilon, v_prediction)", self.prediction_type));
        }
        if self.thresholding || self.clip_sample {
            return bad("thresholding / clip_sample are not supported".into());
        }
        if self.rescale_betas_zero_snr {
            return bad("rescale_betas_zero_snr is not supported yet".into());
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

    /// The fractional timestep whose σ is `sigma`, interpolating log σ between the two
    /// neighbouring training timesteps and clamping outside them (diffusers'
    /// `EulerDiscreteScheduler._sigma_to_t`).
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let n = self.alphas_cumprod.len();
        let log_sigma = sigma.max(1e-10).ln();
        // σ grows with t, so the last timestep at or under `sigma` is the lower neighbour.
        let low = (0..n).rfind(|&i| self.sigma(i).ln() <= log_sigma).unwrap_or(0).min(n.saturating_sub(2));
        let (lo, hi) = (self.sigma(low).ln(), self.sigma(low + 1).ln());
        let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
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

/// How a scheduler class lays out its timesteps: DPM-Solver spaces `steps + 1` points and drops
/// the last (except "trailing"); the Euler schedulers keep "linspace" points fractional, the
/// others round them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Ddim,
    Euler,
    DpmSolver,
}

/// Inference timesteps for `steps` steps per the config's `timestep_spacing` (from
/// [`SchedulerConfig::for_kind`]), as each class's `set_timesteps` computes them. A
/// `steps_offset` that pushes a timestep past the last trained one is refused.
pub fn spaced_timesteps(c: &SchedulerConfig, steps: usize, layout: Layout) -> Result<Vec<f64>, SchedulerError> {
    let n = c.num_train_timesteps;
    let dpm = layout == Layout::DpmSolver;
    let k = if dpm { steps + 1 } else { steps };
    let mut ts: Vec<f64> = match c.spacing() {
        TimestepSpacing::Leading => {
            let ratio = n / k;
            (0..k).rev().map(|i| (i * ratio) as f64 + c.steps_offset as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = n as f64 / steps as f64;
            (0..steps).map(|i| (n as f64 - i as f64 * ratio).round_ties_even() - 1.0).collect()
        }
        TimestepSpacing::Linspace => (0..k)
            .map(|i| {
                let t = if k == 1 { 0.0 } else { (n - 1) as f64 * i as f64 / (k - 1) as f64 };
                if layout == Layout::Euler {
                    t
                } else {
                    t.round_ties_even()
                }
            })
            .rev()
            .collect(),
    };
    if dpm && c.spacing() != TimestepSpacing::Trailing {
        ts.truncate(steps);
    }
    if let Some(t) = ts.iter().find(|t| **t > (n - 1) as f64) {
        return Err(SchedulerError::Unsupported(format!(
            "steps_offset {} puts timestep {t} past the last trained one ({}): use a smaller steps offset or fewer steps",
            c.steps_offset,
            n - 1
        )));
    }
    Ok(ts)
}

/// `n` noise levels from `sigma_max` down to `sigma_min`, evenly spaced in σ^(1/ρ) with ρ = 7
/// (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
/// eq. 5; diffusers' `_convert_to_karras`).
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (lo, hi) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    (0..n)
        .map(|i| {
            let ramp = if n == 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
            (hi + ramp * (lo - hi)).powf(RHO)
        })
        .collect()
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
        for (kind, layout) in [("sample.ddim", Layout::Ddim), ("sample.euler", Layout::Euler), ("sample.dpmpp_2m", Layout::DpmSolver)] {
            let c = fixture_config(kind).for_kind(SchedulerKind::Ddim);
            let want: Vec<f64> = j[kind]["timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(spaced_timesteps(&c, 4, layout).unwrap(), want, "{kind}");
        }
    }

    /// Every class × spacing × Karras × steps_offset × step count that
    /// tests/fixtures/make_scheduler_reference.py recorded from diffusers.
    #[test]
    fn schedules_match_diffusers_for_every_spacing_karras_and_offset() {
        let j: serde_json::Value =
            crate::diffusion::config::read_json(&crate::diffusion::testing::fixtures_dir().join("scheduler-reference.json")).unwrap();
        let close =
            |a: &[f64], b: &[f64], abs: f64, rel: f64| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= abs + rel * y.abs());
        let floats = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
        let cases = j["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 96);
        for case in cases {
            let c: SchedulerConfig = serde_json::from_value(case["config"].clone()).unwrap();
            let kind = SchedulerKind::from_class_name(&c.class_name).unwrap();
            let steps = case["steps"].as_u64().unwrap() as usize;
            let plan = super::super::plan(kind, &c, steps).unwrap();
            let what = format!("{} {:?} karras={} offset={} steps={steps}", c.class_name, c.timestep_spacing, c.use_karras_sigmas, c.steps_offset);
            // diffusers computes σ in f32 (ᾱ is a float32 tensor), so a timestep mapped back from
            // a Karras σ lands within ~1e-3 of ours.
            assert!(
                close(&plan.timesteps, &floats(&case["timesteps"]), 2e-3, 0.0),
                "{what}: timesteps {:?} vs {}",
                plan.timesteps,
                case["timesteps"]
            );
            if let Some(sigmas) = plan.sigmas.as_deref() {
                assert!(close(sigmas, &floats(&case["sigmas"]), 1e-6, 1e-5), "{what}: sigmas {sigmas:?} vs {}", case["sigmas"]);
            }
            let init = case["init_noise_sigma"].as_f64().unwrap();
            assert!((plan.init_noise_sigma - init).abs() <= 1e-5 * init, "{what}: init σ {} vs {init}", plan.init_noise_sigma);
        }
        for d in j["defaults"].as_array().unwrap() {
            let c: SchedulerConfig = serde_json::from_value(d["config"].clone()).unwrap();
            let kind = SchedulerKind::from_class_name(d["scheduler"].as_str().unwrap()).unwrap();
            assert_eq!(c.for_kind(kind).spacing().as_str(), d["timestep_spacing"], "{} from a {} config", d["scheduler"], c.class_name);
        }
    }

    #[test]
    fn an_offset_past_the_trained_timesteps_is_refused() {
        let mut c = fixture_config("sample.ddim").for_kind(SchedulerKind::Ddim);
        c.steps_offset = 1;
        assert!(spaced_timesteps(&c, 500, Layout::Ddim).is_ok());
        let e = spaced_timesteps(&c, 1000, Layout::Ddim).unwrap_err().to_string();
        assert!(e.contains("steps_offset 1 puts timestep 1000 past the last trained one (999)"), "{e}");
    }

    #[test]
    fn karras_sigmas_run_from_max_to_min_and_map_back_to_timesteps() {
        let s = NoiseSchedule::new(&fixture_config("sample.ddim")).unwrap();
        let k = karras_sigmas(s.sigma(0), s.sigma(999), 5);
        assert!((k[0] - s.sigma(999)).abs() < 1e-12 && (k[4] - s.sigma(0)).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]), "{k:?}");
        assert!((s.sigma_to_t(s.sigma(999)) - 999.0).abs() < 1e-9 && s.sigma_to_t(s.sigma(0)).abs() < 1e-9);
        assert!((s.sigma_to_t(s.sigma_at(421.5)) - 421.5).abs() < 0.01);
        // Outside the trained range the timestep clamps.
        assert_eq!(s.sigma_to_t(1e3), 999.0);
        assert_eq!(s.sigma_to_t(0.0), 0.0);
    }

    #[test]
    fn scaled_linear_schedule_endpoints() {
        let s = NoiseSchedule::new(&fixture_config("sample.ddim")).unwrap();
        assert!((s.alphas_cumprod[0] - (1.0 - 0.00085)).abs() < 1e-12);
        // SD's schedule ends at ᾱ_999 ≈ 0.0046601 (diffusers gives 0.00466009).
        assert!((s.alphas_cumprod[999] - 0.0046601).abs() < 1e-6, "{}", s.alphas_cumprod[999]);
    }
}
