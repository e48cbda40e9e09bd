//! Conformance with the official Python client: huggingface_hub pushes to `hfsky hub serve` and
//! hfsky downloads byte-identical; hfsky pushes and huggingface_hub downloads byte-identical.
//! Needs `HFSKY_PYTHON` (a Python with huggingface_hub; scripts/test.sh makes one).

use crate::common::*;
use std::process::Command;

fn py(python: &str, hub: &Hub, work: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/hub_conformance.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--endpoint", &hub.endpoint, "--token", ALICE, "--user", "alice", "--work"])
        .arg(work)
        .args(extra)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "huggingface_hub conformance failed:\n{all}");
    assert!(!all.contains(ALICE), "the token leaked into Python's output");
    serde_json::from_str(all.lines().rev().find(|l| l.starts_with('{')).expect("a JSON summary line")).unwrap()
}

#[test]
#[ignore = "needs huggingface_hub (HFSKY_PYTHON, made by scripts/test.sh)"]
fn huggingface_hub_and_hfsky_read_each_others_pushes() {
    let python = test_python();
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &["--multipart-chunk-mib", "4"]);
    let env = Env::new(&hub.endpoint);

    // Python pushes (basic + multipart LFS), hfsky downloads.
    let v = py(&python, &hub, env.dir.path(), &["--phase", "push", "--repo", "alice/from-python"]);
    let py_dir = std::path::PathBuf::from(v["dir"].as_str().unwrap());
    let local = env.dir.path().join("hfsky-copy");
    let out = env.cmd(&["download", "alice/from-python", "--local-dir", local.to_str().unwrap()]).env("HF_TOKEN", ALICE).output().unwrap();
    ok(&out);
    for (rel, bytes) in files_under(&py_dir) {
        assert_eq!(std::fs::read(local.join(&rel)).unwrap(), bytes, "{rel} differs after hfsky download");
    }

    // hfsky pushes, Python downloads.
    let mine = env.dir.path().join("hfsky-model");
    write(&mine.join("README.md"), b"---\nlicense: mit\n---\n# from hfsky\n");
    write(&mine.join("pytorch_lora_weights.safetensors"), &noise(200_000, 5));
    write(&mine.join("big.bin"), &noise(11 * 1024 * 1024, 6));
    write(&mine.join("samples/image_0.png"), &noise(1000, 7));
    let out = env.cmd(&["push", mine.to_str().unwrap(), "--repo", "alice/from-hfsky"]).env("HF_TOKEN", ALICE).output().unwrap();
    ok(&out);
    let v = py(&python, &hub, env.dir.path(), &["--phase", "verify", "--repo", "alice/from-hfsky", "--expect-dir", mine.to_str().unwrap()]);
    assert_eq!(v["files"], 4);
}

/// The same with dataset repos: huggingface_hub creates, uploads to (LFS multipart included),
/// lists and downloads a dataset on the offline Hub; a photo folder hfsky pushed with
/// `--repo-type dataset` is what huggingface_hub downloads, byte for byte.
#[test]
#[ignore = "needs huggingface_hub (HFSKY_PYTHON, made by scripts/test.sh)"]
fn huggingface_hub_and_hfsky_share_dataset_repos() {
    let python = test_python();
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &["--multipart-chunk-mib", "4"]);
    let env = Env::new(&hub.endpoint);
    let v = py(&python, &hub, env.dir.path(), &["--phase", "push", "--repo", "alice/py-dataset", "--repo-type", "dataset"]);
    assert_eq!(v["ok"], true);

    let photos = env.dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 8, y as u8 * 10, 90])).save(photos.join("a.png")).unwrap();
    write(&photos.join("metadata.jsonl"), b"{\"file_name\": \"a.png\", \"text\": \"a red sky\"}\n");
    write(&photos.join("README.md"), b"---\ntask_categories:\n- text-to-image\n---\n# skies\n");
    let out = env
        .cmd(&["push", photos.to_str().unwrap(), "--repo", "alice/hfsky-dataset", "--repo-type", "dataset"])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    ok(&out);
    let v = py(
        &python,
        &hub,
        env.dir.path(),
        &["--phase", "verify", "--repo", "alice/hfsky-dataset", "--repo-type", "dataset", "--expect-dir", photos.to_str().unwrap()],
    );
    assert_eq!(v["files"], 3);
}

#[test]
#[ignore = "needs huggingface_hub (HFSKY_PYTHON, made by scripts/test.sh)"]
fn huggingface_hub_publishes_through_the_offline_hubs_oidc_exchange() {
    let python = test_python();
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    let jwt = mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, 300));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/oidc_conformance.py");
    let run = |repo: &str| {
        Command::new(&python)
            .arg(script)
            .args(["--endpoint", &hub.endpoint, "--repo", repo, "--work"])
            .arg(work.path())
            .env("HF_OIDC_RESOURCE", repo)
            .env("HF_OIDC_ID_TOKEN", &jwt)
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    };
    let out = run("alice/sky-lora");
    let all = text(&out);
    assert!(out.status.success(), "huggingface_hub's OIDC flow failed:\n{all}");
    assert!(!all.contains(&jwt));
    let v: serde_json::Value = serde_json::from_str(all.lines().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(v["user"], "alice");
    // hfsky sees the commit huggingface_hub made with the exchanged token.
    let env = Env::new(&hub.endpoint);
    let dl = json(&env.cmd(&["--json", "download", "alice/sky-lora", "from-python-oidc.txt"]).output().unwrap());
    assert_eq!(dl["files"][0]["path_in_repo"], "from-python-oidc.txt");
    // The same publisher cannot get a token for another repo through huggingface_hub either.
    let out = run("alice/other");
    assert!(!out.status.success() && text(&out).contains("not a trusted publisher"), "{}", text(&out));
}

