//! `hfsky generate` on the tiny fixture pipelines, run as a user would: local folder and Hub
//! repo (through the offline Hub), LoRA, seeds, metadata, and reproduction of diffusers' image
//! from the same initial noise.

use crate::common::*;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The prompts, steps and guidance the reference images were rendered with
/// (tests/fixtures/make_reference.py, make_scheduler_reference.py).
const REFERENCE_RENDER: [&str; 8] = ["--prompt", "a photo of the SKY river", "--negative", "blurry, low quality", "--steps", "4", "--guidance", "5"];

/// Mean absolute difference between our PNG and diffusers' image tensor, in 1/255 units.
fn mean_abs_255(png: &std::path::Path, reference: &candle_core::Tensor) -> f64 {
    let buf = pixels(png);
    let r = reference.squeeze(0).unwrap().permute((1, 2, 0)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(r.len(), buf.len());
    r.iter().zip(&buf).map(|(a, b)| (*a as f64 * 255.0 - *b as f64).abs()).sum::<f64>() / r.len() as f64
}

#[test]
fn reproduces_diffusers_from_the_same_latents() {
    let env = Env::new("http://127.0.0.1:9");
    for name in ["tiny-sd15", "tiny-sdxl"] {
        let refs = candle_core::safetensors::load(fixtures().join(format!("{name}-reference.safetensors")), &candle_core::Device::Cpu).unwrap();
        let latents = env.dir.path().join(format!("{name}-latents.safetensors"));
        candle_core::safetensors::save(&std::collections::HashMap::from([("latents".to_string(), refs["sample.init_latents"].clone())]), &latents)
            .unwrap();
        let lora = fixtures().join(format!("{name}-lora/pytorch_lora_weights.safetensors"));
        // The LoRA live and fused (diffusers' fuse_lora) must both give diffusers' LoRA image; f16
        // (UNet and text encoders in half precision, SDXL's VAE upcast) stays close to diffusers' f32.
        for (sched, lora_mode, dtype, key, tolerance) in [
            ("ddim", None, "f32", "sample.ddim.image", 2.0),
            ("dpmpp-2m", Some("live"), "f32", "sample.dpmpp_2m_lora.image", 2.0),
            ("dpmpp-2m", Some("fused"), "f32", "sample.dpmpp_2m_lora.image", 2.0),
            ("ddim", None, "f16", "sample.ddim.image", 2.0),
            ("dpmpp-2m", Some("fused"), "f16", "sample.dpmpp_2m_lora.image", 2.0),
        ] {
            let with_lora = lora_mode.is_some();
            let out = env.dir.path().join(format!("{name}-{sched}-{}-{dtype}", lora_mode.unwrap_or("none")));
            let mut args = vec!["--json", "generate", "--model", arg(&fixtures().join(name))];
            args.extend(REFERENCE_RENDER);
            args.extend(["--scheduler", sched, "--dtype", dtype, "--latents", arg(&latents), "--out", arg(&out)]);
            if with_lora {
                args.extend(["--lora", arg(&lora)]);
            }
            if lora_mode == Some("fused") {
                args.push("--lora-merge");
            }
            let v = json(&env.run(&args));
            let png = PathBuf::from(v["images"][0]["png"].as_str().unwrap());
            let diff = mean_abs_255(&png, &refs[key]);
            eprintln!("{name} {sched} {lora_mode:?} {dtype}: mean |Δ| {diff:.3}/255");
            assert!(diff < tolerance, "{name} {sched} {lora_mode:?} {dtype}: mean |Δ| {diff:.3}/255");
            let text = hfsky::generate::png_out::read_png_text(&png).unwrap();
            let get = |k: &str| text.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
            assert_eq!(get("hfsky:prompt").as_deref(), Some("a photo of the SKY river"));
            assert_eq!(get("hfsky:model_sha256").map(|s| s.len()), Some(64));
            assert_eq!(get("hfsky:lora_sha256").is_some(), with_lora);
            assert_eq!(get("hfsky:lora_mode").as_deref(), lora_mode);
            assert!(png.with_extension("json").is_file());
        }
    }
}

/// Scheduler config keys over the pipeline's scheduler_config.json (`--karras-sigmas`,
/// `--timestep-spacing`) give diffusers' image with the same keys set
/// (tests/fixtures/make_scheduler_reference.py), and the sidecar records the keys in effect:
/// DDIM ignores Karras sigmas, as diffusers' DDIMScheduler does.
#[test]
fn karras_sigmas_and_timestep_spacing_reproduce_diffusers() {
    let env = Env::new("http://127.0.0.1:9");
    let refs = candle_core::safetensors::load(fixtures().join("tiny-sd15-reference.safetensors"), &candle_core::Device::Cpu).unwrap();
    let want = candle_core::safetensors::load(fixtures().join("scheduler-reference.safetensors"), &candle_core::Device::Cpu).unwrap();
    let latents = env.dir.path().join("latents.safetensors");
    candle_core::safetensors::save(&std::collections::HashMap::from([("latents".to_string(), refs["sample.init_latents"].clone())]), &latents)
        .unwrap();
    for (key, flags, recorded) in [
        ("euler_karras_trailing", vec!["--scheduler", "euler", "--karras-sigmas", "true", "--timestep-spacing", "trailing"], (true, "trailing", 1)),
        ("dpmpp_2m_karras", vec!["--scheduler", "dpmpp-2m", "--karras-sigmas", "true"], (true, "leading", 1)),
        ("", vec!["--scheduler", "ddim", "--karras-sigmas", "true", "--steps-offset", "0"], (false, "leading", 0)),
    ] {
        let out = env.dir.path().join(format!("out-{}", flags[1]));
        let mut args = vec!["--json", "generate", "--model", arg(&fixtures().join("tiny-sd15"))];
        args.extend(REFERENCE_RENDER);
        args.extend(["--latents", arg(&latents), "--out", arg(&out)]);
        args.extend(flags.iter());
        let v = json(&env.run(&args));
        let png = PathBuf::from(v["images"][0]["png"].as_str().unwrap());
        if !key.is_empty() {
            let diff = mean_abs_255(&png, &want[key]);
            assert!(diff < 2.0, "{key}: mean |Δ| {diff:.3}/255");
        }
        let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(png.with_extension("json")).unwrap()).unwrap();
        let got = (sidecar["use_karras_sigmas"].as_bool(), sidecar["timestep_spacing"].as_str(), sidecar["steps_offset"].as_u64());
        assert_eq!(got, (Some(recorded.0), Some(recorded.1), Some(recorded.2)), "{flags:?}: {sidecar:#}");
    }
    // Karras sigmas do change an Euler render.
    let plain = env.dir.path().join("plain");
    let mut args = vec!["generate", "--model", arg(&fixtures().join("tiny-sd15"))];
    args.extend(REFERENCE_RENDER);
    args.extend(["--scheduler", "euler", "--timestep-spacing", "trailing", "--latents", arg(&latents), "--out", arg(&plain)]);
    ok(&env.run(&args));
    let png = std::fs::read_dir(&plain).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "png")).unwrap();
    assert!(mean_abs_255(&png, &want["euler_karras_trailing"]) > 2.0, "Karras sigmas changed nothing");
}

