//! LoRA files as the community makes them, read into adapters on our networks.
//!
//! Namings: PEFT (`unet.…to_q.lora_A.weight`), diffusers (`….lora.down.weight`, the pre-PEFT
//! `processor.to_q_lora.down.weight`), kohya/LyCORIS (`lora_unet_…`, `lora_te_`/`lora_te1_`/
//! `lora_te2_`, SD 1.x with diffusers-like names, SDXL with the SGM UNet's block names; see
//! [`keys`]). Kinds: LoRA on linears and convs (LoCon, 1×1 and k×k, optional Tucker `lora_mid`),
//! LyCORIS LoHa and LoKr ([`lycoris`]), and DoRA in PEFT's (`lora_magnitude_vector`) and
//! kohya/LyCORIS' (`dora_scale`) layouts. Tensors may be f32/f16/bf16/f8 (read as f32); alphas
//! 0-d or [1]. A plain LoRA on a linear stays a low-rank adapter on activations (trainable, no
//! full-size weight); everything else becomes a full-weight update (`nn::WeightUpdate`). Keys
//! that fit no module are an error listing them: a LoRA that silently does nothing is the
//! failure this exists to prevent.

pub mod export;
pub(crate) mod keys;
pub mod lycoris;

use super::nn::{Adapter, Adapters, Decompose, WeightUpdate};
use candle_core::{DType, Device, Tensor};
use keys::{Field, Naming};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("{}: cannot read LoRA file: {detail}", .path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{}: {detail}", .path.display())]
    Format { path: PathBuf, detail: String },
    #[error("{}: {} module(s) of this {format} LoRA name no layer of the model's {component} (a LoRA made for another base model names layers this one lacks); first: {}", .path.display(), .keys.len(), .keys.iter().take(8).cloned().collect::<Vec<_>>().join(", "))]
    Unmatched { path: PathBuf, format: String, component: String, keys: Vec<String> },
}

/// How a file names its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraFormat {
    Peft,
    Diffusers,
    DiffusersOld,
    Kohya,
}

impl std::fmt::Display for LoraFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoraFormat::Peft => "PEFT",
            LoraFormat::Diffusers => "diffusers",
            LoraFormat::DiffusersOld => "diffusers (pre-PEFT)",
            LoraFormat::Kohya => "kohya/LyCORIS",
        })
    }
}

/// The factors of one module's adapter.
#[derive(Debug, Clone)]
pub enum Factors {
    /// LoRA/LoCon: down [r, in(, k, k)], up [out, r(, 1, 1)], optional Tucker core [r, r, k, k].
    Lora { down: Tensor, up: Tensor, mid: Option<Tensor> },
    /// LyCORIS LoHa (`hada_*`); see [`lycoris::loha`].
    Loha { w1a: Tensor, w1b: Tensor, w2a: Tensor, w2b: Tensor, t1: Option<Tensor>, t2: Option<Tensor> },
    /// LyCORIS LoKr (`lokr_*`): each half full or factorised; see [`lycoris::kron`].
    Lokr {
        w1: Option<Tensor>,
        w1a: Option<Tensor>,
        w1b: Option<Tensor>,
        w2: Option<Tensor>,
        w2a: Option<Tensor>,
        w2b: Option<Tensor>,
        t2: Option<Tensor>,
    },
}

/// DoRA magnitudes, in either layout (see `nn::Decompose`).
#[derive(Debug, Clone)]
pub enum Dora {
    /// PEFT `lora_magnitude_vector` [out].
    Magnitude(Tensor),
    /// kohya/LyCORIS `dora_scale` ([1, in, …]: per input column; [out, 1, …]: per output row).
    Scale(Tensor),
}

#[derive(Debug, Clone)]
pub struct LoraModule {
    pub factors: Factors,
    /// From a `.alpha` tensor, when present (0 means "= rank", as kohya and LyCORIS read it).
    pub alpha: Option<f64>,
    pub dora: Option<Dora>,
}

