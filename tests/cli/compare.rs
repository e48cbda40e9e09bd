//! `hfsky compare` end to end against the offline Hub on the tiny SD 1.5 fixture: each planted
//! difference (`hub serve --render-profile`) must come out as the first cause under
//! `--explain`; the report renders in a headless browser; bad input says what is wrong and
//! keeps what was rendered.

use crate::common::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

const CARD: &str = "---\nbase_model: alice/tiny-sd15\ninstance_prompt: a photo of SKY\ntags: [lora, text-to-image]\npipeline_tag: text-to-image\nhfsky:\n  architecture: sd15\n  training_resolution: 64\n---\n# Sky LoRA\n";

/// The base every case shares: the Hub and the local side agree on everything but the planted key.
const SAME: &str = "scheduler: ddim\nsteps: 4\nguidance: 7.5\nwidth: 64\nheight: 64\ndtype: f32\n";
const LOCAL: [&str; 8] = ["--scheduler", "ddim", "--steps", "4", "--guidance", "7.5", "--dtype", "f32"];

/// A second base model of the same architecture with other weights (the UNet's output layer
/// flipped and scaled), for the "other base model" case.
fn other_base(dir: &Path) -> PathBuf {
    let out = dir.join("tiny-sd15-b");
    let src = fixtures().join("tiny-sd15");
    for e in walk(&src) {
        let to = out.join(e.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&e, &to).unwrap();
    }
    let unet = out.join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&unet, &candle_core::Device::Cpu).unwrap();
    for (name, t) in tensors.iter_mut() {
        if name.starts_with("conv_out") || name.starts_with("conv_in") {
            *t = (t.clone() * -1.7).unwrap();
        }
    }
    candle_core::safetensors::save(&tensors, &unet).unwrap();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The tiny base, a second base, and the LoRA repo whose card names the first.
fn publish(env: &Env) {
    let push = |dir: &Path, repo: &str| ok(&env.cmd(&["push", dir.to_str().unwrap(), "--repo", repo]).env("HF_TOKEN", ALICE).output().unwrap());
    push(&fixtures().join("tiny-sd15"), "alice/tiny-sd15");
    push(&other_base(env.dir.path()), "alice/tiny-sd15-b");
    let lora = std::fs::read(fixtures().join("tiny-sd15-lora/pytorch_lora_weights.safetensors")).unwrap();
    let dir = env.dir.path().join("sky-lora");
    write(&dir.join("README.md"), CARD.as_bytes());
    write(&dir.join("pytorch_lora_weights.safetensors"), &lora);
    push(&dir, "alice/sky-lora");
}

/// An offline Hub rendering with `profile` (a `--render-profile` YAML), the models published on it,
/// and a sandbox to run hfsky in; the temp folder holds both and must outlive them.
fn hub_rendering(profile: &str) -> (tempfile::TempDir, Hub, Env) {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("profile.yaml");
    write(&file, profile.as_bytes());
    let hub = start_hub(&root.path().join("hub"), &["--render-profile", file.to_str().unwrap()]);
    let env = Env::new(&hub.endpoint);
    publish(&env);
    (root, hub, env)
}

fn compare(env: &Env, out: &Path, extra: &[&str]) -> std::process::Output {
    compare_with(env, out, &LOCAL, extra)
}

/// `compare` with `local` as the local side's settings.
fn compare_with(env: &Env, out: &Path, local: &[&str], extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["--json", "compare", "--prompt", "a photo of the SKY river", "--repo", "alice/sky-lora", "--seeds", "2", "--out", out.to_str().unwrap()];
    args.extend(local);
    args.extend(extra);
    env.cmd(&args).env("HF_TOKEN", ALICE).output().unwrap()
}

/// Plants `profile` on the Hub and checks that `--explain` ranks one of `expected` first.
fn planted(profile: &str, expected: &[&str]) -> serde_json::Value {
    planted_with(profile, &LOCAL, expected)
}

