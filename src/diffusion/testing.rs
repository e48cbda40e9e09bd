//! Access to the tiny reference pipelines made by real diffusers (tests/fixtures/, copied from
//! shared/fixtures), for parity tests here and in tests/.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// `tiny-sd15` or `tiny-sdxl`: the pipeline folder.
pub fn pipeline_dir(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// The reference tensors diffusers computed for a fixture pipeline (`<name>-reference.safetensors`).
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures_dir().join(format!("{name}-reference.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The settings behind each reference tensor (`<name>-reference.json`).
pub fn reference_json(name: &str) -> serde_json::Value {
    let path = fixtures_dir().join(format!("{name}-reference.json"));
    crate::diffusion::config::read_json(&path).unwrap_or_else(|e| panic!("{e}"))
}
