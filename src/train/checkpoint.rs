//! Checkpoints: `checkpoints/checkpoint-<step>/` with the LoRA factors, the optimizer's state
//! (AdamW's moments, or all of Prodigy's) and the step. Written under a temporary name, renamed into place, then marked `COMPLETE`; only
//! marked checkpoints are ever resumed from, so a kill at any moment leaves either the previous
//! checkpoint or a complete new one. The newest K are kept.

use super::lora_params::{write_safetensors, TrainableLora};
use super::loss_scale::LossScaler;
use super::optim::Optimizer;
use candle_core::Device;
use std::path::{Path, PathBuf};

const MARKER: &str = "COMPLETE";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {detail}", .path.display())]
    Io { path: PathBuf, detail: String },
    #[error("resume_from_checkpoint: {0}")]
    NotFound(String),
    #[error("{}: checkpoint does not fit this run: {detail}", .path.display())]
    Mismatch { path: PathBuf, detail: String },
    /// Writing the LoRA or optimizer tensors.
    #[error(transparent)]
    Tensors(super::lora_params::LoraParamsError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |e| CheckpointError::Io { path: path.to_path_buf(), detail: e.to_string() }
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub step: usize,
}

fn step_of(dir: &Path) -> Option<usize> {
    dir.file_name()?.to_str()?.strip_prefix("checkpoint-")?.parse().ok()
}

/// Complete checkpoints under `root`, oldest first.
pub fn complete(root: &Path) -> Vec<Checkpoint> {
    let mut out: Vec<Checkpoint> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(MARKER).is_file())
        .filter_map(|dir| step_of(&dir).map(|step| Checkpoint { dir, step }))
        .collect();
    out.sort_by_key(|c| c.step);
    out
}

pub fn latest_complete(root: &Path) -> Option<PathBuf> {
    complete(root).pop().map(|c| c.dir)
}

impl Checkpoint {
    /// `latest`, or a checkpoint folder (absolute, or a name under `root`).
    pub fn find(root: &Path, spec: &str) -> Result<Self, CheckpointError> {
        if spec == "latest" {
            return complete(root).pop().ok_or_else(|| CheckpointError::NotFound(format!("no complete checkpoint under {}", root.display())));
        }
        let dir = if Path::new(spec).is_absolute() { PathBuf::from(spec) } else { root.join(spec) };
        if !dir.join(MARKER).is_file() {
            return Err(CheckpointError::NotFound(format!("{} is not a complete checkpoint (no {MARKER} marker)", dir.display())));
        }
        let step = step_of(&dir).ok_or_else(|| CheckpointError::NotFound(format!("{}: expected a folder named checkpoint-<step>", dir.display())))?;
        Ok(Checkpoint { dir, step })
    }

    /// Restores the LoRA factors and optimizer; returns the loss scaler's state when the run
    /// that wrote the checkpoint scaled its loss (f16), so a resumed run continues with its scale.
    /// `loras`: the UNet's, then each trained text encoder's; all must be in the checkpoint.
    pub fn restore(&self, loras: &[&TrainableLora], opt: &mut Optimizer) -> Result<Option<LossScaler>, CheckpointError> {
        let device = loras.iter().flat_map(|l| l.vars()).next().map(|v| v.device().clone()).unwrap_or(Device::Cpu);
        let load = |name: &str| {
            let p = self.dir.join(name);
            candle_core::safetensors::load(&p, &device).map_err(|e| CheckpointError::Io { path: p.clone(), detail: e.to_string() })
        };
        let mismatch = |detail: String| CheckpointError::Mismatch { path: self.dir.clone(), detail };
        let saved = load("lora.safetensors")?;
        for lora in loras {
            lora.load_values(&saved).map_err(|e| mismatch(e.to_string()))?;
        }
        // A checkpoint with text-encoder factors resumed without train_text_encoder would drop them.
        let expected: usize = loras.iter().map(|l| l.named_tensors().len()).sum();
        if saved.len() != expected {
            return Err(mismatch(format!(
                "it holds {} LoRA tensors, this run trains {expected} (train_text_encoder or network changed?)",
                saved.len()
            )));
        }
        let state_path = self.dir.join("state.json");
        let state: serde_json::Value = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| mismatch(format!("state.json: {e}")))?,
            Err(_) => serde_json::Value::Null,
        };
        // Checkpoints from before `optimizer:` existed were all AdamW's.
        let written_by = state.get("optimizer").and_then(|v| v.as_str()).unwrap_or("adamw");
        if written_by != opt.name() {
            return Err(mismatch(format!("it holds {written_by}'s state, this run uses optimizer: {} (set optimizer: {written_by})", opt.name())));
        }
        let vars: Vec<&candle_core::Var> = loras.iter().flat_map(|l| l.vars()).collect();
        opt.load_state(&load("optimizer.safetensors")?, &vars, self.step).map_err(|e| mismatch(e.to_string()))?;
        match state.get("loss_scaler") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| mismatch(format!("state.json loss_scaler: {e}"))),
        }
    }
}

