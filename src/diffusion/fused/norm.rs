//! Group norm (optionally followed by SiLU, as every resnet and the UNet's output head use it) and
//! layer norm over the last dimension, each one op that keeps its input and per-group (per-row)
//! mean and 1/σ for backward, like PyTorch's native `native_group_norm` / `native_layer_norm`.
//!
//! Backward of a normalisation over n elements with x̂ = (x − μ)·r, r = 1/√(σ² + ε), given
//! d = ∂L/∂x̂: ∂L/∂x = r·(d − mean(d) − x̂·mean(d·x̂)). With SiLU after the affine z = γ·x̂ + β:
//! ∂L/∂z = g·s(z)·(1 + z·(1 − s(z))), s the logistic function; z is recomputed from x and the
//! statistics rather than kept.

use super::record;
use super::vexp::{silu_affine, silu_affine_grad};
use candle_core::{bail, CpuStorage, DType, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use std::sync::Mutex;

/// `torch.nn.GroupNorm(groups, C, eps, affine=True)` on [B, C, …], with `silu` applied after it
/// when set. γ/β are frozen.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl GroupNorm {
    /// Loads `weight`/`bias` [C] under `vb`; errors if C is not divisible by `groups`.
    pub fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64, silu: bool) -> Result<Self> {
        if !channels.is_multiple_of(groups) {
            bail!("group norm: {channels} channels do not split into {groups} groups");
        }
        Ok(GroupNorm { weight: vb.get(channels, "weight")?, bias: vb.get(channels, "bias")?, groups, eps, silu })
    }

    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64, silu: bool) -> Self {
        GroupNorm { weight, bias, groups, eps, silu }
    }

    /// The same norm with SiLU after it (or not).
    pub fn with_silu(&self, silu: bool) -> Self {
        GroupNorm { silu, ..self.clone() }
    }

    fn cpu_kernel(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && x.dtype() == DType::F32
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        let n = x.elem_count() / (b * self.groups);
        if c != self.weight.dim(0)? {
            bail!("group norm: input has {c} channels, the norm {}", self.weight.dim(0)?);
        }
        let xd = x.detach();
        let (out, mean, rstd) = if self.cpu_kernel(x) {
            let op = GroupNormCpu { p: self.clone(), stats: Mutex::new(None) };
            let out = xd.contiguous()?.apply_op1_no_bwd(&op)?;
            let (mean, rstd) = op.stats.lock().expect("stats lock").take().expect("group norm statistics");
            let dev = x.device();
            (out, Tensor::from_vec(mean, (b, self.groups, 1), dev)?, Tensor::from_vec(rstd, (b, self.groups, 1), dev)?)
        } else {
            let work = if matches!(x.dtype(), DType::F16 | DType::BF16) { DType::F32 } else { x.dtype() };
            let xg = xd.reshape((b, self.groups, n))?.to_dtype(work)?;
            let mean = xg.mean_keepdim(2)?;
            let xc = xg.broadcast_sub(&mean)?;
            let rstd = (xc.sqr()?.mean_keepdim(2)? + self.eps)?.sqrt()?.recip()?;
            let z = self.affine(&xc.broadcast_mul(&rstd)?.reshape(x.shape())?)?;
            let y = if self.silu { z.silu()? } else { z };
            (y.to_dtype(x.dtype())?, mean, rstd)
        };
        if !x.track_op() {
            return Ok(out);
        }
        let (this, x_saved) = (self.clone(), xd);
        record("group-norm", &[x], out, move |g| Ok(vec![Some(this.backward(&x_saved, &mean, &rstd, g)?)]))
    }
}

impl GroupNorm {
    /// γ·x̂ + β with γ, β broadcast over channel dim 1.
    fn affine(&self, xhat: &Tensor) -> Result<Tensor> {
        let mut shape = vec![1usize; xhat.rank()];
        shape[1] = self.weight.dim(0)?;
        let w = self.weight.to_dtype(xhat.dtype())?.reshape(shape.clone())?;
        let b = self.bias.to_dtype(xhat.dtype())?.reshape(shape)?;
        xhat.broadcast_mul(&w)?.broadcast_add(&b)
    }

