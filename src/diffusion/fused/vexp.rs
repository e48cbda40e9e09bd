//! `e^x` over f32 slices in SIMD lanes, for the softmax of the CPU attention kernel and the SiLU of
//! the fused group norm (forward and backward). libm's `expf` is scalar: with AVX-512 GEMMs it was
//! 20% of a 512 px SD 1.5 generation. PyTorch's CPU softmax uses a vectorised exp (Sleef) for the
//! same reason.
//!
//! The method is Cephes' `expf` (S. Moshier): x = n·ln 2 + r with |r| ≤ ln 2 / 2 (ln 2 split in two
//! parts so r is exact), e^r by its degree-7 minimax polynomial, and 2^n put in the exponent bits.
//! Relative error < 3e-7 (≈ 2 ulp) over the inputs whose result is a normal f32; below −87.33 it
//! returns ≈ 1.2e-38 instead of a subnormal or 0 (a softmax weight that small is 0 for all purposes),
//! from 88.38 up it returns +∞ (a little early: f32's largest e^x is at 88.72), and NaN stays NaN.
//! Plain multiplies and adds (no FMA), so every build computes the same bits; the loop is compiled
//! three times, for AVX-512F, for AVX2 and for the baseline, and picked at run time.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const MIN_X: f32 = -87.336_55;
/// Keeps n ≤ 128, whose exponent field (255) is +∞.
const MAX_X: f32 = 88.73;
/// 1.5·2²³: adding it rounds an f32 below 2²² to the nearest integer, kept in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// A public function that runs `$lanes` compiled for AVX-512F, for AVX2 or for the baseline,
/// whichever the CPU has (one runtime check each call, cached by std).
macro_rules! dispatched {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $lanes:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $lanes($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $lanes($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the feature the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $lanes($($arg),*)
        }
    };
}

dispatched! {
    /// xs[i] ← e^(xs[i] − shift) for every element; returns their sum (a softmax's normaliser).
    pub fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 = exp_shifted_lanes
}

dispatched! {
    /// ys[i] ← SiLU(a·xs[i] + b) = z / (1 + e^−z): a group norm's per-channel scale and shift,
    /// then SiLU. `ys` and `xs` have the same length.
    pub fn silu_affine(ys: &mut [f32], xs: &[f32], a: f32, b: f32) = silu_affine_lanes
}

dispatched! {
    /// The group norm + SiLU backward's inner loop over one channel's values: with
    /// x̂ = (x − mean)·rstd and z = γ·x̂ + β, ds[i] ← γ·∂L/∂z = γ·g·σ(z)·(1 + z·(1 − σ(z)))
    /// (SiLU's derivative, as PyTorch's `silu_backward`); returns (Σ ds, Σ ds·x̂), the two sums
    /// the normalisation's backward needs. The sums are f32 in 16 lanes: callers pass slices of
    /// about a thousand values and add the results up in f64.
    pub fn silu_affine_grad(ds: &mut [f32], xs: &[f32], gs: &[f32], mean: f32, rstd: f32, gamma: f32, beta: f32) -> (f32, f32) = silu_affine_grad_lanes
}

#[inline(always)]
fn silu_affine_grad_lanes(ds: &mut [f32], xs: &[f32], gs: &[f32], mean: f32, rstd: f32, gamma: f32, beta: f32) -> (f32, f32) {
    // Element i adds into lane i mod 16 (as in `exp_shifted_lanes`): fixed-width chunks, so the
    // loop body is one vector wide.
    let (mut sd, mut sdx) = ([0f32; 16], [0f32; 16]);
    let mut lanes = |ds: &mut [f32], xs: &[f32], gs: &[f32]| {
        for (((d, &x), &g), (a, b)) in ds.iter_mut().zip(xs).zip(gs).zip(sd.iter_mut().zip(sdx.iter_mut())) {
            let xhat = (x - mean) * rstd;
            let z = gamma * xhat + beta;
            let s = 1.0 / (1.0 + exp_lane(-z));
            *d = gamma * g * s * (1.0 + z * (1.0 - s));
            *a += *d;
            *b += *d * xhat;
        }
    };
    let mut chunks = ds.chunks_exact_mut(16);
    let (mut xc, mut gc) = (xs.chunks_exact(16), gs.chunks_exact(16));
    for ((d, x), g) in (&mut chunks).zip(&mut xc).zip(&mut gc) {
        lanes(d, x, g);
    }
    lanes(chunks.into_remainder(), xc.remainder(), gc.remainder());
    (sd.iter().sum(), sdx.iter().sum())
}

#[inline(always)]
fn silu_affine_lanes(ys: &mut [f32], xs: &[f32], a: f32, b: f32) {
    for (y, &v) in ys.iter_mut().zip(xs) {
        let z = a * v + b;
        *y = z / (1.0 + exp_lane(-z));
    }
}

