//! Building blocks shared by every network: LoRA-aware linear layers whose frozen weights get no
//! gradient, layer norm (re-exported from `fused::norm`) and a softmax from differentiable
//! primitives (candle's fused `layer_norm`/`softmax_last_dim` have no backward and silently cut
//! gradients; see shared/reference/candle-notes.md).

use super::{fused, recompute};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// One low-rank adapter on a linear layer: `y += scale · (x·Aᵀ)·Bᵀ`, A: [r, in], B: [out, r].
/// With a `magnitude` m [out] it is DoRA as PEFT defines it (`tuners/lora/dora.py`,
/// Liu et al. 2024): `y = m/‖W + scale·B·A‖ ⊙ (x·Wᵀ + scale·(x·Aᵀ)·Bᵀ) + bias`, the norm per output
/// row. Unlike PEFT, the norm is not detached, so m, A and B get their exact gradients (same
/// forward; PEFT detaches it to save memory).
#[derive(Clone, Debug)]
pub struct Adapter {
    pub down: Tensor,
    pub up: Tensor,
    pub scale: f64,
    pub magnitude: Option<Tensor>,
}

/// How a [`WeightUpdate`] rescales the updated weight (DoRA, Liu et al. 2024, "Weight-Decomposed
/// Low-Rank Adaptation").
#[derive(Clone, Debug)]
pub enum Decompose {
    /// PEFT's layout (`lora_magnitude_vector`, [out]; peft `tuners/lora/dora.py`):
    /// `W' = m ⊙ V / ‖V‖` with `V = W + scale·ΔW` and the norm of each output row (over all input
    /// and kernel dimensions), no epsilon. The user's LoRA scale is inside `scale`.
    Magnitude(Tensor),
    /// LyCORIS' and kohya's layout (`dora_scale`; lycoris `functional/general.py`
    /// `weight_decompose`): `V = W + scale·ΔW` at full strength, `s = m / (‖V‖ + ε)` with ε the f32
    /// machine epsilon and the norm per output row (`on_out`, m shaped [out, 1, …]) or per input
    /// column (m shaped [1, in, …]); then the user's `multiplier` blends: `W' = V · (mult·(s − 1) + 1)`.
    Scale { magnitude: Tensor, on_out: bool, multiplier: f64 },
}

/// A full-weight update of a linear or conv layer: `W' = W + scale·delta`, optionally followed by
/// a DoRA rescale. This is how LoCon (conv LoRA), LoHa, LoKr and DoRA files act: their ΔW is built
/// once (see `diffusion::lora`) and added to the weight on each forward (live) or once (fused).
#[derive(Clone, Debug)]
pub struct WeightUpdate {
    /// ΔW, f32, the weight's shape ([out, in] or [out, in, k, k]).
    pub delta: Tensor,
    pub scale: f64,
    pub decompose: Option<Decompose>,
}

impl WeightUpdate {
    /// The updated weight, computed in f32 and returned in `w`'s dtype.
    pub fn merged(&self, w: &Tensor) -> Result<Tensor> {
        // f32 for weights stored in f32/f16/bf16; f64 stays f64 (the gradient tests).
        let ct = if w.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        let w32 = w.to_dtype(ct)?;
        let delta = self.delta.to_device(w.device())?.to_dtype(ct)?;
        let v = (&w32 + delta.affine(self.scale, 0.0)?)?;
        let out = match &self.decompose {
            None => v,
            Some(Decompose::Magnitude(m)) => {
                let out_dim = v.dim(0)?;
                let norm = v.reshape((out_dim, ()))?.sqr()?.sum_keepdim(1)?.sqrt()?;
                let m = m.to_device(w.device())?.to_dtype(ct)?.reshape((out_dim, 1))?;
                let s = (m / norm)?;
                let shape: Vec<usize> = std::iter::once(out_dim).chain(std::iter::repeat_n(1, v.rank() - 1)).collect();
                v.broadcast_mul(&s.reshape(shape)?)?
            }
            Some(Decompose::Scale { magnitude, on_out, multiplier }) => {
                let dims = v.dims().to_vec();
                let norm = if *on_out {
                    let n = v.reshape((dims[0], ()))?.sqr()?.sum_keepdim(1)?.sqrt()?;
                    let shape: Vec<usize> = std::iter::once(dims[0]).chain(std::iter::repeat_n(1, dims.len() - 1)).collect();
                    n.reshape(shape)?
                } else {
                    let mut shape = vec![1; dims.len()];
                    shape[1] = dims[1];
                    let mut n = v.sqr()?.sum_keepdim(0)?;
                    for d in 2..dims.len() {
                        n = n.sum_keepdim(d)?;
                    }
                    n.sqrt()?.reshape(shape)?
                };
                let norm = (norm + f32::EPSILON as f64)?;
                let m = magnitude.to_device(w.device())?.to_dtype(ct)?.reshape(norm.dims())?;
                let s = (m / norm)?;
                let s = if *multiplier != 1.0 { s.affine(*multiplier, 1.0 - *multiplier)? } else { s };
                v.broadcast_mul(&s)?
            }
        };
        out.to_dtype(w.dtype())
    }
}

