//! The compute devices this binary can use, what each supports, and why `device: auto` picks
//! the one it picks (as `accelerate env` / `torch.cuda` report them).

use serde::Serialize;

pub mod wheel_libs;

/// One device, as `hfsky env` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// `cpu` or `cuda`.
    pub kind: &'static str,
    /// The CUDA ordinal (`cuda:N`); null for the CPU.
    pub ordinal: Option<usize>,
    pub name: String,
    /// `major.minor` (e.g. "8.6"); null for the CPU.
    pub compute_capability: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    /// Whether bf16 matmuls run here (CUDA compute capability ≥ 8.0; candle's CPU backend has none).
    pub bf16: bool,
    /// Whether f16 runs here (every CUDA GPU hfsky can use; on the CPU through candle's f16 kernels).
    pub f16: bool,
    /// Compute threads (candle's rayon pool on the CPU); null for GPUs.
    pub threads: Option<usize>,
}

/// The CUDA devices found, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CudaProbe {
    pub devices: Vec<DeviceInfo>,
    /// Why no GPU can be used: no CUDA build, no driver, or the driver's error.
    pub unavailable: Option<String>,
}

/// Whether this binary was built with `--features cuda`.
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// Whether this binary's GPU convolutions can go through cuDNN (`--features cudnn`, which
/// scripts/build-cuda.sh turns on); whether they do is [`gpu_conv`]'s answer.
pub const CUDNN_BUILD: bool = cfg!(feature = "cudnn");

/// How a convolution runs on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuConv {
    /// cuDNN's `cudnnConvolutionForward` through candle (the algorithm PyTorch would also pick
    /// among, with `torch.backends.cudnn.enabled`).
    Cudnn,
    /// The k² shifted views of the padded input as one matrix and one cuBLAS GEMM
    /// (`diffusion::fused::conv::im2col_conv2d`): what a build without cuDNN does, and the
    /// fallback when the cuDNN library is not there.
    Im2col,
}

/// The environment variable that picks the GPU convolution: `auto` (default: cuDNN when built
/// with it and its library loads), `cudnn` (required: the device fails to open without it) or
/// `im2col`. For measuring one against the other (benches/gpu_check.sh) and for working around a
/// cuDNN problem.
pub const GPU_CONV_ENV: &str = "HFSKY_GPU_CONV";

/// The cuDNN library a `cudnn` build opens at run time (cuDNN 9, the major cudarc binds), the
/// file names that count, and where a user gets it (the CUDA 13.0 wheel).
pub const CUDNN_LIBRARY: (&str, &[&str], &str) = ("cuDNN", &["libcudnn.so.9", "libcudnn.so"], "pip install nvidia-cudnn-cu13==9.13.0.50");

/// The GPU convolution for a binary built with cuDNN or not (`built`), the value of
/// [`GPU_CONV_ENV`] (`requested`) and whether [`CUDNN_LIBRARY`] loads (`found`): the choice and,
/// when it is not cuDNN, why. `Err` for a value that is not `auto`, `cudnn` or `im2col`, or for
/// `cudnn` that cannot be had.
pub fn choose_gpu_conv(built: bool, requested: Option<&str>, found: bool) -> Result<(GpuConv, Option<String>), String> {
    let (lib, names, fix) = CUDNN_LIBRARY;
    let unavailable = if !built {
        Some("this binary was built without cuDNN (scripts/build-cuda.sh builds with it)".to_string())
    } else if !found {
        Some(format!(
            "{lib} ({}) cannot be loaded: {fix} (hfsky finds NVIDIA's wheels in the Python environment), or put its lib folder on LD_LIBRARY_PATH",
            names[0]
        ))
    } else {
        None
    };
    match requested.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("auto") {
        "auto" => Ok(match unavailable {
            None => (GpuConv::Cudnn, None),
            Some(why) => (GpuConv::Im2col, Some(format!("{why}; convolutions use im2col + cuBLAS"))),
        }),
        "cudnn" => match unavailable {
            None => Ok((GpuConv::Cudnn, None)),
            Some(why) => Err(format!("{GPU_CONV_ENV}=cudnn, but {why}")),
        },
        "im2col" => Ok((GpuConv::Im2col, Some(format!("{GPU_CONV_ENV}=im2col")))),
        other => Err(format!("{GPU_CONV_ENV}={other:?} is not one of auto, cudnn, im2col")),
    }
}

