//! Process-wide settings of the compute libraries, applied once at start-up.

/// Applies the settings below (`HFSKY_MALLOC_DEFAULTS=1` keeps glibc's allocator defaults).
///
/// candle's CPU worker pool spins 25,000 times before parking an idle worker. With one worker per
/// core, that spinning competes with the GEMM threads of the next op: on 2 cores it cost 10% of a
/// real-size SD 1.5 training step (`benches/diffusion_bench train-step`, 3.24 → 2.92 s). Workers
/// park at once unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` is already set. Call before the first
/// tensor op (candle reads the variable when it starts the pool).
pub fn configure() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Single-threaded here: called first thing in `main`, before any thread is started.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
    if std::env::var_os("HFSKY_MALLOC_DEFAULTS").is_none() {
        reuse_large_allocations();
    }
}

/// glibc serves every allocation above 32 MiB (and, at first, above 128 KiB) with a fresh `mmap`
/// and returns it with `munmap` on free, so each large activation of a real-size step is
/// page-faulted and zeroed anew: 31% of a 512 px SD 1.5 training step on the CPU went to page
/// faults. Serving them from the heap, which keeps freed memory for reuse, cut the step from 20.4
/// to 14.1–15.6 s with the same peak RSS (6.9 GB). Freed heap memory is not handed back to the OS
/// until the process exits, which suits a command-line run. Call before allocating much.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reuse_large_allocations() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reuse_large_allocations() {}

/// Hands the memory freed so far back to the OS: with large buffers kept on the heap for reuse,
/// what a finished phase freed (the text encoders once prompts are encoded) would otherwise stay
/// resident beside the next phase's allocations of other sizes.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's peak resident memory so far (`VmHWM` in /proc/self/status), in bytes; `None`
/// where the OS does not report it.
pub fn peak_host_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}