#[derive(Default, Debug)]
struct AdapterState {
    /// Module path → (out, in) features of its weight.
    known: BTreeMap<String, (usize, usize)>,
    live: BTreeMap<String, Vec<Adapter>>,
    /// Module path → its loaded weight: the base for fusing, and the device adapters move to.
    weights: BTreeMap<String, Tensor>,
    /// Module path → `W0 + Σ scale·B·A`, used in place of the loaded weight.
    fused: BTreeMap<String, Tensor>,
    /// Module path → full-weight updates applied on each forward (LoCon, LoHa, LoKr, DoRA).
    updates: BTreeMap<String, Vec<WeightUpdate>>,
}

/// The adapters of one network, keyed by diffusers module path (`down_blocks.0…attn1.to_q`).
/// Every `Linear` built with the same handle consults it on each forward, so LoRAs can be
/// attached live (scaled, replaced or trained without rebuilding the network) or fused into the
/// weights like diffusers' `fuse_lora` (no extra work per forward; rounded to the weight dtype).
#[derive(Clone, Default, Debug)]
pub struct Adapters(Arc<RwLock<AdapterState>>);

impl Adapters {
    pub fn new() -> Self {
        Self::default()
    }

    fn register(&self, name: &str, out_in: (usize, usize)) {
        self.0.write().expect("adapter lock").known.insert(name.to_string(), out_in);
    }

    /// Module path → (out, in) features of every linear that can take an adapter.
    pub fn shapes(&self) -> BTreeMap<String, (usize, usize)> {
        self.0.read().expect("adapter lock").known.clone()
    }

    #[cfg(test)]
    pub(crate) fn register_for_tests(&self, name: &str, out_in: (usize, usize)) {
        self.register(name, out_in)
    }

    fn register_weight(&self, name: &str, weight: &Tensor) {
        self.0.write().expect("adapter lock").weights.insert(name.to_string(), weight.clone());
    }

    /// Registers a conv layer (weight [out, in, k, k]): it takes [`WeightUpdate`]s, not
    /// trainable low-rank `Adapter`s, so it stays out of `shapes`/`known_modules`.
    pub(crate) fn register_conv(&self, name: &str, weight: &Tensor) {
        self.register_weight(name, weight);
    }

