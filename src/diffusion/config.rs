//! A diffusers-layout pipeline folder: `model_index.json` and one folder per component, each
//! with `config.json` and safetensors weights (optionally an fp16 variant).

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{}: {detail}", .path.display())]
    Missing { path: PathBuf, detail: String },
    #[error("{}: invalid config: {detail}", .path.display())]
    BadConfig { path: PathBuf, detail: String },
    #[error("{0}")]
    Unsupported(String),
}

/// The kind of pipeline, from `model_index.json`'s `_class_name` and components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Architecture {
    StableDiffusion,
    StableDiffusionXl,
}

#[derive(Debug, Clone)]
pub struct PipelineFiles {
    pub root: PathBuf,
    pub architecture: Architecture,
    pub class_name: String,
}

impl PipelineFiles {
    pub fn open(root: &Path) -> Result<Self, PipelineError> {
        let index_path = root.join("model_index.json");
        let index: serde_json::Value = read_json(&index_path)?;
        let class_name = index["_class_name"].as_str().unwrap_or_default().to_string();
        let architecture = if class_name.contains("XL") || index.get("text_encoder_2").is_some() {
            Architecture::StableDiffusionXl
        } else if class_name.starts_with("StableDiffusion") || index.get("unet").is_some() {
            Architecture::StableDiffusion
        } else {
            return Err(PipelineError::Unsupported(format!(
                "{}: pipeline class {class_name:?} is not a Stable Diffusion 1.x/2.x or SDXL pipeline",
                index_path.display()
            )));
        };
        Ok(PipelineFiles { root: root.to_path_buf(), architecture, class_name })
    }

    pub fn component(&self, name: &str) -> Result<PathBuf, PipelineError> {
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(PipelineError::Missing { path: dir, detail: format!("the pipeline has no {name}/ folder") });
        }
        Ok(dir)
    }

    pub fn config<T: DeserializeOwned>(&self, component: &str) -> Result<T, PipelineError> {
        let dir = self.component(component)?;
        let file = if component == "scheduler" { "scheduler_config.json" } else { "config.json" };
        read_json(&dir.join(file))
    }

    /// The weights of a component as diffusers' `ModelMixin.from_pretrained` / transformers'
    /// `PreTrainedModel.from_pretrained` find them (`_fetch_index_file`, `_get_model_file`,
    /// `_get_checkpoint_shard_files`): the `variant` (e.g. "fp16") first when asked, then the
    /// default weights (diffusers falls back per component); for each, a shard index
    /// (`diffusion_pytorch_model.safetensors.index[.fp16].json`, `model.safetensors.index[.fp16].json`)
    /// before a single file (`diffusion_pytorch_model[.fp16].safetensors`, `model[.fp16].safetensors`).
    /// A component with only pickle weights (`*.bin`) is refused with how to convert it.
    pub fn weights(&self, component: &str, variant: Option<&str>) -> Result<ComponentWeights, PipelineError> {
        ComponentWeights::find(&self.component(component)?, variant)
    }
}

/// The safetensors files holding one component's weights: one file, or the shards a
/// `*.safetensors.index.json` lists in its `weight_map` (each once, in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentWeights {
    /// The shard index, for sharded weights.
    pub index: Option<PathBuf>,
    /// The weight files to load together (one for unsharded weights).
    pub files: Vec<PathBuf>,
    /// The variant these files are (`None`: the default weights, also when `variant` fell back).
    pub variant: Option<String>,
}

/// The weight-file stems diffusers (`diffusion_pytorch_model`) and transformers (`model`) save under.
const STEMS: [&str; 2] = ["diffusion_pytorch_model", "model"];

/// diffusers' `_add_variant`: the variant goes before the last extension
/// (`x.safetensors` → `x.fp16.safetensors`, `x.safetensors.index.json` → `x.safetensors.index.fp16.json`).
pub fn add_variant(name: &str, variant: Option<&str>) -> String {
    match (variant, name.rsplit_once('.')) {
        (Some(v), Some((head, ext))) => format!("{head}.{v}.{ext}"),
        _ => name.to_string(),
    }
}

/// A weight file a diffusers/transformers component may hold, in the order they are tried:
/// (file name, is a shard index).
fn candidates(variant: Option<&str>) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let variants: Vec<Option<&str>> = match variant {
        Some(v) => vec![Some(v), None],
        None => vec![None],
    };
    for v in variants {
        for stem in STEMS {
            out.push((add_variant(&format!("{stem}.safetensors.index.json"), v), true));
            out.push((add_variant(&format!("{stem}.safetensors"), v), false));
        }
    }
    out
}

