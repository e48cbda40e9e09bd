//! The offline Hub's Inference Providers: it advertises provider mappings in
//! `GET /api/models/{repo}?expand[]=inferenceProviderMapping` and answers the router's
//! text-to-image routes (`/hf-inference/models/{repo}`, `/fal-ai/{providerId}`,
//! `/replicate/v1/…/predictions`) by rendering with an [`InferenceRenderer`] (hfsky's own
//! engine, plugged in by the command layer) and the Hub worker's defaults (hub-render.md),
//! which a [`RenderProfile`] changes. Explicit request parameters override the profile, as in
//! the worker. What was rendered is reported in the `x-hfsky-render` header.

use super::auth::{head_of, require_read, Caller, Who};
use super::store::CommitRec;
use super::{fail, fail_code, json_reply, BodyBytes, HubFail, PathParams, Reply, Repo, Shared, State};
use crate::card::base_model as card_base_model;
use crate::diffusion::schedulers::{SchedulerKind, SchedulerOverrides, TimestepSpacing};
use crate::hub::inference::{Provider, RenderReport, SchedulerKeys, FAL_SD_LORA, RENDER_HEADER};
use crate::names;
use crate::repo_id::RepoId;
use axum::body::Body;
use axum::extract::{Extension, State as S};
use axum::http::{header, HeaderMap, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The replicate model id the offline Hub maps LoRA repos to.
pub const REPLICATE_LORA_MODEL: &str = "hfsky/diffusers-lora";
/// Rendered images kept for fal-ai / replicate clients to fetch.
const KEPT_OUTPUTS: usize = 64;

/// The precision the worker renders in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenderDtype {
    F32,
    F16,
    Bf16,
}

impl RenderDtype {
    /// The name profiles and the `x-hfsky-render` report use.
    pub fn as_str(self) -> &'static str {
        match self {
            RenderDtype::F32 => "f32",
            RenderDtype::F16 => "f16",
            RenderDtype::Bf16 => "bf16",
        }
    }
}

fn scheduler_by_either_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SchedulerKind, D::Error> {
    SchedulerKind::from_name(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// The Hub worker's render settings; `--render-profile FILE.yaml` overrides any of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderProfile {
    /// hfsky name (`euler-ancestral`, `euler`, `ddim`, `dpmpp-2m`) or diffusers class name.
    #[serde(deserialize_with = "scheduler_by_either_name")]
    pub scheduler: SchedulerKind,
    pub steps: usize,
    /// `None`: the pipeline's default (7.5 for SD 1.x, 5.0 for SDXL).
    pub guidance: Option<f64>,
    /// `None`: not passed, so the model's default size (unet sample_size × VAE factor).
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Fuse the LoRA into the base (the worker always does); false renders the base alone.
    pub apply_lora: bool,
    pub lora_scale: f64,
    /// Replaces the card's `base_model` for LoRA repos.
    pub base_model: Option<String>,
    pub dtype: RenderDtype,
    /// Scheduler config keys set over the base pipeline's scheduler_config.json; `None` keeps
    /// the file's value (the sampling class's default where the file has none).
    pub use_karras_sigmas: Option<bool>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<usize>,
    /// The negative prompt rendered with whatever the request sends (`""`: a provider that
    /// drops it); `None`: the request's.
    pub negative_prompt: Option<String>,
}

impl Default for RenderProfile {
    fn default() -> Self {
        RenderProfile {
            scheduler: SchedulerKind::EulerAncestral,
            steps: 20,
            guidance: None,
            width: None,
            height: None,
            apply_lora: true,
            lora_scale: 1.0,
            base_model: None,
            dtype: RenderDtype::F16,
            use_karras_sigmas: None,
            timestep_spacing: None,
            steps_offset: None,
            negative_prompt: None,
        }
    }
}

impl RenderProfile {
    /// Parses a profile; `origin` names the file in errors. Unknown keys are refused by name.
    pub fn from_yaml(text: &str, origin: &str) -> Result<RenderProfile, String> {
        let p: RenderProfile = if text.trim().is_empty() {
            RenderProfile::default()
        } else {
            serde_yaml::from_str(text)
                .map_err(|e| format!("{origin}: {e} (keys: scheduler, steps, guidance, width, height, apply_lora, lora_scale, base_model, dtype, use_karras_sigmas, timestep_spacing, steps_offset, negative_prompt)"))?
        };
        if p.steps == 0 {
            return Err(format!("{origin}: steps must be at least 1"));
        }
        if !p.lora_scale.is_finite() || p.guidance.is_some_and(|g| !g.is_finite()) {
            return Err(format!("{origin}: lora_scale and guidance must be finite numbers"));
        }
        if let Some(b) = &p.base_model {
            RepoId::parse(b).map_err(|e| format!("{origin}: base_model {b:?}: {e}"))?;
        }
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<RenderProfile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        RenderProfile::from_yaml(&text, &path.display().to_string())
    }
}

/// One render the offline Hub asks for: the base pipeline and LoRA as local files, and the
/// effective settings (profile, then the request's explicit parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderJob {
    pub base_model: String,
    /// A diffusers folder (a snapshot of the base repo).
    pub base_dir: PathBuf,
    /// The LoRA's repo path (e.g. `pytorch_lora_weights.safetensors`) and local file.
    pub lora_file: Option<String>,
    pub lora_path: Option<PathBuf>,
    pub lora_scale: f64,
    pub prompt: String,
    pub negative: String,
    pub scheduler: String,
    pub steps: usize,
    pub guidance: Option<f64>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub dtype: RenderDtype,
    pub seed: u64,
    /// The profile's scheduler config keys over the base pipeline's.
    pub scheduler_config: SchedulerOverrides,
}

