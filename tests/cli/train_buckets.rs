//! `hfsky train` with aspect-ratio buckets (the default) on mixed-aspect photos: the summary lists
//! the buckets and where each photo went, and a photo too small for any bucket is named.

use crate::common::*;
use hfsky::dataset::testgen as gen;
use std::path::PathBuf;

#[test]
fn mixed_aspect_photos_train_in_buckets_listed_in_the_summary() {
    let env = Env::new("http://127.0.0.1:9");
    let d = env.dir.path();
    let photos = d.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (name, w, h, seed) in [("wide.jpg", 160, 80, 1), ("tall.jpg", 72, 144, 2), ("square.jpg", 96, 96, 3), ("thumb.jpg", 30, 20, 4)] {
        std::fs::write(photos.join(name), gen::jpeg(&gen::photo(w, h, seed))).unwrap();
    }
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd15");
    let cfg = d.join("train.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base_model: {}\ndataset: ./photos\ninstance_prompt: a photo of SKY\noutput_dir: ./out\nresolution: 64\nbucket_reso_steps: 16\n\
             max_steps: 2\nseed: 1\n",
            model.display()
        ),
    )
    .unwrap();
    let o = env.run(&["--json", "train", "--config", cfg.to_str().unwrap()]);
    ok(&o);
    let v = json(&o);
    let skipped = v["skipped"].as_array().unwrap();
    assert!(skipped.len() == 1 && skipped[0][0] == "thumb.jpg" && skipped[0][1].as_str().unwrap().contains("too small"), "{skipped:?}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/training_summary.json")).unwrap()).unwrap();
    // kohya's rules at 64 px / 16 px steps: 2:1 → 80×48, 1:2 → 48×80, square → 64×64.
    let mut buckets: Vec<(u64, u64, u64)> = summary["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["width"].as_u64().unwrap(), b["height"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
        .collect();
    buckets.sort();
    assert_eq!(buckets, [(48, 80, 1), (64, 64, 1), (80, 48, 1)]);
    assert_eq!(v["buckets"], summary["buckets"], "train --json lists the buckets as the summary does");
    let card = std::fs::read_to_string(d.join("out/README.md")).unwrap();
    assert!(card.contains("Aspect-ratio buckets: ") && card.contains("80×48 (1)") && card.contains("48×80 (1)"), "{card}");
    let wide = summary["example_buckets"].as_array().unwrap().iter().find(|e| e["file"] == "wide.jpg").unwrap().clone();
    assert_eq!(wide["bucket"], serde_json::json!({"width": 80, "height": 48}));
    assert_eq!(wide["original_size"], serde_json::json!({"width": 160, "height": 80}));
    assert_eq!(wide["crop_top_left"][0], 0, "{wide}");
}

/// Bucket assignment against kohya's rules restated with numpy (tests/conformance/kohya_buckets.py):
/// 48 photo sizes from thumbnails to panoramas, through `dataset report`, which assigns buckets
/// with the trainer's code.
#[test]
#[ignore = "needs the Python reference stack (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
fn bucket_assignment_matches_kohyas_rules_in_python() {
    let python = pyref_python();
    let env = Env::new("http://127.0.0.1:9");
    let dir = env.dir.path().join("photos");
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = 0x2545_f491_u32;
    let mut next = |lo: u32, hi: u32| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        lo + state % (hi - lo)
    };
    let mut sizes = Vec::new();
    for i in 0..48 {
        let (w, h) = (next(24, 420), next(24, 420));
        std::fs::write(dir.join(format!("p{i:02}.png")), gen::png(&image::RgbImage::from_pixel(w, h, image::Rgb([90, 120, 200])))).unwrap();
        sizes.push((w, h));
    }
    let v = json(&env.run(&["--json", "dataset", "report", dir.to_str().unwrap(), "--resolution", "128", "--bucket-reso-steps", "16"]));
    let mut ours = vec![serde_json::Value::Null; sizes.len()];
    for b in v["buckets"].as_array().unwrap() {
        for name in b["images"].as_array().unwrap() {
            let i: usize = name.as_str().unwrap()[1..3].parse().unwrap();
            ours[i] = serde_json::json!([b["width"], b["height"]]);
        }
    }
    let query = serde_json::json!({"resolution": 128, "step": 16, "sizes": sizes});
    let mut child = std::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/kohya_buckets.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(query.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let kohya: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, (k, o)) in kohya["buckets"].as_array().unwrap().iter().zip(&ours).enumerate() {
        assert_eq!(k, o, "p{i:02}.png {}×{}", sizes[i].0, sizes[i].1);
    }
    assert!(ours.iter().any(|b| b.is_null()) && ours.iter().filter(|b| !b.is_null()).count() > 30, "{ours:?}");
}
