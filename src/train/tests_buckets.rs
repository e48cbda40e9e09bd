//! Aspect-ratio buckets and masked loss through the trainer, on the tiny fixtures (CPU, f32).

use super::config::TrainConfig;
use super::objective::step_rng;
use super::trainer::{batch_loss, Event, Trainer};
use crate::diffusion::testing::pipeline_dir;
use std::path::Path;

/// A sky-over-ground photo of `w`×`h`.
fn photo(dir: &Path, name: &str, w: u32, h: u32, tint: u8) {
    std::fs::create_dir_all(dir).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if y < h * 5 / 8 {
            image::Rgb([tint, (90 + y) as u8, (x * 3 % 255) as u8])
        } else {
            image::Rgb([20, 30, 10])
        }
    });
    img.save(dir.join(name)).unwrap();
}

/// Resolution 64 with 16 px steps: buckets from 32×128 to 128×32 (the tiny UNet halves once,
/// so latent sides must be even: 16 px).
fn config(dir: &Path, model: &str, extra: &str) -> TrainConfig {
    let yaml = format!(
        "base_model: {}\ndataset: {}\ninstance_prompt: a photo of SKY\ncaptions: instance\noutput_dir: {}\nlearning_rate: 1.0e-2\n\
         resolution: 64\nbucket_reso_steps: 16\nseed: 5\n{extra}",
        pipeline_dir(model).display(),
        dir.join("photos").display(),
        dir.join("out").display()
    );
    std::fs::write(dir.join("train.yaml"), yaml).unwrap();
    TrainConfig::load(Some(&dir.join("train.yaml")), Default::default()).unwrap()
}

fn mixed_photos(dir: &Path) {
    photo(dir, "wide-a.png", 128, 64, 200);
    photo(dir, "wide-b.png", 140, 70, 230);
    photo(dir, "tall.png", 64, 128, 160);
    photo(dir, "square.png", 80, 80, 120);
    photo(dir, "tiny.png", 40, 20, 90);
}

#[test]
fn mixed_aspects_train_in_their_buckets_skip_the_too_small_and_resume_exactly() {
    let d = tempfile::tempdir().unwrap();
    mixed_photos(&d.path().join("photos"));
    let mut cfg = config(d.path(), "tiny-sdxl", "train_batch_size: 2\nrandom_flip: true\ncheckpointing_steps: 2\n");
    cfg.max_steps = Some(4);
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sdxl"), cache_dir: Some(d.path().join("cache")) };
    let mut events = Vec::new();
    let summary = t.run(&mut |e| events.push(e)).unwrap();
    assert!(
        events.iter().any(|e| matches!(e, Event::Skipped { file, reason } if file.ends_with("tiny.png") && reason.contains("min_bucket_reso 32"))),
        "the 40×20 photo is named as too small"
    );
    assert_eq!(summary.skipped.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["tiny.png"]);
    assert!(
        events.iter().any(|e| matches!(e, Event::Note(n) if n == "aspect-ratio buckets at 64 px: 80×48 (2), 64×64 (1), 48×80 (1)")),
        "the run names its buckets"
    );
    let buckets: Vec<(u32, u32, usize)> = summary.buckets.iter().map(|b| (b.width, b.height, b.count)).collect();
    // kohya's rules at 64 / 16 px: ar 2 → 80×48, ar 0.5 → 48×80, square → 64×64.
    assert_eq!(buckets, [(80, 48, 2), (64, 64, 1), (48, 80, 1)]);
    let by_file = |f: &str| summary.example_buckets.iter().find(|e| e.file == f).unwrap().clone();
    let wide = by_file("wide-b.png");
    assert_eq!((wide.bucket.width, wide.bucket.height, wide.original_size.width, wide.original_size.height), (80, 48, 140, 70));
    // 140×70 covers 80×48 at scale 48/70: 96×48, a random left in 0..=16 from the seed.
    assert!(wide.crop_top_left.0 == 0 && wide.crop_top_left.1 <= 16, "{wide:?}");
    assert!((summary.epochs - 4.0 * 1.0 / 3.0).abs() < 1e-9, "3 batches per epoch (2 wide, 1 tall, 1 square): {}", summary.epochs);

    // Resume from step 2: the same final LoRA as the uninterrupted run.
    let file = cfg.output_dir.join(crate::names::LORA_WEIGHTS);
    let first = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let mut resumed = cfg.clone();
    resumed.resume_from_checkpoint = Some("checkpoint-2".into());
    Trainer { cfg: &resumed, model_dir: pipeline_dir("tiny-sdxl"), cache_dir: Some(d.path().join("cache")) }.run(&mut |_| {}).unwrap();
    let again = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    for (k, t) in &first {
        let e = crate::diffusion::nn::rel_error(&again[k], t).unwrap();
        assert!(e < 1e-5, "{k} after resuming differs by {e:e}");
    }
}

