//! What real folders and real repos throw at hfsky (issue 17), run as a user would: a phone
//! export (real HEIC/AVIF, JPEG under .HEIC, truncated and empty files, a Git LFS pointer), a
//! LoRA folder cloned without git-lfs, a local base model on the model card, and captions in
//! other metadata columns and in metadata.csv. Inputs: tests/fixtures/field-photos (made by its
//! make.sh) and tests/fixtures/field-cases (copied from the shared field cases).

use crate::common::*;
use hfsky::dataset::testgen as gen;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Copies `src` into `dst` (a folder tree), restoring the `dot-` names of the field cases.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().replace("dot-", ".");
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst.join(name));
        } else {
            std::fs::copy(e.path(), dst.join(name)).unwrap();
        }
    }
}

const POINTER: &str =
    "version https://git-lfs.github.com/spec/v1\noid sha256:3327e29bf3899428f0dda69e7c1cfa854a030776086d4a36e954e3c2158a1966\nsize 3226184\n";

#[test]
fn a_phone_export_is_judged_by_content_and_every_problem_is_named() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path().join("export");
    for f in ["sky.heic", "sky.avif", "IMG_0002.HEIC"] {
        write(&d.join(f), &std::fs::read(fixtures().join("field-photos").join(f)).unwrap());
    }
    for seed in 0..3 {
        write(&d.join(format!("IMG_10{seed}.JPG")), &gen::jpeg(&gen::photo(640, 512, seed)));
    }
    let jpg = gen::jpeg(&gen::photo(640, 512, 7));
    write(&d.join("IMG_0003.jpg"), &jpg[..jpg.len() / 2]);
    write(&d.join("IMG_0004.jpg"), b"");
    write(&d.join("IMG_0005.jpg"), POINTER.as_bytes());
    let o = env.run(&["--json", "dataset", "check", p(&d), "--resolution", "64"]);
    code(&o, 1);
    let v = json(&o);
    let findings = |file: &str| -> Vec<(String, String, String)> {
        let img = v["images"].as_array().unwrap().iter().find(|i| i["file"] == file).unwrap_or_else(|| panic!("{file} not reported: {v}"));
        img["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["kind"].as_str().unwrap().into(), f["severity"].as_str().unwrap().into(), f["message"].as_str().unwrap().into()))
            .collect()
    };
    // JPEG data under .HEIC: a note, and the photo is used.
    let heic_jpeg = findings("IMG_0002.HEIC");
    assert!(heic_jpeg.iter().all(|(_, sev, _)| sev != "error"), "{heic_jpeg:?}");
    assert!(heic_jpeg.iter().any(|(k, sev, m)| k == "extension" && sev == "info" && m.contains("JPEG data under a .heic name")), "{heic_jpeg:?}");
    // Real HEIC and AVIF: decoded with the `heif` feature, else named with what to do.
    for (f, name) in [("sky.heic", "HEIC"), ("sky.avif", "AVIF")] {
        let got = findings(f);
        if cfg!(feature = "heif") {
            assert!(got.iter().all(|(_, sev, _)| sev != "error"), "{f}: {got:?}");
        } else {
            assert!(got.iter().any(|(k, _, m)| k == "unsupported" && m.starts_with(name) && m.contains("heif-convert")), "{f}: {got:?}");
        }
    }
    assert!(findings("IMG_0003.jpg").iter().any(|(k, _, m)| k == "unreadable" && m.contains("ends early")));
    assert!(findings("IMG_0004.jpg").iter().any(|(_, _, m)| m.contains("empty")));
    let lfs = findings("IMG_0005.jpg");
    assert!(lfs.iter().any(|(k, _, m)| k == "lfs-pointer" && m.contains("Git LFS pointer") && m.contains("git lfs pull")), "{lfs:?}");
    // The human output names the same files.
    let human = text(&env.run(&["dataset", "check", p(&d), "--resolution", "64"]));
    let heif_named: &[&str] = if cfg!(feature = "heif") { &[] } else { &["sky.heic: error unsupported", "sky.avif: error unsupported"] };
    for f in ["IMG_0002.HEIC: info extension", "IMG_0003.jpg", "IMG_0004.jpg", "IMG_0005.jpg: error lfs-pointer"].iter().chain(heif_named) {
        assert!(human.contains(f), "{f} in {human}");
    }
}

