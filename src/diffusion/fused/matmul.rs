//! The one strided GEMM call of the CPU kernels (`gemm` crate, as candle's own matmul), with
//! operands given by pointer and (row, column) strides so weights and heads are read in place.

/// How the `gemm` crate may use the rayon pool: every thread when there is more than one.
pub fn all_threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        n if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    }
}

/// dst[m × n] (strides rs, cs) = (acc ? dst : 0) + alpha · lhs[m × k] · rhs[k × n].
///
/// # Safety
/// Every pointer must be valid for all elements its strides and sizes address, and `dst` must
/// not overlap the operands.
#[allow(clippy::too_many_arguments)]
pub unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (d_rs, d_cs): (usize, usize),
    acc: bool,
    lhs: *const f32,
    (l_rs, l_cs): (usize, usize),
    rhs: *const f32,
    (r_rs, r_cs): (usize, usize),
    alpha: f32,
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        d_cs as isize,
        d_rs as isize,
        acc,
        lhs,
        l_cs as isize,
        l_rs as isize,
        rhs,
        r_cs as isize,
        r_rs as isize,
        if acc { 1.0 } else { 0.0 },
        alpha,
        false,
        false,
        false,
        par,
    )
}