/// Every number as f64: Python writes `1` where Rust writes `1.0`.
fn numbers_as_floats(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        serde_json::Value::Array(a) => a.iter().map(numbers_as_floats).collect(),
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), numbers_as_floats(v))).collect::<serde_json::Map<_, _>>().into(),
        other => other.clone(),
    }
}

#[test]
#[ignore = "needs huggingface_hub (HFSKY_PYTHON, made by scripts/test.sh)"]
fn huggingface_hub_reads_the_offline_hubs_provider_mappings_and_sends_what_hfsky_sends() {
    use hfsky::hub::inference::{prepare, select, InferenceClient, Provider, ProviderChoice, TextToImageRequest, PUBLIC_ROUTER};
    let python = test_python();
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &["--providers", "replicate,hf-inference,fal-ai"]);
    let env = Env::new(&hub.endpoint);
    let base = env.dir.path().join("base");
    write(&base.join("model_index.json"), b"{\"_class_name\": \"StableDiffusionPipeline\"}");
    let lora = env.dir.path().join("lora");
    write(&lora.join("README.md"), b"---\nbase_model: alice/base\ntags: [lora, text-to-image]\n---\n# Sky\n");
    write(&lora.join("pytorch_lora_weights.safetensors"), &noise(1000, 3));
    for (dir, repo) in [(&base, "alice/base"), (&lora, "alice/sky-lora")] {
        ok(&env.cmd(&["push", dir.to_str().unwrap(), "--repo", repo]).env("HF_TOKEN", ALICE).output().unwrap());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/inference_conformance.py");
    let out = Command::new(&python).arg(script).args(["--endpoint", &hub.endpoint, "--token", ALICE, "--repo", "alice/sky-lora"]).output().unwrap();
    let all = text(&out);
    assert!(out.status.success() && !all.contains(ALICE), "huggingface_hub inference conformance failed:\n{all}");
    let py: serde_json::Value = serde_json::from_str(all.lines().rev().find(|l| l.starts_with('{')).expect("a JSON line")).unwrap();

    let repo = hfsky::repo_id::RepoId::parse("alice/sky-lora").unwrap();
    let token = hfsky::token::Token::parse(ALICE).unwrap();
    let client = InferenceClient::new(hfsky::hub::HubClient::new(&hub.endpoint, Some(token)).unwrap()).unwrap();
    let info = tokio::runtime::Runtime::new().unwrap().block_on(client.inspect(&repo)).unwrap();
    let ours: Vec<serde_json::Value> = info.mappings.iter().map(|m| serde_json::to_value(m).unwrap()).collect();
    let theirs: Vec<serde_json::Value> = py["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m.as_object().unwrap().iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>().into()
        })
        .collect();
    assert_eq!(ours, theirs, "both clients read the same mappings, in the --providers order");

    let req = TextToImageRequest {
        prompt: "a photo of the SKY river".into(),
        negative_prompt: Some("blurry".into()),
        width: Some(64),
        height: Some(64),
        num_inference_steps: Some(4),
        guidance_scale: Some(5.0),
        seed: Some(3),
        ..Default::default()
    };
    for (choice, name) in [
        (ProviderChoice::Auto, "auto"),
        (ProviderChoice::Only(Provider::HfInference), "hf-inference"),
        (ProviderChoice::Only(Provider::FalAi), "fal-ai"),
        (ProviderChoice::Only(Provider::Replicate), "replicate"),
    ] {
        let sel = select(&info, choice).unwrap();
        let theirs = &py["requests"][name];
        assert_eq!(theirs["provider"], sel.provider.name(), "{name}: the same provider");
        let mut p = prepare(&sel, &req, &hub.endpoint, PUBLIC_ROUTER);
        let mut their_json = theirs["json"].clone();
        if sel.provider == Provider::FalAi {
            // The one deliberate difference: the card's base model, not always SDXL base.
            assert_eq!(their_json["model_name"], "stabilityai/stable-diffusion-xl-base-1.0");
            assert_eq!(p.body["model_name"], "alice/base");
            their_json.as_object_mut().unwrap().remove("model_name");
            p.body.as_object_mut().unwrap().remove("model_name");
        }
        assert_eq!(p.url, theirs["url"].as_str().unwrap(), "{name}: the same route");
        assert_eq!(numbers_as_floats(&p.body), numbers_as_floats(&their_json), "{name}: the same payload");
        assert_eq!(p.headers.iter().any(|(k, v)| *k == "prefer" && *v == "wait"), theirs["headers"]["prefer"] == "wait", "{name}");
    }
}
