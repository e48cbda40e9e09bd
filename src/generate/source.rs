//! A [`ModelRef`] resolved to local files: a pipeline folder, a VAE folder or a LoRA file, checked
//! where they are on disk, or fetched from a Hub repo through hf-hub into the standard cache
//! (honouring --endpoint, so the offline Hub can serve it).

use super::repo_files::{choose_weights, select, shards_of, WeightsChoice};
use crate::diffusion::config::read_json;
use crate::hub::download::{snapshot, RepoFetcher};
use crate::hub::{HubClient, HubError};
use crate::model_ref::ModelRef;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{spec:?}: {what}")]
    NotFound { spec: String, what: String },
    #[error("{}: a folder without model_index.json is not a diffusers pipeline", .0.display())]
    NotAPipeline(PathBuf),
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The repo's `model_index.json` or weights cannot be used (bad input).
    #[error("{0}")]
    Select(String),
}

/// Resolves a base pipeline to its local folder, downloading from the Hub what
/// [`fetch_pipeline`] picks if it is a repo.
pub async fn resolve_pipeline(model: &ModelRef, client: &HubClient, variant: Option<&str>) -> Result<PathBuf, SourceError> {
    match model {
        ModelRef::Local(path) => pipeline_folder(path),
        ModelRef::Hub { repo, revision } => fetch_pipeline(&mut RepoFetcher::new(client, repo, revision.as_deref())?, variant).await,
    }
}

/// A local pipeline folder: one with `model_index.json`.
pub fn pipeline_folder(path: &Path) -> Result<PathBuf, SourceError> {
    if !path.join("model_index.json").is_file() {
        return Err(SourceError::NotAPipeline(path.to_path_buf()));
    }
    Ok(path.to_path_buf())
}

/// Downloads a pipeline the way diffusers' `DiffusionPipeline.download` does: `model_index.json`
/// first, then only the files [`repo_files::select`] picks for the components it lists (shards
/// once their index is read); returns the snapshot folder.
pub async fn fetch_pipeline(fetcher: &mut RepoFetcher, variant: Option<&str>) -> Result<PathBuf, SourceError> {
    let index_path = fetcher.file("model_index.json").await?;
    let dir = index_path.parent().map(Path::to_path_buf).ok_or_else(|| SourceError::NotAPipeline(index_path.clone()))?;
    let model_index: serde_json::Value = read_json(&index_path).map_err(|e| SourceError::Select(format!("{}: {e}", fetcher.repo())))?;
    let listing = fetcher.list(&dir).await?;
    let names: Vec<String> = listing.iter().map(|(p, _)| p.clone()).collect();
    let selection = select(&model_index, &names, variant).map_err(|e| SourceError::Select(format!("{}: {e}", fetcher.repo())))?;
    let size_of = |p: &str| listing.iter().find(|(n, _)| n == p).map(|(_, s)| *s).unwrap_or(0);
    let mut wanted: Vec<String> = selection.files.iter().filter(|f| *f != "model_index.json" && !selection.indexes.contains(f)).cloned().collect();
    for index in &selection.indexes {
        let local = fetcher.file(index).await?;
        let json: serde_json::Value = read_json(&local).map_err(|e| SourceError::Select(e.to_string()))?;
        wanted.extend(shards_of(index, &json, &names).map_err(|e| SourceError::Select(format!("{}: {e}", fetcher.repo())))?);
    }
    let total = wanted.iter().map(|f| size_of(f)).sum();
    fetcher.files(&wanted, total).await?;
    Ok(dir)
}

/// Resolves a replacement VAE: a folder with `config.json` + weights (or a pipeline folder with
/// `vae/`), or a Hub repo holding one (e.g. `madebyollin/sdxl-vae-fp16-fix`).
pub async fn resolve_vae(vae: &ModelRef, client: &HubClient, variant: Option<&str>) -> Result<PathBuf, SourceError> {
    match vae {
        ModelRef::Local(path) => vae_folder(path, &vae.to_string()),
        ModelRef::Hub { repo, revision } => {
            let dir = fetch_vae(&mut RepoFetcher::new(client, repo, revision.as_deref())?, variant).await?;
            vae_folder(&dir, &vae.to_string())
        }
    }
}

/// The VAE folder in `dir`: `dir` itself when it holds `config.json`, else its `vae/`.
pub fn vae_folder(dir: &Path, spec: &str) -> Result<PathBuf, SourceError> {
    [dir.to_path_buf(), dir.join("vae")]
        .into_iter()
        .find(|d| d.join("config.json").is_file())
        .ok_or_else(|| SourceError::NotFound { spec: spec.to_string(), what: format!("no VAE config.json in {}", dir.display()) })
}

