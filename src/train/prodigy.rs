//! Prodigy (Mishchenko & Defazio 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free
//! Learner", arXiv:2306.06101): Adam whose step size `d` is estimated from the run itself, so
//! `learning_rate` becomes a multiplier around 1.0 rather than a value to search for.
//!
//! Follows the reference implementation, PyPI `prodigyopt` 1.1.2 (`prodigyopt/prodigy.py`),
//! step for step, with its defaults: `d0` 1e-6, `growth_rate` unbounded, β3 = √β2, decoupled
//! weight decay, `slice_p` 1 (statistics over every entry), no FSDP. The tests hold values that
//! prodigyopt computed (`tests/conformance/prodigy_reference.py`).
//!
//! The estimate is global: one `d` for every parameter, from sums over all of them, so the UNet
//! and text-encoder LoRAs share it. prodigyopt refuses parameter groups whose learning rates
//! differ (other than 0, a frozen group); [`Prodigy::step_each`] does the same.

use candle_core::{DType, Result, Tensor, Var};
use std::collections::HashMap;

/// Prodigy's hyperparameters (prodigyopt's constructor arguments, `decouple=True`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProdigySettings {
    pub beta1: f64,
    pub beta2: f64,
    /// The decay of the `d` estimate's running sums; `None`: √β2.
    pub beta3: Option<f64>,
    /// Added to the second moment's root, scaled by `d`.
    pub eps: f64,
    /// Decoupled (AdamW-style) weight decay, applied with the step size d·lr.
    pub weight_decay: f64,
    /// The initial estimate of `d`.
    pub d0: f64,
    /// Multiplies every new estimate of `d`: prodigyopt's preferred knob (0.5–2 typical).
    pub d_coef: f64,
    /// Largest factor `d` may grow by in one step (∞: unbounded).
    pub growth_rate: f64,
    /// Adam's bias correction, folded into the step size.
    pub use_bias_correction: bool,
    /// Leaves the learning rate out of the estimate's denominator, so a warmup that starts the
    /// rate near zero does not inflate `d`.
    pub safeguard_warmup: bool,
}

impl Default for ProdigySettings {
    /// prodigyopt's defaults.
    fn default() -> Self {
        ProdigySettings {
            beta1: 0.9,
            beta2: 0.999,
            beta3: None,
            eps: 1e-8,
            weight_decay: 0.0,
            d0: 1e-6,
            d_coef: 1.0,
            growth_rate: f64::INFINITY,
            use_bias_correction: false,
            safeguard_warmup: false,
        }
    }
}

/// Per-variable state, created the first time the variable has a gradient (as prodigyopt's
/// lazily initialised `state[p]`).
#[derive(Debug, Clone)]
struct VarState {
    /// The variable's value when its state was created: the distance travelled from it drives
    /// the estimate of `d`.
    p0: Tensor,
    /// The running, `d`-weighted sum of gradients.
    s: Tensor,
    /// First moment (absent when β1 = 0).
    exp_avg: Option<Tensor>,
    exp_avg_sq: Tensor,
}

/// Prodigy on a fixed list of variables; state tensors are f32 on the variables' device.
pub struct Prodigy {
    pub settings: ProdigySettings,
    /// The current step-size estimate.
    pub d: f64,
    /// The largest estimate so far (`d` never exceeds it).
    pub d_max: f64,
    /// The running numerator of the estimate (Σ of d-weighted ⟨g, x0 − x⟩, decayed by β3).
    pub d_numerator: f64,
    /// Updates taken (prodigyopt's `k`; a step whose gradients are all zero does not count).
    pub k: usize,
    state: Vec<Option<VarState>>,
}

/// The name of the scalar state tensor in a checkpoint: [d, d_max, d_numerator, k], f64.
const SCALARS: &str = "prodigy.scalars";

impl Prodigy {
    pub fn new(n_vars: usize, settings: ProdigySettings) -> Self {
        Prodigy { settings, d: settings.d0, d_max: settings.d0, d_numerator: 0.0, k: 0, state: vec![None; n_vars] }
    }

    fn beta3(&self) -> f64 {
        self.settings.beta3.unwrap_or_else(|| self.settings.beta2.sqrt())
    }

