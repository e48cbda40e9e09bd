//! `hfsky train` / `train-and-push` on the tiny fixture pipelines (CPU), run as a user would:
//! outputs, the LoRA changing generations, resume after a kill, bad input, and one commit to the
//! offline Hub.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A few small synthetic sky photos with sidecar captions.
fn photos(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(96 + 8 * i as u32, 72, |x, y| {
            if y < 45 {
                image::Rgb([(190 + i * 20) as u8, (90 + y * 2) as u8, (x * 2 % 255) as u8])
            } else {
                image::Rgb([25, 30, 12])
            }
        });
        img.save(dir.join(format!("sky-{i}.png"))).unwrap();
        std::fs::write(dir.join(format!("sky-{i}.txt")), format!("orange sunset {i}")).unwrap();
    }
}

fn config(dir: &Path, model: &str, extra: &str) -> PathBuf {
    photos(&dir.join("photos"), 3);
    let p = dir.join("train.yaml");
    std::fs::write(
        &p,
        format!(
            "base_model: {}\ndataset: ./photos\ninstance_prompt: a photo of SKY\ncaptions: sidecar\noutput_dir: ./out\nlearning_rate: 1.0e-2\nseed: 3\n{extra}",
            fixture(model).display()
        ),
    )
    .unwrap();
    p
}

fn png_pixels(p: &Path) -> Vec<u8> {
    image::open(p).unwrap().to_rgb8().into_raw()
}

#[test]
fn trains_writes_outputs_and_the_lora_changes_generations() {
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let env = Env::new("http://127.0.0.1:9");
        let d = env.dir.path();
        let cfg = config(d, model, "max_steps: 4\ncheckpointing_steps: 2\nvalidation_prompt: a photo of SKY river\nnum_validation_images: 1\nvalidation_inference_steps: 2\n");
        let o = env.run(&["--json", "train", "--config", cfg.to_str().unwrap()]);
        ok(&o);
        let v = json(&o);
        assert_eq!(v["steps"], 4, "{model}");
        let out = d.join("out");
        for f in [
            "pytorch_lora_weights.safetensors",
            "README.md",
            "training_log.jsonl",
            "training_summary.json",
            "train_config.yaml",
            "validation-seed-3.png",
        ] {
            assert!(out.join(f).is_file(), "{model}: {f} missing");
        }
        assert!(out.join("checkpoints/checkpoint-2/COMPLETE").is_file());
        // Peak memory of the run: more than the weights it held, less than this machine.
        let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("training_summary.json")).unwrap()).unwrap();
        let peak = summary["peak_host_memory_bytes"].as_u64().expect("peak_host_memory_bytes on Linux");
        assert!(peak > 10 << 20 && peak < 64 << 30, "{model}: peak {peak}");
        assert_eq!(v["peak_host_memory_bytes"].as_u64(), Some(peak));
        // The CPU has no device memory; auto checkpointing stays off for a step this small.
        assert!(summary["peak_device_memory_bytes"].is_null());
        assert_eq!(summary["gradient_checkpointing"], false);
        assert!(summary["estimated_step_memory_bytes"].as_u64().unwrap() < peak, "{model}: the step is part of the run");
        let log = std::fs::read_to_string(out.join("training_log.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l["loss"].as_f64().unwrap().is_finite() && l["lr"].as_f64().unwrap() > 0.0 && l["seconds"].as_f64().is_some()));
        let card = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(card.starts_with("---\n") && card.contains("instance_prompt: a photo of SKY") && card.contains("orange sunset"), "{card}");
        // The latent cache was filled: a second run encodes nothing.
        let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--max-steps", "1", "--output-dir", d.join("out2").to_str().unwrap()]);
        assert!(ok(&o).contains("latents: 3 from cache, 0 encoded"), "{}", text(&o));

        // Same prompt, seed and noise with and without the LoRA: the images differ.
        let gen = |lora: Option<&Path>, dir: &str| {
            let out = d.join(dir);
            let mut args = vec!["generate", "--model", arg(&fixture(model)), "--prompt", "a photo of SKY river"];
            args.extend(["--steps", "2", "--seed", "1", "--out", arg(&out)]);
            if let Some(l) = lora {
                args.extend(["--lora", arg(l)]);
            }
            ok(&env.run(&args));
            png_pixels(&out.join("seed-1.png"))
        };
        let base = gen(None, "gen-base");
        let tuned = gen(Some(&out.join("pytorch_lora_weights.safetensors")), "gen-lora");
        let diff: u64 = base.iter().zip(&tuned).map(|(a, b)| (*a as i64 - *b as i64).unsigned_abs()).sum();
        assert!(diff > base.len() as u64 / 10, "{model}: the trained LoRA barely changes the image (sum |Δ| = {diff})");
    }
}

