use super::{bad_input, Ctx};
use hfsky::diffusion::noise::NoiseKind;
use hfsky::diffusion::schedulers::{SchedulerKind, SchedulerOverrides, TimestepSpacing};
use hfsky::generate::pipeline::LoraMode;
use hfsky::generate::render::{Overrides, RenderSpec, Renderer};
use hfsky::generate::settings::{parse_seeds, read_latents};
use hfsky::model_ref::ModelRef;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

/// The generation settings `generate` and `compare` share; unset ones keep the spec's value
/// (the engine's default, or for `compare` the card's validation settings).
#[derive(clap::Args, Debug)]
pub struct RenderFlags {
    /// LoRA strength (default 1.0)
    #[arg(long)]
    lora_scale: Option<f64>,
    /// Negative prompt (default: none)
    #[arg(long)]
    negative: Option<String>,
    /// Denoising steps (default 30)
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (default: 7.5 for SD 1.x, 5.0 for SDXL)
    #[arg(long)]
    guidance: Option<f64>,
    /// Sampler (default: the pipeline's scheduler_config.json)
    #[arg(long, value_enum)]
    scheduler: Option<SchedulerKind>,
    /// Karras noise levels (scheduler_config.json's use_karras_sigmas; Euler and DPM-Solver++
    /// read it, DDIM and Euler ancestral ignore it, as in diffusers) [default: the file's]
    #[arg(long, value_name = "BOOL")]
    karras_sigmas: Option<bool>,
    /// How the steps spread over the training timesteps (scheduler_config.json's
    /// timestep_spacing) [default: the file's, else the sampler's: leading for DDIM, linspace
    /// for the others]
    #[arg(long, value_enum)]
    timestep_spacing: Option<TimestepSpacing>,
    /// Added to "leading" timesteps (scheduler_config.json's steps_offset; SD 1.5 and SDXL
    /// ship 1) [default: the file's]
    #[arg(long, value_name = "N")]
    steps_offset: Option<usize>,
    /// Image width (default: the UNet's sample_size × the VAE's factor)
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// Weights and compute precision (default f32)
    #[arg(long, value_enum)]
    dtype: Option<Precision>,
    /// Replacement VAE: a folder with config.json + weights, or a Hub repo id
    /// (e.g. madebyollin/sdxl-vae-fp16-fix for SDXL in f16)
    #[arg(long)]
    vae: Option<ModelRef>,
    /// Whose random generator turns a seed into noise: torch-cpu (diffusers'
    /// torch.Generator("cpu").manual_seed(seed), the same image as a diffusers render) or
    /// hfsky (hfsky's own, as before this flag existed) [default: torch-cpu]
    #[arg(long, value_enum)]
    noise: Option<NoiseKind>,
}

impl RenderFlags {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            lora_scale: self.lora_scale,
            negative: self.negative.clone(),
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.scheduler,
            scheduler_config: SchedulerOverrides {
                use_karras_sigmas: self.karras_sigmas,
                timestep_spacing: self.timestep_spacing,
                steps_offset: self.steps_offset,
            },
            width: self.width,
            height: self.height,
            dtype: self.dtype.map(Into::into),
            vae: self.vae.clone(),
            noise: self.noise,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base pipeline: a diffusers folder or a Hub repo id (`namespace/name[@revision]`)
    #[arg(long)]
    model: ModelRef,
    /// LoRA: a .safetensors file, a folder, or a Hub repo id (`namespace/name[@revision]`)
    #[arg(long)]
    lora: Option<ModelRef>,
    /// Fuse the LoRA into the weights (W0 + scale·B·A, as diffusers' fuse_lora and the Hub's
    /// inference do) instead of applying it on the activations at every step
    #[arg(long, requires = "lora")]
    lora_merge: bool,
    #[arg(long)]
    prompt: String,
    #[command(flatten)]
    render: RenderFlags,
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Several seeds: A..B (B exclusive), A..=B or a,b,c
    #[arg(long)]
    seeds: Option<String>,
    /// Initial noise from a safetensors file (one tensor [1, C, h/8, w/8]) to reproduce another implementation
    #[arg(long, conflicts_with_all = ["seed", "seeds"])]
    latents: Option<PathBuf>,
    /// Output folder for PNGs and JSON sidecars
    #[arg(long)]
    out: PathBuf,
}

