//! The trainable LoRA factors: one (A, B) pair of f32 `Var`s per target linear, attached to the
//! network's adapter registry so every forward uses them, and saved the way diffusers'
//! `save_lora_weights` writes a PEFT LoRA (`unet.<module>.lora_A.weight`, alpha in the metadata).

use crate::diffusion::nn::{Adapter, Adapters};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LoraParamsError {
    #[error("target_modules {targets:?} match no linear layer of the {component}; layers look like {examples}")]
    NoTargets { component: String, targets: Vec<String>, examples: String },
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{}: {detail}", .path.display())]
    File { path: std::path::PathBuf, detail: String },
}

/// One adapted layer: A [r, in] and B [out, r]; with DoRA also the magnitude m [out].
pub struct LoraPair {
    pub down: Var,
    pub up: Var,
    pub magnitude: Option<Var>,
}

pub struct TrainableLora {
    pub component: String,
    pub rank: usize,
    pub alpha: f64,
    pub target_modules: Vec<String>,
    /// Module path → factors, in a stable (sorted) order.
    pub modules: BTreeMap<String, LoraPair>,
}

/// PEFT's rule: a target names a module path exactly or as its last dotted components.
pub(crate) fn matches_target(module: &str, target: &str) -> bool {
    module == target || module.ends_with(&format!(".{target}"))
}