impl LoraModule {
    /// The rank that alpha is divided by: LoRA's r (down's first dim); LoHa's `hada_w1_b` rows;
    /// LoKr's `lokr_w1_a` columns, else `lokr_w2_a`'s (the Tucker core's for a Tucker w2), the
    /// `lora_dim` LyCORIS' `LokrModule` was built with;
    /// `None` for a LoKr with both halves full, which LyCORIS scales by 1.
    pub fn rank(&self) -> Option<usize> {
        match &self.factors {
            Factors::Lora { down, .. } => down.dims().first().copied(),
            Factors::Loha { w1b, .. } => w1b.dims().first().copied(),
            // A Tucker w2's `lokr_w2_a` is [r, out₂] (its core [r, r, k, k]), a plain one's [out₂, r].
            Factors::Lokr { w1a: Some(a), .. } => a.dims().get(1).copied(),
            Factors::Lokr { t2: Some(t), w2a: Some(_), .. } => t.dims().first().copied(),
            Factors::Lokr { w2a, .. } => w2a.as_ref().and_then(|a| a.dims().get(1).copied()),
        }
    }

    /// The network type in kohya's words.
    pub fn kind(&self) -> &'static str {
        match (&self.factors, &self.dora) {
            (Factors::Lora { .. }, Some(_)) => "DoRA",
            (Factors::Lora { down, .. }, None) if down.rank() == 4 && down.dims()[2] > 1 => "LoCon",
            (Factors::Lora { .. }, None) => "LoRA",
            (Factors::Loha { .. }, _) => "LoHa",
            (Factors::Lokr { .. }, _) => "LoKr",
        }
    }

    /// ΔW in f32 before scaling, [out, in] or [out, in·k·k] / [out, in, k, k].
    fn delta(&self) -> candle_core::Result<Tensor> {
        match &self.factors {
            Factors::Lora { down, up, mid } => lycoris::lora(down, up, mid.as_ref()),
            Factors::Loha { w1a, w1b, w2a, w2b, t1, t2 } => lycoris::loha(w1a, w1b, w2a, w2b, t1.as_ref(), t2.as_ref()),
            Factors::Lokr { w1, w1a, w1b, w2, w2a, w2b, t2 } => {
                let h1 = lycoris::lokr_half(w1.as_ref(), w1a.as_ref(), w1b.as_ref(), None)?;
                let h2 = lycoris::lokr_half(w2.as_ref(), w2a.as_ref(), w2b.as_ref(), t2.as_ref())?;
                lycoris::kron(&h1, &h2)
            }
        }
    }
}

/// A parsed LoRA file: per component (`unet`, `text_encoder`, `text_encoder_2`), per module name
/// (as the file names it; see `install` for how names meet the network).
#[derive(Debug, Clone)]
pub struct LoraWeights {
    pub path: PathBuf,
    pub format: LoraFormat,
    pub components: BTreeMap<String, BTreeMap<String, LoraModule>>,
    /// `lora_adapter_metadata` per component: (rank, alpha).
    pub metadata: HashMap<String, (f64, f64)>,
    /// kohya's `ss_base_model_version` header entry (`sd_v1`, `sdxl_base_v1-0`, …), if any.
    pub base_model_version: Option<String>,
    /// kohya module names (underscored) are resolved against the network when applied.
    kohya_names: bool,
}

