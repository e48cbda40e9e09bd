//! AdamW on the LoRA factors with f32 state (kept ours rather than candle_nn's so the moments can
//! be checkpointed and resumed exactly), the [`Optimizer`] choice between it and Prodigy
//! ([`super::prodigy`]), global-norm gradient clipping, and the learning-rate
//! schedules of diffusers' `get_scheduler` (constant / linear / cosine, each with linear warmup).

use super::config::LrSchedule;
use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Optimizer steps taken (bias correction uses it).
    pub step: usize,
    /// First and second moments, one pair per variable, in the order of `vars`.
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(vars: &[&Var], beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Result<Self> {
        let zeros = |v: &&Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            m: vars.iter().map(zeros).collect::<Result<_>>()?,
            v: vars.iter().map(zeros).collect::<Result<_>>()?,
        })
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `vars[i]` (None: no gradient).
    pub fn step(&mut self, vars: &[&Var], grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step_each(vars, grads, &vec![lr; vars.len()])
    }

    /// One update where `vars[i]` takes learning rate `lrs[i]` (torch's parameter groups: the
    /// UNet and text-encoder LoRAs share moments' hyperparameters, not the rate).
    pub fn step_each(&mut self, vars: &[&Var], grads: &[Option<Tensor>], lrs: &[f64]) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (i, ((var, g), &lr)) in vars.iter().zip(grads).zip(lrs).enumerate() {
            let Some(g) = g else { continue };
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            // Decoupled weight decay, as torch.optim.AdamW: θ ← θ·(1 − lr·wd) − lr·update.
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            out.push((format!("m.{i}"), m.clone()));
            out.push((format!("v.{i}"), v.clone()));
        }
        out
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for i in 0..self.m.len() {
            for (name, slot) in [(format!("m.{i}"), &mut self.m[i]), (format!("v.{i}"), &mut self.v[i])] {
                let t = tensors.get(&name).ok_or_else(|| candle_core::Error::msg(format!("optimizer state lacks {name}")))?;
                if t.dims() != slot.dims() {
                    candle_core::bail!("optimizer state {name}: shape {:?}, expected {:?}", t.dims(), slot.dims());
                }
                *slot = t.to_device(slot.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// The run's optimizer (`optimizer:` in train.yaml), one interface for the loop and checkpoints.
pub enum Optimizer {
    AdamW(AdamW),
    Prodigy(super::prodigy::Prodigy),
}

impl Optimizer {
    /// The optimizer `cfg` names over `vars`, with its hyperparameters from the adam_* and
    /// prodigy_* keys (diffusers' DreamBooth scripts pass the same ones to prodigyopt).
    pub fn for_config(cfg: &super::config::TrainConfig, vars: &[&Var]) -> Result<Self> {
        use super::config::OptimizerKind;
        Ok(match cfg.optimizer {
            OptimizerKind::AdamW => Optimizer::AdamW(AdamW::new(vars, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.adam_weight_decay)?),
            OptimizerKind::Prodigy => Optimizer::Prodigy(super::prodigy::Prodigy::new(
                vars.len(),
                super::prodigy::ProdigySettings {
                    beta1: cfg.adam_beta1,
                    beta2: cfg.adam_beta2,
                    eps: cfg.adam_epsilon,
                    weight_decay: cfg.adam_weight_decay,
                    d_coef: cfg.prodigy_d_coef,
                    use_bias_correction: cfg.prodigy_use_bias_correction,
                    safeguard_warmup: cfg.prodigy_safeguard_warmup,
                    ..Default::default()
                },
            )),
        })
    }

    /// The train.yaml name: adamw | prodigy.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::AdamW(_) => "adamw",
            Optimizer::Prodigy(_) => "prodigy",
        }
    }

    /// One update; `lrs[i]` is `vars[i]`'s scheduled rate (see [`AdamW::step_each`],
    /// [`super::prodigy::Prodigy::step_each`]).
    pub fn step_each(&mut self, vars: &[&Var], grads: &[Option<Tensor>], lrs: &[f64]) -> Result<()> {
        match self {
            Optimizer::AdamW(o) => o.step_each(vars, grads, lrs),
            Optimizer::Prodigy(o) => o.step_each(vars, grads, lrs),
        }
    }

    /// Updates taken.
    pub fn steps(&self) -> usize {
        match self {
            Optimizer::AdamW(o) => o.step,
            Optimizer::Prodigy(o) => o.k,
        }
    }

    /// Prodigy's current step-size estimate `d` (the effective rate is d × lr); None for AdamW.
    pub fn prodigy_d(&self) -> Option<f64> {
        match self {
            Optimizer::AdamW(_) => None,
            Optimizer::Prodigy(o) => Some(o.d),
        }
    }

    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            Optimizer::AdamW(o) => Ok(o.state_tensors()),
            Optimizer::Prodigy(o) => o.state_tensors(),
        }
    }

    /// Restores the state a checkpoint at `step` holds for `vars`.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, vars: &[&Var], step: usize) -> Result<()> {
        match self {
            Optimizer::AdamW(o) => o.load_state(tensors, step),
            Optimizer::Prodigy(o) => o.load_state(tensors, vars),
        }
    }
}