impl TrainableLora {
    /// Creates factors for every linear in `adapters` that a target names, initialised like PEFT
    /// (A: kaiming-uniform with a = √5, i.e. U(±1/√in); B: zeros, so training starts at the base
    /// model), from `seed`; attaches them at scale alpha/rank.
    #[expect(clippy::too_many_arguments, reason = "PEFT's LoraConfig fields, each named at every call site")]
    pub fn new(
        component: &str,
        adapters: &Adapters,
        shapes: &BTreeMap<String, (usize, usize)>,
        targets: &[String],
        rank: usize,
        alpha: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Self, LoraParamsError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x4c6f5241);
        let mut modules = BTreeMap::new();
        for (name, &(out_dim, in_dim)) in shapes {
            if !targets.iter().any(|t| matches_target(name, t)) {
                continue;
            }
            let bound = 1.0 / (in_dim as f64).sqrt();
            let a: Vec<f32> = (0..rank * in_dim).map(|_| rng.random_range(-bound..bound) as f32).collect();
            let down = Var::from_tensor(&Tensor::from_vec(a, (rank, in_dim), device)?)?;
            let up = Var::from_tensor(&Tensor::zeros((out_dim, rank), DType::F32, device)?)?;
            modules.insert(name.clone(), LoraPair { down, up, magnitude: None });
        }
        if modules.is_empty() {
            let examples = shapes.keys().take(3).cloned().collect::<Vec<_>>().join(", ");
            return Err(LoraParamsError::NoTargets { component: component.into(), targets: targets.to_vec(), examples });
        }
        let lora = TrainableLora { component: component.into(), rank, alpha, target_modules: targets.to_vec(), modules };
        lora.attach(adapters)?;
        Ok(lora)
    }

    /// LoCon: adds factors to the resnet convolutions (`conv1`, `conv2`, `conv_shortcut`) and the
    /// attention projections (`proj_in`, `proj_out`: 1×1 convs in SD 1.x, linears in SDXL), as
    /// kohya's LoCon and PEFT's Conv2d LoRA: A [r, in, k, k] (kaiming-uniform over in·k·k, like
    /// PEFT), B [out, r, 1, 1] zeros; reattaches. Returns how many modules it added.
    pub fn add_locon(&mut self, adapters: &Adapters, seed: u64) -> Result<usize, LoraParamsError> {
        const LOCON: [&str; 5] = ["conv1", "conv2", "conv_shortcut", "proj_in", "proj_out"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x4c6f436f6e);
        let device = self.modules.values().next().map(|p| p.down.device().clone()).unwrap_or(Device::Cpu);
        let mut added = 0;
        for (name, dims) in adapters.weight_shapes() {
            if self.modules.contains_key(&name) || !LOCON.iter().any(|t| matches_target(&name, t)) {
                continue;
            }
            let (down_shape, up_shape) = match dims.as_slice() {
                [out, inp] => (vec![self.rank, *inp], vec![*out, self.rank]),
                [out, inp, k, _] => (vec![self.rank, *inp, *k, *k], vec![*out, self.rank, 1, 1]),
                _ => continue,
            };
            let fan_in: usize = down_shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            let a: Vec<f32> = (0..down_shape.iter().product::<usize>()).map(|_| rng.random_range(-bound..bound) as f32).collect();
            let down = Var::from_tensor(&Tensor::from_vec(a, down_shape, &device)?)?;
            let up = Var::from_tensor(&Tensor::zeros(up_shape, DType::F32, &device)?)?;
            self.modules.insert(name, LoraPair { down, up, magnitude: None });
            added += 1;
        }
        for t in LOCON {
            if !self.target_modules.iter().any(|x| x == t) {
                self.target_modules.push(t.to_string());
            }
        }
        self.attach(adapters)?;
        Ok(added)
    }

    /// Makes every module DoRA as PEFT initialises it (`use_dora=True`): m = ‖W‖ per output row,
    /// so training starts at the base model; reattaches.
    pub fn use_dora(&mut self, adapters: &Adapters) -> Result<(), LoraParamsError> {
        for (name, p) in self.modules.iter_mut() {
            let w = adapters.weight(name).ok_or_else(|| candle_core::Error::msg(format!("{name}: no loaded weight for DoRA's magnitude")))?;
            let norm = w.to_dtype(DType::F32)?.sqr()?.sum(1)?.sqrt()?;
            p.magnitude = Some(Var::from_tensor(&norm.to_device(p.down.device())?)?);
        }
        self.attach(adapters)
    }

    /// Whether the modules are DoRA.
    pub fn is_dora(&self) -> bool {
        self.modules.values().any(|p| p.magnitude.is_some())
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// (Re)attaches the factors; the network then trains them on every forward.
    pub fn attach(&self, adapters: &Adapters) -> Result<(), LoraParamsError> {
        adapters.clear();
        for (name, p) in &self.modules {
            adapters
                .attach(
                    name,
                    Adapter {
                        down: p.down.as_tensor().clone(),
                        up: p.up.as_tensor().clone(),
                        scale: self.scale(),
                        magnitude: p.magnitude.as_ref().map(|m| m.as_tensor().clone()),
                    },
                )
                .map_err(|e| LoraParamsError::Tensor(candle_core::Error::msg(e)))?;
        }
        Ok(())
    }

    /// Every trainable variable, in a stable order (A, B, then m for DoRA, per module).
    pub fn vars(&self) -> Vec<&Var> {
        self.modules.values().flat_map(|p| [Some(&p.down), Some(&p.up), p.magnitude.as_ref()].into_iter().flatten()).collect()
    }

    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// The factors under PEFT names, e.g. `unet.down_blocks.0…to_q.lora_A.weight`.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, p) in &self.modules {
            out.push((format!("{}.{name}.lora_A.weight", self.component), p.down.as_tensor().clone()));
            out.push((format!("{}.{name}.lora_B.weight", self.component), p.up.as_tensor().clone()));
            if let Some(m) = &p.magnitude {
                out.push((format!("{}.{name}.lora_magnitude_vector", self.component), m.as_tensor().clone()));
            }
        }
        out
    }

    /// Replaces the factors' values (resuming from a checkpoint); every module must be present.
    pub fn load_values(&self, tensors: &HashMap<String, Tensor>) -> Result<(), LoraParamsError> {
        for (name, t) in self.named_tensors() {
            let src = tensors.get(&name).ok_or_else(|| candle_core::Error::msg(format!("checkpoint lacks {name}")))?;
            let var = if name.ends_with("lora_A.weight") {
                &self.modules[strip(&name, &self.component, ".lora_A.weight")].down
            } else if name.ends_with(".lora_magnitude_vector") {
                self.modules[strip(&name, &self.component, ".lora_magnitude_vector")].magnitude.as_ref().expect("named only when present")
            } else {
                &self.modules[strip(&name, &self.component, ".lora_B.weight")].up
            };
            if src.dims() != t.dims() {
                return Err(candle_core::Error::msg(format!("checkpoint {name}: shape {:?}, expected {:?}", src.dims(), t.dims())).into());
            }
            var.set(&src.to_dtype(DType::F32)?.to_device(t.device())?)?;
        }
        Ok(())
    }

    /// `pytorch_lora_weights.safetensors` as diffusers writes it: f32 PEFT keys and
    /// `lora_adapter_metadata` so loaders (ours, diffusers) get alpha without guessing.
    pub fn save(&self, path: &Path) -> Result<(), LoraParamsError> {
        save_all(&[self], path)
    }

    /// This component's LoraConfig fields under diffusers' `<component>.<field>` names.
    fn metadata(&self) -> serde_json::Map<String, serde_json::Value> {
        let c = &self.component;
        serde_json::Map::from_iter([
            (format!("{c}.r"), self.rank.into()),
            (format!("{c}.lora_alpha"), self.alpha.into()),
            (format!("{c}.target_modules"), self.target_modules.clone().into()),
            (format!("{c}.init_lora_weights"), true.into()),
            (format!("{c}.use_dora"), self.is_dora().into()),
        ])
    }
}