#[test]
fn each_example_carries_its_sdxl_micro_conditioning() {
    let d = tempfile::tempdir().unwrap();
    mixed_photos(&d.path().join("photos"));
    let cfg = config(d.path(), "tiny-sdxl", "center_crop: true\n");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sdxl"), cache_dir: Some(d.path().join("cache")) };
    let p = t.prepare(&mut |_| {}).unwrap();
    // Sorted by name: square, tall, wide-a, wide-b (tiny skipped).
    let ids: Vec<[f32; 6]> = p.examples.iter().map(|e| super::examples::time_ids(&e.variants[0].1)).collect();
    // diffusers/kohya: (orig h, orig w, crop top, crop left, target h, target w). Centre crops:
    // 80×80 → 64×64 exactly; 64×128 → 48×96 resized, top (96-80)/2 = 8; 128×64 → 96×48, left 8;
    // 140×70 → 96×48, left 8.
    assert_eq!(ids[0], [80.0, 80.0, 0.0, 0.0, 64.0, 64.0]);
    assert_eq!(ids[1], [128.0, 64.0, 8.0, 0.0, 80.0, 48.0]);
    assert_eq!(ids[2], [64.0, 128.0, 0.0, 8.0, 48.0, 80.0]);
    assert_eq!(ids[3], [70.0, 140.0, 0.0, 8.0, 48.0, 80.0]);
    // Latents match their bucket: 48×80 px → 6×10 at the VAE's factor 8.
    assert_eq!(p.examples[2].variants[0].0.mean.dims(), [4, 6, 10]);
}

#[test]
fn bucketing_off_keeps_the_square_crop() {
    let d = tempfile::tempdir().unwrap();
    mixed_photos(&d.path().join("photos"));
    let cfg = config(d.path(), "tiny-sd15", "bucketing: false\ncenter_crop: true\n");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sd15"), cache_dir: Some(d.path().join("cache")) };
    let p = t.prepare(&mut |_| {}).unwrap();
    assert_eq!(p.examples.len(), 5, "no photo is too small for a square crop (it is upscaled, as diffusers does)");
    for e in &p.examples {
        assert_eq!(e.variants[0].1.target_size, (64, 64));
        assert_eq!(e.variants[0].0.mean.dims(), [4, 8, 8]);
    }
}

