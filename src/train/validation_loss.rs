//! The validation loss: photos held out of training (`validation_split: n` of them chosen from
//! the seed, or every photo in the dataset's `validation/` folder), whose loss is measured every
//! `validation_steps` with no optimizer step, at fixed timesteps and with fixed noise, and logged
//! as `val_loss`. Training loss is noisy because every step draws new timesteps and noise; this
//! one changes only when the weights do, so a curve that turns up means over-fitting.
//!
//! It follows kohya sd-scripts' validation loss (`train_network.py`, PR #1903): the same loss
//! function as training ([`batch_loss`]: objective, min-SNR weights, noise offset) at
//! [`TIMESTEPS`] timesteps spread evenly over the schedule, never its two ends (200, 400, 600
//! and 800 of 1000), every draw from the seed, averaged over photos and timesteps. Photos are
//! counted, as SimpleTuner's `num_eval_images` does, rather than kohya's fraction: with the 10
//! to 50 photos of a LoRA set, "hold out 2" says exactly what happens, a fraction rounds.

use super::objective::{step_rng, Objective};
use super::trainer::{batch_loss, Example, Prompts, TrainError};
use crate::generate::pipeline::Pipeline;
use crate::names;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Timesteps each held-out photo is measured at (kohya's `NUM_VALIDATION_TIMESTEPS`).
pub const TIMESTEPS: usize = 4;

/// The `step` argument of every validation draw in [`step_rng`]: one no run reaches, so the
/// validation noise never repeats a training step's.
const STREAM: u64 = 0x7A11_D055;

/// The fixed timesteps for a schedule of `n` training timesteps: `k·n/(TIMESTEPS+1)` for
/// k = 1..=TIMESTEPS, as numpy's `linspace(0, n, TIMESTEPS + 2)[1:-1]` in kohya's script.
pub fn timesteps(n: usize) -> Vec<usize> {
    (1..=TIMESTEPS).map(|k| k * n / (TIMESTEPS + 1)).collect()
}

/// Every how many optimizer steps `val_loss` is logged: `validation_steps` when set, else ten
/// times a run of `total_steps`.
pub fn every(validation_steps: Option<usize>, total_steps: usize) -> usize {
    validation_steps.filter(|&n| n > 0).unwrap_or_else(|| total_steps.div_ceil(10)).max(1)
}

/// Whether `val_loss` is measured after step `step` (0: before training, as the baseline).
pub fn due(step: usize, every: usize, total_steps: usize) -> bool {
    step == 0 || step.is_multiple_of(every) || step == total_steps
}

/// Where the held-out photos came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldOutFrom {
    /// `validation_split: n`: n photos chosen from the seed.
    ValidationSplit,
    /// Every photo under the dataset's `validation/` folder.
    ValidationFolder,
}

/// What training_summary.json records about the validation loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationLossSettings {
    pub held_out_from: HeldOutFrom,
    /// (file, prompt) of every held-out photo.
    pub photos: Vec<(String, String)>,
    /// The timesteps each photo is measured at.
    pub timesteps: Vec<usize>,
    /// `val_loss` is logged every this many steps, before the first and after the last.
    pub every_steps: usize,
    /// The last `val_loss` (after the final step).
    pub final_val_loss: Option<f32>,
}

/// Which of a run's photos train and which are held out, after [`hold_out`] reordered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The first `train` photos train; the rest are held out.
    pub train: usize,
    /// `None`: no validation loss.
    pub from: Option<HeldOutFrom>,
    /// The held-out photos' names relative to the dataset folder (`validation/…` for the folder's).
    pub names: Vec<String>,
}

/// Reorders `items` (the readable photos of the folder `dataset`, in its order) so the held-out
/// ones come last, in their own order, and says which is which. Held out: every photo under
/// `dataset/validation/`, else `split` photos drawn from `seed` (train.yaml's
/// `validation_split` and `seed`). Errors name the key and what to do.
pub fn hold_out<T>(dataset: &Path, split: usize, seed: u64, items: Vec<T>, path: impl Fn(&T) -> &Path) -> Result<(Vec<T>, Plan), String> {
    let folder = dataset.join(names::VALIDATION_PHOTOS_DIR);
    let in_folder: Vec<bool> = items.iter().map(|t| path(t).starts_with(&folder)).collect();
    let n = items.len();
    let (held, from) = if in_folder.iter().any(|&h| h) {
        if split > 0 {
            return Err(format!(
                "validation_split: {split} is set, but {} already holds photos out of training; use one or the other",
                folder.display()
            ));
        }
        (in_folder, HeldOutFrom::ValidationFolder)
    } else if split > 0 {
        if split >= n {
            return Err(format!(
                "validation_split: holding out {split} of the {n} readable photo(s) would leave none to train on; hold out fewer (1 or 2 of a small set)"
            ));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut step_rng(seed, STREAM, u64::MAX));
        let mut held = vec![false; n];
        for &i in &order[..split] {
            held[i] = true;
        }
        (held, HeldOutFrom::ValidationSplit)
    } else {
        return Ok((items, Plan { train: n, from: None, names: Vec::new() }));
    };
    let train = held.iter().filter(|&&h| !h).count();
    if train == 0 {
        return Err(format!("{}: every readable photo is in the validation folder; nothing is left to train on", folder.display()));
    }
    let (mut kept, mut out) = (Vec::with_capacity(n), Vec::new());
    for (item, h) in items.into_iter().zip(held) {
        if h {
            out.push(item);
        } else {
            kept.push(item);
        }
    }
    let names = out.iter().map(|t| crate::dataset::relative_name(dataset, path(t))).collect();
    kept.append(&mut out);
    Ok((kept, Plan { train, from: Some(from), names }))
}

