//! A 2-D convolution with a frozen weight: backward gives the input its gradient and nothing else.
//!
//! candle's conv backward computes the weight gradient whatever the weight is, and the input
//! gradient with `conv_transpose2d`, whose CPU kernel is a direct loop far slower than its conv.
//! Here the input gradient is itself a convolution (the "full" correlation of the output gradient
//! with the kernel flipped in space and transposed in channels; for stride s the output gradient
//! first gets s−1 zeros between its elements), the textbook identity behind PyTorch's
//! `convolution_backward` for `grad_input` — so it runs on the same fast conv path (im2col + GEMM on
//! the CPU, cuDNN/GEMM on the GPU).

use super::cpu_conv::{self, Geometry};
use super::record;
use crate::diffusion::nn::Adapters;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `torch.nn.Conv2d` with square kernel, equal stride/padding on both axes, frozen weight
/// [C_out, C_in, K, K] and optional bias [C_out]. Input [B, C_in, H, W] → [B, C_out, H', W'].
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// Module path and the network's adapters, for a conv that takes LoRA weight updates (LoCon).
    adapted: Option<(String, Adapters)>,
}

impl Conv2d {
    /// Loads `weight` (and `bias`) under `vb`, as `candle_nn::conv2d`; shapes are checked.
    pub fn load(vb: VarBuilder, in_ch: usize, out_ch: usize, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        let weight = vb.get((out_ch, in_ch, kernel, kernel), "weight")?;
        let bias = Some(vb.get(out_ch, "bias")?);
        Ok(Conv2d { weight, bias, stride, padding, adapted: None })
    }

    /// Like `load`, registered under its module path in `adapters` so that LoRA weight updates
    /// (LoCon, LoHa, LoKr, DoRA on convs) reach it.
    pub fn load_adapted(
        vb: VarBuilder,
        adapters: &Adapters,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let name = vb.prefix();
        let mut conv = Self::load(vb, in_ch, out_ch, kernel, stride, padding)?;
        adapters.register_conv(&name, &conv.weight);
        conv.adapted = Some((name, adapters.clone()));
        Ok(conv)
    }

    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Conv2d { weight, bias, stride, padding, adapted: None }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The convolution plus `extra` ([B, C_out], added per sample and channel, e.g. a resnet's time
    /// embedding) and `residual` (same shape as the output); both may be tracked and get `grad`
    /// (summed over space for `extra`). Fusing them saves keeping the bare conv output for backward.
    pub fn forward_with(&self, x: &Tensor, extra: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let (weight, live) = match &self.adapted {
            Some((name, adapters)) => (adapters.current_weight(name, &self.weight)?, adapters.get(name).1.unwrap_or_default()),
            None => (self.weight.clone(), Vec::new()),
        };
        let out = self.frozen_forward(x, &weight, extra, residual)?;
        // Live conv LoRAs (LoCon), trainable: `+ scale · up ⋆ (down ⋆ x)`, down with this layer's
        // kernel, stride and padding, up 1×1 (kohya's and PEFT's conv LoRA), in f32 from candle's
        // differentiable conv so the factors get gradients.
        let mut out = out;
        for a in &live {
            let xf = x.to_dtype(if x.dtype() == DType::F64 { DType::F64 } else { DType::F32 })?;
            let (down, up) = (crate::diffusion::recompute::factor(&a.down), crate::diffusion::recompute::factor(&a.up));
            let u = trainable_conv2d(&xf, &down.to_dtype(xf.dtype())?, self.stride, self.padding)?;
            let y = trainable_conv2d(&u, &up.to_dtype(xf.dtype())?, 1, 0)?.affine(a.scale, 0.0)?;
            out = (out + y.to_dtype(x.dtype())?)?;
        }
        Ok(out)
    }

    /// The frozen conv with `weight`, plus `extra` and `residual` (see `forward_with`).
    fn frozen_forward(&self, x: &Tensor, weight: &Tensor, extra: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let weight = weight.clone();
        let plain = |x: &Tensor, extra: Option<&Tensor>, residual: Option<&Tensor>| -> Result<Tensor> {
            let w = weight.to_dtype(x.dtype())?;
            let mut y = conv2d(x, &w, self.stride, self.padding)?;
            if let Some(b) = &self.bias {
                y = y.broadcast_add(&b.to_dtype(y.dtype())?.reshape((1, (), 1, 1))?)?;
            }
            if let Some(e) = extra {
                y = y.broadcast_add(&e.to_dtype(y.dtype())?.unsqueeze(2)?.unsqueeze(3)?)?;
            }
            if let Some(r) = residual {
                y = (y + r.to_dtype(x.dtype())?)?;
            }
            Ok(y)
        };
        let tracked = x.track_op() || extra.is_some_and(|e| e.track_op()) || residual.is_some_and(|r| r.track_op());
        if !tracked {
            return plain(x, extra, residual);
        }
        let out = plain(&x.detach(), extra.map(|e| e.detach()).as_ref(), residual.map(|r| r.detach()).as_ref())?;
        let (stride, padding) = (self.stride, self.padding);
        let (_, _, h, w) = x.dims4()?;
        let (x_dtype, e_dtype, r_dtype) = (x.dtype(), extra.map(|e| e.dtype()), residual.map(|r| r.dtype()));
        let x_tracked = x.track_op();
        let bwd = move |g: &Tensor| -> Result<Vec<Option<Tensor>>> {
            let gx = if x_tracked { Some(input_grad(g, &weight, stride, padding, (h, w))?.to_dtype(x_dtype)?) } else { None };
            // One gradient per arg, in the order of `args` below.
            let mut grads = vec![gx];
            if let Some(d) = e_dtype {
                grads.push(Some(g.sum((2, 3))?.to_dtype(d)?));
            }
            if let Some(d) = r_dtype {
                grads.push(Some(g.to_dtype(d)?));
            }
            Ok(grads)
        };
        let mut args = vec![x];
        args.extend(extra);
        args.extend(residual);
        record("frozen-conv2d", &args, out, bwd)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None, None)
    }
}