#[test]
fn white_masks_give_the_plain_loss_and_alpha_masks_are_read() {
    let d = tempfile::tempdir().unwrap();
    let photos = d.path().join("photos");
    photo(&photos, "a.png", 96, 64, 200);
    photo(&photos, "b.png", 90, 60, 150);
    image::GrayImage::from_pixel(96, 64, image::Luma([255])).save(photos.join("a.mask.png")).unwrap();
    image::GrayImage::from_pixel(90, 60, image::Luma([255])).save(photos.join("b.mask.png")).unwrap();
    let loss = |extra: &str| {
        let cfg = config(d.path(), "tiny-sd15", extra);
        let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sd15"), cache_dir: Some(d.path().join("cache")) };
        let p = t.prepare(&mut |_| {}).unwrap();
        assert_eq!(p.examples.len(), 2, "mask files are not photos");
        let mut rng = step_rng(1, 0, 0);
        let scaling = p.pipeline.vae_config().scaling_factor;
        let l = batch_loss(&p.pipeline, &p.objective, &p.examples, &[0, 1], &p.prompts, None, scaling, None, p.xl, &mut rng).unwrap();
        (l.to_scalar::<f32>().unwrap(), p.examples.iter().map(|e| e.variants[0].2.is_some()).collect::<Vec<_>>())
    };
    let (plain, none) = loss("center_crop: true\n");
    let (masked, some) = loss("center_crop: true\nmasked_loss: true\n");
    assert_eq!(none, [false, false]);
    assert_eq!(some, [true, true]);
    assert!((plain - masked).abs() <= 1e-6 * plain.abs(), "all-white masks: {masked} vs plain {plain}");

    // A black mask on one photo: that photo no longer counts, the loss falls to about half.
    image::GrayImage::from_pixel(90, 60, image::Luma([0])).save(photos.join("b.mask.png")).unwrap();
    let (half, _) = loss("center_crop: true\nmasked_loss: true\n");
    assert!(half < plain, "{half} vs {plain}");

    // No mask file: the alpha channel, else unmasked with a note naming the photo.
    std::fs::remove_file(photos.join("a.mask.png")).unwrap();
    std::fs::remove_file(photos.join("b.mask.png")).unwrap();
    let rgba = image::RgbaImage::from_fn(96, 64, |x, _| image::Rgba([200, 100, 50, if x < 48 { 255 } else { 0 }]));
    rgba.save(photos.join("a.png")).unwrap();
    let cfg = config(d.path(), "tiny-sd15", "center_crop: true\nmasked_loss: true\n");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sd15"), cache_dir: Some(d.path().join("cache")) };
    let mut notes = Vec::new();
    let p = t
        .prepare(&mut |e| {
            if let Event::Note(n) = e {
                notes.push(n)
            }
        })
        .unwrap();
    assert!(notes.iter().any(|n| n.contains("masked_loss: 1 photo(s) have no mask") && n.ends_with("b.png")), "{notes:?}");
    let m = p.examples[0].variants[0].2.as_ref().expect("the alpha channel is a's mask");
    let v = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.contains(&1.0) && v.contains(&0.0), "{v:?}");
    assert!(p.examples[1].variants[0].2.is_none());
}

#[test]
fn the_memory_preflight_counts_the_largest_buckets_pixels() {
    let estimate = |extra: &str| {
        let d = tempfile::tempdir().unwrap();
        photo(&d.path().join("photos"), "wide.png", 128, 64, 200);
        let cfg = config(d.path(), "tiny-sd15", extra);
        let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sd15"), cache_dir: Some(d.path().join("cache")) };
        t.prepare(&mut |_| {}).unwrap().memory.estimate
    };
    // The only bucket is 80×48 = 3840 px against the 64² = 4096 px square.
    let (square, bucketed) = (estimate("bucketing: false\n"), estimate(""));
    assert_eq!(bucketed.weights, square.weights);
    let ratio = bucketed.activations as f64 / square.activations as f64;
    assert!((ratio - 3840.0 / 4096.0).abs() < 1e-6, "{ratio}");
}

#[test]
fn a_set_with_no_photo_large_enough_for_a_bucket_is_an_error_naming_the_way_out() {
    let d = tempfile::tempdir().unwrap();
    photo(&d.path().join("photos"), "tiny.png", 40, 20, 90);
    let cfg = config(d.path(), "tiny-sd15", "");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sd15"), cache_dir: Some(d.path().join("cache")) };
    let e = t.prepare(&mut |_| {}).err().expect("nothing to train on").to_string();
    assert!(e.contains("no photo fits a bucket") && e.contains("bucketing: false"), "{e}");
}