    /// One update where `vars[i]` has gradient `grads[i]` (None: left alone, as a torch parameter
    /// without `.grad`) and learning rate `lrs[i]`. The rates must all be equal, or 0 for a
    /// frozen group (prodigyopt's rule; the step size is shared). Errors: unequal rates.
    pub fn step_each(&mut self, vars: &[&Var], grads: &[Option<Tensor>], lrs: &[f64]) -> Result<()> {
        let st = self.settings;
        let lr = lrs.iter().copied().fold(0.0f64, f64::max);
        if let Some(bad) = lrs.iter().find(|&&l| l != lr && l != 0.0) {
            candle_core::bail!(
                "Prodigy shares one step size across parameter groups and needs the same learning rate in each (got {bad} and {lr}); \
                 use one learning_rate for the UNet and the text encoders"
            );
        }
        let (beta1, beta2, beta3) = (st.beta1, st.beta2, self.beta3());
        let bias_correction = if st.use_bias_correction {
            let t = (self.k + 1) as i32;
            (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t))
        } else {
            1.0
        };
        let d = self.d;
        let dlr = d * lr * bias_correction;
        let scale = d / st.d0;
        let s_weight = scale * if st.safeguard_warmup { d } else { dlr };

        // Per-variable partial sums stay on the device until one f64 reduction at the end.
        let mut dots = Vec::new();
        let mut abs_sums = Vec::new();
        for (i, ((var, g), &var_lr)) in vars.iter().zip(grads).zip(lrs).enumerate() {
            let Some(g) = g else { continue };
            let p = var.as_tensor();
            if self.state[i].is_none() {
                self.state[i] = Some(VarState {
                    p0: p.detach().copy()?,
                    s: p.zeros_like()?,
                    exp_avg: if beta1 > 0.0 { Some(p.zeros_like()?) } else { None },
                    exp_avg_sq: p.zeros_like()?,
                });
            }
            if var_lr <= 0.0 {
                continue;
            }
            let state = self.state[i].as_mut().expect("initialised above");
            dots.push((g * (&state.p0 - p)?)?.sum_all()?.to_dtype(DType::F64)?);
            if let Some(m) = &state.exp_avg {
                state.exp_avg = Some(((m * beta1)? + (g * (d * (1.0 - beta1)))?)?);
            }
            state.exp_avg_sq = ((&state.exp_avg_sq * beta2)? + (g.sqr()? * (d * d * (1.0 - beta2)))?)?;
            state.s = ((&state.s * beta3)? + (g * s_weight)?)?;
            abs_sums.push(state.s.abs()?.sum_all()?.to_dtype(DType::F64)?);
        }
        let total = |v: Vec<Tensor>| -> Result<f64> {
            if v.is_empty() {
                return Ok(0.0);
            }
            Tensor::stack(&v, 0)?.sum_all()?.to_scalar::<f64>()
        };
        let delta_numerator = scale * dlr * total(dots)?;
        let d_denom = total(abs_sums)?;
        // No gradient signal at all: prodigyopt returns here, moments already updated, without
        // counting the step or touching the estimate.
        if d_denom == 0.0 {
            return Ok(());
        }

