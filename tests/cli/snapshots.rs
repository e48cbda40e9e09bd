//! Snapshots of what users see: help texts, the human output and the `--json` documents of the
//! commands people run first, against temp folders and the offline Hub. Temp paths, ports and
//! times are filtered; a change in wording or shape shows up as a snapshot diff to review
//! (`cargo insta review`, or `INSTA_UPDATE=always` and `git diff tests/cli/snapshots/`).

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
