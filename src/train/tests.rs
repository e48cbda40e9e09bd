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
            let loss = batch_loss(&p.pipeline, &p.objective, &p.examples, &[0, 1], &p.prompts, None, scaling, None, p.xl, &mut rng).unwrap();
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
/// Gives every B factor values from a fixed stream: B starts at zero, which would make every A
/// factor's gradient zero and the gradient checks meaningless.
fn nonzero_b<'a>(pairs: impl Iterator<Item = &'a super::lora_params::LoraPair>) {
    for (i, pair) in pairs.enumerate() {
        let b = super::objective::normal(&mut step_rng(9, i as u64, 2), pair.up.dims(), pair.up.device()).unwrap();
        pair.up.set(&(b * 0.05).unwrap()).unwrap();
    }
}

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
    nonzero_b(lora.modules.values());
    let mut rng = step_rng(1, 0, 0);
    let scaling = p.pipeline.vae_config().scaling_factor;
    let loss = batch_loss(&p.pipeline, &p.objective, &p.examples, &[0, 1], &p.prompts, None, scaling, None, p.xl, &mut rng).unwrap();
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

/// The highest `encoder.layers.<i>` index among a text-encoder LoRA's modules.
fn last_layer(l: &TrainableLora) -> usize {
    l.modules.keys().filter_map(|m| m.split("layers.").nth(1)?.split('.').next()?.parse().ok()).max().unwrap()
}

/// `train_text_encoder`: a LoRA on every CLIP attention projection (both SDXL encoders); every
/// factor gets a gradient through the prompt embeddings, and sampled gradient entries equal
/// central finite differences of loss = Σ seq² + Σ pooled² (f64 encoder weights).
#[test]
fn text_encoder_lora_gradients_are_exact() {
    use crate::generate::prompts::TextEncoders;
    use candle_core::{DType, Device, Tensor};
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let files = crate::diffusion::config::PipelineFiles::open(&pipeline_dir(model)).unwrap();
        let te = TextEncoders::load(&files, DType::F64, &Device::Cpu).unwrap();
        let loras = super::trainer::text_encoder_loras(&te, 2, 4.0, false, 0, &Device::Cpu).unwrap();
        let xl = model == "tiny-sdxl";
        assert_eq!(
            loras.iter().map(|l| l.component.as_str()).collect::<Vec<_>>(),
            if xl { vec!["text_encoder", "text_encoder_2"] } else { vec!["text_encoder"] }
        );
        for l in &loras {
            assert!(l.modules.len() >= 8 && l.modules.len() % 4 == 0, "{model} {}: {} modules", l.component, l.modules.len());
            // B starts at zero (A's gradient would be zero); give it values from a fixed stream.
            for (i, pair) in l.modules.values().enumerate() {
                let b = super::objective::normal(&mut step_rng(7, i as u64, 3), pair.up.dims(), &Device::Cpu).unwrap();
                pair.up.set(&(b * 0.3).unwrap()).unwrap();
            }
        }
        let loss = || -> Tensor {
            let (seq, pooled) = te.encode("a photo of the SKY river").unwrap();
            assert_eq!(seq.dtype(), DType::F64);
            let mut l = seq.sqr().unwrap().sum_all().unwrap();
            if let Some(p) = pooled {
                l = (l + p.sqr().unwrap().sum_all().unwrap()).unwrap();
            }
            l
        };
        let grads = loss().backward().unwrap();
        let vars: Vec<(String, &candle_core::Var)> = loras
            .iter()
            .flat_map(|l| {
                l.modules.iter().flat_map(move |(m, p)| [(format!("{}.{m}.A", l.component), &p.down), (format!("{}.{m}.B", l.component), &p.up)])
            })
            .collect();
        // SDXL conditions on text_encoder's penultimate layer and takes the pooled embedding from
        // text_encoder_2 alone, so text_encoder's last layer cannot get a gradient (in diffusers'
        // training neither); every other factor must.
        let unused = |name: &str| xl && name.starts_with("text_encoder.") && name.contains(&format!("layers.{}.", last_layer(&loras[0])));
        let vars: Vec<(String, &candle_core::Var)> = vars
            .into_iter()
            .filter(|(name, v)| {
                if unused(name) {
                    assert!(grads.get(v.as_tensor()).is_none(), "{model}: {name} is past the penultimate state yet gets a gradient");
                }
                !unused(name)
            })
            .collect();
        for (name, v) in &vars {
            let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{model}: no gradient for {name}"));
            assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "{model}: zero gradient for {name}");
        }
        // The first and last layer's projections of each encoder, and one in between.
        let picks = [0, 3, vars.len() / 2, vars.len() / 2 + 1, vars.len() - 2, vars.len() - 1];
        let h = 1e-2f32;
        for &i in &picks {
            let (name, v) = &vars[i];
            let (idx, analytic, numeric) = crate::diffusion::testing::central_difference(v, grads.get(v.as_tensor()).unwrap(), h, loss);
            let rel = (numeric - analytic as f64).abs() / numeric.abs().max(1e-12);
            assert!(rel < 1e-3, "{model}: {name}[{idx}]: analytic {analytic} vs numeric {numeric} (rel {rel:.1e})");
        }
    }
}

