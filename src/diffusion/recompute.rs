//! Gradient checkpointing by segment recompute. candle keeps every activation of a forward alive
//! until `backward()` ends (the graph holds each op's inputs). A checkpointed segment instead runs
//! once without a graph, so its internals are freed at once, and is recorded as a single op whose
//! backward runs the segment again, this time with a graph, and backpropagates the incoming
//! gradient through it.
//!
//! The LoRA factors a segment uses reach it through the adapter registry, not as arguments, so
//! the untracked run collects them (see [`factor`]) and the op takes them as one packed argument:
//! candle then routes their gradients back to the `Var`s itself, and `loss.backward()` returns
//! the same `GradStore` with or without checkpointing.

use super::fused;
use candle_core::{bail, DType, Result, Tensor, Var};
use std::cell::RefCell;

thread_local! {
    /// Set while a segment runs untracked: the tracked LoRA factors it used, in first-use order.
    static UNTRACKED: RefCell<Option<Vec<Tensor>>> = const { RefCell::new(None) };
}

/// What a layer should compute with for an adapter factor: the factor itself, or, inside an
/// untracked segment run, a detached view of it (the factor is recorded as the segment's parameter).
pub fn factor(t: &Tensor) -> Tensor {
    UNTRACKED.with(|u| match u.borrow_mut().as_mut() {
        Some(used) if t.track_op() => {
            if !used.iter().any(|p| p.id() == t.id()) {
                used.push(t.clone());
            }
            t.detach()
        }
        _ => t.clone(),
    })
}

