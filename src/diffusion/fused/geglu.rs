//! diffusers' GEGLU gate, `value · gelu(gate)` with `value, gate = h.chunk(2, -1)` and exact
//! (erf) GELU, as one op that keeps only `h` for backward (a composed version keeps the two halves'
//! views, gelu(gate) and the product's inputs). gelu′(x) = Φ(x) + x·φ(x), with Φ the standard
//! normal CDF and φ its density.

use super::record;
use candle_core::{DType, Result, Tensor, D};

/// `h` [..., 2·I] → [..., I].
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let inner = h.dim(D::Minus1)? / 2;
    let hd = h.detach();
    let out = (hd.narrow(D::Minus1, 0, inner)? * hd.narrow(D::Minus1, inner, inner)?.gelu_erf()?)?;
    if !h.track_op() {
        return Ok(out);
    }
    record("geglu", &[h], out, move |g| {
        let dtype = hd.dtype();
        let work = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
        let (value, gate) = (hd.narrow(D::Minus1, 0, inner)?.to_dtype(work)?, hd.narrow(D::Minus1, inner, inner)?.to_dtype(work)?);
        let g = g.to_dtype(work)?;
        let cdf = ((&gate * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5;
        let pdf = (gate.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt());
        let dgelu = (cdf? + (&gate * pdf?)?)?;
        let dvalue = (&g * gate.gelu_erf()?)?;
        let dgate = ((g * value)? * dgelu)?;
        Ok(vec![Some(Tensor::cat(&[dvalue, dgate], D::Minus1)?.to_dtype(dtype)?)])
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_against_composed;
    use super::*;
    use candle_core::Device;

    #[test]
    fn geglu_matches_the_composed_gate() {
        let h = (Tensor::randn(0f32, 1.0, (2, 3, 8), &Device::Cpu).unwrap() * 2.0).unwrap();
        check_against_composed(&[h], |t| geglu(&t[0]), |t| t[0].narrow(2, 0, 4)? * t[0].narrow(2, 4, 4)?.gelu_erf()?, 1e-5);
    }
}
