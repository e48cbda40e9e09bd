//! Training on the tiny diffusers fixtures (CPU, f32).

use super::config::TrainConfig;
use super::lora_params::TrainableLora;
use super::objective::step_rng;
use super::optim::AdamW;
use super::trainer::{batch_loss, Trainer};
use crate::diffusion::testing::pipeline_dir;
use std::path::Path;

/// A few small synthetic photos (sky gradient over dark ground) with captions.
pub(crate) fn write_photos(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(96 + 16 * i as u32, 80, |x, y| {
            if y < 50 {
                image::Rgb([(200 + i * 20) as u8, (100 + y * 2) as u8, (x % 255) as u8])
            } else {
                image::Rgb([20, 30, 10])
            }
        });
        img.save(dir.join(format!("sky-{i}.png"))).unwrap();
        std::fs::write(dir.join(format!("sky-{i}.txt")), format!("orange sunset number {i}")).unwrap();
    }
}

fn config(dir: &Path, model: &str, extra: &str) -> TrainConfig {
    let yaml = format!(
        "base_model: {}\ndataset: {}\ninstance_prompt: a photo of SKY\noutput_dir: {}\nlearning_rate: 1.0e-2\nmax_steps: 3\ncenter_crop: true\n{extra}",
        pipeline_dir(model).display(),
        dir.join("photos").display(),
        dir.join("out").display()
    );
    std::fs::write(dir.join("train.yaml"), yaml).unwrap();
    TrainConfig::load(Some(&dir.join("train.yaml")), Default::default()).unwrap()
}

#[test]
fn loss_falls_on_a_fixed_batch() {
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let d = tempfile::tempdir().unwrap();
        write_photos(&d.path().join("photos"), 2);
        let cfg = config(d.path(), model, "");
        let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };
        let p = t.prepare(&mut |_| {}).unwrap();
        let shapes = p.pipeline.unet_adapters.shapes();
        let lora = TrainableLora::new("unet", &p.pipeline.unet_adapters, &shapes, &cfg.target_modules, 4, 4.0, 0, &p.pipeline.device).unwrap();
        let vars = lora.vars();
        let mut opt = AdamW::new(&vars, 0.9, 0.999, 1e-8, 0.0).unwrap();
        let scaling = p.pipeline.vae_config().scaling_factor;
        let mut losses = Vec::new();
        for _ in 0..25 {
            // The same draws every time: a fixed batch, noise and timesteps.
            let mut rng = step_rng(1, 0, 0);
            let loss = batch_loss(&p.pipeline, &p.objective, &p.examples, &[0, 1], &p.prompts, scaling, None, p.res, p.xl, &mut rng).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            let g = loss.backward().unwrap();
            let grads: Vec<_> = vars.iter().map(|v| g.get(v.as_tensor()).cloned()).collect();
            assert!(grads.iter().all(Option::is_some), "{model}: every LoRA factor gets a gradient");
            opt.step(&vars, &grads, 1e-2).unwrap();
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.7 * first, "{model}: loss {first} → {last}: {losses:?}");
    }
}

/// Every LoRA factor's gradient, for one fixed batch, with the UNet dense or checkpointed.
fn factor_gradients(model: &str, checkpointing: bool) -> Vec<candle_core::Tensor> {
    factor_gradients_for(model, checkpointing, &["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "time_emb_proj", "linear_1"])
}

fn factor_gradients_for(model: &str, checkpointing: bool, targets: &[&str]) -> Vec<candle_core::Tensor> {
    let d = tempfile::tempdir().unwrap();
    write_photos(&d.path().join("photos"), 2);
    let cfg = config(d.path(), model, "");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };
    let mut p = t.prepare(&mut |_| {}).unwrap();
    p.pipeline.unet.set_gradient_checkpointing(checkpointing);
    // Attention, feed-forward and time-embedding linears: the last make the resnets' second
    // input (the time embedding) trainable too, so that path is checked as well.
    let targets: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
    let shapes = p.pipeline.unet_adapters.shapes();
    let lora = TrainableLora::new("unet", &p.pipeline.unet_adapters, &shapes, &targets, 4, 4.0, 0, &p.pipeline.device).unwrap();
    // B starts at zero (so A's gradient would be zero); give it values from a fixed stream.
    for (i, pair) in lora.modules.values().enumerate() {
        let b = super::objective::normal(&mut step_rng(9, i as u64, 2), pair.up.dims(), &p.pipeline.device).unwrap();
        pair.up.set(&(b * 0.05).unwrap()).unwrap();
    }
    let mut rng = step_rng(1, 0, 0);
    let scaling = p.pipeline.vae_config().scaling_factor;
    let loss = batch_loss(&p.pipeline, &p.objective, &p.examples, &[0, 1], &p.prompts, scaling, None, p.res, p.xl, &mut rng).unwrap();
    let g = loss.backward().unwrap();
    lora.vars().iter().map(|v| g.get(v.as_tensor()).cloned().expect("every factor gets a gradient")).collect()
}

#[test]
fn checkpointed_gradients_equal_dense_ones() {
    let norm = |t: &candle_core::Tensor| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt() as f64;
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let dense = factor_gradients(model, false);
        let ckpt = factor_gradients(model, true);
        assert_eq!(dense.len(), ckpt.len());
        assert!(dense.len() > 40, "{model}: {} factors", dense.len());
        let largest = dense.iter().map(norm).fold(0.0, f64::max);
        let mut compared = 0;
        for (i, (d, c)) in dense.iter().zip(&ckpt).enumerate() {
            let (nd, diff) = (norm(d), norm(&(c - d).unwrap()));
            // A resnet with one channel per GroupNorm group (32 channels, 32 groups here) has a
            // time projection whose per-channel shift the next GroupNorm removes: its true
            // gradient is zero and both runs hold only rounding noise (~1e-9 against ~1e-3).
            if nd < 1e-6 * largest {
                assert!(norm(c) < 1e-6 * largest, "{model}: factor {i}: dense gradient ~0 ({nd}), checkpointed {}", norm(c));
                continue;
            }
            assert!(diff / nd < 1e-5, "{model}: factor {i}: relative error {}", diff / nd);
            compared += 1;
        }
        assert!(compared > 40, "{model}: only {compared} factors with a non-zero gradient");
    }
}

#[test]
fn checkpointed_training_follows_the_same_loss_curve() {
    let losses = |model: &str, extra: &str| -> Vec<f64> {
        let d = tempfile::tempdir().unwrap();
        write_photos(&d.path().join("photos"), 2);
        let cfg = config(d.path(), model, extra);
        let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };
        t.run(&mut |_| {}).unwrap();
        let log = std::fs::read_to_string(cfg.output_dir.join("training_log.jsonl")).unwrap();
        log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()).collect()
    };
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let dense = losses(model, "");
        let ckpt = losses(model, "gradient_checkpointing: true\n");
        assert_eq!(dense.len(), 3);
        assert_eq!(dense.len(), ckpt.len());
        for (d, c) in dense.iter().zip(&ckpt) {
            assert!((d - c).abs() <= 1e-5 * d.abs(), "{model}: dense {dense:?} vs checkpointed {ckpt:?}");
        }
    }
}