/// `f(a, b)` with only `a`, `b` and the output kept for backward; the backward recomputes `f`.
/// `f` may use LoRA factors through the adapter registry, but no other tracked tensor.
/// Inside another segment's run, or when nothing in it needs a gradient, it is just `f(a, b)`.
pub fn checkpointed<F>(a: &Tensor, b: &Tensor, f: F) -> Result<Tensor>
where
    F: Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    if UNTRACKED.with(|u| u.borrow().is_some()) {
        return f(a, b);
    }
    UNTRACKED.with(|u| *u.borrow_mut() = Some(Vec::new()));
    let (ad, bd) = (a.detach(), b.detach());
    let out = f(&ad, &bd);
    let params = UNTRACKED.with(|u| u.borrow_mut().take()).unwrap_or_default();
    let out = out?;
    if out.track_op() {
        bail!("gradient checkpointing: a segment depends on a tracked tensor that is neither its input nor a LoRA factor");
    }
    // The factors travel as one packed argument, so candle routes their gradients to the Vars.
    let packed = if params.is_empty() {
        Tensor::zeros(0, DType::F32, a.device())?
    } else {
        Tensor::cat(&params.iter().map(|p| p.to_dtype(DType::F32)?.flatten_all()).collect::<Result<Vec<_>>>()?, 0)?
    };
    let (a_tracked, b_tracked) = (a.track_op(), b.track_op());
    // Backward: run the segment again with a graph (its tracked inputs as fresh leaves) and
    // backpropagate the incoming gradient through it.
    fused::record("checkpointed-segment", &[a, b, &packed], out, move |grad| {
        let leaf = |t: &Tensor, tracked: bool| -> Result<Option<Var>> {
            if tracked {
                Ok(Some(Var::from_tensor(t)?))
            } else {
                Ok(None)
            }
        };
        let (va, vb) = (leaf(&ad, a_tracked)?, leaf(&bd, b_tracked)?);
        let ia = va.as_ref().map(|v| v.as_tensor().clone()).unwrap_or_else(|| ad.clone());
        let ib = vb.as_ref().map(|v| v.as_tensor().clone()).unwrap_or_else(|| bd.clone());
        let out = f(&ia, &ib)?;
        // d/d(out) of Σ out·grad is `grad`, so this backpropagates exactly the incoming gradient.
        let grads = (out * grad)?.sum_all()?.backward()?;
        let of = |v: &Option<Var>| v.as_ref().and_then(|v| grads.get(v.as_tensor()).cloned());
        let packed = if params.is_empty() {
            None
        } else {
            let parts = params
                .iter()
                .map(|p| match grads.get(p) {
                    Some(g) => g.to_dtype(DType::F32)?.flatten_all(),
                    None => Tensor::zeros(p.elem_count(), DType::F32, p.device()),
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&parts, 0)?)
        };
        Ok(vec![of(&va), of(&vb), packed])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::rel_error;
    use candle_core::Device;

    /// A segment with a "LoRA factor" reached through `factor`, as the adapter registry does.
    fn segment(w: Tensor) -> impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + Clone + 'static {
        move |x: &Tensor, t: &Tensor| {
            let w = factor(&w);
            let h = x.broadcast_matmul(&w)?.tanh()?;
            (h.broadcast_add(t)?.sqr()? * 0.5)?.exp()
        }
    }

    #[test]
    fn recomputed_gradients_equal_dense_ones_for_inputs_and_factors() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (2, 3, 4), &dev).unwrap() * 0.3).unwrap()).unwrap();
        let t = Var::from_tensor(&(Tensor::randn(0f32, 1.0, 5, &dev).unwrap() * 0.3).unwrap()).unwrap();
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap() * 0.3).unwrap()).unwrap();
        let f = segment(w.as_tensor().clone());
        // Something upstream and downstream of the segment, so gradients flow through the op.
        let pre = |x: &Tensor| (x * 2.0).unwrap().sin().unwrap();
        let dense = f(&pre(x.as_tensor()), t.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap();
        let ckpt = checkpointed(&pre(x.as_tensor()), t.as_tensor(), f.clone()).unwrap().sqr().unwrap().sum_all().unwrap();
        assert!(rel_error(&ckpt, &dense).unwrap() < 1e-7);
        let gd = dense.backward().unwrap();
        let gc = ckpt.backward().unwrap();
        for v in [&x, &t, &w] {
            let (d, c) = (gd.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).expect("checkpointed gradient"));
            assert!(rel_error(c, d).unwrap() < 1e-6, "{:?}", v.dims());
        }
    }

    #[test]
    fn an_untracked_first_input_still_trains_the_factors() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (2, 3, 4), &dev).unwrap() * 0.3).unwrap();
        let t = Var::from_tensor(&(Tensor::randn(0f32, 1.0, 5, &dev).unwrap() * 0.3).unwrap()).unwrap();
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap() * 0.3).unwrap()).unwrap();
        let f = segment(w.as_tensor().clone());
        let tt = (t.as_tensor() * 3.0).unwrap();
        let dense = f(&x, &tt).unwrap().sqr().unwrap().sum_all().unwrap();
        let ckpt = checkpointed(&x, &tt, f.clone()).unwrap().sqr().unwrap().sum_all().unwrap();
        let gd = dense.backward().unwrap();
        let gc = ckpt.backward().unwrap();
        for v in [&t, &w] {
            let (d, c) = (gd.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).expect("checkpointed gradient"));
            assert!(rel_error(c, d).unwrap() < 1e-6, "{:?}", v.dims());
        }
    }

    #[test]
    fn untracked_segments_are_plain_calls() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 4), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap();
        let t = Tensor::zeros(5, DType::F32, &dev).unwrap();
        let y = checkpointed(&x, &t, segment(w)).unwrap();
        assert!(!y.track_op());
        // A segment that reaches a tracked tensor some other way is refused, never silently cut.
        let hidden = Var::from_tensor(&Tensor::ones(5, DType::F32, &dev).unwrap()).unwrap();
        let h = hidden.as_tensor().clone();
        let e = checkpointed(&x, &t, move |x, _| x.broadcast_matmul(&Tensor::ones((4, 5), DType::F32, x.device())?)?.broadcast_add(&h)).unwrap_err();
        assert!(e.to_string().contains("neither its input nor a LoRA factor"), "{e}");
    }
}
