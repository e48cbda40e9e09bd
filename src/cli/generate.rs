use super::{bad_input, Ctx};
use hfsky::diffusion::config::{Architecture, PipelineFiles};
use hfsky::diffusion::lora::LoraWeights;
use hfsky::diffusion::schedulers::SchedulerKind;
use hfsky::generate::pipeline::{to_rgb8, variant_for, LoraMode, Pipeline};
use hfsky::generate::png_out::write_png;
use hfsky::generate::prompts::TextEncoders;
use hfsky::generate::settings::{check_size, parse_seeds, read_latents, seeded_noise, ImageSettings};
use hfsky::generate::source::{resolve_lora, resolve_pipeline, resolve_vae};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base pipeline: a diffusers folder or a Hub repo id (`namespace/name[@revision]`)
    #[arg(long)]
    model: String,
    /// LoRA: a .safetensors file, a folder, or a Hub repo id
    #[arg(long)]
    lora: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    lora_scale: f64,
    /// Fuse the LoRA into the weights (W0 + scale·B·A, as diffusers' fuse_lora and the Hub's
    /// inference do) instead of applying it on the activations at every step
    #[arg(long, requires = "lora")]
    lora_merge: bool,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative: String,
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Classifier-free guidance scale (default: 7.5 for SD 1.x, 5.0 for SDXL)
    #[arg(long)]
    guidance: Option<f64>,
    /// Sampler (default: the pipeline's scheduler_config.json)
    #[arg(long, value_enum)]
    scheduler: Option<SchedulerKind>,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Several seeds: A..B (B exclusive), A..=B or a,b,c
    #[arg(long)]
    seeds: Option<String>,
    /// Initial noise from a safetensors file (one tensor [1, C, h/8, w/8]) to reproduce another implementation
    #[arg(long, conflicts_with_all = ["seed", "seeds"])]
    latents: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Precision,
    /// Replacement VAE: a folder with config.json + weights, or a Hub repo id
    /// (e.g. madebyollin/sdxl-vae-fp16-fix for SDXL in f16)
    #[arg(long)]
    vae: Option<String>,
    /// Output folder for PNGs and JSON sidecars
    #[arg(long)]
    out: PathBuf,
}