/// `train_text_encoder: true` end to end: the encoders stay loaded, the training loss reaches
/// every UNet and text-encoder factor, the saved file holds both in diffusers' layout with each
/// component's config in `lora_adapter_metadata`, our loader gives the trained prompt
/// embeddings back, and a checkpoint resumes to the same final factors as an uninterrupted run.
#[test]
fn text_encoder_training_saves_and_resumes() {
    use crate::diffusion::lora::LoraWeights;
    use crate::generate::prompts::TextEncoders;
    use candle_core::{DType, Device};
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let xl = model == "tiny-sdxl";
        let d = tempfile::tempdir().unwrap();
        write_photos(&d.path().join("photos"), 2);
        let extra = "train_text_encoder: true\ntext_encoder_lr: 5.0e-3\ncheckpointing_steps: 2\ncaptions: instance\n";
        let mut cfg = config(d.path(), model, extra);
        cfg.max_steps = Some(4);
        let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };

        // The training loss's gradient reaches every factor of both networks.
        let p = t.prepare(&mut |_| {}).unwrap();
        let enc = p.prompts.live.as_ref().expect("train_text_encoder keeps the encoders");
        let unet = TrainableLora::new(
            "unet",
            &p.pipeline.unet_adapters,
            &p.pipeline.unet_adapters.shapes(),
            &cfg.target_modules,
            4,
            4.0,
            0,
            &p.pipeline.device,
        )
        .unwrap();
        let tes = super::trainer::text_encoder_loras(enc, 4, 4.0, false, 0, &p.pipeline.device).unwrap();
        nonzero_b(unet.modules.values().chain(tes.iter().flat_map(|l| l.modules.values())));
        let mut rng = step_rng(1, 0, 0);
        let scaling = p.pipeline.vae_config().scaling_factor;
        let loss = batch_loss(&p.pipeline, &p.objective, &p.examples, &[0, 1], &p.prompts, None, scaling, None, p.xl, &mut rng).unwrap();
        let g = loss.backward().unwrap();
        for l in std::iter::once(&unet).chain(&tes) {
            for (m, pair) in &l.modules {
                let unused = xl && l.component == "text_encoder" && m.contains(&format!("layers.{}.", last_layer(l)));
                for v in [&pair.down, &pair.up] {
                    assert_eq!(g.get(v.as_tensor()).is_some(), !unused, "{model}: {}.{m}: gradient from the training loss", l.component);
                }
            }
        }
        drop(p);

        let mut events = Vec::new();
        let summary = t.run(&mut |e| events.push(e)).unwrap();
        assert_eq!(summary.steps, 4);
        let file = cfg.output_dir.join("pytorch_lora_weights.safetensors");
        let saved = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
        let comps = if xl { vec!["unet", "text_encoder", "text_encoder_2"] } else { vec!["unet", "text_encoder"] };
        for c in &comps {
            assert!(
                saved.keys().any(|k| k.starts_with(&format!("{c}.")) && k.ends_with(".lora_B.weight")),
                "{model}: no {c} factors: {:?}",
                saved.keys()
            );
        }
        assert!(saved.keys().all(|k| comps.iter().any(|c| k.starts_with(&format!("{c}.")))), "{model}: {:?}", saved.keys());
        let te_b = saved.iter().filter(|(k, _)| k.starts_with("text_encoder") && k.ends_with("lora_B.weight"));
        assert!(
            te_b.map(|(_, t)| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).sum::<f32>() > 0.0,
            "{model}: text-encoder LoRA trained"
        );
        let raw = std::fs::read(&file).unwrap();
        let meta = safetensors::SafeTensors::read_metadata(&raw).unwrap().1.metadata().clone().unwrap();
        let meta: serde_json::Value = serde_json::from_str(&meta["lora_adapter_metadata"]).unwrap();
        for c in &comps {
            assert_eq!(meta[format!("{c}.r")], 4, "{model}: {meta}");
        }
        assert_eq!(meta["text_encoder.target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj", "out_proj"]));

        // Our loader applies the text-encoder part and gets the embeddings training ended with.
        let files = crate::diffusion::config::PipelineFiles::open(&pipeline_dir(model)).unwrap();
        let te = TextEncoders::load(&files, DType::F32, &Device::Cpu).unwrap();
        let base = te.encode("a photo of SKY").unwrap().0;
        let w = LoraWeights::load(&file).unwrap();
        assert_eq!(te.install_lora(&w, 1.0, crate::generate::pipeline::LoraMode::Live).unwrap(), if xl { 16 } else { 8 });
        let trained = te.encode("a photo of SKY").unwrap().0;
        let moved = crate::diffusion::nn::rel_error(&trained, &base).unwrap();
        assert!(moved > 1e-6, "{model}: the trained text-encoder LoRA changes the embeddings ({moved:e})");

        // Resume from step 2: the same final file as the uninterrupted run.
        let ck = cfg.output_dir.join("checkpoints/checkpoint-2");
        let ck_saved = candle_core::safetensors::load(ck.join("lora.safetensors"), &Device::Cpu).unwrap();
        assert!(ck_saved.keys().any(|k| k.starts_with("text_encoder.")), "the checkpoint carries the text-encoder factors");
        let mut resumed = cfg.clone();
        resumed.resume_from_checkpoint = Some("checkpoint-2".into());
        Trainer { cfg: &resumed, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) }.run(&mut |_| {}).unwrap();
        let again = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
        for (k, t) in &saved {
            let e = crate::diffusion::nn::rel_error(&again[k], t).unwrap();
            assert!(e < 1e-5, "{model}: {k} after resuming differs by {e:e}");
        }
        // Without train_text_encoder the same checkpoint does not fit.
        let mut plain = resumed.clone();
        plain.train_text_encoder = false;
        let err = Trainer { cfg: &plain, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) }
            .run(&mut |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("train_text_encoder"), "{model}: {err}");
    }
}

