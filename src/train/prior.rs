//! Prior preservation: class images (e.g. "a photo of the sky") trained alongside the instance
//! photos so the class keeps its general meaning. Missing class images are generated with the
//! base model before any LoRA is attached, as diffusers' DreamBooth scripts do.

use super::config::TrainConfig;
use super::examples::{crop_at, file_sha, pick_offset, LatentCache};
use super::trainer::{Event, Example, Prompts, TrainError};
use crate::dataset;
use crate::generate::pipeline::{to_rgb8, Pipeline};
use crate::generate::prompts::TextEncoders;
use candle_core::Device;

/// Steps used to render missing class images.
const CLASS_IMAGE_STEPS: usize = 25;

#[allow(clippy::too_many_arguments)]
pub(super) fn class_examples(
    cfg: &TrainConfig,
    pipeline: &Pipeline,
    text: &TextEncoders,
    res: usize,
    prompts: &mut Prompts,
    cache: &mut LatentCache,
    device: &Device,
    on: &mut dyn FnMut(Event),
) -> Result<Vec<Example>, TrainError> {
    let dir = cfg.class_data_dir.as_ref().expect("checked by the config");
    let class_prompt = cfg.class_prompt.clone().unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io { path: dir.clone(), detail: e.to_string() })?;
    let have = dataset::list_images(dir).unwrap_or_default();
    if have.len() < cfg.num_class_images {
        let missing = cfg.num_class_images - have.len();
        on(Event::Note(format!("generating {missing} class image(s) for {class_prompt:?} in {}", dir.display())));
        let xl = pipeline.files.architecture == crate::diffusion::config::Architecture::StableDiffusionXl;
        let cond = text.conditioning(&class_prompt, "", res, res)?;
        for i in 0..missing {
            let seed = cfg.seed.wrapping_add(10_000 + (have.len() + i) as u64);
            let noise = crate::generate::settings::seeded_noise(seed, pipeline.latent_shape(res, res), device)?;
            let img = pipeline.generate(
                &cond,
                &noise,
                None,
                CLASS_IMAGE_STEPS,
                if xl { 5.0 } else { 7.5 },
                crate::diffusion::noise::NoiseStream::new(crate::diffusion::noise::NoiseKind::Hfsky, seed),
                |_, _| {},
            )?;
            let (w, h, px) = to_rgb8(&img)?;
            let path = dir.join(format!("class-{:04}.png", have.len() + i));
            let meta = vec![("hfsky:prompt".to_string(), class_prompt.clone()), ("hfsky:seed".to_string(), seed.to_string())];
            crate::generate::png_out::write_png(&path, w, h, &px, &meta).map_err(|e| TrainError::Io { path: path.clone(), detail: e.to_string() })?;
        }
    }
    let prompt = prompts.index(text, &class_prompt)?;
    let mut out = Vec::new();
    for path in dataset::list_images(dir).map_err(|e| TrainError::Input(e.to_string()))?.into_iter().take(cfg.num_class_images) {
        let img = match dataset::images::load_rgb(&path) {
            Ok(i) => i,
            Err(p) => {
                on(Event::Skipped { file: path.clone(), reason: p.to_string() });
                continue;
            }
        };
        let (w, h) = img.rgb.dimensions();
        let offset = pick_offset(w, h, res as u32, true, &mut super::objective::step_rng(0, 0, 0));
        let (crop, b) = crop_at(&img.rgb, res as u32, offset, false);
        let lat = cache.get_or_encode(pipeline.vae()?, &file_sha(&path)?, &b, &crop, device)?;
        out.push(Example { variants: vec![(lat, b, None)], prompt });
    }
    if out.is_empty() {
        return Err(TrainError::Input(format!("class_data_dir: {} holds no usable class images", dir.display())));
    }
    Ok(out)
}
