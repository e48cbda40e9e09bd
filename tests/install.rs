//! Installing hfsky the ways its users do: the wheel that carries the binary (`pip install
//! hfsky`, `python -m hfsky`), the crate (`cargo install hfsky`), the release workflow that builds
//! both, and the Colab/Kaggle notebook run end to end against the offline Hub.
//!
//! The first three need Python tools (maturin, nbclient, ipykernel) that `scripts/test.sh`
//! installs into `.venv`; they are `#[ignore]`d so a bare `cargo test` says they did not run, and
//! the test script runs them with `--include-ignored`.

// A binary of its own: these tests rebuild target/debug/hfsky (maturin, cargo install), which
// must not happen while the other integration tests run it. cargo runs test binaries one at a time.
#[path = "cli/common.rs"]
mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// Held by every test here: two of them rebuild target/debug/hfsky, which the others run.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv's python (`HFSKY_PYTHON`, set by scripts/test.sh), which has the install tools.
fn python() -> PathBuf {
    PathBuf::from(test_python())
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    ok(&o)
}

#[test]
#[ignore = "builds a wheel with maturin from .venv (scripts/test.sh installs it and runs ignored tests)"]
fn the_wheel_carries_the_binary_and_the_demo_runs_on_it() {
    let _serial = one_at_a_time();
    let t = tempfile::tempdir().unwrap();
    let maturin = python().parent().unwrap().join("maturin");
    // The dev profile reuses the test build's dependencies; release wheels come from release.yml.
    run_ok(
        Command::new(&maturin).current_dir(repo()).args(["build", "--profile", "dev", "--compatibility", "linux", "-o"]).arg(t.path().join("dist")),
    );
    let wheel =
        std::fs::read_dir(t.path().join("dist")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "whl")).unwrap();
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("hfsky-{}-py3-none-", env!("CARGO_PKG_VERSION"))), "{name}");

    // A fresh venv, no index: the wheel needs nothing else.
    let venv = t.path().join("venv");
    run_ok(Command::new(python()).args(["-m", "venv"]).arg(&venv));
    run_ok(Command::new(venv.join("bin/python")).args(["-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check"]).arg(&wheel));
    let installed = venv.join("bin/hfsky");
    assert!(run_ok(Command::new(&installed).arg("--version")).contains(env!("CARGO_PKG_VERSION")));
    assert!(run_ok(Command::new(venv.join("bin/python")).args(["-m", "hfsky", "--version"])).contains(env!("CARGO_PKG_VERSION")));
    // The exit code comes through `python -m hfsky` unchanged (2: bad input).
    let o = Command::new(venv.join("bin/python")).args(["-m", "hfsky", "no-such-command"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let env: serde_json::Value = serde_json::from_str(&run_ok(Command::new(&installed).args(["--json", "env"]))).unwrap();
    assert_eq!(env["version"], env!("CARGO_PKG_VERSION"), "{env}");

    // The offline demo, start to end, on the installed binary.
    let out = run_ok(Command::new(repo().join("scripts/demo.sh")).env("HFSKY", &installed).env("DEMO_OUT", t.path().join("demo-output")));
    assert!(out.contains("hfsky train-and-push") && out.contains("hfsky compare"), "{out}");
    assert!(t.path().join("demo-output/compare/report.html").is_file());
}

#[test]
#[ignore = "runs cargo package and cargo install (minutes); scripts/test.sh runs ignored tests"]
fn the_crate_leaves_fixtures_out_and_installs_with_cargo() {
    let _serial = one_at_a_time();
    let list = run_ok(Command::new(env!("CARGO")).current_dir(repo()).args(["package", "--list", "--allow-dirty", "--locked"]));
    let files: Vec<&str> = list.lines().filter(|l| !l.starts_with("warning") && !l.trim().is_empty()).collect();
    for needed in ["Cargo.toml", "Cargo.lock", "README.md", "build.rs", "src/main.rs", "model_cards/lora.md.j2", "templates/compare_report.html.j2"] {
        assert!(files.contains(&needed), "{needed} is not packaged: {files:?}");
    }
    assert!(files.iter().all(|f| !f.starts_with("tests/") && !f.starts_with("data/") && !f.starts_with("benches/")), "{files:?}");

    let t = tempfile::tempdir().unwrap();
    let target = repo().join("target");
    run_ok(Command::new(env!("CARGO")).current_dir(repo()).args(["package", "--allow-dirty", "--no-verify", "--locked"]));
    let crate_file = target.join(format!("package/hfsky-{}.crate", env!("CARGO_PKG_VERSION")));
    let size = std::fs::metadata(&crate_file).unwrap().len();
    assert!(size < 10 << 20, "crates.io takes at most 10 MiB; the crate is {size} bytes");
    run_ok(Command::new("tar").arg("xzf").arg(&crate_file).arg("-C").arg(t.path()));
    let src = t.path().join(format!("hfsky-{}", env!("CARGO_PKG_VERSION")));
    // What crates.io users build: the packaged sources alone (the shared target dir only saves
    // rebuilding the dependencies).
    run_ok(
        Command::new(env!("CARGO"))
            .args(["install", "--debug", "--locked", "--path"])
            .arg(&src)
            .arg("--root")
            .arg(t.path().join("root"))
            .env("CARGO_TARGET_DIR", &target),
    );
    let installed = t.path().join("root/bin/hfsky");
    assert!(run_ok(Command::new(&installed).arg("--version")).contains(env!("CARGO_PKG_VERSION")));
    // The commit comes from .cargo_vcs_info.json: there is no git repository in the package.
    let env: serde_json::Value = serde_json::from_str(&run_ok(Command::new(&installed).args(["--json", "env"]))).unwrap();
    let head = run_ok(Command::new("git").current_dir(repo()).args(["rev-parse", "--short=12", "HEAD"]));
    assert_eq!(env["git_hash"].as_str(), Some(head.trim()), "{env}");
}

#[test]
fn the_release_workflow_parses_and_runs_scripts_that_exist() {
    let _serial = one_at_a_time();
    let text = std::fs::read_to_string(repo().join(".github/workflows/release.yml")).unwrap();
    let wf: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    for job in ["test", "wheels", "cuda", "github-release", "pypi", "crates-io"] {
        assert!(jobs.contains_key(job), "release.yml has no job {job}");
    }
    // Publishing by trusted publishing only: id-token permission, no stored secret.
    for job in ["pypi", "crates-io"] {
        assert_eq!(wf["jobs"][job]["permissions"]["id-token"], "write", "{job}");
    }
    assert!(!text.contains("secrets."), "release.yml must not use stored secrets");
    // Every ./scripts/… a step runs is in the repository and executable.
    let mut scripts = 0;
    for (_, job) in jobs {
        for step in job["steps"].as_sequence().into_iter().flatten() {
            let Some(run) = step["run"].as_str() else { continue };
            for word in run.split_whitespace() {
                if let Some(rel) = word.trim_matches('"').strip_prefix("./scripts/") {
                    let path = repo().join("scripts").join(rel);
                    let mode =
                        std::fs::metadata(&path).unwrap_or_else(|_| panic!("release.yml runs scripts/{rel}, which does not exist")).permissions();
                    assert!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0, "scripts/{rel} is not executable");
                    scripts += 1;
                }
            }
        }
    }
    assert!(scripts >= 4, "expected the test, CUDA and packaging scripts, found {scripts}");
}

