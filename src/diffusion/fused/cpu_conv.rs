//! 2-D convolution of f32 tensors on the CPU as im2col + GEMM (PyTorch's `slow_conv2d` scheme),
//! with the im2col buffer built a tile of output rows at a time so it stays within a fixed budget
//! (a 512 px VAE layer would otherwise need a 1.2 GB column matrix), built in parallel over input
//! channels, and multiplied by the weight viewed as [C_out, C_in·K·K] without copying it (the
//! `gemm` crate, as candle's own matmul). Padding may differ per side, which the backward of a
//! strided conv needs.

use super::matmul::{all_threads, mm};
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements of one im2col tile (16 MiB in f32).
const COLS_BUDGET: usize = 1 << 22;

/// Where the kernel's window starts: output (r, c) reads input rows `r·stride − top + kh` and
/// columns `c·stride − left + kw`; the output is `out_h × out_w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub stride: usize,
    pub top: usize,
    pub left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Geometry {
    /// torch's `Conv2d(stride, padding)` on an `h × w` input with a `k × k` kernel.
    pub fn symmetric(h: usize, w: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        if h + 2 * padding < k || w + 2 * padding < k {
            bail!("conv2d: a {h}x{w} input padded by {padding} is smaller than the {k}x{k} kernel");
        }
        Ok(Geometry { stride, top: padding, left: padding, out_h: (h + 2 * padding - k) / stride + 1, out_w: (w + 2 * padding - k) / stride + 1 })
    }
}

/// `x` [B, C_in, H, W] (f32, CPU) ⋆ `weight` [C_out, C_in, K, K] → [B, C_out, out_h, out_w]. No
/// gradient is recorded.
pub fn conv2d(x: &Tensor, weight: &Tensor, g: Geometry) -> Result<Tensor> {
    with_budget(x, weight, g, COLS_BUDGET)
}

fn with_budget(x: &Tensor, weight: &Tensor, g: Geometry, budget: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&weight.contiguous()?, &Im2ColGemm(g, budget))
}

struct Im2ColGemm(Geometry, usize);

impl candle_core::CustomOp2 for Im2ColGemm {
    fn name(&self) -> &'static str {
        "conv2d-im2col-gemm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (b, c_in, h, w) = xl.shape().dims4()?;
        let (c_out, wc_in, k, k2) = wl.shape().dims4()?;
        if wc_in != c_in || k != k2 {
            bail!("conv2d: weight {:?} does not fit an input with {c_in} channels", wl.dims());
        }
        let x = &xs.as_slice::<f32>()?[xl.start_offset()..xl.start_offset() + xl.shape().elem_count()];
        let wt = &ws.as_slice::<f32>()?[wl.start_offset()..wl.start_offset() + wl.shape().elem_count()];
        let (oh, ow) = (g.out_h, g.out_w);
        let kk = c_in * k * k;
        let mut out = vec![0f32; b * c_out * oh * ow];
        let par = all_threads();
        let direct = k == 1 && g.stride == 1 && g.top == 0 && g.left == 0 && oh == h && ow == w;
        let rows_per_tile = (self.1 / (kk * ow).max(1)).clamp(1, oh);
        let mut cols = if direct { Vec::new() } else { vec![0f32; kk * rows_per_tile * ow] };
        for bi in 0..b {
            let xb = &x[bi * c_in * h * w..(bi + 1) * c_in * h * w];
            let ob = &mut out[bi * c_out * oh * ow..(bi + 1) * c_out * oh * ow];
            if direct {
                // 1×1, stride 1: the input already is the [C_in, H·W] column matrix.
                unsafe { mm((c_out, oh * ow, kk), ob.as_mut_ptr(), (oh * ow, 1), false, wt.as_ptr(), (kk, 1), xb.as_ptr(), (h * w, 1), 1.0, par) };
                continue;
            }
            for r0 in (0..oh).step_by(rows_per_tile) {
                let rows = rows_per_tile.min(oh - r0);
                let n = rows * ow;
                let cols = &mut cols[..kk * n];
                // Row (ci, kh, kw) of the column matrix: the input pixel each output pixel reads.
                cols.par_chunks_mut(k * k * n).enumerate().for_each(|(ci, block)| {
                    let plane = &xb[ci * h * w..(ci + 1) * h * w];
                    for kh in 0..k {
                        for kw in 0..k {
                            let dst = &mut block[(kh * k + kw) * n..(kh * k + kw + 1) * n];
                            for r in 0..rows {
                                let iy = ((r0 + r) * g.stride + kh) as isize - g.top as isize;
                                let row = &mut dst[r * ow..(r + 1) * ow];
                                if iy < 0 || iy >= h as isize {
                                    row.fill(0.0);
                                    continue;
                                }
                                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                                for (c, v) in row.iter_mut().enumerate() {
                                    let ix = (c * g.stride + kw) as isize - g.left as isize;
                                    *v = if ix >= 0 && ix < w as isize { src[ix as usize] } else { 0.0 };
                                }
                            }
                        }
                    }
                });
                // out[:, r0·ow ..] (rows of length oh·ow, one per output channel) = W · cols.
                let dst = ob[r0 * ow..].as_mut_ptr();
                unsafe { mm((c_out, n, kk), dst, (oh * ow, 1), false, wt.as_ptr(), (kk, 1), cols.as_ptr(), (n, 1), 1.0, par) };
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c_out, oh, ow))))
    }
}

