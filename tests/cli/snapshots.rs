//! Snapshots of what users see: help texts, the human output and the `--json` documents of
//! each command (dataset check/captions/caption/report, whoami, login/logout, push, download,
//! train, train-and-push --dry-run, card render, generate, compare's summary, lora convert, token
//! list, ci init/summary, env), against temp folders and the offline Hub. Temp paths,
//! ports, times, memory and machine facts are filtered; a change in wording or shape shows up as
//! a snapshot diff to review (`cargo insta review`, or `INSTA_UPDATE=always` and
//! `git diff tests/cli/snapshots/`). The renders and the training run are tiny (64 px, 2 steps):
//! the whole module takes a few seconds.

use crate::common::*;
use std::path::Path;

/// The filters every snapshot here applies: this run's temp folder, the offline Hub's port.
fn settings(tmp: &Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&tmp.display().to_string()), "[tmp]");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    s.add_filter(r"req-[0-9a-f]{16}", "req-[id]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' { c.to_string() } else { format!("\\{c}") }).collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn help_texts() {
    let t = tempfile::tempdir().unwrap();
    let env = Env::new("http://127.0.0.1:9");
    settings(t.path()).bind(|| {
        insta::assert_snapshot!("help", stdout(&env.run(&["--help"])));
        // Every train.yaml key, with its doc, as a flag.
        insta::assert_snapshot!("train_help", stdout(&env.run(&["train", "--help"])));
        insta::assert_snapshot!("dataset_help", stdout(&env.run(&["dataset", "--help"])));
    });
}