impl ComponentWeights {
    /// Finds the weights in a component folder; see [`PipelineFiles::weights`].
    pub fn find(dir: &Path, variant: Option<&str>) -> Result<Self, PipelineError> {
        let mut tried = Vec::new();
        for (name, is_index) in candidates(variant) {
            let path = dir.join(&name);
            let this_variant = variant.filter(|v| name.contains(&format!(".{v}.")));
            if path.is_file() {
                return if is_index {
                    let files = shard_files(&path)?;
                    Ok(ComponentWeights { index: Some(path), files, variant: this_variant.map(String::from) })
                } else {
                    Ok(ComponentWeights { index: None, files: vec![path], variant: this_variant.map(String::from) })
                };
            }
            tried.push(name);
        }
        let pickles: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
                    .filter(|n| n.ends_with(".bin") || n.ends_with(".bin.index.json") || n.ends_with(".ckpt"))
                    .collect()
            })
            .unwrap_or_default();
        if !pickles.is_empty() {
            let mut pickles = pickles;
            pickles.sort();
            return Err(PipelineError::Missing {
                path: dir.to_path_buf(),
                detail: format!(
                    "only pickle weights ({}): hfsky loads safetensors only, because loading a pickle can run arbitrary code. \
                     Convert the pipeline once with diffusers (in Python: `DiffusionPipeline.from_pretrained(\"{}\").save_pretrained(\"OUT\", safe_serialization=True)`) \
                     and use OUT, or pick a revision of the repo that has .safetensors weights",
                    pickles.join(", "),
                    dir.parent().unwrap_or(dir).display()
                ),
            });
        }
        Err(PipelineError::Missing { path: dir.to_path_buf(), detail: format!("no weights found (looked for {})", tried.join(", ")) })
    }

    /// sha256 identifying these weights: the file's own for one file; for shards, the sha256
    /// of the lines `<shard name> <shard sha256>` in order.
    pub fn sha256(&self) -> std::io::Result<String> {
        if let [one] = self.files.as_slice() {
            if self.index.is_none() {
                return crate::hash::sha256_file(one);
            }
        }
        let mut lines = String::new();
        for f in &self.files {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            lines.push_str(&format!("{name} {}\n", crate::hash::sha256_file(f)?));
        }
        Ok(crate::hash::sha256_hex(lines.as_bytes()))
    }

    /// The first file (the weights themselves, or the first shard): for messages.
    pub fn display(&self) -> String {
        self.index.as_ref().or(self.files.first()).map(|p| p.display().to_string()).unwrap_or_default()
    }
}

/// The shard files a `*.safetensors.index.json` maps its tensors to (`weight_map` values, each
/// once, sorted), as diffusers' `_get_checkpoint_shard_files` reads them; every one must exist
/// beside the index and be a plain file name.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    let v: serde_json::Value = read_json(index)?;
    let bad = |detail: String| PipelineError::BadConfig { path: index.to_path_buf(), detail };
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let mut names: Vec<&str> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map.{tensor}: not a file name")))?;
        if file.is_empty() || file.contains('/') || file.contains('\\') || file == ".." || !file.ends_with(".safetensors") {
            return Err(bad(format!("weight_map.{tensor}: {file:?} is not a .safetensors file name beside the index")));
        }
        names.push(file);
    }
    if names.is_empty() {
        return Err(bad("\"weight_map\" is empty".into()));
    }
    names.sort_unstable();
    names.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    names
        .into_iter()
        .map(|n| {
            let p = dir.join(n);
            if p.is_file() {
                Ok(p)
            } else {
                Err(PipelineError::Missing {
                    path: p,
                    detail: format!("shard listed in {} is missing; download the whole component again", index.display()),
                })
            }
        })
        .collect()
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Missing { path: path.to_path_buf(), detail: e.to_string() })?;
    parse_python_json(&text).map_err(|e| PipelineError::BadConfig { path: path.to_path_buf(), detail: e.to_string() })
}