/// A VAE repo's `config.json` and one set of weights (the variant, else the default), at the
/// root or in `vae/`; returns the snapshot folder.
async fn fetch_vae(fetcher: &mut RepoFetcher, variant: Option<&str>) -> Result<PathBuf, SourceError> {
    // The listing needs a snapshot folder offline; any file pins it, and every VAE repo has a config.
    let mut snapshot_dir = PathBuf::new();
    if fetcher.offline() {
        snapshot_dir = match fetcher.file("config.json").await {
            Ok(p) => p.parent().map(Path::to_path_buf),
            Err(_) => fetcher.file("vae/config.json").await?.parent().and_then(Path::parent).map(Path::to_path_buf),
        }
        .unwrap_or_default();
    }
    let listing = fetcher.list(&snapshot_dir).await?;
    let names: Vec<String> = listing.iter().map(|(p, _)| p.clone()).collect();
    let folder = ["", "vae"]
        .into_iter()
        .find(|f| names.iter().any(|n| *n == if f.is_empty() { "config.json".to_string() } else { format!("{f}/config.json") }))
        .ok_or_else(|| SourceError::NotFound { spec: fetcher.repo().to_string(), what: "no config.json or vae/config.json in the repo".into() })?;
    let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
    let in_folder: Vec<&str> = names.iter().filter_map(|p| p.strip_prefix(&prefix)).filter(|r| !r.contains('/')).collect();
    let present = names.iter().map(String::as_str).collect();
    let repo = fetcher.repo().to_string();
    let select_err = |e: super::repo_files::SelectError| SourceError::Select(format!("{repo}: {e}"));
    let mut wanted = vec![format!("{prefix}config.json")];
    match choose_weights(folder, &present, variant, &in_folder).map_err(select_err)? {
        WeightsChoice::Single(f) => wanted.push(f),
        WeightsChoice::Sharded(index) => {
            let local = fetcher.file(&index).await?;
            let json: serde_json::Value = read_json(&local).map_err(|e| SourceError::Select(e.to_string()))?;
            wanted.extend(shards_of(&index, &json, &names).map_err(select_err)?);
        }
    }
    let total = wanted.iter().map(|f| listing.iter().find(|(n, _)| n == f).map(|(_, s)| *s).unwrap_or(0)).sum();
    let local = fetcher.files(&wanted, total).await?;
    Ok(local[0].parent().map(|p| if folder.is_empty() { p } else { p.parent().unwrap_or(p) }).unwrap_or(Path::new(".")).to_path_buf())
}

/// Resolves a LoRA: a `.safetensors` file, a folder holding one, or a Hub repo
/// (`pytorch_lora_weights.safetensors` preferred, as diffusers does).
pub async fn resolve_lora(lora: &ModelRef, client: &HubClient) -> Result<PathBuf, SourceError> {
    match lora {
        ModelRef::Local(path) => lora_file(path, &lora.to_string()),
        ModelRef::Hub { repo, revision } => {
            let dir = snapshot(client, repo, revision.as_deref(), vec!["*.safetensors".into()]).await?;
            lora_file(&dir, &lora.to_string())
        }
    }
}

/// The LoRA weights at `path`: the file itself, or the one [`pick_lora_file`] picks in a folder.
pub fn lora_file(path: &Path, spec: &str) -> Result<PathBuf, SourceError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    pick_lora_file(path).ok_or_else(|| SourceError::NotFound { spec: spec.to_string(), what: format!("no LoRA .safetensors in {}", path.display()) })
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
        let fixture = crate::diffusion::testing::pipeline_dir("tiny-sd15");
        assert_eq!(pipeline_folder(&fixture).unwrap(), fixture);
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(pipeline_folder(d.path()), Err(SourceError::NotAPipeline(_))));
        let vae = fixture.join("vae");
        assert_eq!(vae_folder(&vae, "v").unwrap(), vae);
        assert_eq!(vae_folder(&fixture, "v").unwrap(), vae);
        let e = vae_folder(d.path(), "my-vae").unwrap_err();
        assert!(matches!(&e, SourceError::NotFound { .. }) && e.to_string().starts_with("\"my-vae\": no VAE config.json in "), "{e}");
        let e = lora_file(d.path(), "my-lora").unwrap_err();
        assert!(e.to_string().contains("no LoRA .safetensors in"), "{e}");
    }
}