    fn backward(&self, x: &Tensor, mean: &Tensor, rstd: &Tensor, g: &Tensor) -> Result<Tensor> {
        if self.cpu_kernel(x) && g.dtype() == DType::F32 {
            let op = GroupNormBackwardCpu { p: self.clone(), mean: mean.flatten_all()?.to_vec1()?, rstd: rstd.flatten_all()?.to_vec1()? };
            return x.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &op);
        }
        let (b, n) = (x.dim(0)?, x.elem_count() / (x.dim(0)? * self.groups));
        let work = mean.dtype();
        let group = |t: &Tensor| t.reshape((b, self.groups, n));
        let xhat = group(&x.to_dtype(work)?)?.broadcast_sub(mean)?.broadcast_mul(rstd)?.reshape(x.shape())?;
        let g = g.to_dtype(work)?;
        let dz = if self.silu {
            let z = self.affine(&xhat)?;
            let s = candle_nn::ops::sigmoid(&z)?;
            (g * &s)?.mul(&((z * (1.0 - &s)?)? + 1.0)?)?
        } else {
            g
        };
        let mut shape = vec![1usize; x.rank()];
        shape[1] = self.weight.dim(0)?;
        let d = group(&dz.broadcast_mul(&self.weight.to_dtype(work)?.reshape(shape)?)?)?;
        let xhat = group(&xhat)?;
        let mean_d = d.mean_keepdim(2)?;
        let mean_dx = (&d * &xhat)?.mean_keepdim(2)?;
        let dx = d.broadcast_sub(&mean_d)?.sub(&xhat.broadcast_mul(&mean_dx)?)?.broadcast_mul(rstd)?;
        dx.reshape(x.shape())?.to_dtype(x.dtype())
    }
}