        let mut new_d = d;
        if lr > 0.0 {
            let numerator = self.d_numerator * beta3 + delta_numerator;
            let d_hat = st.d_coef * numerator / d_denom;
            if new_d == st.d0 {
                new_d = new_d.max(d_hat);
            }
            self.d_max = self.d_max.max(d_hat);
            new_d = self.d_max.min(new_d * st.growth_rate);
            self.d_numerator = numerator;
        }
        self.d = new_d;

        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let state = self.state[i].as_ref().expect("initialised in the first pass");
            let denom = (state.exp_avg_sq.sqrt()? + new_d * st.eps)?;
            let mut p = var.as_tensor().clone();
            // p − (wd·dlr)·p, not p·(1 − wd·dlr): wd·dlr is far below f32's epsilon early in a
            // run, where the factor would round to 1 − 2⁻²³ (prodigyopt's `add_(p, alpha=…)`).
            if st.weight_decay != 0.0 {
                p = (&p - (&p * (st.weight_decay * dlr))?)?;
            }
            let update = match &state.exp_avg {
                Some(m) => (m / &denom)?,
                None => ((g / &denom)? * new_d)?,
            };
            var.set(&(p - (update * dlr)?)?)?;
        }
        self.k += 1;
        Ok(())
    }

    /// Everything needed to continue exactly: each initialised variable's `p0.i`, `s.i`,
    /// `exp_avg.i` (β1 > 0), `exp_avg_sq.i`, and `prodigy.scalars` = [d, d_max, d_numerator, k].
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![(SCALARS.to_string(), Tensor::new(&[self.d, self.d_max, self.d_numerator, self.k as f64], &candle_core::Device::Cpu)?)];
        for (i, st) in self.state.iter().enumerate() {
            let Some(st) = st else { continue };
            out.push((format!("p0.{i}"), st.p0.clone()));
            out.push((format!("s.{i}"), st.s.clone()));
            if let Some(m) = &st.exp_avg {
                out.push((format!("exp_avg.{i}"), m.clone()));
            }
            out.push((format!("exp_avg_sq.{i}"), st.exp_avg_sq.clone()));
        }
        Ok(out)
    }

    /// Restores what [`Prodigy::state_tensors`] wrote; `vars` give each state's shape and device.
    /// Errors name the tensor that is missing or has the wrong shape.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, vars: &[&Var]) -> Result<()> {
        let scalars = tensors
            .get(SCALARS)
            .ok_or_else(|| candle_core::Error::msg(format!("optimizer state lacks {SCALARS} (was it written by AdamW?)")))?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let [d, d_max, d_numerator, k] = scalars[..] else {
            candle_core::bail!("optimizer state {SCALARS}: {} values, expected 4", scalars.len());
        };
        if vars.len() != self.state.len() {
            candle_core::bail!("optimizer state: {} variables, expected {}", vars.len(), self.state.len());
        }
        for (i, var) in vars.iter().enumerate() {
            let get = |name: String| -> Result<Option<Tensor>> {
                match tensors.get(&name) {
                    None => Ok(None),
                    Some(t) if t.dims() != var.dims() => {
                        candle_core::bail!("optimizer state {name}: shape {:?}, expected {:?}", t.dims(), var.dims())
                    }
                    Some(t) => Ok(Some(t.to_dtype(DType::F32)?.to_device(var.device())?)),
                }
            };
            let (p0, s, exp_avg, exp_avg_sq) =
                (get(format!("p0.{i}"))?, get(format!("s.{i}"))?, get(format!("exp_avg.{i}"))?, get(format!("exp_avg_sq.{i}"))?);
            self.state[i] = match (p0, s, exp_avg_sq) {
                (None, None, None) => None,
                (Some(p0), Some(s), Some(exp_avg_sq)) => {
                    if self.settings.beta1 > 0.0 && exp_avg.is_none() {
                        candle_core::bail!("optimizer state lacks exp_avg.{i} (adam_beta1 changed?)");
                    }
                    Some(VarState { p0, s, exp_avg: if self.settings.beta1 > 0.0 { exp_avg } else { None }, exp_avg_sq })
                }
                _ => candle_core::bail!("optimizer state for variable {i} is incomplete (p0, s, exp_avg_sq)"),
            };
        }
        (self.d, self.d_max, self.d_numerator, self.k) = (d, d_max, d_numerator, k as usize);
        Ok(())
    }
}

/// prodigyopt's trajectories on small known cases (`tests/fixtures/prodigy-reference.json`,
/// written by `tests/conformance/prodigy_reference.py`), replayed with [`Prodigy`]: shared by
/// the unit test on the committed values and the CLI test that reruns prodigyopt.
/// The note a run gets when it uses Prodigy with an AdamW-sized learning rate: prodigyopt
/// documents 1.0, and diffusers' DreamBooth scripts warn at 0.1 or below, as here.
pub fn learning_rate_note(cfg: &super::config::TrainConfig) -> Option<String> {
    (cfg.optimizer == super::config::OptimizerKind::Prodigy && cfg.learning_rate <= 0.1).then(|| {
        format!(
            "optimizer prodigy with learning_rate {}: Prodigy finds its own step size and expects learning_rate ~1.0 \
             (a multiplier of that step size); a small value like this slows training in proportion",
            cfg.learning_rate
        )
    })
}

#[cfg(any(test, feature = "test-support"))]
pub mod reference {
    use super::*;
    use candle_core::Device;

