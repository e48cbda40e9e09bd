//! `hfsky ci init`: the written GitHub Actions workflow parses, asks for `id-token: write`, and
//! its steps (everything but installing hfsky) publish to the offline Hub when run the way a
//! runner runs them: bash, the job's env, a stand-in id-token endpoint, a step summary file.

use crate::common::*;
use std::path::Path;

fn workflow(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Runs the job's steps like a runner: `if: always()` steps run after a failure, others stop.
/// Returns the id of the first failing step.
fn run_job(wf: &serde_yaml::Value, workdir: &Path, hub: &Hub, ci: &IdTokenServer, summary: &Path) -> Option<String> {
    let job = &wf["jobs"]["publish"];
    let bin_dir = workdir.join(".bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let link = bin_dir.join("hfsky");
    if !link.exists() {
        std::os::unix::fs::symlink(bin(), &link).unwrap();
    }
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut failed: Option<String> = None;
    for step in job["steps"].as_sequence().unwrap() {
        let Some(script) = step["run"].as_str() else { continue };
        let id = step["id"].as_str().unwrap_or("").to_string();
        if id == "install" {
            continue; // the binary under test stands in for the install
        }
        if failed.is_some() && step["if"].as_str() != Some("always()") {
            continue;
        }
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script]).current_dir(workdir);
        cmd.env_clear().env("PATH", &path).env("HOME", workdir).env("HF_HOME", workdir.join(".hf"));
        for (k, v) in job["env"].as_mapping().unwrap() {
            cmd.env(k.as_str().unwrap(), v.as_str().unwrap());
        }
        for (k, v) in ci.github_env() {
            cmd.env(k, v);
        }
        cmd.env("HF_ENDPOINT", &hub.endpoint)
            .env("GITHUB_STEP_SUMMARY", summary)
            .env("GITHUB_REPOSITORY", "org/project")
            .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
            .env("HFSKY_RETRY_BASE_MS", "20");
        let out = cmd.output().unwrap();
        assert!(!text(&out).contains(CI_REQUEST_TOKEN), "step {id} printed the request token");
        if !out.status.success() && failed.is_none() {
            eprintln!("step {id} failed:\n{}", text(&out));
            failed = Some(id);
        }
    }
    failed
}

#[test]
fn the_written_workflow_publishes_to_the_offline_hub() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &[]);
    let ci = IdTokenServer::start(CI_SUBJECT, 200);
    let project = tempfile::tempdir().unwrap();
    let env = Env::new(&hub.endpoint);
    let out = env.cmd(&["--json", "ci", "init", "--repo", "alice/sky-lora", "--dir", "lora"]).current_dir(project.path()).output().unwrap();
    let v = json(&out);
    assert_eq!(v["path"], ".github/workflows/hfsky-publish.yml");
    let wf_path = project.path().join(".github/workflows/hfsky-publish.yml");
    let wf = workflow(&wf_path);
    assert_eq!(wf["permissions"]["id-token"], "write");
    assert_eq!(wf["jobs"]["publish"]["env"]["HF_REPO"], "alice/sky-lora");
    let runs: Vec<&str> = wf["jobs"]["publish"]["steps"].as_sequence().unwrap().iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(runs.iter().any(|r| r.starts_with("python3 -m pip install") && r.contains(&format!("hfsky=={}", env!("CARGO_PKG_VERSION")))), "{runs:?}");
    assert!(runs.iter().any(|r| r.contains("hfsky --json push") && r.contains("--oidc")), "{runs:?}");
    assert!(runs.iter().any(|r| r.contains("--dry-run")), "{runs:?}");
    assert!(runs.iter().any(|r| r.contains("GITHUB_STEP_SUMMARY")), "{runs:?}");

    // A model card that does not parse: the check step fails, nothing is published.
    let lora = project.path().join("lora");
    write(&lora.join("README.md"), b"---\nbase_model: [unclosed\n---\n# sky\n");
    write(&lora.join("pytorch_lora_weights.safetensors"), &noise(20_000, 3));
    let summary = project.path().join("summary.md");
    assert_eq!(run_job(&wf, project.path(), &hub, &ci, &summary).as_deref(), Some("check"));
    assert!(!summary.exists(), "no result, no summary");
    let anon = hfsky::hub::HubClient::new(&hub.endpoint, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = hfsky::repo_id::RepoId::parse("alice/sky-lora").unwrap();
    assert_eq!(rt.block_on(anon.repo_info(&id, None)).unwrap_err().error_code(), Some("RepoNotFound"));

    // Fixed: the job publishes, and the summary links the commit.
    write(&lora.join("README.md"), b"---\nbase_model: stabilityai/stable-diffusion-xl-base-1.0\nlicense: openrail++\n---\n# sky\n");
    assert_eq!(run_job(&wf, project.path(), &hub, &ci, &summary), None);
    let head = rt.block_on(anon.repo_info(&id, None)).unwrap().sha.unwrap();
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("Published alice/sky-lora@main"), "{md}");
    assert!(md.contains(&format!("{}/alice/sky-lora/commit/{head}", hub.endpoint)), "{md}");
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(project.path().join("hfsky-result.json")).unwrap()).unwrap();
    assert_eq!(result["commit_oid"], head.as_str());
    // Each run minted fresh id tokens for this Hub's audience (check + publish).
    assert!(ci.audiences.lock().unwrap().iter().all(|a| a == &hub.endpoint));
    let minted = ci.minted.lock().unwrap().clone();
    assert_eq!(minted.len(), 3, "check (refused card: after the exchange), check, publish");
    for (rel, bytes) in files_under(project.path()) {
        for j in &minted {
            assert!(!bytes.windows(j.len()).any(|w| w == j.as_bytes()), "id token written to {rel}");
        }
    }

    // Run again: nothing to publish, still a summary.
    std::fs::remove_file(&summary).unwrap();
    assert_eq!(run_job(&wf, project.path(), &hub, &ci, &summary), None);
    assert!(std::fs::read_to_string(&summary).unwrap().contains("is up to date"));
    assert_eq!(rt.block_on(anon.repo_info(&id, None)).unwrap().sha.unwrap(), head);

    // A publisher the Hub does not trust: the job fails and the summary says why.
    let stranger = IdTokenServer::start("repo:someone/else:ref:refs/heads/main", 200);
    write(&lora.join("notes.txt"), b"v2");
    std::fs::remove_file(&summary).unwrap();
    // The dry-run check already needs the exchange, so that step fails first.
    assert_eq!(run_job(&wf, project.path(), &hub, &stranger, &summary).as_deref(), Some("check"));
    assert_eq!(rt.block_on(anon.repo_info(&id, None)).unwrap().sha.unwrap(), head);
}