/// How training_summary.json and the model card record the optimizer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerSummary {
    /// adamw | prodigy.
    pub name: String,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    /// Prodigy only: its settings and the step-size estimate `d` the run ended with (the
    /// effective learning rate was d × learning_rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prodigy: Option<ProdigySummary>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProdigySummary {
    pub d_coef: f64,
    pub use_bias_correction: bool,
    pub safeguard_warmup: bool,
    pub final_d: f64,
}

impl Default for OptimizerSummary {
    /// torch's AdamW defaults (what runs before `optimizer:` used).
    fn default() -> Self {
        OptimizerSummary { name: "adamw".into(), beta1: 0.9, beta2: 0.999, weight_decay: 1e-2, prodigy: None }
    }
}

impl OptimizerSummary {
    pub fn of(cfg: &super::config::TrainConfig, opt: &Optimizer) -> Self {
        OptimizerSummary {
            name: opt.name().into(),
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            weight_decay: cfg.adam_weight_decay,
            prodigy: opt.prodigy_d().map(|d| ProdigySummary {
                d_coef: cfg.prodigy_d_coef,
                use_bias_correction: cfg.prodigy_use_bias_correction,
                safeguard_warmup: cfg.prodigy_safeguard_warmup,
                final_d: d,
            }),
        }
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm` (torch's clip_grad_norm_);
/// returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    for g in grads.iter().flatten() {
        total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let k = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * k)?;
        }
    }
    Ok(norm)
}

/// The learning rate at optimizer step `step` (0-based) of `total`.
pub fn learning_rate(base: f64, schedule: LrSchedule, warmup: usize, step: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Linear => base * (1.0 - progress),
        LrSchedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn adamw_matches_torch_on_a_known_case() {
        // torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), p=[1,-2], g=[0.5,0.25], two steps:
        // step 1: p = [0.899, -2.098]; step 2 with the same gradient: p = [0.798101, -2.195902]
        let p = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(&[&p], 0.9, 0.999, 1e-8, 0.01).unwrap();
        let g = Tensor::new(&[0.5f32, 0.25], &Device::Cpu).unwrap();
        opt.step(&[&p], &[Some(g.clone())], 0.1).unwrap();
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.899).abs() < 1e-5 && (v[1] + 2.098).abs() < 1e-5, "{v:?}");
        opt.step(&[&p], &[Some(g)], 0.1).unwrap();
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.798_101).abs() < 1e-5 && (v[1] + 2.195_902).abs() < 1e-5, "{v:?}");
    }

    /// Per-variable rates (the UNet and text-encoder groups) move each variable exactly as an
    /// optimizer of its own at that rate would.
    #[test]
    fn each_variable_takes_its_own_learning_rate() {
        let mk = |v: &[f32]| Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap();
        let (a, b) = (mk(&[1.0, -2.0]), mk(&[0.5, 3.0]));
        let (a1, b1) = (mk(&[1.0, -2.0]), mk(&[0.5, 3.0]));
        let ga = Tensor::new(&[0.5f32, 0.25], &Device::Cpu).unwrap();
        let gb = Tensor::new(&[-0.1f32, 0.7], &Device::Cpu).unwrap();
        let mut both = AdamW::new(&[&a, &b], 0.9, 0.999, 1e-8, 0.01).unwrap();
        let mut only_a = AdamW::new(&[&a1], 0.9, 0.999, 1e-8, 0.01).unwrap();
        let mut only_b = AdamW::new(&[&b1], 0.9, 0.999, 1e-8, 0.01).unwrap();
        for _ in 0..3 {
            both.step_each(&[&a, &b], &[Some(ga.clone()), Some(gb.clone())], &[0.1, 0.02]).unwrap();
            only_a.step(&[&a1], &[Some(ga.clone())], 0.1).unwrap();
            only_b.step(&[&b1], &[Some(gb.clone())], 0.02).unwrap();
        }
        for (x, y) in [(&a, &a1), (&b, &b1)] {
            assert_eq!(x.as_tensor().to_vec1::<f32>().unwrap(), y.as_tensor().to_vec1::<f32>().unwrap());
        }
        assert_ne!(a.as_tensor().to_vec1::<f32>().unwrap(), [1.0, -2.0]);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![Some(Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()), None];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let after = g[0].as_ref().unwrap().sqr().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap().sqrt();
        assert!((after - 1.0).abs() < 1e-5);
    }

    #[test]
    fn schedules_warm_up_then_follow_their_shape() {
        assert_eq!(learning_rate(1.0, LrSchedule::Constant, 4, 0, 10), 0.25);
        assert_eq!(learning_rate(1.0, LrSchedule::Constant, 4, 3, 10), 1.0);
        assert_eq!(learning_rate(1.0, LrSchedule::Constant, 0, 9, 10), 1.0);
        assert!((learning_rate(1.0, LrSchedule::Cosine, 0, 5, 10) - 0.5).abs() < 1e-12);
        assert!((learning_rate(1.0, LrSchedule::Linear, 0, 5, 10) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, LrSchedule::Cosine, 2, 9, 10) < 0.05);
    }
}