/// Python's json module writes `Infinity`, `-Infinity` and `NaN` (diffusers configs hold e.g.
/// `lambda_min_clipped: -Infinity`); strict JSON has no such literals, so they become strings.
pub fn parse_python_json<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        if let Some(lit) = ["-Infinity", "Infinity", "NaN"].iter().find(|l| rest.starts_with(**l)) {
            out.push_str(&format!("\"{lit}\""));
            rest = &rest[lit.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::testing::{pipeline_dir, write_shards};

    #[test]
    fn python_json_literals_are_tolerated() {
        let v: serde_json::Value = parse_python_json(r#"{"a": -Infinity, "b": "NaN inside", "c": [NaN, Infinity]}"#).unwrap();
        assert_eq!(v["a"], "-Infinity");
        assert_eq!(v["b"], "NaN inside");
        assert_eq!(v["c"][1], "Infinity");
    }

    #[test]
    fn fixtures_open_with_their_architecture() {
        let sd = PipelineFiles::open(&pipeline_dir("tiny-sd15")).unwrap();
        assert_eq!(sd.architecture, Architecture::StableDiffusion);
        let unet = sd.weights("unet", Some("fp16")).unwrap();
        assert_eq!((unet.files.len(), unet.index.is_none(), unet.variant.as_deref()), (1, true, None), "{unet:?}");
        assert!(unet.files[0].ends_with("unet/diffusion_pytorch_model.safetensors"));
        assert!(sd.weights("text_encoder", None).unwrap().files[0].ends_with("text_encoder/model.safetensors"));
        let xl = PipelineFiles::open(&pipeline_dir("tiny-sdxl")).unwrap();
        assert_eq!(xl.architecture, Architecture::StableDiffusionXl);
        let err = sd.component("text_encoder_2").unwrap_err().to_string();
        assert!(err.contains("text_encoder_2"), "{err}");
    }

    #[test]
    fn variant_names_follow_diffusers_add_variant() {
        assert_eq!(add_variant("diffusion_pytorch_model.safetensors", Some("fp16")), "diffusion_pytorch_model.fp16.safetensors");
        assert_eq!(
            add_variant("diffusion_pytorch_model.safetensors.index.json", Some("fp16")),
            "diffusion_pytorch_model.safetensors.index.fp16.json"
        );
        assert_eq!(add_variant("model.safetensors", None), "model.safetensors");
    }

    #[test]
    fn sharded_and_variant_weights_resolve_per_component() {
        let src = pipeline_dir("tiny-sd15").join("unet/diffusion_pytorch_model.safetensors");
        let d = tempfile::tempdir().unwrap();
        let names = write_shards(&src, d.path(), "diffusion_pytorch_model", None, 3);
        let w = ComponentWeights::find(d.path(), None).unwrap();
        assert_eq!(w.index.as_deref(), Some(d.path().join("diffusion_pytorch_model.safetensors.index.json").as_path()));
        assert_eq!(w.files, names.iter().map(|n| d.path().join(n)).collect::<Vec<_>>());
        // No fp16 variant: falls back to the default weights, as diffusers does per component.
        assert_eq!(ComponentWeights::find(d.path(), Some("fp16")).unwrap().variant, None);
        // An fp16 variant (sharded, diffusers' names) wins when asked for, and only then.
        let half = write_shards(&src, d.path(), "diffusion_pytorch_model", Some("fp16"), 2);
        assert_eq!(half[0], "diffusion_pytorch_model.fp16-00001-of-00002.safetensors");
        let v = ComponentWeights::find(d.path(), Some("fp16")).unwrap();
        assert_eq!(v.variant.as_deref(), Some("fp16"));
        assert!(v.index.unwrap().ends_with("diffusion_pytorch_model.safetensors.index.fp16.json"));
        assert_eq!(v.files.len(), 2);
        assert_eq!(ComponentWeights::find(d.path(), None).unwrap().files.len(), 3);
        // The shards together hold exactly the unsharded tensors; the id is stable and differs from the file's.
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&w.files, candle_core::DType::F32, &candle_core::Device::Cpu) }.unwrap();
        let whole = candle_core::safetensors::load(&src, &candle_core::Device::Cpu).unwrap();
        for (k, t) in &whole {
            let got = vb.get(t.shape(), k).unwrap();
            assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{k}");
        }
        assert_eq!(w.sha256().unwrap(), w.sha256().unwrap());
        assert_ne!(w.sha256().unwrap(), crate::hash::sha256_file(&src).unwrap());
        // A missing shard is named.
        std::fs::remove_file(d.path().join(&names[1])).unwrap();
        let err = ComponentWeights::find(d.path(), None).unwrap_err().to_string();
        assert!(err.contains(&names[1]) && err.contains("missing"), "{err}");
    }

    #[test]
    fn bad_indexes_and_pickles_are_refused_with_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model.safetensors.index.json"), r#"{"weight_map": {"a": "../../etc/x.safetensors"}}"#).unwrap();
        let err = ComponentWeights::find(d.path(), None).unwrap_err().to_string();
        assert!(err.contains("weight_map.a") && err.contains("model.safetensors.index.json"), "{err}");
        std::fs::write(d.path().join("model.safetensors.index.json"), r#"{"metadata": {}}"#).unwrap();
        assert!(ComponentWeights::find(d.path(), None).unwrap_err().to_string().contains("weight_map"));

        let p = tempfile::tempdir().unwrap();
        std::fs::create_dir(p.path().join("unet")).unwrap();
        std::fs::write(p.path().join("unet/diffusion_pytorch_model.bin"), b"pickle").unwrap();
        let err = ComponentWeights::find(&p.path().join("unet"), Some("fp16")).unwrap_err().to_string();
        assert!(err.contains("diffusion_pytorch_model.bin") && err.contains("arbitrary code") && err.contains("safe_serialization=True"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = ComponentWeights::find(empty.path(), None).unwrap_err().to_string();
        assert!(err.contains("no weights found") && err.contains("diffusion_pytorch_model.safetensors.index.json"), "{err}");
    }
}