#[test]
fn the_summary_of_a_failed_publish_names_the_error() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("http://127.0.0.1:9");
    let f = work.path().join("r.json");
    std::fs::write(&f, r#"{"error":"the Hub refused the OIDC token exchange for alice/x: not a trusted publisher","exit_code":3}"#).unwrap();
    let md = ok(&env.run(&["ci", "summary", f.to_str().unwrap()]));
    assert!(md.contains("Publishing failed (exit code 3)") && md.contains("not a trusted publisher"), "{md}");
    std::fs::write(&f, "{}").unwrap();
    assert!(code(&env.run(&["ci", "summary", f.to_str().unwrap()]), 2).contains("neither a push result nor an error"));
    assert!(code(&env.run(&["ci", "summary", "/no/such.json"]), 2).contains("cannot read"));
}

#[test]
fn init_writes_the_train_flow_and_never_overwrites_silently() {
    let project = tempfile::tempdir().unwrap();
    let env = Env::new("http://127.0.0.1:9");
    let run = |args: &[&str]| env.cmd(args).current_dir(project.path()).output().unwrap();
    ok(&run(&["ci", "init", "--train", "--config", "configs/sky.yaml", "--runs-on", "gpu-runner"]));
    let path = project.path().join(".github/workflows/hfsky-publish.yml");
    let wf = workflow(&path);
    let job = &wf["jobs"]["publish"];
    assert_eq!(wf["permissions"]["id-token"], "write");
    assert_eq!(job["runs-on"], "gpu-runner");
    assert_eq!(job["env"]["HF_REPO"], "${{ vars.HF_REPO }}");
    assert_eq!(job["env"]["HFSKY_TRAIN_CONFIG"], "configs/sky.yaml");
    let runs: Vec<&str> = job["steps"].as_sequence().unwrap().iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(runs.iter().any(|r| r.contains("hfsky --json train-and-push --config \"$HFSKY_TRAIN_CONFIG\" --repo \"$HF_REPO\" --oidc")), "{runs:?}");
    assert!(runs.iter().any(|r| r.contains("train-and-push") && r.contains("--dry-run")), "{runs:?}");

    let before = std::fs::read(&path).unwrap();
    let msg = code(&run(&["ci", "init", "--repo", "alice/x"]), 2);
    assert!(msg.contains("already exists") && msg.contains("--force"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    ok(&run(&["ci", "init", "--repo", "alice/x", "--force"]));
    assert_eq!(workflow(&path)["jobs"]["publish"]["env"]["HF_REPO"], "alice/x");

    for bad in [
        &["ci", "init", "--repo", "no-slash", "--out", "a.yml"][..],
        &["ci", "init", "--dir", "my model", "--out", "b.yml"],
        &["ci", "init", "--install-from", "pip", "--out", "c.yml"],
        &["ci", "init", "--provider", "gitlab"],
    ] {
        code(&run(bad), 2);
    }
    assert!(!project.path().join("a.yml").exists());
}