const COMPONENTS: [&str; 3] = ["unet", "text_encoder", "text_encoder_2"];

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    match v.as_slice() {
        [a] => Ok(*a as f64),
        _ => candle_core::bail!("an alpha must hold one number, this holds {}", v.len()),
    }
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
        let mut fields: BTreeMap<(String, String), BTreeMap<Field, Tensor>> = BTreeMap::new();
        let mut formats = std::collections::BTreeSet::new();
        let mut namings = std::collections::BTreeSet::new();
        let mut bad = Vec::new();
        let mut keys: Vec<&String> = tensors.keys().collect();
        keys.sort();
        for key in keys {
            let Some(k) = keys::parse(key) else {
                bad.push(key.clone());
                continue;
            };
            let t = tensors[key].to_dtype(DType::F32).map_err(|e| fmt_err(format!("{key}: cannot read as f32: {e}")))?;
            if let Some(f) = k.format {
                formats.insert(f as u8);
            }
            namings.insert(k.naming == Naming::Kohya);
            fields.entry((k.component.to_string(), k.module)).or_default().insert(k.field, t);
        }
        let format = if namings.contains(&true) {
            LoraFormat::Kohya
        } else if formats.contains(&(LoraFormat::DiffusersOld as u8)) {
            LoraFormat::DiffusersOld
        } else if formats.contains(&(LoraFormat::Diffusers as u8)) {
            LoraFormat::Diffusers
        } else {
            LoraFormat::Peft
        };
        if namings.len() > 1 {
            return Err(fmt_err("the file mixes kohya (`lora_unet_…`) and diffusers/PEFT (`unet.…`) key names; convert it to one naming".into()));
        }
        if !bad.is_empty() {
            let first = bad.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            return Err(fmt_err(if fields.is_empty() {
                format!(
                    "no key is one a LoRA file uses (PEFT `unet.…lora_A.weight`, diffusers `unet.…lora.down.weight`, kohya/LyCORIS `lora_unet_…lora_down.weight`, `…hada_w1_a`, `…lokr_w1`); first keys: {first}"
                )
            } else {
                format!(
                    "read as a {format} LoRA, but {} key(s) are not LoRA/LoCon/LoHa/LoKr/DoRA weights of a unet/text_encoder/text_encoder_2 (other LyCORIS kinds such as OFT, BOFT, GLoRA, (IA)³ and full `diff` weights are not supported); first: {first}",
                    bad.len()
                )
            }));
        }
        let mut components: BTreeMap<String, BTreeMap<String, LoraModule>> = BTreeMap::new();
        for ((comp, module), mut f) in fields {
            let name = format!("{comp}.{module}");
            let m = assemble(&mut f).map_err(|detail| fmt_err(format!("{name}: {detail}")))?;
            components.entry(comp).or_default().insert(module, m);
        }
        let base_model_version = header.metadata().as_ref().and_then(|m| m.get("ss_base_model_version")).cloned();
        Ok(LoraWeights { path: path.to_path_buf(), format, components, metadata, base_model_version, kohya_names: namings.contains(&true) })
    }

    /// Attaches this LoRA's `component` modules to a network's adapters at `scale`
    /// (the user's --lora-scale; alpha/rank is applied on top). Returns how many were attached.
    pub fn apply(&self, component: &str, adapters: &Adapters, scale: f64) -> Result<usize, LoraError> {
        self.install(component, adapters, scale, false)
    }

    /// Like `apply`, but fuses each module's update into the weights, as diffusers' `fuse_lora`
    /// (what the Hub's inference widget runs). Returns how many modules were fused.
    pub fn fuse(&self, component: &str, adapters: &Adapters, scale: f64) -> Result<usize, LoraError> {
        self.install(component, adapters, scale, true)
    }

    /// The scale alpha/r of a module: alpha from its `.alpha` tensor (0 → r), else from
    /// `lora_adapter_metadata` (PEFT's `lora_alpha`/`r`), else alpha = r; a LoKr with both halves
    /// full is scaled by 1 (LyCORIS).
    fn alpha_over_rank(&self, component: &str, m: &LoraModule) -> f64 {
        let Some(rank) = m.rank() else { return 1.0 };
        let rank = rank as f64;
        match m.alpha {
            Some(a) if a != 0.0 => a / rank,
            Some(_) => 1.0,
            None => self.metadata.get(component).map(|(r, a)| a / r).unwrap_or(1.0),
        }
    }

    fn install(&self, component: &str, adapters: &Adapters, scale: f64, fuse: bool) -> Result<usize, LoraError> {
        let Some(modules) = self.components.get(component) else { return Ok(0) };
        let shapes = adapters.weight_shapes();
        let linears = adapters.known_modules();
        let names = module_names(&shapes, component != "unet", self.kohya_names);
        let layers_per_block = layers_per_block(&shapes);
        let mut unmatched = Vec::new();
        let mut plan = Vec::new();
        for (name, m) in modules {
            let sgm = (self.kohya_names && component == "unet" && keys::is_sgm(name))
                .then(|| layers_per_block.and_then(|l| keys::sgm_to_diffusers(name, l)))
                .flatten();
            match names.get(sgm.as_deref().unwrap_or(name)) {
                Some(t) => plan.push((t.clone(), m)),
                None => unmatched.push(name.clone()),
            }
        }
        if !unmatched.is_empty() {
            return Err(LoraError::Unmatched {
                path: self.path.clone(),
                format: self.format.to_string(),
                component: component.to_string(),
                keys: unmatched,
            });
        }
        let err = |detail: String| LoraError::Format { path: self.path.clone(), detail };
        for (target, m) in &plan {
            let s = self.alpha_over_rank(component, m);
            let shape = &shapes[target];
            let plain_linear = match (&m.factors, &m.dora) {
                (Factors::Lora { down, up, mid: None }, None) if linears.contains(target) => {
                    let flat = |t: &Tensor| -> Option<Tensor> {
                        match t.dims() {
                            [_, _] => Some(t.clone()),
                            [a, b, 1, 1] => t.reshape((*a, *b)).ok(),
                            _ => None,
                        }
                    };
                    flat(down).zip(flat(up))
                }
                _ => None,
            };
            if let Some((down, up)) = plain_linear {
                let a = Adapter { down, up, scale: scale * s, magnitude: None };
                let r = if fuse { adapters.fuse(target, a) } else { adapters.attach(target, a) };
                r.map_err(err)?;
                continue;
            }
            let delta = m.delta().map_err(|e| err(format!("{target}: cannot build ΔW: {e}")))?;
            let numel: usize = shape.iter().product();
            if delta.elem_count() != numel {
                return Err(err(format!(
                    "{target}: the {} factors make a ΔW of shape {:?}, which does not fit the layer's weight {:?}",
                    m.kind(),
                    delta.dims(),
                    shape
                )));
            }
            let delta = delta.reshape(shape.as_slice()).map_err(|e| err(format!("{target}: {e}")))?;
            let (delta_scale, decompose) = match &m.dora {
                None => (scale * s, None),
                Some(Dora::Magnitude(mag)) => {
                    if mag.elem_count() != shape[0] {
                        return Err(err(format!(
                            "{target}: lora_magnitude_vector has {} values for a layer with {} outputs",
                            mag.elem_count(),
                            shape[0]
                        )));
                    }
                    (scale * s, Some(Decompose::Magnitude(mag.clone())))
                }
                Some(Dora::Scale(d)) => {
                    let dd = d.dims();
                    let on_out = dd.first() == Some(&shape[0]) && d.elem_count() == shape[0];
                    let on_in = dd.len() >= 2 && dd[0] == 1 && dd[1] == shape[1] && d.elem_count() == shape[1];
                    if !on_out && !on_in {
                        return Err(err(format!("{target}: dora_scale {dd:?} fits neither [out, 1, …] nor [1, in, …] of a weight {shape:?}")));
                    }
                    (s, Some(Decompose::Scale { magnitude: d.clone(), on_out, multiplier: scale }))
                }
            };
            let u = WeightUpdate { delta, scale: delta_scale, decompose };
            let r = if fuse { adapters.fuse_update(target, u) } else { adapters.attach_update(target, u) };
            r.map_err(err)?;
        }
        Ok(plan.len())
    }
}