/// `x ⋆ w` with torch's `Conv2d(stride, padding)` geometry, no graph needed: our im2col + GEMM
/// kernel for f32 on the CPU, on the GPU cuDNN or im2col + cuBLAS ([`crate::devices::gpu_conv`]),
/// candle's conv otherwise.
fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let (_, _, h, wd) = x.dims4()?;
        cpu_conv::conv2d(x, w, Geometry::symmetric(h, wd, w.dim(2)?, stride, padding)?)
    } else {
        trainable_conv2d(x, w, stride, padding)
    }
}

/// `x ⋆ w` through candle's differentiable ops (gradients reach `x` and `w`, for LoCon's
/// factors): candle's conv, except on a GPU whose convolutions are not cuDNN's, where candle's
/// CUDA conv would be cuDNN in a `cudnn` build (and cudarc panics without the library).
fn trainable_conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let im2col = x.device().is_cuda() && matches!(crate::devices::gpu_conv(), Ok((crate::devices::GpuConv::Im2col, _)));
    if im2col {
        im2col_conv2d(x, w, stride, padding)
    } else {
        x.conv2d(w, padding, stride, 1, 1)
    }
}

/// `x ⋆ w` as im2col + one matmul, from candle tensor ops only (so on any device and with
/// gradients): the k² views of the zero-padded input shifted by (i, j) and taken every `stride`
/// rows and columns, stacked into [B, C_in·k², H'·W'] in the order of the weight's
/// [C_out, C_in, k, k] flattening, then `W [C_out, C_in·k²] · cols`. Memory: k² copies of the
/// input, as candle's own CUDA conv without cuDNN (and PyTorch's slow path) spend.
pub fn im2col_conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c_in, h, wd) = x.dims4()?;
    let (c_out, w_in, k, k2) = w.dims4()?;
    if w_in != c_in || k != k2 || stride == 0 || h + 2 * padding < k || wd + 2 * padding < k {
        candle_core::bail!("im2col conv: input {:?} and weight {:?} do not fit (stride {stride}, padding {padding})", x.dims(), w.dims());
    }
    let (ho, wo) = ((h + 2 * padding - k) / stride + 1, (wd + 2 * padding - k) / stride + 1);
    let w2 = w.reshape((c_out, c_in * k * k))?;
    if k == 1 && stride == 1 && padding == 0 {
        return w2.broadcast_matmul(&x.reshape((b, c_in, h * wd))?)?.reshape((b, c_out, h, wd));
    }
    let xp = if padding > 0 { x.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)? } else { x.clone() };
    // Rows i, i+s, …, i+s·(n−1) of `dim`: a window of s·n (zero-padded past the end) seen as
    // [n, s], first column kept.
    let every = |t: Tensor, dim: usize, start: usize, n: usize| -> Result<Tensor> {
        if stride == 1 {
            return t.narrow(dim, start, n);
        }
        let span = stride * (n - 1) + 1;
        let t = t.narrow(dim, start, span)?.pad_with_zeros(dim, 0, stride - 1)?;
        let mut shape = t.dims().to_vec();
        shape.splice(dim..=dim, [n, stride]);
        t.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
    };
    let mut taps = Vec::with_capacity(k * k);
    for i in 0..k {
        let rows = every(xp.clone(), 2, i, ho)?;
        for j in 0..k {
            taps.push(every(rows.clone(), 3, j, wo)?);
        }
    }
    let cols = Tensor::stack(&taps, 2)?.reshape((b, c_in * k * k, ho * wo))?;
    w2.broadcast_matmul(&cols)?.reshape((b, c_out, ho, wo))
}