#[test]
fn dataset_check_human_and_json() {
    let t = tempfile::tempdir().unwrap();
    let photos = t.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["bridge.jpg", "storm.jpg", "kite.jpg"] {
        std::fs::copy(repo.join("data/sky-photos").join(name), photos.join(name)).unwrap();
    }
    std::fs::write(photos.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let env = Env::new("http://127.0.0.1:9");
    let human = env.run(&["dataset", "check", photos.to_str().unwrap()]);
    let json = json(&env.run(&["--json", "dataset", "check", photos.to_str().unwrap()]));
    settings(t.path()).bind(|| {
        insta::assert_snapshot!("dataset_check", format!("exit {:?}\n{}", human.status.code(), text(&human)));
        insta::assert_json_snapshot!("dataset_check_json", json);
    });
}

#[test]
fn whoami_and_push_dry_run_against_the_offline_hub() {
    let t = tempfile::tempdir().unwrap();
    let hub = start_hub(&t.path().join("hub"), &[]);
    let env = Env::new(&hub.endpoint);
    let model = t.path().join("my-lora");
    write(&model.join("README.md"), b"---\nbase_model: stable-diffusion-v1-5/stable-diffusion-v1-5\nlicense: mit\n---\n# my lora\n");
    write(&model.join("pytorch_lora_weights.safetensors"), &noise(4096, 1));
    let run = |args: &[&str]| env.cmd(args).env("HF_TOKEN", ALICE).output().unwrap();
    let whoami = run(&["whoami"]);
    let whoami_json = json(&run(&["--json", "whoami"]));
    let push = run(&["push", model.to_str().unwrap(), "--repo", "alice/my-lora", "--dry-run"]);
    let push_json = json(&run(&["--json", "push", model.to_str().unwrap(), "--repo", "alice/my-lora", "--dry-run"]));
    settings(t.path()).bind(|| {
        insta::assert_snapshot!("whoami", text(&whoami));
        insta::assert_json_snapshot!("whoami_json", whoami_json);
        insta::assert_snapshot!("push_dry_run", text(&push));
        insta::assert_json_snapshot!("push_dry_run_json", push_json);
    });
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Timings and memory in the human output (`in 1.2 s`, `1.75 GiB`) as placeholders.
fn measured(s: &mut insta::Settings) {
    s.add_filter(r"\d+(\.\d+)? s\b", "[seconds] s");
    s.add_filter(r"\d+\.\d+ GiB", "[n] GiB");
}

/// Three small photos with sidecar captions and a train.yaml for 2 steps on the tiny SD 1.5
/// pipeline at 64 px: a second or two of CPU.
fn tiny_training(dir: &Path) -> std::path::PathBuf {
    let photos = dir.join("photos");
    for i in 0..3u32 {
        let img = image::RgbImage::from_fn(72 + 8 * i, 64, |x, y| {
            if y < 40 {
                image::Rgb([200, (90 + y * 2) as u8, (x * 3 % 255) as u8])
            } else {
                image::Rgb([25, 30, 12])
            }
        });
        std::fs::create_dir_all(&photos).unwrap();
        img.save(photos.join(format!("sky-{i}.png"))).unwrap();
        std::fs::write(photos.join(format!("sky-{i}.txt")), format!("orange sunset {i}")).unwrap();
    }
    let cfg = dir.join("train.yaml");
    let yaml = format!(
        "base_model: {}\ndataset: ./photos\ninstance_prompt: a photo of SKY\noutput_dir: ./out\nresolution: 64\nmax_steps: 2\nlearning_rate: 1.0e-2\nseed: 3\n",
        fixture("tiny-sd15").display()
    );
    std::fs::write(&cfg, yaml).unwrap();
    cfg
}

#[test]
#[cfg_attr(feature = "cuda", ignore = "the snapshot is of a CPU training run's messages")]
fn train_and_card_render_human_and_json() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let cfg = tiny_training(d);
    let cfg = cfg.to_str().unwrap();
    let out_json = d.join("out-json");
    let human = env.run(&["train", "--config", cfg]);
    let train_json = json(&env.run(&["--json", "train", "--config", cfg, "--output-dir", out_json.to_str().unwrap()]));
    let card = env.run(&["card", "render", d.join("out").to_str().unwrap(), "--repo", "alice/sky-lora"]);
    let card_json = json(&env.run(&["--json", "card", "render", out_json.to_str().unwrap(), "--repo", "alice/sky-lora"]));
    let mut s = settings(d);
    measured(&mut s);
    // The loss of two steps differs in its last digits between machines (summation order).
    s.add_filter(r"final loss \d+\.\d+", "final loss [loss]");
    s.bind(|| {
        insta::assert_snapshot!("train", format!("exit {:?}\n{}", human.status.code(), text(&human)));
        insta::assert_json_snapshot!("train_json", train_json, {
            ".seconds" => "[seconds]",
            ".final_loss" => "[loss]",
            ".peak_host_memory_bytes" => "[bytes]",
            ".peak_device_memory_bytes" => "[bytes]",
        });
        insta::assert_snapshot!("card_render", text(&card));
        insta::assert_json_snapshot!("card_render_json", card_json);
    });
}

#[test]
fn generate_human_and_json() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let model = fixture("tiny-sd15");
    let lora = fixture("tiny-sd15-lora");
    let args = |out: &str| -> Vec<String> {
        let mut a: Vec<String> = ["generate", "--model", model.to_str().unwrap(), "--lora", lora.to_str().unwrap(), "--prompt", "a photo of SKY"]
            .map(String::from)
            .to_vec();
        a.extend(["--steps", "2", "--width", "64", "--height", "64", "--seeds", "1,2", "--out"].map(String::from));
        a.push(d.join(out).display().to_string());
        a
    };
    let human_args = args("human");
    let human = env.run(&human_args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut json_args = vec!["--json".to_string()];
    json_args.extend(args("json"));
    let generate_json = json(&env.run(&json_args.iter().map(String::as_str).collect::<Vec<_>>()));
    let mut s = settings(d);
    s.add_filter(&regex_escape(&fixture("").display().to_string()), "[fixtures]/");
    s.bind(|| {
        insta::assert_snapshot!("generate", format!("exit {:?}\n{}", human.status.code(), text(&human)));
        insta::assert_json_snapshot!("generate_json", generate_json, {
            ".images[].seconds" => "[seconds]",
            ".images[].settings.hfsky_version" => "[version]",
        });
    });
}

/// The text summary of a comparison against an image saved from the website: the verdict, the
/// settings that differ and where the images differ (measures as placeholders: their last
/// digits follow the CPU's float summation).
#[test]
fn compare_text_summary() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let hub_image = d.join("widget.png");
    image::RgbImage::from_fn(64, 64, |_, y| if y < 32 { image::Rgb([90, 140, 230]) } else { image::Rgb([30, 170, 50]) }).save(&hub_image).unwrap();
    let o = env.run(&[
        "compare",
        "--prompt",
        "a photo of the SKY river",
        "--model",
        fixture("tiny-sd15").to_str().unwrap(),
        "--hub-image",
        hub_image.to_str().unwrap(),
        "--seeds",
        "1",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        d.join("cmp").to_str().unwrap(),
    ]);
    let mut s = settings(d);
    s.add_filter(&regex_escape(&fixture("").display().to_string()), "[fixtures]/");
    s.add_filter(r"-?\d+\.\d+", "[x]");
    s.add_filter(r"\d+%", "[n]%");
    s.add_filter(r"\d+°", "[n]°");
    s.bind(|| insta::assert_snapshot!("compare", format!("exit {:?}\n{}", o.status.code(), text(&o))));
}

