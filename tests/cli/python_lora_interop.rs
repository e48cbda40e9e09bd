//! Real diffusers loads a LoRA that `hfsky train` wrote: `load_lora_weights` reports no missing or
//! unexpected keys, reads rank and alpha from the metadata, and the UNet's output changes.
//! Needs `HFSKY_PYREF_PYTHON` (torch + diffusers + peft; scripts/test.sh makes one with
//! scripts/pyref-venv.sh).

use crate::common::*;
use std::path::PathBuf;

/// `hfsky train` on two small photos of `width`×64 for 3 steps at rank 2, with `extra` flags, on
/// the tiny fixture `model`; returns the sandbox (keep it alive) and the output folder.
/// tests/interop/diffusers_load_converted.py: real diffusers loads each of `files` into the
/// pipeline `fixture` and reports keys, warnings, LoRA layers and outputs (JSON).
fn diffusers_load_converted(python: &str, fixture: &std::path::Path, files: &[PathBuf]) -> serde_json::Value {
    let o = std::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/diffusers_load_converted.py"))
        .arg(fixture)
        .args(files)
        .env("OMP_NUM_THREADS", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

fn train_tiny(model: &str, width: u32, extra: &[&str]) -> (Env, PathBuf) {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let photos = d.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..2u8 {
        image::RgbImage::from_fn(width, 64, |x, y| image::Rgb([200 - i * 50, (y * 3) as u8, (x * 3) as u8]))
            .save(photos.join(format!("{i}.png")))
            .unwrap();
    }
    let out = d.join("out");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
    #[rustfmt::skip]
    let mut args = vec![
        "train", "--base-model", fixture.to_str().unwrap(), "--dataset", photos.to_str().unwrap(),
        "--instance-prompt", "a photo of SKY", "--output-dir", out.to_str().unwrap(), "--max-steps", "3", "--rank", "2",
    ];
    args.extend_from_slice(extra);
    ok(&env.run(&args));
    (env, out)
}

#[test]
#[ignore = "needs the Python reference stack (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
fn diffusers_loads_our_lora_without_missing_or_unexpected_keys() {
    let python = pyref_python();
    for (model, targets) in [("tiny-sd15", "to_q,to_k,to_v,to_out.0"), ("tiny-sdxl", "to_k,to_v,ff.net.2")] {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
        let (_env, out) =
            train_tiny(model, 80, &["--learning-rate", "0.01", "--alpha", "8", "--target-modules", targets, "--lora-formats", "peft,kohya"]);
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
        // `lora_formats: [peft, kohya]` wrote the kohya layout beside it; diffusers reads it alike.
        let kohya = out.join("pytorch_lora_weights_kohya.safetensors");
        let v = diffusers_load_converted(&python, &fixture, &[out.join("pytorch_lora_weights.safetensors"), kohya.clone()]);
        for f in v["files"].as_array().unwrap() {
            assert_eq!(f["warnings"], serde_json::json!([]), "{model}: {f}");
            assert_eq!(f["lora_layers"]["unet"].as_u64().unwrap() as usize * 2, ours.len(), "{model}: {f}");
        }
        assert!(v["max_abs_diff"][0]["unet"].as_f64().unwrap() <= 1e-4, "{model}: trained PEFT and kohya files differ in diffusers: {v}");
        let meta = safetensors::SafeTensors::read_metadata(&std::fs::read(&kohya).unwrap()).unwrap().1.metadata().clone().unwrap();
        assert_eq!(meta["ss_network_dim"], "2", "{model}: {meta:?}");
        assert_eq!(meta["ss_network_alpha"], "8", "{model}: {meta:?}");
        assert_eq!(meta["ss_base_model_version"], if model == "tiny-sdxl" { "sdxl_base_v1-0" } else { "sd_v1" });
    }
}

/// `hfsky lora convert` to PEFT, kohya and ComfyUI keys: diffusers' `load_lora_weights` takes
/// each file with no unexpected, missing or unmatched keys, makes a LoRA layer for every module
/// (UNet and text encoders), and the files compute the same UNet and text-encoder outputs within
/// 1e-4. Inputs: diffusers-format UNet LoRAs (SD 1.5, SDXL), text-encoder LoRAs (SD 1.5, SDXL's
/// two encoders), the kohya SD 1.5 field case (1×1 conv proj factors, fp16, 0-d alphas) and a
/// kohya SDXL LoCon in SGM names on resnet, sampler and embedding layers.
#[test]
#[ignore = "needs the Python reference stack (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
fn diffusers_loads_our_peft_and_kohya_exports_alike() {
    let python = pyref_python();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (model, input) in [
        ("tiny-sd15", "tiny-sd15-lora/pytorch_lora_weights.safetensors"),
        ("tiny-sd15", "tiny-sd15-te-lora/pytorch_lora_weights.safetensors"),
        ("tiny-sd15", "field-cases/kohya-sd15-conv/sd15_kohya_default.safetensors"),
        ("tiny-sdxl", "tiny-sdxl-lora/pytorch_lora_weights.safetensors"),
        ("tiny-sdxl", "tiny-sdxl-te-lora/pytorch_lora_weights.safetensors"),
        ("tiny-sdxl", "lycoris/sdxl_kohya.safetensors"),
    ] {
        let env = Env::new("http://127.0.0.1:9");
        let pipeline = fixtures.join(model);
        let mut outs = Vec::new();
        for to in ["peft", "kohya", "comfyui"] {
            let out = env.dir.path().join(format!("{to}.safetensors"));
            let input = fixtures.join(input);
            ok(&env.run(&[
                "lora",
                "convert",
                input.to_str().unwrap(),
                "--to",
                to,
                "--out",
                out.to_str().unwrap(),
                "--model",
                pipeline.to_str().unwrap(),
            ]));
            outs.push(out);
        }
        let v = diffusers_load_converted(&python, &pipeline, &outs);
        let lora = hfsky::diffusion::lora::LoraWeights::load(&fixtures.join(input)).unwrap();
        for f in v["files"].as_array().unwrap() {
            assert_eq!(f["warnings"], serde_json::json!([]), "{input}: {f}");
            for (comp, modules) in &lora.components {
                assert_eq!(f["lora_layers"][comp].as_u64().unwrap() as usize, modules.len(), "{input} {comp}: every module loaded: {f}");
            }
        }
        for d in v["max_abs_diff"].as_array().unwrap() {
            for (comp, x) in d.as_object().unwrap() {
                assert!(x.as_f64().unwrap() <= 1e-4, "{input} {comp}: PEFT and kohya exports differ in diffusers: {v}");
            }
        }
        let changed = v["relative_change"].as_object().unwrap();
        assert!(changed.values().any(|x| x.as_f64().unwrap() > 1e-3), "{input}: the LoRA changes nothing in diffusers: {v}");
    }
}

/// `network: dora` trains PEFT's DoRA, `network: locon` adds conv LoRAs (PEFT Conv2d layout) to
/// the resnet convolutions and attention projections: diffusers loads each file with no stray keys
/// and makes a LoRA layer for every module saved. (A DoRA's kohya export carries `dora_scale`,
/// which ComfyUI reads; diffusers' kohya reader drops `dora_scale` with a warning, so that file is
/// not checked here.)
#[test]
#[ignore = "needs the Python reference stack (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
fn diffusers_loads_our_dora_and_locon() {
    let python = pyref_python();
    for (model, network) in [("tiny-sd15", "dora"), ("tiny-sd15", "locon"), ("tiny-sdxl", "locon")] {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
        #[rustfmt::skip]
        let (_env, out) = train_tiny(model, 64, &["--learning-rate", "0.05", "--network", network, "--lora-formats", "peft,kohya",]);
        let peft = out.join("pytorch_lora_weights.safetensors");
        let saved = candle_core::safetensors::load(&peft, &candle_core::Device::Cpu).unwrap();
        let modules = saved.keys().filter(|k| k.ends_with(".lora_A.weight")).count();
        let magnitudes = saved.keys().filter(|k| k.ends_with(".lora_magnitude_vector")).count();
        let convs = saved.iter().filter(|(k, t)| k.ends_with(".lora_A.weight") && t.rank() == 4).count();
        match network {
            "dora" => assert_eq!(magnitudes, modules, "A, B and m per module: {:?}", saved.keys()),
            _ => assert!(convs > 0 && magnitudes == 0, "{model}: conv factors saved: {:?}", saved.keys()),
        }
        let mut files = vec![peft.clone()];
        if network == "locon" {
            files.push(out.join("pytorch_lora_weights_kohya.safetensors"));
        }
        let v = diffusers_load_converted(&python, &fixture, &files);
        for f in v["files"].as_array().unwrap() {
            assert_eq!(f["warnings"], serde_json::json!([]), "{model} {network}: {f}");
            assert_eq!(f["use_dora"], network == "dora", "{model} {network}: {f}");
            assert_eq!(f["lora_layers"]["unet"].as_u64().unwrap() as usize, modules, "{model} {network}: {f}");
        }
        if network == "locon" {
            assert!(v["max_abs_diff"][0]["unet"].as_f64().unwrap() <= 1e-4, "{model}: PEFT and kohya LoCon differ in diffusers: {v}");
        }
        assert!(v["relative_change"]["unet"].as_f64().unwrap() > 1e-5, "{model} {network}: the adapter changes nothing: {v}");
    }
}

/// `train_text_encoder: true` writes the UNet and text-encoder LoRAs (both SDXL encoders) in one
/// PEFT file with each component's `lora_adapter_metadata`: diffusers' `load_lora_weights` takes
/// it with no stray keys and makes a LoRA layer in each text encoder for every module saved, and
/// the kohya export (`lora_te_`/`lora_te1_`/`lora_te2_`) computes the same outputs in diffusers;
/// with `network: dora` the text encoders get PEFT DoRA too.
#[test]
#[ignore = "needs the Python reference stack (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
fn diffusers_loads_our_text_encoder_lora() {
    let python = pyref_python();
    // (A DoRA's kohya export carries `dora_scale`, which diffusers' kohya reader drops: PEFT only.)
    for (model, network) in [("tiny-sd15", "lora"), ("tiny-sdxl", "lora"), ("tiny-sd15", "dora")] {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model);
        #[rustfmt::skip]
        let (_env, out) = train_tiny(model, 64, &["--learning-rate", "0.05", "--alpha", "4", "--train-text-encoder", "--text-encoder-lr", "0.02",
            "--network", network, "--lora-formats", "peft,kohya",]);
        let peft = out.join("pytorch_lora_weights.safetensors");
        let saved = candle_core::safetensors::load(&peft, &candle_core::Device::Cpu).unwrap();
        let modules = |prefix: &str| saved.keys().filter(|k| k.starts_with(prefix) && k.ends_with(".lora_A.weight")).count();
        let components: &[&str] = if model == "tiny-sdxl" { &["unet", "text_encoder", "text_encoder_2"] } else { &["unet", "text_encoder"] };
        let mut files = vec![peft.clone()];
        if network == "lora" {
            files.push(out.join("pytorch_lora_weights_kohya.safetensors"));
        }
        let v = diffusers_load_converted(&python, &fixture, &files);
        for f in v["files"].as_array().unwrap() {
            assert_eq!(f["warnings"], serde_json::json!([]), "{model} {network}: {f}");
            assert_eq!(f["use_dora"], network == "dora", "{model} {network}: {f}");
            for c in components {
                let n = modules(&format!("{c}."));
                assert!(n > 0, "{model}: no {c} factors saved");
                assert_eq!(f["lora_layers"][c].as_u64().unwrap() as usize, n, "{model} {c}: {f}");
            }
        }
        // Rank and alpha from the PEFT file's `lora_adapter_metadata`, per component.
        for c in components {
            assert_eq!(v["files"][0]["config"][c], serde_json::json!([[2, 4.0]]), "{model} {c}: {v}");
        }
        for c in components.iter().filter(|_| network == "lora") {
            assert!(v["max_abs_diff"][0][c].as_f64().unwrap() <= 1e-4, "{model} {c}: PEFT and kohya files differ in diffusers: {v}");
        }
        // The trained text-encoder LoRAs change diffusers' text-encoder outputs.
        for c in &components[1..] {
            assert!(v["relative_change"][c].as_f64().unwrap() > 1e-6, "{model} {c}: the LoRA changes nothing in diffusers: {v}");
        }
    }
}
