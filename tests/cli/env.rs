//! `hfsky env`: the report a user pastes into a bug report, in both forms, never with the token.

use crate::common::*;

#[test]
fn env_reports_build_devices_cache_and_token_source_without_the_token() {
    let env = Env::new("http://127.0.0.1:9");
    write(&env.hf_home().join("hub/models--a--b/blobs/x"), &[7u8; 1234]);
    let run = |args: &[&str]| env.cmd(args).env("HF_TOKEN", ALICE).env("RAYON_NUM_THREADS", "3").output().unwrap();
    let o = run(&["--json", "env"]);
    let out = ok(&o);
    assert!(!text(&o).contains(ALICE), "the token never appears");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "auto_device",
            "build",
            "devices",
            "endpoint",
            "git_hash",
            "gpu_conv",
            "gpu_unavailable",
            "hf_home",
            "hf_hub_offline",
            "hub_cache",
            "hub_cache_bytes",
            "os",
            "rayon_threads",
            "token",
            "version"
        ]
    );
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let head = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    if let Some(h) = head.ok().filter(|h| h.status.success()) {
        assert_eq!(v["git_hash"], String::from_utf8_lossy(&h.stdout).trim(), "built from this checkout's commit");
    }
    assert_eq!(v["build"]["cuda"], cfg!(feature = "cuda"));
    assert_eq!(v["build"]["cudnn"], cfg!(feature = "cudnn"));
    let cpu = &v["devices"][0];
    let dkeys: Vec<&str> = cpu.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(dkeys, ["bf16", "compute_capability", "f16", "kind", "memory_free_bytes", "memory_total_bytes", "name", "ordinal", "threads"]);
    assert_eq!((cpu["kind"].as_str(), cpu["threads"].as_u64(), cpu["bf16"].as_bool()), (Some("cpu"), Some(3), Some(false)));
    assert_eq!(v["rayon_threads"], 3);
    if !cfg!(feature = "cuda") {
        assert_eq!(v["devices"].as_array().unwrap().len(), 1);
        assert_eq!(v["auto_device"], "cpu");
        assert!(v["gpu_unavailable"].as_str().unwrap().contains("built without CUDA"), "{v}");
        assert_eq!(v["build"]["cuda_compute_caps"], serde_json::Value::Null);
        assert_eq!(v["gpu_conv"], serde_json::Value::Null, "no GPU convolution in a CPU build");
    }
    assert_eq!(v["hf_home"], env.hf_home().display().to_string());
    assert_eq!(v["hub_cache"], env.hf_home().join("hub").display().to_string());
    assert_eq!(v["hub_cache_bytes"], 1234);
    assert_eq!(v["endpoint"], "http://127.0.0.1:9");
    assert_eq!(v["token"]["source"]["kind"], "env_hf_token", "{v}");
    assert_eq!(v["token"]["oidc_resource"], serde_json::Value::Null);

    let o = run(&["env"]);
    let human = ok(&o);
    assert!(!text(&o).contains(ALICE));
    for want in ["hfsky ", "device cpu: ", "3 threads", "token from: the HF_TOKEN environment variable", "hub cache: "] {
        assert!(human.contains(want), "{want:?} in {human}");
    }
    // Not logged in at all: said so, exit 0.
    let o = env.cmd(&["--json", "env"]).env_remove("HF_TOKEN").output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["token"]["source"], serde_json::Value::Null, "{v}");
}

#[test]
fn retries_are_told_with_verbose_or_rust_log_and_redacted() {
    // Nothing listens on port 9: each request is refused, retried once, then exit 4.
    let env = Env::new("http://127.0.0.1:9");
    let run = |args: &[&str], rust_log: Option<&str>| {
        let mut c = env.cmd(args);
        c.env("HF_TOKEN", ALICE).env("HFSKY_MAX_ATTEMPTS", "2").env("HFSKY_RETRY_BASE_MS", "1").env_remove("RUST_LOG");
        if let Some(f) = rust_log {
            c.env("RUST_LOG", f);
        }
        c.output().unwrap()
    };
    let quiet = code(&run(&["whoami"], None), 4);
    assert!(!quiet.contains("retrying"), "retries are detail, shown with -v only:\n{quiet}");
    let verbose = code(&run(&["-v", "whoami"], None), 4);
    assert!(verbose.lines().any(|l| l.starts_with("retrying GET http://127.0.0.1:9/api/whoami-v2 in ")), "{verbose}");
    assert!(!verbose.contains(ALICE));
    let logged = code(&run(&["whoami"], Some("hfsky=info")), 4);
    assert!(logged.contains("retrying GET"), "RUST_LOG replaces the flags' filter:\n{logged}");
    assert!(!code(&run(&["-q", "-v", "whoami"], None), 4).contains("retrying"), "-q prints only errors");
}
