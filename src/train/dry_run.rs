//! What `train-and-push` publishes from an output folder, and its dry run: the checks a real run
//! would fail on first (the base model's files, the photos, their captions), without training.

use super::config::TrainConfig;
use crate::diffusion::config::{PipelineError, PipelineFiles};
use crate::names;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The globs `train-and-push` uploads from the output folder (never checkpoints, caches or
/// tokens); the kohya and ComfyUI copies exist only with `lora_formats`.
pub const PUBLISHED: [&str; 8] = [
    names::LORA_WEIGHTS,
    names::LORA_WEIGHTS_KOHYA,
    names::LORA_WEIGHTS_COMFYUI,
    names::README,
    "validation-seed-*.png",
    names::TRAIN_CONFIG,
    names::TRAINING_LOG,
    names::TRAINING_REPORT,
];

/// A photo the run would skip, with the loader's reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub file: PathBuf,
    pub reason: String,
}

/// What a run of `cfg` would train on and publish.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// Images found in the dataset folder, readable or not.
    pub images: usize,
    /// Of those, images that have a caption (0 with `captions: instance`).
    pub captioned: usize,
    /// Images training would skip: unreadable, or too small (or too elongated) for any bucket,
    /// with the trainer's reason.
    pub skipped: Vec<Skipped>,
    /// Readable images held out of training for the validation loss (`validation_split`, or
    /// the dataset's `validation/` folder).
    pub held_out: usize,
    /// The files the one commit would hold, by name (validation images only with a
    /// `validation_prompt`).
    pub files: Vec<String>,
    /// Where the captions come from, and how many photos fall back to the instance prompt.
    pub captions_from: crate::dataset::captions::Captions,
    /// The training resolution in pixels.
    pub resolution: usize,
    /// The aspect-ratio buckets the training photos would fall in, the most photos first (as
    /// `training_summary.json` will list them); empty with `bucketing: false`.
    pub buckets: Vec<super::buckets::BucketCount>,
}