    /// Module path → weight shape of every layer that can take a [`WeightUpdate`] (linears and
    /// registered convs).
    pub fn weight_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let s = self.0.read().expect("adapter lock");
        let mut out: BTreeMap<String, Vec<usize>> = s.known.iter().map(|(k, &(o, i))| (k.clone(), vec![o, i])).collect();
        out.extend(s.weights.iter().map(|(k, w)| (k.clone(), w.dims().to_vec())));
        out
    }

    /// Adds a full-weight update applied on each forward; the error names the module and what
    /// is wrong.
    pub fn attach_update(&self, module: &str, update: WeightUpdate) -> std::result::Result<(), String> {
        let mut s = self.0.write().expect("adapter lock");
        s.check_update(module, &update)?;
        s.updates.entry(module.to_string()).or_default().push(update);
        Ok(())
    }

    /// Merges a full-weight update into the module's weight once (diffusers' `fuse_lora`;
    /// rounded to the weight's dtype). Fusing again applies on top.
    pub fn fuse_update(&self, module: &str, update: WeightUpdate) -> std::result::Result<(), String> {
        let mut s = self.0.write().expect("adapter lock");
        s.check_update(module, &update)?;
        let base = s.fused.get(module).or_else(|| s.weights.get(module)).ok_or_else(|| format!("{module}: no loaded weight to fuse into"))?;
        let fused = update.merged(base).map_err(|e| format!("{module}: cannot fuse the update: {e}"))?;
        s.fused.insert(module.to_string(), fused);
        Ok(())
    }

    /// The weight a layer computes with: the fused weight or `w`, with live updates applied.
    pub(crate) fn current_weight(&self, module: &str, w: &Tensor) -> Result<Tensor> {
        let (fused, _, updates) = self.get(module);
        let mut w = fused.unwrap_or_else(|| w.clone());
        for u in updates.unwrap_or_default() {
            w = u.merged(&w)?;
        }
        Ok(w)
    }

    /// The loaded weight of a module (linear [out, in] or conv [out, in, k, k]).
    pub fn weight(&self, module: &str) -> Option<Tensor> {
        self.0.read().expect("adapter lock").weights.get(module).cloned()
    }

    /// Module paths that can take an adapter.
    pub fn known_modules(&self) -> BTreeSet<String> {
        self.0.read().expect("adapter lock").known.keys().cloned().collect()
    }

    /// Attaches an adapter; the error names the module and what is wrong with it.
    pub fn attach(&self, module: &str, adapter: Adapter) -> std::result::Result<(), String> {
        let mut s = self.0.write().expect("adapter lock");
        let adapter = s.fitting(module, adapter)?;
        s.live.entry(module.to_string()).or_default().push(adapter);
        Ok(())
    }

    /// Adds `scale·B·A` to the module's weight, as diffusers' `fuse_lora`: the update is computed
    /// in f32 and the sum rounded to the weight's dtype. Fusing again adds on top.
    pub fn fuse(&self, module: &str, adapter: Adapter) -> std::result::Result<(), String> {
        let mut s = self.0.write().expect("adapter lock");
        let a = s.fitting(module, adapter)?;
        let base = s.fused.get(module).or_else(|| s.weights.get(module)).ok_or_else(|| format!("{module}: no loaded weight to fuse into"))?;
        let fused = (|| match &a.magnitude {
            Some(m) => WeightUpdate { delta: a.up.matmul(&a.down)?, scale: a.scale, decompose: Some(Decompose::Magnitude(m.clone())) }.merged(base),
            None => {
                // [out, r(,1,1)]·[r, in(·k·k)], in the weight's shape (linear or conv).
                let delta = a.up.flatten_from(1)?.matmul(&a.down.flatten_from(1)?)?.reshape(base.dims())?.affine(a.scale, 0.0)?;
                (base.to_dtype(DType::F32)? + delta)?.to_dtype(base.dtype())
            }
        })()
        .map_err(|e| format!("{module}: cannot fuse the LoRA: {e}"))?;
        s.fused.insert(module.to_string(), fused);
        Ok(())
    }

    /// Removes live adapters and updates (fused ones stay; see `unfuse`).
    pub fn clear(&self) {
        let mut s = self.0.write().expect("adapter lock");
        s.live.clear();
        s.updates.clear();
    }

    /// Restores the loaded weights of every fused module.
    pub fn unfuse(&self) {
        self.0.write().expect("adapter lock").fused.clear();
    }

    /// How many modules have fused weights.
    pub fn fused_len(&self) -> usize {
        self.0.read().expect("adapter lock").fused.len()
    }

    /// How many live adapters and updates are attached.
    pub fn len(&self) -> usize {
        let s = self.0.read().expect("adapter lock");
        s.live.values().map(Vec::len).sum::<usize>() + s.updates.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (fused weight, live adapters, live updates) of a module.
    pub(crate) fn get(&self, module: &str) -> (Option<Tensor>, Option<Vec<Adapter>>, Option<Vec<WeightUpdate>>) {
        let s = self.0.read().expect("adapter lock");
        if s.live.is_empty() && s.fused.is_empty() && s.updates.is_empty() {
            return (None, None, None);
        }
        (s.fused.get(module).cloned(), s.live.get(module).cloned(), s.updates.get(module).cloned())
    }
}

