//! `hfsky env`: what to paste into a bug report (like `diffusers-cli env` / `accelerate env`):
//! version and commit, build features, devices, threads, cache, endpoint, and where the token
//! would come from (never the token).

use super::Ctx;
use hfsky::auth::TokenSource;
use hfsky::devices::{self, DeviceInfo, GpuConv};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct EnvReport {
    pub version: &'static str,
    /// The commit built from (short hash), when the build knew it.
    pub git_hash: Option<&'static str>,
    pub os: String,
    pub build: Build,
    /// The CPU first, then every CUDA GPU.
    pub devices: Vec<DeviceInfo>,
    /// What `device: auto` / `generate` pick, and why not a GPU when they fall back.
    pub auto_device: String,
    pub gpu_unavailable: Option<String>,
    /// How convolutions run on a GPU (CUDA builds only; null otherwise).
    pub gpu_conv: Option<GpuConvReport>,
    /// candle's CPU thread pool (rayon; `RAYON_NUM_THREADS`).
    pub rayon_threads: usize,
    pub hf_home: PathBuf,
    pub hub_cache: PathBuf,
    /// Bytes under `hub_cache` (files only, links not followed); null when it does not exist.
    pub hub_cache_bytes: Option<u64>,
    pub endpoint: String,
    pub hf_hub_offline: bool,
    pub token: TokenReport,
}

#[derive(Debug, Serialize)]
pub struct Build {
    pub cuda: bool,
    /// The compute capabilities the CUDA kernels were compiled for (null: CPU build, or not recorded).
    pub cuda_compute_caps: Option<Vec<String>>,
    /// Built with cuDNN (`--features cudnn`).
    pub cudnn: bool,
    pub debug_assertions: bool,
}

/// The GPU convolution `devices::gpu_conv` chose, and why it is not cuDNN when it is not.
#[derive(Debug, Serialize)]
pub struct GpuConvReport {
    /// `cudnn` or `im2col`; null when `HFSKY_GPU_CONV` is invalid or asks for what is not there.
    pub backend: Option<GpuConv>,
    pub note: Option<String>,
}

/// Where a command's token would come from, in the README's resolution order; no network.
#[derive(Debug, Serialize)]
pub struct TokenReport {
    /// `HF_OIDC_RESOURCE`: commands exchange an OIDC id token for this repo (not done here).
    pub oidc_resource: Option<String>,
    /// The stored or environment token's source (`null`: not logged in).
    pub source: Option<TokenSource>,
    /// Why the credential store could not be read, if it could not.
    pub error: Option<String>,
}

fn dir_bytes(dir: &Path) -> Option<u64> {
    dir.is_dir().then(|| {
        walkdir::WalkDir::new(dir)
            .follow_links(false)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

pub fn report(ctx: &Ctx) -> EnvReport {
    let cuda = devices::cuda();
    let mut all = vec![devices::cpu()];
    all.extend(cuda.devices.iter().cloned());
    let (picked, gpu_unavailable) = devices::auto();
    let auto_device = match (picked.is_cpu(), cuda.devices.first()) {
        (false, Some(d)) => format!("cuda:0 ({})", d.name),
        (false, None) => "cuda:0".to_string(),
        (true, _) => "cpu".to_string(),
    };
    let (source, error) = match hfsky::auth::resolve() {
        Ok(found) => (found.map(|(_, source)| source), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let hub_cache = hf_hub::resolve_cache_dir();
    EnvReport {
        version: env!("CARGO_PKG_VERSION"),
        git_hash: option_env!("HFSKY_GIT_HASH"),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        build: Build {
            cuda: devices::CUDA_BUILD,
            cuda_compute_caps: devices::compiled_compute_caps(),
            cudnn: devices::CUDNN_BUILD,
            debug_assertions: cfg!(debug_assertions),
        },
        devices: all,
        auto_device,
        gpu_unavailable,
        gpu_conv: devices::CUDA_BUILD.then(|| match devices::gpu_conv() {
            Ok((backend, note)) => GpuConvReport { backend: Some(*backend), note: note.clone() },
            Err(e) => GpuConvReport { backend: None, note: Some(e.clone()) },
        }),
        rayon_threads: candle_core::utils::get_num_threads(),
        hf_home: hfsky::auth::paths::hf_home(),
        hub_cache_bytes: dir_bytes(&hub_cache),
        hub_cache,
        endpoint: ctx.endpoint.clone(),
        hf_hub_offline: hfsky::hub::download::hub_offline(),
        token: TokenReport { oidc_resource: std::env::var("HF_OIDC_RESOURCE").ok().filter(|v| !v.trim().is_empty()), source, error },
    }
}

fn bytes(n: Option<u64>) -> String {
    match n {
        Some(n) => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        None => "?".into(),
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let r = report(ctx);
    ctx.emit_json(&r);
    let mut lines = vec![
        format!("hfsky {} ({})", r.version, r.git_hash.unwrap_or("commit unknown")),
        format!("os: {}", r.os),
        format!(
            "build: cuda {}{}, cudnn {}",
            if r.build.cuda { "on" } else { "off" },
            r.build.cuda_compute_caps.as_ref().map(|c| format!(" (sm_{})", c.join(", sm_"))).unwrap_or_default(),
            if r.build.cudnn { "on" } else { "off" },
        ),
    ];
    for d in &r.devices {
        let cc = d.compute_capability.as_ref().map(|c| format!(", compute capability {c}")).unwrap_or_default();
        let threads = d.threads.map(|t| format!(", {t} threads")).unwrap_or_default();
        lines.push(format!(
            "device {}{}: {}{cc}{threads}, memory {} total / {} free, bf16 {}, f16 {}",
            d.kind,
            d.ordinal.map(|o| format!(":{o}")).unwrap_or_default(),
            d.name,
            bytes(d.memory_total_bytes),
            bytes(d.memory_free_bytes),
            if d.bf16 { "yes" } else { "no" },
            if d.f16 { "yes" } else { "no" }
        ));
    }
    lines.push(format!("device auto: {}{}", r.auto_device, r.gpu_unavailable.as_ref().map(|w| format!(" ({w})")).unwrap_or_default()));
    if let Some(c) = &r.gpu_conv {
        let backend = match c.backend {
            Some(GpuConv::Cudnn) => "cuDNN",
            Some(GpuConv::Im2col) => "im2col + cuBLAS",
            None => "none",
        };
        lines.push(format!("gpu convolutions: {backend}{}", c.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()));
    }
    lines.push(format!("rayon threads: {}", r.rayon_threads));
    lines.push(format!("HF_HOME: {}", r.hf_home.display()));
    let cache_size = if r.hub_cache_bytes.is_some() { bytes(r.hub_cache_bytes) } else { "not created yet".into() };
    lines.push(format!("hub cache: {} ({cache_size})", r.hub_cache.display()));
    lines.push(format!("endpoint: {}{}", r.endpoint, if r.hf_hub_offline { " (HF_HUB_OFFLINE: cache only)" } else { "" }));
    let token = match (&r.token.oidc_resource, &r.token.source, &r.token.error) {
        (Some(res), _, _) => format!("OIDC exchange for {res} (HF_OIDC_RESOURCE)"),
        (None, Some(s), _) => s.to_string(),
        (None, None, Some(e)) => format!("unreadable: {e}"),
        (None, None, None) => "none (not logged in)".into(),
    };
    lines.push(format!("token from: {token}"));
    ctx.say(&lines.join("\n"));
    Ok(())
}
