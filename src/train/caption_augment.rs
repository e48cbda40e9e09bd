//! Caption augmentation: `caption_dropout` and `shuffle_tags`/`keep_tokens`.
//!
//! - Caption dropout: with probability p a training sample's caption is left out for that step
//!   and it trains with the instance prompt alone. kohya sd-scripts (`caption_dropout_rate`,
//!   `BaseDataset.process_caption` in `library/train_util.py`) and SimpleTuner
//!   (`--caption_dropout_probability`, which swaps in the empty prompt's embedding) drop to the
//!   empty prompt; for DreamBooth the trigger phrase is the point of the run, so here only the
//!   caption goes and the instance prompt stays (what remains when a photo has no caption).
//! - Tag shuffling: a caption of comma-separated tags has its tags after the first `keep_tokens`
//!   put in a random order, as kohya's `shuffle_caption` with `keep_tokens` (which counts
//!   comma-separated chunks, split on `caption_separator` ","; tags are trimmed and rejoined with
//!   ", "). Only the caption is shuffled: the instance prompt, placed by `caption_template`,
//!   never moves, so keep_tokens counts the caption's own tags.
//!
//! Each draw comes from its own stream keyed by (seed, step, sample position in the run), so a
//! resumed run draws exactly what the uninterrupted one did, and no other draw (noise,
//! timesteps, order) shifts when augmentation is switched on.

use super::config::TrainConfig;
use super::objective::step_rng;
use super::trainer::{Event, Prompts, TrainError};
use crate::diffusion::config::{Architecture, PipelineFiles};
use crate::generate::pipeline::GenerateError;
use crate::generate::prompts::TextEncoders;
use candle_core::DType;
use rand::seq::SliceRandom;
use rand::Rng;

/// Separates the caption's stream from every other use of (seed, step).
const STREAM: u64 = 0xCA9_7104;

/// What a sample's caption becomes at one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drawn {
    /// The caption as written (its cached prompt embedding).
    AsIs,
    /// Left out: the sample trains with the instance prompt alone.
    Dropped,
    /// The caption with its tags reordered (to be encoded this step).
    Shuffled(String),
}

/// The keys of one micro-batch's samples: sample `j` of the batch is sample `first + j` of the
/// run (its global position, which also fixes which photo it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleKeys {
    pub step: u64,
    pub first: u64,
}

/// The run's caption augmentation (`None` from [`CaptionAugment::from_config`] when off).
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionAugment {
    /// Probability in [0, 1] that a caption is dropped.
    pub dropout: f64,
    pub shuffle_tags: bool,
    /// Leading tags that keep their place when shuffling.
    pub keep_tokens: usize,
    pub seed: u64,
}

impl CaptionAugment {
    pub fn from_config(cfg: &TrainConfig) -> Option<Self> {
        (cfg.caption_dropout > 0.0 || cfg.shuffle_tags).then_some(CaptionAugment {
            dropout: cfg.caption_dropout,
            shuffle_tags: cfg.shuffle_tags,
            keep_tokens: cfg.keep_tokens,
            seed: cfg.seed,
        })
    }

    /// The draw for sample `sample` (its position in the run) at `step`: dropped with
    /// probability `dropout`, else shuffled when `shuffle_tags` (AsIs when the order came out
    /// unchanged, so the cached embedding serves).
    pub fn draw(&self, caption: &str, step: u64, sample: u64) -> Drawn {
        let mut rng = step_rng(self.seed ^ STREAM, step, sample);
        if self.dropout > 0.0 && rng.random::<f64>() < self.dropout {
            return Drawn::Dropped;
        }
        if self.shuffle_tags {
            let shuffled = shuffle_tags(caption, self.keep_tokens, &mut rng);
            if shuffled != caption {
                return Drawn::Shuffled(shuffled);
            }
        }
        Drawn::AsIs
    }
}

/// `caption`'s comma-separated tags (trimmed, empty ones left out) with all but the first `keep`
/// in a random order, joined with ", ".
pub fn shuffle_tags(caption: &str, keep: usize, rng: &mut impl Rng) -> String {
    let mut tags: Vec<&str> = caption.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    let keep = keep.min(tags.len());
    tags[keep..].shuffle(rng);
    tags.join(", ")
}

/// Caption augmentation as the trainer applies it to its prompts.
pub(super) struct PromptAugment {
    pub(super) rule: CaptionAugment,
    template: String,
    instance_prompt: String,
    /// The instance prompt's index among the encoded prompts (with caption_dropout).
    pub(super) instance: Option<usize>,
    /// The text encoders, kept for shuffle_tags when train_text_encoder does not keep them.
    pub(super) kept: Option<TextEncoders>,
}

