//! One comparison, start to finish: the Hub side first (it fails fastest: token, provider,
//! credits), then the local side, statistics, the settings diff and, with `explain`, the
//! ablations. Every image is written to disk as soon as it exists, so a failure keeps what was
//! already rendered.

use super::diagnosis::{self, Ablation, Cause, Measured, Skipped};
use super::local::{fetch_card, local_spec, Card, CardError, LocalFlags};
use super::settings::{self, Setting, SettingRow, SideSettings};
use super::stats::{self, ImageStats, SideStats, StatsError};
use crate::diffusion::config::Architecture;
use crate::generate::render::{RenderError, RenderSpec, Renderer, ResolvedSettings};
use crate::hub::inference::{HubRender, InferenceClient, InferenceError, Provider, ProviderChoice, TextToImageRequest};
use crate::hub::{HubClient, HubError};
use crate::repo_id::RepoId;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Card(#[from] CardError),
    /// Boxed: the largest error a comparison carries, and rare.
    #[error(transparent)]
    Inference(Box<InferenceError>),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("local side: {0}")]
    Render(#[from] RenderError),
    #[error("{file}: not an image the comparison can read ({detail})")]
    NotAnImage { file: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Stats(#[from] StatsError),
}

impl From<InferenceError> for CompareError {
    fn from(e: InferenceError) -> Self {
        CompareError::Inference(Box::new(e))
    }
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> CompareError + '_ {
    move |source| CompareError::Io { what: what.display().to_string(), source }
}

/// Which request parameters go to the Hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HubParams {
    /// What the model page's widget sends: the prompt (and negative prompt, seed); the
    /// provider's defaults decide the rest — the renders people see on the website.
    Widget,
    /// Also the local side's steps, guidance, size and scheduler, to see which ones the
    /// provider honours.
    Match,
}

pub enum HubSource {
    Provider {
        repo: RepoId,
        choice: ProviderChoice,
        params: HubParams,
    },
    /// Images saved from the website or rendered elsewhere; `seeds[i]` is the seed image `i`
    /// was rendered with, when known (then they pair with the local renders of those seeds).
    Images {
        files: Vec<PathBuf>,
        seeds: Option<Vec<u64>>,
    },
}

pub struct Options {
    pub prompt: String,
    /// The LoRA repo: its card names the base model and training resolution.
    pub repo: Option<RepoId>,
    pub flags: LocalFlags,
    pub seeds: Vec<u64>,
    pub hub: HubSource,
    pub explain: bool,
    pub out: PathBuf,
}

/// What happens, for progress bars and the terminal.
pub enum Event<'a> {
    Stage(&'a str),
    Image { side: &'a str, seed: Option<u64>, file: &'a Path },
    Step { step: usize, of: usize },
}

#[derive(Debug, Clone, Serialize)]
pub struct SideImage {
    pub seed: Option<u64>,
    /// Relative to the output folder.
    pub file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HubRenderRecord {
    pub seed: Option<u64>,
    pub file: String,
    #[serde(flatten)]
    pub render: HubRender,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalSide {
    pub settings: SideSettings,
    pub resolved: ResolvedSettings,
    pub images: Vec<SideImage>,
    pub stats: SideStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct HubSide {
    /// Where the Hub images come from, in words.
    pub origin: String,
    pub provider: Option<String>,
    pub settings: SideSettings,
    pub images: Vec<SideImage>,
    pub stats: SideStats,
    pub renders: Vec<HubRenderRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AblationResult {
    /// `None`: several Hub settings at once (all, or all but `without`).
    pub setting: Option<Setting>,
    pub without: Option<Setting>,
    /// Two Hub settings adopted together: rendered when nothing else explains the gap, or, with
    /// exactly two differing settings, the "all together" render.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<[Setting; 2]>,
    pub change: String,
    pub distance: f64,
    pub effect: f64,
    pub images: Vec<SideImage>,
    pub stats: SideStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub prompt: String,
    pub date: String,
    pub repo: Option<String>,
    pub seeds: Vec<u64>,
    pub hfsky_version: String,
    pub card: Card,
    pub local: LocalSide,
    pub hub: HubSide,
    pub settings: Vec<SettingRow>,
    /// Statistics distance between the two sides' means.
    pub distance: f64,
    /// How far two seeds of one side lie apart on average.
    pub noise_floor: f64,
    /// Both sides started from the same noise per seed (so images pair one to one).
    pub paired: bool,
    /// The biggest statistic changes from the local side to the Hub's, in words.
    pub differences: Vec<String>,
    pub explained: bool,
    pub ablations: Vec<AblationResult>,
    pub skipped: Vec<Skipped>,
    pub causes: Vec<Cause>,
    pub verdict: String,
    /// Paired runs: per seed, where the local render and the best ablation differ from the Hub's
    /// (`heatmaps/`).
    pub seed_diffs: Vec<super::heatmap::SeedDiff>,
}

fn rel(out: &Path, p: &Path) -> String {
    p.strip_prefix(out).unwrap_or(p).display().to_string()
}

const SCHEDULER_CONFIG: &str = "scheduler/scheduler_config.json";

/// The `scheduler/scheduler_config.json` of the Hub side's base model `base` (a folder here, or a
/// Hub repo whose file is fetched into the cache). `None` when it cannot be had: the scheduler
/// keys then stay unknown rather than failing the comparison.
async fn base_scheduler_file(client: &HubClient, base: &str) -> Option<PathBuf> {
    match crate::model_ref::ModelRef::parse(base).ok()? {
        crate::model_ref::ModelRef::Local(dir) => Some(dir.join(SCHEDULER_CONFIG)),
        crate::model_ref::ModelRef::Hub { repo, revision } => {
            let mut fetcher = crate::hub::download::RepoFetcher::new(client, &repo, revision.as_deref()).ok()?;
            fetcher.file(SCHEDULER_CONFIG).await.ok()
        }
    }
}

async fn load(spec: &RenderSpec, client: &HubClient) -> Result<Renderer, CompareError> {
    Ok(Renderer::fetch_and_load(spec, client, Renderer::default_device()).await?)
}

/// Renders every seed into `dir`, measuring each image.
fn render_side(
    renderer: &Renderer,
    seeds: &[u64],
    out: &Path,
    dir: &Path,
    side: &str,
    on: &mut dyn FnMut(Event),
) -> Result<(ResolvedSettings, Vec<SideImage>, Vec<ImageStats>), CompareError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let steps = renderer.settings().steps;
    let mut images = Vec::new();
    let mut measured = Vec::new();
    for &seed in seeds {
        let image = renderer.render(seed, |i| on(Event::Step { step: i, of: steps }))?;
        let png = dir.join(format!("seed-{seed}.png"));
        image.write_png(&png).map_err(|e| CompareError::Io { what: png.display().to_string(), source: std::io::Error::other(e.to_string()) })?;
        on(Event::Image { side, seed: Some(seed), file: &png });
        measured.push(ImageStats::measure(&image.to_image())?);
        images.push(SideImage { seed: Some(seed), file: rel(out, &png) });
    }
    Ok((renderer.settings().clone(), images, measured))
}

fn request(prompt: &str, spec: &RenderSpec, seed: Option<u64>, params: HubParams, resolved: Option<&ResolvedSettings>) -> TextToImageRequest {
    let mut req = TextToImageRequest {
        prompt: prompt.to_string(),
        negative_prompt: (!spec.negative.is_empty()).then(|| spec.negative.clone()),
        seed,
        ..Default::default()
    };
    if let (HubParams::Match, Some(r)) = (params, resolved) {
        req.width = Some(r.width);
        req.height = Some(r.height);
        req.num_inference_steps = Some(r.steps);
        req.guidance_scale = Some(r.guidance);
        req.scheduler = Some(r.scheduler.clone());
        req.lora_scale = Some(r.lora_scale);
    }
    req
}

fn decode(bytes: &[u8], file: &str) -> Result<image::RgbImage, CompareError> {
    image::load_from_memory(bytes).map(|i| i.to_rgb8()).map_err(|e| CompareError::NotAnImage { file: file.to_string(), detail: e.to_string() })
}

/// Renders one ablation into `ablations/NN-name/` and measures its distance to the Hub side.
async fn ablate(
    client: &HubClient,
    o: &Options,
    a: &Ablation,
    k: usize,
    gap: f64,
    hub: &SideStats,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<AblationResult, CompareError> {
    on(Event::Stage(&format!("ablation: {}", a.change)));
    let name = match (a.setting, a.without, a.pair) {
        (Some(s), _, _) => format!("{s:?}").to_lowercase(),
        (None, Some(w), _) => format!("all-but-{w:?}").to_lowercase(),
        (None, None, Some([x, y])) => format!("{x:?}-and-{y:?}").to_lowercase(),
        (None, None, None) => "all".into(),
    };
    let dir = o.out.join("ablations").join(format!("{k:02}-{name}"));
    let (_, images, measured) = render_side(&load(&a.spec, client).await?, &o.seeds, &o.out, &dir, "ablation", on)?;
    let s = SideStats::aggregate(&measured)?;
    let d = stats::distance(&s, hub);
    Ok(AblationResult {
        setting: a.setting,
        without: a.without,
        pair: a.pair,
        change: a.change.clone(),
        distance: d,
        effect: diagnosis::effect(gap, d),
        images,
        stats: s,
    })
}

/// Runs the comparison. `client` carries the endpoint and token.
pub async fn run(client: &HubClient, o: &Options, on: &mut dyn FnMut(Event)) -> Result<Comparison, CompareError> {
    if o.prompt.trim().is_empty() {
        return Err(CompareError::Invalid("--prompt is empty".into()));
    }
    if o.seeds.is_empty() {
        return Err(CompareError::Invalid("--seeds must be at least 1".into()));
    }
    let card = match &o.repo {
        Some(repo) => {
            on(Event::Stage("reading the model card"));
            fetch_card(client, repo).await?
        }
        None => Card::default(),
    };
    let repo_name = o.repo.as_ref().map(|r| r.to_string());
    let spec = local_spec(&o.prompt, &o.flags, &card, o.repo.as_ref())?;
    std::fs::create_dir_all(&o.out).map_err(io(&o.out))?;

    // The Hub side first: auth, provider and billing problems surface before minutes of rendering.
    let hub_dir = o.out.join("hub");
    std::fs::create_dir_all(&hub_dir).map_err(io(&hub_dir))?;
    let mut hub_images = Vec::new();
    let mut hub_stats = Vec::new();
    let mut renders = Vec::new();
    let mut local_renderer = None;
    let (origin, provider) = match &o.hub {
        HubSource::Provider { repo, choice, params } => {
            on(Event::Stage("asking the Hub which provider serves the repo"));
            let inference = InferenceClient::new(client.clone())?;
            let sel = inference.choose(repo, *choice).await?;
            // With `match`, the Hub gets the local side's resolved values, known once the local
            // pipeline is loaded: load it now and render the local side with it later.
            if *params == HubParams::Match {
                local_renderer = Some(load(&spec, client).await?);
            }
            let resolved = local_renderer.as_ref().map(|r| r.settings().clone());
            for &seed in &o.seeds {
                on(Event::Stage(&format!("Hub render, seed {seed}")));
                let r = inference.text_to_image(&sel, &request(&o.prompt, &spec, Some(seed), *params, resolved.as_ref())).await?;
                let ext = match r.image_format.as_str() {
                    "jpeg" => "jpg",
                    other => other,
                };
                let file = hub_dir.join(format!("seed-{seed}.{ext}"));
                std::fs::write(&file, &r.image).map_err(io(&file))?;
                let record = HubRenderRecord { seed: Some(seed), file: rel(&o.out, &file), render: r };
                let sidecar = hub_dir.join(format!("seed-{seed}.json"));
                std::fs::write(&sidecar, serde_json::to_vec_pretty(&record).expect("serializable")).map_err(io(&sidecar))?;
                on(Event::Image { side: "hub", seed: Some(seed), file: &file });
                hub_stats.push(ImageStats::measure(&decode(&record.render.image, &record.file)?)?);
                hub_images.push(SideImage { seed: Some(seed), file: record.file.clone() });
                renders.push(record);
            }
            let origin = format!("{} ({}) through {}", sel.provider.name(), sel.mapping.provider_id, inference.router());
            (origin, Some(sel.provider))
        }
        HubSource::Images { files, seeds } => {
            if let Some(s) = seeds {
                if s.len() != files.len() {
                    return Err(CompareError::Invalid(format!(
                        "--hub-seeds names {} seed(s) for {} --hub-image file(s): give one seed per image, in the same order",
                        s.len(),
                        files.len()
                    )));
                }
            }
            for (i, f) in files.iter().enumerate() {
                let bytes = std::fs::read(f).map_err(io(f))?;
                let name = f.display().to_string();
                hub_stats.push(ImageStats::measure(&decode(&bytes, &name)?)?);
                let copy = hub_dir.join(f.file_name().unwrap_or_default());
                std::fs::write(&copy, &bytes).map_err(io(&copy))?;
                hub_images.push(SideImage { seed: seeds.as_ref().map(|s| s[i]), file: rel(&o.out, &copy) });
            }
            ("images saved from the website (settings assumed: the Hub worker's defaults)".to_string(), None)
        }
    };

    on(Event::Stage("local renders"));
    let renderer = match local_renderer {
        Some(r) => r,
        None => load(&spec, client).await?,
    };
    let (resolved, local_images, local_stats) = render_side(&renderer, &o.seeds, &o.out, &o.out.join("local"), "local", on)?;
    drop(renderer);
    let local = SideStats::aggregate(&local_stats)?;
    let hub = SideStats::aggregate(&hub_stats)?;

    let base_name = spec.model.to_string();
    let local_settings = SideSettings::local(&resolved, &base_name, &spec.negative);
    let same_base = card.base_model.as_deref().is_none_or(|b| b == base_name);
    let architecture = same_base.then_some(resolved.architecture).or(card.hints.as_ref().map(|h| {
        if h.architecture == "sdxl" {
            Architecture::StableDiffusionXl
        } else {
            Architecture::StableDiffusion
        }
    }));
    let default_side = same_base.then_some(resolved.default_size);
    let card_base = card.base_model.as_deref().or(Some(base_name.as_str()));
    let mut hub_settings = match provider {
        None | Some(Provider::HfInference) => settings::worker_defaults(card_base, architecture, default_side),
        Some(_) => settings::provider_unknowns(card_base),
    };
    if let Some(first) = renders.first() {
        hub_settings = settings::with_sent(hub_settings, &first.render.parameters_sent);
        if let Some(rep) = &first.render.reported_settings {
            hub_settings = settings::with_reported(hub_settings, &serde_json::to_value(rep).expect("serializable"));
        }
    }
    // The worker samples with the base model's own scheduler config; with the same base that
    // file is the local pipeline's (before any local override), with another base it is that
    // base's, fetched from the Hub (one small file).
    let scheduler_file = if same_base && hub_settings.base_model.value.as_deref().is_none_or(|b| b == base_name) {
        Some(resolved.model_dir.join(SCHEDULER_CONFIG))
    } else {
        match hub_settings.base_model.value.as_deref() {
            Some(b) => base_scheduler_file(client, b).await,
            None => None,
        }
    };
    if let Some(config) = scheduler_file.and_then(|f| crate::diffusion::config::read_json::<crate::diffusion::schedulers::SchedulerConfig>(&f).ok()) {
        hub_settings = settings::with_scheduler_file(hub_settings, &config);
    }
    let rows = settings::diff(&local_settings, &hub_settings, card.training_resolution());
    let gap = stats::distance(&local, &hub);
    let floors: Vec<f64> = [stats::noise_floor(&local), stats::noise_floor(&hub)].into_iter().flatten().collect();
    let noise_floor = if floors.is_empty() { 0.0 } else { floors.iter().sum::<f64>() / floors.len() as f64 };
    let to_hub = stats::feature_changes(&local, &hub);
    // Paired seeds: both sides turned each seed into the same noise (same generator, and the
    // Hub's images carry their seeds).
    let paired =
        hub_images.iter().all(|i| i.seed.is_some()) && hub_settings.noise.value.is_some() && hub_settings.noise.value == local_settings.noise.value;
    let threshold = diagnosis::threshold(noise_floor, paired);
    let differences: Vec<String> = to_hub.iter().take(5).map(|c| c.message.clone()).collect();

    let mut ablations = Vec::new();
    let mut skipped = Vec::new();
    let mut causes = Vec::new();
    let verdict;
    if o.explain {
        let bf16 = !Renderer::default_device().is_cpu();
        let (singles, skip, combos) = diagnosis::plan(&spec, &local_settings, &hub_settings, bf16);
        skipped = skip;
        let mut results: Vec<(Ablation, AblationResult)> = Vec::new();
        for (k, a) in singles.into_iter().chain(combos).enumerate() {
            let r = ablate(client, o, &a, k, gap, &hub, on).await?;
            results.push((a, r));
        }
        let evidence = |abl: &SideStats| -> Option<String> {
            let moved = stats::feature_changes(&local, abl);
            to_hub.first().and_then(|top| moved.iter().find(|c| c.feature == top.feature)).or(moved.first()).map(|c| c.message.clone())
        };
        let singles: Vec<&(Ablation, AblationResult)> = results.iter().filter(|(a, _)| a.setting.is_some()).collect();
        let without = |s: Setting| -> Option<f64> {
            match results.iter().find(|(a, _)| a.without == Some(s)) {
                Some((_, r)) => Some(r.distance),
                // Two settings: all but one is the other alone.
                None if singles.len() == 2 => singles.iter().find(|(a, _)| a.setting != Some(s)).map(|(_, r)| r.distance),
                None => None,
            }
        };
        let measured: Vec<Measured> = singles
            .iter()
            .map(|(a, r)| Measured {
                ablation: a,
                distance: r.distance,
                without_distance: a.setting.and_then(without),
                top_change: evidence(&r.stats),
            })
            .collect();
        // The "all together" render (with two settings, their pair); pair renders come later.
        let all = results.iter().find(|(a, _)| a.setting.is_none() && a.without.is_none());
        let together = all.map(|(_, r)| r.distance);
        let noise_differs = rows.iter().any(|r| r.setting == Setting::Seed && r.differs);
        // Without a measured noise ablation, seed-to-seed variation bounds what the generator explains.
        let noise_measured = singles.iter().any(|(a, _)| a.setting == Some(Setting::Seed));
        let seed_share = (noise_differs && !noise_measured && gap > 0.0).then(|| (noise_floor / gap).min(1.0));
        // Within seed variation there is no gap to attribute.
        if gap > threshold {
            causes = diagnosis::rank(gap, &measured, together, seed_share, &hub_settings, card.training_resolution());
            causes = diagnosis::with_together_pair(gap, causes, all.map(|(a, r)| (a, r.distance)), &hub_settings, card.training_resolution());
            // Nothing alone nor everything at once explains it: try settings two at a time
            // before answering "unknown", stopping at a pair that reproduces the Hub.
            if causes.first().is_some_and(|c| c.setting == Setting::Unknown) {
                let mut tried = Vec::new();
                for a in diagnosis::pairs(&spec, &local_settings, &hub_settings, bf16) {
                    let r = ablate(client, o, &a, results.len() + tried.len(), gap, &hub, on).await?;
                    let done = r.effect >= 0.8;
                    tried.push((a, r));
                    if done {
                        break;
                    }
                }
                let measured: Vec<(&Ablation, f64)> = tried.iter().map(|(a, r)| (a, r.distance)).collect();
                causes = diagnosis::with_pairs(gap, causes, &measured, &hub_settings, card.training_resolution());
                results.extend(tried);
            }
        }
        verdict = diagnosis::verdict(gap, noise_floor, paired, &causes, together.map(|d| diagnosis::effect(gap, d)));
        ablations = results.into_iter().map(|(_, r)| r).collect();
    } else {
        let differing: Vec<String> =
            rows.iter().filter(|r| r.differs).map(|r| format!("{} ({} here, {} on the Hub)", r.setting.label(), r.local, r.hub)).collect();
        verdict = if gap <= threshold {
            diagnosis::nothing_to_explain(gap, noise_floor, paired)
        } else if differing.is_empty() {
            format!(
                "the sides differ (distance {gap:.3}; {}) but no known setting does; run with --explain",
                differences.first().cloned().unwrap_or_default()
            )
        } else {
            format!("{} setting(s) differ: {}; run with --explain to measure which one causes the gap", differing.len(), differing.join(", "))
        };
    }

    let best = ablations.iter().filter(|a| a.effect > 0.0).max_by(|a, b| a.effect.total_cmp(&b.effect));
    let seed_diffs = if paired {
        super::heatmap::seed_diffs(&o.out, &local_images, &hub_images, best)
            .map_err(|source| CompareError::Io { what: o.out.join("heatmaps").display().to_string(), source })?
    } else {
        Vec::new()
    };
    Ok(Comparison {
        prompt: o.prompt.clone(),
        date: crate::hub::clock::now_rfc3339(),
        repo: repo_name,
        seeds: o.seeds.clone(),
        hfsky_version: env!("CARGO_PKG_VERSION").into(),
        card,
        local: LocalSide { settings: local_settings, resolved, images: local_images, stats: local },
        hub: HubSide { origin, provider: provider.map(|p| p.name().to_string()), settings: hub_settings, images: hub_images, stats: hub, renders },
        settings: rows,
        distance: gap,
        noise_floor,
        paired,
        differences,
        explained: o.explain,
        ablations,
        skipped,
        causes,
        verdict,
        seed_diffs,
    })
}
