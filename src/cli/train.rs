//! `hfsky train` and `hfsky train-and-push`: DreamBooth LoRA training from train.yaml (every key
//! also a flag, declared in `hfsky::train::config`), the model card, and one commit to the Hub.

use super::{bad_input, Ctx};
use anyhow::Context;
use hfsky::dataset::hub_source::{resolve, DatasetSource};
use hfsky::generate::source::resolve_pipeline;
use hfsky::hub::push::{push_folder, PushOptions, PushOutcome};
use hfsky::model_ref::ModelRef;
use hfsky::names;
use hfsky::repo_id::RepoId;
use hfsky::train::buckets::BucketCount;
use hfsky::train::dry_run::{dry_run, Skipped, PUBLISHED};
use hfsky::train::{Event, TrainConfig, TrainKeys, TrainSummary, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training settings (YAML): the keys below; a flag overrides the file
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    keys: TrainKeys,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Target model repo, `namespace/name`
    #[arg(long)]
    repo: RepoId,
    /// Create the repo private (if it does not exist yet)
    #[arg(long)]
    private: bool,
    /// Open a pull request instead of committing to main
    #[arg(long)]
    create_pr: bool,
    /// Check the token, config, base model and photos and say what would be trained and
    /// uploaded; trains nothing and writes nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    oidc: super::push::OidcArgs,
    #[command(flatten)]
    train: Args,
}

fn load_config(a: Args) -> anyhow::Result<TrainConfig> {
    if a.config.is_none() && a.keys == TrainKeys::default() {
        return Err(bad_input(
            "give --config train.yaml (and/or settings as flags such as --base-model, --dataset, --instance-prompt, --output-dir)",
        ));
    }
    TrainConfig::load(a.config.as_deref(), a.keys).map_err(|e| bad_input(e.to_string()))
}

/// The dataset made a local folder once, before anything reads it: a Hub dataset's images and
/// metadata downloaded into the HF cache (with the download bar), a local folder checked.
fn resolve_dataset(ctx: &Ctx, mut cfg: TrainConfig, client: &hfsky::hub::HubClient, rt: &tokio::runtime::Runtime) -> anyhow::Result<TrainConfig> {
    let resolved = rt.block_on(resolve(&cfg.dataset, cfg.dataset_revision.as_deref(), client))?;
    if let DatasetSource::Downloaded { repo, commit, folder } = &resolved {
        ctx.say(&format!("dataset {repo} at {commit}: {}", folder.display()));
    }
    cfg.dataset = resolved;
    Ok(cfg)
}

/// train.yaml's `base_model` (parsed with the config) resolved once: a local folder, or a Hub
/// repo fetched into the hf-hub cache; a failed download keeps its own category (an
/// unreachable Hub is exit 4).
fn base_model_dir(cfg: &TrainConfig, client: &hfsky::hub::HubClient, rt: &tokio::runtime::Runtime) -> anyhow::Result<PathBuf> {
    rt.block_on(resolve_pipeline(&cfg.base_model, client, None)).context("base_model")
}

fn train(ctx: &Ctx, cfg: &TrainConfig, client: &hfsky::hub::HubClient, rt: &tokio::runtime::Runtime) -> anyhow::Result<TrainSummary> {
    let model_dir = base_model_dir(cfg, client, rt)?;
    let trainer = Trainer { cfg, model_dir, cache_dir: cfg.cache_dir.clone() };
    let show = ctx.show_progress();
    let bar = if show { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}").expect("template").progress_chars("=> "));
    let quiet = ctx.json || ctx.quiet;
    let mut on = |e: Event| match e {
        Event::Skipped { file, reason } => {
            if !quiet {
                bar.suspend(|| eprintln!("skipped {}: {reason}", file.display()));
            }
        }
        Event::Note(n) => {
            if !quiet {
                bar.suspend(|| eprintln!("{n}"));
            }
        }
        Event::Preparing { done, total } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message("preparing");
        }
        Event::Started { total_steps, start_step, examples, trainable_params } => {
            bar.set_length(total_steps as u64);
            bar.set_position(start_step as u64);
            bar.reset_eta();
            bar.set_message("training");
            if !quiet {
                bar.suspend(|| eprintln!("training {trainable_params} LoRA parameters on {examples} image(s), {total_steps} steps"));
            }
        }
        Event::Step { step, loss, lr, d, .. } => {
            bar.set_position(step as u64);
            bar.set_message(step_message(loss, lr, d));
        }
        Event::Checkpoint { path } => {
            if !quiet {
                bar.suspend(|| eprintln!("checkpoint {}", path.display()));
            }
        }
        Event::Validation { step, images } => {
            if !quiet {
                bar.suspend(|| eprintln!("validation images at step {step}: {}", images.len()));
            }
        }
        Event::ValidationLoss { step, loss } => {
            if !quiet {
                bar.suspend(|| eprintln!("val_loss at step {step}: {loss:.4}"));
            }
        }
    };
    // The exit code follows from the error's category (`hfsky::exit`): bad input, or a failure
    // such as a full disk while writing a checkpoint.
    let summary = trainer.run(&mut on)?;
    bar.finish_and_clear();
    Ok(summary)
}

