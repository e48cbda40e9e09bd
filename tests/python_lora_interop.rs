//! Real diffusers loads a LoRA that `hfsky train` wrote: `load_lora_weights` reports no missing or
//! unexpected keys, reads rank and alpha from the metadata, and the UNet's output changes.
//! Needs `HFSKY_PYREF_PYTHON` (torch + diffusers + peft; scripts/test.sh makes one with
//! scripts/pyref-venv.sh).

mod common;
use common::*;
use std::path::PathBuf;

fn python() -> Option<String> {
    match std::env::var("HFSKY_PYREF_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => panic!("HFSKY_PYREF_PYTHON must be set in CI (scripts/test.sh sets it)"),
        _ => None,
    }
}

#[test]
fn diffusers_loads_our_lora_without_missing_or_unexpected_keys() {
    let Some(python) = python() else {
        eprintln!("HFSKY_PYREF_PYTHON not set: run scripts/test.sh (or scripts/pyref-venv.sh) for the diffusers interop test");
        return;
    };
    for (model, targets) in [("tiny-sd15", "to_q,to_k,to_v,to_out.0"), ("tiny-sdxl", "to_k,to_v,ff.net.2")] {
        let env = Env::new("http://127.0.0.1:9");
        let d = env.dir.path();
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
        let photos = d.join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for i in 0..2u8 {
            image::RgbImage::from_fn(80, 64, |x, y| image::Rgb([200 - i * 50, (y * 3) as u8, (x * 3) as u8]))
                .save(photos.join(format!("{i}.png")))
                .unwrap();
        }
        let out = d.join("out");
        ok(&env.run(&[
            "train",
            "--base-model",
            fixture.to_str().unwrap(),
            "--dataset",
            photos.to_str().unwrap(),
            "--instance-prompt",
            "a photo of SKY",
            "--output-dir",
            out.to_str().unwrap(),
            "--max-steps",
            "3",
            "--learning-rate",
            "0.01",
            "--rank",
            "2",
            "--alpha",
            "8",
            "--target-modules",
            targets,
        ]));
        let o = std::process::Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/diffusers_load_lora.py"))
            .arg(&fixture)
            .arg(&out)
            .env("OMP_NUM_THREADS", "1")
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        assert_eq!(v["warnings"], serde_json::json!([]), "{model}: {v}");
        assert_eq!(v["rank"], 2, "{model}: {v}");
        assert_eq!(v["alpha"].as_f64(), Some(8.0), "{model}: {v}");
        let ours = candle_core::safetensors::load(out.join("pytorch_lora_weights.safetensors"), &candle_core::Device::Cpu).unwrap();
        assert_eq!(v["lora_layers"].as_u64().unwrap() as usize * 2, ours.len(), "{model}: every layer we saved is loaded: {v}");
        assert!(v["relative_change"].as_f64().unwrap() > 1e-4, "{model}: the LoRA does not change diffusers' UNet output: {v}");
    }
}