/// One file holding every component's factors (`unet.…`, `text_encoder.…`, `text_encoder_2.…`)
/// and one `lora_adapter_metadata` with each component's config under its prefix, as diffusers'
/// `save_lora_weights(unet_lora_adapter_metadata=…, text_encoder_lora_adapter_metadata=…)`.
pub fn save_all(loras: &[&TrainableLora], path: &Path) -> Result<(), LoraParamsError> {
    let mut meta = serde_json::Map::new();
    let mut tensors = Vec::new();
    for lora in loras {
        meta.extend(lora.metadata());
        for (n, t) in lora.named_tensors() {
            tensors.push((n, t.to_device(&Device::Cpu)?.contiguous()?));
        }
    }
    let metadata =
        HashMap::from([("format".to_string(), "pt".to_string()), ("lora_adapter_metadata".to_string(), serde_json::Value::Object(meta).to_string())]);
    write_safetensors(path, tensors, Some(metadata))
}

fn strip<'a>(name: &'a str, component: &str, suffix: &str) -> &'a str {
    &name[component.len() + 1..name.len() - suffix.len()]
}

/// Writes tensors with [`crate::atomic::write_with`]: an interrupted write never leaves a
/// truncated file under the real name.
pub fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>, metadata: Option<HashMap<String, String>>) -> Result<(), LoraParamsError> {
    crate::atomic::write_with(path, |_, tmp| safetensors::serialize_to_file(tensors, metadata, tmp).map_err(std::io::Error::other))
        .map_err(|e| LoraParamsError::File { path: path.to_path_buf(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::lora::LoraWeights;

    fn shapes() -> BTreeMap<String, (usize, usize)> {
        BTreeMap::from([
            ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q".to_string(), (8, 6)),
            ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0".to_string(), (6, 8)),
            ("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2".to_string(), (6, 12)),
            ("time_embedding.linear_1".to_string(), (16, 4)),
        ])
    }

    fn registry() -> Adapters {
        let a = Adapters::new();
        for (n, s) in shapes() {
            a.register_for_tests(&n, s);
        }
        a
    }

    #[test]
    fn targets_match_by_suffix_and_b_starts_at_zero() {
        let a = registry();
        let t = vec!["to_q".to_string(), "to_out.0".to_string()];
        let l = TrainableLora::new("unet", &a, &shapes(), &t, 2, 4.0, 0, &Device::Cpu).unwrap();
        assert_eq!(l.modules.len(), 2);
        assert_eq!(a.len(), 2);
        assert_eq!(l.scale(), 2.0);
        let up = l.modules.values().next().unwrap().up.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(up, 0.0);
        let e = TrainableLora::new("unet", &a, &shapes(), &["to_k".to_string()], 2, 2.0, 0, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("to_k") && e.contains("match no linear"), "{e}");
    }

    #[test]
    fn saved_file_reads_back_with_alpha_through_our_loader() {
        let a = registry();
        let l = TrainableLora::new("unet", &a, &shapes(), &["to_q".to_string()], 2, 8.0, 3, &Device::Cpu).unwrap();
        l.modules.values().next().unwrap().up.set(&Tensor::ones((8, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pytorch_lora_weights.safetensors");
        l.save(&p).unwrap();
        let w = LoraWeights::load(&p).unwrap();
        assert_eq!(w.metadata["unet"], (2.0, 8.0));
        let b = Adapters::new();
        for (n, s) in shapes() {
            b.register_for_tests(&n, s);
        }
        assert_eq!(w.apply("unet", &b, 1.0).unwrap(), 1);
    }

    /// `network: dora`: m starts at ‖W‖ (the base model), the saved file is PEFT's DoRA layout, and
    /// our loader renders it as training computed it.
    #[test]
    fn dora_saves_the_peft_layout_and_reads_back_as_trained() {
        use crate::diffusion::nn::Linear;
        use candle_core::Module;
        let dev = Device::Cpu;
        let name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
        let w = Tensor::randn(0f32, 1.0, (8, 6), &dev).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(HashMap::from([(format!("{name}.weight"), w.clone())]), DType::F32, &dev);
        let a = Adapters::new();
        let lin = Linear::new(vb.pp(name), &a, 6, 8, false).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 6), &dev).unwrap();
        let base = lin.forward(&x).unwrap();
        let mut l = TrainableLora::new("unet", &a, &a.shapes(), &["to_q".to_string()], 2, 4.0, 1, &dev).unwrap();
        l.use_dora(&a).unwrap();
        assert!(l.is_dora() && l.vars().len() == 3);
        assert!(crate::diffusion::nn::rel_error(&lin.forward(&x).unwrap(), &base).unwrap() < 1e-6, "DoRA starts at the base layer");
        let p = &l.modules[name];
        p.up.set(&Tensor::randn(0f32, 1.0, (8, 2), &dev).unwrap()).unwrap();
        p.magnitude.as_ref().unwrap().set(&Tensor::rand(0.5f32, 2.0, 8, &dev).unwrap()).unwrap();
        let trained = lin.forward(&x).unwrap();
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pytorch_lora_weights.safetensors");
        l.save(&f).unwrap();
        let back = LoraWeights::load(&f).unwrap();
        assert_eq!(back.components["unet"][name].kind(), "DoRA");
        a.clear();
        assert_eq!(back.apply("unet", &a, 1.0).unwrap(), 1);
        let err = crate::diffusion::nn::rel_error(&lin.forward(&x).unwrap(), &trained).unwrap();
        assert!(err < 1e-5, "reloaded DoRA differs from the trained one: {err:.2e}");
    }

    /// `network: locon` on the tiny SD 1.5 UNet: factors on every resnet conv and 1×1 proj conv,
    /// B = 0 leaves the UNet unchanged, and the saved PEFT file (4-D factors) reads back through
    /// our loader to the same output as the trained adapters.
    #[test]
    fn locon_adds_conv_factors_that_save_and_read_back() {
        use crate::diffusion::testing::pipeline_dir;
        use crate::diffusion::unet::{UNet2DConditionModel, UNetConfig};
        let dev = Device::Cpu;
        let dir = pipeline_dir("tiny-sd15");
        let config = UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&[dir.join("unet/diffusion_pytorch_model.safetensors")], DType::F32, &dev).unwrap()
        };
        let a = Adapters::new();
        let unet = UNet2DConditionModel::new(vb, &config, &a).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &dev).unwrap();
        let t = Tensor::new(&[500f32], &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (1, 5, 32), &dev).unwrap();
        let base = unet.forward(&x, &t, &ctx, None).unwrap();
        let mut l = TrainableLora::new("unet", &a, &a.shapes(), &["to_q".to_string()], 2, 4.0, 1, &dev).unwrap();
        let linears = l.modules.len();
        let added = l.add_locon(&a, 1).unwrap();
        let convs = a
            .weight_shapes()
            .iter()
            .filter(|(n, d)| d.len() == 4 && ["conv1", "conv2", "conv_shortcut", "proj_in", "proj_out"].iter().any(|t| n.ends_with(t)))
            .count();
        assert_eq!(added, convs);
        assert!(l.modules.keys().any(|k| k.ends_with("proj_in")) && l.modules.keys().any(|k| k.ends_with("resnets.0.conv1")));
        assert_eq!(a.len(), linears + added);
        assert!(crate::diffusion::nn::rel_error(&unet.forward(&x, &t, &ctx, None).unwrap(), &base).unwrap() < 1e-6, "B = 0 starts at the base model");
        for p in l.modules.values() {
            p.up.set(&Tensor::randn(0f32, 0.2, p.up.dims(), &dev).unwrap()).unwrap();
        }
        let trained = unet.forward(&x, &t, &ctx, None).unwrap();
        assert!(crate::diffusion::nn::rel_error(&trained, &base).unwrap() > 1e-3);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pytorch_lora_weights.safetensors");
        l.save(&f).unwrap();
        let back = LoraWeights::load(&f).unwrap();
        a.clear();
        assert_eq!(back.apply("unet", &a, 1.0).unwrap(), linears + added);
        let err = crate::diffusion::nn::rel_error(&unet.forward(&x, &t, &ctx, None).unwrap(), &trained).unwrap();
        assert!(err < 1e-5, "reloaded LoCon differs from the trained one: {err:.2e}");
        a.clear();
        back.fuse("unet", &a, 1.0).unwrap();
        assert!(crate::diffusion::nn::rel_error(&unet.forward(&x, &t, &ctx, None).unwrap(), &trained).unwrap() < 1e-5);
    }
}
