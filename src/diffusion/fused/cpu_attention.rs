//! Fused scaled dot-product attention for f32 on the CPU, forward and backward, in the blocked
//! form of FlashAttention (Dao et al. 2022) that PyTorch's CPU SDPA kernel also uses: for one head
//! and a block of `QB` queries, the scores against all keys live in a small per-task buffer
//! (QB × M), softmax is applied in place, and the block's output is one GEMM away; only the
//! per-row log-sum-exp is kept for backward. Heads are read in place from the [B, N, H·d] layout of
//! the projections (strided GEMM operands), so no head split or merge is copied.
//!
//! Backward per (batch, head), block by block, with P = exp(s·QKᵀ − lse):
//! dV += Pᵀ·dO, dP = dO·Vᵀ, D = rowsum(P ∘ dP), dS = P ∘ (dP − D), dQ = s·dS·K, dK += s·dSᵀ·Q.

use super::matmul::{all_threads, mm};
use super::vexp::exp_shifted;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Queries per block: a 64 × 4096 score block is 1 MiB, well inside L2 with its dP twin.
const QB: usize = 64;

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    n: usize,
    m: usize,
    heads: usize,
    d: usize,
}

impl Dims {
    fn of(q: &Layout, k: &Layout, heads: usize) -> Result<Self> {
        let (b, n, c) = q.shape().dims3()?;
        let (kb, m, kc) = k.shape().dims3()?;
        if kb != b || kc != c || c % heads != 0 {
            bail!("attention: q {:?} / k {:?} do not fit {heads} heads", q.dims(), k.dims());
        }
        Ok(Dims { b, n, m, heads, d: c / heads })
    }
    fn hd(&self) -> usize {
        self.heads * self.d
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    if !l.is_contiguous() {
        bail!("attention: expected contiguous inputs");
    }
    Ok(&s.as_slice::<f32>()?[l.start_offset()..l.start_offset() + l.shape().elem_count()])
}

/// Raw pointer that may cross threads: every task writes a disjoint region.
#[derive(Clone, Copy)]
struct Out(*mut f32);
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// Through a method, so closures capture the `Sync` wrapper rather than the raw field.
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Tasks across the rayon pool with single-threaded GEMMs when there are enough of them, else
/// one task at a time with GEMMs on every thread.
fn parallelism(tasks: usize) -> (bool, gemm::Parallelism) {
    match all_threads() {
        gemm::Parallelism::Rayon(threads) if tasks < threads => (false, gemm::Parallelism::Rayon(threads)),
        _ => (true, gemm::Parallelism::None),
    }
}

fn for_each(tasks: usize, across: bool, f: impl Fn(usize) + Sync + Send) {
    if across {
        (0..tasks).into_par_iter().for_each(f);
    } else {
        (0..tasks).for_each(f);
    }
}

/// Forward: q [B, N, H·d], k/v [B, M, H·d] → out [B, N, H·d]; the log-sum-exp of every
/// (batch, head, query) row is left in `lse` for backward.
pub struct Forward {
    pub heads: usize,
    pub lse: Mutex<Option<Vec<f32>>>,
}

impl candle_core::CustomOp3 for Forward {
    fn name(&self) -> &'static str {
        "attention-cpu"
    }

    fn cpu_fwd(&self, qs: &CpuStorage, ql: &Layout, ks: &CpuStorage, kl: &Layout, vs: &CpuStorage, vl: &Layout) -> Result<(CpuStorage, Shape)> {
        let dm = Dims::of(ql, kl, self.heads)?;
        let (q, k, v) = (slice(qs, ql)?, slice(ks, kl)?, slice(vs, vl)?);
        let Dims { b, n, m, heads, d } = dm;
        let hd = dm.hd();
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; b * n * hd];
        let mut lse = vec![0f32; b * heads * n];
        let blocks = n.div_ceil(QB);
        let tasks = b * heads * blocks;
        let (across, par) = parallelism(tasks);
        let (o_ptr, l_ptr) = (Out(out.as_mut_ptr()), Out(lse.as_mut_ptr()));
        for_each(tasks, across, |t| {
            let (bh, blk) = (t / blocks, t % blocks);
            let (bi, h) = (bh / heads, bh % heads);
            let q0 = blk * QB;
            let rows = QB.min(n - q0);
            let mut s = vec![0f32; rows * m];
            // SAFETY: the pointers address this batch/head's rows and columns of q, k, v (strides
            // hd), of `s`, and of `out`/`lse` rows no other task writes.
            unsafe {
                let qp = q.as_ptr().add((bi * n + q0) * hd + h * d);
                let kp = k.as_ptr().add(bi * m * hd + h * d);
                let vp = v.as_ptr().add(bi * m * hd + h * d);
                mm((rows, m, d), s.as_mut_ptr(), (m, 1), false, qp, (hd, 1), kp, (1, hd), scale, par);
                for (r, row) in s.chunks_mut(m).enumerate() {
                    let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum = exp_shifted(row, mx);
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                    *l_ptr.ptr().add(bh * n + q0 + r) = mx + sum.ln();
                }
                let op = o_ptr.ptr().add((bi * n + q0) * hd + h * d);
                mm((rows, d, m), op, (hd, 1), false, s.as_ptr(), (m, 1), vp, (hd, 1), 1.0, par);
            }
        });
        *self.lse.lock().expect("lse lock") = Some(lse);
        Ok((CpuStorage::F32(out), Shape::from((b, n, hd))))
    }
}

