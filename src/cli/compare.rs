use super::generate::{step_bar, RenderFlags};
use super::{bad_input, Ctx};
use hfsky::compare::local::LocalFlags;
use hfsky::compare::report;
use hfsky::compare::run::{run as compare, Event, HubParams, HubSource, Options};
use hfsky::generate::settings::parse_seeds;
use hfsky::hub::inference::ProviderChoice;
use hfsky::model_ref::ModelRef;
use hfsky::repo_id::RepoId;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum HubParamsArg {
    /// Send what the model page's widget sends (prompt, negative prompt, seed): the provider's
    /// defaults decide the rest
    Widget,
    /// Also send the local side's size, steps, guidance, scheduler and LoRA scale
    Match,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    prompt: String,
    /// The LoRA repo on the Hub (`namespace/name`): its card gives the base model and training
    /// resolution, providers render it
    #[arg(long)]
    repo: Option<RepoId>,
    /// Number of seeds (0..N), the same on both sides
    #[arg(long, default_value_t = 4)]
    seeds: u64,
    /// Which Inference Provider renders the Hub side
    #[arg(long, default_value = "auto")]
    provider: String,
    #[arg(long, value_enum, default_value = "widget")]
    hub_params: HubParamsArg,
    /// Compare against images saved from the model page instead of calling a provider
    #[arg(long, num_args = 1.., value_name = "FILE")]
    hub_image: Vec<PathBuf>,
    /// The seed each --hub-image was rendered with, in order (A..B, A..=B or a,b,c); the local
    /// side then renders those seeds and the images pair one to one
    #[arg(long, requires = "hub_image")]
    hub_seeds: Option<String>,
    /// Re-render locally with each Hub setting (one at a time and all together) and rank the causes
    #[arg(long)]
    explain: bool,
    /// Output folder (images, report.html, report.json)
    #[arg(long, default_value = "hfsky-compare")]
    out: PathBuf,
    // The local side: the same flags as `hfsky generate`; unset ones come from the card's
    // validation settings, then the engine's defaults.
    /// Base pipeline for the local side (default: the card's base_model)
    #[arg(long)]
    model: Option<ModelRef>,
    /// LoRA for the local side (default: the --repo's weights)
    #[arg(long)]
    lora: Option<ModelRef>,
    #[command(flatten)]
    render: RenderFlags,
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    if a.seeds == 0 {
        return Err(bad_input("--seeds must be at least 1"));
    }
    let hub_seeds = a.hub_seeds.as_deref().map(parse_seeds).transpose().map_err(|e| bad_input(format!("--hub-seeds: {e}")))?;
    let repo = a.repo.clone();
    let hub =
        match (&repo, a.hub_image.is_empty()) {
            (_, false) => HubSource::Images { files: a.hub_image.clone(), seeds: hub_seeds.clone() },
            (Some(r), true) => HubSource::Provider {
                repo: r.clone(),
                choice: a.provider.parse::<ProviderChoice>().map_err(|e| bad_input(format!("--provider: {e}")))?,
                params: match a.hub_params {
                    HubParamsArg::Widget => HubParams::Widget,
                    HubParamsArg::Match => HubParams::Match,
                },
            },
            (None, true) => return Err(bad_input(
                "nothing to compare against: give --repo namespace/name (the Hub renders it) or --hub-image FILE… (images saved from the website)",
            )),
        };
    if repo.is_none() && a.model.is_none() {
        return Err(bad_input("without --repo, give the local side's base model with --model (and its LoRA with --lora)"));
    }
    let flags = LocalFlags { model: a.model.clone(), lora: a.lora.clone(), overrides: a.render.overrides() };
    let needs_token = matches!(hub, HubSource::Provider { .. });
    let client = super::client(ctx, needs_token)?;
    let options = Options {
        prompt: a.prompt.clone(),
        repo,
        flags,
        seeds: hub_seeds.unwrap_or_else(|| (0..a.seeds).collect()),
        hub,
        explain: a.explain,
        out: a.out.clone(),
    };
    let rt = ctx.runtime();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut on = |e: Event| match e {
        Event::Stage(s) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if !ctx.json {
                ctx.say(s);
            }
        }
        Event::Step { step, of } => {
            let b = bar.get_or_insert_with(|| step_bar(ctx, of, "rendering".into()));
            b.set_position(step as u64);
        }
        Event::Image { side, file, .. } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if !ctx.json {
                ctx.say(&format!("  {side}: {}", file.display()));
            }
        }
    };
    let comparison = rt.block_on(compare(&client, &options, &mut on));
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let comparison = comparison?;
    let (json, page) = report::write(&comparison, &a.out)?;
    for line in report::summary(&comparison) {
        ctx.say(&line);
    }
    ctx.say(&format!("report: {} (data: {})", page.display(), json.display()));
    ctx.emit_json(&comparison);
    Ok(())
}