/// [`planted`] with `local` as the local side's settings.
fn planted_with(profile: &str, local: &[&str], expected: &[&str]) -> serde_json::Value {
    // The planted keys replace the shared ones (a YAML mapping cannot repeat a key).
    let planted_keys: Vec<&str> = profile.lines().filter_map(|l| l.split(':').next()).collect();
    let base: String = SAME.lines().filter(|l| !planted_keys.contains(&l.split(':').next().unwrap())).map(|l| format!("{l}\n")).collect();
    let (root, _hub, env) = hub_rendering(&format!("{base}{profile}"));
    let out = root.path().join("cmp");
    let o = compare_with(&env, &out, local, &["--explain"]);
    ok(&o);
    let v = json(&o);
    eprintln!("planted {profile:?}: distance {} noise floor {} causes {:#}", v["distance"], v["noise_floor"], v["causes"]);
    let causes = v["causes"]
        .as_array()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| panic!("no causes: distance {} noise floor {}", v["distance"], v["noise_floor"]));
    let first = causes[0]["setting"].as_str().unwrap();
    assert!(expected.contains(&first), "planted {profile:?}: first cause {first}, causes {:#}", v["causes"]);
    assert!(causes[0]["effect"].as_f64().unwrap() > 0.5, "{:#}", v["causes"]);
    assert!(causes.iter().all(|c| c["message"].as_str().is_some_and(|m| !m.is_empty())));
    for c in causes {
        let s = c["setting"].as_str().unwrap();
        assert!(
            [
                "lora",
                "lora_scale",
                "lora_fusion",
                "size",
                "scheduler",
                "steps",
                "guidance",
                "base_model",
                "vae",
                "dtype",
                "seed",
                "karras_sigmas",
                "timestep_spacing",
                "steps_offset",
                "negative_prompt",
                "unknown"
            ]
            .contains(&s),
            "{s}"
        );
    }
    for side in ["local", "hub"] {
        assert!(v[side]["settings"].is_object() && v[side]["stats"]["families"].is_object(), "{side}: {v}");
        for img in v[side]["images"].as_array().unwrap() {
            assert!(out.join(img["file"].as_str().unwrap()).is_file());
        }
    }
    assert!(out.join("report.html").is_file() && out.join("report.json").is_file());
    // Paired seeds: a heat map per seed of where local and Hub differ, and of the best ablation
    // (none when the noise differs, or the sides rendered at different sizes).
    let diffs = v["seed_diffs"].as_array().unwrap();
    assert!(v["paired"] == true || diffs.is_empty(), "heat maps of unpaired seeds");
    for d in diffs {
        for key in ["hub", "local", "local_heatmap"] {
            assert!(out.join(d[key].as_str().unwrap()).is_file(), "{key}: {d}");
        }
        if !d["ablation"].is_null() {
            assert!(out.join(d["ablation"]["heatmap"].as_str().unwrap()).is_file(), "{d}");
        }
    }
    v
}

#[test]
fn a_hub_without_the_lora_is_named() {
    let v = planted("apply_lora: false\n", &["lora"]);
    assert!(v["verdict"].as_str().unwrap().contains("without the LoRA"), "{}", v["verdict"]);
}

#[test]
fn another_render_size_is_named_with_the_training_resolution() {
    let v = planted("width: 128\nheight: 128\n", &["size"]);
    let top = v["causes"][0]["message"].as_str().unwrap();
    assert!(top.contains("128×128") && top.contains("trained at 64 px"), "{top}");
    let size_row = v["settings"].as_array().unwrap().iter().find(|r| r["setting"] == "size").unwrap().clone();
    assert_eq!((size_row["differs"].as_bool(), size_row["hub_source"].as_str()), (Some(true), Some("reported")));
}

#[test]
fn another_scheduler_and_step_count_are_named() {
    planted("scheduler: euler-ancestral\nsteps: 12\n", &["scheduler", "steps"]);
}

