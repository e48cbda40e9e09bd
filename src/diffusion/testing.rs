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

/// A central finite difference of `loss` in the entry of `v` whose `grad` is largest: returns
/// (that index, the analytic gradient, the numeric one). `v` is restored afterwards. The step is
/// the one actually taken (`v ± h` rounded to f32), which keeps the quotient honest when `h` is
/// small against the entry.
pub fn central_difference(v: &candle_core::Var, grad: &Tensor, h: f32, loss: impl Fn() -> Tensor) -> (usize, f32, f64) {
    let g: Vec<f32> = grad.flatten_all().unwrap().to_vec1().unwrap();
    let (idx, &analytic) = g.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
    let orig = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let at = |delta: f32| -> (f64, f64) {
        let mut p = orig.clone();
        p[idx] += delta;
        let step = (p[idx] - orig[idx]) as f64;
        v.set(&Tensor::from_vec(p, v.as_tensor().shape(), v.device()).unwrap()).unwrap();
        (loss().to_scalar::<f64>().unwrap(), step)
    };
    let ((plus, up), (minus, down)) = (at(h), at(-h));
    v.set(&Tensor::from_vec(orig, v.as_tensor().shape(), v.device()).unwrap()).unwrap();
    (idx, analytic, (plus - minus) / (up - down))
}