/// The memory preflight counts the text encoders' weights (kept loaded) and their LoRA with
/// `train_text_encoder`, and nothing more.
#[test]
fn preflight_counts_the_kept_text_encoders() {
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let estimate = |extra: &str| {
            let d = tempfile::tempdir().unwrap();
            write_photos(&d.path().join("photos"), 1);
            let cfg = config(d.path(), model, extra);
            let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };
            t.prepare(&mut |_| {}).unwrap().memory.estimate
        };
        let (off, on) = (estimate(""), estimate("train_text_encoder: true\n"));
        let encoders: &[&str] = if model == "tiny-sdxl" { &["text_encoder", "text_encoder_2"] } else { &["text_encoder"] };
        let mut params = 0u64;
        for e in encoders {
            let t = candle_core::safetensors::load(pipeline_dir(model).join(e).join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
            params += t.values().map(|t| t.elem_count() as u64).sum::<u64>();
        }
        assert_eq!(on.weights - off.weights, params * 4, "{model}: f32 encoder weights");
        assert!(on.trainable > off.trainable, "{model}: the text-encoder LoRA and its AdamW state");
        assert_eq!(on.activations, off.activations);
    }
}

/// `validation_split`: the held-out photos are prepared like the others but are not among the
/// examples batches are drawn from; their loss is the training loss function at the fixed
/// timesteps and draws, the same value every time for the same weights, and it moves with them.
#[test]
fn held_out_photos_never_train_and_their_loss_is_deterministic() {
    use super::objective::Objective;
    use super::validation_loss::{timesteps, HeldOutFrom, TIMESTEPS};
    let d = tempfile::tempdir().unwrap();
    write_photos(&d.path().join("photos"), 4);
    let cfg = config(d.path(), "tiny-sd15", "validation_split: 1\nseed: 5\n");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sd15"), cache_dir: Some(d.path().join("cache")) };
    let p = t.prepare(&mut |_| {}).unwrap();
    assert_eq!((p.examples.len(), p.held_out.examples.len()), (3, 1), "batches are drawn from the 3 training examples only");
    assert_eq!(p.held_out.from, Some(HeldOutFrom::ValidationSplit));
    let (held, _) = &p.held_out.photos[0];
    assert!(p.trained_on.iter().all(|(f, _)| f != held), "{held} is held out but listed as trained on: {:?}", p.trained_on);
    let mut all: Vec<&str> = p.trained_on.iter().chain(&p.held_out.photos).map(|(f, _)| f.as_str()).collect();
    all.sort();
    assert_eq!(all, ["sky-0.png", "sky-1.png", "sky-2.png", "sky-3.png"]);
    // The held-out latents are the held-out photo's: no training example shares them.
    let mean = |e: &super::trainer::Example| e.variants[0].0.mean.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(p.examples.iter().all(|e| mean(e) != mean(&p.held_out.examples[0])));

    let scaling = p.pipeline.vae_config().scaling_factor;
    let val = |p: &super::trainer::Prepared| p.held_out.loss(&p.pipeline, &p.objective, &p.prompts, scaling, None, p.xl, cfg.seed).unwrap();
    let first = val(&p);
    assert!(first.is_finite() && first > 0.0);
    assert_eq!(first.to_bits(), val(&p).to_bits(), "two evaluations with the same weights agree exactly");
    // The training loss function (batch_loss) at each fixed timestep, with the stream the
    // documentation names, averaged.
    let ts = timesteps(p.objective.schedule.alphas_cumprod.len());
    assert_eq!(ts, [200, 400, 600, 800]);
    let by_hand: f32 = ts
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            let at = Objective { timestep: Some(t), ..p.objective.clone() };
            let mut rng = step_rng(cfg.seed, 0x7A11_D055, k as u64);
            batch_loss(&p.pipeline, &at, &p.held_out.examples, &[0], &p.prompts, None, scaling, None, p.xl, &mut rng)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum::<f32>()
        / TIMESTEPS as f32;
    assert!((by_hand - first).abs() <= 1e-6 * first, "{by_hand} vs {first}");
    // A LoRA that changes the UNet changes val_loss.
    let shapes = p.pipeline.unet_adapters.shapes();
    let lora = TrainableLora::new("unet", &p.pipeline.unet_adapters, &shapes, &cfg.target_modules, 4, 4.0, 0, &p.pipeline.device).unwrap();
    nonzero_b(lora.modules.values());
    let moved = val(&p);
    assert!((moved - first).abs() > 1e-6, "val_loss {first} did not move with the weights");
    assert_eq!(moved.to_bits(), val(&p).to_bits());
}