impl DryRun {
    /// Images training would use.
    pub fn trainable(&self) -> usize {
        self.images - self.skipped.len() - self.held_out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Captions(#[from] crate::dataset::captions::CaptionError),
    /// A setting the photos cannot satisfy (e.g. holding out every photo).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Source(#[from] crate::dataset::hub_source::DatasetSourceError),
    /// The sizes the trainer derives from the pipeline's configs and train.yaml (boxed: the
    /// trainer's error is large and this one is returned by value).
    #[error(transparent)]
    Train(Box<super::TrainError>),
}

impl From<super::TrainError> for DryRunError {
    fn from(e: super::TrainError) -> Self {
        DryRunError::Train(Box::new(e))
    }
}

/// Checks a run of `cfg` on the pipeline in `model_dir` (already resolved: a local folder or the
/// Hub cache's snapshot) as far as it can without loading weights: the pipeline's files, every
/// photo decoded once, the captions read.
pub fn dry_run(cfg: &TrainConfig, model_dir: &Path) -> Result<DryRun, DryRunError> {
    let files = PipelineFiles::open(model_dir)?;
    let sizes = super::trainer::run_sizes(cfg, &files)?;
    let table = sizes.buckets.map(|spec| spec.resolutions()).unwrap_or_default();
    let dataset_dir = cfg.dataset.folder()?;
    let images = crate::dataset::list_images(dataset_dir)?;
    let captions = crate::dataset::captions::load_captions(dataset_dir, &images, cfg.captions, cfg.caption_column.as_deref())?;
    // Each photo decoded and placed as the trainer does, in the same order, so the held-out draw
    // below is the trainer's too.
    let mut skipped = Vec::new();
    let mut fitting = Vec::new();
    for p in &images {
        let placed = crate::dataset::images::load_rgb(p).map_err(|problem| problem.reason).and_then(|img| {
            let (w, h) = img.rgb.dimensions();
            sizes.buckets.map(|spec| spec.place(&table, w, h).map(|pl| Some(pl.bucket))).unwrap_or(Ok(None))
        });
        match placed {
            Ok(bucket) => fitting.push((p, bucket)),
            Err(reason) => skipped.push(Skipped { file: p.clone(), reason }),
        }
    }
    let n = fitting.len();
    let (fitting, plan) =
        super::validation_loss::hold_out(dataset_dir, cfg.validation_split, cfg.seed, fitting, |(p, _)| p.as_path()).map_err(DryRunError::Config)?;
    let keys: Vec<(u32, u32)> = fitting[..plan.train].iter().filter_map(|(_, b)| b.map(|(w, h)| (h, w))).collect();
    let mut files: Vec<String> =
        [names::LORA_WEIGHTS, names::README, names::TRAIN_CONFIG, names::TRAINING_LOG, names::TRAINING_REPORT].map(String::from).to_vec();
    files.extend(cfg.lora_formats.iter().filter(|f| **f != crate::diffusion::lora::export::ExportFormat::Peft).map(|f| f.file_name().to_string()));
    if cfg.validation_prompt.is_some() {
        files.extend((0..cfg.num_validation_images as u64).map(|i| format!("validation-seed-{}.png", cfg.seed + i)));
    }
    Ok(DryRun {
        images: images.len(),
        captioned: captions.captions.iter().filter(|c| c.is_some()).count(),
        skipped,
        held_out: n - plan.train,
        files,
        captions_from: captions,
        resolution: sizes.resolution,
        buckets: super::buckets::summary(&keys),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::testing::pipeline_dir;
    use crate::train::TrainKeys;

    fn config(d: &Path, extra: &str) -> TrainConfig {
        let yaml = format!(
            "base_model: {}\ndataset: {}\ninstance_prompt: a photo of SKY\noutput_dir: {}\n{extra}",
            pipeline_dir("tiny-sd15").display(),
            d.join("photos").display(),
            d.join("out").display()
        );
        std::fs::write(d.join("train.yaml"), yaml).unwrap();
        TrainConfig::load(Some(&d.join("train.yaml")), TrainKeys::default()).unwrap()
    }

    #[test]
    fn counts_photos_and_captions_names_the_unreadable_and_lists_the_commit() {
        let d = tempfile::tempdir().unwrap();
        crate::train::tests::write_photos(&d.path().join("photos"), 2);
        std::fs::remove_file(d.path().join("photos/sky-1.txt")).unwrap();
        std::fs::write(d.path().join("photos/broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
        let cfg = config(d.path(), "validation_prompt: a photo of SKY river\nnum_validation_images: 2\nseed: 7\n");
        let r = dry_run(&cfg, &pipeline_dir("tiny-sd15")).unwrap();
        assert_eq!((r.images, r.captioned, r.trainable()), (3, 1, 2));
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].file, d.path().join("photos/broken.jpg"));
        assert!(!r.skipped[0].reason.is_empty());
        assert_eq!(
            r.files,
            [
                names::LORA_WEIGHTS,
                names::README,
                names::TRAIN_CONFIG,
                names::TRAINING_LOG,
                names::TRAINING_REPORT,
                "validation-seed-7.png",
                "validation-seed-8.png"
            ]
        );
        let cfg = config(d.path(), "captions: instance\n");
        let r = dry_run(&cfg, &pipeline_dir("tiny-sd15")).unwrap();
        assert_eq!(r.held_out, 0);
        let held = dry_run(&config(d.path(), "validation_split: 1\n"), &pipeline_dir("tiny-sd15")).unwrap();
        assert_eq!((held.held_out, held.trainable()), (1, 1), "one of the two readable photos held out");
        let e = dry_run(&config(d.path(), "validation_split: 2\n"), &pipeline_dir("tiny-sd15")).unwrap_err();
        assert!(matches!(e, DryRunError::Config(_)) && e.to_string().contains("validation_split"), "{e}");
        assert_eq!((r.captioned, r.files.len()), (0, 5), "no validation prompt, no validation images");
    }

    #[test]
    fn a_folder_that_is_not_a_pipeline_or_has_no_photos_is_bad_input() {
        use crate::exit::{Categorized, ExitCategory};
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("photos")).unwrap();
        let cfg = config(d.path(), "");
        let e = dry_run(&cfg, d.path()).unwrap_err();
        assert!(matches!(e, DryRunError::Pipeline(_)), "{e}");
        assert_eq!(e.category(), ExitCategory::BadInput);
        let e = dry_run(&cfg, &pipeline_dir("tiny-sd15")).unwrap_err();
        assert!(matches!(e, DryRunError::Dataset(crate::dataset::DatasetError::NoImages { .. })), "{e}");
        assert_eq!(e.category(), ExitCategory::BadInput);
    }

    #[test]
    fn places_photos_in_the_trainers_buckets_and_names_the_too_small() {
        use crate::dataset::testgen as gen;
        let d = tempfile::tempdir().unwrap();
        let photos = d.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for (name, w, h, seed) in [("wide.jpg", 160, 80, 1), ("wide2.jpg", 150, 76, 5), ("square.jpg", 96, 96, 3), ("thumb.jpg", 30, 20, 4)] {
            std::fs::write(photos.join(name), gen::jpeg(&gen::photo(w, h, seed))).unwrap();
        }
        let cfg = config(d.path(), "resolution: 64\nbucket_reso_steps: 16\n");
        let r = dry_run(&cfg, &pipeline_dir("tiny-sd15")).unwrap();
        assert_eq!(r.resolution, 64);
        // kohya's rules at 64 px / 16 px steps (as tests/cli/train_buckets.rs trains them): 2:1 → 80×48.
        let b: Vec<(u32, u32, usize)> = r.buckets.iter().map(|b| (b.width, b.height, b.count)).collect();
        assert_eq!(b, [(80, 48, 2), (64, 64, 1)]);
        assert_eq!(r.trainable(), 3);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].file, photos.join("thumb.jpg"));
        assert!(r.skipped[0].reason.contains("too small") && r.skipped[0].reason.contains("min_bucket_reso"), "{}", r.skipped[0].reason);
        // The held-out photo is drawn among those that fit, and its bucket is not counted.
        let held = dry_run(&config(d.path(), "resolution: 64\nbucket_reso_steps: 16\nvalidation_split: 1\n"), &pipeline_dir("tiny-sd15")).unwrap();
        assert_eq!((held.held_out, held.trainable(), held.buckets.iter().map(|b| b.count).sum::<usize>()), (1, 2, 2));
        let square = dry_run(&config(d.path(), "resolution: 64\nbucketing: false\n"), &pipeline_dir("tiny-sd15")).unwrap();
        assert!(square.buckets.is_empty() && square.skipped.is_empty(), "without buckets every readable photo trains");
        let e = dry_run(&config(d.path(), "resolution: 64\nbucket_reso_steps: 128\n"), &pipeline_dir("tiny-sd15")).unwrap_err();
        assert!(matches!(e, DryRunError::Train(_)) && e.to_string().contains("bucket_reso_steps"), "{e}");
    }
}