    /// One case of `tests/fixtures/prodigy-reference.json` (written by
    /// `tests/conformance/prodigy_reference.py` with prodigyopt 1.1.2).
    #[derive(serde::Deserialize)]
    pub struct Case {
        pub name: String,
        pub settings: serde_json::Value,
        pub lr: f64,
        pub warmup: usize,
        pub steps: usize,
        /// Initial values, the quadratic's targets and weights per tensor (flattened; the
        /// gradient is w ⊙ (p − t)).
        pub init: Vec<Vec<f32>>,
        pub target: Vec<Vec<f32>>,
        pub weight: Vec<Vec<f32>>,
        /// Tensor i has no gradient before step `first_grad[i]`.
        pub first_grad: Vec<usize>,
        /// After each step: every tensor's values, and d.
        pub params: Vec<Vec<Vec<f32>>>,
        pub d: Vec<f64>,
    }

    pub fn settings_of(v: &serde_json::Value) -> ProdigySettings {
        let f = |k: &str, def: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(def);
        let b = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
        ProdigySettings {
            beta1: f("beta1", 0.9),
            beta2: f("beta2", 0.999),
            beta3: v.get("beta3").and_then(|x| x.as_f64()),
            eps: f("eps", 1e-8),
            weight_decay: f("weight_decay", 0.0),
            d0: f("d0", 1e-6),
            d_coef: f("d_coef", 1.0),
            growth_rate: f("growth_rate", f64::INFINITY),
            use_bias_correction: b("use_bias_correction"),
            safeguard_warmup: b("safeguard_warmup"),
        }
    }

    /// Runs `case` with our Prodigy: (params after each step, d after each step). The rate
    /// warms up linearly over `warmup` steps, as hfsky's schedules do.
    pub fn run_case(case: &Case) -> (Vec<Vec<Vec<f32>>>, Vec<f64>) {
        let dev = Device::Cpu;
        let vars: Vec<Var> = case.init.iter().map(|v| Var::from_tensor(&Tensor::new(v.as_slice(), &dev).unwrap()).unwrap()).collect();
        let refs: Vec<&Var> = vars.iter().collect();
        let t: Vec<Tensor> = case.target.iter().map(|v| Tensor::new(v.as_slice(), &dev).unwrap()).collect();
        let w: Vec<Tensor> = case.weight.iter().map(|v| Tensor::new(v.as_slice(), &dev).unwrap()).collect();
        let mut opt = Prodigy::new(vars.len(), settings_of(&case.settings));
        let (mut params, mut ds) = (Vec::new(), Vec::new());
        for step in 0..case.steps {
            let lr = crate::train::optim::learning_rate(case.lr, crate::train::config::LrSchedule::Constant, case.warmup, step, case.steps);
            let grads: Vec<Option<Tensor>> =
                (0..vars.len()).map(|i| (step >= case.first_grad[i]).then(|| ((vars[i].as_tensor() - &t[i]).unwrap() * &w[i]).unwrap())).collect();
            opt.step_each(&refs, &grads, &vec![lr; vars.len()]).unwrap();
            params.push(vars.iter().map(|v| v.as_tensor().to_vec1::<f32>().unwrap()).collect());
            ds.push(opt.d);
        }
        (params, ds)
    }