/// Backward: inputs q, k, v (as the forward's), with the output gradient and the forward's
/// log-sum-exp held here; the result is dq, dk and dv flattened one after the other.
pub struct Backward {
    pub heads: usize,
    pub grad: Tensor,
    pub lse: std::sync::Arc<Vec<f32>>,
}

impl candle_core::CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "attention-cpu-backward"
    }

    fn cpu_fwd(&self, qs: &CpuStorage, ql: &Layout, ks: &CpuStorage, kl: &Layout, vs: &CpuStorage, vl: &Layout) -> Result<(CpuStorage, Shape)> {
        let dm = Dims::of(ql, kl, self.heads)?;
        let (q, k, v) = (slice(qs, ql)?, slice(ks, kl)?, slice(vs, vl)?);
        let (gs, gl) = self.grad.storage_and_layout();
        let Storage::Cpu(gs) = &*gs else { bail!("attention backward: the gradient is not on the CPU") };
        let go = slice(gs, gl)?;
        let Dims { b, n, m, heads, d } = dm;
        let hd = dm.hd();
        let scale = 1.0 / (d as f32).sqrt();
        let (nq, nk) = (b * n * hd, b * m * hd);
        let mut out = vec![0f32; nq + 2 * nk];
        let tasks = b * heads;
        let (across, par) = parallelism(tasks);
        let base = Out(out.as_mut_ptr());
        for_each(tasks, across, |bh| {
            let (bi, h) = (bh / heads, bh % heads);
            let mut p = vec![0f32; QB.min(n) * m];
            let mut dp = vec![0f32; QB.min(n) * m];
            // SAFETY: as in the forward; this task alone writes head h of batch bi in dq, dk, dv.
            unsafe {
                let kp = k.as_ptr().add(bi * m * hd + h * d);
                let vp = v.as_ptr().add(bi * m * hd + h * d);
                let dk = base.ptr().add(nq + bi * m * hd + h * d);
                let dv = base.ptr().add(nq + nk + bi * m * hd + h * d);
                for q0 in (0..n).step_by(QB) {
                    let rows = QB.min(n - q0);
                    let (p, dp) = (&mut p[..rows * m], &mut dp[..rows * m]);
                    let qp = q.as_ptr().add((bi * n + q0) * hd + h * d);
                    let gp = go.as_ptr().add((bi * n + q0) * hd + h * d);
                    mm((rows, m, d), p.as_mut_ptr(), (m, 1), false, qp, (hd, 1), kp, (1, hd), scale, par);
                    for (r, row) in p.chunks_mut(m).enumerate() {
                        let l = self.lse[bh * n + q0 + r];
                        exp_shifted(row, l);
                    }
                    let first = q0 == 0;
                    // dV += Pᵀ·dO
                    mm((m, d, rows), dv, (hd, 1), !first, p.as_ptr(), (1, m), gp, (hd, 1), 1.0, par);
                    // dP = dO·Vᵀ, then dS = P ∘ (dP − rowsum(P ∘ dP)) in place.
                    mm((rows, m, d), dp.as_mut_ptr(), (m, 1), false, gp, (hd, 1), vp, (1, hd), 1.0, par);
                    for (pr, dr) in p.chunks(m).zip(dp.chunks_mut(m)) {
                        let dsum: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                        dr.iter_mut().zip(pr).for_each(|(x, &pv)| *x = pv * (*x - dsum));
                    }
                    // dQ = s·dS·K; dK += s·dSᵀ·Q
                    let dq = base.ptr().add((bi * n + q0) * hd + h * d);
                    mm((rows, d, m), dq, (hd, 1), false, dp.as_ptr(), (m, 1), kp, (hd, 1), scale, par);
                    mm((m, d, rows), dk, (hd, 1), !first, dp.as_ptr(), (1, m), qp, (hd, 1), scale, par);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(nq + 2 * nk)))
    }
}
