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

/// Splits a safetensors file into `n` shards named as diffusers' `save_pretrained(max_shard_size=…)`
/// names them (`<stem>[.<variant>]-0000i-of-0000n.safetensors`) with the index
/// (`<stem>.safetensors.index[.<variant>].json`) in `dir`; returns the shard names. The tensors are
/// stored as they are (pass an f16 file for an fp16 variant).
pub fn write_shards(src: &std::path::Path, dir: &std::path::Path, stem: &str, variant: Option<&str>, n: usize) -> Vec<String> {
    use crate::diffusion::config::add_variant;
    let tensors = candle_core::safetensors::load(src, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    let base = add_variant(&format!("{stem}.safetensors"), variant);
    let names: Vec<String> = (1..=n).map(|i| base.replace(".safetensors", &format!("-{i:05}-of-{n:05}.safetensors"))).collect();
    let mut map = serde_json::Map::new();
    for (i, chunk) in keys.chunks(keys.len().div_ceil(n)).enumerate() {
        let part: HashMap<String, Tensor> = chunk.iter().map(|k| ((*k).clone(), tensors[*k].clone())).collect();
        candle_core::safetensors::save(&part, dir.join(&names[i])).unwrap();
        for k in chunk {
            map.insert((*k).clone(), names[i].clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join(add_variant(&format!("{stem}.safetensors.index.json"), variant)), index.to_string()).unwrap();
    names
}
