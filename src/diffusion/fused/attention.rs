//! Scaled dot-product attention that never holds the whole score matrix: queries are taken in
//! chunks whose [B·H, chunk, M] scores fit a fixed budget, in the forward and again in backward
//! (the memory-efficient attention of Rabe & Staats, "Self-attention does not need O(n²)
//! memory", 2021, which PyTorch's CPU SDPA and xformers also use). Only q, k and v are kept.
//!
//! Backward per chunk, with P = softmax(s·QKᵀ): dV += Pᵀ·dO, dP = dO·Vᵀ,
//! dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = s·dS·K, dK += s·dSᵀ·Q.

use super::record;
use candle_core::{DType, Result, Tensor};

/// Elements of one chunk's score matrix (64 MiB in f32).
const SCORE_BUDGET: usize = 1 << 24;

/// [B, N, H·d] → [B·H, N, d]
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    x.reshape((b, n, heads, c / heads))?.transpose(1, 2)?.contiguous()?.reshape((b * heads, n, c / heads))
}

/// [B·H, N, d] → [B, N, H·d]
fn merge_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (bh, n, d) = x.dims3()?;
    x.reshape((bh / heads, heads, n, d))?.transpose(1, 2)?.contiguous()?.reshape((bh / heads, n, heads * d))
}

fn chunk_len(budget: usize, bh: usize, m: usize, n: usize) -> usize {
    (budget / (bh * m).max(1)).clamp(1, n.max(1))
}

/// softmax(scale·q·kᵀ) for one chunk of queries, in f32 at least (as PyTorch's SDPA accumulates).
fn probs(q: &Tensor, k: &Tensor, scale: f64) -> Result<Tensor> {
    let work = if matches!(q.dtype(), DType::F16 | DType::BF16) { DType::F32 } else { q.dtype() };
    let s = (q.to_dtype(work)?.matmul(&k.to_dtype(work)?.t()?)? * scale)?;
    candle_nn::ops::softmax_last_dim(&s)
}

/// diffusers' `F.scaled_dot_product_attention` with `heads` heads: `q` [B, N, H·d], `k`/`v`
/// [B, M, H·d] → [B, N, H·d], scale 1/√d. Differentiable in q, k and v.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    chunked(q, k, v, heads, SCORE_BUDGET)
}

fn chunked(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, budget: usize) -> Result<Tensor> {
    let dtype = q.dtype();
    let (qh, kh, vh) = (split_heads(&q.detach(), heads)?, split_heads(&k.detach(), heads)?, split_heads(&v.detach(), heads)?);
    let (bh, n, d) = qh.dims3()?;
    let m = kh.dim(1)?;
    let scale = 1.0 / (d as f64).sqrt();
    let chunk = chunk_len(budget, bh, m, n);
    let mut outs = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let p = probs(&qh.narrow(1, start, len)?, &kh, scale)?;
        outs.push(p.to_dtype(dtype)?.matmul(&vh)?);
    }
    let out = merge_heads(&Tensor::cat(&outs, 1)?, heads)?;
    drop(outs);
    if !(q.track_op() || k.track_op() || v.track_op()) {
        return Ok(out);
    }
    record("attention", &[q, k, v], out, move |g| {
        let gh = split_heads(g, heads)?;
        let work = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
        let (kw, vw) = (kh.to_dtype(work)?, vh.to_dtype(work)?);
        let mut dq = Vec::with_capacity(n.div_ceil(chunk));
        let mut dk = kw.zeros_like()?;
        let mut dv = vw.zeros_like()?;
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let qc = qh.narrow(1, start, len)?.to_dtype(work)?;
            let gc = gh.narrow(1, start, len)?.to_dtype(work)?;
            let p = probs(&qc, &kw, scale)?;
            dv = (dv + p.t()?.matmul(&gc)?)?;
            let dp = gc.matmul(&vw.t()?)?;
            let row = (&p * &dp)?.sum_keepdim(2)?;
            let ds = (p * dp.broadcast_sub(&row)?)?;
            dq.push((ds.matmul(&kw)? * scale)?);
            dk = (dk + (ds.t()?.matmul(&qc)? * scale)?)?;
        }
        let back = |t: Tensor| -> Result<Option<Tensor>> { Ok(Some(merge_heads(&t.to_dtype(dtype)?, heads)?)) };
        Ok(vec![back(Tensor::cat(&dq, 1)?)?, back(dk)?, back(dv)?])
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_against_composed;
    use super::*;
    use candle_core::Device;

    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
        let (qh, kh, vh) = (split_heads(q, heads)?, split_heads(k, heads)?, split_heads(v, heads)?);
        let scale = 1.0 / (qh.dim(2)? as f64).sqrt();
        let p = candle_nn::ops::softmax(&(qh.matmul(&kh.t()?)? * scale)?, 2)?;
        merge_heads(&p.matmul(&vh)?, heads)
    }

    #[test]
    fn chunked_attention_equals_dense_in_values_and_gradients() {
        let dev = Device::Cpu;
        let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).unwrap();
        // Self- and cross-attention shapes, in one chunk and in chunks of 2 queries (the last shorter).
        for (n, m) in [(7, 7), (6, 5)] {
            for budget in [SCORE_BUDGET, 2 * 4 * m] {
                let inputs = [r(&[2, n, 8]), r(&[2, m, 8]), r(&[2, m, 8])];
                check_against_composed(&inputs, |t| chunked(&t[0], &t[1], &t[2], 2, budget), |t| composed(&t[0], &t[1], &t[2], 2), 1e-5);
            }
        }
        assert_eq!(chunk_len(SCORE_BUDGET, 8, 4096, 4096), 512);
        assert_eq!(chunk_len(SCORE_BUDGET, 1, 3, 5), 5);
    }
}