#[test]
fn token_list_ci_init_and_ci_summary() {
    let t = tempfile::tempdir().unwrap();
    let hub = start_hub(&t.path().join("hub"), &[]);
    let env = Env::new(&hub.endpoint);
    let d = env.dir.path();
    let empty = env.run(&["token", "list"]);
    ok(&env.run_stdin(&["login", "--token-stdin", "--store", "file", "--name", "laptop"], &format!("{ALICE}\n")));
    let list = env.run(&["token", "list"]);
    let list_json = json(&env.run(&["--json", "token", "list"]));

    let workflow = d.join("wf/publish.yml");
    let init_args = ["ci", "init", "--repo", "alice/sky-lora", "--out", workflow.to_str().unwrap()];
    let init = env.cmd(&init_args).current_dir(d).output().unwrap();
    let again = env.cmd(&init_args).current_dir(d).output().unwrap();
    let init_json = json(&env.cmd(&[&["--json"][..], &init_args[..], &["--force"][..]].concat()).current_dir(d).output().unwrap());

    let model = d.join("my-lora");
    write(&model.join("README.md"), b"---\nbase_model: stable-diffusion-v1-5/stable-diffusion-v1-5\nlicense: mit\n---\n# my lora\n");
    write(&model.join("pytorch_lora_weights.safetensors"), &noise(4096, 1));
    let pushed = env.cmd(&["--json", "push", model.to_str().unwrap(), "--repo", "alice/my-lora"]).env("HF_TOKEN", ALICE).output().unwrap();
    let push_file = d.join("push.json");
    ok(&pushed);
    std::fs::write(&push_file, &pushed.stdout).unwrap();
    let summary = env.run(&["ci", "summary", push_file.to_str().unwrap()]);
    let summary_json = json(&env.run(&["--json", "ci", "summary", push_file.to_str().unwrap()]));
    let failed = env.cmd(&["--json", "push", model.to_str().unwrap(), "--repo", "bob/elsewhere"]).env("HF_TOKEN", ALICE).output().unwrap();
    let error_file = d.join("error.json");
    std::fs::write(&error_file, &failed.stdout).unwrap();
    let error_summary = env.run(&["ci", "summary", error_file.to_str().unwrap()]);

    let mut s = settings(t.path());
    s.add_filter(&regex_escape(&d.display().to_string()), "[home]");
    s.add_filter(r"\b[0-9a-f]{40}\b", "[oid]");
    s.add_filter(r"`[0-9a-f]{10}`", "`[oid]`");
    s.add_filter(&regex_escape(env!("CARGO_PKG_VERSION")), "[version]");
    s.bind(|| {
        insta::assert_snapshot!("token_list_empty", text(&empty));
        insta::assert_snapshot!("token_list", text(&list));
        insta::assert_json_snapshot!("token_list_json", list_json);
        insta::assert_snapshot!("ci_init", format!("{}\n--- again:\nexit {:?}\n{}", text(&init), again.status.code(), text(&again)));
        insta::assert_json_snapshot!("ci_init_json", init_json);
        insta::assert_snapshot!("ci_summary", text(&summary));
        insta::assert_json_snapshot!("ci_summary_json", summary_json);
        insta::assert_snapshot!("ci_summary_error", format!("exit {:?}\n{}", failed.status.code(), text(&error_summary)));
    });
}

