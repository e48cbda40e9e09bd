//! Prompt → UNet conditioning, as StableDiffusionPipeline / StableDiffusionXLPipeline build it.

use super::pipeline::{GenerateError, LoraMode};
use super::sampling::{sdxl_time_ids, Conditioning};
use crate::diffusion::clip_tokenizer::ClipTokenizer;
use crate::diffusion::config::{Architecture, PipelineFiles};
use crate::diffusion::lora::LoraWeights;
use crate::diffusion::nn::Adapters;
use crate::diffusion::text_encoder::{concat_last, load, ClipTextModel};
use candle_core::{DType, Device, Tensor};

pub struct TextEncoders {
    architecture: Architecture,
    encoders: Vec<(ClipTokenizer, ClipTextModel)>,
    /// SDXL: an empty negative prompt means zero embeddings (model_index `force_zeros_for_empty_prompt`).
    force_zeros_for_empty_prompt: bool,
    pub adapters: Vec<Adapters>,
    /// The component name of each encoder (`text_encoder`, `text_encoder_2`), as LoRA files key them.
    components: Vec<&'static str>,
    device: Device,
}

fn model_err(e: impl std::fmt::Display) -> GenerateError {
    GenerateError::Model(e.to_string())
}

impl TextEncoders {
    pub fn load(files: &PipelineFiles, dtype: DType, device: &Device) -> Result<Self, GenerateError> {
        let pairs: &[(&str, &'static str)] = match files.architecture {
            Architecture::StableDiffusion => &[("tokenizer", "text_encoder")],
            Architecture::StableDiffusionXl => &[("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")],
        };
        let mut encoders = Vec::new();
        let mut adapters = Vec::new();
        for (tok, enc) in pairs {
            let tokenizer = ClipTokenizer::from_dir(&files.component(tok)?)?;
            let a = Adapters::new();
            let variant = super::pipeline::variant_for(dtype);
            let model = load(&files.component(enc)?, &files.weights(enc, variant)?.files, dtype, device, &a)?;
            encoders.push((tokenizer, model));
            adapters.push(a);
        }
        let index: serde_json::Value = crate::diffusion::config::read_json(&files.root.join("model_index.json"))?;
        Ok(TextEncoders {
            architecture: files.architecture,
            encoders,
            force_zeros_for_empty_prompt: index["force_zeros_for_empty_prompt"].as_bool().unwrap_or(true),
            adapters,
            components: pairs.iter().map(|(_, enc)| *enc).collect(),
            device: device.clone(),
        })
    }

    /// The component name of each encoder (`text_encoder`, and `text_encoder_2` for SDXL), in
    /// the order of [`TextEncoders::adapters`].
    pub fn components(&self) -> &[&'static str] {
        &self.components
    }

    /// Applies a LoRA's text-encoder parts (if any) at `scale`; returns how many modules changed.
    pub fn install_lora(&self, lora: &LoraWeights, scale: f64, mode: LoraMode) -> Result<usize, GenerateError> {
        let mut n = 0;
        for (comp, adapters) in self.components.iter().zip(&self.adapters) {
            n += match mode {
                LoraMode::Live => lora.apply(comp, adapters, scale)?,
                LoraMode::Fused => lora.fuse(comp, adapters, scale)?,
            };
        }
        Ok(n)
    }

    /// (sequence embeddings [1, 77, D], pooled [1, P] for SDXL).
    pub fn encode(&self, text: &str) -> Result<(Tensor, Option<Tensor>), GenerateError> {
        let mut seqs = Vec::new();
        let mut pooled = None;
        for (tok, model) in &self.encoders {
            let ids = tok.encode(text).map_err(GenerateError::Model)?;
            let ids = Tensor::new(ids.as_slice(), &self.device).and_then(|t| t.unsqueeze(0)).map_err(model_err)?;
            let out = model.forward(&ids).map_err(model_err)?;
            match self.architecture {
                Architecture::StableDiffusion => seqs.push(out.last_hidden_state),
                Architecture::StableDiffusionXl => {
                    seqs.push(out.penultimate);
                    pooled = out.text_embeds.or(pooled);
                }
            }
        }
        let seq = if seqs.len() == 2 { concat_last(&seqs[0], &seqs[1]).map_err(model_err)? } else { seqs.remove(0) };
        Ok((seq, pooled))
    }

    pub fn conditioning(&self, prompt: &str, negative: &str, height: usize, width: usize) -> Result<Conditioning, GenerateError> {
        let (positive, pooled) = self.encode(prompt)?;
        let xl = self.architecture == Architecture::StableDiffusionXl;
        let (negative_seq, negative_pooled) = if xl && negative.is_empty() && self.force_zeros_for_empty_prompt {
            (positive.zeros_like().map_err(model_err)?, pooled.as_ref().map(|p| p.zeros_like()).transpose().map_err(model_err)?)
        } else {
            self.encode(negative)?
        };
        Ok(Conditioning {
            negative: negative_seq,
            positive,
            pooled: match (negative_pooled, pooled) {
                (Some(n), Some(p)) => Some((n, p)),
                _ => None,
            },
            time_ids: if xl { Some(sdxl_time_ids(height, width, &self.device).map_err(model_err)?) } else { None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::rel_error;
    use crate::diffusion::testing::{pipeline_dir, reference};
    use crate::generate::sampling::Conditioning;

    #[test]
    fn prompt_embeddings_match_the_pipelines() {
        for name in ["tiny-sd15", "tiny-sdxl"] {
            let files = PipelineFiles::open(&pipeline_dir(name)).unwrap();
            let te = TextEncoders::load(&files, DType::F32, &Device::Cpu).unwrap();
            let c = te.conditioning("a photo of the SKY river", "blurry, low quality", 64, 64).unwrap();
            let r = reference(name);
            assert!(rel_error(&c.positive, &r["prompt_embeds"]).unwrap() < 1e-4, "{name}");
            assert!(rel_error(&c.negative, &r["negative_prompt_embeds"]).unwrap() < 1e-4, "{name}");
            if name == "tiny-sdxl" {
                let (n, p) = c.pooled.unwrap();
                assert!(rel_error(&p, &r["pooled_prompt_embeds"]).unwrap() < 1e-4);
                assert!(rel_error(&n, &r["negative_pooled_prompt_embeds"]).unwrap() < 1e-4);
                assert!(rel_error(c.time_ids.as_ref().unwrap(), &r["add_time_ids"]).unwrap() < 1e-6);
                let z = te.conditioning("x", "", 64, 64).unwrap();
                assert_eq!(z.negative.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
            }
        }
    }

    /// A text-encoder LoRA saved and loaded by real diffusers/peft (tests/fixtures/make_te_lora.py):
    /// live at scale 1.0 and 0.5, and fused at 0.5, give diffusers' prompt embeddings.
    #[test]
    fn text_encoder_lora_matches_diffusers() {
        use crate::diffusion::testing::fixtures_dir;
        for name in ["tiny-sd15", "tiny-sdxl"] {
            let files = PipelineFiles::open(&pipeline_dir(name)).unwrap();
            let lora = LoraWeights::load(&fixtures_dir().join(format!("{name}-te-lora/pytorch_lora_weights.safetensors"))).unwrap();
            let r = reference(&format!("{name}-te-lora"));
            let xl = name == "tiny-sdxl";
            let check = |c: &Conditioning, embeds: &str, pooled: &str| {
                let e = rel_error(&c.positive, &r[embeds]).unwrap();
                assert!(e < 1e-4, "{name} {embeds}: rel error {e:e}");
                if xl {
                    let e = rel_error(&c.pooled.as_ref().unwrap().1, &r[pooled]).unwrap();
                    assert!(e < 1e-4, "{name} {pooled}: rel error {e:e}");
                }
            };
            let te = TextEncoders::load(&files, DType::F32, &Device::Cpu).unwrap();
            let base = te.conditioning("a photo of the SKY river", "blurry, low quality", 64, 64).unwrap();
            assert!(rel_error(&base.positive, &r["prompt_embeds"]).unwrap() > 1e-2, "{name}: the fixture LoRA changes the embeddings");
            assert_eq!(te.install_lora(&lora, 1.0, LoraMode::Live).unwrap(), if xl { 16 } else { 8 });
            let c = te.conditioning("a photo of the SKY river", "blurry, low quality", 64, 64).unwrap();
            check(&c, "prompt_embeds", "pooled_prompt_embeds");
            assert!(rel_error(&c.negative, &r["negative_prompt_embeds"]).unwrap() < 1e-4);
            if xl {
                assert!(rel_error(&c.pooled.as_ref().unwrap().0, &r["negative_pooled_prompt_embeds"]).unwrap() < 1e-4);
            }
            for a in &te.adapters {
                a.clear();
            }
            te.install_lora(&lora, 0.5, LoraMode::Live).unwrap();
            check(&te.conditioning("a photo of the SKY river", "", 64, 64).unwrap(), "prompt_embeds_scale_0.5", "pooled_prompt_embeds_scale_0.5");
            let fused = TextEncoders::load(&files, DType::F32, &Device::Cpu).unwrap();
            fused.install_lora(&lora, 0.5, LoraMode::Fused).unwrap();
            check(&fused.conditioning("a photo of the SKY river", "", 64, 64).unwrap(), "fused.prompt_embeds", "fused.pooled_prompt_embeds");
        }
    }
}