/// A `validation/` folder inside the dataset (the Hub imagefolder's split) holds its photos out,
/// named by their path in the dataset, captions read beside them like any photo's.
#[test]
fn a_validation_folder_holds_its_photos_out() {
    let d = tempfile::tempdir().unwrap();
    write_photos(&d.path().join("photos"), 2);
    write_photos(&d.path().join("photos/validation"), 1);
    let cfg = config(d.path(), "tiny-sd15", "");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir("tiny-sd15"), cache_dir: Some(d.path().join("cache")) };
    let p = t.prepare(&mut |_| {}).unwrap();
    assert_eq!(p.held_out.from, Some(super::validation_loss::HeldOutFrom::ValidationFolder));
    assert_eq!(p.held_out.photos, [("validation/sky-0.png".to_string(), "a photo of SKY, orange sunset number 0".to_string())]);
    let trained: Vec<&str> = p.trained_on.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!((trained, p.examples.len()), (vec!["sky-0.png", "sky-1.png"], 2));
    let e = Trainer { cfg: &config(d.path(), "tiny-sd15", "validation_split: 1\n"), model_dir: pipeline_dir("tiny-sd15"), cache_dir: None }
        .prepare(&mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("validation_split") && e.contains("validation"), "{e}");
}

/// Tag captions ("sunset, orange sky, lake, clouds N, …") on the photos `write_photos` made.
fn write_tag_captions(dir: &Path, n: usize) {
    for i in 0..n {
        std::fs::write(dir.join(format!("sky-{i}.txt")), format!("sunset, orange sky, lake {i}, clouds, birds, haze")).unwrap();
    }
}