/// The worker's way: f16 with the LoRA fused into the half-precision weights. The fusion is a
/// setting of its own, ablated alone and with the dtype; on the tiny pipeline with paired seeds
/// the two together move the image by less than the paired threshold, which the verdict says
/// (and never "unknown").
#[test]
fn a_hub_fusing_the_lora_in_f16_is_a_candidate() {
    let profile: String = SAME.lines().filter(|l| !l.starts_with("dtype")).map(|l| format!("{l}\n")).collect();
    let (root, _hub, env) = hub_rendering(&format!("{profile}dtype: f16\n"));
    let out = root.path().join("cmp");
    let v = json(&compare(&env, &out, &["--explain"]));
    let row = v["settings"].as_array().unwrap().iter().find(|r| r["setting"] == "lora_fusion").unwrap().clone();
    assert_eq!((row["local"].as_str(), row["hub"].as_str(), row["differs"].as_bool()), (Some("live"), Some("fused in f16"), Some(true)));
    let ablated: Vec<&str> = v["ablations"].as_array().unwrap().iter().filter_map(|a| a["setting"].as_str()).collect();
    assert_eq!(ablated, vec!["lora_fusion", "dtype"], "{:#}", v["ablations"]);
    assert_eq!(v["paired"], true);
    let verdict = v["verdict"].as_str().unwrap();
    match v["causes"].as_array().unwrap().first() {
        None => assert!(verdict.contains("nothing to explain"), "{verdict}"),
        Some(c) => assert!(["dtype", "lora_fusion"].contains(&c["setting"].as_str().unwrap()), "{:#}", v["causes"]),
    }
}

/// Only the generator differs (`--noise hfsky` here, torch's on the Hub): the seeds no longer
/// pair, and the gap is no larger than seed-to-seed variation.
#[test]
fn only_the_noise_generator_differing_is_nothing_to_explain() {
    let (root, _hub, env) = hub_rendering(SAME);
    let out = root.path().join("cmp");
    let o = compare(&env, &out, &["--noise", "hfsky", "--explain"]);
    ok(&o);
    let v = json(&o);
    let rows = v["settings"].as_array().unwrap();
    let differing: Vec<&str> = rows.iter().filter(|r| r["differs"] == true).map(|r| r["setting"].as_str().unwrap()).collect();
    assert_eq!(differing, vec!["seed"], "{rows:#?}");
    assert_eq!(v["paired"], false);
    assert!(v["verdict"].as_str().unwrap().contains("nothing to explain"), "{}", v["verdict"]);
    // With torch's generator on both sides the same seeds pair one to one.
    let out2 = root.path().join("cmp2");
    let v2 = json(&compare(&env, &out2, &[]));
    assert_eq!(v2["paired"], true);
    assert!(v2["distance"].as_f64().unwrap() < v["distance"].as_f64().unwrap(), "paired {} vs unpaired {}", v2["distance"], v["distance"]);
}

#[test]
fn another_lora_scale_is_named() {
    let v = planted("lora_scale: 3.0\n", &["lora_scale"]);
    // The Hub's LoRA scale reproduces its renders pixel by pixel: the best ablation's heat map is
    // far darker than the local one's.
    let diffs = v["seed_diffs"].as_array().unwrap();
    assert!(!diffs.is_empty(), "both sides use torch's generator: seeds pair");
    for d in diffs {
        let (local, ablated) = (d["local_mean_abs"].as_f64().unwrap(), d["ablation"]["mean_abs"].as_f64().unwrap());
        assert!(ablated < local / 4.0, "seed {}: |local − Hub| {local}, |ablation − Hub| {ablated}", d["seed"]);
    }
}

/// Two causes at once: both are ablated, and one of them comes first.
#[test]
fn two_planted_causes_are_both_candidates() {
    let v = planted("guidance: 1.5\nlora_scale: 3.0\n", &["guidance", "lora_scale"]);
    let named: Vec<&str> = v["causes"].as_array().unwrap().iter().map(|c| c["setting"].as_str().unwrap()).collect();
    assert!(named.contains(&"guidance") && named.contains(&"lora_scale"), "{named:?}");
}