impl RenderJob {
    /// The `x-hfsky-render` report, given what the renderer resolved (`scheduler_config`: the
    /// keys the sampler ran with).
    pub fn report(&self, scheduler_class: &str, guidance: f64, width: usize, height: usize, scheduler_config: Option<SchedulerKeys>) -> RenderReport {
        RenderReport {
            scheduler: scheduler_class.into(),
            scheduler_config,
            negative_prompt: Some(self.negative.clone()),
            steps: self.steps,
            guidance,
            width,
            height,
            apply_lora: self.lora_path.is_some(),
            lora_scale: self.lora_scale,
            base_model: self.base_model.clone(),
            dtype: self.dtype.as_str().into(),
            seed: self.seed,
            lora_file: self.lora_file.clone(),
            // The worker swaps in the fp16-fix VAE only for stabilityai/stable-diffusion-xl-base-1.0;
            // the offline Hub always renders with the base pipeline's own VAE.
            vae: None,
        }
    }
}

pub struct RenderedPng {
    pub png: Vec<u8>,
    pub report: RenderReport,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenderFailure {
    /// The request asked for something impossible (422); otherwise the render failed (500).
    pub bad_request: bool,
    pub message: String,
}

/// Renders for the inference routes. Implemented by the command layer on hfsky's engine, so
/// the Hub module does not depend on it. Called on a blocking thread, one render at a time.
pub trait InferenceRenderer: Send + Sync {
    /// Checks a profile's scheduler, dtype and size before the server starts.
    fn check(&self, profile: &RenderProfile) -> Result<(), String>;
    fn render(&self, job: &RenderJob) -> Result<RenderedPng, RenderFailure>;
}

#[derive(Clone)]
pub struct InferenceConfig {
    /// Advertised and answered, in this order (the order `auto` sees).
    pub providers: Vec<Provider>,
    pub profile: RenderProfile,
    pub renderer: Arc<dyn InferenceRenderer>,
}

impl std::fmt::Debug for InferenceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceConfig").field("providers", &self.providers).field("profile", &self.profile).finish_non_exhaustive()
    }
}

/// Server-side state of the inference routes.
#[derive(Default)]
pub(super) struct InferState {
    // Renders are CPU-heavy: one at a time keeps the rest of the Hub responsive.
    render_lock: tokio::sync::Mutex<()>,
    outputs: Mutex<VecDeque<(String, Arc<Vec<u8>>)>>,
}

/// Which router route was called.
enum Route {
    HfInference(RepoId),
    FalAi(String),
    Replicate(Option<String>),
}

impl Route {
    fn provider(&self) -> Provider {
        match self {
            Route::HfInference(_) => Provider::HfInference,
            Route::FalAi(_) => Provider::FalAi,
            Route::Replicate(_) => Provider::Replicate,
        }
    }
}

fn card_tags(card: Option<&Value>) -> Vec<String> {
    card.and_then(|c| c["tags"].as_array()).map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// The worker's choice of LoRA file: `pytorch_lora_weights.safetensors`, else the first
/// `.safetensors` of the repo.
pub fn worker_weight_file<'a>(files: impl Iterator<Item = &'a String> + Clone) -> Option<String> {
    let mut it = files.filter(|f| f.ends_with(".safetensors"));
    it.clone().find(|f| *f == names::LORA_WEIGHTS).or_else(|| it.next()).cloned()
}

fn is_pipeline(c: &CommitRec) -> bool {
    c.files.contains_key(names::MODEL_INDEX)
}

/// The Hub's `pipeline_tag`: the card's, else text-to-image for a diffusers pipeline or a repo
/// tagged text-to-image.
pub(super) fn pipeline_tag(c: &CommitRec, card: Option<&Value>) -> Option<String> {
    if let Some(t) = card.and_then(|c| c["pipeline_tag"].as_str()) {
        return Some(t.to_string());
    }
    (is_pipeline(c) || card_tags(card).iter().any(|t| t == "text-to-image")).then(|| "text-to-image".to_string())
}

/// `inferenceProviderMapping` of a repo, in the `--providers` order. hf-inference (the worker)
/// serves every text-to-image repo, a LoRA repo with its card's base_model; fal-ai and replicate
/// serve LoRA repos as the Hub's tag-filter mappings do: tagged `lora`, public, with a
/// `base_model` that is a pipeline in this Hub.
pub(super) fn mappings(state: &State, c: &CommitRec, card: Option<&Value>, private: bool, id: &RepoId) -> Vec<(String, Value)> {
    let Some(cfg) = &state.cfg.inference else { return vec![] };
    if pipeline_tag(c, card).as_deref() != Some("text-to-image") {
        return vec![];
    }
    let pipeline = is_pipeline(c);
    let weights = worker_weight_file(c.files.keys());
    if !pipeline && weights.is_none() {
        return vec![];
    }
    let base_served = card
        .and_then(card_base_model)
        .and_then(|b| RepoId::parse(&b).ok())
        .and_then(|b| state.store.resolve(&b, "main").and_then(|oid| state.store.commit(&b, &oid)))
        .is_some_and(|bc| is_pipeline(&bc));
    let tag_filter = !pipeline && !private && base_served && card_tags(card).iter().any(|t| t == "lora");
    let mut out = vec![];
    for p in &cfg.providers {
        let mut m = serde_json::json!({ "status": "live", "task": "text-to-image" });
        match p {
            Provider::HfInference => {
                m["providerId"] = id.to_string().into();
                m["type"] = "single-model".into();
            }
            Provider::FalAi | Provider::Replicate if tag_filter => {
                m["providerId"] = if *p == Provider::FalAi { FAL_SD_LORA } else { REPLICATE_LORA_MODEL }.into();
                m["type"] = "tag-filter".into();
            }
            _ => continue,
        }
        if let Some(w) = weights.as_ref().filter(|_| !pipeline) {
            m["adapter"] = "lora".into();
            m["adapterWeightsPath"] = w.clone().into();
        }
        out.push((p.name().to_string(), m));
    }
    out
}

