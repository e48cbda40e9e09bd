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
            if y < 50 { image::Rgb([(200 + i * 20) as u8, (100 + y * 2) as u8, (x % 255) as u8]) } else { image::Rgb([20, 30, 10]) }
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
    TrainConfig::load(Some(&dir.join("train.yaml")), &[]).unwrap()
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
        let scaling = p.pipeline.vae.config().scaling_factor;
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