#[test]
fn a_binary_is_packed_with_its_checksum() {
    let _serial = one_at_a_time();
    let t = tempfile::tempdir().unwrap();
    let asset = run_ok(Command::new(repo().join("scripts/package-binary.sh")).arg(bin()).arg("hfsky-test-x86_64").arg(t.path()));
    let asset = PathBuf::from(asset.trim());
    assert_eq!(asset, t.path().join("hfsky-test-x86_64.tar.gz"));
    run_ok(Command::new("sha256sum").current_dir(t.path()).args(["-c", "hfsky-test-x86_64.tar.gz.sha256"]));
    let listing = run_ok(Command::new("tar").arg("tzf").arg(&asset));
    assert!(listing.contains("hfsky-test-x86_64/hfsky\n") && listing.contains("hfsky-test-x86_64/README.md"), "{listing}");
    // A name that would escape the folder is refused.
    let o = Command::new(repo().join("scripts/package-binary.sh")).arg(bin()).arg("../x").arg(t.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
#[ignore = "executes examples/hfsky-colab.ipynb with nbclient from .venv (scripts/test.sh installs it and runs ignored tests)"]
fn the_notebook_runs_the_whole_flow_offline() {
    let _serial = one_at_a_time();
    let t = tempfile::tempdir().unwrap();
    let hub = start_hub(&t.path().join("hub"), &[]);
    let env = Env::new(&hub.endpoint);
    ok(&env
        .cmd(&["push", repo().join("tests/fixtures/tiny-sd15").to_str().unwrap(), "--repo", "alice/tiny-sd15"])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap());
    let photos = t.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for p in std::fs::read_dir(repo().join("data/sky-photos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .take(4)
    {
        std::fs::copy(&p, photos.join(p.file_name().unwrap())).unwrap();
    }
    let work = t.path().join("work");
    let executed = t.path().join("executed.ipynb");
    let path = format!("{}:{}", bin().parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let runner = "import sys, nbformat, nbclient\n\
                  nb = nbformat.read(sys.argv[1], as_version=4)\n\
                  nbclient.NotebookClient(nb, timeout=900, kernel_name='python3').execute()\n\
                  nbformat.write(nb, sys.argv[2])\n";
    let mut cmd = Command::new(python());
    cmd.args(["-c", runner]).arg(repo().join("examples/hfsky-colab.ipynb")).arg(&executed);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    cmd.env("PATH", path)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("HF_TOKEN", ALICE)
        .env("JUPYTER_RUNTIME_DIR", t.path().join("jupyter"))
        .env("HFSKY_NB_PHOTOS", &photos)
        .env("HFSKY_NB_BASE_MODEL", "alice/tiny-sd15")
        .env("HFSKY_NB_REPO", "alice/sky-lora")
        .env("HFSKY_NB_RESOLUTION", "64")
        .env("HFSKY_NB_MAX_STEPS", "4")
        .env("HFSKY_NB_VALIDATION_STEPS", "2")
        .env("HFSKY_NB_GENERATE_STEPS", "2")
        .env("HFSKY_NB_CAPTION_MODEL", repo().join("tests/fixtures/tiny-blip"))
        .env("HFSKY_NB_WORK", &work);
    run_ok(&mut cmd);

    // It did the job: captions beside the photos, the LoRA and its card on the Hub, renders, the
    // compare report, and the notebook shows them.
    assert!(std::fs::read_dir(&photos).unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "txt")), "no captions written");
    let fetched = t.path().join("fetched");
    ok(&env.cmd(&["download", "alice/sky-lora", "--local-dir", fetched.to_str().unwrap()]).env("HF_TOKEN", ALICE).output().unwrap());
    assert!(fetched.join("pytorch_lora_weights.safetensors").is_file() && fetched.join("README.md").is_file());
    assert!(work.join("images/seed-0.png").is_file() && work.join("compare/report.html").is_file());
    let nb: serde_json::Value = serde_json::from_slice(&std::fs::read(&executed).unwrap()).unwrap();
    let outputs: Vec<&serde_json::Value> =
        nb["cells"].as_array().unwrap().iter().flat_map(|c| c["outputs"].as_array().into_iter().flatten()).collect();
    assert!(outputs.iter().any(|o| !o["data"]["image/png"].is_null()), "no rendered image shown");
    assert!(outputs.iter().any(|o| !o["data"]["text/html"].is_null()), "no report shown");
    assert!(!outputs.iter().any(|o| o["output_type"] == "error"), "a cell failed");
}