/// The generation parameters a route received.
#[derive(Debug, Default, PartialEq)]
struct Params {
    negative: Option<String>,
    width: Option<usize>,
    height: Option<usize>,
    steps: Option<usize>,
    guidance: Option<f64>,
    scheduler: Option<String>,
    seed: Option<u64>,
}

fn unprocessable(message: impl Into<String>) -> HubFail {
    fail(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn params(obj: &Map<String, Value>, prefix: &str) -> Result<Params, HubFail> {
    let uint = |k: &str| -> Result<Option<u64>, HubFail> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| unprocessable(format!("{prefix}{k} must be a non-negative integer, got {v}"))),
        }
    };
    let text = |k: &str| -> Result<Option<String>, HubFail> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(unprocessable(format!("{prefix}{k} must be a string, got {v}"))),
        }
    };
    let guidance = match obj.get("guidance_scale") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_f64().ok_or_else(|| unprocessable(format!("{prefix}guidance_scale must be a number, got {v}")))?),
    };
    let steps = uint("num_inference_steps")?;
    if steps == Some(0) {
        return Err(unprocessable(format!("{prefix}num_inference_steps must be at least 1")));
    }
    Ok(Params {
        negative: text("negative_prompt")?,
        width: uint("width")?.map(|v| v as usize),
        height: uint("height")?.map(|v| v as usize),
        steps: steps.map(|v| v as usize),
        guidance,
        scheduler: text("scheduler")?,
        seed: uint("seed")?,
    })
}

fn prompt_of(obj: &Map<String, Value>, key: &str) -> Result<String, HubFail> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(unprocessable(format!("{key} must be a non-empty string (the prompt)"))),
    }
}

/// What to render: a repo, and what the request pinned.
struct Target {
    repo: RepoId,
    lora_file: Option<String>,
    base_model: Option<String>,
    lora_scale: Option<f64>,
}

/// `{endpoint}/{ns}/{name}[/resolve/{rev}/{path}]` → repo and path.
fn repo_from_url(url: &str, field: &str) -> Result<(RepoId, Option<String>), HubFail> {
    let parsed = url::Url::parse(url).map_err(|e| unprocessable(format!("{field} {url:?} is not a URL: {e}")))?;
    let segs: Vec<String> = parsed
        .path_segments()
        .map(|s| s.map(|x| percent_encoding::percent_decode_str(x).decode_utf8().map(|c| c.into_owned()).unwrap_or_default()).collect())
        .unwrap_or_default();
    let bad = || unprocessable(format!("{field} {url:?} does not name a model repo ({{endpoint}}/namespace/name)"));
    if segs.len() < 2 {
        return Err(bad());
    }
    let repo = RepoId::parse(&format!("{}/{}", segs[0], segs[1])).map_err(|_| bad())?;
    let file = (segs.len() > 4 && segs[2] == "resolve").then(|| segs[4..].join("/"));
    Ok((repo, file))
}

fn target_and_params(route: &Route, body: &Value) -> Result<(Target, String, Params), HubFail> {
    let obj = body.as_object().ok_or_else(|| fail(StatusCode::BAD_REQUEST, "the request body must be a JSON object"))?;
    match route {
        Route::HfInference(repo) => {
            let p = match obj.get("parameters") {
                None | Some(Value::Null) => Params::default(),
                Some(Value::Object(m)) => params(m, "parameters.")?,
                Some(_) => return Err(unprocessable("parameters must be an object")),
            };
            let t = Target { repo: repo.clone(), lora_file: None, base_model: None, lora_scale: None };
            Ok((t, prompt_of(obj, "inputs")?, p))
        }
        Route::FalAi(_) => {
            let mut flat = obj.clone();
            match obj.get("image_size") {
                None | Some(Value::Null) => {}
                Some(Value::Object(size)) => {
                    flat.insert("width".into(), size.get("width").cloned().unwrap_or(Value::Null));
                    flat.insert("height".into(), size.get("height").cloned().unwrap_or(Value::Null));
                }
                Some(v) => return Err(unprocessable(format!("image_size must be {{\"width\", \"height\"}} on the offline Hub, got {v}"))),
            }
            let p = params(&flat, "")?;
            let lora = obj.get("loras").and_then(|l| l.get(0)).ok_or_else(|| {
                unprocessable("loras is missing or empty: the offline fal-ai route renders LoRA repos, [{\"path\": \"{endpoint}/{repo}/resolve/main/{file}\", \"scale\": 1}]")
            })?;
            let path = lora["path"].as_str().ok_or_else(|| unprocessable("loras[0].path must be a URL string"))?;
            let (repo, file) = repo_from_url(path, "loras[0].path")?;
            let scale = match &lora["scale"] {
                Value::Null => None,
                v => Some(v.as_f64().filter(|s| s.is_finite()).ok_or_else(|| unprocessable(format!("loras[0].scale must be a number, got {v}")))?),
            };
            let base_model = match obj.get("model_name") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) => return Err(unprocessable(format!("model_name must be a string, got {v}"))),
            };
            Ok((Target { repo, lora_file: file, base_model, lora_scale: scale }, prompt_of(obj, "prompt")?, p))
        }
        Route::Replicate(_) => {
            let input = obj.get("input").and_then(|i| i.as_object()).ok_or_else(|| unprocessable("input must be an object"))?;
            let weights = input.get("lora_weights").and_then(|w| w.as_str()).ok_or_else(|| {
                unprocessable("input.lora_weights is missing: the offline replicate route renders LoRA repos ({endpoint}/namespace/name)")
            })?;
            let (repo, file) = repo_from_url(weights, "input.lora_weights")?;
            let p = params(input, "input.")?;
            Ok((Target { repo, lora_file: file, base_model: None, lora_scale: None }, prompt_of(input, "prompt")?, p))
        }
    }
}

