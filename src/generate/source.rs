//! Where a pipeline comes from: a local folder, or a Hub repo id fetched through hf-hub into the
//! standard cache (honouring --endpoint, so the offline Hub can serve it).

use crate::hub::{download::snapshot, HubClient, HubError};
use crate::repo_id::RepoId;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{spec:?} is neither a pipeline folder (with model_index.json) nor a Hub repo id `namespace/name`")]
    NotFound { spec: String },
    #[error("{}: a folder without model_index.json is not a diffusers pipeline", .0.display())]
    NotAPipeline(PathBuf),
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// The files a pipeline needs, with weights of the chosen variant (e.g. "fp16") or the default.
pub fn pipeline_patterns(variant: Option<&str>) -> Vec<String> {
    let mut p: Vec<String> =
        ["model_index.json", "*/config.json", "scheduler/scheduler_config.json", "tokenizer*/*"].iter().map(|s| s.to_string()).collect();
    for stem in ["diffusion_pytorch_model", "model"] {
        p.push(format!("*/{stem}.safetensors"));
        if let Some(v) = variant {
            p.push(format!("*/{stem}.{v}.safetensors"));
        }
    }
    p
}

/// `namespace/name[@revision]` → the repo and the revision, if any.
pub fn repo_spec(spec: &str) -> Option<(RepoId, Option<&str>)> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (spec, None),
    };
    Some((RepoId::parse(id).ok()?, revision))
}

/// Resolves `spec` to a local pipeline folder, downloading from the Hub if it is a repo id.
pub async fn resolve_pipeline(spec: &str, client: &HubClient, variant: Option<&str>) -> Result<PathBuf, SourceError> {
    let path = Path::new(spec);
    if path.exists() {
        if !path.join("model_index.json").is_file() {
            return Err(SourceError::NotAPipeline(path.to_path_buf()));
        }
        return Ok(path.to_path_buf());
    }
    let (repo, revision) = repo_spec(spec).ok_or_else(|| SourceError::NotFound { spec: spec.to_string() })?;
    let dir = snapshot(client, &repo, revision, pipeline_patterns(variant)).await?;
    if !dir.join("model_index.json").is_file() {
        return Err(SourceError::NotAPipeline(dir));
    }
    Ok(dir)
}

/// Resolves a replacement VAE: a folder with `config.json` + weights (or a pipeline folder with
/// `vae/`), or a Hub repo holding one (e.g. `madebyollin/sdxl-vae-fp16-fix`).
pub async fn resolve_vae(spec: &str, client: &HubClient, variant: Option<&str>) -> Result<PathBuf, SourceError> {
    let path = Path::new(spec);
    let dir = if path.exists() {
        path.to_path_buf()
    } else {
        let (repo, revision) = repo_spec(spec).ok_or_else(|| SourceError::NotFound { spec: spec.to_string() })?;
        let mut allow: Vec<String> = vec!["config.json".into(), "vae/config.json".into()];
        for stem in ["diffusion_pytorch_model", "vae/diffusion_pytorch_model"] {
            allow.push(format!("{stem}.safetensors"));
            if let Some(v) = variant {
                allow.push(format!("{stem}.{v}.safetensors"));
            }
        }
        snapshot(client, &repo, revision, allow).await?
    };
    [dir.clone(), dir.join("vae")]
        .into_iter()
        .find(|d| d.join("config.json").is_file())
        .ok_or_else(|| SourceError::NotFound { spec: format!("{spec} (no VAE config.json in {})", dir.display()) })
}

/// Resolves a LoRA: a `.safetensors` file, a folder holding one, or a Hub repo
/// (`pytorch_lora_weights.safetensors` preferred, as diffusers does).
pub async fn resolve_lora(spec: &str, client: &HubClient) -> Result<PathBuf, SourceError> {
    let path = Path::new(spec);
    let dir = if path.is_file() {
        return Ok(path.to_path_buf());
    } else if path.is_dir() {
        path.to_path_buf()
    } else {
        let repo = RepoId::parse(spec).map_err(|_| SourceError::NotFound { spec: spec.to_string() })?;
        snapshot(client, &repo, None, vec!["*.safetensors".into()]).await?
    };
    pick_lora_file(&dir).ok_or_else(|| SourceError::NotFound { spec: format!("{spec} (no LoRA .safetensors in {})", dir.display()) })
}

/// diffusers' `_best_guess_weight_name`: prefer `pytorch_lora_weights.safetensors`, skip
/// scheduler/optimizer/checkpoint files.
fn pick_lora_file(dir: &Path) -> Option<PathBuf> {
    let preferred = dir.join("pytorch_lora_weights.safetensors");
    if preferred.is_file() {
        return Some(preferred);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".safetensors") && !["scheduler", "optimizer", "checkpoint"].iter().any(|w| n.contains(w))
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_patterns_include_both_weight_files() {
        let p = pipeline_patterns(Some("fp16"));
        assert!(p.contains(&"*/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(p.contains(&"*/model.safetensors".to_string()));
    }

    #[test]
    fn lora_file_choice_follows_diffusers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("optimizer.safetensors"), b"x").unwrap();
        std::fs::write(d.path().join("my_lora.safetensors"), b"x").unwrap();
        assert_eq!(pick_lora_file(d.path()).unwrap().file_name().unwrap(), "my_lora.safetensors");
        std::fs::write(d.path().join("pytorch_lora_weights.safetensors"), b"x").unwrap();
        assert_eq!(pick_lora_file(d.path()).unwrap().file_name().unwrap(), "pytorch_lora_weights.safetensors");
    }

    #[test]
    fn local_folders_are_checked() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = HubClient::new("http://127.0.0.1:9", None).unwrap();
        let fixture = crate::diffusion::testing::pipeline_dir("tiny-sd15");
        assert_eq!(rt.block_on(resolve_pipeline(fixture.to_str().unwrap(), &client, None)).unwrap(), fixture);
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(rt.block_on(resolve_pipeline(d.path().to_str().unwrap(), &client, None)), Err(SourceError::NotAPipeline(_))));
        assert!(matches!(rt.block_on(resolve_pipeline("not a model", &client, None)), Err(SourceError::NotFound { .. })));
        let vae = fixture.join("vae");
        assert_eq!(rt.block_on(resolve_vae(vae.to_str().unwrap(), &client, None)).unwrap(), vae);
        assert_eq!(rt.block_on(resolve_vae(fixture.to_str().unwrap(), &client, None)).unwrap(), vae);
        assert!(matches!(rt.block_on(resolve_vae(d.path().to_str().unwrap(), &client, None)), Err(SourceError::NotFound { .. })));
    }
}