    /// Compares a run with prodigyopt's: d within 1e-5 relative, and every value's distance
    /// from where it started within 1e-5 of the largest distance its tensor travelled (the
    /// values themselves are ~1 and move far less, so comparing them would hide errors).
    pub fn compare(case: &Case, params: &[Vec<Vec<f32>>], ds: &[f64]) {
        for (step, (d, want)) in ds.iter().zip(&case.d).enumerate() {
            assert!((d - want).abs() <= 1e-5 * want.abs(), "{}: step {}: d {d:e}, prodigyopt {want:e}", case.name, step + 1);
        }
        for (step, (ours, theirs)) in params.iter().zip(&case.params).enumerate() {
            for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
                let span = span_of(&case.init[i], b);
                for (j, ((x, y), x0)) in a.iter().zip(b).zip(&case.init[i]).enumerate() {
                    let err = ((x - x0) - (y - x0)).abs() as f64;
                    assert!(err <= 1e-5 * span + 1e-9, "{}: step {} tensor {i}[{j}]: {x} vs prodigyopt {y} (moved {span:e})", case.name, step + 1);
                }
            }
        }
    }

    fn span_of(init: &[f32], now: &[f32]) -> f64 {
        init.iter().zip(now).map(|(a, b)| (b - a).abs() as f64).fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::reference::*;
    use super::*;
    use candle_core::Device;

    fn reference() -> Vec<Case> {
        serde_json::from_str(include_str!("../../tests/fixtures/prodigy-reference.json")).unwrap()
    }

    #[test]
    fn matches_prodigyopt_on_the_committed_cases() {
        let cases = reference();
        assert!(cases.len() >= 5);
        for case in &cases {
            let (params, ds) = run_case(case);
            compare(case, &params, &ds);
            assert!(ds.last().unwrap() > &(2.0 * settings_of(&case.settings).d0), "{}: d adapted: {:?}", case.name, ds);
        }
    }

    #[test]
    fn unequal_group_rates_are_refused_and_a_zero_rate_group_is_frozen() {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f32, 3.0], &dev).unwrap()).unwrap();
        let g = || Some(Tensor::new(&[0.5f32, 0.25], &dev).unwrap());
        let mut opt = Prodigy::new(2, ProdigySettings::default());
        let e = opt.step_each(&[&a, &b], &[g(), g()], &[1.0, 0.5]).unwrap_err().to_string();
        assert!(e.contains("same learning rate"), "{e}");
        opt.step_each(&[&a, &b], &[g(), g()], &[1.0, 0.0]).unwrap();
        assert_ne!(a.as_tensor().to_vec1::<f32>().unwrap(), [1.0, -2.0]);
        // The frozen group still takes the (zero-moment) update: nothing moves it.
        assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap(), [0.5, 3.0]);
    }

    #[test]
    fn state_round_trips_and_continues_exactly() {
        let case = reference().into_iter().find(|c| c.name == "all_on").expect("the all_on case");
        let dev = Device::Cpu;
        let settings = settings_of(&case.settings);
        let mk = || -> Vec<Var> { case.init.iter().map(|v| Var::from_tensor(&Tensor::new(v.as_slice(), &dev).unwrap()).unwrap()).collect() };
        let grad = |vars: &[Var], i: usize, step: usize| -> Option<Tensor> {
            let t = Tensor::new(case.target[i].as_slice(), &dev).unwrap();
            let w = Tensor::new(case.weight[i].as_slice(), &dev).unwrap();
            (step >= case.first_grad[i]).then(|| ((vars[i].as_tensor() - t).unwrap() * w).unwrap())
        };
        let run = |vars: &[Var], opt: &mut Prodigy, steps: std::ops::Range<usize>| {
            let refs: Vec<&Var> = vars.iter().collect();
            for step in steps {
                let grads: Vec<_> = (0..vars.len()).map(|i| grad(vars, i, step)).collect();
                opt.step_each(&refs, &grads, &vec![case.lr; vars.len()]).unwrap();
            }
        };
        let whole = mk();
        let mut opt = Prodigy::new(whole.len(), settings);
        run(&whole, &mut opt, 0..12);

        let first = mk();
        let mut opt1 = Prodigy::new(first.len(), settings);
        run(&first, &mut opt1, 0..5);
        let saved: HashMap<String, Tensor> = opt1.state_tensors().unwrap().into_iter().collect();
        let refs: Vec<&Var> = first.iter().collect();
        let mut opt2 = Prodigy::new(first.len(), settings);
        opt2.load_state(&saved, &refs).unwrap();
        run(&first, &mut opt2, 5..12);
        assert_eq!((opt2.d, opt2.d_max, opt2.d_numerator, opt2.k), (opt.d, opt.d_max, opt.d_numerator, opt.k));
        for (a, b) in whole.iter().zip(&first) {
            assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), b.as_tensor().to_vec1::<f32>().unwrap());
        }
        let mut missing = saved.clone();
        missing.remove("s.0");
        let e = Prodigy::new(first.len(), settings).load_state(&missing, &refs).unwrap_err().to_string();
        assert!(e.contains("incomplete"), "{e}");
        let e = Prodigy::new(first.len(), settings).load_state(&HashMap::new(), &refs).unwrap_err().to_string();
        assert!(e.contains(SCALARS), "{e}");
    }
}
