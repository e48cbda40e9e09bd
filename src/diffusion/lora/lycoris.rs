//! ΔW of each adapter kind as a full weight, computed in f32. The formulas follow LyCORIS
//! (`lycoris-lora` 4.1.3: `lycoris/functional/loha.py` `_diff_weight`, `lycoris/functional/lokr.py`
//! `_kron_weight`/`make_kron`, `lycoris/functional/general.py` `rebuild_tucker` and
//! `tucker_weight_from_conv`) and are what kohya sd-scripts, ComfyUI (`comfy/weight_adapter/`) and
//! A1111's LyCORIS extension compute; the scale each is multiplied by is documented at
//! `LoraModule::scale`.

use candle_core::{Result, Tensor};

/// LoRA/LoCon: `ΔW = up · down`, up [out, r(, 1, 1)], down [r, in(, k, k)] → [out, in·k·k];
/// with a Tucker core `mid` [r, r, k, k] (LoCon's `lora_mid`),
/// `ΔW[o, i, …] = Σ_{m,n} up[o, m] · mid[m, n, …] · down[n, i]` → [out, in, k, k].
pub fn lora(down: &Tensor, up: &Tensor, mid: Option<&Tensor>) -> Result<Tensor> {
    let out = up.dim(0)?;
    let up2 = up.reshape((out, ()))?;
    match mid {
        None => up2.matmul(&down.reshape((down.dim(0)?, ()))?),
        Some(mid) => tucker(mid, &up2, &down.reshape((down.dim(0)?, ()))?),
    }
}

/// `Σ_{m,n} a[o, m] · t[m, n, …] · b[n, i]` → [o, i, …] (a [O, R1], t [R1, R2, k, k], b [R2, I]).
fn tucker(t: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let (r1, r2) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    let (o, i) = (a.dim(0)?, b.dim(1)?);
    let left = a.matmul(&t.reshape((r1, r2 * spatial))?)?; // [O, R2·K]
    let left = left.reshape((o, r2, spatial))?.transpose(1, 2)?.reshape((o * spatial, r2))?;
    let full = left.matmul(b)?.reshape((o, spatial, i))?.transpose(1, 2)?.contiguous()?;
    let mut shape = vec![o, i];
    shape.extend(&dims[2..]);
    full.reshape(shape)
}

/// LoHa (Hadamard product of two low-rank products): `ΔW = (w1a · w1b) ⊙ (w2a · w2b)`,
/// w1a/w2a [out, r], w1b/w2b [r, in·k·k] → [out, in·k·k]. With Tucker cores t1/t2 [r, r, k, k]
/// (conv LoHa), w1a/w2a are [r, out] and w1b/w2b [r, in], and each half is
/// `Σ_{i,j} t[i, j, …] · wa[i, o] · wb[j, n]` → [out, in, k, k].
pub fn loha(w1a: &Tensor, w1b: &Tensor, w2a: &Tensor, w2b: &Tensor, t1: Option<&Tensor>, t2: Option<&Tensor>) -> Result<Tensor> {
    let half = |wa: &Tensor, wb: &Tensor, t: Option<&Tensor>| -> Result<Tensor> {
        match t {
            Some(t) => tucker(t, &wa.t()?, wb),
            None => wa.reshape((wa.dim(0)?, ()))?.matmul(&wb.reshape((wb.dim(0)?, ()))?),
        }
    };
    half(w1a, w1b, t1)? * half(w2a, w2b, t2)?
}

/// One half of a LoKr weight: the full matrix, or `a · b` (with `b` [r, n, k, k] for convs,
/// rebuilt to [m, n, k, k]), or the Tucker rebuild `Σ t[i, j, …] a[i, m] b[j, n]`.
pub fn lokr_half(full: Option<&Tensor>, a: Option<&Tensor>, b: Option<&Tensor>, t: Option<&Tensor>) -> Result<Tensor> {
    match (full, a, b, t) {
        (Some(w), ..) => Ok(w.clone()),
        (None, Some(a), Some(b), Some(t)) => tucker(t, &a.t()?, &b.reshape((b.dim(0)?, ()))?),
        (None, Some(a), Some(b), None) => {
            let bd = b.dims().to_vec();
            let prod = a.matmul(&b.reshape((bd[0], ()))?)?;
            let mut shape = vec![a.dim(0)?];
            shape.extend(&bd[1..]);
            prod.reshape(shape)
        }
        _ => candle_core::bail!("a LoKr half needs its full matrix or both factors"),
    }
}

/// LoKr: `ΔW = w1 ⊗ w2` (Kronecker product), w1 [a, b], w2 [c, d(, k, k)] → [a·c, b·d(, k, k)],
/// as `torch.kron` with w1 given trailing unit dimensions.
pub fn kron(w1: &Tensor, w2: &Tensor) -> Result<Tensor> {
    let (a, b) = w1.dims2()?;
    let d2 = w2.dims().to_vec();
    let (c, d) = (d2[0], d2[1]);
    let spatial: usize = d2[2..].iter().product();
    let prod = w1.reshape((a, 1, b, 1, 1))?.broadcast_mul(&w2.reshape((1, c, 1, d, spatial))?)?;
    let mut shape = vec![a * c, b * d];
    shape.extend(&d2[2..]);
    prod.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn t(shape: &[usize], seed: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i as f32 + 1.0) * seed).sin()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn at(x: &Tensor, idx: &[usize]) -> f32 {
        let mut y = x.clone();
        for &i in idx {
            y = y.get(i).unwrap();
        }
        y.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn tucker_and_kron_match_their_index_formulas() {
        let (up, mid, down) = (t(&[3, 2], 0.3), t(&[2, 2, 3, 3], 0.7), t(&[2, 4, 1, 1], 1.1));
        let w = lora(&down, &up, Some(&mid)).unwrap();
        assert_eq!(w.dims(), &[3, 4, 3, 3]);
        let mut want = 0f32;
        for m in 0..2 {
            for n in 0..2 {
                want += at(&up, &[2, m]) * at(&mid, &[m, n, 1, 2]) * at(&down, &[n, 3, 0, 0]);
            }
        }
        assert!((at(&w, &[2, 3, 1, 2]) - want).abs() < 1e-5);

        let (w1, w2) = (t(&[2, 3], 0.5), t(&[4, 5, 3, 3], 0.9));
        let k = kron(&w1, &w2).unwrap();
        // Row 1·4 + 3, column 2·5 + 1: w1[1, 2] · w2[3, 1].
        assert_eq!(k.dims(), &[8, 15, 3, 3]);
        assert!((at(&k, &[4 + 3, 2 * 5 + 1, 2, 0]) - at(&w1, &[1, 2]) * at(&w2, &[3, 1, 2, 0])).abs() < 1e-6);

        let h = loha(&t(&[3, 2], 0.1), &t(&[2, 4], 0.2), &t(&[3, 2], 0.3), &t(&[2, 4], 0.4), None, None).unwrap();
        let p1 = t(&[3, 2], 0.1).matmul(&t(&[2, 4], 0.2)).unwrap();
        let p2 = t(&[3, 2], 0.3).matmul(&t(&[2, 4], 0.4)).unwrap();
        let d = (h - (p1 * p2).unwrap()).unwrap().abs().unwrap().sum_all().unwrap().to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-6);
    }
}