/// Finds the weights in the store and fills in the profile: the [`RenderJob`].
fn resolve(state: &State, caller: Option<&Caller>, t: Target, prompt: String, p: Params) -> Result<RenderJob, HubFail> {
    let cfg = state.cfg.inference.as_ref().expect("checked by the caller");
    let profile = &cfg.profile;
    require_read(state, caller, (&t.repo).into())?;
    let oid = head_of(state, (&t.repo).into(), "main")?;
    let c = state.store.commit(&t.repo, &oid).ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "missing commit"))?;
    let (base_id, lora) = if is_pipeline(&c) {
        (t.repo.clone(), None)
    } else {
        let file = match t.lora_file {
            Some(f) if c.files.contains_key(&f) => f,
            Some(f) => return Err(fail_code(StatusCode::NOT_FOUND, "EntryNotFound", format!("{f} does not exist in {}", t.repo))),
            None => worker_weight_file(c.files.keys())
                .ok_or_else(|| unprocessable(format!("{} has no .safetensors LoRA weights to render (and no model_index.json)", t.repo)))?,
        };
        let card = super::card_of(state, &c);
        let base = t.base_model.or_else(|| profile.base_model.clone()).or_else(|| card.as_ref().and_then(card_base_model)).ok_or_else(|| {
            unprocessable(format!(
                "{} has no base_model in its model card: add `base_model: <namespace/name of the base pipeline>` to the README.md front matter, \
                 so the Hub knows which model the LoRA applies to",
                t.repo
            ))
        })?;
        let base_id = RepoId::parse(&base).map_err(|e| unprocessable(format!("base_model {base:?} of {} is not a repo id: {e}", t.repo)))?;
        (base_id, Some(file))
    };
    let missing_base = || {
        fail_code(
            StatusCode::NOT_FOUND,
            "RepoNotFound",
            format!("base model {base_id} (for {}) is not in this offline Hub: push the diffusers pipeline there first (`hfsky push DIR --repo {base_id}`)", t.repo),
        )
    };
    require_read(state, caller, (&base_id).into()).map_err(|_| missing_base())?;
    let base_oid = head_of(state, (&base_id).into(), "main").map_err(|_| missing_base())?;
    let base_commit = state.store.commit(&base_id, &base_oid).ok_or_else(missing_base)?;
    if !is_pipeline(&base_commit) {
        return Err(unprocessable(format!("base model {base_id} has no model_index.json: it is not a diffusers pipeline")));
    }
    let base_dir = state.store.snapshot(&base_id, &base_commit, |_| true).map_err(super::io_fail)?;
    let lora = lora.filter(|_| profile.apply_lora);
    let lora_path = match &lora {
        Some(f) => Some(state.store.snapshot(&t.repo, &c, |p| p == f).map_err(super::io_fail)?.join(f)),
        None => None,
    };
    Ok(RenderJob {
        base_model: base_id.to_string(),
        base_dir,
        lora_file: lora,
        lora_path,
        lora_scale: t.lora_scale.unwrap_or(profile.lora_scale),
        prompt,
        negative: profile.negative_prompt.clone().or(p.negative).unwrap_or_default(),
        scheduler: p.scheduler.unwrap_or_else(|| profile.scheduler.class_name().into()),
        steps: p.steps.unwrap_or(profile.steps),
        guidance: p.guidance.or(profile.guidance),
        width: p.width.or(profile.width),
        height: p.height.or(profile.height),
        dtype: profile.dtype,
        // The worker seeds an unseeded generator when no seed is sent.
        seed: p.seed.unwrap_or_else(rand::random),
        scheduler_config: SchedulerOverrides {
            use_karras_sigmas: profile.use_karras_sigmas,
            timestep_spacing: profile.timestep_spacing,
            steps_offset: profile.steps_offset,
        },
    })
}

fn injected(fault: super::faults::InferenceFault, provider: Provider, retry_after: u64) -> HubFail {
    use super::faults::InferenceFault::*;
    match fault {
        PaymentRequired => fail(
            StatusCode::PAYMENT_REQUIRED,
            "injected fault: You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits.",
        ),
        NotDeployed => fail(StatusCode::NOT_FOUND, format!("injected fault: Model not found or not deployed on {provider}")),
        TooManyRequests => {
            let mut f = fail(StatusCode::TOO_MANY_REQUESTS, "injected fault: rate limited");
            f.headers.push(("Retry-After", retry_after.to_string()));
            f
        }
    }
}

/// Answers a router route: checks, renders (serialised, on a blocking thread), replies in the
/// provider's shape.
/// `POST /hf-inference/models/{repo}`.
pub(super) async fn hf_inference(
    S(state): S<Shared>,
    Extension(who): Extension<Who>,
    repo: Repo,
    headers: HeaderMap,
    BodyBytes(body): BodyBytes,
) -> Reply {
    answer(&state, who.caller(), Route::HfInference(repo.id), &body, &headers).await
}

