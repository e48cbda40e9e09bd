//! Pipelines laid out as diffusers and transformers write real ones: sharded weights with their
//! index, fp16 variants with per-component fallback, pickle-only components; and downloads that
//! fetch only what diffusers' `DiffusionPipeline.download` would, from a repo full of decoys.

use crate::common::*;
use hfsky::diffusion::testing::write_shards;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_dir(src: &Path, dst: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let to = dst.join(e.path().strip_prefix(src).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Every file under `dir`, as sorted `/`-separated relative paths.
fn tree(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/"))
        .collect()
}

/// `generate` one image (2 steps, seed 0); returns the JSON settings and the PNG's pixels.
fn generate(env: &Env, model: &str, dtype: &str, out: &Path, extra: &[(&str, &str)]) -> (serde_json::Value, Vec<u8>) {
    let mut cmd = env.cmd(&[
        "--json",
        "generate",
        "--model",
        model,
        "--prompt",
        "a photo of the SKY river",
        "--steps",
        "2",
        "--seed",
        "0",
        "--dtype",
        dtype,
        "--out",
        out.to_str().unwrap(),
    ]);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let v = json(&cmd.output().unwrap());
    let png = PathBuf::from(v["images"][0]["png"].as_str().unwrap());
    (v["images"][0]["settings"].clone(), pixels(&png))
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>() / a.len() as f64
}

/// The tiny pipelines re-saved by real diffusers/transformers (tests/fixtures/make_sharded.py):
/// every component sharded; fp16 variants (UNet and VAE sharded, `*.safetensors.index.fp16.json`);
/// an fp16 UNet only. Each generates the original pipeline's image: sharded exactly, the variants
/// as the original loaded in f16 does (the same rounding of the same weights).
#[test]
#[ignore = "needs the Python reference stack (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
fn pipelines_saved_sharded_and_as_variants_by_diffusers_generate_the_same_images() {
    let python = pyref_python();
    let env = Env::new("http://127.0.0.1:9");
    for name in ["tiny-sd15", "tiny-sdxl"] {
        let made = env.dir.path().join(format!("{name}-layouts"));
        let o = std::process::Command::new(&python)
            .arg(fixtures().join("make_sharded.py"))
            .arg(fixtures().join(name))
            .arg(&made)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let files = tree(&made);
        assert!(files.contains("sharded/unet/diffusion_pytorch_model.safetensors.index.json"), "{files:?}");
        assert!(files.contains("sharded/text_encoder/model.safetensors.index.json"), "{files:?}");
        assert!(files.contains("variant/unet/diffusion_pytorch_model.safetensors.index.fp16.json"), "{files:?}");
        assert!(files.iter().any(|f| f.starts_with("variant/unet/diffusion_pytorch_model.fp16-00001-of-0000")), "{files:?}");

        let original = fixtures().join(name);
        let out = |tag: &str| env.dir.path().join(format!("{name}-{tag}"));
        let (base_settings, base32) = generate(&env, original.to_str().unwrap(), "f32", &out("f32"), &[]);
        let (sharded_settings, sharded) = generate(&env, made.join("sharded").to_str().unwrap(), "f32", &out("sharded"), &[]);
        assert_eq!(sharded, base32, "{name}: the sharded pipeline gives the original's image");
        // The sharded UNet is identified by its shards, not as the single file.
        let shards = hfsky::diffusion::config::ComponentWeights::find(&made.join("sharded/unet"), None).unwrap();
        assert!(shards.files.len() > 1);
        assert_eq!(sharded_settings["model_sha256"].as_str().unwrap(), shards.sha256().unwrap());
        assert_ne!(sharded_settings["model_sha256"], base_settings["model_sha256"]);

        let (_, base16) = generate(&env, original.to_str().unwrap(), "f16", &out("f16"), &[]);
        let (variant_settings, variant16) = generate(&env, made.join("variant").to_str().unwrap(), "f16", &out("variant"), &[]);
        let fp16 = hfsky::diffusion::config::ComponentWeights::find(&made.join("variant/unet"), Some("fp16")).unwrap();
        assert_eq!(fp16.variant.as_deref(), Some("fp16"));
        assert_eq!(variant_settings["model_sha256"].as_str().unwrap(), fp16.sha256().unwrap(), "{name}: the fp16 shards were used");
        let d = mean_abs_diff(&variant16, &base16);
        assert!(d < 0.5, "{name}: fp16 variant vs the original in f16: {d}/255");
        let (mixed_settings, mixed16) = generate(&env, made.join("mixed").to_str().unwrap(), "f16", &out("mixed"), &[]);
        let unet16 = hfsky::hash::sha256_file(&made.join("mixed/unet/diffusion_pytorch_model.fp16.safetensors")).unwrap();
        assert_eq!(mixed_settings["model_sha256"].as_str().unwrap(), unet16);
        let d = mean_abs_diff(&mixed16, &base16);
        assert!(d < 0.5, "{name}: fp16 UNet + f32 fallbacks vs the original in f16: {d}/255");
        // In f32 the variant folder uses its default (f32) weights: the original's image exactly.
        let (_, variant32) = generate(&env, made.join("variant").to_str().unwrap(), "f32", &out("variant32"), &[]);
        assert_eq!(variant32, base32);
    }
}

/// tiny-sd15 as a real SD repo looks: an fp16 UNet beside the f32 one, a sharded VAE, and decoys
/// (a root single-file checkpoint, Flax/ONNX/OpenVINO exports, a pickle beside safetensors, an
/// extra `vae_1_0/` folder, a component model_index.json does not list).
fn repo_with_decoys(dir: &Path) {
    copy_dir(&fixtures().join("tiny-sd15"), dir);
    let dev = candle_core::Device::Cpu;
    let unet = candle_core::safetensors::load(dir.join("unet/diffusion_pytorch_model.safetensors"), &dev).unwrap();
    let half: std::collections::HashMap<String, candle_core::Tensor> =
        unet.iter().map(|(k, t)| (k.clone(), t.to_dtype(candle_core::DType::F16).unwrap())).collect();
    candle_core::safetensors::save(&half, dir.join("unet/diffusion_pytorch_model.fp16.safetensors")).unwrap();
    let vae = dir.join("vae/diffusion_pytorch_model.safetensors");
    write_shards(&vae, &dir.join("vae"), "diffusion_pytorch_model", None, 2);
    copy_dir(&dir.join("vae"), &dir.join("vae_1_0"));
    std::fs::remove_file(&vae).unwrap();
    for (path, bytes) in [
        ("v1-5-pruned-emaonly.safetensors", &b"root single-file checkpoint"[..]),
        ("v1-5-pruned-emaonly.ckpt", b"pickle"),
        ("unet/diffusion_flax_model.msgpack", b"flax"),
        ("unet/model.onnx", b"onnx"),
        ("text_encoder/flax_model.msgpack", b"flax"),
        ("text_encoder/openvino_model.xml", b"<xml/>"),
        ("text_encoder/openvino_model.bin", b"openvino"),
        ("vae/diffusion_pytorch_model.bin", b"pickle beside safetensors"),
        ("safety_checker/config.json", b"{}"),
        ("safety_checker/model.safetensors", b"not listed"),
    ] {
        write(&dir.join(path), bytes);
    }
}

fn snapshot_files(env: &Env, repo: &str) -> BTreeSet<String> {
    let snaps = env.hf_home().join(format!("hub/models--{}/snapshots", repo.replace('/', "--")));
    let mut entries = std::fs::read_dir(&snaps).unwrap().map(|e| e.unwrap().path());
    let one = entries.next().unwrap();
    assert!(entries.next().is_none(), "one snapshot");
    tree(&one)
}

#[test]
fn downloads_fetch_only_the_listed_components_and_one_set_of_weights_each() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let repo_dir = tempfile::tempdir().unwrap();
    repo_with_decoys(repo_dir.path());
    let env = Env::new(&hub.endpoint);
    ok(&env.cmd(&["push", repo_dir.path().to_str().unwrap(), "--repo", "alice/decoys"]).env("HF_TOKEN", ALICE).output().unwrap());

    let common: BTreeSet<String> = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors.index.json",
        "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00002-of-00002.safetensors",
    ]
    .map(String::from)
    .into();
    let with = |extra: &str| -> BTreeSet<String> {
        let mut s = common.clone();
        s.insert(extra.to_string());
        s
    };

    // f32: the default weights of every component.
    let (_, f32_image) = generate(&env, "alice/decoys", "f32", &env.dir.path().join("f32"), &[]);
    assert_eq!(snapshot_files(&env, "alice/decoys"), with("unet/diffusion_pytorch_model.safetensors"));
    // Offline, the same run reads the cache only.
    drop(hub);
    let (_, offline_image) = generate(&env, "alice/decoys", "f32", &env.dir.path().join("offline"), &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(offline_image, f32_image);

    // f16 in a fresh cache: the fp16 UNet instead of the f32 one; no fp16 elsewhere, so the
    // text encoder and VAE fall back to their default weights.
    let hub = start_hub(root.path(), &[]);
    let env16 = Env::new(&hub.endpoint);
    generate(&env16, "alice/decoys", "f16", &env16.dir.path().join("f16"), &[]);
    assert_eq!(snapshot_files(&env16, "alice/decoys"), with("unet/diffusion_pytorch_model.fp16.safetensors"));

    // A component with pickle weights only is refused before any weights are fetched.
    let pickled = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-sd15"), pickled.path());
    std::fs::rename(pickled.path().join("unet/diffusion_pytorch_model.safetensors"), pickled.path().join("unet/diffusion_pytorch_model.bin"))
        .unwrap();
    ok(&env16.cmd(&["push", pickled.path().to_str().unwrap(), "--repo", "alice/pickled"]).env("HF_TOKEN", ALICE).output().unwrap());
    let out = env16.dir.path().join("pickled");
    let e = code(&env16.run(&["generate", "--model", "alice/pickled", "--prompt", "x", "--steps", "1", "--out", out.to_str().unwrap()]), 2);
    assert!(e.contains("unet/") && e.contains("pickle") && e.contains("safe_serialization=True"), "{e}");
    assert!(!snapshot_files(&env16, "alice/pickled").iter().any(|f| f.ends_with(".safetensors") || f.ends_with(".bin")), "no weights fetched");
    // The same folder used locally says the same.
    let e = code(
        &env16.run(&["generate", "--model", pickled.path().to_str().unwrap(), "--prompt", "x", "--steps", "1", "--out", out.to_str().unwrap()]),
        2,
    );
    assert!(e.contains("diffusion_pytorch_model.bin") && e.contains("arbitrary code"), "{e}");
}
