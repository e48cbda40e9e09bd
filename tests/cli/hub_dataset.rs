//! A Hub dataset as training input, end to end against the offline Hub: a photo folder pushed
//! with `push --repo-type dataset` (imagefolder: photos + metadata.jsonl + a dataset card), then
//! trained on with `dataset: alice/name`: only the images and the metadata reach the HF cache,
//! the metadata's captions are the prompts; missing and private datasets say what is wrong.

use crate::common::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Three small photos captioned in metadata.jsonl, and files a Hub dataset repo often holds
/// beside them that training has no use for.
fn photo_folder(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut rows = String::new();
    for i in 0..3u32 {
        let img = image::RgbImage::from_fn(64 + 8 * i, 48, |x, y| image::Rgb([(180 + 20 * i) as u8, (60 + 3 * y) as u8, (x * 3 % 255) as u8]));
        img.save(dir.join(format!("sky-{i}.png"))).unwrap();
        rows.push_str(&format!("{{\"file_name\": \"sky-{i}.png\", \"text\": \"orange sunset {i}\"}}\n"));
    }
    std::fs::write(dir.join("metadata.jsonl"), rows).unwrap();
    std::fs::write(dir.join("data/train-00000-of-00001.parquet"), noise(4096, 1)).unwrap();
    std::fs::write(dir.join("notes.md"), "how these were shot\n").unwrap();
}

/// The files of a cached repo's snapshots (links into its blobs), relative to the snapshot.
fn cached(env: &Env, repo_folder: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let snapshots = env.hf_home().join("hub").join(repo_folder).join("snapshots");
    let mut names = Vec::new();
    for snap in std::fs::read_dir(&snapshots).unwrap() {
        let snap = snap.unwrap().path();
        walk(&snap, &snap, &mut names);
    }
    names.sort();
    names
}

#[test]
fn a_pushed_photo_dataset_trains_from_the_hub_cache() {
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = start_hub(hub_dir.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let d = env.dir.path();
    let photos = d.join("photos");
    photo_folder(&photos);

    let o =
        env.cmd(&["push", photos.to_str().unwrap(), "--repo", "alice/sky-photos", "--repo-type", "dataset"]).env("HF_TOKEN", ALICE).output().unwrap();
    let out = ok(&o);
    assert!(out.contains("3 photo(s)") && out.contains("added for the Hub's imagefolder layout: README.md"), "{out}");
    assert!(!photos.join("README.md").exists(), "nothing is written into the photo folder");
    // It is a dataset repo, not a model: the model routes do not know it.
    let dl = d.join("card");
    let o = env.run(&["download", "alice/sky-photos", "README.md", "--local-dir", dl.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.run(&["download", "alice/sky-photos", "README.md", "--repo-type", "dataset", "--local-dir", dl.to_str().unwrap()]);
    ok(&o);
    let card = std::fs::read_to_string(dl.join("README.md")).unwrap();
    assert!(card.contains("task_categories:\n- text-to-image") && card.contains("- n<1K"), "{card}");

    let cfg = d.join("train.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base_model: {}\ndataset: alice/sky-photos\ninstance_prompt: a photo of SKY\noutput_dir: ./out\nmax_steps: 2\nseed: 1\n\
             bucket_reso_steps: 16\n",
            fixture("tiny-sd15").display()
        ),
    )
    .unwrap();
    let o = env.run(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(ok(&o).contains("dataset alice/sky-photos at "), "{}", text(&o));
    // Only the photos and their metadata reached the cache, in the standard dataset folder.
    assert_eq!(cached(&env, "datasets--alice--sky-photos"), ["metadata.jsonl", "sky-0.png", "sky-1.png", "sky-2.png"]);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/training_summary.json")).unwrap()).unwrap();
    let prompts: Vec<&str> = summary["examples"].as_array().unwrap().iter().map(|e| e[1].as_str().unwrap()).collect();
    assert_eq!(prompts, ["a photo of SKY, orange sunset 0", "a photo of SKY, orange sunset 1", "a photo of SKY, orange sunset 2"]);
    // The model card names the dataset, so the Hub links the LoRA to it.
    let card = std::fs::read_to_string(d.join("out/README.md")).unwrap();
    assert!(card.contains("datasets:\n- alice/sky-photos\n"), "{card}");
    let recorded = std::fs::read_to_string(d.join("out/train_config.yaml")).unwrap();
    assert!(recorded.contains("dataset: alice/sky-photos"), "{recorded}");

    // The dataset commands read it too, and offline from the cache alone.
    let o = env.cmd(&["--json", "dataset", "captions", "export", "alice/sky-photos"]).env("HF_HUB_OFFLINE", "1").output().unwrap();
    let v = json(&o);
    assert_eq!(v["captions"][2]["caption"], "orange sunset 2", "{v}");

    // A dataset that does not exist, and a revision that does not: exit 2, naming which.
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--dataset", "alice/no-such-photos"]);
    assert!(code(&o, 2).contains("has no dataset alice/no-such-photos"), "{}", text(&o));
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--dataset-revision", "v9"]);
    assert!(code(&o, 2).contains("dataset_revision: dataset alice/sky-photos has no revision v9"), "{}", text(&o));
    // Neither a folder nor a repo id.
    let o = env.run(&["train", "--config", cfg.to_str().unwrap(), "--dataset", "no-such-folder"]);
    assert!(code(&o, 2).contains("dataset: no-such-folder does not exist"), "{}", text(&o));
}

#[test]
fn a_private_dataset_needs_the_owners_token() {
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = start_hub(hub_dir.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let photos = env.dir.path().join("photos");
    photo_folder(&photos);
    std::fs::write(photos.join("README.md"), "---\ntask_categories: text-to-image\n---\n# my skies\n").unwrap();
    let o = env
        .cmd(&["push", photos.to_str().unwrap(), "--repo", "alice/private-skies", "--repo-type", "dataset", "--private"])
        .env("HF_TOKEN", ALICE)
        .output()
        .unwrap();
    assert!(!ok(&o).contains("added for"), "a folder with its card and metadata is pushed as it is");
    let o = env.run(&["dataset", "check", "alice/private-skies", "--resolution", "64"]);
    assert!(code(&o, 2).contains("log in"), "{}", text(&o));
    let o = env.cmd(&["--json", "dataset", "check", "alice/private-skies", "--resolution", "64"]).env("HF_TOKEN", ALICE).output().unwrap();
    assert_eq!(json(&o)["images"].as_array().unwrap().len(), 3);
    // A dataset card the Hub would refuse stops the push before any upload.
    std::fs::write(photos.join("README.md"), "---\ntask_categories: {a: b}\n---\n").unwrap();
    let o =
        env.cmd(&["push", photos.to_str().unwrap(), "--repo", "alice/bad-card", "--repo-type", "dataset"]).env("HF_TOKEN", ALICE).output().unwrap();
    assert!(code(&o, 2).contains("task_categories"), "{}", text(&o));
}
