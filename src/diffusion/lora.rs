//! LoRA files as diffusers' `load_lora_weights` reads them: PEFT keys (`lora_A/lora_B`),
//! diffusers keys (`lora.down/lora.up`, and the old `processor.to_q_lora` form), and kohya keys
//! (`lora_unet_…` with `.alpha`). Alpha comes from kohya `.alpha` tensors, else from the
//! `lora_adapter_metadata` header, else alpha = rank. Keys that match no module are an error
//! listing them: a LoRA that silently does nothing is the failure this exists to prevent.

use super::nn::{Adapter, Adapters};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("{}: cannot read LoRA file: {detail}", .path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{}: {detail}", .path.display())]
    Format { path: PathBuf, detail: String },
    #[error("{}: {} LoRA key(s) match no module of the {component} (is this LoRA for another base model?): {}", .path.display(), .keys.len(), .keys.join(", "))]
    Unmatched { path: PathBuf, component: String, keys: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LoraFormat {
    Peft,
    Diffusers,
    DiffusersOld,
    Kohya,
}

#[derive(Debug, Clone)]
pub struct LoraModule {
    pub down: Tensor,
    pub up: Tensor,
    /// From a kohya `.alpha` tensor, when present.
    pub alpha: Option<f64>,
}

/// A parsed LoRA file: per component (`unet`, `text_encoder`, `text_encoder_2`), per module path.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    pub path: PathBuf,
    pub format: LoraFormat,
    pub components: BTreeMap<String, BTreeMap<String, LoraModule>>,
    /// `lora_adapter_metadata` per component: (rank, alpha).
    pub metadata: HashMap<String, (f64, f64)>,
    /// kohya module names (underscored) are resolved against the network when applied.
    kohya_names: bool,
}

const COMPONENTS: [&str; 3] = ["unet", "text_encoder", "text_encoder_2"];

fn kohya_component(key: &str) -> Option<(&'static str, &str)> {
    for (prefix, comp) in [("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder")] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return Some((comp, rest));
        }
    }
    None
}