/// `POST /fal-ai/{model}` (the model id has slashes: `fal-ai/lora`).
pub(super) async fn fal_ai(
    S(state): S<Shared>,
    Extension(who): Extension<Who>,
    PathParams(model): PathParams<String>,
    headers: HeaderMap,
    BodyBytes(body): BodyBytes,
) -> Reply {
    answer(&state, who.caller(), Route::FalAi(model), &body, &headers).await
}

/// `POST /replicate/v1/models/{owner}/{name}/predictions`.
pub(super) async fn replicate_model(
    S(state): S<Shared>,
    Extension(who): Extension<Who>,
    PathParams((owner, name)): PathParams<(String, String)>,
    headers: HeaderMap,
    BodyBytes(body): BodyBytes,
) -> Reply {
    answer(&state, who.caller(), Route::Replicate(Some(format!("{owner}/{name}"))), &body, &headers).await
}

/// `POST /replicate/v1/predictions` (the model named by the body's `version`).
pub(super) async fn replicate(S(state): S<Shared>, Extension(who): Extension<Who>, headers: HeaderMap, BodyBytes(body): BodyBytes) -> Reply {
    answer(&state, who.caller(), Route::Replicate(None), &body, &headers).await
}

async fn answer(state: &Arc<State>, caller: Option<&Caller>, route: Route, body: &[u8], headers: &HeaderMap) -> Reply {
    let provider = route.provider();
    let Some(cfg) = &state.cfg.inference else {
        return Err(fail(StatusCode::NOT_FOUND, "this offline Hub serves no inference (it runs without a renderer)"));
    };
    if !cfg.providers.contains(&provider) {
        let on: Vec<&str> = cfg.providers.iter().map(|p| p.name()).collect();
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("provider {provider} is not enabled on this offline Hub (enabled: {}; start it with --providers)", on.join(", ")),
        ));
    }
    let served = match &route {
        Route::FalAi(id) => Some(id.as_str()).filter(|id| *id != FAL_SD_LORA).map(|id| (id.to_string(), FAL_SD_LORA)),
        Route::Replicate(Some(m)) => Some(m.as_str()).filter(|m| *m != REPLICATE_LORA_MODEL).map(|m| (m.to_string(), REPLICATE_LORA_MODEL)),
        _ => None,
    };
    if let Some((asked, offered)) = served {
        return Err(fail(StatusCode::NOT_FOUND, format!("{provider} model {asked} is not served by this offline Hub (it serves {offered})")));
    }
    if caller.is_none() {
        return Err(fail(
            StatusCode::UNAUTHORIZED,
            "You must be authenticated to call Inference Providers: pass a token (Authorization: Bearer hf_…)",
        ));
    }
    if let Some(faults) = &state.cfg.faults {
        if let Some(f) = faults.draw_inference() {
            return Err(injected(f, provider, faults.retry_after_secs));
        }
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    let (target, prompt, params) = target_and_params(&route, &body)?;
    let job = resolve(state, caller, target, prompt, params)?;
    let rendered = {
        let _one_at_a_time = state.infer.render_lock.lock().await;
        let renderer = cfg.renderer.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || renderer.render(&job))
            .await
            .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, format!("the render panicked: {e}")))?
    };
    let out = rendered.map_err(|f| {
        let status = if f.bad_request { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::INTERNAL_SERVER_ERROR };
        fail(status, format!("render failed: {}", f.message))
    })?;
    let report = ascii_json(&serde_json::to_string(&out.report).expect("serializable"));
    let mut resp = match &route {
        Route::HfInference(_) => {
            Response::builder().status(StatusCode::OK).header(header::CONTENT_TYPE, "image/png").body(Body::from(out.png)).expect("valid response")
        }
        Route::FalAi(_) | Route::Replicate(_) => {
            let id = format!("{:016x}", rand::random::<u64>());
            let url = format!("{}/inference-outputs/{id}.png", super::base_url(headers));
            keep_output(state, &id, out.png);
            let v = match &route {
                Route::FalAi(_) => serde_json::json!({
                    "images": [{ "url": url, "width": out.report.width, "height": out.report.height, "content_type": "image/png" }],
                    "seed": out.report.seed,
                    "prompt": job.prompt,
                    "has_nsfw_concepts": [false],
                }),
                Route::Replicate(model) => serde_json::json!({
                    "id": id,
                    "model": model.clone().unwrap_or_else(|| REPLICATE_LORA_MODEL.to_string()),
                    "version": body.get("version").cloned().unwrap_or(Value::Null),
                    "status": "succeeded",
                    "input": body["input"],
                    "output": [url],
                    "created_at": crate::hub::clock::now_rfc3339(),
                }),
                Route::HfInference(_) => unreachable!("answered above"),
            };
            let status = if matches!(route, Route::Replicate(_)) { StatusCode::CREATED } else { StatusCode::OK };
            json_reply(status, &v)?
        }
    };
    resp.headers_mut()
        .insert(RENDER_HEADER, axum::http::HeaderValue::from_str(&report).map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?);
    Ok(resp)
}

/// JSON with every non-ASCII character escaped (`\uXXXX`), so it fits in a header value.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{:04x}", u));
            }
        }
    }
    out
}

