//! The offline Hub's inference renderer: hfsky's engine (`generate::render`) behind the Hub
//! module's `InferenceRenderer` trait, fusing the LoRA as the Hub's worker does.

use candle_core::DType;
use hfsky::diffusion::schedulers::SchedulerKind;
use hfsky::generate::pipeline::LoraMode;
use hfsky::generate::render::{ModelPaths, RenderSpec, Renderer};
use hfsky::generate::settings::check_size;
use hfsky::generate::source::lora_file;
use hfsky::hub::inference::SchedulerKeys;
use hfsky::hub::serve::{InferenceRenderer, RenderDtype, RenderFailure, RenderJob, RenderProfile, RenderedPng};
use hfsky::model_ref::ModelRef;
use std::sync::Mutex;

fn candle_dtype(d: RenderDtype) -> DType {
    match d {
        RenderDtype::F32 => DType::F32,
        RenderDtype::F16 => DType::F16,
        RenderDtype::Bf16 => DType::BF16,
    }
}

pub struct EngineRenderer {
    device: candle_core::Device,
    // The last pipeline loaded: the seeds of one comparison share their spec.
    loaded: Mutex<Option<Renderer>>,
}

impl EngineRenderer {
    pub fn new() -> EngineRenderer {
        EngineRenderer { device: Renderer::default_device(), loaded: Mutex::new(None) }
    }

    /// The job's spec and its files: the offline Hub's own snapshot folders, nothing to fetch.
    fn spec(job: &RenderJob) -> Result<(RenderSpec, ModelPaths), String> {
        let lora_file = job.lora_path.as_deref().map(|p| lora_file(p, &p.display().to_string())).transpose().map_err(|e| e.to_string())?;
        let paths = ModelPaths { model_dir: job.base_dir.clone(), vae_dir: None, lora_file };
        let spec = RenderSpec {
            model: ModelRef::Local(job.base_dir.clone()),
            lora: job.lora_path.clone().map(ModelRef::Local),
            lora_scale: job.lora_scale,
            lora_mode: LoraMode::Fused,
            prompt: job.prompt.clone(),
            negative: job.negative.clone(),
            steps: job.steps,
            guidance: job.guidance,
            scheduler: Some(SchedulerKind::from_name(&job.scheduler)?),
            scheduler_config: job.scheduler_config.clone(),
            width: job.width,
            height: job.height,
            dtype: candle_dtype(job.dtype),
            vae: None,
            // The worker seeds `torch.Generator()` on the CPU (hub-render.md).
            noise: hfsky::diffusion::noise::NoiseKind::TorchCpu,
        };
        Ok((spec, paths))
    }
}

fn png_bytes(width: u32, height: u32, rgb: Vec<u8>) -> Result<Vec<u8>, String> {
    let img = image::RgbImage::from_raw(width, height, rgb).ok_or("the rendered buffer does not match its size")?;
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(out)
}

impl InferenceRenderer for EngineRenderer {
    fn check(&self, p: &RenderProfile) -> Result<(), String> {
        if p.dtype == RenderDtype::Bf16 && self.device.is_cpu() {
            return Err("dtype bf16 needs a CUDA GPU (build with --features cuda); use f16 or f32".into());
        }
        if let (Some(w), Some(h)) = (p.width, p.height) {
            check_size(w, h).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn render(&self, job: &RenderJob) -> Result<RenderedPng, RenderFailure> {
        let (spec, paths) = EngineRenderer::spec(job).map_err(|message| RenderFailure { bad_request: true, message })?;
        let failed = |e: hfsky::generate::render::RenderError| RenderFailure { bad_request: e.is_bad_input(), message: e.to_string() };
        let mut slot = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|r| r.spec() != &spec) {
            // Free the previous pipeline before loading the next one.
            *slot = None;
            *slot = Some(Renderer::load(&spec, &paths, self.device.clone()).map_err(failed)?);
        }
        let renderer = slot.as_ref().expect("loaded above");
        let image = renderer.render(job.seed, |_| {}).map_err(failed)?;
        let png = png_bytes(image.width, image.height, image.rgb).map_err(|message| RenderFailure { bad_request: false, message })?;
        let s = renderer.settings();
        let keys = SchedulerKeys { use_karras_sigmas: s.karras_sigmas, timestep_spacing: s.timestep_spacing.clone(), steps_offset: s.steps_offset };
        Ok(RenderedPng { png, report: job.report(&s.scheduler, s.guidance, s.width, s.height, Some(keys)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedulers_are_named_either_way() {
        assert_eq!(SchedulerKind::from_name("euler-ancestral").unwrap(), SchedulerKind::EulerAncestral);
        assert_eq!(SchedulerKind::from_name("DPMSolverMultistepScheduler").unwrap(), SchedulerKind::Dpmpp2m);
        assert!(SchedulerKind::from_name("LMSDiscreteScheduler").unwrap_err().contains("LMSDiscreteScheduler"));
    }
}