/// The progress bar's message after a step. With Prodigy the scheduled `lr` is a multiplier
/// (1.0 by default) and the step actually taken is d × lr, so both are shown.
fn step_message(loss: f32, lr: f64, d: Option<f64>) -> String {
    match d {
        Some(d) => format!("loss {loss:.4} lr {lr:.2e} d {d:.2e} (step d·lr {:.2e})", d * lr),
        None => format!("loss {loss:.4} lr {lr:.2e}"),
    }
}

fn write_card(cfg: &TrainConfig, summary: &TrainSummary, repo: &str) -> anyhow::Result<PathBuf> {
    let card = hfsky::card::render(summary, repo, None)?;
    let path = cfg.output_dir.join(names::README);
    std::fs::write(&path, card)?;
    Ok(path)
}

/// The `--json` document of `train` (and of `train-and-push`, with its push); `ci summary`
/// reads it back.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrainJson {
    pub output_dir: PathBuf,
    pub lora: PathBuf,
    pub card: PathBuf,
    pub steps: usize,
    pub final_loss: Option<f32>,
    pub seconds: f64,
    pub peak_host_memory_bytes: Option<u64>,
    pub peak_device_memory_bytes: Option<u64>,
    pub gradient_checkpointing: bool,
    pub resolution: usize,
    pub examples: usize,
    /// The aspect-ratio buckets trained on, `{width, height, count}`, the most photos first (as
    /// `training_summary.json`); empty for a run from before buckets.
    #[serde(default)]
    pub buckets: Vec<BucketCount>,
    /// `[file, reason]` for each photo left out.
    pub skipped: Vec<(String, String)>,
    pub validation_images: Vec<String>,
    /// The held-out photos' last loss; null without any.
    #[serde(default)]
    pub final_val_loss: Option<f32>,
    /// The training report (`report.html`).
    #[serde(default)]
    pub report: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushOutcome>,
}

impl TrainJson {
    fn new(cfg: &TrainConfig, s: &TrainSummary, card: &Path) -> Self {
        TrainJson {
            output_dir: cfg.output_dir.clone(),
            lora: cfg.output_dir.join(&s.lora_file),
            card: card.to_path_buf(),
            steps: s.steps,
            final_loss: s.final_loss,
            seconds: s.seconds,
            peak_host_memory_bytes: s.peak_host_memory_bytes,
            peak_device_memory_bytes: s.peak_device_memory_bytes,
            gradient_checkpointing: s.gradient_checkpointing,
            resolution: s.resolution,
            examples: s.examples.len(),
            buckets: s.buckets.clone(),
            skipped: s.skipped.clone(),
            validation_images: s.validation.as_ref().map(|v| v.images.clone()).unwrap_or_default(),
            final_val_loss: s.validation_loss.as_ref().and_then(|v| v.final_val_loss),
            report: cfg.output_dir.join(names::TRAINING_REPORT),
            push: None,
        }
    }
}

/// The `--json` document of `train-and-push --dry-run`.
#[derive(Serialize)]
struct DryRunJson<'a> {
    dry_run: bool,
    repo: &'a RepoId,
    base_model: &'a ModelRef,
    images: usize,
    /// Photos that would train (neither skipped nor held out).
    trainable: usize,
    held_out: usize,
    resolution: usize,
    /// The aspect-ratio buckets the photos would train in; empty with `bucketing: false`.
    buckets: &'a [BucketCount],
    skipped: &'a [Skipped],
    files: &'a [String],
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let cfg = load_config(a)?;
    let client = super::client(ctx, false)?;
    let rt = ctx.runtime();
    let cfg = resolve_dataset(ctx, cfg, &client, &rt)?;
    let summary = train(ctx, &cfg, &client, &rt)?;
    let name = cfg.output_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "my-lora".into());
    let card = write_card(&cfg, &summary, &format!("your-name/{name}"))?;
    ctx.say(&format!(
        "trained {} steps in {:.1} s (final loss {}{}): {}",
        summary.steps,
        summary.seconds,
        summary.final_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
        [("peak memory", summary.peak_host_memory_bytes), ("peak GPU memory", summary.peak_device_memory_bytes)]
            .iter()
            .filter_map(|(what, b)| b.map(|b| format!(", {what} {:.2} GiB", b as f64 / (1u64 << 30) as f64)))
            .collect::<String>(),
        cfg.output_dir.join(&summary.lora_file).display()
    ));
    ctx.emit_json(&TrainJson::new(&cfg, &summary, &card));
    Ok(())
}

