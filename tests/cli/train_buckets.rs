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
    let wide = summary["example_buckets"].as_array().unwrap().iter().find(|e| e["file"] == "wide.jpg").unwrap().clone();
    assert_eq!(wide["bucket"], serde_json::json!({"width": 80, "height": 48}));
    assert_eq!(wide["original_size"], serde_json::json!({"width": 160, "height": 80}));
    assert_eq!(wide["crop_top_left"][0], 0, "{wide}");
}