impl AdapterState {
    /// A conv LoRA (LoCon): down [r, in, k, k] (the layer's kernel, stride and padding), up
    /// [out, r, 1, 1]; no DoRA magnitude.
    fn fitting_conv(&self, module: &str, adapter: Adapter) -> std::result::Result<Adapter, String> {
        let Some(w) = self.weights.get(module).filter(|w| w.rank() == 4) else {
            return Err(format!("{module}: no such linear or conv layer in this network"));
        };
        let &[out_dim, in_dim, k, _] = w.dims() else { unreachable!("rank checked") };
        let (d, u) = (adapter.down.dims(), adapter.up.dims());
        if adapter.magnitude.is_some() || d.len() != 4 || u != [out_dim, d[0], 1, 1] || d[1..] != [in_dim, k, k] {
            return Err(format!(
                "{module}: conv LoRA shapes down {d:?} / up {u:?} do not fit a {in_dim}→{out_dim} {k}×{k} conv (expected [r, {in_dim}, {k}, {k}] and [{out_dim}, r, 1, 1], no DoRA)"
            ));
        }
        let dev = w.device();
        let moved = |t: &Tensor| t.to_device(dev).map_err(|e| format!("{module}: {e}"));
        Ok(Adapter { down: moved(&adapter.down)?, up: moved(&adapter.up)?, scale: adapter.scale, magnitude: None })
    }

    fn check_update(&self, module: &str, u: &WeightUpdate) -> std::result::Result<(), String> {
        let Some(w) = self.weights.get(module) else {
            return Err(format!("{module}: no such layer in this network"));
        };
        if u.delta.dims() != w.dims() {
            return Err(format!("{module}: the update's ΔW has shape {:?} but the layer's weight is {:?}", u.delta.dims(), w.dims()));
        }
        Ok(())
    }

    /// Checks an adapter's shapes against the module and moves it to the module's device.
    fn fitting(&self, module: &str, adapter: Adapter) -> std::result::Result<Adapter, String> {
        let Some(&(out_dim, in_dim)) = self.known.get(module) else {
            return self.fitting_conv(module, adapter);
        };
        let (r, a_in) = adapter.down.dims2().map_err(|e| format!("{module}: {e}"))?;
        if let Some(m) = &adapter.magnitude {
            if m.dims() != [out_dim] {
                return Err(format!("{module}: DoRA magnitude {:?} does not fit a layer with {out_dim} outputs", m.dims()));
            }
        }
        let (b_out, r2) = adapter.up.dims2().map_err(|e| format!("{module}: {e}"))?;
        if a_in != in_dim || b_out != out_dim || r != r2 {
            return Err(format!(
                "{module}: LoRA shapes down {:?} / up {:?} do not fit a {in_dim}→{out_dim} layer (expected [r, {in_dim}] and [{out_dim}, r])",
                adapter.down.dims(),
                adapter.up.dims()
            ));
        }
        match self.weights.get(module).map(|w| w.device()) {
            Some(dev) if !dev.same_device(adapter.down.device()) => {
                let moved = |t: &Tensor| t.to_device(dev).map_err(|e| format!("{module}: {e}"));
                let magnitude = adapter.magnitude.as_ref().map(moved).transpose()?;
                Ok(Adapter { down: moved(&adapter.down)?, up: moved(&adapter.up)?, scale: adapter.scale, magnitude })
            }
            _ => Ok(adapter),
        }
    }
}

/// A linear layer that applies whatever adapters are attached to its module path.
#[derive(Clone, Debug)]
pub struct Linear {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
    adapters: Adapters,
}