#[test]
fn captions_in_other_columns_and_in_csv_are_all_found() {
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = start_hub(hub_dir.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let root = fixtures().join("field-cases/caption-columns");
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected_captions.json")).unwrap()).unwrap();
    let want_tsv: String =
        std::iter::once("file_name\ttext\n".to_string()).chain(expected.iter().map(|(f, c)| format!("{f}\t{}\n", c.as_str().unwrap()))).collect();
    for (case, extra, file, column) in [
        ("caption-column", &[][..], "metadata.jsonl", "caption"),
        ("metadata-csv", &[][..], "metadata.csv", "text"),
        ("docs-example-column", &["--caption-column", "additional_feature"][..], "metadata.jsonl", "additional_feature"),
    ] {
        let d = env.dir.path().join(case);
        copy_tree(&root.join(case), &d);
        let mut args = vec!["dataset", "captions", "check", p(&d)];
        args.extend_from_slice(extra);
        let out = ok(&env.run(&args));
        assert!(out.contains(&format!("captions from {file} column \"{column}\"")) && out.contains("0 of 3 photo(s) fall back"), "{case}: {out}");
        let mut args = vec!["dataset", "captions", "export", p(&d)];
        args.extend_from_slice(extra);
        let o = env.run(&args);
        assert_eq!(String::from_utf8_lossy(&o.stdout), want_tsv, "{case}");
        // Writing back keeps the file's form and column.
        let mut args = vec!["dataset", "caption", p(&d), "--template", "{caption}, golden hour", "--overwrite"];
        args.extend_from_slice(extra);
        ok(&env.run(&args));
        let after = std::fs::read_to_string(d.join(file)).unwrap();
        assert!(after.contains("orange sunset over hills, golden hour") && after.contains(column), "{case}: {after}");
        assert!(!d.join(if file == "metadata.csv" { "metadata.jsonl" } else { "metadata.csv" }).exists());
    }
    // A column no default names: an error naming the file, its columns and the key to set.
    let d = env.dir.path().join("unguessable");
    copy_tree(&root.join("docs-example-column"), &d);
    let out = code(&env.run(&["dataset", "captions", "check", p(&d)]), 2);
    for needle in ["metadata.jsonl", "file_name, additional_feature", "caption_column"] {
        assert!(out.contains(needle), "{needle} in {out}");
    }
    // Training's dry run reports where the captions come from and how many fall back.
    let cfg = env.dir.path().join("train.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base_model: {}\ndataset: {}\ninstance_prompt: a photo of TOK sky\noutput_dir: {}\n",
            p(&fixtures().join("tiny-sd15")),
            p(&root.join("metadata-csv")),
            p(&env.dir.path().join("out"))
        ),
    )
    .unwrap();
    let o = env.cmd(&["train-and-push", "--repo", "alice/sky", "--dry-run", "--config", p(&cfg)]).env("HF_TOKEN", ALICE).output().unwrap();
    let out = ok(&o);
    assert!(out.contains("3 with captions") && out.contains("metadata.csv column \"text\"") && out.contains("0 of 3 photo(s) fall back"), "{out}");
}