#[inline(always)]
fn exp_shifted_lanes(xs: &mut [f32], shift: f32) -> f32 {
    for x in xs.iter_mut() {
        *x = exp_lane(*x - shift);
    }
    // 16 partial sums, so the reduction vectorises (a single running sum cannot be reordered).
    let mut acc = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Branch-free e^x of one lane (see the module docs for range and error).
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    let c = x.clamp(MIN_X, MAX_X);
    // n = round(x / ln 2), as a float and as the integer in the low bits of t.
    let t = c * LOG2E + ROUND;
    let n = t - ROUND;
    // r = c − n·ln 2 in two steps: n·LN2_HI is exact (LN2_HI has 9 significant bits).
    let r = (c - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_66;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n: n + 127 in the exponent field (n from the low bits of t; ROUND's own bits cancel).
    let e = (t.to_bits().wrapping_sub(ROUND.to_bits()) as i32 + 127) as u32;
    let y = er * f32::from_bits(e << 23);
    if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f32) -> f32 {
        if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs()
        }
    }

    #[test]
    fn matches_libm_over_the_normal_range() {
        let mut worst = 0f32;
        let mut x = MIN_X;
        while x < 88.37 {
            worst = worst.max(rel(exp_lane(x), (x as f64).exp() as f32));
            x += 0.001_7;
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        for x in [0.0f32, 1.0, -1.0, 1e-8, -1e-8, 10.0, -10.0, 80.0, -80.0] {
            assert!(rel(exp_lane(x), x.exp()) < 3e-7, "{x}");
        }
    }

    #[test]
    fn edges_saturate_and_nan_stays_nan() {
        assert_eq!(exp_lane(f32::INFINITY), f32::INFINITY);
        assert!(exp_lane(100.0).is_infinite());
        assert!(exp_lane(f32::NEG_INFINITY) < 1.2e-38);
        assert!(exp_lane(-1000.0) >= 0.0 && exp_lane(-1000.0) < 1.2e-38);
        assert!(exp_lane(f32::NAN).is_nan());
    }

    #[test]
    fn every_dispatch_gives_the_same_values_and_sum() {
        let row: Vec<f32> = (0..4099).map(|i| ((i * 7919) % 1000) as f32 * -0.013).collect();
        let mut fast = row.clone();
        let sum = exp_shifted(&mut fast, 0.5);
        let mut plain = row.clone();
        let plain_sum = exp_shifted_lanes(&mut plain, 0.5);
        assert_eq!(fast, plain, "the dispatched and the baseline loops compute the same lanes");
        let want: f64 = row.iter().map(|x| ((*x - 0.5) as f64).exp()).sum();
        assert!((sum as f64 - want).abs() / want < 1e-5 && (plain_sum as f64 - want).abs() / want < 1e-5, "{sum} {plain_sum} {want}");
        for (f, x) in fast.iter().zip(&row) {
            assert!(rel(*f, (*x - 0.5).exp()) < 3e-7);
        }
    }

    #[test]
    fn silu_affine_is_silu_of_the_scaled_and_shifted_input() {
        let row: Vec<f32> = (0..4099).map(|i| ((i * 7919) % 1000) as f32 * -0.013).collect();
        let mut silu = vec![0f32; row.len()];
        silu_affine(&mut silu, &row, 3.0, 0.25);
        for (y, x) in silu.iter().zip(&row) {
            let z = 3.0 * x + 0.25;
            assert!((y - z / (1.0 + (-z).exp())).abs() <= 1e-6 * z.abs().max(1e-3), "silu({z}) = {y}");
        }
    }

    #[test]
    fn silu_affine_grad_is_the_derivative_and_its_sums() {
        let n = 1037;
        let xs: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 0.004 - 2.0).collect();
        let gs: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.002 - 1.0).collect();
        let (mean, rstd, gamma, beta) = (0.1f32, 1.7f32, 1.3f32, -0.2f32);
        let mut ds = vec![0f32; n];
        let (sd, sdx) = silu_affine_grad(&mut ds, &xs, &gs, mean, rstd, gamma, beta);
        let mut plain = vec![0f32; n];
        assert_eq!(silu_affine_grad_lanes(&mut plain, &xs, &gs, mean, rstd, gamma, beta), (sd, sdx));
        assert_eq!(ds, plain, "the dispatched and the baseline loops compute the same lanes");
        let (mut want_sd, mut want_sdx) = (0f64, 0f64);
        for i in 0..n {
            let xhat = ((xs[i] - mean) * rstd) as f64;
            let z = gamma as f64 * xhat + beta as f64;
            // d/dz of z·σ(z), by central differences in f64.
            let silu = |z: f64| z / (1.0 + (-z).exp());
            let d = gamma as f64 * gs[i] as f64 * (silu(z + 1e-6) - silu(z - 1e-6)) / 2e-6;
            assert!((ds[i] as f64 - d).abs() <= 1e-5 * d.abs().max(1e-2), "{i}: {} vs {d}", ds[i]);
            want_sd += d;
            want_sdx += d * xhat;
        }
        assert!((sd as f64 - want_sd).abs() < 1e-3 && (sdx as f64 - want_sdx).abs() < 1e-3, "{sd} {want_sd} {sdx} {want_sdx}");
    }
}