impl Linear {
    pub fn new(vb: VarBuilder, adapters: &Adapters, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
        let name = vb.prefix();
        adapters.register(&name, (out_dim, in_dim));
        adapters.register_weight(&name, &weight);
        Ok(Linear { name, weight, bias, adapters: adapters.clone() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// Half-precision inputs are computed in f32; f32 and f64 keep their own precision.
fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    // x: [..., in], w: [out, in] → [..., out]
    let w = w.to_dtype(x.dtype())?;
    match x.dims() {
        [b, n, k] => x.reshape((b * n, *k))?.matmul(&w.t()?)?.reshape((*b, *n, ())),
        _ => x.broadcast_matmul(&w.t()?),
    }
}

/// `x·Wᵀ` for a frozen `W` whose backward only gives `x` its gradient. candle's matmul backward
/// always computes both sides, so a plain matmul would spend a full-size dW (a matmul as large
/// as the forward one, and the memory to hold it) on every frozen layer downstream of a LoRA.
fn frozen_matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.track_op() {
        return matmul_t(x, w);
    }
    let y = matmul_t(&x.detach(), w)?;
    let w = w.clone();
    fused::record("frozen-linear", &[x], y, move |g| Ok(vec![Some(grad_input(g, &w)?)]))
}

/// `g·W`: the input gradient of `x·Wᵀ` (g: [..., out], W: [out, in]).
fn grad_input(g: &Tensor, w: &Tensor) -> Result<Tensor> {
    let w = w.to_dtype(g.dtype())?;
    match g.dims() {
        [b, n, k] => g.reshape((b * n, *k))?.matmul(&w)?.reshape((*b, *n, ())),
        _ => g.broadcast_matmul(&w),
    }
}

/// `x·Wᵀ + bias + u·Bᵀ` as one op for a LoRA linear (u = scale·x·Aᵀ, [..., r], already tracked
/// through x and A): only x, the small u and B are kept for backward, where a composed version
/// would keep the frozen product and the full-size update as well. Backward: g·W for x (the path
/// through u reaches x by u's own graph), g·B for u, gᵀ·u for B. The update is computed in f32
/// (LoRA factors stay f32) and added in the output dtype.
fn lora_linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, u: &Tensor, up: &Tensor) -> Result<Tensor> {
    let mut y = matmul_t(&x.detach(), w)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(y.dtype())?)?;
    }
    let y = (&y + matmul_t(&u.detach(), &up.detach())?.to_dtype(y.dtype())?)?;
    let (w, u_saved, up_saved) = (w.clone(), u.detach(), up.detach());
    fused::record("lora-linear", &[x, u, up], y, move |g| {
        let gf = g.to_dtype(u_saved.dtype())?;
        let gx = grad_input(g, &w)?;
        let gu = grad_input(&gf, &up_saved)?;
        let (out_dim, r) = (up_saved.dim(0)?, up_saved.dim(1)?);
        let gup = gf.reshape(((), out_dim))?.t()?.matmul(&u_saved.reshape(((), r))?)?.to_dtype(up_saved.dtype())?;
        Ok(vec![Some(gx), Some(gu), Some(gup)])
    })
}

/// DoRA on a linear (see [`Adapter`]), from differentiable ops so m, A and B get gradients; the
/// frozen weight gets none. Computed in f32 (f64 stays f64), returned in `x`'s dtype.
fn dora_linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, a: &Adapter, m: &Tensor) -> Result<Tensor> {
    let ct = compute_dtype(x.dtype());
    let xf = x.to_dtype(ct)?;
    let (down, up) = (recompute::factor(&a.down), recompute::factor(&a.up));
    let base = frozen_matmul_t(&xf, &w.to_dtype(ct)?)?;
    let lora = matmul_t(&matmul_t(&xf, &down)?, &up)?.affine(a.scale, 0.0)?;
    let v = (w.to_dtype(ct)?.detach() + up.matmul(&down)?.affine(a.scale, 0.0)?)?;
    let norm = v.sqr()?.sum(1)?.sqrt()?;
    let k = (recompute::factor(m).to_dtype(ct)? / norm)?;
    let mut y = (base + lora)?.broadcast_mul(&k)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(ct)?)?;
    }
    y.to_dtype(x.dtype())
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (fused, live, updates) = self.adapters.get(&self.name);
        let mut w = fused.unwrap_or_else(|| self.weight.clone());
        for u in updates.unwrap_or_default() {
            w = u.merged(&w)?;
        }
        let w = &w;
        let live = live.unwrap_or_default();
        if let [a @ Adapter { magnitude: Some(m), .. }] = live.as_slice() {
            return dora_linear(x, w, self.bias.as_ref(), a, m);
        }
        if let [a] = live.as_slice() {
            // LoRA factors are kept in f32 (or f64); the low-rank product is computed there.
            let xf = x.to_dtype(compute_dtype(x.dtype()))?;
            let (down, up) = (recompute::factor(&a.down), recompute::factor(&a.up));
            let u = matmul_t(&xf, &down)?.affine(a.scale, 0.0)?;
            return lora_linear(x, w, self.bias.as_ref(), &u, &up);
        }
        let mut y = frozen_matmul_t(x, w)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.to_dtype(y.dtype())?)?;
        }
        for a in live {
            if a.magnitude.is_some() {
                candle_core::bail!("{}: a DoRA adapter cannot share its layer with other adapters", self.name);
            }
            let xf = x.to_dtype(compute_dtype(x.dtype()))?;
            let (down, up) = (recompute::factor(&a.down), recompute::factor(&a.up));
            let delta = matmul_t(&matmul_t(&xf, &down)?, &up)?.affine(a.scale, 0.0)?;
            let dtype = y.dtype();
            y = (y + delta.to_dtype(dtype)?)?;
        }
        Ok(y)
    }
}

