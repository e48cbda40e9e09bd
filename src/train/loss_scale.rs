//! Dynamic loss scaling for half-precision training, with the rules of torch's
//! `torch.amp.GradScaler` (defaults `init_scale=2**16`, `growth_factor=2.0`, `backoff_factor=0.5`,
//! `growth_interval=2000`; `_amp_update_scale_`): the loss is multiplied by the scale before
//! backward so small f16 gradients do not flush to zero, gradients are divided by it before
//! clipping and the optimizer; a step whose gradients hold inf/NaN is skipped and the scale
//! halved; after `growth_interval` good steps in a row the scale doubles.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    scale: f64,
    /// Good steps since the last change of scale (GradScaler's `_growth_tracker`).
    good_steps: u32,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler::new(65536.0, 2.0, 0.5, 2000)
    }
}

impl LossScaler {
    pub fn new(init_scale: f64, growth_factor: f64, backoff_factor: f64, growth_interval: u32) -> Self {
        LossScaler { scale: init_scale, good_steps: 0, growth_factor, backoff_factor, growth_interval }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `loss × scale`, to call backward on.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        loss.affine(self.scale, 0.0)
    }

    /// Divides the gradients by the scale (GradScaler's `unscale_`) and says whether all of them
    /// are finite.
    pub fn unscale(&self, grads: &mut [Option<Tensor>]) -> Result<bool> {
        let mut finite = true;
        for g in grads.iter_mut().flatten() {
            *g = g.affine(1.0 / self.scale, 0.0)?;
            if finite {
                let s = g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                finite = s.is_finite();
            }
        }
        Ok(finite)
    }

    /// After a step: `finite` false (the step was skipped) halves the scale and restarts the
    /// count; otherwise the count grows and, at `growth_interval`, the scale doubles. Returns
    /// whether the optimizer step should be taken (`finite`).
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                let grown = self.scale * self.growth_factor;
                // GradScaler only grows to a finite scale.
                if grown.is_finite() && grown <= f32::MAX as f64 {
                    self.scale = grown;
                }
                self.good_steps = 0;
            }
        } else {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn starts_like_gradscaler() {
        let s = LossScaler::default();
        assert_eq!(s.scale(), 65536.0);
        assert_eq!((s.growth_factor, s.backoff_factor, s.growth_interval), (2.0, 0.5, 2000));
    }

    #[test]
    fn an_inf_step_is_skipped_and_halves_the_scale() {
        let mut s = LossScaler::default();
        for _ in 0..1500 {
            assert!(s.update(true));
        }
        assert!(!s.update(false));
        assert_eq!(s.scale(), 32768.0);
        // The count of good steps restarted: 1999 more do not grow it, the 2000th does.
        for _ in 0..1999 {
            s.update(true);
        }
        assert_eq!(s.scale(), 32768.0);
        s.update(true);
        assert_eq!(s.scale(), 65536.0);
    }

    #[test]
    fn grows_after_every_2000_good_steps() {
        let mut s = LossScaler::default();
        for _ in 0..4000 {
            s.update(true);
        }
        assert_eq!(s.scale(), 65536.0 * 4.0);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale(), 65536.0);
    }

    #[test]
    fn unscaling_divides_and_detects_inf_and_nan() {
        let s = LossScaler::new(8.0, 2.0, 0.5, 10);
        let dev = Device::Cpu;
        let loss = Tensor::new(1.5f32, &dev).unwrap();
        assert_eq!(s.scale_loss(&loss).unwrap().to_scalar::<f32>().unwrap(), 12.0);
        let mut grads = vec![Some(Tensor::new(&[8f32, -16.0], &dev).unwrap()), None];
        assert!(s.unscale(&mut grads).unwrap());
        assert_eq!(grads[0].as_ref().unwrap().to_vec1::<f32>().unwrap(), [1.0, -2.0]);
        for bad in [f32::INFINITY, f32::NAN] {
            let mut grads = vec![Some(Tensor::new(&[1f32], &dev).unwrap()), Some(Tensor::new(&[bad], &dev).unwrap())];
            assert!(!s.unscale(&mut grads).unwrap());
        }
    }
}
