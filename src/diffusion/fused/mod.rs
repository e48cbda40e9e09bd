//! Training-time building blocks that keep only what their backward needs and compute no
//! gradient for frozen weights.
//!
//! Why: candle records every op with its inputs and computes a gradient for *every* operand of
//! an op in backward, frozen or not, keeping the ones of untracked operands in the `GradStore`
//! until `backward()` returns. A frozen convolution therefore spends a weight gradient (a third
//! of its backward FLOPs, and the memory of every conv weight at once), a composed group norm
//! keeps six full-size intermediates, and attention keeps four copies of its score matrix.
//! PyTorch marks frozen weights `requires_grad=False` and its fused kernels save only their
//! inputs and per-row statistics. Each op here does the same: the forward runs without a graph
//! (its intermediates are freed at once), and one recorded op carries a hand-written backward
//! that returns gradients for the tracked inputs only.
//!
//! Every op has a device-generic path built from candle tensor ops (used on CUDA) and, where it
//! pays, a CPU kernel; tests check both against candle's own autograd on the composed ops.

pub mod attention;
pub mod conv;
pub mod cpu_attention;
pub mod cpu_conv;
pub mod geglu;
mod matmul;
pub mod norm;
mod vexp;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CudaStorage, Layout, Result, Shape, Storage, Tensor};
use std::sync::{Arc, Mutex};

type Backward = dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync;

/// Records `out` (computed without a graph) as the result of an op on `args`, whose backward maps
/// the output gradient to one optional gradient per arg. Untracked args get none, whatever `bwd`
/// returns; when no arg is tracked `out` is returned as it is. `bwd` must not capture tracked
/// tensors (it runs on detached values).
pub fn record<F>(name: &'static str, args: &[&Tensor], out: Tensor, bwd: F) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    if out.track_op() {
        bail!("fused op: the output was computed with a graph");
    }
    if !args.iter().any(|a| a.track_op()) {
        return Ok(out);
    }
    // The op hands this storage over as its result, so it must hold exactly the output's elements.
    let out = if out.is_contiguous() && out.layout().start_offset() == 0 { out } else { out.copy()? };
    let op = Handover { name, output: Mutex::new(Some(out)), bwd: Box::new(bwd) };
    match args {
        [a] => a.apply_op1_arc(Arc::new(Box::new(op))),
        [a, b] => a.apply_op2_arc(b, Arc::new(Box::new(op))),
        [a, b, c] => a.apply_op3_arc(b, c, Arc::new(Box::new(op))),
        _ => bail!("fused op: 1 to 3 inputs, got {}", args.len()),
    }
}

struct Handover {
    name: &'static str,
    output: Mutex<Option<Tensor>>,
    bwd: Box<Backward>,
}

impl Handover {
    fn take(&self) -> Result<Tensor> {
        match self.output.lock().expect("fused op output lock").take() {
            Some(t) => Ok(t),
            None => bail!("fused op applied twice"),
        }
    }

    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, t.shape().clone())),
            _ => bail!("fused op: the output is not on the CPU"),
        }
    }

    fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, t.shape().clone())),
            _ => bail!("fused op: the output is not on the GPU"),
        }
    }

    fn grads(&self, args: &[&Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut g = (self.bwd)(&grad.detach())?;
        g.resize(args.len(), None);
        Ok(g.into_iter().zip(args).map(|(g, a)| if a.track_op() { g.map(|g| g.detach()) } else { None }).collect())
    }
}

impl candle_core::CustomOp1 for Handover {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.cuda()
    }
    fn bwd(&self, a: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.grads(&[a], grad)?.pop().flatten())
    }
}

impl candle_core::CustomOp2 for Handover {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.cuda()
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(&[a, b], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten()))
    }
}

impl candle_core::CustomOp3 for Handover {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.cuda()
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, c: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(&[a, b, c], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::diffusion::nn::rel_error;
    use candle_core::{Result, Tensor, Var};

    /// Checks a fused op against the same function built from candle's differentiable ops:
    /// outputs and the gradients of every input under a random output weighting.
    pub fn check_against_composed(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        composed: impl Fn(&[Tensor]) -> Result<Tensor>,
        tol: f64,
    ) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let a = fused(&ts).unwrap();
        let b = composed(&ts).unwrap();
        assert_eq!(a.dims(), b.dims());
        let e = rel_error(&a, &b).unwrap();
        assert!(e < tol, "output rel error {e}");
        let w = Tensor::randn(0f32, 1.0, b.shape(), b.device()).unwrap().to_dtype(b.dtype()).unwrap();
        let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v.as_tensor()), gb.get(v.as_tensor()));
            match (x, y) {
                (Some(x), Some(y)) => {
                    let e = rel_error(x, y).unwrap();
                    assert!(e < tol, "input {i}: gradient rel error {e}");
                }
                (None, None) => {}
                (x, y) => panic!("input {i}: fused gradient {} / composed gradient {}", x.is_some(), y.is_some()),
            }
        }
    }
}