/// `hfsky env` with what belongs to this machine (versions, CPU, memory, paths, the commit)
/// as placeholders; the devices a CUDA build lists are its own.
#[test]
#[cfg_attr(feature = "cuda", ignore = "the snapshot is of a CPU-only build's devices")]
fn env_human_and_json() {
    let env = Env::new("http://127.0.0.1:9");
    write(&env.hf_home().join("hub/models--a--b/blobs/x"), &[7u8; 1234]);
    let run = |args: &[&str]| env.cmd(args).env("HF_TOKEN", ALICE).env("RAYON_NUM_THREADS", "3").output().unwrap();
    let human = run(&["env"]);
    let env_json = json(&run(&["--json", "env"]));
    let mut s = settings(env.dir.path());
    s.add_filter(&regex_escape(env!("CARGO_PKG_VERSION")), "[version]");
    s.add_filter(r"\([0-9a-f]{12}\)", "([git hash])");
    s.add_filter(r"os: [^\n]+", "os: [os]");
    s.add_filter(r"device cpu: [^,]+,", "device cpu: [cpu name],");
    s.add_filter(r"\d+\.\d+ GiB", "[n] GiB");
    s.bind(|| {
        insta::assert_snapshot!("env", text(&human));
        insta::assert_json_snapshot!("env_json", env_json, {
            ".version" => "[version]",
            ".git_hash" => "[git hash]",
            ".os" => "[os]",
            ".build.debug_assertions" => "[debug build]",
            ".devices[].name" => "[cpu name]",
            ".devices[].memory_free_bytes" => "[bytes]",
            ".devices[].memory_total_bytes" => "[bytes]",
        });
    });
}