/// Builds one module's factors from its fields; the error says what is missing or left over.
fn assemble(f: &mut BTreeMap<Field, Tensor>) -> Result<LoraModule, String> {
    let alpha = f.remove(&Field::Alpha).map(|t| scalar(&t)).transpose().map_err(|e| format!("alpha: {e}"))?;
    let dora = match (f.remove(&Field::Magnitude), f.remove(&Field::DoraScale)) {
        (Some(m), None) => Some(Dora::Magnitude(m)),
        (None, Some(d)) => Some(Dora::Scale(d)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err("has both lora_magnitude_vector and dora_scale".into()),
    };
    let has = |f: &BTreeMap<Field, Tensor>, ks: &[Field]| ks.iter().all(|k| f.contains_key(k));
    let lora = has(f, &[Field::Down, Field::Up]);
    let loha = has(f, &[Field::HadaW1A, Field::HadaW1B, Field::HadaW2A, Field::HadaW2B]);
    let mut take = |k: Field| f.remove(&k);
    let factors = if lora {
        Factors::Lora { down: take(Field::Down).expect("checked"), up: take(Field::Up).expect("checked"), mid: take(Field::Mid) }
    } else if loha {
        let (w1a, w1b, w2a, w2b) = (take(Field::HadaW1A), take(Field::HadaW1B), take(Field::HadaW2A), take(Field::HadaW2B));
        Factors::Loha {
            w1a: w1a.expect("checked"),
            w1b: w1b.expect("checked"),
            w2a: w2a.expect("checked"),
            w2b: w2b.expect("checked"),
            t1: take(Field::HadaT1),
            t2: take(Field::HadaT2),
        }
    } else {
        let (w1, w1a, w1b, w2, w2a, w2b, t2) = (
            take(Field::LokrW1),
            take(Field::LokrW1A),
            take(Field::LokrW1B),
            take(Field::LokrW2),
            take(Field::LokrW2A),
            take(Field::LokrW2B),
            take(Field::LokrT2),
        );
        let half_ok = |w: &Option<Tensor>, a: &Option<Tensor>, b: &Option<Tensor>| w.is_some() || (a.is_some() && b.is_some());
        if !(half_ok(&w1, &w1a, &w1b) && half_ok(&w2, &w2a, &w2b)) {
            let mut have: Vec<String> = f.keys().map(|k| format!("{k:?}")).collect();
            for (name, t) in [("lokr_w1", &w1), ("lokr_w1_a", &w1a), ("lokr_w1_b", &w1b), ("lokr_w2", &w2), ("lokr_w2_a", &w2a), ("lokr_w2_b", &w2b)]
            {
                if t.is_some() {
                    have.push(name.into());
                }
            }
            return Err(format!(
                "incomplete adapter: a LoRA needs down and up (lora_A/lora_B, lora_down/lora_up), a LoHa hada_w1_a/b and hada_w2_a/b, a LoKr lokr_w1 (or _a and _b) and lokr_w2 (or _a and _b); found {}",
                if have.is_empty() { "only an alpha or DoRA magnitude".to_string() } else { have.join(", ") }
            ));
        }
        Factors::Lokr { w1, w1a, w1b, w2, w2a, w2b, t2 }
    };
    if let Some(k) = f.keys().next() {
        return Err(format!("{k:?} does not belong with a {}", LoraModule { factors: factors.clone(), alpha, dora: None }.kind()));
    }
    Ok(LoraModule { factors, alpha, dora })
}

/// The UNet's `layers_per_block`: how many resnets its first down block has.
fn layers_per_block(shapes: &BTreeMap<String, Vec<usize>>) -> Option<usize> {
    let n = shapes.keys().filter_map(|k| k.strip_prefix("down_blocks.0.resnets.")?.split('.').next()?.parse::<usize>().ok()).max()?;
    Some(n + 1)
}

/// How a LoRA file may name each module → the network's module path. CLIP text encoders saved by
/// transformers 4 (real SD repos, most LoRAs) have a `text_model.` prefix that transformers 5
/// drops; a LoRA matches its encoder whichever version saved either. kohya names are the path
/// with `_` for `.`.
fn module_names(known: &BTreeMap<String, Vec<usize>>, text_encoder: bool, kohya: bool) -> HashMap<String, String> {
    let spell = |n: &str| if kohya { n.replace('.', "_") } else { n.to_string() };
    let mut names = HashMap::new();
    if text_encoder {
        for k in known.keys() {
            let other = match k.strip_prefix("text_model.") {
                Some(bare) => bare.to_string(),
                None => format!("text_model.{k}"),
            };
            names.insert(spell(&other), k.clone());
        }
    }
    // Exact names win over the alternate spelling.
    names.extend(known.keys().map(|k| (spell(k), k.clone())));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::nn::Linear;
    use candle_nn::VarBuilder;

    fn fixture() -> PathBuf {
        crate::diffusion::testing::fixtures_dir().join("tiny-sd15-lora/pytorch_lora_weights.safetensors")
    }

    fn lora_dims(m: &LoraModule) -> (usize, usize) {
        match &m.factors {
            Factors::Lora { down, up, .. } => (up.dims()[0], down.dims()[1]),
            _ => unreachable!(),
        }
    }

    /// A fake network whose linears have the fixture LoRA's module names and shapes.
    fn network_for(l: &LoraWeights, drop: usize) -> Adapters {
        let adapters = Adapters::new();
        let mut map = HashMap::new();
        for (name, m) in l.components["unet"].iter().skip(drop) {
            map.insert(format!("{name}.weight"), Tensor::zeros((lora_dims(m).0, lora_dims(m).1), DType::F32, &Device::Cpu).unwrap());
        }
        let vb = VarBuilder::from_tensors(map.clone(), DType::F32, &Device::Cpu);
        for (name, m) in l.components["unet"].iter().skip(drop) {
            Linear::new(vb.pp(name), &adapters, lora_dims(m).1, lora_dims(m).0, false).unwrap();
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
        assert!(err.contains("2 module(s) of this diffusers LoRA name no layer of the model's unet"), "{err}");
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
        assert!(err.to_string().contains("no key is one a LoRA file uses") && err.to_string().contains("mid.attn.to_q.lora_A.weight"), "{err}");
    }

    fn field_case(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/field-cases").join(rel)
    }

    /// The field case: a kohya SD 1.5 LoRA (fp16, 0-d alphas) whose proj_in/proj_out factors are
    /// 4-D because those layers are 1×1 convs in SD 1.x; every factor lands on the UNet and the
    /// text encoder.
    #[test]
    fn kohya_sd15_with_conv_proj_factors_places_every_module() {
        let l = LoraWeights::load(&field_case("kohya-sd15-conv/sd15_kohya_default.safetensors")).unwrap();
        assert_eq!(l.format, LoraFormat::Kohya);
        let dir = crate::diffusion::testing::pipeline_dir("tiny-sd15");
        let unet_adapters = Adapters::new();
        let config = crate::diffusion::unet::UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[dir.join("unet/diffusion_pytorch_model.safetensors")], DType::F32, &Device::Cpu).unwrap()
        };
        crate::diffusion::unet::UNet2DConditionModel::new(vb, &config, &unet_adapters).unwrap();
        let n_unet = l.components["unet"].len();
        assert!(l.components["unet"].keys().any(|k| k.ends_with("proj_in")));
        assert_eq!(l.apply("unet", &unet_adapters, 1.0).unwrap(), n_unet);
        let te_adapters = Adapters::new();
        let te = dir.join("text_encoder");
        crate::diffusion::text_encoder::load(&te, &[te.join("model.safetensors")], DType::F32, &Device::Cpu, &te_adapters).unwrap();
        assert_eq!(l.apply("text_encoder", &te_adapters, 1.0).unwrap(), l.components["text_encoder"].len());
        assert_eq!(unet_adapters.len() + te_adapters.len(), n_unet + l.components["text_encoder"].len());
    }

    #[test]
    fn dora_layouts_are_read() {
        let p = LoraWeights::load(&field_case("dora/dora_peft.safetensors")).unwrap();
        let k = LoraWeights::load(&field_case("dora/dora_kohya.safetensors")).unwrap();
        assert_eq!((p.format, k.format), (LoraFormat::Peft, LoraFormat::Kohya));
        for l in [&p, &k] {
            assert!(l.components["unet"].values().all(|m| m.kind() == "DoRA"));
        }
    }

    #[test]
    fn unsupported_content_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let save = |name: &str, m: Vec<(&str, Tensor)>| {
            let p = dir.path().join(name);
            let m: HashMap<String, Tensor> = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            candle_core::safetensors::save(&m, &p).unwrap();
            p
        };
        let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
        // LyCORIS OFT inside an otherwise known kohya file: the format and the key are named.
        let err = LoraWeights::load(&save(
            "oft.safetensors",
            vec![
                ("lora_unet_a_to_q.lora_down.weight", z(&[2, 4])),
                ("lora_unet_a_to_q.lora_up.weight", z(&[4, 2])),
                ("lora_unet_b_to_k.oft_blocks", z(&[2, 2, 2])),
            ],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("kohya/LyCORIS LoRA") && err.contains("lora_unet_b_to_k.oft_blocks") && err.contains("OFT"), "{err}");
        // Half a LoHa.
        let err = LoraWeights::load(&save("h.safetensors", vec![("lora_unet_a.hada_w1_a", z(&[4, 2])), ("lora_unet_a.hada_w1_b", z(&[2, 4]))]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unet.a: incomplete adapter") && err.contains("HadaW1A"), "{err}");
        // A LoKr whose product does not fit the layer.
        let lokr = LoraWeights::load(&save("k.safetensors", vec![("lora_unet_q.lokr_w1", z(&[2, 2])), ("lora_unet_q.lokr_w2", z(&[2, 3]))])).unwrap();
        let mut map = HashMap::new();
        map.insert("q.weight".to_string(), z(&[4, 4]));
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let adapters = Adapters::new();
        Linear::new(vb.pp("q"), &adapters, 4, 4, false).unwrap();
        let err = lokr.apply("unet", &adapters, 1.0).unwrap_err().to_string();
        assert!(err.contains("LoKr factors make a ΔW of shape [4, 6]") && err.contains("[4, 4]"), "{err}");
        // bf16 and f16 tensors and a [1] alpha read as f32.
        let bf = |s: &[usize]| Tensor::ones(s, DType::BF16, &dev).unwrap();
        let l = LoraWeights::load(&save(
            "bf.safetensors",
            vec![
                ("lora_unet_q.lora_down.weight", bf(&[2, 4])),
                ("lora_unet_q.lora_up.weight", bf(&[4, 2]).to_dtype(DType::F16).unwrap()),
                ("lora_unet_q.alpha", Tensor::new(&[1f32], &dev).unwrap().to_dtype(DType::BF16).unwrap()),
            ],
        ))
        .unwrap();
        assert_eq!(l.components["unet"]["q"].alpha, Some(1.0));
        assert_eq!(l.apply("unet", &adapters, 1.0).unwrap(), 1);
        // fp8 (E4M3) factors, as some SDXL LoRAs ship.
        let f8 = |s: &[usize]| Tensor::ones(s, DType::F32, &dev).unwrap().affine(0.5, 0.0).unwrap().to_dtype(DType::F8E4M3).unwrap();
        let l = LoraWeights::load(&save(
            "f8.safetensors",
            vec![("lora_unet_q.lora_down.weight", f8(&[2, 4])), ("lora_unet_q.lora_up.weight", f8(&[4, 2]))],
        ))
        .unwrap();
        let Factors::Lora { down, .. } = &l.components["unet"]["q"].factors else { panic!("a LoRA") };
        assert_eq!(down.to_vec2::<f32>().unwrap()[1][3], 0.5);
    }
}