fn device() -> anyhow::Result<candle_core::Device> {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = candle_core::Device::new_cuda(0) {
            return Ok(d);
        }
    }
    Ok(candle_core::Device::Cpu)
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    if a.steps == 0 {
        return Err(bad_input("--steps must be at least 1"));
    }
    if a.prompt.trim().is_empty() {
        return Err(bad_input("--prompt is empty"));
    }
    let dtype = match a.dtype {
        Precision::F32 => candle_core::DType::F32,
        Precision::F16 => candle_core::DType::F16,
        Precision::Bf16 => candle_core::DType::BF16,
    };
    let dev = device()?;
    if dtype == candle_core::DType::BF16 && dev.is_cpu() {
        // candle's CPU backend has no bf16 matmul; quietly computing in another precision would
        // make the recorded settings lie.
        return Err(bad_input("--dtype bf16 needs a CUDA GPU (build with --features cuda); on the CPU use --dtype f16 (half the memory) or f32"));
    }
    let client = super::client(ctx, false)?;
    let rt = ctx.runtime();
    let variant = variant_for(dtype);
    let root = rt.block_on(resolve_pipeline(&a.model, &client, variant)).map_err(|e| bad_input(e.to_string()))?;
    let files = PipelineFiles::open(&root)?;
    let unet_cfg: serde_json::Value = files.config("unet")?;
    let vae_cfg: serde_json::Value = files.config("vae")?;
    let factor = 1usize << vae_cfg["block_out_channels"].as_array().map(|v| v.len().saturating_sub(1)).unwrap_or(3);
    let default_side = unet_cfg["sample_size"].as_u64().unwrap_or(64) as usize * factor;
    let (width, height) = (a.width.unwrap_or(default_side), a.height.unwrap_or(default_side));
    check_size(width, height).map_err(|e| bad_input(e.to_string()))?;
    let guidance = a.guidance.unwrap_or(if files.architecture == Architecture::StableDiffusionXl { 5.0 } else { 7.5 });

    let vae_dir = match &a.vae {
        Some(spec) => Some(rt.block_on(resolve_vae(spec, &client, variant)).map_err(|e| bad_input(e.to_string()))?),
        None => None,
    };
    let pipeline = Pipeline::load(files.clone(), vae_dir.as_deref(), dtype, dev.clone())?;
    let text = TextEncoders::load(&files, dtype, &dev)?;
    let lora_mode = if a.lora_merge { LoraMode::Fused } else { LoraMode::Live };
    let (lora_path, lora_sha) = match &a.lora {
        Some(spec) => {
            let path = rt.block_on(resolve_lora(spec, &client)).map_err(|e| bad_input(e.to_string()))?;
            let lora = LoraWeights::load(&path)?;
            let n = pipeline.install_lora(&lora, a.lora_scale, lora_mode)?;
            let n_text = text.install_lora(&lora, a.lora_scale, lora_mode)?;
            if n + n_text == 0 {
                return Err(bad_input(format!("{}: the LoRA has no weights for this pipeline's UNet or text encoders", path.display())));
            }
            if !ctx.json {
                let how = if a.lora_merge { "fused" } else { "live" };
                ctx.say(&format!("LoRA {} ({:?}, {how}): {n} UNet and {n_text} text-encoder modules at scale {}", path.display(), lora.format, a.lora_scale));
            }
            (Some(path.display().to_string()), Some(hfsky::hash::sha256_file(&path)?))
        }
        None => (None, None),
    };
    let cond = text.conditioning(&a.prompt, &a.negative, height, width)?;
    let model_sha = hfsky::hash::sha256_file(&files.weights("unet", variant)?)?;
    let shape = pipeline.latent_shape(height, width);
    let runs: Vec<(Option<u64>, candle_core::Tensor)> = match (&a.latents, &a.seeds, a.seed) {
        (Some(p), _, _) => vec![(None, read_latents(p, shape, &dev).map_err(|e| bad_input(e.to_string()))?)],
        (None, Some(s), _) => parse_seeds(s)
            .map_err(|e| bad_input(e.to_string()))?
            .into_iter()
            .map(|s| Ok((Some(s), seeded_noise(s, shape, &dev)?)))
            .collect::<candle_core::Result<_>>()?,
        (None, None, seed) => {
            let s = seed.unwrap_or(0);
            vec![(Some(s), seeded_noise(s, shape, &dev)?)]
        }
    };
    std::fs::create_dir_all(&a.out).map_err(|e| bad_input(format!("cannot create {}: {e}", a.out.display())))?;
    let scheduler_name = a.scheduler.map(|k| k.class_name().to_string()).unwrap_or_else(|| pipeline.scheduler_config.class_name.clone());
    let mut written = Vec::new();
    for (seed, noise) in runs {
        let pb = if ctx.show_progress() { ProgressBar::new(a.steps as u64) } else { ProgressBar::hidden() };
        pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec}").expect("template").progress_chars("=> "));
        pb.set_message(seed.map(|s| format!("seed {s}")).unwrap_or_else(|| "latents".into()));
        let image = pipeline.generate(&cond, &noise, a.scheduler, a.steps, guidance, seed.unwrap_or(0), |i, _| pb.set_position(i as u64))?;
        pb.finish_and_clear();
        let settings = ImageSettings {
            model: a.model.clone(),
            model_sha256: model_sha.clone(),
            lora: lora_path.clone(),
            lora_sha256: lora_sha.clone(),
            lora_scale: a.lora_scale,
            lora_mode: a.lora.is_some().then_some(lora_mode),
            prompt: a.prompt.clone(),
            negative_prompt: a.negative.clone(),
            steps: a.steps,
            guidance_scale: guidance,
            scheduler: scheduler_name.clone(),
            width,
            height,
            seed,
            latents_file: a.latents.as_ref().map(|p| p.display().to_string()),
            dtype: format!("{:?}", a.dtype).to_lowercase(),
            vae: a.vae.clone(),
            hfsky_version: env!("CARGO_PKG_VERSION").into(),
        };
        let stem = seed.map(|s| format!("seed-{s}")).unwrap_or_else(|| "latents".into());
        let png = a.out.join(format!("{stem}.png"));
        let (w, h, px) = to_rgb8(&image)?;
        write_png(&png, w, h, &px, &settings.png_text())?;
        std::fs::write(a.out.join(format!("{stem}.json")), serde_json::to_vec_pretty(&settings)?)?;
        ctx.say(&format!("{}", png.display()));
        written.push(serde_json::json!({ "png": png, "settings": settings }));
    }
    ctx.emit_json(&serde_json::json!({ "images": written }));
    Ok(())
}