/// Layer norm over the last dimension (one op keeping x̂ and 1/σ; see `fused::norm`).
pub use super::fused::norm::LayerNorm;

/// Softmax over the last dimension from differentiable primitives (max-subtracted).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// Relative error ‖a − b‖ / ‖b‖, the parity measure used in tests.
pub fn rel_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let den = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(num / den.max(1e-30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_weights_get_no_gradient_and_inputs_the_right_one() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 6), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, (2, 5, 4), &dev).unwrap();
        let ours = frozen_matmul_t(x.as_tensor(), &w).unwrap();
        let plain = matmul_t(x.as_tensor(), &w).unwrap();
        assert!(rel_error(&ours, &plain).unwrap() < 1e-7);
        let go = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(rel_error(go.get(x.as_tensor()).unwrap(), gp.get(x.as_tensor()).unwrap()).unwrap() < 1e-6);
        let weight_shaped =
            |gs: &candle_core::backprop::GradStore| gs.get_ids().filter(|id| matches!(gs.get_id(**id).unwrap().dims(), [4, 6] | [6, 4])).count();
        assert!(weight_shaped(&gp) > 0, "candle's own matmul computes a dW for the frozen weight");
        assert_eq!(weight_shaped(&go), 0, "no gradient is computed for the frozen weight");
        // A trainable weight keeps its gradient.
        let wv = Var::from_tensor(&w).unwrap();
        let gw = (frozen_matmul_t(x.as_tensor(), wv.as_tensor()).unwrap() * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(gw.get(wv.as_tensor()).is_some());
    }

    #[test]
    fn layer_norm_matches_candle_and_has_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
        let ln = LayerNorm::new(w.clone(), b.clone(), 1e-5);
        let ours = ln.forward(x.as_tensor()).unwrap();
        let fused = candle_nn::ops::layer_norm(x.as_tensor(), &w, &b, 1e-5).unwrap();
        assert!(rel_error(&ours, &fused).unwrap() < 1e-5);
        let grads = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("gradient reaches the input");
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }

    #[test]
    fn lora_linear_adds_scaled_low_rank_update() {
        let dev = Device::Cpu;
        let mut map = std::collections::HashMap::new();
        map.insert("proj.weight".to_string(), Tensor::randn(0f32, 1.0, (6, 4), &dev).unwrap());
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let adapters = Adapters::new();
        let lin = Linear::new(vb.pp("proj"), &adapters, 4, 6, false).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
        let base = lin.forward(&x).unwrap();
        let down = Tensor::randn(0f32, 1.0, (2, 4), &dev).unwrap();
        let up = Tensor::randn(0f32, 1.0, (6, 2), &dev).unwrap();
        adapters.attach("proj", Adapter { down: down.clone(), up: up.clone(), scale: 0.5, magnitude: None }).unwrap();
        assert!(adapters.attach("nope", Adapter { down: down.clone(), up: up.clone(), scale: 1.0, magnitude: None }).is_err());
        let wrong = Adapter { down: down.t().unwrap(), up: up.clone(), scale: 1.0, magnitude: None };
        assert!(adapters.attach("proj", wrong).unwrap_err().contains("do not fit"));
        let with = lin.forward(&x).unwrap();
        let merged_w = (lin.weight() + up.matmul(&adapters.get("proj").1.unwrap()[0].down).unwrap().affine(0.5, 0.0).unwrap()).unwrap();
        let expected = x.matmul(&merged_w.t().unwrap()).unwrap();
        assert!(rel_error(&with, &expected).unwrap() < 1e-5);
        assert!(rel_error(&with, &base).unwrap() > 1e-3);

        adapters.clear();
        adapters.fuse("proj", Adapter { down, up, scale: 0.5, magnitude: None }).unwrap();
        assert_eq!((adapters.len(), adapters.fused_len()), (0, 1));
        let fused = lin.forward(&x).unwrap();
        assert!(rel_error(&fused, &expected).unwrap() < 1e-5);
        adapters.unfuse();
        assert!(rel_error(&lin.forward(&x).unwrap(), &base).unwrap() < 1e-7);
    }

    /// DoRA (PEFT's definition) on a linear: at m = ‖W‖ and B = 0 it is the base layer; its
    /// output equals the merged weight the loader builds (`WeightUpdate` with `Magnitude`); and
    /// A, B and m get the gradients finite differences give (f64).
    #[test]
    fn dora_linear_matches_its_merged_weight_and_finite_differences() {
        let dev = Device::Cpu;
        let dt = DType::F64;
        let w = Tensor::randn(0f64, 1.0, (5, 4), &dev).unwrap();
        let mut map = std::collections::HashMap::new();
        map.insert("proj.weight".to_string(), w.clone());
        map.insert("proj.bias".to_string(), Tensor::randn(0f64, 1.0, 5, &dev).unwrap());
        let vb = VarBuilder::from_tensors(map, dt, &dev);
        let adapters = Adapters::new();
        let lin = Linear::new(vb.pp("proj"), &adapters, 4, 5, true).unwrap();
        let x = Tensor::randn(0f64, 1.0, (3, 4), &dev).unwrap();
        let base = lin.forward(&x).unwrap();
        let down = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 4), &dev).unwrap()).unwrap();
        let up = Var::from_tensor(&Tensor::zeros((5, 2), dt, &dev).unwrap()).unwrap();
        let m = Var::from_tensor(&w.sqr().unwrap().sum(1).unwrap().sqrt().unwrap()).unwrap();
        let attach = || {
            adapters.clear();
            let a = Adapter { down: down.as_tensor().clone(), up: up.as_tensor().clone(), scale: 0.7, magnitude: Some(m.as_tensor().clone()) };
            adapters.attach("proj", a).unwrap();
        };
        attach();
        assert!(rel_error(&lin.forward(&x).unwrap(), &base).unwrap() < 1e-12, "m = ‖W‖, B = 0 is the base layer");
        up.set(&Tensor::randn(0f64, 1.0, (5, 2), &dev).unwrap()).unwrap();
        m.set(&(m.as_tensor() * 1.3).unwrap()).unwrap();
        let y = lin.forward(&x).unwrap();
        let merged = WeightUpdate { delta: up.matmul(&down).unwrap(), scale: 0.7, decompose: Some(Decompose::Magnitude(m.as_tensor().clone())) }
            .merged(&w)
            .unwrap();
        let want = x.matmul(&merged.t().unwrap()).unwrap().broadcast_add(&vb.pp("proj").get(5, "bias").unwrap()).unwrap();
        assert!(rel_error(&y, &want).unwrap() < 1e-12);
        let g = Tensor::randn(0f64, 1.0, (3, 5), &dev).unwrap();
        let loss = |lin: &Linear| (lin.forward(&x).unwrap() * &g).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let grads = (lin.forward(&x).unwrap() * &g).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&down, &up, &m] {
            let analytic = grads.get(v.as_tensor()).expect("gradient reaches the factor").flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let orig = v.as_tensor().copy().unwrap();
            let flat = orig.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in 0..flat.len() {
                let eps = 1e-6;
                let mut plus = flat.clone();
                plus[i] += eps;
                v.set(&Tensor::from_vec(plus, orig.dims(), &dev).unwrap()).unwrap();
                attach();
                let lp = loss(&lin);
                let mut minus = flat.clone();
                minus[i] -= eps;
                v.set(&Tensor::from_vec(minus, orig.dims(), &dev).unwrap()).unwrap();
                attach();
                let lm = loss(&lin);
                v.set(&orig).unwrap();
                attach();
                let fd = (lp - lm) / (2.0 * eps);
                assert!((fd - analytic[i]).abs() < 1e-6 * (1.0 + fd.abs()), "entry {i}: finite difference {fd} vs gradient {}", analytic[i]);
            }
        }
    }
}