/// The input gradient of `conv2d(x, weight, g)` for an `in_h × in_w` input, from the output
/// gradient `grad` [B, C_out, out_h, out_w] (f32, CPU) → [B, C_in, in_h, in_w]: the column
/// gradient Wᵀ·grad (W read in place as a transposed [C_out, C_in·K·K] matrix), scattered back
/// onto the input pixels each column came from (col2im), as PyTorch's `slow_conv2d_backward`.
/// Any stride and padding; no flipped copy of the weight, no zero-inserted gradient.
pub fn input_grad(grad: &Tensor, weight: &Tensor, g: Geometry, in_hw: (usize, usize)) -> Result<Tensor> {
    grad.contiguous()?.apply_op2_no_bwd(&weight.contiguous()?, &Col2Im(g, in_hw, COLS_BUDGET))
}

struct Col2Im(Geometry, (usize, usize), usize);

impl candle_core::CustomOp2 for Col2Im {
    fn name(&self) -> &'static str {
        "conv2d-input-grad-col2im"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, (h, w)) = (self.0, self.1);
        let (b, c_out, oh, ow) = gl.shape().dims4()?;
        let (wc_out, c_in, k, _) = wl.shape().dims4()?;
        if wc_out != c_out || (oh, ow) != (g.out_h, g.out_w) {
            bail!("conv2d backward: gradient {:?} does not fit weight {:?} / geometry {g:?}", gl.dims(), wl.dims());
        }
        let gy = &gs.as_slice::<f32>()?[gl.start_offset()..gl.start_offset() + gl.shape().elem_count()];
        let wt = &ws.as_slice::<f32>()?[wl.start_offset()..wl.start_offset() + wl.shape().elem_count()];
        let kk = c_in * k * k;
        let par = all_threads();
        let mut dx = vec![0f32; b * c_in * h * w];
        let direct = k == 1 && g.stride == 1 && g.top == 0 && g.left == 0 && (oh, ow) == (h, w);
        let rows_per_tile = (self.2 / (kk * ow).max(1)).clamp(1, oh);
        let mut cols = if direct { Vec::new() } else { vec![0f32; kk * rows_per_tile * ow] };
        for bi in 0..b {
            let gb = &gy[bi * c_out * oh * ow..(bi + 1) * c_out * oh * ow];
            let db = &mut dx[bi * c_in * h * w..(bi + 1) * c_in * h * w];
            if direct {
                // 1×1, stride 1: dx = Wᵀ·grad per pixel, written in place.
                unsafe { mm((c_in, oh * ow, c_out), db.as_mut_ptr(), (h * w, 1), false, wt.as_ptr(), (1, kk), gb.as_ptr(), (oh * ow, 1), 1.0, par) };
                continue;
            }
            for r0 in (0..oh).step_by(rows_per_tile) {
                let rows = rows_per_tile.min(oh - r0);
                let n = rows * ow;
                let cols = &mut cols[..kk * n];
                unsafe { mm((kk, n, c_out), cols.as_mut_ptr(), (n, 1), false, wt.as_ptr(), (1, kk), gb[r0 * ow..].as_ptr(), (oh * ow, 1), 1.0, par) };
                // Each input channel's plane takes the K·K rows of its own columns: no two threads write one pixel.
                db.par_chunks_mut(h * w).enumerate().for_each(|(ci, plane)| {
                    for kh in 0..k {
                        for kw in 0..k {
                            let src = &cols[((ci * k + kh) * k + kw) * n..((ci * k + kh) * k + kw + 1) * n];
                            for r in 0..rows {
                                let iy = ((r0 + r) * g.stride + kh) as isize - g.top as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                let dst = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                                for (c, &v) in src[r * ow..(r + 1) * ow].iter().enumerate() {
                                    let ix = (c * g.stride + kw) as isize - g.left as isize;
                                    if ix >= 0 && ix < w as isize {
                                        dst[ix as usize] += v;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        }
        Ok((CpuStorage::F32(dx), Shape::from((b, c_in, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::rel_error;
    use candle_core::Device;

    #[test]
    fn matches_candles_conv_for_kernels_strides_paddings_and_tiles() {
        let dev = Device::Cpu;
        for &(k, s, p, h, w, cin, cout) in
            &[(3, 1, 1, 9, 7, 5, 4), (1, 1, 0, 6, 5, 3, 2), (3, 2, 1, 8, 8, 2, 3), (3, 2, 0, 9, 9, 2, 2), (3, 1, 0, 5, 6, 1, 1)]
        {
            let x = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev).unwrap();
            let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
            // One tile, and tiles of one output row each.
            for budget in [COLS_BUDGET, 1] {
                let ours = with_budget(&x, &wt, Geometry::symmetric(h, w, k, s, p).unwrap(), budget).unwrap();
                assert_eq!(ours.dims(), theirs.dims());
                assert!(rel_error(&ours, &theirs).unwrap() < 1e-6, "k{k} s{s} p{p} budget {budget}");
            }
        }
        // Input gradients against candle's autograd (conv_transpose2d), one tile and row tiles.
        for &(k, s, p, h, w) in &[(3, 1, 1, 6, 5), (1, 1, 0, 4, 4), (3, 2, 1, 8, 8), (3, 2, 1, 7, 9), (3, 2, 0, 9, 9), (1, 2, 0, 6, 6)] {
            let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev).unwrap()).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (4, 3, k, k), &dev).unwrap();
            let y = x.as_tensor().conv2d(&wt, p, s, 1, 1).unwrap();
            let gy = Tensor::randn(0f32, 1.0, y.shape(), &dev).unwrap();
            let theirs = (y * &gy).unwrap().sum_all().unwrap().backward().unwrap().remove(x.as_tensor()).unwrap();
            for budget in [COLS_BUDGET, 1] {
                let geometry = Geometry::symmetric(h, w, k, s, p).unwrap();
                let ours = gy.contiguous().unwrap().apply_op2_no_bwd(&wt, &Col2Im(geometry, (h, w), budget)).unwrap();
                assert!(rel_error(&ours, &theirs).unwrap() < 1e-5, "backward k{k} s{s} p{p} budget {budget}");
            }
        }
        // Asymmetric padding: one extra row/column after, as padding the input right/bottom would.
        let x = Tensor::randn(0f32, 1.0, (1, 2, 6, 6), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let ours = conv2d(&x, &wt, Geometry { stride: 2, top: 0, left: 0, out_h: 3, out_w: 3 }).unwrap();
        let padded = x.pad_with_zeros(2, 0, 1).unwrap().pad_with_zeros(3, 0, 1).unwrap();
        assert!(rel_error(&ours, &padded.conv2d(&wt, 0, 2, 1, 1).unwrap()).unwrap() < 1e-6);
    }
}