fn keep_output(state: &State, id: &str, png: Vec<u8>) {
    let mut outs = state.infer.outputs.lock().unwrap_or_else(|e| e.into_inner());
    if outs.len() >= KEPT_OUTPUTS {
        outs.pop_front();
    }
    outs.push_back((id.to_string(), Arc::new(png)));
}

/// `GET /inference-outputs/{id}.png`: an image a fal-ai / replicate answer pointed to. Like a
/// provider's CDN, it needs no token.
pub(super) async fn output(S(state): S<Shared>, PathParams(file): PathParams<String>) -> Reply {
    let id = file.strip_suffix(".png").unwrap_or(&file);
    let outs = state.infer.outputs.lock().unwrap_or_else(|e| e.into_inner());
    let png = outs
        .iter()
        .find(|(k, _)| k == id)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "no such output (outputs are kept for the last 64 renders)"))?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "image/png")
        .header(header::CONTENT_LENGTH, png.len().to_string())
        .body(Body::from(png.as_ref().clone()))
        .expect("valid response"))
}

/// Serialises a JSON object with `inferenceProviderMapping` in the given order (serde_json's
/// own map would sort the providers).
#[derive(Serialize)]
pub(super) struct WithMappings<'a> {
    #[serde(flatten)]
    pub info: &'a Map<String, Value>,
    #[serde(rename = "inferenceProviderMapping")]
    pub mappings: Ordered<'a>,
}