/// Writes checkpoint-`step` (every component's factors in one file) atomically and prunes to
/// the newest `keep`.
pub fn save(
    root: &Path,
    step: usize,
    loras: &[&TrainableLora],
    opt: &Optimizer,
    scaler: Option<&LossScaler>,
    keep: Option<usize>,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let final_dir = root.join(format!("checkpoint-{step}"));
    let tmp = root.join(format!(".checkpoint-{step}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let cpu = |v: Vec<(String, candle_core::Tensor)>| -> Result<Vec<(String, candle_core::Tensor)>, CheckpointError> {
        v.into_iter()
            .map(|(n, t)| {
                t.to_device(&Device::Cpu)
                    .and_then(|t| t.contiguous())
                    .map(|t| (n, t))
                    .map_err(|e| CheckpointError::Io { path: tmp.clone(), detail: e.to_string() })
            })
            .collect()
    };
    // The weights writer's error names the file already.
    let write = |name: &str, t| write_safetensors(&tmp.join(name), t, None).map_err(CheckpointError::Tensors);
    write("lora.safetensors", cpu(loras.iter().flat_map(|l| l.named_tensors()).collect())?)?;
    let opt_state = opt.state_tensors().map_err(|e| CheckpointError::Io { path: tmp.clone(), detail: e.to_string() })?;
    write("optimizer.safetensors", cpu(opt_state)?)?;
    let state = serde_json::json!({
        "step": step, "optimizer": opt.name(), "optimizer_step": opt.steps(), "rank": loras.first().map(|l| l.rank), "alpha": loras.first().map(|l| l.alpha),
        "modules": loras.iter().map(|l| l.modules.len()).sum::<usize>(), "components": loras.iter().map(|l| l.component.as_str()).collect::<Vec<_>>(), "loss_scaler": scaler,
    });
    std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(&state).expect("json")).map_err(io(&tmp))?;
    if final_dir.exists() {
        // A leftover from an interrupted earlier run at the same step: replace it.
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    std::fs::write(final_dir.join(MARKER), step.to_string()).map_err(io(&final_dir))?;
    if let Some(k) = keep {
        let all = complete(root);
        let excess = all.len().saturating_sub(k.max(1));
        for old in &all[..excess] {
            std::fs::remove_dir_all(&old.dir).map_err(io(&old.dir))?;
        }
    }
    Ok(final_dir)
}

/// Drops log lines past `step` (a resumed run rewrites them); a run from the start (`step` 0)
/// drops them all, its step-0 line (the `val_loss` baseline) included.
pub fn truncate_log(path: &Path, step: usize) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| step > 0 && s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::atomic::write(path, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_checkpoints_count_and_old_ones_are_pruned() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for s in [2, 4, 6] {
            std::fs::create_dir_all(root.join(format!("checkpoint-{s}"))).unwrap();
            std::fs::write(root.join(format!("checkpoint-{s}")).join(MARKER), "").unwrap();
        }
        std::fs::create_dir_all(root.join("checkpoint-8")).unwrap(); // killed before the marker
        assert_eq!(Checkpoint::find(root, "latest").unwrap().step, 6);
        assert!(Checkpoint::find(root, "checkpoint-8").is_err());
        assert_eq!(Checkpoint::find(root, "checkpoint-4").unwrap().step, 4);
        let e = Checkpoint::find(&root.join("nothing"), "latest").err().unwrap().to_string();
        assert!(e.contains("no complete checkpoint"), "{e}");
    }

    #[test]
    fn log_lines_after_the_resume_step_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("training_log.jsonl");
        std::fs::write(&p, "{\"step\":0,\"val_loss\":1}\n{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n").unwrap();
        truncate_log(&p, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"step\":0,\"val_loss\":1}\n{\"step\":1}\n{\"step\":2}\n");
        truncate_log(&p, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "", "a run from the start writes its baseline again");
    }
}
