//! The hfsky half of benches/checkpointing_bench.sh (not a test): LoRA training steps of a UNet
//! with the real SD 1.5 / SDXL layout (channels divided by SCALE) and random weights, dense or
//! with gradient checkpointing. Prints one JSON object: seconds per step and peak memory.
//!
//!   checkpointing_bench ARCH SCALE RES BATCH STEPS MODE [DEVICE]
//!       ARCH sd15|sdxl; RES in pixels (latents RES/8); MODE dense|checkpointed; DEVICE cpu|cuda
//!
//! CPU memory: peak RSS (VmHWM) reset after the model is built (`/proc/self/clear_refs` = 5), so
//! the number is what the steps themselves added: activations, gradients, optimizer state. Run
//! each mode in its own process (the script does). GPU memory is sampled by the script.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use hfsky::diffusion::nn::Adapters;
use hfsky::diffusion::unet::{SdxlConditioning, UNet2DConditionModel, UNetConfig};
use hfsky::train::lora_params::TrainableLora;
use hfsky::train::objective::{normal, step_rng, weighted_mse};
use hfsky::train::optim::AdamW;
use std::time::Instant;

/// Random weights for any requested tensor: matrices and kernels N(0, 1/fan_in), norm scales 1,
/// biases 0 — values that keep activations in range, so timings are those of a real model.
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let dims = s.dims();
        let t = if dims.len() >= 2 {
            // Seeded by the tensor's name: both modes (separate processes) train the same model.
            let fan_in: usize = dims[1..].iter().product();
            let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
            (normal(&mut step_rng(seed, 0, 0), dims, &Device::Cpu)? * (1.0 / fan_in as f64).sqrt())?.to_device(dev)?
        } else if name.ends_with("weight") {
            Tensor::ones(s, DType::F32, dev)?
        } else {
            Tensor::zeros(s, DType::F32, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: random weights need a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The unet/config.json of runwayml/stable-diffusion-v1-5 / stabilityai/stable-diffusion-xl-base-1.0,
/// channels divided by `scale`.
fn config(arch: &str, scale: usize) -> Result<UNetConfig> {
    let ch = |c: usize| c / scale;
    let json = match arch {
        "sd15" => serde_json::json!({
            "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "block_out_channels": [ch(320), ch(640), ch(1280), ch(1280)],
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32 / scale.min(32), "sample_size": 64
        }),
        "sdxl" => serde_json::json!({
            "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "block_out_channels": [ch(320), ch(640), ch(1280)],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048,
            "use_linear_projection": true, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32 / scale.min(32), "sample_size": 128
        }),
        other => bail!("ARCH must be sd15 or sdxl, not {other}"),
    };
    UNetConfig::from_json(&json.to_string()).map_err(anyhow::Error::msg)
}

fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.len() < 6 {
        bail!("usage: checkpointing_bench ARCH SCALE RES BATCH STEPS dense|checkpointed [cpu|cuda]");
    }
    let n = |i: usize| -> Result<usize> { args[i].parse().with_context(|| format!("{}: not a number", args[i])) };
    let (arch, scale, res, batch, steps) = (args[0].as_str(), n(1)?, n(2)?, n(3)?, n(4)?);
    let checkpointing = match args[5].as_str() {
        "dense" => false,
        "checkpointed" => true,
        other => bail!("MODE must be dense or checkpointed, not {other}"),
    };
    let device = match args.get(6).map(String::as_str).unwrap_or("cpu") {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        other => bail!("DEVICE must be cpu or cuda, not {other}"),
    };
    let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
    let cfg = config(arch, scale)?;
    let adapters = Adapters::new();
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone());
    let mut unet = UNet2DConditionModel::new(vb, &cfg, &adapters)?;
    unet.set_gradient_checkpointing(checkpointing);
    let targets: Vec<String> = ["to_q", "to_k", "to_v", "to_out.0"].iter().map(|s| s.to_string()).collect();
    let lora = TrainableLora::new("unet", &adapters, &adapters.shapes(), &targets, 4, 4.0, 0, &device)?;
    let vars = lora.vars();
    let mut opt = AdamW::new(&vars, 0.9, 0.999, 1e-8, 1e-2)?;

    let h = res / 8;
    let randn = |stream: u64, shape: &[usize]| normal(&mut step_rng(1, 1, stream), shape, &device);
    let sample = randn(1, &[batch, 4, h, h])?;
    let target = randn(2, &[batch, 4, h, h])?;
    let context_dim = if arch == "sdxl" { 2048 } else { 768 };
    let context = randn(3, &[batch, 77, context_dim])?;
    let added = (arch == "sdxl").then(|| -> Result<SdxlConditioning> {
        let ids: Vec<f32> = (0..batch).flat_map(|_| [res as f32, res as f32, 0.0, 0.0, res as f32, res as f32]).collect();
        Ok(SdxlConditioning { text_embeds: randn(4, &[batch, 1280])?, time_ids: Tensor::from_vec(ids, (batch, 6), &device)? })
    });
    let added = added.transpose()?;
    let timesteps = Tensor::from_vec(vec![500f32; batch], batch, &device)?;
    let weights = Tensor::ones(batch, DType::F32, &device)?;

    // Only what the steps add counts: the weights are the same in both modes.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base_kib = rss_kib("VmRSS:").unwrap_or(0);
    let mut times = Vec::new();
    let mut loss_value = 0f32;
    for _ in 0..steps {
        let t = Instant::now();
        let pred = unet.forward(&sample, &timesteps, &context, added.as_ref())?;
        let loss = weighted_mse(&pred, &target, &weights)?;
        device.synchronize()?;
        let forward_s = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        device.synchronize()?;
        eprintln!("forward {forward_s:.2} s, backward {:.2} s", t.elapsed().as_secs_f64() - forward_s);
        let g: Vec<Option<Tensor>> = vars.iter().map(|v| grads.get(v.as_tensor()).cloned()).collect();
        opt.step(&vars, &g, 1e-4)?;
        loss_value = loss.to_scalar::<f32>()?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    // The first step pays for first-touch allocations; the rest are the steady state.
    let steady = if times.len() > 1 { &times[1..] } else { &times[..] };
    let step_s = steady.iter().sum::<f64>() / steady.len() as f64;
    let peak_kib = rss_kib("VmHWM:").unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "arch": arch, "scale": scale, "res": res, "batch": batch, "mode": args[5], "device": if device.is_cpu() { "cpu" } else { "cuda" },
            "step_s": step_s, "loss": loss_value,
            "rss_before_steps_mib": base_kib as f64 / 1024.0,
            "peak_rss_added_mib": peak_kib.saturating_sub(base_kib) as f64 / 1024.0,
            "lora_params": lora.num_params(),
        })
    );
    Ok(())
}