pub(super) struct Ordered<'a>(pub &'a [(String, Value)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_default_to_the_worker_and_name_unknown_keys() {
        let p = RenderProfile::from_yaml("", "p.yaml").unwrap();
        assert_eq!((p.scheduler, p.steps, p.apply_lora, p.dtype), (SchedulerKind::EulerAncestral, 20, true, RenderDtype::F16));
        let p = RenderProfile::from_yaml("scheduler: DDIMScheduler\ndtype: bf16\n", "p.yaml").unwrap();
        assert_eq!((p.scheduler, p.dtype), (SchedulerKind::Ddim, RenderDtype::Bf16), "either scheduler name");
        let e = RenderProfile::from_yaml("scheduler: lms\n", "p.yaml").unwrap_err();
        assert!(e.contains("p.yaml") && e.contains("unknown scheduler \"lms\""), "{e}");
        let p = RenderProfile::from_yaml("width: 64\nheight: 64\napply_lora: false\nguidance: 3\n", "p.yaml").unwrap();
        assert_eq!((p.width, p.height, p.apply_lora, p.guidance, p.steps), (Some(64), Some(64), false, Some(3.0), 20));
        let e = RenderProfile::from_yaml("stepz: 4\n", "p.yaml").unwrap_err();
        assert!(e.contains("p.yaml") && e.contains("stepz"), "{e}");
        assert!(RenderProfile::from_yaml("steps: 0\n", "p.yaml").unwrap_err().contains("steps"));
        assert!(RenderProfile::from_yaml("apply_lora: maybe\n", "p.yaml").is_err());
        assert!(RenderProfile::from_yaml("base_model: not a repo\n", "p.yaml").unwrap_err().contains("base_model"));
    }

    #[test]
    fn header_json_stays_ascii_and_parses_back() {
        let j = ascii_json(r#"{"lora_file":"ciel/été🌅.safetensors"}"#);
        assert!(j.is_ascii());
        assert_eq!(serde_json::from_str::<Value>(&j).unwrap()["lora_file"], "ciel/été🌅.safetensors");
    }

    #[test]
    fn the_worker_picks_its_weight_file() {
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = files(&["a.safetensors", "pytorch_lora_weights.safetensors"]);
        assert_eq!(worker_weight_file(f.iter()).as_deref(), Some("pytorch_lora_weights.safetensors"));
        let f = files(&["README.md", "b.safetensors", "c.safetensors"]);
        assert_eq!(worker_weight_file(f.iter()).as_deref(), Some("b.safetensors"));
        assert_eq!(worker_weight_file(files(&["README.md"]).iter()), None);
    }

    #[test]
    fn each_route_reads_its_providers_payload() {
        let repo = RepoId::parse("alice/sky-lora").unwrap();
        let hf = serde_json::json!({"inputs": "sky", "parameters": {"width": 64, "height": 32, "num_inference_steps": 3, "seed": 7, "scheduler": "DDIMScheduler"}});
        let (t, prompt, p) = target_and_params(&Route::HfInference(repo.clone()), &hf).unwrap();
        assert_eq!((t.repo.to_string(), prompt.as_str()), ("alice/sky-lora".into(), "sky"));
        assert_eq!(
            p,
            Params {
                width: Some(64),
                height: Some(32),
                steps: Some(3),
                seed: Some(7),
                scheduler: Some("DDIMScheduler".into()),
                ..Default::default()
            }
        );

        let fal = serde_json::json!({"prompt": "sky", "image_size": {"width": 64, "height": 64}, "guidance_scale": 2.5, "model_name": "alice/base",
            "loras": [{"path": "http://127.0.0.1:1/alice/sky-lora/resolve/main/sub/w.safetensors", "scale": 0.5}]});
        let (t, _, p) = target_and_params(&Route::FalAi(FAL_SD_LORA.into()), &fal).unwrap();
        assert_eq!((t.lora_file.as_deref(), t.base_model.as_deref(), t.lora_scale), (Some("sub/w.safetensors"), Some("alice/base"), Some(0.5)));
        assert_eq!((p.width, p.guidance), (Some(64), Some(2.5)));

        let rep = serde_json::json!({"input": {"prompt": "sky", "lora_weights": "http://h/alice/sky-lora", "num_inference_steps": 2}});
        let (t, _, p) = target_and_params(&Route::Replicate(None), &rep).unwrap();
        assert_eq!((t.repo, t.lora_file, p.steps), (repo, None, Some(2)));

        for (route, bad, part) in [
            (Route::HfInference(RepoId::parse("a/b").unwrap()), serde_json::json!({"inputs": ""}), "inputs"),
            (
                Route::HfInference(RepoId::parse("a/b").unwrap()),
                serde_json::json!({"inputs": "x", "parameters": {"num_inference_steps": "many"}}),
                "parameters.num_inference_steps",
            ),
            (Route::FalAi(FAL_SD_LORA.into()), serde_json::json!({"prompt": "x"}), "loras"),
            (Route::FalAi(FAL_SD_LORA.into()), serde_json::json!({"prompt": "x", "image_size": "square_hd", "loras": []}), "image_size"),
            (Route::Replicate(None), serde_json::json!({"input": {"prompt": "x", "lora_weights": "http://h/only-one"}}), "lora_weights"),
        ] {
            let f = target_and_params(&route, &bad).err().unwrap();
            assert!(f.status.is_client_error() && f.message.contains(part), "{}", f.message);
        }
    }

    // ---- the routes, end to end through the library client, with a test renderer ----

    use crate::hub::inference::{InferenceClient, InferenceError, ProviderChoice, TextToImageRequest};
    use crate::hub::serve::{store::Store, ServeConfig, TokenSpec};
    use crate::hub::HubClient;

    const TOKEN: &str = "hf_AliceWriteToken0123456789abcdef";

    /// Paints the image in a colour derived from the job, and remembers every job.
    struct TestRenderer(Mutex<Vec<RenderJob>>);

    impl InferenceRenderer for TestRenderer {
        fn check(&self, _: &RenderProfile) -> Result<(), String> {
            Ok(())
        }
        fn render(&self, job: &RenderJob) -> Result<RenderedPng, RenderFailure> {
            if job.scheduler == "bogus" {
                return Err(RenderFailure { bad_request: true, message: "unknown scheduler \"bogus\"".into() });
            }
            self.0.lock().unwrap().push(job.clone());
            let (w, h) = (job.width.unwrap_or(16), job.height.unwrap_or(16));
            let shade = if job.lora_path.is_some() { 200 } else { 40 };
            let img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([shade, 100, job.steps as u8]));
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
            Ok(RenderedPng { png, report: job.report("EulerAncestralDiscreteScheduler", job.guidance.unwrap_or(7.5), w, h, None) })
        }
    }

    fn commit_files(store: &Store, id: &str, files: &[(&str, &[u8])], private: bool) {
        let id = RepoId::parse(id).unwrap();
        store.create_repo(&id, private).unwrap();
        let head = store.resolve(&id, "main").unwrap();
        let mut tree = store.commit(&id, &head).unwrap().files;
        for (path, bytes) in files {
            tree.insert(path.to_string(), store.put_bytes(bytes, path.ends_with(".safetensors")).unwrap());
        }
        let oid = store.write_commit(&id, vec![head], "add", "", tree).unwrap();
        store.set_ref(&id, "main", &oid).unwrap();
    }

    struct Served {
        endpoint: String,
        renderer: Arc<TestRenderer>,
        rt: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    }

    impl Served {
        fn client(&self, token: bool) -> InferenceClient {
            let t = token.then(|| crate::token::Token::parse(TOKEN).unwrap());
            InferenceClient::new(HubClient::new(&self.endpoint, t).unwrap()).unwrap().with_router(&self.endpoint).unwrap()
        }
        fn render(&self, repo: &str, choice: ProviderChoice, req: &TextToImageRequest) -> Result<crate::hub::inference::HubRender, InferenceError> {
            let c = self.client(true);
            let repo = RepoId::parse(repo).unwrap();
            self.rt.block_on(async { c.text_to_image(&c.choose(&repo, choice).await?, req).await })
        }
    }

    fn serve(providers: &[Provider], profile: &str, faults: Option<&str>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let card = |extra: &str| format!("---\ntags: [lora, text-to-image]\n{extra}---\n# LoRA\n");
        commit_files(&store, "alice/base", &[("model_index.json", b"{}"), ("unet/config.json", b"{}")], false);
        commit_files(
            &store,
            "alice/sky-lora",
            &[("README.md", card("base_model: alice/base\n").as_bytes()), ("pytorch_lora_weights.safetensors", b"w")],
            false,
        );
        commit_files(&store, "alice/no-base", &[("README.md", card("").as_bytes()), ("sky.safetensors", b"w")], false);
        commit_files(&store, "alice/gone-base", &[("README.md", card("base_model: alice/missing\n").as_bytes()), ("a.safetensors", b"w")], false);
        commit_files(&store, "alice/notes", &[("README.md", b"# just notes")], false);
        let renderer = Arc::new(TestRenderer(Mutex::new(vec![])));
        let cfg = ServeConfig {
            root: dir.path().to_path_buf(),
            tokens: vec![TokenSpec { user: "alice".into(), role: "read".into(), secret: TOKEN.into() }],
            faults: faults.map(|f| Arc::new(super::super::Faults::parse(f).unwrap())),
            multipart_chunk: 1 << 20,
            max_body: 1 << 20,
            oidc: None,
            inference: Some(InferenceConfig {
                providers: providers.to_vec(),
                profile: RenderProfile::from_yaml(profile, "profile.yaml").unwrap(),
                renderer: renderer.clone(),
            }),
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = super::super::router(cfg, 9).unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Served { endpoint, renderer, rt, _dir: dir }
    }

    fn req(seed: u64) -> TextToImageRequest {
        TextToImageRequest { prompt: "a photo of the SKY river".into(), seed: Some(seed), ..Default::default() }
    }

    #[test]
    fn every_provider_route_renders_with_the_profile_and_explicit_overrides() {
        let s = serve(&Provider::ALL, "steps: 3\nwidth: 24\nheight: 24\nguidance: 2\n", None);
        let info = s.rt.block_on(s.client(false).inspect(&RepoId::parse("alice/sky-lora").unwrap())).unwrap();
        let names: Vec<&str> = info.mappings.iter().map(|m| m.provider.as_str()).collect();
        assert_eq!(names, ["hf-inference", "fal-ai", "replicate"]);
        assert_eq!(info.mappings[1].adapter_weights_path.as_deref(), Some("pytorch_lora_weights.safetensors"));
        for p in Provider::ALL {
            let r = s.render("alice/sky-lora", ProviderChoice::Only(p), &req(5)).unwrap();
            assert_eq!((r.provider.as_str(), r.image_format.as_str(), r.width, r.status / 100), (p.name(), "png", 24, 2), "{r:?}");
            let rep = r.reported_settings.as_ref().unwrap();
            assert_eq!((rep.steps, rep.guidance, rep.seed, rep.base_model.as_str(), rep.apply_lora), (3, 2.0, 5, "alice/base", true));
            assert_eq!(rep.lora_file.as_deref(), Some("pytorch_lora_weights.safetensors"));
            assert!(r.request_id.as_deref().is_some_and(|id| id.starts_with("req-")));
            assert!(r.response_headers.contains_key(RENDER_HEADER) && !r.route.contains(TOKEN));
        }
        // Explicit parameters win over the profile.
        let explicit = TextToImageRequest { num_inference_steps: Some(7), width: Some(32), height: Some(16), ..req(1) };
        let r = s.render("alice/sky-lora", ProviderChoice::Auto, &explicit).unwrap();
        let rep = r.reported_settings.unwrap();
        assert_eq!((r.provider.as_str(), rep.steps, rep.width, rep.height, r.width, r.height), ("hf-inference", 7, 32, 16, 32, 16));
        let jobs = s.renderer.0.lock().unwrap();
        assert!(jobs.iter().all(|j| j.base_dir.join("model_index.json").is_file() && j.lora_path.as_ref().is_some_and(|p| p.is_file())));
    }

    #[test]
    fn bad_input_gets_the_hub_s_clear_answers() {
        let s = serve(&[Provider::HfInference, Provider::FalAi], "", None);
        let e = s.render("alice/no-base", ProviderChoice::Auto, &req(1)).unwrap_err().to_string();
        assert!(e.contains("422") && e.contains("alice/no-base has no base_model in its model card"), "{e}");
        let e = s.render("alice/gone-base", ProviderChoice::Auto, &req(1)).unwrap_err().to_string();
        assert!(e.contains("404") && e.contains("alice/missing") && e.contains("not in this offline Hub"), "{e}");
        // Not text-to-image: nobody serves it; fal-ai serves only LoRAs with a base_model.
        let e = s.render("alice/notes", ProviderChoice::Auto, &req(1)).unwrap_err();
        assert!(matches!(e, InferenceError::NoProvider { .. }) && e.to_string().contains("--hub-image"), "{e}");
        let e = s.render("alice/no-base", ProviderChoice::Only(Provider::FalAi), &req(1)).unwrap_err().to_string();
        assert!(e.contains("fal-ai does not serve alice/no-base") && e.contains("no `base_model`"), "{e}");
        let e = s.render("alice/sky-lora", ProviderChoice::Only(Provider::Replicate), &req(1)).unwrap_err().to_string();
        assert!(e.contains("replicate does not serve"), "{e}");
        let e = s
            .render("alice/sky-lora", ProviderChoice::Auto, &TextToImageRequest { scheduler: Some("bogus".into()), ..req(1) })
            .unwrap_err()
            .to_string();
        assert!(e.contains("422") && e.contains("bogus"), "{e}");
        let c = s.client(false);
        let sel = s.rt.block_on(c.choose(&RepoId::parse("alice/sky-lora").unwrap(), ProviderChoice::Auto)).unwrap();
        assert!(matches!(s.rt.block_on(c.text_to_image(&sel, &req(1))), Err(InferenceError::NoToken)));
    }

    #[test]
    fn the_profile_can_drop_the_lora_and_swap_the_base() {
        let s = serve(&[Provider::HfInference], "apply_lora: false\nbase_model: alice/base\n", None);
        let r = s.render("alice/no-base", ProviderChoice::Auto, &req(2)).unwrap();
        let rep = r.reported_settings.unwrap();
        assert_eq!((rep.apply_lora, rep.lora_file, rep.base_model.as_str()), (false, None, "alice/base"));
    }

    #[test]
    fn injected_provider_refusals_carry_status_and_request_id() {
        for (spec, status, part) in [
            ("infer-402=1", 402, "credits"),
            ("infer-429=1,retry-after=9", 429, "retry after 9 s"),
            ("infer-404=1", 404, "not deployed on hf-inference"),
        ] {
            let s = serve(&[Provider::HfInference], "", Some(spec));
            let e = s.render("alice/sky-lora", ProviderChoice::Auto, &req(1)).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.status(), Some(status), "{text}");
            let rid = e.request_id().expect("a request id").to_string();
            assert!(text.contains(&rid) && text.contains(part) && text.contains("/hf-inference/models/alice/sky-lora"), "{text}");
        }
    }
}