/// d(loss)/d(input) of `conv2d(x, weight, padding, stride)` for an input of spatial size `in_hw`,
/// from the output gradient `g` [B, C_out, H', W'] → [B, C_in, H, W].
pub fn input_grad(g: &Tensor, weight: &Tensor, stride: usize, padding: usize, in_hw: (usize, usize)) -> Result<Tensor> {
    let (c_out, c_in, k, _) = weight.dims4()?;
    let (b, _, ho, wo) = g.dims4()?;
    let w = weight.to_dtype(g.dtype())?;
    if g.device().is_cpu() && g.dtype() == DType::F32 {
        let geometry = Geometry { stride, top: padding, left: padding, out_h: ho, out_w: wo };
        return cpu_conv::input_grad(g, &w, geometry, in_hw);
    }
    if k == 1 && stride == 1 && padding == 0 {
        // A 1×1 conv is a matmul over channels: dx = Wᵀ·g per pixel.
        let w2 = w.reshape((c_out, c_in))?.t()?;
        return w2.broadcast_matmul(&g.reshape((b, c_out, ho * wo))?)?.reshape((b, c_in, ho, wo));
    }
    // Zero-insert for stride s: [.., H'] → [.., s·H'] with the values at multiples of s.
    let g = if stride > 1 {
        g.reshape((b, c_out, ho, 1, wo, 1))?.pad_with_zeros(3, 0, stride - 1)?.pad_with_zeros(5, 0, stride - 1)?.reshape((
            b,
            c_out,
            ho * stride,
            wo * stride,
        ))?
    } else {
        g.clone()
    };
    // Padding of the full correlation: K−1−p before; after, whatever makes the result H long.
    let pad = |in_len: usize, out_len: usize| -> (isize, isize) {
        let lo = k as isize - 1 - padding as isize;
        let hi = in_len as isize + k as isize - 1 - lo - (out_len * stride) as isize;
        (lo, hi)
    };
    let (top, bottom) = pad(in_hw.0, ho);
    let (left, right) = pad(in_hw.1, wo);
    let flipped = w.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?;
    let same = top == bottom && left == right && top == left && top >= 0;
    if same {
        return conv2d(&g, &flipped, 1, top as usize);
    }
    let fit = |t: Tensor, dim: usize, lo: isize, hi: isize| -> Result<Tensor> {
        let t = if lo < 0 { t.narrow(dim, (-lo) as usize, t.dim(dim)? - (-lo) as usize)? } else { t };
        let t = if hi < 0 { t.narrow(dim, 0, t.dim(dim)? - (-hi) as usize)? } else { t };
        t.pad_with_zeros(dim, lo.max(0) as usize, hi.max(0) as usize)
    };
    let g = fit(fit(g, 2, top, bottom)?, 3, left, right)?;
    conv2d(&g, &flipped, 1, 0)
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_against_composed;
    use super::*;
    use candle_core::{DType, Device};

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn input_gradient_equals_candles_for_every_stride_padding_and_size() {
        // f32 runs our CPU kernel; f64 the device-generic path that CUDA takes.
        for dtype in [DType::F32, DType::F64] {
            let r = |shape: &[usize]| randn(shape).to_dtype(dtype).unwrap();
            for &(k, s, p, h, w) in
                &[(3, 1, 1, 6, 5), (1, 1, 0, 4, 4), (3, 2, 1, 8, 8), (3, 2, 1, 7, 9), (3, 2, 0, 9, 9), (3, 1, 0, 5, 6), (1, 2, 0, 6, 6)]
            {
                let conv = Conv2d::new(r(&[5, 3, k, k]), Some(r(&[5])), s, p);
                let composed = |t: &[Tensor]| -> Result<Tensor> {
                    t[0].conv2d(conv.weight(), p, s, 1, 1)?.broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, 5, 1, 1))?)
                };
                check_against_composed(&[r(&[2, 3, h, w])], |t| conv.forward(&t[0]), composed, 1e-5);
            }
        }
    }

    /// The GPU's im2col path (run here on the CPU in f64: same tensor ops) against candle's conv,
    /// values and the gradients of input and weight, for every geometry the UNet and VAE use and
    /// odd sizes.
    #[test]
    fn im2col_conv_equals_candles_conv_with_gradients() {
        use crate::diffusion::nn::rel_error;
        let r = |shape: &[usize]| candle_core::Var::from_tensor(&randn(shape).to_dtype(DType::F64).unwrap()).unwrap();
        for &(k, s, p, h, w) in
            &[(3, 1, 1, 6, 5), (1, 1, 0, 4, 4), (3, 2, 1, 8, 8), (3, 2, 1, 7, 9), (3, 2, 0, 9, 9), (3, 1, 0, 5, 6), (1, 2, 0, 6, 6)]
        {
            let (x, wt) = (r(&[2, 3, h, w]), r(&[5, 3, k, k]));
            let ours = im2col_conv2d(x.as_tensor(), wt.as_tensor(), s, p).unwrap();
            let theirs = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "k{k} s{s} p{p} {h}×{w}");
            assert!(rel_error(&ours, &theirs).unwrap() < 1e-12, "k{k} s{s} p{p} {h}×{w}");
            let g = Tensor::randn(0f64, 1.0, ours.dims(), &Device::Cpu).unwrap();
            let grads = |y: &Tensor| (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (grads(&ours), grads(&theirs));
            for v in [&x, &wt] {
                let e = rel_error(a.get(v.as_tensor()).unwrap(), b.get(v.as_tensor()).unwrap()).unwrap();
                assert!(e < 1e-12, "gradient k{k} s{s} p{p} {h}×{w}: {e}");
            }
        }
        let e = im2col_conv2d(&randn(&[1, 2, 4, 4]), &randn(&[3, 4, 3, 3]), 1, 1).unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
    }

    #[test]
    fn extra_and_residual_are_added_and_get_their_gradients() {
        let conv = Conv2d::new(randn(&[4, 3, 3, 3]), Some(randn(&[4])), 1, 1);
        let composed = |t: &[Tensor]| -> Result<Tensor> {
            let y = t[0].conv2d(conv.weight(), 1, 1, 1, 1)?.broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, 4, 1, 1))?)?;
            y.broadcast_add(&t[1].unsqueeze(2)?.unsqueeze(3)?)? + &t[2]
        };
        let inputs = [randn(&[2, 3, 5, 5]), randn(&[2, 4]), randn(&[2, 4, 5, 5])];
        check_against_composed(&inputs, |t| conv.forward_with(&t[0], Some(&t[1]), Some(&t[2])), composed, 1e-5);
    }

    #[test]
    fn the_frozen_weight_gets_no_gradient() {
        let x = candle_core::Var::from_tensor(&randn(&[1, 3, 4, 4])).unwrap();
        let conv = Conv2d::new(randn(&[2, 3, 3, 3]), None, 1, 1);
        let grads = conv.forward(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        let weight_shaped = grads.get_ids().filter(|id| grads.get_id(**id).unwrap().dims() == [2, 3, 3, 3]).count();
        assert_eq!(weight_shaped, 0);
        // Untracked input: a plain conv, no op recorded.
        let y = conv.forward(&randn(&[1, 3, 4, 4])).unwrap();
        assert!(!y.track_op());
        assert_eq!(y.dtype(), DType::F32);
    }

    /// A live conv LoRA (LoCon) on a 3×3 stride-2 conv: the output is the conv with the merged
    /// weight `W + scale·up·down`, and the factors get the gradients finite differences give (f64).
    #[test]
    fn conv_lora_matches_merged_weight_and_finite_differences() {
        use crate::diffusion::nn::{rel_error, Adapter};
        use candle_core::Var;
        let dev = Device::Cpu;
        let r64 = |s: &[usize]| Tensor::randn(0f64, 1.0, s, &dev).unwrap();
        let w = r64(&[4, 3, 3, 3]);
        let vb = VarBuilder::from_tensors(
            std::collections::HashMap::from([("c.weight".to_string(), w.clone()), ("c.bias".to_string(), r64(&[4]))]),
            DType::F64,
            &dev,
        );
        let adapters = Adapters::new();
        let conv = Conv2d::load_adapted(vb.pp("c"), &adapters, 3, 4, 3, 2, 1).unwrap();
        let x = r64(&[2, 3, 7, 7]);
        let down = Var::from_tensor(&r64(&[2, 3, 3, 3])).unwrap();
        let up = Var::from_tensor(&r64(&[4, 2, 1, 1])).unwrap();
        adapters.attach("c", Adapter { down: down.as_tensor().clone(), up: up.as_tensor().clone(), scale: 0.6, magnitude: None }).unwrap();
        let y = conv.forward(&x).unwrap();
        let merged = (&w
            + up.flatten_from(1).unwrap().matmul(&down.flatten_from(1).unwrap()).unwrap().reshape((4, 3, 3, 3)).unwrap().affine(0.6, 0.0).unwrap())
        .unwrap();
        let want = Conv2d::new(merged, Some(vb.pp("c").get(4, "bias").unwrap()), 2, 1).forward(&x).unwrap();
        assert!(rel_error(&y, &want).unwrap() < 1e-12);
        let g = Tensor::randn(0f64, 1.0, y.dims(), &dev).unwrap();
        let loss = || (conv.forward(&x).unwrap() * &g).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let grads = (conv.forward(&x).unwrap() * &g).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&down, &up] {
            let analytic = grads.get(v.as_tensor()).expect("gradient reaches the factor").flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let orig = v.as_tensor().copy().unwrap();
            let flat = orig.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for i in (0..flat.len()).step_by(3) {
                let eps = 1e-6;
                let shifted = |d: f64| {
                    let mut f = flat.clone();
                    f[i] += d;
                    v.set(&Tensor::from_vec(f, orig.dims(), &dev).unwrap()).unwrap();
                    loss()
                };
                let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
                v.set(&orig).unwrap();
                assert!((fd - analytic[i]).abs() < 1e-6 * (1.0 + fd.abs()), "entry {i}: finite difference {fd} vs gradient {}", analytic[i]);
            }
        }
    }
}
