//! `hfsky train` and `hfsky train-and-push`: DreamBooth LoRA training from train.yaml (every key
//! also a flag), the model card, and one commit to the Hub.

use super::{bad_input, Ctx};
use hfsky::generate::source::resolve_pipeline;
use hfsky::hub::push::{push_folder, PushOptions};
use hfsky::names;
use hfsky::repo_id::RepoId;
use hfsky::train::{Event, TrainConfig, TrainSummary, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training settings (YAML); see the README for every key
    #[arg(long)]
    config: Option<PathBuf>,
    /// Any config key as a flag, overriding the file: --learning-rate 5e-5 --max-steps 800 …
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "--KEY VALUE")]
    overrides: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Target model repo, `namespace/name`
    #[arg(long)]
    repo: String,
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

/// What `train-and-push` uploads from the output folder (never checkpoints, caches or tokens).
const PUBLISHED: [&str; 5] = [names::LORA_WEIGHTS, names::README, "validation-seed-*.png", names::TRAIN_CONFIG, names::TRAINING_LOG];

fn load_config(a: &Args) -> anyhow::Result<TrainConfig> {
    if a.config.is_none() && a.overrides.is_empty() {
        return Err(bad_input(
            "give --config train.yaml (and/or settings as flags such as --base-model, --dataset, --instance-prompt, --output-dir)",
        ));
    }
    TrainConfig::load(a.config.as_deref(), &a.overrides).map_err(|e| bad_input(e.to_string()))
}

fn train(ctx: &Ctx, cfg: &TrainConfig, client: &hfsky::hub::HubClient, rt: &tokio::runtime::Runtime) -> anyhow::Result<TrainSummary> {
    let model_dir = rt.block_on(resolve_pipeline(&cfg.base_model, client, None)).map_err(|e| bad_input(format!("base_model: {e}")))?;
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
        Event::Step { step, loss, lr, .. } => {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
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
    };
    // The exit code follows from the error's category (`hfsky::exit`): bad input, or a failure
    // such as a full disk while writing a checkpoint.
    let summary = trainer.run(&mut on)?;
    bar.finish_and_clear();
    Ok(summary)
}

fn write_card(cfg: &TrainConfig, summary: &TrainSummary, repo: &str) -> anyhow::Result<PathBuf> {
    let card = hfsky::card::render(summary, repo, None)?;
    let path = cfg.output_dir.join(names::README);
    std::fs::write(&path, card)?;
    Ok(path)
}

fn summary_json(cfg: &TrainConfig, s: &TrainSummary, card: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "output_dir": cfg.output_dir,
        "lora": cfg.output_dir.join(&s.lora_file),
        "card": card,
        "steps": s.steps,
        "final_loss": s.final_loss,
        "seconds": s.seconds,
        "peak_host_memory_bytes": s.peak_host_memory_bytes,
        "resolution": s.resolution,
        "examples": s.examples.len(),
        "skipped": s.skipped,
        "validation_images": s.validation.as_ref().map(|v| v.images.clone()).unwrap_or_default(),
    })
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let cfg = load_config(&a)?;
    let client = super::client(ctx, false)?;
    let rt = ctx.runtime();
    let summary = train(ctx, &cfg, &client, &rt)?;
    let name = cfg.output_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "my-lora".into());
    let card = write_card(&cfg, &summary, &format!("your-name/{name}"))?;
    ctx.say(&format!(
        "trained {} steps in {:.1} s (final loss {}{}): {}",
        summary.steps,
        summary.seconds,
        summary.final_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
        summary.peak_host_memory_bytes.map(|b| format!(", peak memory {:.2} GiB", b as f64 / (1u64 << 30) as f64)).unwrap_or_default(),
        cfg.output_dir.join(&summary.lora_file).display()
    ));
    ctx.emit_json(&summary_json(&cfg, &summary, &card));
    Ok(())
}

pub fn run_and_push(ctx: &Ctx, a: PushArgs) -> anyhow::Result<()> {
    let repo = RepoId::parse(&a.repo)?;
    let cfg = load_config(&a.train)?;
    let rt = ctx.runtime();
    // Before any GPU time is spent: the token (OIDC-exchanged in CI) must be valid and able to write there.
    let (client, _cred) = super::push::writer_client(ctx, &rt, &repo, &a.oidc)?;
    // The card is checked before training too: a base_model the Hub refuses must not cost a run.
    let plan = hfsky::card::precheck(&cfg.base_model, cfg.base_model_id.as_deref(), &cfg.instance_prompt, cfg.license.as_deref())
        .map_err(|e| bad_input(format!("{e}; nothing was trained")))?;
    if let Err(e) = rt.block_on(client.validate_yaml(&plan.readme)) {
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
    if a.dry_run {
        return dry_run(ctx, &rt, &client, &cfg, &repo);
    }
    let summary = train(ctx, &cfg, &client, &rt)?;
    let card = write_card(&cfg, &summary, &repo.to_string())?;
    let warnings = rt.block_on(client.validate_yaml(&std::fs::read_to_string(&card)?))?;
    for w in &warnings {
        ctx.say(&format!("model card: {w}"));
    }
    let opts = PushOptions {
        repo: repo.clone(),
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
    let mut v = summary_json(&cfg, &summary, &card);
    v["push"] = serde_json::to_value(&outcome)?;
    ctx.emit_json(&v);
    Ok(())
}

/// What train-and-push would do: the base model resolves, the photos read, the files it would publish.
fn dry_run(ctx: &Ctx, rt: &tokio::runtime::Runtime, client: &hfsky::hub::HubClient, cfg: &TrainConfig, repo: &RepoId) -> anyhow::Result<()> {
    let model_dir = rt.block_on(resolve_pipeline(&cfg.base_model, client, None)).map_err(|e| bad_input(format!("base_model: {e}")))?;
    hfsky::diffusion::config::PipelineFiles::open(&model_dir)?;
    let images = hfsky::dataset::list_images(&cfg.dataset).map_err(|e| bad_input(e.to_string()))?;
    let captions = hfsky::dataset::captions::load_captions(&cfg.dataset, &images, cfg.captions, cfg.caption_column.as_deref())
        .map_err(|e| bad_input(e.to_string()))?;
    let mut unreadable = Vec::new();
    for p in &images {
        if let Err(problem) = hfsky::dataset::images::load_rgb(p) {
            unreadable.push(serde_json::json!({ "file": p, "reason": problem.reason }));
        }
    }
    let mut files: Vec<String> = vec![names::LORA_WEIGHTS.into(), names::README.into(), names::TRAIN_CONFIG.into(), names::TRAINING_LOG.into()];
    if cfg.validation_prompt.is_some() {
        files.extend((0..cfg.num_validation_images as u64).map(|i| format!("validation-seed-{}.png", cfg.seed + i)));
    }
    ctx.say(&format!(
        "dry run: would train on {} of {} image(s) ({} with captions) from {}, then push {} to {repo} in one commit; nothing was trained or written",
        images.len() - unreadable.len(),
        images.len(),
        captions.captions.len() - captions.fallback,
        cfg.dataset.display(),
        files.join(", ")
    ));
    ctx.say(&captions.describe());
    for u in &unreadable {
        ctx.say(&format!("would skip {}: {}", u["file"].as_str().unwrap_or_default(), u["reason"].as_str().unwrap_or_default()));
    }
    ctx.emit_json(&serde_json::json!({
        "dry_run": true,
        "repo": repo.to_string(),
        "base_model": cfg.base_model,
        "images": images.len(),
        "skipped": unreadable,
        "files": files,
    }));
    Ok(())
}
