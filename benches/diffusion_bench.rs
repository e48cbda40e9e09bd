//! The hfsky half of benches/diffusion_bench.sh (not a test; run through that script, which times
//! PyTorch diffusers the same way in the same run). Prints one JSON object per call.
//!
//!   diffusion_bench sample PIPELINE_DIR STEPS SIZE REPEATS
//!       a whole text-to-image run (prompt encoding with CFG, STEPS sampler steps at SIZE×SIZE,
//!       VAE decode) with the pipeline's own scheduler; one warm-up run, then the fastest of REPEATS
//!   diffusion_bench unet CONFIG_JSON WEIGHTS INPUTS REPEATS
//!       one UNet forward on the inputs diffusers used (INPUTS: sample, timesteps,
//!       encoder_hidden_states[, text_embeds, time_ids], out); reports its time and the relative
//!       error against diffusers' output
//!   diffusion_bench train-step UNET_DIR RESOLUTION STEPS [gc]
//!       forward + backward of a rank-4 LoRA on to_q/k/v/out.0 (what a training step spends in the
//!       UNet), on random latents; prints each step's seconds and the process's peak RSS. Run it
//!       under `perf record` for a per-op profile (benches/README or the README's benchmark section)

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use hfsky::diffusion::config::{Architecture, PipelineFiles};
use hfsky::diffusion::nn::{rel_error, Adapters};
use hfsky::diffusion::unet::config::OneOrMany;
use hfsky::diffusion::unet::{SdxlConditioning, UNet2DConditionModel, UNetConfig};
use hfsky::generate::pipeline::Pipeline;
use hfsky::generate::prompts::TextEncoders;
use hfsky::generate::settings::seeded_noise;
use hfsky::train::lora_params::TrainableLora;
use std::path::Path;
use std::time::Instant;

const PROMPT: &str = "a photo of the SKY river";
const NEGATIVE: &str = "blurry, low quality";

fn fastest<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut out = f()?; // warm-up: first-touch allocations and page faults are not the method's cost
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        out = f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, out))
}

fn sample(dir: &Path, steps: usize, size: usize, repeats: usize) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let t = Instant::now();
    let files = PipelineFiles::open(dir)?;
    let pipeline = Pipeline::load(files.clone(), None, DType::F32, dev.clone())?;
    let text = TextEncoders::load(&files, DType::F32, &dev)?;
    let load_s = t.elapsed().as_secs_f64();
    let guidance = if files.architecture == Architecture::StableDiffusionXl { 5.0 } else { 7.5 };
    let noise = seeded_noise(0, pipeline.latent_shape(size, size), &dev)?;
    let (secs, image) = fastest(repeats, || {
        let cond = text.conditioning(PROMPT, NEGATIVE, size, size)?;
        Ok(pipeline.generate(
            &cond,
            &noise,
            None,
            steps,
            guidance,
            hfsky::diffusion::noise::NoiseStream::new(hfsky::diffusion::noise::NoiseKind::TorchCpu, 0),
            |_, _| {},
        )?)
    })?;
    Ok(serde_json::json!({ "load_s": load_s, "run_s": secs, "image_shape": image.dims() }))
}

fn unet(config: &Path, weights: &Path, inputs: &Path, repeats: usize) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let t = Instant::now();
    let cfg = UNetConfig::from_file(config)?;
    let vb = hfsky::diffusion::weights::var_builder(&[weights], DType::F32, &dev)?;
    let model = UNet2DConditionModel::new(vb, &cfg, &Adapters::new())?;
    let load_s = t.elapsed().as_secs_f64();
    let x = candle_core::safetensors::load(inputs, &dev).with_context(|| inputs.display().to_string())?;
    let get = |k: &str| x.get(k).cloned().with_context(|| format!("{}: no tensor {k}", inputs.display()));
    let added = if cfg.has_text_time() { Some(SdxlConditioning { text_embeds: get("text_embeds")?, time_ids: get("time_ids")? }) } else { None };
    let (sample, ts, ehs) = (get("sample")?, get("timesteps")?, get("encoder_hidden_states")?);
    let (secs, out): (f64, Tensor) = fastest(repeats, || Ok(model.forward(&sample, &ts, &ehs, added.as_ref())?))?;
    Ok(serde_json::json!({ "load_s": load_s, "forward_s": secs, "rel_error_vs_diffusers": rel_error(&out, &get("out")?)? }))
}

fn train_step(dir: &Path, res: usize, steps: usize, gc: bool) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let cfg = UNetConfig::from_file(&dir.join("config.json"))?;
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    let vb = hfsky::diffusion::weights::var_builder(&[weights], DType::F32, &dev)?;
    let adapters = Adapters::new();
    let mut model = UNet2DConditionModel::new(vb, &cfg, &adapters)?;
    model.set_gradient_checkpointing(gc);
    let targets: Vec<String> = ["to_q", "to_k", "to_v", "to_out.0"].iter().map(|s| s.to_string()).collect();
    let lora = TrainableLora::new("unet", &adapters, &adapters.shapes(), &targets, 4, 4.0, 0, &dev)?;
    let lat = res / 8;
    let sample = Tensor::randn(0f32, 1.0, (1, 4, lat, lat), &dev)?;
    let target = Tensor::randn(0f32, 1.0, (1, 4, lat, lat), &dev)?;
    let ctx_dim = match &cfg.cross_attention_dim {
        OneOrMany::One(d) => *d,
        OneOrMany::Many(v) => v[0],
    };
    let ehs = Tensor::randn(0f32, 1.0, (1, 77, ctx_dim), &dev)?;
    let added = if cfg.has_text_time() {
        Some(SdxlConditioning {
            text_embeds: Tensor::randn(0f32, 1.0, (1, 1280), &dev)?,
            time_ids: Tensor::new(&[[res as f32, res as f32, 0.0, 0.0, res as f32, res as f32]], &dev)?,
        })
    } else {
        None
    };
    let ts = Tensor::new(&[500u32], &dev)?;
    let mut secs = Vec::new();
    for _ in 0..steps {
        let t = Instant::now();
        let pred = model.forward(&sample, &ts, &ehs, added.as_ref())?;
        let loss = (pred - &target)?.sqr()?.mean_all()?;
        let f = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let n = lora.vars().iter().filter(|v| grads.get(v.as_tensor()).is_some()).count();
        secs.push(serde_json::json!({ "forward_s": f, "step_s": t.elapsed().as_secs_f64(), "lora_grads": n }));
    }
    Ok(serde_json::json!({ "steps": secs, "peak_rss_bytes": hfsky::runtime::peak_host_memory_bytes() }))
}

fn main() -> Result<()> {
    hfsky::runtime::configure();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let n = |i: usize| -> Result<usize> { args.get(i).context("missing argument")?.parse().context("not a number") };
    let v = match args.first().map(String::as_str) {
        Some("sample") if args.len() == 5 => sample(Path::new(&args[1]), n(2)?, n(3)?, n(4)?)?,
        Some("unet") if args.len() == 5 => unet(Path::new(&args[1]), Path::new(&args[2]), Path::new(&args[3]), n(4)?)?,
        Some("train-step") if args.len() == 4 || args.len() == 5 => {
            train_step(Path::new(&args[1]), n(2)?, n(3)?, args.get(4).is_some_and(|a| a == "gc"))?
        }
        _ => bail!(
            "usage: diffusion_bench sample PIPELINE_DIR STEPS SIZE REPEATS | unet CONFIG WEIGHTS INPUTS REPEATS | train-step UNET_DIR RES STEPS [gc]"
        ),
    };
    println!("{v}");
    Ok(())
}