impl LoraWeights {
    pub fn load(path: &Path) -> Result<Self, LoraError> {
        let read_err = |detail: String| LoraError::Read { path: path.to_path_buf(), detail };
        let fmt_err = |detail: String| LoraError::Format { path: path.to_path_buf(), detail };
        let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
        crate::lfs_pointer::check_bytes(path, &bytes).map_err(|e| read_err(e.what()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| read_err(e.to_string()))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| read_err(e.to_string()))?;
        if tensors.is_empty() {
            return Err(fmt_err("the file holds no tensors".into()));
        }
        let mut metadata = HashMap::new();
        if let Some(raw) = header.metadata().as_ref().and_then(|m| m.get("lora_adapter_metadata")) {
            let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| fmt_err(format!("lora_adapter_metadata is not JSON: {e}")))?;
            for comp in COMPONENTS {
                if let (Some(r), Some(a)) = (v[format!("{comp}.r")].as_f64(), v[format!("{comp}.lora_alpha")].as_f64()) {
                    metadata.insert(comp.to_string(), (r, a));
                }
            }
        }
        let kohya = tensors.keys().all(|k| kohya_component(k).is_some());
        let mut format = if kohya { LoraFormat::Kohya } else { LoraFormat::Peft };
        let mut downs: BTreeMap<(String, String), Tensor> = BTreeMap::new();
        let mut ups: BTreeMap<(String, String), Tensor> = BTreeMap::new();
        let mut alphas: BTreeMap<(String, String), f64> = BTreeMap::new();
        let mut bad = Vec::new();
        for (key, t) in &tensors {
            if key.contains("dora_scale") {
                return Err(fmt_err(format!("{key}: DoRA adapters are not supported")));
            }
            let t = t.to_dtype(DType::F32).map_err(|e| fmt_err(format!("{key}: {e}")))?;
            if kohya {
                let (comp, rest) = kohya_component(key).expect("checked");
                let (module, kind) = if let Some(m) = rest.strip_suffix(".lora_down.weight") {
                    (m, "down")
                } else if let Some(m) = rest.strip_suffix(".lora_up.weight") {
                    (m, "up")
                } else if let Some(m) = rest.strip_suffix(".alpha") {
                    (m, "alpha")
                } else {
                    bad.push(key.clone());
                    continue;
                };
                let id = (comp.to_string(), module.to_string());
                match kind {
                    "down" => drop(downs.insert(id, t)),
                    "up" => drop(ups.insert(id, t)),
                    _ => drop(
                        alphas.insert(id, t.flatten_all().and_then(|a| a.to_vec1::<f32>()).map_err(|e| fmt_err(format!("{key}: {e}")))?[0] as f64),
                    ),
                }
                continue;
            }
            let Some((comp, rest)) = COMPONENTS.iter().rev().find_map(|c| key.strip_prefix(&format!("{c}.")).map(|r| (*c, r))) else {
                bad.push(key.clone());
                continue;
            };
            let parsed = [
                (".lora_A.weight", "down", LoraFormat::Peft),
                (".lora_B.weight", "up", LoraFormat::Peft),
                (".lora.down.weight", "down", LoraFormat::Diffusers),
                (".lora.up.weight", "up", LoraFormat::Diffusers),
                (".lora_linear_layer.down.weight", "down", LoraFormat::Diffusers),
                (".lora_linear_layer.up.weight", "up", LoraFormat::Diffusers),
            ]
            .iter()
            .find_map(|(suffix, kind, f)| rest.strip_suffix(suffix).map(|m| (m.to_string(), *kind, *f)))
            .or_else(|| old_processor_key(rest));
            let Some((module, kind, f)) = parsed else {
                bad.push(key.clone());
                continue;
            };
            format = f;
            let id = (comp.to_string(), module);
            if kind == "down" {
                downs.insert(id, t);
            } else {
                ups.insert(id, t);
            }
        }
        if !bad.is_empty() {
            return Err(fmt_err(format!(
                "{} key(s) are not LoRA weights of a unet/text_encoder/text_encoder_2 (keys must be prefixed `unet.` etc., or be kohya `lora_unet_…`): {}",
                bad.len(),
                bad.join(", ")
            )));
        }
        let mut components: BTreeMap<String, BTreeMap<String, LoraModule>> = BTreeMap::new();
        for (id, down) in downs {
            let up = ups.remove(&id).ok_or_else(|| fmt_err(format!("{}.{}: has a down/A matrix but no up/B", id.0, id.1)))?;
            let alpha = alphas.get(&id).copied();
            components.entry(id.0).or_default().insert(id.1, LoraModule { down, up, alpha });
        }
        if let Some((id, _)) = ups.into_iter().next() {
            return Err(fmt_err(format!("{}.{}: has an up/B matrix but no down/A", id.0, id.1)));
        }
        Ok(LoraWeights { path: path.to_path_buf(), format, components, metadata, kohya_names: kohya })
    }

    /// Attaches this LoRA's `component` modules to a network's adapters at `scale`
    /// (the user's --lora-scale; alpha/rank is applied on top). Returns how many were attached.
    pub fn apply(&self, component: &str, adapters: &Adapters, scale: f64) -> Result<usize, LoraError> {
        self.install(component, adapters, scale, Adapters::attach)
    }

    /// Like `apply`, but fuses `W0 + scale·(alpha/r)·B·A` into the weights, as diffusers'
    /// `fuse_lora` (what the Hub's inference widget runs). Returns how many modules were fused.
    pub fn fuse(&self, component: &str, adapters: &Adapters, scale: f64) -> Result<usize, LoraError> {
        self.install(component, adapters, scale, Adapters::fuse)
    }

    fn install(
        &self,
        component: &str,
        adapters: &Adapters,
        scale: f64,
        put: fn(&Adapters, &str, Adapter) -> Result<(), String>,
    ) -> Result<usize, LoraError> {
        let Some(modules) = self.components.get(component) else { return Ok(0) };
        let names = module_names(&adapters.known_modules(), component != "unet", self.kohya_names);
        let mut unmatched = Vec::new();
        let mut plan = Vec::new();
        for (name, m) in modules {
            match names.get(name) {
                Some(t) => plan.push((t.clone(), m)),
                None => unmatched.push(name.clone()),
            }
        }
        if !unmatched.is_empty() {
            return Err(LoraError::Unmatched { path: self.path.clone(), component: component.to_string(), keys: unmatched });
        }
        for (target, m) in &plan {
            let rank = m.down.dims()[0] as f64;
            let alpha = m.alpha.or_else(|| self.metadata.get(component).map(|(r, a)| a * rank / r)).unwrap_or(rank);
            let adapter = Adapter { down: m.down.clone(), up: m.up.clone(), scale: scale * alpha / rank };
            put(adapters, target, adapter).map_err(|detail| LoraError::Format { path: self.path.clone(), detail })?;
        }
        Ok(plan.len())
    }
}

