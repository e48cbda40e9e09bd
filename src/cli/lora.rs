//! `hfsky lora`: LoRA files between the layouts clients read.

use super::{bad_input, Ctx};
use hfsky::diffusion::lora::export::{BaseLayout, ExportFormat};
use hfsky::diffusion::lora::LoraWeights;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Rewrite a LoRA (PEFT, diffusers, kohya, LyCORIS) as PEFT/diffusers, kohya or ComfyUI keys
    Convert(ConvertArgs),
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The LoRA: a .safetensors file, or a folder holding pytorch_lora_weights.safetensors
    input: PathBuf,
    /// Layout to write: peft (diffusers' load_lora_weights, the Hub), kohya (A1111/Forge,
    /// kohya sd-scripts), comfyui (ComfyUI's LoRA loader; the kohya layout)
    #[arg(long = "to", value_enum)]
    to: ExportFormat,
    /// Output .safetensors file
    #[arg(long)]
    out: PathBuf,
    /// The base model family, for SDXL's SGM block names and text-encoder prefixes; guessed
    /// from the LoRA when omitted
    #[arg(long, value_enum, conflicts_with = "model")]
    base: Option<Base>,
    /// A local diffusers pipeline folder whose unet/config.json gives the block layout (for
    /// non-standard UNets)
    #[arg(long)]
    model: Option<PathBuf>,
}

/// The base model family a LoRA's keys are laid out for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Base {
    Sd15,
    Sdxl,
}

/// The `--json` document of `lora convert`.
#[derive(serde::Serialize)]
struct ConvertJson<'a> {
    input: &'a Path,
    /// How the input named its keys (`peft`, `diffusers`, `diffusers_old`, `kohya`).
    input_format: hfsky::diffusion::lora::LoraFormat,
    to: ExportFormat,
    out: &'a Path,
    modules: usize,
    tensors: usize,
    sdxl: bool,
}

fn lora_file(input: &Path) -> PathBuf {
    if input.is_dir() {
        input.join(hfsky::names::LORA_WEIGHTS)
    } else {
        input.to_path_buf()
    }
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let Cmd::Convert(a) = cmd;
    let file = lora_file(&a.input);
    let lora = LoraWeights::load(&file)?;
    let base = match (a.base, &a.model) {
        (Some(Base::Sdxl), _) => BaseLayout::sdxl(),
        (Some(Base::Sd15), _) => BaseLayout::sd15(),
        (None, Some(dir)) => {
            let cfg = hfsky::diffusion::unet::UNetConfig::from_file(&dir.join("unet/config.json"))?;
            BaseLayout::from_unet_config(&cfg)
        }
        (None, None) => BaseLayout::guess(&lora).ok_or_else(|| {
            bad_input(format!("{}: cannot tell whether this LoRA is for SD 1.x or SDXL; pass --base sd15|sdxl (or --model DIR)", file.display()))
        })?,
    };
    let n = lora.export_to(a.to, &base, &a.out)?;
    let modules: usize = lora.components.values().map(|m| m.len()).sum();
    if ctx.json {
        ctx.emit_json(&ConvertJson { input: &file, input_format: lora.format, to: a.to, out: &a.out, modules, tensors: n, sdxl: base.sdxl });
    } else if !ctx.quiet {
        println!("{} ({} LoRA, {modules} modules) → {} ({}, {n} tensors)", file.display(), lora.format, a.out.display(), a.to);
    }
    Ok(())
}
