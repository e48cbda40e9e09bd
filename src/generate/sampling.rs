//! The denoising loop of diffusers' StableDiffusion(XL)Pipeline: classifier-free guidance with the
//! negative prompt first in the batch, scheduler input scaling, one step per timestep.

use crate::diffusion::schedulers::Scheduler;
use candle_core::{Result, Tensor};

/// What the UNet is conditioned on, for the negative (uncond) and positive prompt.
#[derive(Debug, Clone)]
pub struct Conditioning {
    pub negative: Tensor,
    pub positive: Tensor,
    /// SDXL: pooled text embeds (negative, positive), each [1, P].
    pub pooled: Option<(Tensor, Tensor)>,
    /// SDXL: add_time_ids [1, 6] (original size, crop top-left, target size).
    pub time_ids: Option<Tensor>,
}

/// SDXL's `add_time_ids` for an image of `height`×`width` with no crop, as the pipeline builds them.
pub fn sdxl_time_ids(height: usize, width: usize, device: &candle_core::Device) -> Result<Tensor> {
    Tensor::new(&[[height as f32, width as f32, 0.0, 0.0, height as f32, width as f32]], device)
}

/// The UNet as the loop needs it: (latents, timesteps [B], text [B,77,D], pooled [B,P], time ids [B,6]).
pub type UnetFn<'a> = dyn FnMut(&Tensor, &Tensor, &Tensor, Option<(&Tensor, &Tensor)>) -> Result<Tensor> + 'a;

/// Runs the whole schedule from unit-variance noise `noise` ([1,C,h,w]); returns final latents.
pub fn denoise(
    unet: &mut UnetFn<'_>,
    scheduler: &mut dyn Scheduler,
    noise: &Tensor,
    cond: &Conditioning,
    guidance: f64,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Tensor> {
    let do_cfg = guidance > 1.0;
    let context = if do_cfg { Tensor::cat(&[&cond.negative, &cond.positive], 0)? } else { cond.positive.clone() };
    let pooled = match &cond.pooled {
        Some((n, p)) if do_cfg => Some(Tensor::cat(&[n, p], 0)?),
        Some((_, p)) => Some(p.clone()),
        None => None,
    };
    let time_ids = match &cond.time_ids {
        Some(t) if do_cfg => Some(Tensor::cat(&[t, t], 0)?),
        Some(t) => Some(t.clone()),
        None => None,
    };
    let added = match (&pooled, &time_ids) {
        (Some(p), Some(t)) => Some((p, t)),
        _ => None,
    };
    let mut latents = noise.affine(scheduler.init_noise_sigma(), 0.0)?;
    let timesteps = scheduler.timesteps().to_vec();
    for (i, t) in timesteps.iter().enumerate() {
        let input = scheduler.scale_model_input(&latents, i)?;
        let input = if do_cfg { Tensor::cat(&[&input, &input], 0)? } else { input };
        let batch = input.dim(0)?;
        let ts = Tensor::full(*t as f32, batch, input.device())?;
        let pred = unet(&input, &ts, &context, added)?;
        let pred = if do_cfg {
            let uncond = pred.narrow(0, 0, 1)?;
            let text = pred.narrow(0, 1, 1)?;
            (&uncond + ((text - &uncond)? * guidance)?)?
        } else {
            pred
        };
        latents = scheduler.step(&pred, i, &latents)?;
        on_step(i + 1, timesteps.len());
    }
    Ok(latents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::noise::{NoiseKind, NoiseStream};
    use crate::diffusion::schedulers::{build, SchedulerConfig, SchedulerKind};
    use candle_core::{DType, Device};

    #[test]
    fn guidance_batches_negative_first_and_visits_every_timestep() {
        let dev = Device::Cpu;
        let cfg: SchedulerConfig =
            serde_json::from_value(crate::diffusion::testing::reference_json("tiny-sd15")["sample.ddim"]["config"].clone()).unwrap();
        let mut sched = build(Some(SchedulerKind::Ddim), &cfg, 4, NoiseStream::new(NoiseKind::TorchCpu, 0)).unwrap();
        let cond = Conditioning {
            negative: Tensor::zeros((1, 3, 2), DType::F32, &dev).unwrap(),
            positive: Tensor::ones((1, 3, 2), DType::F32, &dev).unwrap(),
            pooled: None,
            time_ids: None,
        };
        let mut seen = Vec::new();
        // A fake UNet predicting the mean of its context: 0 for the negative half, 1 for the positive.
        let mut unet = |x: &Tensor, t: &Tensor, ctx: &Tensor, _a: Option<(&Tensor, &Tensor)>| -> Result<Tensor> {
            seen.push(t.to_vec1::<f32>()?[0]);
            assert_eq!(x.dim(0)?, 2);
            let m = ctx.mean_keepdim(1)?.mean_keepdim(2)?.unsqueeze(3)?;
            m.broadcast_as(x.shape())?.contiguous()
        };
        let noise = Tensor::zeros((1, 4, 2, 2), DType::F32, &dev).unwrap();
        let mut steps = 0;
        let out = denoise(&mut unet, sched.as_mut(), &noise, &cond, 5.0, |_, _| steps += 1).unwrap();
        assert_eq!(seen, vec![751.0, 501.0, 251.0, 1.0]);
        assert_eq!(steps, 4);
        // Guided ε = 0 + 5·(1 − 0) = 5 at every step; DDIM from x=0 stays finite and negative.
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite() && *x < 0.0), "{v:?}");
    }
}