struct GroupNormCpu {
    p: GroupNorm,
    stats: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl candle_core::CustomOp1 for GroupNormCpu {
    fn name(&self) -> &'static str {
        "group-norm-cpu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = &s.as_slice::<f32>()?[l.start_offset()..l.start_offset() + l.shape().elem_count()];
        let dims = l.dims();
        let (c, groups) = (dims[1], self.p.groups);
        let (cpg, hw) = (c / groups, l.shape().elem_count() / (dims[0] * c));
        let n = cpg * hw;
        let gamma: Vec<f32> = self.p.weight.to_dtype(DType::F32)?.to_vec1()?;
        let beta: Vec<f32> = self.p.bias.to_dtype(DType::F32)?.to_vec1()?;
        let mut out = vec![0f32; x.len()];
        let stats: Vec<(f32, f32)> = x
            .par_chunks(n)
            .zip(out.par_chunks_mut(n))
            .enumerate()
            .map(|(row, (xs, ys))| {
                let (mut s1, mut s2) = (0f64, 0f64);
                for &v in xs {
                    s1 += v as f64;
                }
                let mean = s1 / n as f64;
                for &v in xs {
                    let d = v as f64 - mean;
                    s2 += d * d;
                }
                let rstd = 1.0 / (s2 / n as f64 + self.p.eps).sqrt();
                let (mean, rstd) = (mean as f32, rstd as f32);
                let g0 = (row % groups) * cpg;
                for ci in 0..cpg {
                    let (a, b) = (gamma[g0 + ci] * rstd, beta[g0 + ci] - gamma[g0 + ci] * rstd * mean);
                    let (xr, yr) = (&xs[ci * hw..(ci + 1) * hw], &mut ys[ci * hw..(ci + 1) * hw]);
                    if self.p.silu {
                        silu_affine(yr, xr, a, b);
                    } else {
                        for (y, &v) in yr.iter_mut().zip(xr) {
                            *y = a * v + b;
                        }
                    }
                }
                (mean, rstd)
            })
            .collect();
        *self.stats.lock().expect("stats lock") = Some(stats.iter().copied().unzip());
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

struct GroupNormBackwardCpu {
    p: GroupNorm,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

impl candle_core::CustomOp2 for GroupNormBackwardCpu {
    fn name(&self) -> &'static str {
        "group-norm-backward-cpu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let len = xl.shape().elem_count();
        let x = &xs.as_slice::<f32>()?[xl.start_offset()..xl.start_offset() + len];
        let g = &gs.as_slice::<f32>()?[gl.start_offset()..gl.start_offset() + len];
        let dims = xl.dims();
        let (c, groups) = (dims[1], self.p.groups);
        let (cpg, hw) = (c / groups, len / (dims[0] * c));
        let n = cpg * hw;
        let gamma: Vec<f32> = self.p.weight.to_dtype(DType::F32)?.to_vec1()?;
        let beta: Vec<f32> = self.p.bias.to_dtype(DType::F32)?.to_vec1()?;
        let mut dx = vec![0f32; len];
        dx.par_chunks_mut(n).zip(x.par_chunks(n)).zip(g.par_chunks(n)).enumerate().for_each(|(row, ((dxs, xs), gs))| {
            let (mean, rstd) = (self.mean[row], self.rstd[row]);
            let g0 = (row % groups) * cpg;
            // d = ∂L/∂x̂ = γ·∂L/∂z, written into dx first; then the two means.
            let (mut sd, mut sdx) = (0f64, 0f64);
            for ci in 0..cpg {
                let (ga, be) = (gamma[g0 + ci], beta[g0 + ci]);
                let r = ci * hw..(ci + 1) * hw;
                if self.p.silu {
                    // SIMD lanes (vectorised exp), in slices whose f32 sums are then added in f64.
                    for ((d, v), gv) in dxs[r.clone()].chunks_mut(1024).zip(xs[r.clone()].chunks(1024)).zip(gs[r].chunks(1024)) {
                        let (a, b) = silu_affine_grad(d, v, gv, mean, rstd, ga, be);
                        sd += a as f64;
                        sdx += b as f64;
                    }
                    continue;
                }
                for ((d, &v), &gv) in dxs[r.clone()].iter_mut().zip(&xs[r.clone()]).zip(&gs[r]) {
                    let xhat = (v - mean) * rstd;
                    *d = gv * ga;
                    sd += *d as f64;
                    sdx += (*d * xhat) as f64;
                }
            }
            let (md, mdx) = ((sd / n as f64) as f32, (sdx / n as f64) as f32);
            for (d, &v) in dxs.iter_mut().zip(xs) {
                let xhat = (v - mean) * rstd;
                *d = rstd * (*d - md - xhat * mdx);
            }
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// `torch.nn.LayerNorm(dim, eps)` over the last dimension with frozen γ/β.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps })
    }

    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let work = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
        let xd = x.detach().to_dtype(work)?;
        let mean = xd.mean_keepdim(D::Minus1)?;
        let xc = xd.broadcast_sub(&mean)?;
        let rstd = (xc.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        let xhat = xc.broadcast_mul(&rstd)?;
        drop(xc);
        let (w, b) = (self.weight.to_dtype(work)?, self.bias.to_dtype(work)?);
        let out = xhat.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(dtype)?;
        if !x.track_op() {
            return Ok(out);
        }
        // Keeps x̂ (one input-sized tensor, as the input itself would be) and 1/σ per row.
        record("layer-norm", &[x], out, move |g| {
            let d = g.to_dtype(work)?.broadcast_mul(&w)?;
            let mean_d = d.mean_keepdim(D::Minus1)?;
            let mean_dx = (&d * &xhat)?.mean_keepdim(D::Minus1)?;
            let dx = d.broadcast_sub(&mean_d)?.sub(&xhat.broadcast_mul(&mean_dx)?)?.broadcast_mul(&rstd)?;
            Ok(vec![Some(dx.to_dtype(dtype)?)])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_against_composed;
    use super::*;
    use candle_core::Device;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    fn composed_group_norm(x: &Tensor, w: &Tensor, b: &Tensor, groups: usize, silu: bool) -> Result<Tensor> {
        let y = candle_nn::GroupNorm::new(w.clone(), b.clone(), w.dim(0)?, groups, 1e-5)?.forward(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    #[test]
    fn group_norm_matches_candle_with_and_without_silu_on_both_paths() {
        let (w, b) = (randn(&[8]), randn(&[8]));
        for silu in [false, true] {
            let gn = GroupNorm::new(w.clone(), b.clone(), 4, 1e-5, silu);
            let shifted = (randn(&[2, 8, 5, 3]) * 3.0).unwrap().affine(1.0, 2.0).unwrap();
            check_against_composed(std::slice::from_ref(&shifted), |t| gn.forward(&t[0]), |t| composed_group_norm(&t[0], &w, &b, 4, silu), 1e-4);
            // The device-generic path (what CUDA runs), here on f64 on the CPU.
            let gn64 = GroupNorm::new(w.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap(), 4, 1e-5, silu);
            let (w64, b64) = (w.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap());
            check_against_composed(
                &[shifted.to_dtype(DType::F64).unwrap()],
                |t| gn64.forward(&t[0]),
                |t| composed_group_norm(&t[0], &w64, &b64, 4, silu),
                1e-9,
            );
        }
    }

    #[test]
    fn layer_norm_matches_candle_and_has_input_gradients() {
        let (w, b) = (randn(&[6]), randn(&[6]));
        let ln = LayerNorm::new(w.clone(), b.clone(), 1e-5);
        check_against_composed(
            &[randn(&[2, 3, 6])],
            |t| ln.forward(&t[0]),
            |t| {
                let x = &t[0];
                let mean = x.mean_keepdim(D::Minus1)?;
                let xc = x.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
                xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?.broadcast_mul(&w)?.broadcast_add(&b)
            },
            1e-5,
        );
    }
}