/// This process's GPU convolution (see [`choose_gpu_conv`]), decided once and borrowed after
/// (every GPU convolution asks): the environment and the library do not change under a running
/// process.
pub fn gpu_conv() -> &'static Result<(GpuConv, Option<String>), String> {
    static CHOICE: std::sync::OnceLock<Result<(GpuConv, Option<String>), String>> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| {
        let requested = std::env::var(GPU_CONV_ENV).ok();
        choose_gpu_conv(CUDNN_BUILD, requested.as_deref(), CUDNN_BUILD && loadable(CUDNN_LIBRARY.1))
    })
}

/// The compute capabilities this binary's CUDA kernels were compiled for
/// (`CUDA_COMPUTE_CAP` at build time, set by scripts/build-cuda.sh), if known.
pub fn compiled_compute_caps() -> Option<Vec<String>> {
    if !CUDA_BUILD {
        return None;
    }
    option_env!("CUDA_COMPUTE_CAP").map(|s| s.split([',', ' ']).filter(|c| !c.is_empty()).map(String::from).collect())
}

/// Whether kernels compiled (as PTX) for `compiled` run on a GPU of capability `device`
/// ("major.minor"): the driver JIT-compiles PTX for its own GPU only when that GPU is at least the
/// PTX's capability. `Err` says which build to use instead.
pub fn kernels_fit(compiled: &[String], device: &str) -> Result<(), String> {
    let num = |s: &str| -> Option<u32> {
        match s.split_once('.') {
            Some((a, b)) => Some(a.parse::<u32>().ok()? * 10 + b.parse::<u32>().ok()?),
            None => s.parse().ok(),
        }
    };
    let Some(dev) = num(device) else { return Ok(()) };
    let caps: Vec<u32> = compiled.iter().filter_map(|c| num(c)).collect();
    match caps.iter().min() {
        Some(&lowest) if dev < lowest => Err(format!(
            "this binary's CUDA kernels are built for sm_{lowest} and newer, and this GPU is sm_{dev}: use the sm75 build \
             (scripts/build-cuda.sh; see the README's CUDA section), or device: cpu"
        )),
        _ => Ok(()),
    }
}

/// bf16 kernels need compute capability 8.0 (Ampere) or newer.
pub fn supports_bf16(major: u32) -> bool {
    major >= 8
}

/// The CPU: name from /proc/cpuinfo where there is one, threads from candle's pool (rayon; `RAYON_NUM_THREADS`).
pub fn cpu() -> DeviceInfo {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let (total, free) = host_memory();
    DeviceInfo {
        kind: "cpu",
        ordinal: None,
        name,
        compute_capability: None,
        memory_total_bytes: total,
        memory_free_bytes: free,
        bf16: false,
        f16: true,
        threads: Some(candle_core::utils::get_num_threads()),
    }
}

/// (MemTotal, MemAvailable) from /proc/meminfo, where there is one, lowered to this process's
/// cgroup v2 limit (`memory.max` less `memory.current`) where that is smaller: in a container or
/// a notebook VM the machine's free memory is not what the process may use.
fn host_memory() -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else { return (None, None) };
    let field = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()).map(|kb| kb * 1024)
    };
    let (mut total, mut free) = (field("MemTotal:"), field("MemAvailable:"));
    if let Some((limit, used)) = cgroup_memory() {
        total = total.map(|t| t.min(limit));
        free = free.map(|f| f.min(limit.saturating_sub(used)));
    }
    (total, free)
}

/// (memory.max, memory.current) of this process's cgroup v2, when it has a limit.
fn cgroup_memory() -> Option<(u64, u64)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().and_then(|v| v.trim().parse::<u64>().ok());
    Some((read("memory.max")?, read("memory.current")?))
}

/// Device memory in use on `device` right now (total less free, as `nvidia-smi` counts it: this
/// process's tensors and CUDA context, and any other process's), in bytes; `None` on the CPU.
/// candle has no caching allocator, so sampled at a step's high point it is that step's peak.
pub fn memory_in_use(device: &candle_core::Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => d.cuda_stream().context().mem_get_info().ok().map(|(free, total)| (total - free) as u64),
        _ => None,
    }
}

/// The CUDA devices: none without a CUDA build, else what the driver reports.
pub fn cuda() -> CudaProbe {
    #[cfg(feature = "cuda")]
    {
        cuda_impl::probe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        CudaProbe {
            devices: Vec::new(),
            unavailable: Some(
                "this hfsky binary was built without CUDA (build one with scripts/build-cuda.sh, or cargo build --release --features cuda)".into(),
            ),
        }
    }
}

