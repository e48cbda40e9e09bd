//! Where a render's Gaussian noise comes from: PyTorch's CPU generator reproduced exactly
//! (`--noise torch-cpu`, what diffusers users and the Hub's diffusers worker draw with
//! `torch.Generator("cpu").manual_seed(seed)`), or hfsky's own seeded stream (`--noise hfsky`).
//!
//! The torch rules below follow ATen's headers as shipped with torch (2.x):
//! `ATen/core/MT19937RNGEngine.h` (the Mersenne Twister and its seeding),
//! `ATen/CPUGeneratorImpl.cpp` (`random()`, `random64()`, the cached normal),
//! `ATen/core/TransformationHelper.h` (`uniform_real`: the low `digits` bits times 2^-digits),
//! `ATen/core/DistributionsHelper.h` (`normal_distribution<double>` for small tensors) and
//! `ATen/native/cpu/DistributionTemplates.h` (`normal_kernel`, `normal_fill`, `NormalFill16`).

use candle_core::{DType, Device, Result, Shape, Tensor};

const MT_N: usize = 624;
const MT_M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The 32-bit Mersenne Twister exactly as ATen's `mt19937_engine`: seeded from the low 32 bits
/// of the seed with Knuth's 1812433253 recurrence, the state regenerated on the first draw.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; MT_N],
    left: usize,
    next: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; MT_N];
        // ATen's init_with_uint32: only the low 32 bits of a 64-bit seed reach the state.
        state[0] = seed as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        Mt19937 { state, left: 1, next: 0 }
    }

    fn twist(u: u32, v: u32) -> u32 {
        let mixed = (u & UPPER_MASK) | (v & LOWER_MASK);
        (mixed >> 1) ^ if v & 1 == 1 { MATRIX_A } else { 0 }
    }

    fn next_state(&mut self) {
        let s = &mut self.state;
        for j in 0..MT_N - MT_M {
            s[j] = s[j + MT_M] ^ Self::twist(s[j], s[j + 1]);
        }
        for j in MT_N - MT_M..MT_N - 1 {
            s[j] = s[j + MT_M - MT_N] ^ Self::twist(s[j], s[j + 1]);
        }
        s[MT_N - 1] = s[MT_M - 1] ^ Self::twist(s[MT_N - 1], s[0]);
        self.left = MT_N;
        self.next = 0;
    }

    fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.next_state();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// `torch.Generator("cpu").manual_seed(seed)`: the same draws, in the same order, as torch's
/// `torch.randn(shape, generator=g, dtype=torch.float32)` calls on it.
#[derive(Clone)]
pub struct TorchCpuGenerator {
    engine: Mt19937,
    /// `CPUGeneratorImpl::next_double_normal_sample_`: the second value of the last scalar
    /// Box–Muller pair, returned by the next scalar normal draw (reset by `manual_seed`).
    next_double_normal: Option<f64>,
}

impl TorchCpuGenerator {
    /// A generator in the state `torch.Generator("cpu").manual_seed(seed)` leaves.
    pub fn manual_seed(seed: u64) -> Self {
        TorchCpuGenerator { engine: Mt19937::new(seed), next_double_normal: None }
    }

