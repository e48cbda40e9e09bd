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

    /// The weights of a component: `variant` (e.g. "fp16") first when asked, then the default file.
    pub fn weights(&self, component: &str, variant: Option<&str>) -> Result<PathBuf, PipelineError> {
        let dir = self.component(component)?;
        let stems = ["diffusion_pytorch_model", "model"];
        let mut tried = Vec::new();
        let variants: Vec<Option<&str>> = match variant {
            Some(v) => vec![Some(v), None],
            None => vec![None],
        };
        for v in variants {
            for stem in stems {
                let name = match v {
                    Some(v) => format!("{stem}.{v}.safetensors"),
                    None => format!("{stem}.safetensors"),
                };
                let p = dir.join(&name);
                if p.is_file() {
                    return Ok(p);
                }
                tried.push(name);
            }
        }
        Err(PipelineError::Missing { path: dir, detail: format!("no weights found (looked for {})", tried.join(", ")) })
    }
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
    use crate::diffusion::testing::pipeline_dir;

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
        assert!(sd.weights("unet", Some("fp16")).unwrap().ends_with("diffusion_pytorch_model.safetensors"));
        assert!(sd.weights("text_encoder", None).unwrap().ends_with("model.safetensors"));
        let xl = PipelineFiles::open(&pipeline_dir("tiny-sdxl")).unwrap();
        assert_eq!(xl.architecture, Architecture::StableDiffusionXl);
        let err = sd.component("text_encoder_2").unwrap_err().to_string();
        assert!(err.contains("text_encoder_2"), "{err}");
    }
}