/// The rest of the commands a user types: login and logout (file store), download after a push,
/// `lora convert`, `dataset captions export|check|import`, `dataset caption` and `dataset report`
/// on three bundled photos, and `train-and-push --dry-run`, human and `--json`.
#[test]
fn login_download_lora_convert_dataset_captions_and_train_and_push_dry_run() {
    let t = tempfile::tempdir().unwrap();
    let hub = start_hub(&t.path().join("hub"), &[]);
    let env = Env::new(&hub.endpoint);
    let d = env.dir.path();
    let login = env.run_stdin(&["login", "--token-stdin", "--store", "file", "--name", "laptop"], &format!("{ALICE}\n"));
    let logout_json = json(&env.run(&["--json", "logout", "--name", "laptop"]));
    let login_json = json(&env.run_stdin(&["--json", "login", "--token-stdin", "--store", "file", "--name", "laptop"], &format!("{ALICE}\n")));
    let logout = env.run(&["logout", "--name", "laptop"]);

    let model = d.join("my-lora");
    write(&model.join("README.md"), b"---\nbase_model: stable-diffusion-v1-5/stable-diffusion-v1-5\nlicense: mit\n---\n# my lora\n");
    write(&model.join("pytorch_lora_weights.safetensors"), &noise(4096, 1));
    ok(&env.cmd(&["push", model.to_str().unwrap(), "--repo", "alice/my-lora"]).env("HF_TOKEN", ALICE).output().unwrap());
    let local = d.join("dl");
    let download = env.run(&["download", "alice/my-lora", "README.md", "--local-dir", local.to_str().unwrap()]);
    let download_json = json(&env.run(&["--json", "download", "alice/my-lora", "--local-dir", local.to_str().unwrap()]));

    let lora = fixture("tiny-sd15-lora/pytorch_lora_weights.safetensors");
    let kohya = d.join("kohya.safetensors");
    let convert = env.run(&["lora", "convert", lora.to_str().unwrap(), "--to", "kohya", "--out", kohya.to_str().unwrap(), "--base", "sd15"]);
    let convert_json = json(&env.run(&[
        "--json",
        "lora",
        "convert",
        lora.to_str().unwrap(),
        "--to",
        "comfyui",
        "--out",
        d.join("c.safetensors").to_str().unwrap(),
        "--base",
        "sd15",
    ]));

    let photos = d.join("photos");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["bridge.jpg", "storm.jpg", "kite.jpg"] {
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::copy(repo.join("data/sky-photos").join(name), photos.join(name)).unwrap();
    }
    std::fs::write(photos.join("storm.txt"), "purple storm clouds over the sea").unwrap();
    std::fs::write(photos.join("kite.txt"), "purple storm clouds over the sea").unwrap();
    let export = env.run(&["dataset", "captions", "export", photos.to_str().unwrap()]);
    let check = env.run(&["dataset", "captions", "check", photos.to_str().unwrap()]);
    let check_json = json(&env.run(&["--json", "dataset", "captions", "check", photos.to_str().unwrap()]));
    let report = env.run(&["dataset", "report", photos.to_str().unwrap(), "--out", d.join("report").to_str().unwrap()]);
    let tsv = d.join("captions.tsv");
    std::fs::write(&tsv, "file_name\ttext\nbridge.jpg\tan orange sunset behind a bridge\n").unwrap();
    let import = env.run(&["dataset", "captions", "import", photos.to_str().unwrap(), tsv.to_str().unwrap()]);
    let caption = env.run(&["dataset", "caption", photos.to_str().unwrap(), "--template", "a photo of SKY, {caption}", "--overwrite", "--dry-run"]);
    let caption_json = json(&env.run(&[
        "--json",
        "dataset",
        "caption",
        photos.to_str().unwrap(),
        "--template",
        "a photo of SKY, {caption}",
        "--overwrite",
        "--dry-run",
    ]));

    // train-and-push --dry-run: what would be trained and published, checked against the Hub.
    let cfg = tiny_training(&d.join("run"));
    let plan = env
        .cmd(&["train-and-push", "--repo", "alice/sky-lora", "--dry-run", "--config", cfg.to_str().unwrap()])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    let plan_json = json(
        &env.cmd(&["--json", "train-and-push", "--repo", "alice/sky-lora", "--dry-run", "--config", cfg.to_str().unwrap()])
            .env("HF_TOKEN", ALICE)
            .output()
            .unwrap(),
    );

    let mut s = settings(t.path());
    s.add_filter(&regex_escape(&d.display().to_string()), "[home]");
    s.add_filter(&regex_escape(env!("CARGO_MANIFEST_DIR")), "[repo]");
    s.add_filter(r"\b[0-9a-f]{40}\b", "[oid]");
    s.add_filter(r"\b[0-9a-f]{64}\b", "[sha256]");
    s.bind(|| {
        insta::assert_snapshot!("login_logout", format!("{}\n--- logout:\n{}", text(&login), text(&logout)));
        insta::assert_json_snapshot!("login_json", login_json);
        insta::assert_json_snapshot!("logout_json", logout_json);
        insta::assert_snapshot!("download", text(&download));
        insta::assert_json_snapshot!("download_json", download_json);
        insta::assert_snapshot!("lora_convert", text(&convert));
        insta::assert_json_snapshot!("lora_convert_json", convert_json);
        insta::assert_snapshot!("dataset_captions_export", format!("{}{}", stdout(&export), String::from_utf8_lossy(&export.stderr)));
        insta::assert_snapshot!("dataset_captions_check", format!("exit {:?}\n{}", check.status.code(), text(&check)));
        insta::assert_json_snapshot!("dataset_captions_check_json", check_json);
        insta::assert_snapshot!("dataset_report", text(&report));
        insta::assert_snapshot!("dataset_captions_import", text(&import));
        insta::assert_snapshot!("dataset_caption_dry_run", text(&caption));
        insta::assert_json_snapshot!("dataset_caption_dry_run_json", caption_json);
        insta::assert_snapshot!("train_and_push_dry_run", format!("exit {:?}\n{}", plan.status.code(), text(&plan)));
        insta::assert_json_snapshot!("train_and_push_dry_run_json", plan_json);
    });
}