    /// `CPUGeneratorImpl::random()`: one 32-bit draw.
    fn random(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// `CPUGeneratorImpl::random64()`: two 32-bit draws, the first in the high half.
    fn random64(&mut self) -> u64 {
        let hi = self.random() as u64;
        let lo = self.random() as u64;
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: the low 24 bits (float's `digits`) of one
    /// 32-bit draw, times 2^-24; exactly representable, in [0, 1).
    fn uniform_f32(&mut self) -> f32 {
        (self.random() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// `uniform_real_distribution<double>(0, 1)`: the low 53 bits of a 64-bit draw, times 2^-53.
    fn uniform_f64(&mut self) -> f64 {
        (self.random64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `normal_distribution<double>(0, 1)`: Box–Muller on two double uniforms, r·cos θ now and
    /// r·sin θ cached for the next scalar draw (`DistributionsHelper.h`).
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n, generator=g, dtype=torch.float32)` for a contiguous tensor of `n` values
    /// (any shape with `n` elements gives the same values in row-major order).
    ///
    /// `normal_kernel`: fewer than 16 values take the scalar double path, one
    /// [`normal_f64`](Self::normal_f64) each, cast to f32. 16 or more (`normal_fill`): `n` float
    /// uniforms are drawn first, Box–Muller is applied in place to each whole block of 16 (the
    /// first 8 give the radii, the last 8 the angles), and when `n % 16 != 0` the last 16
    /// slots are refilled with 16 fresh uniforms and transformed again, overlapping the
    /// previous block.
    pub fn randn_f32(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            normal_fill_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            normal_fill_16(tail);
        }
        data
    }
}

/// ATen's `NormalFill16<float>` with mean 0 and std 1, as torch's x86 builds run it (the AVX2
/// specialization, also dispatched on AVX-512 machines): for j < 8, u1 = 1 − d[j] (in (0, 1]),
/// u2 = d[j + 8], radius = √(−2·ln u1), θ = (float)2π · u2 in float, then
/// d[j] = radius·cos θ and d[j + 8] = radius·sin θ.
///
/// torch evaluates ln, sin and cos with avx_mathfun's polynomials; evaluating them in f64 and
/// rounding once lands within 2.4e-7 of torch's values (measured over SD latents; see
/// tests/cli/torch_noise.rs). The product of the f32 angle is what must match exactly: torch's
/// scalar build (`ATEN_CPU_CAPABILITY=default`, ARM) forms θ in double instead, which moves
/// values by up to ~1.5e-6.
fn normal_fill_16(d: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = (1.0f32 - d[j]) as f64;
        let theta = (two_pi * d[j + 8]) as f64;
        let radius = (-2.0 * u1.ln()).sqrt();
        d[j] = (radius * theta.cos()) as f32;
        d[j + 8] = (radius * theta.sin()) as f32;
    }
}

/// Which generator a render's noise comes from (recorded as `noise` in PNGs and sidecars).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseKind {
    /// torch's CPU generator (`torch.Generator("cpu").manual_seed(seed)`), exactly as diffusers
    /// draws with it: the same seed gives the same image as a diffusers render.
    #[default]
    TorchCpu,
    /// hfsky's own generator (rand's StdRng + Box–Muller), used by renders before `--noise`
    /// existed: the initial noise and Euler ancestral's step noise each from a fresh
    /// `StdRng::seed_from_u64(seed)`.
    Hfsky,
}

impl NoiseKind {
    pub fn label(self) -> &'static str {
        match self {
            NoiseKind::TorchCpu => "torch-cpu",
            NoiseKind::Hfsky => "hfsky",
        }
    }
}

/// One render's noise stream. Draw the initial latents with [`initial`](Self::initial), then
/// hand the stream to the scheduler for its per-step noise: with `torch-cpu` both come from one
/// generator in diffusers' order (`prepare_latents`' `randn_tensor`, then one
/// `randn_tensor(model_output.shape)` per Euler ancestral step).
#[derive(Clone)]
pub struct NoiseStream {
    kind: NoiseKind,
    source: Source,
    /// The precision diffusers would draw in: the pipeline's (`randn_tensor(..., dtype=
    /// prompt_embeds.dtype)` for the latents, `model_output.dtype` for Euler ancestral's steps).
    draw: DType,
}

#[derive(Clone)]
enum Source {
    // Boxed: generator states are large (2.5 KB for the Mersenne Twister).
    Torch(Box<TorchCpuGenerator>),
    Hfsky { seed: u64, rng: Box<rand::rngs::StdRng> },
}

impl NoiseStream {
    pub fn new(kind: NoiseKind, seed: u64) -> Self {
        use rand::SeedableRng;
        let source = match kind {
            NoiseKind::TorchCpu => Source::Torch(Box::new(TorchCpuGenerator::manual_seed(seed))),
            NoiseKind::Hfsky => Source::Hfsky { seed, rng: Box::new(rand::rngs::StdRng::seed_from_u64(seed)) },
        };
        NoiseStream { kind, source, draw: DType::F32 }
    }

    /// Draws as diffusers does on a pipeline computing in `dtype`. With `torch-cpu` and f16 or
    /// bf16, torch's CPU kernel (the pinned release, tests/pyref-requirements.lock.txt) gives the
    /// f32 draw rounded to that precision when the size is a multiple of 16 (every latent shape
    /// whose height × width is a multiple of 4; tested in tests/cli/torch_noise.rs), so the
    /// values are rounded through it and handed on as f32, the precision the sampling loop keeps.
    /// Other sizes draw their last 16 values differently in half precision, which this does
    /// not reproduce. hfsky's own generator ignores the dtype, as it always has.
    pub fn drawn_in(mut self, dtype: DType) -> Self {
        self.draw = dtype;
        self
    }

    fn rounded(&self, t: Tensor) -> Result<Tensor> {
        match (&self.source, self.draw) {
            (Source::Torch(_), DType::F16 | DType::BF16) => t.to_dtype(self.draw)?.to_dtype(DType::F32),
            _ => Ok(t),
        }
    }

    pub fn kind(&self) -> NoiseKind {
        self.kind
    }

    /// The initial unit-variance latents of `shape` (f32). With `hfsky` they come from a copy
    /// of the seeded generator, so the step noise still starts at the seed, as it always has.
    pub fn initial(&mut self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        match &mut self.source {
            Source::Torch(g) => {
                let t = Tensor::from_vec(g.randn_f32(shape.elem_count()), shape, device)?;
                self.rounded(t)
            }
            Source::Hfsky { seed, .. } => {
                use rand::SeedableRng;
                let mut rng = rand::rngs::StdRng::seed_from_u64(*seed);
                box_muller_f32(shape, &mut rng, device)
            }
        }
    }

    /// Unit Gaussian noise shaped like `x`, in `x`'s dtype, drawn in the stream's precision
    /// ([`drawn_in`](Self::drawn_in)). torch-cpu draws f32 values and casts them, which is what
    /// the pinned torch's CPU kernel (tests/pyref-requirements.lock.txt) does for f16 and bf16
    /// when the size is a multiple of 16 (tested in tests/cli/torch_noise.rs). Older torch
    /// releases may draw f16 differently.
    pub fn randn_like(&mut self, x: &Tensor) -> Result<Tensor> {
        let t = match &mut self.source {
            Source::Torch(g) => {
                let t = Tensor::from_vec(g.randn_f32(x.elem_count()), x.shape(), x.device())?;
                self.rounded(t)?
            }
            Source::Hfsky { rng, .. } => box_muller_f32(x.shape().clone(), rng, x.device())?,
        };
        t.to_dtype(x.dtype())
    }
}

/// hfsky's own Gaussian stream: Box–Muller on pairs of f64 uniforms from rand's StdRng.
fn box_muller_f32(shape: Shape, rng: &mut rand::rngs::StdRng, device: &Device) -> Result<Tensor> {
    use rand::Rng;
    let n = shape.elem_count();
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        v.push((r * (std::f64::consts::TAU * u2).cos()) as f32);
        v.push((r * (std::f64::consts::TAU * u2).sin()) as f32);
    }
    v.truncate(n);
    Tensor::from_vec(v, shape, device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mersenne_twister_matches_the_reference_sequence() {
        // The C++ standard's check value: the 10000th output of std::mt19937 seeded 5489.
        let mut mt = Mt19937::new(5489);
        let v = (0..10_000).map(|_| mt.next_u32()).last().unwrap();
        assert_eq!(v, 4_123_659_995);
        // Only the low 32 bits of the seed reach the state, as in ATen.
        let (mut a, mut b) = (Mt19937::new(7), Mt19937::new(7 + (1u64 << 32)));
        assert_eq!((0..5).map(|_| a.next_u32()).collect::<Vec<_>>(), (0..5).map(|_| b.next_u32()).collect::<Vec<_>>());
    }

    #[test]
    fn known_torch_values() {
        // torch.randn(3, generator=torch.Generator().manual_seed(0)) (the scalar path).
        let v = TorchCpuGenerator::manual_seed(0).randn_f32(3);
        for (got, want) in v.iter().zip([1.5409961f32, -0.2934289, -2.1787894]) {
            assert!((got - want).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn the_tail_block_is_redrawn_and_overlaps() {
        // 20 values: 20 uniforms, one block on 0..16, then 16 fresh uniforms for 4..20.
        let mut g = TorchCpuGenerator::manual_seed(1);
        let v = g.randn_f32(20);
        let mut h = TorchCpuGenerator::manual_seed(1);
        let first: Vec<f32> = h.randn_f32(16);
        assert_eq!(&v[..4], &first[..4]);
        assert_ne!(&v[4..16], &first[4..16]);
        // 20 + 16 uniforms consumed: the next draw continues after them.
        let mut k = TorchCpuGenerator::manual_seed(1);
        (0..36).for_each(|_| {
            k.uniform_f32();
        });
        assert_eq!(g.random(), k.random());
    }

    #[test]
    fn streams_are_reproducible_and_kinds_differ() {
        let dev = Device::Cpu;
        let draw = |kind| {
            let mut s = NoiseStream::new(kind, 3);
            let a = s.initial((1, 4, 8, 8), &dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = s.randn_like(&Tensor::zeros((1, 4, 8, 8), DType::F32, &dev).unwrap()).unwrap();
            (a, b.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (t1, t2) = draw(NoiseKind::TorchCpu);
        assert_eq!(draw(NoiseKind::TorchCpu), (t1.clone(), t2.clone()));
        assert_ne!(t1, t2, "torch-cpu's step noise continues the stream");
        let (h1, h2) = draw(NoiseKind::Hfsky);
        assert_eq!(h1, h2, "hfsky's step noise restarts at the seed, as before --noise existed");
        assert_ne!(t1, h1);
        let mean = t1.iter().sum::<f32>() / t1.len() as f32;
        assert!(mean.abs() < 0.2, "{mean}");
    }

    #[test]
    fn half_precision_pipelines_draw_torch_noise_rounded_and_keep_hfsky_noise() {
        let dev = Device::Cpu;
        let step_like = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev).unwrap();
        let draw = |kind, dtype| {
            let mut s = NoiseStream::new(kind, 3).drawn_in(dtype);
            let a = s.initial((1, 4, 8, 8), &dev).unwrap();
            let b = s.randn_like(&step_like).unwrap();
            assert_eq!((a.dtype(), b.dtype()), (DType::F32, DType::F32), "the sampling loop stays in f32");
            (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (f32_a, f32_b) = draw(NoiseKind::TorchCpu, DType::F32);
        let (f16_a, f16_b) = draw(NoiseKind::TorchCpu, DType::F16);
        for (full, half) in [(&f32_a, &f16_a), (&f32_b, &f16_b)] {
            let rounded = Tensor::new(full.as_slice(), &dev).unwrap().to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!(&rounded.to_vec1::<f32>().unwrap(), half);
            assert!(full != half);
        }
        assert_eq!(draw(NoiseKind::Hfsky, DType::F16), draw(NoiseKind::Hfsky, DType::F32));
    }
}