/// Caption dropout swaps in the instance prompt's embedding (never drops the instance prompt
/// itself), and shuffled captions are encoded through the kept encoders, which the memory
/// preflight counts (as it does for train_text_encoder, without LoRA factors).
#[test]
fn caption_dropout_keeps_the_instance_prompt_and_shuffled_tags_are_encoded() {
    use super::caption_augment::Drawn;
    let model = "tiny-sd15";
    let d = tempfile::tempdir().unwrap();
    write_photos(&d.path().join("photos"), 2);
    write_tag_captions(&d.path().join("photos"), 2);
    let emb = |p: &super::trainer::Prepared, i: usize, key: Option<(u64, u64)>| p.prompts.embeddings_for(i, key).unwrap().0;
    let same = |a: &candle_core::Tensor, b: &candle_core::Tensor| crate::diffusion::nn::rel_error(a, b).unwrap() < 1e-7;

    let cfg = config(d.path(), model, "caption_dropout: 1.0\n");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };
    let p = t.prepare(&mut |_| {}).unwrap();
    let aug = p.prompts.augment.as_ref().expect("augmentation on");
    let instance = aug.instance.expect("the instance prompt is encoded for dropout");
    assert!(aug.kept.is_none() && p.prompts.live.is_none(), "dropout alone needs no encoders");
    let ex = p.examples[0].prompt;
    assert_ne!(ex, instance);
    assert!(same(&emb(&p, ex, Some((3, 5))), &emb(&p, instance, None)), "a dropped caption trains on the instance prompt");
    assert!(!same(&emb(&p, ex, None), &emb(&p, instance, None)));
    // The instance prompt has no caption, so it is never changed (nor are class prompts).
    assert!(same(&emb(&p, instance, Some((3, 5))), &emb(&p, instance, None)));
    drop(p);

    let cfg = config(d.path(), model, "shuffle_tags: true\nkeep_tokens: 1\n");
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };
    let mut notes = Vec::new();
    let p = t
        .prepare(&mut |e| {
            if let super::trainer::Event::Note(n) = e {
                notes.push(n)
            }
        })
        .unwrap();
    assert!(notes.iter().any(|n| n.contains("shuffle_tags: the text encoders stay loaded")), "{notes:?}");
    let aug = p.prompts.augment.as_ref().unwrap();
    let enc = aug.kept.as_ref().expect("the encoders are kept");
    let ex = p.examples[1].prompt;
    let caption = "sunset, orange sky, lake 1, clouds, birds, haze";
    let (step, sample) = (0..50u64).map(|k| (k, k)).find(|&(s, k)| matches!(aug.rule.draw(caption, s, k), Drawn::Shuffled(_))).unwrap();
    let Drawn::Shuffled(shuffled) = aug.rule.draw(caption, step, sample) else { unreachable!() };
    assert!(shuffled.starts_with("sunset, ") && shuffled != caption, "{shuffled}");
    let want = enc.encode(&format!("a photo of SKY, {shuffled}")).unwrap().0;
    assert!(same(&emb(&p, ex, Some((step, sample))), &want), "the shuffled prompt, encoded this step");
    assert!(same(&emb(&p, ex, Some((step, sample))), &emb(&p, ex, Some((step, sample)))), "the same key, the same prompt");
    let plain = p.memory.estimate;
    drop(p);
    let off = config(d.path(), model, "");
    let off =
        Trainer { cfg: &off, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) }.prepare(&mut |_| {}).unwrap().memory.estimate;
    let params: u64 = candle_core::safetensors::load(pipeline_dir(model).join("text_encoder/model.safetensors"), &candle_core::Device::Cpu)
        .unwrap()
        .values()
        .map(|t| t.elem_count() as u64)
        .sum();
    assert_eq!(plain.weights - off.weights, params * 4, "the kept encoders' f32 weights");
    assert_eq!(plain.trainable, off.trainable, "no text-encoder LoRA");

    // Captions that are not tag lists: the run says nothing will be shuffled.
    write_photos(&d.path().join("photos"), 2);
    let cfg = config(d.path(), model, "shuffle_tags: true\n");
    let mut notes = Vec::new();
    Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) }
        .prepare(&mut |e| {
            if let super::trainer::Event::Note(n) = e {
                notes.push(n)
            }
        })
        .unwrap();
    assert!(notes.iter().any(|n| n.contains("so nothing is shuffled")), "{notes:?}");
}