/// What `device: auto` resolves to: the first GPU, else the CPU with the reason.
pub fn auto() -> (candle_core::Device, Option<String>) {
    match open_cuda(0) {
        Ok(d) => (d, None),
        Err(why) => (candle_core::Device::Cpu, Some(why)),
    }
}

/// CUDA device `ordinal`, opened only after the probe found it usable: a driver, the runtime
/// libraries candle opens with the device (cuBLAS, cuRAND), kernels built for its compute
/// capability, and a GPU convolution ([`gpu_conv`]: cuDNN is optional unless asked for). `Err`
/// says which of those is missing and what to do. Checking first matters because the CUDA build loads those libraries at run time (so it starts on machines without
/// them) and cudarc panics when one it needs cannot be loaded.
pub fn open_cuda(ordinal: usize) -> Result<candle_core::Device, String> {
    let probe = cuda();
    let Some(d) = probe.devices.get(ordinal) else {
        return Err(probe.unavailable.unwrap_or_else(|| format!("there is no CUDA device {ordinal}")));
    };
    if let Some(compiled) = compiled_compute_caps() {
        kernels_fit(&compiled, d.compute_capability.as_deref().unwrap_or(""))?;
    }
    gpu_conv().as_ref().map_err(Clone::clone)?;
    candle_core::Device::new_cuda(ordinal).map_err(|e| format!("CUDA device {ordinal} failed to initialise: {e}"))
}

/// The shared libraries the CUDA build opens at run time, each with the file names that count
/// (the sonames CUDA 13 and the driver use, the unversioned developer link, and CUDA 12's cuBLAS,
/// which cudarc also accepts), and where a user gets it.
pub const CUDA_RUNTIME_LIBRARIES: [(&str, &[&str], &str); 3] = [
    ("the NVIDIA driver", &["libcuda.so.1", "libcuda.so"], "install the NVIDIA driver, or on Colab/Kaggle pick a GPU runtime"),
    ("cuBLAS", &["libcublas.so.13", "libcublas.so", "libcublas.so.12"], "pip install nvidia-cublas==13.0.2.14"),
    ("cuRAND", &["libcurand.so.10", "libcurand.so"], "pip install nvidia-curand==10.4.0.35"),
];

/// Why the CUDA libraries cannot be used, given which of [`CUDA_RUNTIME_LIBRARIES`] loaded
/// (`found[i]` for entry `i`); `None` when all did. "found" covers NVIDIA's PyPI wheels in a
/// Python environment ([`wheel_libs`]) as well as the loader's own search.
pub fn missing_libraries_message(found: &[bool]) -> Option<String> {
    let missing: Vec<_> = CUDA_RUNTIME_LIBRARIES.iter().zip(found).filter(|(_, ok)| !**ok).map(|(lib, _)| lib).collect();
    if missing.is_empty() {
        return None;
    }
    if missing[0].0 == CUDA_RUNTIME_LIBRARIES[0].0 {
        let (_, names, fix) = CUDA_RUNTIME_LIBRARIES[0];
        return Some(format!("no NVIDIA driver: {} cannot be loaded; {fix}", names[0]));
    }
    let names: Vec<String> = missing.iter().map(|(what, names, _)| format!("{what} ({})", names[0])).collect();
    let fixes: Vec<&str> = missing.iter().map(|(_, _, fix)| *fix).collect();
    Some(format!(
        "the CUDA runtime libraries are not found: {}; {} (hfsky finds NVIDIA's wheels in the Python \
         environment), or put their lib folders on LD_LIBRARY_PATH (see the README's CUDA section)",
        names.join(", "),
        fixes.join(" and ")
    ))
}

/// Which of [`CUDA_RUNTIME_LIBRARIES`] the dynamic loader can open here.
#[cfg(feature = "cuda")]
fn loadable_libraries() -> Vec<bool> {
    CUDA_RUNTIME_LIBRARIES.iter().map(|(_, names, _)| loadable(names)).collect()
}

/// Whether a library under one of `names` can be opened (always false without CUDA): by name
/// (`LD_LIBRARY_PATH`, the system's folders), else from NVIDIA's wheels in a Python environment
/// ([`wheel_libs::site_packages_dirs`]).
fn loadable(names: &[&str]) -> bool {
    if !CUDA_BUILD {
        return false;
    }
    // SAFETY: loading a CUDA library runs only its initialisers, which have no preconditions; the
    // handle is dropped at once (cudarc keeps its own).
    if names.iter().any(|n| unsafe { libloading::Library::new(*n) }.is_ok()) {
        return true;
    }
    static SITE_PACKAGES: std::sync::OnceLock<Vec<std::path::PathBuf>> = std::sync::OnceLock::new();
    load_from_wheels(SITE_PACKAGES.get_or_init(wheel_libs::site_packages_dirs), names)
}