/// How a LoRA file may name each module → the network's module path. CLIP text encoders saved by
/// transformers 4 (real SD repos, most LoRAs) have a `text_model.` prefix that transformers 5
/// drops; a LoRA matches its encoder whichever version saved either. kohya names are the path
/// with `_` for `.`.
fn module_names(known: &std::collections::BTreeSet<String>, text_encoder: bool, kohya: bool) -> HashMap<String, String> {
    let spell = |n: &str| if kohya { n.replace('.', "_") } else { n.to_string() };
    let mut names = HashMap::new();
    if text_encoder {
        for k in known {
            let other = match k.strip_prefix("text_model.") {
                Some(bare) => bare.to_string(),
                None => format!("text_model.{k}"),
            };
            names.insert(spell(&other), k.clone());
        }
    }
    // Exact names win over the alternate spelling.
    names.extend(known.iter().map(|k| (spell(k), k.clone())));
    names
}

/// `…attn1.processor.to_q_lora.down.weight` → `…attn1.to_q` (diffusers' pre-PEFT format).
fn old_processor_key(rest: &str) -> Option<(String, &'static str, LoraFormat)> {
    let (kind, stem) = if let Some(s) = rest.strip_suffix("_lora.down.weight") {
        ("down", s)
    } else if let Some(s) = rest.strip_suffix("_lora.up.weight") {
        ("up", s)
    } else {
        return None;
    };
    let (parent, proj) = stem.rsplit_once(".processor.")?;
    let proj = if proj == "to_out" { "to_out.0" } else { proj };
    Some((format!("{parent}.{proj}"), kind, LoraFormat::DiffusersOld))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::Linear;
    use candle_nn::VarBuilder;

    fn fixture() -> PathBuf {
        crate::diffusion::testing::fixtures_dir().join("tiny-sd15-lora/pytorch_lora_weights.safetensors")
    }

    /// A fake network whose linears have the fixture LoRA's module names and shapes.
    fn network_for(l: &LoraWeights, drop: usize) -> Adapters {
        let adapters = Adapters::new();
        let mut map = HashMap::new();
        for (name, m) in l.components["unet"].iter().skip(drop) {
            map.insert(format!("{name}.weight"), Tensor::zeros((m.up.dims()[0], m.down.dims()[1]), DType::F32, &Device::Cpu).unwrap());
        }
        let vb = VarBuilder::from_tensors(map.clone(), DType::F32, &Device::Cpu);
        for (name, m) in l.components["unet"].iter().skip(drop) {
            Linear::new(vb.pp(name), &adapters, m.down.dims()[1], m.up.dims()[0], false).unwrap();
        }
        adapters
    }

    #[test]
    fn reads_the_diffusers_fixture_with_alpha_from_metadata() {
        let l = LoraWeights::load(&fixture()).unwrap();
        assert_eq!(l.format, LoraFormat::Diffusers);
        assert_eq!(l.metadata["unet"], (4.0, 8.0));
        assert_eq!(l.components["unet"].len(), 32);
        let adapters = network_for(&l, 0);
        assert_eq!(l.apply("unet", &adapters, 0.5).unwrap(), 32);
        assert_eq!(l.apply("text_encoder", &adapters, 1.0).unwrap(), 0);
    }

    #[test]
    fn unmatched_modules_are_listed() {
        let l = LoraWeights::load(&fixture()).unwrap();
        let adapters = network_for(&l, 2);
        let err = l.apply("unet", &adapters, 1.0).unwrap_err().to_string();
        assert!(err.contains("2 LoRA key(s) match no module"), "{err}");
    }

    #[test]
    fn peft_kohya_and_unprefixed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let a = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
        let b = Tensor::ones((3, 2), DType::F32, &dev).unwrap();
        let save = |name: &str, m: Vec<(&str, Tensor)>| {
            let p = dir.path().join(name);
            let m: HashMap<String, Tensor> = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            candle_core::safetensors::save(&m, &p).unwrap();
            p
        };
        let peft = LoraWeights::load(&save(
            "p.safetensors",
            vec![("unet.mid.attn.to_q.lora_A.weight", a.clone()), ("unet.mid.attn.to_q.lora_B.weight", b.clone())],
        ))
        .unwrap();
        assert_eq!(peft.format, LoraFormat::Peft);
        let kohya = LoraWeights::load(&save(
            "k.safetensors",
            vec![
                ("lora_unet_mid_attn_to_q.lora_down.weight", a.clone()),
                ("lora_unet_mid_attn_to_q.lora_up.weight", b.clone()),
                ("lora_unet_mid_attn_to_q.alpha", Tensor::new(&[1f32], &dev).unwrap()),
            ],
        ))
        .unwrap();
        assert_eq!(kohya.format, LoraFormat::Kohya);
        let mut map = HashMap::new();
        map.insert("mid.attn.to_q.weight".to_string(), Tensor::zeros((3, 4), DType::F32, &dev).unwrap());
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let adapters = Adapters::new();
        Linear::new(vb.pp("mid.attn.to_q"), &adapters, 4, 3, false).unwrap();
        assert_eq!(kohya.apply("unet", &adapters, 1.0).unwrap(), 1);
        // Text encoders: a LoRA made against transformers 4 (`text_model.` paths) fits a model saved
        // by transformers 5 (no prefix), and the other way round, in PEFT and kohya naming.
        for (base, lora_key, te_fmt) in [
            ("encoder.layers.0.self_attn.q_proj", "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", false),
            ("text_model.encoder.layers.0.self_attn.q_proj", "text_encoder.encoder.layers.0.self_attn.q_proj", false),
            ("encoder.layers.0.self_attn.q_proj", "lora_te_text_model_encoder_layers_0_self_attn_q_proj", true),
        ] {
            let mut map = HashMap::new();
            map.insert(format!("{base}.weight"), Tensor::zeros((3, 4), DType::F32, &dev).unwrap());
            let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
            let adapters = Adapters::new();
            Linear::new(vb.pp(base), &adapters, 4, 3, false).unwrap();
            let file = if te_fmt {
                save(
                    "te-k.safetensors",
                    vec![(format!("{lora_key}.lora_down.weight").leak(), a.clone()), (format!("{lora_key}.lora_up.weight").leak(), b.clone())],
                )
            } else {
                save(
                    "te-p.safetensors",
                    vec![(format!("{lora_key}.lora_A.weight").leak(), a.clone()), (format!("{lora_key}.lora_B.weight").leak(), b.clone())],
                )
            };
            assert_eq!(LoraWeights::load(&file).unwrap().apply("text_encoder", &adapters, 1.0).unwrap(), 1, "{lora_key} onto {base}");
        }
        let err =
            LoraWeights::load(&save("u.safetensors", vec![("mid.attn.to_q.lora_A.weight", a), ("mid.attn.to_q.lora_B.weight", b)])).unwrap_err();
        assert!(err.to_string().contains("must be prefixed"), "{err}");
    }
}