pub fn run_and_push(ctx: &Ctx, a: PushArgs) -> anyhow::Result<()> {
    let repo = a.repo;
    let cfg = load_config(a.train)?;
    let rt = ctx.runtime();
    // Before any GPU time is spent: the token (OIDC-exchanged in CI) must be valid and able to write there.
    let (client, _cred) = super::push::writer_client(ctx, &rt, &repo, &a.oidc)?;
    // The card is checked before training too: a base_model the Hub refuses must not cost a run.
    let plan = hfsky::card::precheck(&cfg.base_model.to_string(), cfg.base_model_id.as_deref(), &cfg.instance_prompt, cfg.license.as_deref())
        .map_err(|e| bad_input(format!("{e}; nothing was trained")))?;
    if let Err(e) = rt.block_on(client.validate_yaml(&plan.readme, hfsky::repo_id::RepoType::Model)) {
        return Err(match e {
            hfsky::hub::HubError::Http(f) if matches!(f.status, 400 | 422) => {
                bad_input(format!("the model card would be rejected by the Hub: {}; nothing was trained", f.message))
            }
            e => e.into(),
        });
    }
    if let Some(note) = &plan.note {
        ctx.say(note);
    }
    let cfg = resolve_dataset(ctx, cfg, &client, &rt)?;
    if a.dry_run {
        return dry_run_report(ctx, &rt, &client, &cfg, &repo);
    }
    let summary = train(ctx, &cfg, &client, &rt)?;
    let card = write_card(&cfg, &summary, &repo.to_string())?;
    let warnings = rt.block_on(client.validate_yaml(&std::fs::read_to_string(&card)?, hfsky::repo_id::RepoType::Model))?;
    for w in &warnings {
        ctx.say(&format!("model card: {w}"));
    }
    let opts = PushOptions {
        repo: repo.clone(),
        repo_type: hfsky::repo_id::RepoType::Model,
        revision: "main".into(),
        private: a.private.then_some(true),
        create_pr: a.create_pr,
        message: format!("Upload LoRA trained with hfsky ({} steps at {} px)", summary.steps, summary.resolution),
        description: String::new(),
        include: PUBLISHED.iter().map(|s| s.to_string()).collect(),
        exclude: Vec::new(),
        delete: Vec::new(),
        allow_lfs_pointers: false,
        reporter: super::push::progress_bars(ctx),
    };
    let outcome = rt.block_on(push_folder(&client, &cfg.output_dir, &opts))?;
    ctx.say(&super::push::describe(&outcome));
    ctx.emit_json(&TrainJson { push: Some(outcome), ..TrainJson::new(&cfg, &summary, &card) });
    Ok(())
}

/// What train-and-push would do: the base model resolves, the photos read, the files it would publish.
fn dry_run_report(ctx: &Ctx, rt: &tokio::runtime::Runtime, client: &hfsky::hub::HubClient, cfg: &TrainConfig, repo: &RepoId) -> anyhow::Result<()> {
    let model_dir = base_model_dir(cfg, client, rt)?;
    let plan = dry_run(cfg, &model_dir)?;
    ctx.say(&format!(
        "dry run: would train on {} of {} image(s) ({} with captions) from {}, then push {} to {repo} in one commit; nothing was trained or written",
        plan.trainable(),
        plan.images,
        plan.captioned,
        cfg.dataset,
        plan.files.join(", ")
    ));
    ctx.say(&plan.captions_from.describe());
    if plan.held_out > 0 {
        ctx.say(&format!("would hold {} photo(s) out of training to measure val_loss", plan.held_out));
    }
    if !plan.buckets.is_empty() {
        ctx.say(&format!("aspect-ratio buckets at {} px: {}", plan.resolution, hfsky::train::buckets::describe(&plan.buckets)));
    }
    for s in &plan.skipped {
        ctx.say(&format!("would skip {}: {}", s.file.display(), s.reason));
    }
    ctx.emit_json(&DryRunJson {
        dry_run: true,
        repo,
        base_model: &cfg.base_model,
        images: plan.images,
        trainable: plan.trainable(),
        held_out: plan.held_out,
        resolution: plan.resolution,
        buckets: &plan.buckets,
        skipped: &plan.skipped,
        files: &plan.files,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::step_message;

    #[test]
    fn the_progress_shows_prodigys_effective_step() {
        assert_eq!(step_message(0.12345, 1e-4, None), "loss 0.1235 lr 1.00e-4");
        assert_eq!(step_message(0.5, 0.5, Some(2.4e-4)), "loss 0.5000 lr 5.00e-1 d 2.40e-4 (step d·lr 1.20e-4)");
    }
}