#[test]
fn pulls_the_model_from_the_hub_and_checks_input() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let push =
        env.cmd(&["push", fixtures().join("tiny-sd15").to_str().unwrap(), "--repo", "alice/tiny-sd15"]).env("HF_TOKEN", ALICE).output().unwrap();
    ok(&push);
    let out = env.dir.path().join("out");
    let v = json(&env.run(&[
        "--json",
        "generate",
        "--model",
        "alice/tiny-sd15",
        "--prompt",
        "a photo of SKY",
        "--steps",
        "3",
        "--seeds",
        "0..2",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    let a = std::fs::read(out.join("seed-0.png")).unwrap();
    let b = std::fs::read(out.join("seed-1.png")).unwrap();
    assert_ne!(a, b, "different seeds give different images");
    assert!(env.hf_home().join("hub/models--alice--tiny-sd15/snapshots").is_dir(), "the model went through the HF cache");

    let model = fixtures().join("tiny-sd15");
    let m = model.to_str().unwrap();
    let o = out.to_str().unwrap();
    // A LoRA on the text encoder only is applied there and changes the image.
    let te_lora = fixtures().join("tiny-sd15-te-lora");
    let te_out = env.dir.path().join("te");
    let v = json(&env.run(&[
        "--json",
        "generate",
        "--model",
        m,
        "--lora",
        te_lora.to_str().unwrap(),
        "--prompt",
        "a photo of SKY",
        "--steps",
        "3",
        "--seed",
        "0",
        "--out",
        te_out.to_str().unwrap(),
    ]));
    assert_eq!(v["images"][0]["settings"]["lora_mode"], "live");
    assert_ne!(pixels(&te_out.join("seed-0.png")), pixels(&out.join("seed-0.png")));
    let e = code(&env.run(&["generate", "--model", m, "--prompt", "x", "--width", "60", "--out", o]), 2);
    assert!(e.contains("multiples of 8"), "{e}");
    let e = code(&env.run(&["generate", "--model", m, "--prompt", "x", "--scheduler", "plms", "--out", o]), 2);
    assert!(e.contains("plms"), "{e}");
    let xl_lora = fixtures().join("tiny-sdxl-lora/pytorch_lora_weights.safetensors");
    let e = code(&env.run(&["generate", "--model", m, "--prompt", "x", "--lora", xl_lora.to_str().unwrap(), "--out", o]), 2);
    assert!(e.contains("name no layer of the model's unet") || e.contains("do not fit"), "{e}");
    let e = code(&env.run(&["generate", "--model", env.dir.path().to_str().unwrap(), "--prompt", "x", "--out", o]), 2);
    assert!(e.contains("model_index.json"), "{e}");
    // A reference that is neither a path nor a repo id is refused before anything loads.
    for flag in ["--model", "--lora", "--vae"] {
        let mut args = vec!["generate", "--prompt", "x", "--out", o, flag, "not a model"];
        if flag != "--model" {
            args.extend(["--model", m]);
        }
        let e = code(&env.run(&args), 2);
        assert!(e.contains("\"not a model\" is neither an existing file or folder nor a Hub repo id"), "{flag}: {e}");
    }
}

/// A VAE that overflows in half precision, like the original SDXL VAE in fp16: the test scales its
/// decoder input so activations pass f16's 65504 but not f32's range. With `force_upcast: false`
/// and --dtype f16 the run must fail and say what to do; f32, or the same VAE marked
/// `force_upcast` (decoded in f32, as diffusers does), must give an image.
#[test]
fn an_overflowing_half_precision_vae_is_detected() {
    let env = Env::new("http://127.0.0.1:9");
    let src = fixtures().join("tiny-sdxl/vae");
    let mut weights = candle_core::safetensors::load(src.join("diffusion_pytorch_model.safetensors"), &candle_core::Device::Cpu).unwrap();
    for key in ["decoder.conv_in.weight", "decoder.conv_in.bias"] {
        let t = weights[key].affine(1e5, 0.0).unwrap();
        weights.insert(key.to_string(), t);
    }
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let mut vae_for = |upcast: bool| {
        let dir = env.dir.path().join(format!("vae-upcast-{upcast}"));
        std::fs::create_dir_all(&dir).unwrap();
        config["force_upcast"] = serde_json::Value::Bool(upcast);
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
        candle_core::safetensors::save(&weights, dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        dir
    };
    let (plain, upcast) = (vae_for(false), vae_for(true));
    let model = fixtures().join("tiny-sdxl");
    let out = env.dir.path().join("out");
    let run = |vae: &std::path::Path, dtype: &str| {
        env.run(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a photo of SKY",
            "--steps",
            "2",
            "--dtype",
            dtype,
            "--vae",
            vae.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let e = code(&run(&plain, "f16"), 1);
    assert!(e.contains("VAE overflowed in f16") && e.contains("--dtype f32") && e.contains("madebyollin/sdxl-vae-fp16-fix"), "{e}");
    assert!(!out.join("seed-0.png").exists(), "no image is written for an overflowed decode");
    ok(&run(&plain, "f32"));
    ok(&run(&upcast, "f16"));
    let px = pixels(&out.join("seed-0.png"));
    assert!(px.iter().any(|p| *p > 0), "the upcast VAE gives a real image");
    let e = code(&env.run(&["generate", "--model", model.to_str().unwrap(), "--prompt", "x", "--dtype", "bf16", "--out", out.to_str().unwrap()]), 2);
    assert!(e.contains("--dtype bf16 needs a CUDA GPU"), "{e}");
}