impl PromptAugment {
    /// The run's augmentation (None when off): encodes the instance prompt for caption dropout,
    /// and notes what it costs, or that it changes nothing for these `captions` (the photos').
    pub(super) fn prepare(
        cfg: &TrainConfig,
        prompts: &mut Prompts,
        enc: &TextEncoders,
        captions: &[String],
        files: &PipelineFiles,
        dtype: DType,
        on: &mut dyn FnMut(Event),
    ) -> Result<Option<Self>, TrainError> {
        let Some(rule) = CaptionAugment::from_config(cfg) else { return Ok(None) };
        let instance = if rule.dropout > 0.0 { Some(prompts.index(enc, &cfg.instance_prompt)?) } else { None };
        if captions.is_empty() {
            on(Event::Note("caption_dropout / shuffle_tags: no photo has a caption, so every step trains on the instance prompt as is".into()));
        } else if rule.shuffle_tags && !captions.iter().any(|c| c.split(',').filter(|t| !t.trim().is_empty()).count() > rule.keep_tokens + 1) {
            on(Event::Note(format!(
                "shuffle_tags: no caption has two or more comma-separated tags after the first {} (keep_tokens), so nothing is shuffled",
                rule.keep_tokens
            )));
        }
        if rule.shuffle_tags && !cfg.train_text_encoder {
            let bytes = kept_encoder_bytes(files, dtype)?;
            on(Event::Note(format!(
                "shuffle_tags: the text encoders stay loaded ({:.2} GB) to encode each step's shuffled captions",
                bytes as f64 / 1e9
            )));
        }
        Ok(Some(PromptAugment { rule, template: cfg.caption_template.clone(), instance_prompt: cfg.instance_prompt.clone(), instance, kept: None }))
    }

    /// The training prompt for a (shuffled) caption, as [`TrainConfig::prompt_for`] makes it.
    pub(super) fn prompt(&self, caption: &str) -> String {
        super::config::fill_caption_template(&self.template, &self.instance_prompt, caption)
    }
}

/// The bytes of the pipeline's text encoders' weights in `dtype` (from the file headers).
fn kept_encoder_bytes(files: &PipelineFiles, dtype: DType) -> Result<u64, TrainError> {
    let encoders: &[&str] =
        if files.architecture == Architecture::StableDiffusionXl { &["text_encoder", "text_encoder_2"] } else { &["text_encoder"] };
    let mut params = 0u64;
    for enc in encoders {
        let w = files.weights(enc, crate::generate::pipeline::variant_for(dtype)).map_err(GenerateError::from)?;
        let header = crate::diffusion::weights::SafetensorsFiles::open(&w.files).map_err(|e| GenerateError::Model(format!("{enc}: {e}")))?;
        params += header.shapes().map(|(_, shape)| shape.iter().product::<usize>() as u64).sum::<u64>();
    }
    Ok(params * dtype.size_in_bytes() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn augment(dropout: f64, shuffle_tags: bool, keep_tokens: usize) -> CaptionAugment {
        CaptionAugment { dropout, shuffle_tags, keep_tokens, seed: 7 }
    }

    #[test]
    fn the_dropout_rate_holds_over_many_draws() {
        for p in [0.1, 0.5, 0.9] {
            let a = augment(p, false, 0);
            let n = 20_000u64;
            let dropped = (0..n).filter(|&k| a.draw("orange sunset", k / 4, k) == Drawn::Dropped).count() as f64;
            // Within 4.5 standard deviations of the binomial (a false failure ~1 in 150 000).
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((dropped - n as f64 * p).abs() < 4.5 * sd, "p {p}: {dropped} of {n}");
        }
        let none = augment(0.0, false, 0);
        assert!((0..1000).all(|k| none.draw("x", k, k) == Drawn::AsIs));
        let all = augment(1.0, false, 0);
        assert!((0..1000).all(|k| all.draw("x", k, k) == Drawn::Dropped));
    }

    #[test]
    fn shuffling_keeps_the_first_tags_and_permutes_the_rest() {
        let caption = "sky, orange, sunset, lake, clouds, birds, haze";
        let tags: Vec<&str> = caption.split(", ").collect();
        let mut orders = std::collections::HashSet::new();
        for k in 0..200 {
            let s = shuffle_tags(caption, 2, &mut step_rng(1, 0, k));
            let got: Vec<&str> = s.split(", ").collect();
            assert_eq!(&got[..2], &tags[..2], "{s}");
            let (mut a, mut b) = (got.clone(), tags.clone());
            a.sort();
            b.sort();
            assert_eq!(a, b, "a permutation: {s}");
            orders.insert(s);
        }
        assert!(orders.len() > 50, "the rest really is shuffled: {} orders", orders.len());
        // keep_tokens past the end keeps everything; tags are trimmed, empty ones dropped.
        assert_eq!(shuffle_tags("a ,b,, c", 9, &mut step_rng(0, 0, 0)), "a, b, c");
        assert_eq!(shuffle_tags("", 0, &mut step_rng(0, 0, 0)), "");
    }

    #[test]
    fn draws_depend_only_on_seed_step_and_sample() {
        let a = augment(0.3, true, 1);
        let caption = "sky, orange, sunset, lake, clouds";
        let first: Vec<Drawn> = (0..50).map(|k| a.draw(caption, k / 2, k)).collect();
        let again: Vec<Drawn> = (0..50).map(|k| a.draw(caption, k / 2, k)).collect();
        assert_eq!(first, again);
        assert!(first.iter().any(|d| matches!(d, Drawn::Shuffled(_))) && first.contains(&Drawn::Dropped));
        let other_seed = CaptionAugment { seed: 8, ..a.clone() };
        assert_ne!(first, (0..50).map(|k| other_seed.draw(caption, k / 2, k)).collect::<Vec<_>>());
        for d in &first {
            if let Drawn::Shuffled(s) = d {
                assert!(s.starts_with("sky, "), "keep_tokens 1 keeps the first tag: {s}");
            }
        }
    }
}