/// Loads the first of `names` found in NVIDIA's wheels under `site_packages`
/// ([`wheel_libs::find`]) and keeps it loaded for the life of the process, so that a later
/// `dlopen` by name (cudarc's) gets it. False when none is there or it fails to load (logged).
fn load_from_wheels(site_packages: &[std::path::PathBuf], names: &[&str]) -> bool {
    let Some(path) = wheel_libs::find(site_packages, names) else { return false };
    // SAFETY: as in `loadable`; the handle is leaked on purpose, never unloaded.
    match unsafe { libloading::Library::new(&path) } {
        Ok(lib) => {
            tracing::info!("loaded {} from a Python environment", path.display());
            std::mem::forget(lib);
            true
        }
        Err(e) => {
            tracing::warn!("{} could not be loaded: {e}", path.display());
            false
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda_impl {
    //! Straight from the CUDA driver API (through candle's cudarc): `cuInit`, `cuDeviceGetCount`,
    //! `cuDeviceGetName`, `cuDeviceGetAttribute`, `cuDeviceTotalMem`, and `cuMemGetInfo` in the
    //! device's primary context.
    use super::{supports_bf16, CudaProbe, DeviceInfo};
    use candle_core::cuda_backend::cudarc::driver::{result, sys};

    pub fn probe() -> CudaProbe {
        if let Some(why) = super::missing_libraries_message(&super::loadable_libraries()) {
            return CudaProbe { devices: Vec::new(), unavailable: Some(why) };
        }
        if let Err(e) = result::init() {
            return CudaProbe { devices: Vec::new(), unavailable: Some(format!("no usable NVIDIA driver (cuInit: {e})")) };
        }
        let count = match result::device::get_count() {
            Ok(n) => n.max(0) as usize,
            Err(e) => return CudaProbe { devices: Vec::new(), unavailable: Some(format!("cuDeviceGetCount: {e}")) },
        };
        if count == 0 {
            return CudaProbe { devices: Vec::new(), unavailable: Some("the NVIDIA driver reports no GPU".into()) };
        }
        let mut devices = Vec::new();
        for ordinal in 0..count {
            match info(ordinal) {
                Ok(d) => devices.push(d),
                Err(e) => return CudaProbe { devices, unavailable: Some(format!("cuda:{ordinal}: {e}")) },
            }
        }
        CudaProbe { devices, unavailable: None }
    }

    fn info(ordinal: usize) -> Result<DeviceInfo, result::DriverError> {
        let dev = result::device::get(ordinal as i32)?;
        let name = result::device::get_name(dev)?;
        // SAFETY: `dev` is a valid device handle from cuDeviceGet.
        let (major, minor, total) = unsafe {
            (
                result::device::get_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                result::device::get_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
                result::device::total_mem(dev)?,
            )
        };
        // Free memory needs a context: candle's device for this ordinal makes the primary one current.
        let free = candle_core::Device::new_cuda(ordinal).ok().and_then(|_| result::mem_get_info().ok()).map(|(free, _)| free as u64);
        Ok(DeviceInfo {
            kind: "cuda",
            ordinal: Some(ordinal),
            name,
            compute_capability: Some(format!("{major}.{minor}")),
            memory_total_bytes: Some(total as u64),
            memory_free_bytes: free,
            bf16: supports_bf16(major as u32),
            f16: true,
            threads: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_reported_with_threads_and_no_bf16() {
        let c = cpu();
        assert_eq!(c.kind, "cpu");
        assert_eq!(c.threads, Some(candle_core::utils::get_num_threads()));
        assert!(!c.bf16 && c.f16 && !c.name.is_empty());
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(c.memory_total_bytes.unwrap() >= c.memory_free_bytes.unwrap());
        }
    }

    #[test]
    fn ptx_runs_on_its_capability_and_newer_only() {
        let sm80 = vec!["80".to_string()];
        assert!(kernels_fit(&sm80, "8.0").is_ok());
        assert!(kernels_fit(&sm80, "8.9").is_ok() && kernels_fit(&sm80, "9.0").is_ok());
        let e = kernels_fit(&sm80, "7.5").unwrap_err();
        assert!(e.contains("sm_80") && e.contains("sm_75") && e.contains("sm75 build"), "{e}");
        assert!(kernels_fit(&[], "7.5").is_ok(), "unknown build: nothing to say");
    }

    #[test]
    fn bf16_needs_ampere() {
        assert!(!supports_bf16(7)); // T4 (7.5)
        assert!(supports_bf16(8) && supports_bf16(9)); // A100, L4, H100
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_says_why_it_has_no_gpu() {
        let p = cuda();
        assert!(p.devices.is_empty());
        assert!(p.unavailable.unwrap().contains("built without CUDA"));
        let (d, why) = auto();
        assert!(d.is_cpu());
        assert!(why.unwrap().contains("scripts/build-cuda.sh"));
        assert_eq!(compiled_compute_caps(), None);
    }

    #[test]
    fn cudnn_when_built_and_found_im2col_otherwise_with_the_reason() {
        assert_eq!(choose_gpu_conv(true, None, true), Ok((GpuConv::Cudnn, None)));
        assert_eq!(choose_gpu_conv(true, Some("auto"), true), Ok((GpuConv::Cudnn, None)));
        let (conv, why) = choose_gpu_conv(true, None, false).unwrap();
        let why = why.unwrap();
        assert_eq!(conv, GpuConv::Im2col);
        assert!(why.contains("libcudnn.so.9") && why.contains("pip install nvidia-cudnn-cu13") && why.contains("im2col"), "{why}");
        let (conv, why) = choose_gpu_conv(false, Some(" "), false).unwrap();
        assert!(conv == GpuConv::Im2col && why.unwrap().contains("built without cuDNN"));
        // Asked for explicitly: im2col always, cuDNN only where it can be had.
        assert_eq!(choose_gpu_conv(true, Some("im2col"), true).unwrap().0, GpuConv::Im2col);
        let e = choose_gpu_conv(true, Some("cudnn"), false).unwrap_err();
        assert!(e.starts_with("HFSKY_GPU_CONV=cudnn, but cuDNN (libcudnn.so.9)"), "{e}");
        assert_eq!(choose_gpu_conv(true, Some("cudnn"), true), Ok((GpuConv::Cudnn, None)));
        let e = choose_gpu_conv(true, Some("CUDNN9"), true).unwrap_err();
        assert!(e.contains("\"CUDNN9\" is not one of auto, cudnn, im2col"), "{e}");
    }

    #[test]
    #[ignore = "needs NVIDIA's wheels, which the reference stack's torch brings (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
    fn a_library_loaded_from_a_wheel_answers_to_its_soname() {
        let python = std::env::var("HFSKY_PYREF_PYTHON").expect("HFSKY_PYREF_PYTHON: a Python with torch and its NVIDIA wheels");
        let sites = wheel_libs::from_python(&python);
        let cublas = "libcublas.so.13";
        assert!(wheel_libs::find(&sites, &[cublas]).is_some(), "no {cublas} under {sites:?}");
        // SAFETY: as in `loadable`.
        let by_name = || unsafe { libloading::Library::new(cublas) }.is_ok();
        assert!(!by_name(), "{cublas} is on the loader's own path here (LD_LIBRARY_PATH?): nothing to test");
        assert!(load_from_wheels(&sites, &["libcublas.so.no-such", cublas]));
        // What cudarc does next: the same library by its soname alone.
        assert!(by_name(), "{cublas} was loaded by path but a dlopen by name does not find it");
        assert!(!load_from_wheels(&sites, &["libcuda.so.1"]), "the driver never comes from a wheel");
    }

    #[test]
    fn missing_cuda_libraries_are_named_with_the_fix() {
        assert_eq!(missing_libraries_message(&[true, true, true]), None);
        let no_driver = missing_libraries_message(&[false, false, false]).unwrap();
        assert!(no_driver.starts_with("no NVIDIA driver: libcuda.so.1"), "{no_driver}");
        let no_blas = missing_libraries_message(&[true, false, true]).unwrap();
        assert!(no_blas.contains("cuBLAS (libcublas.so.13)") && !no_blas.contains("cuRAND"), "{no_blas}");
        assert!(no_blas.contains("pip install nvidia-cublas==13.0.2.14") && no_blas.contains("LD_LIBRARY_PATH"), "{no_blas}");
        let both = missing_libraries_message(&[true, false, false]).unwrap();
        assert!(both.contains("cuBLAS") && both.contains("cuRAND (libcurand.so.10)"), "{both}");
    }
}
