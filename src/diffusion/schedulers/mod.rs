//! Samplers that match diffusers step for step, configured from `scheduler_config.json`:
//! DDIM, Euler, Euler ancestral and DPM-Solver++ 2M. The noise schedule and timestep spacing
//! are shared (`schedule.rs`); each sampler only implements its update rule.

mod ddim;
mod dpmpp;
mod euler;
mod schedule;

pub use schedule::{karras_sigmas, NoiseSchedule, SchedulerConfig, SchedulerOverrides, TimestepSpacing};

use crate::diffusion::noise::NoiseStream;
use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    Ddim,
    Euler,
    EulerAncestral,
    #[value(name = "dpmpp-2m")]
    #[serde(rename = "dpmpp-2m")]
    Dpmpp2m,
}

impl SchedulerKind {
    /// The kind a pipeline's `scheduler_config.json` names (`_class_name`).
    pub fn from_class_name(name: &str) -> Option<SchedulerKind> {
        match name {
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "EulerAncestralDiscreteScheduler" => Some(SchedulerKind::EulerAncestral),
            "DPMSolverMultistepScheduler" => Some(SchedulerKind::Dpmpp2m),
            _ => None,
        }
    }

    /// A kind named the hfsky way (`euler-ancestral`) or as a diffusers class
    /// (`EulerAncestralDiscreteScheduler`, what huggingface_hub sends); the error names it and
    /// the accepted names.
    pub fn from_name(name: &str) -> std::result::Result<SchedulerKind, String> {
        SchedulerKind::from_class_name(name)
            .or_else(|| <SchedulerKind as clap::ValueEnum>::from_str(name, true).ok())
            .ok_or_else(|| format!("unknown scheduler {name:?} (ddim, euler, euler-ancestral, dpmpp-2m, or their diffusers class names)"))
    }

    /// The `timestep_spacing` the diffusers class defaults to when a config does not say
    /// (DDIMScheduler: leading; the Euler and DPM-Solver classes: linspace).
    pub fn default_timestep_spacing(self) -> TimestepSpacing {
        match self {
            SchedulerKind::Ddim => TimestepSpacing::Leading,
            _ => TimestepSpacing::Linspace,
        }
    }

    /// Whether the diffusers class reads `use_karras_sigmas` (EulerDiscreteScheduler and
    /// DPMSolverMultistepScheduler do; DDIMScheduler and EulerAncestralDiscreteScheduler ignore it).
    pub fn has_karras_sigmas(self) -> bool {
        matches!(self, SchedulerKind::Euler | SchedulerKind::Dpmpp2m)
    }

    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::Dpmpp2m => "DPMSolverMultistepScheduler",
        }
    }
}

/// One sampling run: the timesteps to visit and the update from a model prediction.
pub trait Scheduler {
    /// Timesteps given to the UNet, in visiting order.
    fn timesteps(&self) -> &[f64];
    /// Factor applied to unit Gaussian noise to get the initial latents.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// The noise level of each step and the final one, for the σ-parametrised samplers.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }
    /// Scaling of the latents before they enter the UNet at step `i`.
    fn scale_model_input(&self, sample: &Tensor, _i: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }
    /// The latents after step `i`, given the UNet's (guided) prediction.
    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor>;
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("unknown scheduler class {0:?} in scheduler_config.json: pass --scheduler ddim|euler|euler-ancestral|dpmpp-2m")]
    UnknownClass(String),
    #[error("scheduler_config.json: {0}")]
    Unsupported(String),
    #[error("the number of steps must be between 1 and {0}")]
    Steps(usize),
}

/// The class that samples: `kind`, else the one the config names.
pub fn resolve_kind(kind: Option<SchedulerKind>, config: &SchedulerConfig) -> std::result::Result<SchedulerKind, SchedulerError> {
    match kind {
        Some(k) => Ok(k),
        None => SchedulerKind::from_class_name(&config.class_name).ok_or_else(|| SchedulerError::UnknownClass(config.class_name.clone())),
    }
}

/// What a sampling run visits: the timesteps given to the UNet, the noise level of each (σ
/// samplers; `None` for DDIM) and the scale of the initial noise. Computed as each diffusers
/// class's `set_timesteps` does, for comparison with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub timesteps: Vec<f64>,
    /// σ per step plus the final one (`steps + 1` values).
    pub sigmas: Option<Vec<f64>>,
    pub init_noise_sigma: f64,
}

/// The plan `kind` follows for `steps` steps on `config`.
pub fn plan(kind: SchedulerKind, config: &SchedulerConfig, steps: usize) -> std::result::Result<Plan, SchedulerError> {
    let s = build(Some(kind), config, steps, NoiseStream::new(crate::diffusion::noise::NoiseKind::Hfsky, 0))?;
    Ok(Plan { timesteps: s.timesteps().to_vec(), sigmas: s.sigmas().map(<[f64]>::to_vec), init_noise_sigma: s.init_noise_sigma() })
}

/// A scheduler for `steps` steps: `kind` overrides the config's class, as diffusers'
/// `Scheduler.from_config(pipe.scheduler.config)` does (keys the config leaves out take the
/// new class's defaults). `noise` feeds Euler ancestral's per-step draws (the stream the
/// initial latents came from, as diffusers passes one `generator` to both); the deterministic
/// samplers ignore it.
pub fn build(
    kind: Option<SchedulerKind>,
    config: &SchedulerConfig,
    steps: usize,
    noise: NoiseStream,
) -> std::result::Result<Box<dyn Scheduler>, SchedulerError> {
    let kind = resolve_kind(kind, config)?;
    let config = &config.for_kind(kind);
    let schedule = NoiseSchedule::new(config)?;
    if steps == 0 || steps > config.num_train_timesteps {
        return Err(SchedulerError::Steps(config.num_train_timesteps));
    }
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(ddim::Ddim::new(schedule, config, steps)?),
        SchedulerKind::Euler => Box::new(euler::Euler::new(schedule, config, steps, None)?),
        SchedulerKind::EulerAncestral => Box::new(euler::Euler::new(schedule, config, steps, Some(noise))?),
        SchedulerKind::Dpmpp2m => Box::new(dpmpp::Dpmpp2m::new(schedule, config, steps)?),
    })
}

/// `a·x + b·y` for tensors of one shape.
pub(crate) fn lin(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    x.affine(a, 0.0)? + y.affine(b, 0.0)?
}