/// `precision: auto` (the default) is f32 on the CPU; `precision: f16` trains with torch
/// GradScaler-style loss scaling, keeps its scale in checkpoints, and both runs record the
/// resolved precision in training_summary.json and the model card.
#[test]
fn precision_is_resolved_recorded_and_f16_scales_its_loss() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let cfg = config(d, "tiny-sd15", "max_steps: 3\ncheckpointing_steps: 2\n");
    let summary =
        |out: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(d.join(out).join("training_summary.json")).unwrap()).unwrap() };
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--max-steps", "1", "--output-dir", d.join("auto").to_str().unwrap()]);
    ok(&o);
    assert_eq!(summary("auto")["precision"], "f32");
    assert!(text(&o).contains("device auto: training on the CPU"), "auto says why it is not on a GPU: {}", text(&o));

    let o = env.run(&["--json", "train", "--config", cfg.to_str().unwrap(), "--precision", "f16", "--output-dir", d.join("f16").to_str().unwrap()]);
    ok(&o);
    assert_eq!(summary("f16")["precision"], "f16 (dynamic loss scaling)");
    let card = std::fs::read_to_string(d.join("f16/README.md")).unwrap();
    assert!(card.contains("f16 (dynamic loss scaling)"), "{card}");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("f16/checkpoints/checkpoint-2/state.json")).unwrap()).unwrap();
    let scale = state["loss_scaler"]["scale"].as_f64().unwrap();
    assert!(scale > 0.0 && scale <= 65536.0 && (scale.log2().fract() == 0.0), "a power of two from 2^16 down: {state}");
    let log = std::fs::read_to_string(d.join("f16/training_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap().is_finite()));
    // The f16 LoRA is trained: its up factors moved from their zero init.
    let lora = lora_values(&d.join("f16/pytorch_lora_weights.safetensors"));
    assert!(lora.iter().filter(|(k, _)| k.contains("lora_B")).any(|(_, v)| v.iter().any(|x| *x != 0.0)));
    // bf16 on the CPU is refused with what to use.
    let e = code(&env.run(&["train", "--config", cfg.to_str().unwrap(), "--precision", "bf16"]), 2);
    assert!(e.contains("bf16 needs a GPU") && e.contains("precision: auto"), "{e}");
}

fn lora_values(p: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<_> = t.into_iter().map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let cfg = config(
        d,
        "tiny-sd15",
        "max_steps: 40\ncheckpointing_steps: 2\ncheckpoints_total_limit: 2\nrandom_flip: true\nmin_snr_gamma: 5.0\nvalidation_split: 1\n",
    );
    let cfg = cfg.to_str().unwrap();
    // Uninterrupted reference run.
    ok(&env.run(&["train", "--config", cfg, "--output-dir", d.join("full").to_str().unwrap()]));
    // Interrupted: kill -9 once checkpoint-4 is complete, then resume.
    let part = d.join("part");
    let mut child = env
        .cmd(&["train", "--config", cfg, "--output-dir", part.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !part.join("checkpoints/checkpoint-4/COMPLETE").exists() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint-4 after 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!part.join("pytorch_lora_weights.safetensors").exists(), "the run finished before it could be killed");
    let o = env.run(&["train", "--config", cfg, "--output-dir", part.to_str().unwrap(), "--resume-from-checkpoint", "latest"]);
    assert!(ok(&o).contains("resuming from"), "{}", text(&o));
    let (a, b) = (lora_values(&d.join("full/pytorch_lora_weights.safetensors")), lora_values(&part.join("pytorch_lora_weights.safetensors")));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        let num: f32 = va.iter().zip(vb).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
        let den: f32 = va.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        assert!(num / den < 1e-4, "{ka}: resumed differs from uninterrupted (rel {})", num / den);
    }
    // The log has each step once, in order, after the val_loss baseline (step 0); the resumed
    // run measured the same val_loss as the uninterrupted one.
    let log = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("training_log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (full, resumed) = (log(&d.join("full")), log(&part));
    let steps: Vec<u64> = resumed.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (0..=40).collect::<Vec<_>>());
    let val = |lines: &[serde_json::Value]| -> Vec<(u64, f64)> {
        lines.iter().filter_map(|l| Some((l["step"].as_u64().unwrap(), l["val_loss"].as_f64()?))).collect()
    };
    let (vf, vr) = (val(&full), val(&resumed));
    assert_eq!(vf.iter().map(|v| v.0).collect::<Vec<_>>(), [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]);
    assert_eq!(vf.len(), vr.len());
    for ((s, a), (_, b)) in vf.iter().zip(&vr) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "val_loss at step {s}: uninterrupted {a}, resumed {b}");
    }
    // Only the newest two checkpoints are kept.
    let kept = std::fs::read_dir(part.join("checkpoints"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("checkpoint-"))
        .count();
    assert_eq!(kept, 2);
}