/// The held-out photos, prepared exactly as training examples are (same crops, latent cache and
/// prompt embeddings), and never drawn into a training batch.
pub(super) struct HeldOut {
    pub(super) examples: Vec<Example>,
    /// (file, prompt) per example.
    pub(super) photos: Vec<(String, String)>,
    pub(super) from: Option<HeldOutFrom>,
}

impl HeldOut {
    /// Splits the prepared examples (and their (file, prompt) rows) after the first
    /// `plan.train`, which [`hold_out`] put first.
    pub(super) fn split_off(examples: &mut Vec<Example>, trained_on: &mut Vec<(String, String)>, plan: Plan) -> HeldOut {
        let photos = trained_on.split_off(plan.train).into_iter().zip(plan.names).map(|((_, prompt), name)| (name, prompt)).collect();
        HeldOut { examples: examples.split_off(plan.train), photos, from: plan.from }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The mean loss of every held-out photo at every fixed timestep, each (photo, timestep)
    /// with its own fixed draws (flip, latent sample, noise) from `seed`: the same value for the
    /// same weights, however often and whenever it is measured. No optimizer step follows.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn loss(
        &self,
        pipeline: &Pipeline,
        objective: &Objective,
        prompts: &Prompts,
        scaling: f64,
        shift: Option<f64>,
        xl: bool,
        seed: u64,
    ) -> Result<f32, TrainError> {
        let mut sum = 0f64;
        let ts = timesteps(objective.schedule.alphas_cumprod.len());
        for (k, &t) in ts.iter().enumerate() {
            let at = Objective { timestep: Some(t), ..objective.clone() };
            for i in 0..self.examples.len() {
                let mut rng = step_rng(seed, STREAM, (i * TIMESTEPS + k) as u64);
                // One photo at a time: photos of different sizes cannot share a batch, and a
                // validation pass never holds more than a training micro-batch does.
                let loss = batch_loss(pipeline, &at, &self.examples, &[i], prompts, None, scaling, shift, xl, &mut rng)?;
                sum += f64::from(loss.to_scalar::<f32>()?);
            }
        }
        Ok((sum / (ts.len() * self.examples.len()).max(1) as f64) as f32)
    }

    /// The summary's record, `None` without held-out photos.
    pub(super) fn settings(&self, num_train_timesteps: usize, every_steps: usize, final_val_loss: Option<f32>) -> Option<ValidationLossSettings> {
        let from = self.from?;
        Some(ValidationLossSettings {
            held_out_from: from,
            photos: self.photos.clone(),
            timesteps: timesteps(num_train_timesteps),
            every_steps,
            final_val_loss,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// [`hold_out`] on photos of /data/sky, by path.
    fn hold(split: usize, seed: u64, photos: Vec<PathBuf>) -> Result<(Vec<PathBuf>, Plan), String> {
        hold_out(Path::new("/data/sky"), split, seed, photos, |p| p)
    }

    fn photos(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(|n| Path::new("/data/sky").join(n)).collect()
    }

    #[test]
    fn timesteps_are_kohyas() {
        assert_eq!(timesteps(1000), [200, 400, 600, 800]);
        assert_eq!(timesteps(10), [2, 4, 6, 8]);
    }

    #[test]
    fn the_schedule_has_a_baseline_a_last_point_and_ten_by_default() {
        assert_eq!(every(None, 100), 10);
        assert_eq!(every(None, 3), 1);
        assert_eq!(every(Some(25), 100), 25);
        assert_eq!(every(Some(0), 7), 1);
        let steps: Vec<usize> = (0..=95).filter(|&s| due(s, every(None, 95), 95)).collect();
        assert_eq!(steps, [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]);
    }

    #[test]
    fn the_split_is_drawn_from_the_seed_and_moved_last() {
        let all = photos(&["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]);
        let (order, plan) = hold(2, 0, all.clone()).unwrap();
        assert_eq!((plan.train, plan.from), (4, Some(HeldOutFrom::ValidationSplit)));
        let names: Vec<String> = order[4..].iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(plan.names, names);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, all, "a reordering, nothing lost");
        assert!(order[..4].windows(2).all(|w| w[0] < w[1]) && order[4..].windows(2).all(|w| w[0] < w[1]), "order kept on each side");
        assert_eq!(hold(2, 0, all.clone()).unwrap().0, order, "the same seed holds out the same photos");
        let other: Vec<_> = (1..20).map(|s| hold(2, s, all.clone()).unwrap().0[4..].to_vec()).collect();
        assert!(other.iter().any(|h| h != &order[4..]), "another seed holds out others");
        let (same, plan) = hold(0, 0, all.clone()).unwrap();
        assert_eq!((same, plan), (all.clone(), Plan { train: 6, from: None, names: vec![] }));
        let e = hold(6, 0, all).unwrap_err();
        assert!(e.starts_with("validation_split: holding out 6 of the 6"), "{e}");
    }

    #[test]
    fn the_validation_folder_holds_its_photos_out() {
        let all = photos(&["a.png", "validation/v1.png", "b.png", "validation/v2.png"]);
        let (order, plan) = hold(0, 0, all.clone()).unwrap();
        assert_eq!((plan.train, plan.from), (2, Some(HeldOutFrom::ValidationFolder)));
        assert_eq!(plan.names, ["validation/v1.png", "validation/v2.png"]);
        assert_eq!(order, [all[0].clone(), all[2].clone(), all[1].clone(), all[3].clone()]);
        let e = hold(1, 0, all).unwrap_err();
        assert!(e.contains("validation_split") && e.contains("/data/sky/validation"), "{e}");
        let e = hold(0, 0, photos(&["validation/v.png"])).unwrap_err();
        assert!(e.contains("nothing is left to train on"), "{e}");
    }
}