#[test]
fn a_clone_without_git_lfs_is_refused_by_name() {
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = start_hub(hub_dir.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let d = env.dir.path().join("my-lora");
    copy_tree(&fixtures().join("field-cases/lfs-pointer/my-lora"), &d);
    assert!(d.join(".gitattributes").is_file());
    let push = |extra: &[&str]| {
        let mut args = vec!["push", p(&d), "--repo", "alice/sky-lora"];
        args.extend_from_slice(extra);
        env.cmd(&args).env("HF_TOKEN", ALICE).output().unwrap()
    };
    for extra in [&["--dry-run"][..], &[][..]] {
        let out = code(&push(extra), 2);
        for needle in ["pytorch_lora_weights.safetensors", "Git LFS", "git lfs pull", "--allow-lfs-pointers"] {
            assert!(out.contains(needle), "{needle} in {out}");
        }
    }
    let anon = hfsky::hub::HubClient::new(&hub.endpoint, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = hfsky::repo_id::RepoId::parse("alice/sky-lora").unwrap();
    assert!(rt.block_on(anon.repo_info(&id, None)).is_err(), "nothing was created");
    // Asked for explicitly, the pointer is uploaded as it is.
    ok(&push(&["--allow-lfs-pointers"]));
    assert!(rt.block_on(anon.repo_info(&id, None)).is_ok());

    // Loading it says what it is and how to fetch the real file.
    let o = env
        .cmd(&[
            "generate",
            "--model",
            p(&fixtures().join("tiny-sd15")),
            "--lora",
            p(&d.join("pytorch_lora_weights.safetensors")),
            "--prompt",
            "a photo of TOK river",
            "--steps",
            "1",
            "--out",
            p(&env.dir.path().join("img")),
        ])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("pytorch_lora_weights.safetensors") && out.contains("Git LFS pointer") && out.contains("git lfs pull"), "{out}");
}

#[test]
fn base_model_is_a_hub_id_or_nothing_and_checked_before_training() {
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = start_hub(hub_dir.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let d = env.dir.path();
    let photos = d.join("photos");
    for seed in 0..2 {
        write(&photos.join(format!("sky-{seed}.jpg")), &gen::jpeg(&gen::photo(96, 96, seed)));
    }
    // An hf-hub cache snapshot (the layout huggingface_hub writes), linked to the tiny pipeline.
    let snap = d.join("hf/hub/models--alice--tiny-sd15/snapshots/0123456789abcdef0123456789abcdef01234567");
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(fixtures().join("tiny-sd15"), &snap).unwrap();
    let cfg = |base: &Path, extra: &str| {
        let path = d.join("train.yaml");
        std::fs::write(
            &path,
            format!("base_model: {}\ndataset: {}\ninstance_prompt: a photo of SKY\noutput_dir: ./out\n{extra}", p(base), p(&photos)),
        )
        .unwrap();
        path
    };
    let run = |cfg: &Path, extra: &[&str]| {
        let mut args = vec!["train-and-push", "--repo", "alice/sky-lora", "--config", p(cfg)];
        args.extend_from_slice(extra);
        env.cmd(&args).current_dir(d).env("HF_TOKEN", ALICE).output().unwrap()
    };
    let plain = fixtures().join("tiny-sd15");
    // A base_model_id the Hub would refuse stops the run before any training.
    let out = code(&run(&cfg(&plain, "base_model_id: /home/me/sd15\n"), &[]), 2);
    assert!(out.contains("\"base_model\" with value \"/home/me/sd15\" is not valid") && out.contains("nothing was trained"), "{out}");
    assert!(!d.join("out").exists(), "training started");
    // A plain local folder: the card leaves base_model out and says so.
    let out = ok(&run(&cfg(&plain, ""), &["--dry-run"]));
    assert!(out.contains("leaves `base_model` out") && out.contains("base_model_id"), "{out}");
    // A snapshot or base_model_id names the base: nothing to say.
    for c in [cfg(&snap, ""), cfg(&plain, "base_model_id: alice/tiny-sd15\n")] {
        let out = ok(&run(&c, &["--dry-run"]));
        assert!(!out.contains("leaves `base_model` out"), "{out}");
    }
    // The push of a hand-written card with a local path is refused with the Hub's message.
    let m = d.join("model");
    write(&m.join("README.md"), format!("---\nbase_model: {}\n---\n# x\n", p(&plain)).as_bytes());
    let out = code(&env.cmd(&["push", p(&m), "--repo", "alice/x"]).env("HF_TOKEN", ALICE).output().unwrap(), 2);
    assert!(out.contains("is not valid. Use a model id from https://hf.co/models"), "{out}");
}