/// Whole sampling runs against diffusers: the fixtures' prompt embeddings and initial noise
/// through our UNet, each scheduler and our VAE must give diffusers' image.
#[cfg(test)]
mod parity {
    use super::*;
    use crate::diffusion::autoencoder::{AutoencoderKl, VaeConfig};
    use crate::diffusion::lora::LoraWeights;
    use crate::diffusion::nn::{rel_error, Adapters};
    use crate::diffusion::schedulers::{build, SchedulerConfig};
    use crate::diffusion::testing::{fixtures_dir, pipeline_dir, reference, reference_json};
    use crate::diffusion::unet::{SdxlConditioning, UNet2DConditionModel, UNetConfig};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn vb(path: std::path::PathBuf) -> VarBuilder<'static> {
        unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }.unwrap()
    }

    fn run(name: &str) {
        let dir = pipeline_dir(name);
        let adapters = Adapters::new();
        let ucfg = UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
        let unet = UNet2DConditionModel::new(vb(dir.join("unet/diffusion_pytorch_model.safetensors")), &ucfg, &adapters).unwrap();
        let vcfg = VaeConfig::from_file(&dir.join("vae/config.json")).unwrap();
        let vae = AutoencoderKl::new(vb(dir.join("vae/diffusion_pytorch_model.safetensors")), &vcfg).unwrap();
        let lora = LoraWeights::load(&fixtures_dir().join(format!("{name}-lora/pytorch_lora_weights.safetensors"))).unwrap();
        let r = reference(name);
        let j = reference_json(name);
        let xl = ucfg.has_text_time();
        let cond = Conditioning {
            negative: r["negative_prompt_embeds"].clone(),
            positive: r["prompt_embeds"].clone(),
            pooled: xl.then(|| (r["negative_pooled_prompt_embeds"].clone(), r["pooled_prompt_embeds"].clone())),
            time_ids: xl.then(|| r["add_time_ids"].clone()),
        };
        for kind in ["ddim", "euler", "dpmpp_2m", "ddim_lora", "euler_lora", "dpmpp_2m_lora"] {
            adapters.clear();
            if kind.ends_with("_lora") {
                lora.apply("unet", &adapters, 1.0).unwrap();
            }
            let key = format!("sample.{kind}");
            let cfg: SchedulerConfig = serde_json::from_value(j[&key]["config"].clone()).unwrap();
            let steps = j[&key]["steps"].as_u64().unwrap() as usize;
            let guidance = j[&key]["guidance_scale"].as_f64().unwrap();
            let mut sched =
                build(None, &cfg, steps, crate::diffusion::noise::NoiseStream::new(crate::diffusion::noise::NoiseKind::TorchCpu, 0)).unwrap();
            let mut f = |x: &Tensor, t: &Tensor, c: &Tensor, a: Option<(&Tensor, &Tensor)>| {
                let added = a.map(|(p, ids)| SdxlConditioning { text_embeds: p.clone(), time_ids: ids.clone() });
                unet.forward(x, t, c, added.as_ref())
            };
            let latents = denoise(&mut f, sched.as_mut(), &r["sample.init_latents"], &cond, guidance, |_, _| {}).unwrap();
            let image = vae.latents_to_image(&latents).unwrap();
            let want = &r[&format!("{key}.image")];
            let err = rel_error(&image, want).unwrap();
            let mean_abs = (&image - want).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() * 255.0;
            assert!(err < 1e-4, "{name} {kind}: rel error {err:e}, mean |Δ| {mean_abs:.4}/255");
        }
    }

    #[test]
    fn sd15_runs_match_diffusers() {
        run("tiny-sd15");
    }

    #[test]
    fn sdxl_runs_match_diffusers() {
        run("tiny-sdxl");
    }
}