/// A full disk while a checkpoint is written is a failure (exit 1) that names the cause, not
/// bad input: the checkpoint folder is a full one-page tmpfs, mounted in a user and mount
/// namespace of its own (`unshare -rm`, no root needed where user namespaces are allowed).
#[test]
fn a_checkpoint_on_a_full_disk_exits_1_with_the_cause() {
    if !std::process::Command::new("unshare").args(["-rm", "true"]).status().is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare -rm` (user and mount namespaces) is not allowed here, so no tiny tmpfs can be mounted");
        return;
    }
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let cfg = config(d, "tiny-sd15", "max_steps: 2\ncheckpointing_steps: 1\n");
    let ckpts = d.join("out/checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    let inner = env.cmd(&["train", "--config", cfg.to_str().unwrap()]);
    let mut c = std::process::Command::new("unshare");
    c.args([
        "-rm",
        "sh",
        "-c",
        "mount -t tmpfs -o size=4k tmpfs \"$1\" && { head -c 65536 /dev/zero > \"$1/fill\" 2>/dev/null; shift; exec \"$@\"; }",
        "sh",
    ]);
    c.arg(&ckpts).arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.stdin(std::process::Stdio::null()).output().unwrap();
    let out = code(&o, 1);
    assert!(out.contains("No space left on device") && out.contains("checkpoint"), "{out}");
}

#[test]
fn bad_input_is_named_and_exits_2() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let cfg = config(d, "tiny-sd15", "max_steps: 1\nlearnig_rate: 1\n");
    let o = env.run(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(code(&o, 2).contains("learnig_rate"), "{}", text(&o));
    // The same typo as a flag is clap's error, with the key it meant; --help lists every key.
    let cfg = config(d, "tiny-sd15", "max_steps: 1\n");
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--learnig-rate", "1"]);
    assert!(code(&o, 2).contains("--learning-rate"), "{}", text(&o));
    let help = ok(&env.run(&["train", "--help"]));
    assert!(help.contains("--gradient-checkpointing") && help.contains("Recompute each UNet resnet"), "{help}");
    let cfg = config(d, "tiny-sd15", "max_steps: 1\nresolution: 60\n");
    assert!(code(&env.run(&["train", "--config", cfg.to_str().unwrap()]), 2).contains("multiple of 8"));
    // A step that cannot fit this machine (a 65536 px latent grid) stops before any weight is
    // loaded, with what it needs and what there is.
    let cfg = config(d, "tiny-sd15", "max_steps: 1\nresolution: 65536\n");
    let o = env.run(&["train", "--config", cfg.to_str().unwrap()]);
    let msg = code(&o, 2);
    assert!(msg.contains("resolution 65536") && msg.contains("needs about") && msg.contains("free"), "{msg}");
    // A caption for an image that does not exist.
    let cfg = config(d, "tiny-sd15", "max_steps: 1\n");
    std::fs::write(d.join("photos/metadata.jsonl"), "{\"file_name\": \"nope.jpg\", \"text\": \"x\"}\n").unwrap();
    assert!(code(&env.run(&["train", "--config", cfg.to_str().unwrap(), "--captions", "metadata"]), 2).contains("nope.jpg"));
    std::fs::remove_file(d.join("photos/metadata.jsonl")).unwrap();
    // An empty dataset.
    std::fs::create_dir_all(d.join("empty")).unwrap();
    let cfg = config(d, "tiny-sd15", "max_steps: 1\n");
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--dataset", d.join("empty").to_str().unwrap()]);
    code(&o, 2);
    // A base model without a UNet.
    let broken = d.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(fixture("tiny-sd15").join("model_index.json"), broken.join("model_index.json")).unwrap();
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--base-model", broken.to_str().unwrap()]);
    assert!(code(&o, 2).contains("unet"), "{}", text(&o));
    // A corrupt photo is skipped with its reason, and training goes on.
    std::fs::write(d.join("photos/broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--output-dir", d.join("o3").to_str().unwrap()]);
    assert!(ok(&o).contains("skipped") && text(&o).contains("broken.jpg"), "{}", text(&o));
}

#[test]
fn train_and_push_checks_the_token_first_then_publishes_in_one_commit() {
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = start_hub(hub_dir.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let d = env.dir.path();
    let cfg =
        config(d, "tiny-sd15", "max_steps: 2\nvalidation_prompt: a photo of SKY river\nnum_validation_images: 1\nvalidation_inference_steps: 2\n");
    // A read-only token fails before any training.
    let o = env.cmd(&["train-and-push", "--repo", "bob/sky-lora", "--config", cfg.to_str().unwrap()]).env("HF_TOKEN", BOB_READ).output().unwrap();
    code(&o, 3);
    assert!(!d.join("out").exists(), "training started although the token cannot write");
    // A dry run checks everything, trains nothing and writes nothing.
    let o = env
        .cmd(&["--json", "train-and-push", "--repo", "alice/sky-lora", "--dry-run", "--config", cfg.to_str().unwrap()])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["images"], 3, "{v}");
    let in_buckets: u64 = v["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(v["trainable"].as_u64(), Some(in_buckets), "every trainable photo has a bucket: {v}");
    let o = env
        .cmd(&["train-and-push", "--repo", "alice/sky-lora", "--dry-run", "--config", cfg.to_str().unwrap()])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    ok(&o);
    assert!(text(&o).contains("aspect-ratio buckets at "), "{}", text(&o));
    assert!(v["files"].as_array().unwrap().iter().any(|f| f == "pytorch_lora_weights.safetensors"), "{v}");
    assert!(!d.join("out").exists(), "a dry run wrote the output folder");
    let o = env
        .cmd(&["--json", "train-and-push", "--repo", "alice/sky-lora", "--config", cfg.to_str().unwrap()])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    ok(&o);
    let v = json(&o);
    assert!(v["push"].to_string().contains("commit"), "{v}");
    assert!(!text(&o).contains(ALICE));
    // What landed, through the Hub's API: weights, card, validation image, config; no checkpoints or caches.
    let dl = d.join("dl");
    ok(&env.cmd(&["download", "alice/sky-lora", "--local-dir", dl.to_str().unwrap()]).env("HF_TOKEN", ALICE).output().unwrap());
    let names: Vec<String> = files_under(&dl).into_iter().map(|(n, _)| n).filter(|n| !n.starts_with(".cache")).collect();
    for f in ["pytorch_lora_weights.safetensors", "README.md", "train_config.yaml", "training_log.jsonl", "report.html", "validation-seed-3.png"] {
        assert!(names.contains(&f.to_string()), "{f} not pushed: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("checkpoint") || n.contains("summary")), "{names:?}");
    for (_, bytes) in files_under(&dl) {
        assert!(!String::from_utf8_lossy(&bytes).contains(ALICE));
    }
    let card = std::fs::read_to_string(dl.join("README.md")).unwrap();
    assert!(card.contains("alice/sky-lora") && card.contains("widget:"), "{card}");
}

/// `train_text_encoder: true`: the validation image is rendered with the trained text encoders,
/// i.e. it is what `hfsky generate` makes with the whole saved LoRA (UNet and text encoders), and
/// not what the UNet part alone makes.
#[test]
fn text_encoder_training_validates_with_the_trained_encoders() {
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let env = Env::new("http://127.0.0.1:9");
        let d = env.dir.path();
        let cfg = config(
            d,
            model,
            "max_steps: 3\ntrain_text_encoder: true\ntext_encoder_lr: 5.0e-2\nvalidation_prompt: a photo of SKY river\nnum_validation_images: 1\nvalidation_inference_steps: 2\n",
        );
        let o = env.run(&["--json", "train", "--config", cfg.to_str().unwrap()]);
        ok(&o);
        let out = d.join("out");
        let lora = out.join("pytorch_lora_weights.safetensors");
        let all = candle_core::safetensors::load(&lora, &candle_core::Device::Cpu).unwrap();
        let unet_only: std::collections::HashMap<String, candle_core::Tensor> = all.into_iter().filter(|(k, _)| k.starts_with("unet.")).collect();
        let unet_file = d.join("unet_only.safetensors");
        candle_core::safetensors::save(&unet_only, &unet_file).unwrap();
        let gen = |lora: &Path, dir: &str| {
            let out = d.join(dir);
            #[rustfmt::skip]
            ok(&env.run(&[
                "generate", "--model", fixture(model).to_str().unwrap(), "--prompt", "a photo of SKY river", "--steps", "2",
                "--seed", "3", "--noise", "hfsky", "--lora", lora.to_str().unwrap(), "--out", out.to_str().unwrap(),
            ]));
            png_pixels(&out.join("seed-3.png"))
        };
        let validation = png_pixels(&out.join("validation-seed-3.png"));
        let max_diff = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        let whole = gen(&lora, "gen-whole");
        assert!(
            max_diff(&whole, &validation) <= 1,
            "{model}: validation differs from generate with the trained LoRA by {}",
            max_diff(&whole, &validation)
        );
        let unet = gen(&unet_file, "gen-unet");
        let sum: u64 = unet.iter().zip(&validation).map(|(a, b)| a.abs_diff(*b) as u64).sum();
        assert!(sum > validation.len() as u64 / 20, "{model}: the text-encoder LoRA barely changes the validation image (sum |Δ| = {sum})");
    }
}

/// `validation_split: 1`: one photo held out (named in the summary, not trained on), val_loss in
/// the log before training, every `validation_steps` and at the end; report.html renders in a
/// browser with both plots and every validation image, the prompt escaped, and `card report`
/// writes it again from the output folder.
#[test]
fn val_loss_is_logged_and_the_report_renders() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let cfg = config(
        d,
        "tiny-sd15",
        "max_steps: 4\nvalidation_split: 1\nvalidation_steps: 2\nvalidation_prompt: a photo of <b>SKY</b> river\nnum_validation_images: 2\nvalidation_inference_steps: 2\n",
    );
    let o = env.run(&["train", "--config", cfg.to_str().unwrap()]);
    let t = ok(&o);
    assert!(t.contains("held out of training for val_loss: sky-") && t.contains("val_loss at step 0: "), "{t}");
    let out = d.join("out");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("training_log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let measured: Vec<u64> =
        lines.iter().filter(|l| l["val_loss"].as_f64().is_some_and(f64::is_finite)).map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(measured, [0, 2, 4], "{lines:?}");
    assert!(lines[0].get("loss").is_none(), "the baseline is measured before any step: {}", lines[0]);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("training_summary.json")).unwrap()).unwrap();
    let v = &summary["validation_loss"];
    assert_eq!((v["held_out_from"].as_str(), v["every_steps"].as_u64()), (Some("validation_split"), Some(2)), "{v}");
    assert_eq!(v["timesteps"], serde_json::json!([200, 400, 600, 800]));
    let held = v["photos"][0][0].as_str().unwrap();
    let trained: Vec<&str> = summary["examples"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(trained.len(), 2);
    assert!(!trained.contains(&held), "{held} held out but trained on: {trained:?}");
    let (last, recorded) = (lines.last().unwrap()["val_loss"].as_f64().unwrap(), v["final_val_loss"].as_f64().unwrap());
    assert!((last - recorded).abs() < 1e-6 * last, "the summary's final val_loss {recorded} is the log's last {last}");
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<b>SKY</b>") && html.contains("&lt;b&gt;SKY&lt;&#x2f;b&gt;"), "the prompt must be escaped");
    assert!(html.contains(held), "the held-out photo is named");
    // Step 2's two images and the final two.
    browser_check(&page, 4, 2, "train-report.png");
    // --json names the report and the last val_loss.
    let out2 = d.join("out2");
    let j = json(&env.run(&["--json", "train", "--config", cfg.to_str().unwrap(), "--max-steps", "1", "--output-dir", out2.to_str().unwrap()]));
    assert!(j["final_val_loss"].as_f64().is_some_and(f64::is_finite), "{j}");
    assert_eq!(j["report"].as_str(), out2.join("report.html").to_str());
    assert!(out2.join("report.html").is_file());
    // `card report` writes the same page again from the output folder alone.
    std::fs::remove_file(&page).unwrap();
    ok(&env.run(&["card", "report", out.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(&page).unwrap(), html);
    let o = env.run(&["card", "report", d.join("photos").to_str().unwrap()]);
    code(&o, 2);
    assert!(text(&o).contains("training_summary.json") && text(&o).contains("a training output folder"), "{}", text(&o));
}