/// Prodigy trains (d adapts from d0, logged each step), and a run resumed from a checkpoint
/// ends exactly where the uninterrupted one did, with caption dropout and tag shuffling on
/// (their draws follow (seed, step, sample)). A Prodigy checkpoint does not resume under AdamW.
#[test]
fn prodigy_with_caption_augmentation_resumes_exactly() {
    use candle_core::Device;
    let model = "tiny-sd15";
    let d = tempfile::tempdir().unwrap();
    write_photos(&d.path().join("photos"), 2);
    write_tag_captions(&d.path().join("photos"), 2);
    // Bias correction off: with it, d stays at d0 for the first ten or so steps (as prodigyopt).
    let extra = "optimizer: prodigy\nprodigy_use_bias_correction: false\nprodigy_d_coef: 2.0\ncheckpointing_steps: 2\ncaption_dropout: 0.5\nshuffle_tags: true\nkeep_tokens: 1\nlr_warmup_steps: 1\n";
    let mut cfg = config(d.path(), model, extra);
    cfg.learning_rate = 1.0;
    cfg.max_steps = Some(5);
    let t = Trainer { cfg: &cfg, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) };
    let summary = t.run(&mut |_| {}).unwrap();
    assert_eq!(summary.optimizer.name, "prodigy");
    let final_d = summary.optimizer.prodigy.as_ref().unwrap().final_d;
    assert!(final_d > 2e-6, "d adapted from d0: {final_d:e}");
    assert_eq!((summary.caption_dropout, summary.shuffle_tags, summary.keep_tokens), (0.5, true, 1));
    let log = std::fs::read_to_string(cfg.output_dir.join("training_log.jsonl")).unwrap();
    let ds: Vec<f64> = log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["d"].as_f64().unwrap()).collect();
    assert_eq!(ds.len(), 5);
    assert_eq!(*ds.last().unwrap(), final_d);
    let file = cfg.output_dir.join("pytorch_lora_weights.safetensors");
    let whole = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.output_dir.join("checkpoints/checkpoint-2/state.json")).unwrap()).unwrap();
    assert_eq!(state["optimizer"], "prodigy");

    let mut resumed = cfg.clone();
    resumed.resume_from_checkpoint = Some("checkpoint-2".into());
    let again = Trainer { cfg: &resumed, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) }.run(&mut |_| {}).unwrap();
    assert_eq!(again.optimizer.prodigy.unwrap().final_d, final_d, "the same d after resuming");
    let after = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    for (k, t) in &whole {
        assert_eq!(after[k].to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap(), "{k} after resuming");
    }
    let log2 = std::fs::read_to_string(cfg.output_dir.join("training_log.jsonl")).unwrap();
    let losses = |l: &str| l.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()).collect::<Vec<_>>();
    assert_eq!(losses(&log2), losses(&log), "the same losses: the same prompts, noise and steps");

    let mut adamw = resumed.clone();
    adamw.optimizer = super::config::OptimizerKind::AdamW;
    let err =
        Trainer { cfg: &adamw, model_dir: pipeline_dir(model), cache_dir: Some(d.path().join("cache")) }.run(&mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("prodigy") && err.contains("optimizer"), "{err}");
}