/// The local side as `LOCAL`, sampling with `scheduler`.
fn local_with_scheduler(scheduler: &'static str) -> Vec<&'static str> {
    let mut l = LOCAL.to_vec();
    l[1] = scheduler;
    l
}

/// The Hub samples with Karras sigmas (its scheduler config's `use_karras_sigmas`), reported
/// in `x-hfsky-render`; the local Euler run does not.
#[test]
fn karras_sigmas_on_the_hub_are_named() {
    let v = planted_with("scheduler: euler\nuse_karras_sigmas: true\n", &local_with_scheduler("euler"), &["karras_sigmas"]);
    let row = v["settings"].as_array().unwrap().iter().find(|r| r["setting"] == "karras_sigmas").unwrap().clone();
    assert_eq!((row["local"].as_str(), row["hub"].as_str(), row["hub_source"].as_str()), (Some("false"), Some("true"), Some("reported")));
    assert!(v["verdict"].as_str().unwrap().contains("with Karras sigmas"), "{}", v["verdict"]);
}

#[test]
fn another_timestep_spacing_is_named() {
    let v = planted("timestep_spacing: trailing\n", &["timestep_spacing"]);
    assert!(v["verdict"].as_str().unwrap().contains("spaces its timesteps trailing"), "{}", v["verdict"]);
}

/// The planted offset is larger than the usual 0-vs-1 so that it moves every timestep far enough
/// to stand clear of the paired "nothing to explain" threshold (5% of seed-to-seed) on the tiny
/// pipeline at 4 steps: 0 vs 1 left only 1.8× that threshold, 30 leaves about 6×.
#[test]
fn another_steps_offset_is_named() {
    let v = planted("steps_offset: 30\n", &["steps_offset"]);
    assert_eq!(v["paired"], true);
    let (gap, floor) = (v["distance"].as_f64().unwrap(), v["noise_floor"].as_f64().unwrap());
    assert!(gap >= 3.0 * floor * 0.05, "gap {gap} within 3× of the paired threshold {}", floor * 0.05);
}

/// A local render with a negative prompt against a Hub that renders without one (the widget
/// sends none; here the offline Hub drops the one the request carries).
#[test]
fn a_hub_without_the_negative_prompt_is_named() {
    let mut local = LOCAL.to_vec();
    local.extend(["--negative", "blurry, dark, low quality"]);
    let v = planted_with("negative_prompt: \"\"\n", &local, &["negative_prompt"]);
    assert_eq!(v["hub"]["renders"][0]["parameters_sent"]["parameters"]["negative_prompt"], "blurry, dark, low quality");
    let top = v["causes"][0]["message"].as_str().unwrap();
    assert!(top.contains("without a negative prompt (reported by the Hub)") && top.contains("→ none"), "{top}");
}

/// Two causes that only act together: Karras sigmas mean nothing to the local DDIM sampler, so
/// adopting them alone changes nothing, yet with the Hub's Euler sampler they close the gap.
/// With only these two differing, the "all together" render is their pair, and both are named
/// as a pair, each message naming the other.
#[test]
fn karras_sigmas_with_another_scheduler_are_found_as_a_pair() {
    let v = planted("scheduler: euler\nuse_karras_sigmas: true\n", &["scheduler", "karras_sigmas"]);
    let causes = v["causes"].as_array().unwrap();
    let karras = causes.iter().find(|c| c["setting"] == "karras_sigmas").unwrap_or_else(|| panic!("{causes:#?}"));
    assert!(karras["alone"].as_f64().unwrap().abs() < 0.05, "DDIM ignores Karras sigmas: {karras:#}");
    assert!(karras["effect"].as_f64().unwrap() > 0.5, "{karras:#}");
    let m = karras["message"].as_str().unwrap();
    assert!(m.contains("together with the scheduler") && m.contains("neither does alone"), "{karras:#}");
    let scheduler = &causes[..2].iter().find(|c| c["setting"] == "scheduler").unwrap_or_else(|| panic!("{causes:#?}"));
    assert!(scheduler["message"].as_str().unwrap().contains("together with the Karras sigmas"), "{scheduler:#}");
    let all = v["ablations"].as_array().unwrap().iter().find(|a| a["setting"].is_null() && a["without"].is_null()).unwrap();
    assert_eq!(all["pair"], serde_json::json!(["scheduler", "karras_sigmas"]), "{all:#}");
}

#[test]
fn another_guidance_is_named() {
    planted("guidance: 1.5\n", &["guidance"]);
}

#[test]
fn another_base_model_is_named() {
    planted("base_model: alice/tiny-sd15-b\n", &["base_model"]);
}

/// The same settings on both sides: no setting differs and the verdict says there is nothing
/// to explain; the report renders in a browser with every image and plot, escaping the prompt.
#[test]
fn same_settings_explain_nothing_and_the_report_renders() {
    let (root, _hub, env) = hub_rendering(SAME);
    let out = root.path().join("cmp");
    let mut args = vec![
        "compare",
        "--prompt",
        "a photo of the <b>SKY</b> river & \"friends\"",
        "--repo",
        "alice/sky-lora",
        "--seeds",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(LOCAL);
    let o = env.cmd(&args).env("HF_TOKEN", ALICE).output().unwrap();
    let t = ok(&o);
    assert!(t.contains("nothing to explain"), "{t}");
    assert!(t.contains("report.html"), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(v["settings"].as_array().unwrap().iter().all(|r| r["differs"] == false), "{:#}", v["settings"]);
    assert_eq!(v["hub"]["renders"].as_array().unwrap().len(), 2);
    assert!(v["hub"]["renders"][0]["route"].as_str().unwrap().contains("/hf-inference/models/alice/sky-lora"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("<b>SKY</b>") && html.contains("&lt;b&gt;SKY&lt;&#x2f;b&gt;"), "the prompt must be escaped");
    browser_check(&out.join("report.html"), 4, 4, "compare-report.png");
}

#[test]
fn bad_input_is_named_and_rendered_images_are_kept() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(&root.path().join("hub"), &["--faults", "infer-402=1"]);
    let env = Env::new(&hub.endpoint);
    publish(&env);
    let out = root.path().join("cmp");
    // The provider is out of credits: the status, the request id and what to do.
    let o = compare(&env, &out, &[]);
    let t = code(&o, 1);
    assert!(t.contains("402") && t.contains("request id") && t.contains("--hub-image"), "{t}");
    // A repo whose card has no base_model.
    let dir = env.dir.path().join("no-base");
    write(&dir.join("README.md"), b"---\ntags: [lora]\n---\n");
    write(&dir.join("pytorch_lora_weights.safetensors"), &std::fs::read(fixtures().join("tiny-sd15-lora/pytorch_lora_weights.safetensors")).unwrap());
    ok(&env.cmd(&["push", dir.to_str().unwrap(), "--repo", "alice/no-base"]).env("HF_TOKEN", ALICE).output().unwrap());
    let o = env
        .cmd(&["compare", "--prompt", "x", "--repo", "alice/no-base", "--hub-image", fixtures().join("../../data/sky-photos").to_str().unwrap()])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    let t = code(&o, 2);
    assert!(t.contains("base_model"), "{t}");
    // Images saved from the website: one is not an image. The good one is kept.
    let good = root.path().join("widget-1.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([30, 160, 40])).save(&good).unwrap();
    let bad = root.path().join("widget-2.png");
    write(&bad, b"<html>not an image</html>");
    let out2 = root.path().join("cmp2");
    let o = env
        .cmd(&[
            "compare",
            "--prompt",
            "x",
            "--repo",
            "alice/sky-lora",
            "--hub-image",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
        ])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    let t = code(&o, 2);
    assert!(t.contains("widget-2.png") && t.contains("not an image"), "{t}");
    assert!(out2.join("hub/widget-1.png").is_file(), "the readable image is kept");
    // Nothing to compare against.
    let t = code(&env.run(&["compare", "--prompt", "x", "--model", "alice/base"]), 2);
    assert!(t.contains("--repo") && t.contains("--hub-image"), "{t}");
}

/// The Hub renders on the card's base model while the local side renders on another (a local
/// copy whose scheduler config has `steps_offset: 0`): the Hub side's scheduler keys come from
/// the Hub base model's own `scheduler/scheduler_config.json`, fetched from the Hub, not unknown.
#[test]
fn another_local_base_reads_the_hub_base_models_scheduler_keys() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(&root.path().join("hub"), &[]);
    let env = Env::new(&hub.endpoint);
    publish(&env);
    let src = fixtures().join("tiny-sd15");
    let base = root.path().join("my-base");
    for e in walk(&src) {
        let to = base.join(e.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&e, &to).unwrap();
    }
    let config = base.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"steps_offset\": 1", "\"steps_offset\": 0");
    write(&config, text.as_bytes());
    let green = root.path().join("green.png");
    image::RgbImage::from_fn(64, 64, |_, y| if y < 32 { image::Rgb([90, 140, 230]) } else { image::Rgb([30, 170, 50]) }).save(&green).unwrap();
    let out = root.path().join("cmp");
    let args = ["--json", "compare", "--prompt", "a photo of the SKY river", "--repo", "alice/sky-lora", "--seeds", "1", "--steps", "2"];
    let o = env
        .cmd(&args)
        .args(["--model", base.to_str().unwrap(), "--hub-image", green.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    ok(&o);
    let v = json(&o);
    let rows = v["settings"].as_array().unwrap();
    let row = |s: &str| rows.iter().find(|r| r["setting"] == s).unwrap().clone();
    assert_eq!(row("base_model")["differs"], true, "{:#}", row("base_model"));
    let offset = row("steps_offset");
    assert_eq!(
        (offset["local"].as_str(), offset["hub"].as_str(), offset["hub_source"].as_str()),
        (Some("0"), Some("1"), Some("assumed")),
        "{offset:#}"
    );
    assert_eq!(offset["differs"], true);
    // The worker's Euler ancestral reads the base's spacing; Karras sigmas it does not use.
    assert_eq!(row("timestep_spacing")["hub"], "leading", "{:#}", row("timestep_spacing"));
}

/// Images saved from the website: the Hub's settings are the worker's documented defaults
/// (assumed), and the local side renders at the card's training resolution.
#[test]
fn saved_website_images_compare_against_assumed_worker_defaults() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(&root.path().join("hub"), &[]);
    let env = Env::new(&hub.endpoint);
    publish(&env);
    let green = root.path().join("green.png");
    image::RgbImage::from_fn(64, 64, |_, y| if y < 32 { image::Rgb([90, 140, 230]) } else { image::Rgb([30, 170, 50]) }).save(&green).unwrap();
    let out = root.path().join("cmp");
    let o = env
        .cmd(&[
            "--json",
            "compare",
            "--prompt",
            "a photo of the SKY river",
            "--repo",
            "alice/sky-lora",
            "--seeds",
            "2",
            "--hub-image",
            green.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "3",
        ])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    ok(&o);
    let v = json(&o);
    let rows = v["settings"].as_array().unwrap();
    let row = |s: &str| rows.iter().find(|r| r["setting"] == s).unwrap().clone();
    assert_eq!(row("scheduler")["hub"], "EulerAncestralDiscreteScheduler");
    assert_eq!(row("scheduler")["hub_source"], "assumed");
    assert_eq!(row("steps")["hub"], "20");
    // The local side draws from torch's CPU generator by default, as the worker does.
    assert_eq!((row("seed")["local"].as_str(), row("seed")["hub"].as_str()), (Some("torch-cpu"), Some("torch-cpu")));
    assert_eq!(row("seed")["differs"], false);
    assert_eq!(v["paired"], false, "saved website images carry no seed");
    assert_eq!(v["local"]["resolved"]["width"], 64, "the card's training resolution");
    assert!(v["verdict"].as_str().unwrap().contains("--explain"), "{}", v["verdict"]);
    assert!(v["hub"]["stats"]["families"]["green"]["mean"].as_f64().unwrap() > 0.3, "{}", v["hub"]["stats"]["families"]);
}

/// `--hub-params match` sends the local side's settings, so a size planted on the Hub is
/// overridden by the request and no longer differs.
#[test]
fn hub_params_match_sends_the_local_settings() {
    let (root, _hub, env) = hub_rendering("scheduler: ddim\nsteps: 4\nguidance: 7.5\nwidth: 128\nheight: 128\ndtype: f32\n");
    let out = root.path().join("cmp");
    let o = compare(&env, &out, &["--hub-params", "match"]);
    ok(&o);
    let v = json(&o);
    let sent = &v["hub"]["renders"][0]["parameters_sent"]["parameters"];
    assert_eq!((sent["width"].as_u64(), sent["num_inference_steps"].as_u64()), (Some(64), Some(4)), "{sent}");
    let size = v["settings"].as_array().unwrap().iter().find(|r| r["setting"] == "size").unwrap().clone();
    assert_eq!((size["hub"].as_str(), size["differs"].as_bool()), (Some("64×64"), Some(false)), "{size}");
}