impl From<Precision> for candle_core::DType {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => candle_core::DType::F32,
            Precision::F16 => candle_core::DType::F16,
            Precision::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// A progress bar for one image's denoising steps (hidden under --json or without a terminal).
pub fn step_bar(ctx: &Ctx, steps: usize, label: String) -> ProgressBar {
    let pb = if ctx.show_progress() { ProgressBar::new(steps as u64) } else { ProgressBar::hidden() };
    pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec}").expect("template").progress_chars("=> "));
    pb.set_message(label);
    pb
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let mut spec = RenderSpec::new(a.model.clone(), a.prompt.clone());
    spec.lora = a.lora.clone();
    spec.lora_mode = if a.lora_merge { LoraMode::Fused } else { LoraMode::Live };
    a.render.overrides().apply(&mut spec);
    let seeds = match &a.seeds {
        Some(s) => Some(parse_seeds(s).map_err(|e| bad_input(e.to_string()))?),
        None => None,
    };
    let client = super::client(ctx, false)?;
    let rt = ctx.runtime();
    let renderer = rt.block_on(Renderer::fetch_and_load(&spec, &client, Renderer::default_device()))?;
    let r = renderer.settings();
    if let (Some(path), false) = (&r.lora, ctx.json) {
        let how = if a.lora_merge { "fused" } else { "live" };
        ctx.say(&format!("LoRA {path} ({how}) at scale {}", spec.lora_scale));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| bad_input(format!("cannot create {}: {e}", a.out.display())))?;
    let runs: Vec<Option<u64>> = match (&a.latents, seeds, a.seed) {
        (Some(_), _, _) => vec![None],
        (None, Some(s), _) => s.into_iter().map(Some).collect(),
        (None, None, seed) => vec![Some(seed.unwrap_or(0))],
    };
    let mut written = Vec::new();
    for seed in runs {
        let pb = step_bar(ctx, spec.steps, seed.map(|s| format!("seed {s}")).unwrap_or_else(|| "latents".into()));
        let started = std::time::Instant::now();
        let image = match (&a.latents, seed) {
            (Some(p), _) => {
                let noise = read_latents(p, renderer.latent_shape(), renderer.device()).map_err(|e| bad_input(e.to_string()))?;
                renderer.render_noise(&noise, None, Some(p.display().to_string()), |i| pb.set_position(i as u64))
            }
            (None, seed) => renderer.render(seed.unwrap_or(0), |i| pb.set_position(i as u64)),
        }?;
        pb.finish_and_clear();
        // Denoising and decoding only (the model is loaded once for every seed).
        let seconds = started.elapsed().as_secs_f64();
        let stem = seed.map(|s| format!("seed-{s}")).unwrap_or_else(|| "latents".into());
        let png = a.out.join(format!("{stem}.png"));
        image.write_png(&png)?;
        std::fs::write(a.out.join(format!("{stem}.json")), serde_json::to_vec_pretty(&image.settings)?)?;
        ctx.say(&format!("{}", png.display()));
        written.push(GeneratedJson { png, seconds, settings: image.settings });
    }
    ctx.emit_json(&GenerateJson { images: written });
    Ok(())
}

/// The `--json` document of `generate`.
#[derive(serde::Serialize)]
struct GenerateJson {
    images: Vec<GeneratedJson>,
}

/// One image: its file, the seconds its denoising and decoding took, and the settings that
/// reproduce it (also in `seed-N.json` beside it).
#[derive(serde::Serialize)]
struct GeneratedJson {
    png: PathBuf,
    seconds: f64,
    settings: hfsky::generate::settings::ImageSettings,
}
