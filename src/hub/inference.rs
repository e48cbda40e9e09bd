//! Text-to-image through the Hub's Inference Providers, as huggingface_hub's
//! `InferenceClient.text_to_image` calls them (hub-protocol.md §5):
//!
//! 1. `GET {endpoint}/api/models/{repo}?expand[]=inferenceProviderMapping&…` lists which
//!    providers serve the repo (`{provider: {status, providerId, task, adapter,
//!    adapterWeightsPath, type}}`, in the order of the user's provider preferences).
//! 2. `POST {router}/{provider}/…` with that provider's payload: `hf-inference` answers the
//!    image bytes, `fal-ai` and `replicate` answer JSON naming an image URL, fetched without the
//!    token.
//!
//! The router is `https://router.huggingface.co` for the public Hub and the endpoint itself for
//! any other endpoint (the offline Hub, `hfsky hub serve`, answers the router's routes on its own
//! origin); `HF_INFERENCE_ROUTER` overrides both. Each request is sent once: a render may be
//! billed, so failures are reported (with the Retry-After of a 429), never retried blindly.

use super::client::{describe_error, error_from_response, normalize_endpoint};
use super::error::{HttpFailure, HubError};
use super::HubClient;
use crate::names;
use crate::redact::redact;
use crate::repo_id::RepoId;
use base64::Engine;
use reqwest::{header, Method, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The router of the public Hub (huggingface_hub's `INFERENCE_PROXY_TEMPLATE`).
pub const PUBLIC_ROUTER: &str = "https://router.huggingface.co";
/// Response header in which the offline Hub reports the settings it rendered with.
pub const RENDER_HEADER: &str = "x-hfsky-render";
/// fal's Stable Diffusion LoRA endpoint needs the base model in `model_name`; huggingface_hub
/// always sends SDXL base there, hfsky sends the card's `base_model` and falls back to this.
pub const FAL_SD_LORA: &str = "fal-ai/lora";
const FAL_DEFAULT_BASE: &str = "stabilityai/stable-diffusion-xl-base-1.0";
const TASK: &str = "text-to-image";

/// A provider hfsky can call for text-to-image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Provider {
    #[serde(rename = "hf-inference")]
    HfInference,
    #[serde(rename = "fal-ai")]
    FalAi,
    #[serde(rename = "replicate")]
    Replicate,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::HfInference, Provider::FalAi, Provider::Replicate];

    pub fn name(self) -> &'static str {
        match self {
            Provider::HfInference => "hf-inference",
            Provider::FalAi => "fal-ai",
            Provider::Replicate => "replicate",
        }
    }

    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Provider::from_name(s.trim()).ok_or_else(|| format!("unknown provider {s:?} (expected hf-inference, fal-ai or replicate)"))
    }
}

/// `--provider`: `auto` takes the first live text-to-image mapping in the order the Hub lists
/// them (on huggingface.co: the user's order at hf.co/settings/inference-providers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderChoice {
    #[default]
    Auto,
    Only(Provider),
}

impl std::str::FromStr for ProviderChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(ProviderChoice::Auto),
            other => other
                .parse::<Provider>()
                .map(ProviderChoice::Only)
                .map_err(|_| format!("unknown provider {s:?} (expected auto, hf-inference, fal-ai or replicate)")),
        }
    }
}

/// One entry of `inferenceProviderMapping` (huggingface_hub's `InferenceProviderMapping`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderMapping {
    /// In `model_info` the provider is the key of the mapping; in `list_models` a field.
    #[serde(default)]
    pub provider: String,
    #[serde(rename = "providerId")]
    pub provider_id: String,
    /// `live`, `staging` or `error`.
    pub status: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(rename = "adapterWeightsPath", default, skip_serializing_if = "Option::is_none")]
    pub adapter_weights_path: Option<String>,
    /// `single-model` or `tag-filter`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Reads `inferenceProviderMapping` in the Hub's order: a dict keyed by provider (`model_info`)
/// or a list (`list_models`). serde_json's own map would sort the keys.
fn ordered_mappings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ProviderMapping>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<ProviderMapping>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a provider mapping (object or list)")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(vec![])
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = vec![];
            while let Some((provider, mut m)) = map.next_entry::<String, ProviderMapping>()? {
                m.provider = provider;
                out.push(m);
            }
            Ok(out)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = vec![];
            while let Some(m) = seq.next_element::<ProviderMapping>()? {
                out.push(m);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
struct ExpandedInfo {
    #[serde(default)]
    private: bool,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    pipeline_tag: Option<String>,
    #[serde(rename = "cardData", default)]
    card_data: Option<serde_json::Value>,
    #[serde(default)]
    siblings: Vec<SiblingName>,
    #[serde(rename = "inferenceProviderMapping", default, deserialize_with = "ordered_mappings")]
    mappings: Vec<ProviderMapping>,
}

#[derive(Deserialize)]
struct SiblingName {
    rfilename: String,
}

/// What the Hub says about serving a repo: its provider mappings and the card facts that decide
/// whether a provider can serve it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoInference {
    #[serde(serialize_with = "as_string")]
    pub repo: RepoId,
    pub mappings: Vec<ProviderMapping>,
    /// The card's `base_model` (the first one when it lists several).
    pub base_model: Option<String>,
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub private: bool,
    pub files: Vec<String>,
}

fn as_string<S: serde::Serializer>(id: &RepoId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// A provider picked for a repo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    #[serde(serialize_with = "as_string")]
    pub repo: RepoId,
    pub provider: Provider,
    pub mapping: ProviderMapping,
    pub base_model: Option<String>,
}

/// The generation parameters of huggingface_hub's `text_to_image`; `None` ones are not sent,
/// so the provider's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextToImageRequest {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub num_inference_steps: Option<usize>,
    pub guidance_scale: Option<f64>,
    /// A diffusers scheduler class name, e.g. `EulerAncestralDiscreteScheduler`.
    pub scheduler: Option<String>,
    pub seed: Option<u64>,
    /// fal-ai's `loras[0].scale` (huggingface_hub sends 1).
    pub lora_scale: Option<f64>,
}

/// The scheduler config keys a render's sampler ran with (diffusers' names and values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerKeys {
    pub use_karras_sigmas: bool,
    /// `leading`, `linspace` or `trailing`.
    pub timestep_spacing: String,
    pub steps_offset: usize,
}

/// The settings the offline Hub reports in `x-hfsky-render` (real providers report none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderReport {
    /// diffusers class name, e.g. `EulerAncestralDiscreteScheduler`.
    pub scheduler: String,
    /// `None` from a Hub that does not report them.
    #[serde(default)]
    pub scheduler_config: Option<SchedulerKeys>,
    /// The negative prompt rendered with (`""`: none); `None`: not reported.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    pub steps: usize,
    pub guidance: f64,
    pub width: usize,
    pub height: usize,
    pub apply_lora: bool,
    pub lora_scale: f64,
    pub base_model: String,
    pub dtype: String,
    pub seed: u64,
    /// Path of the LoRA weight file in its repo, when one was applied.
    pub lora_file: Option<String>,
    /// A replacement VAE; `None`: the base pipeline's own.
    #[serde(default)]
    pub vae: Option<String>,
}

/// One Hub render, with everything needed to say later how it was made.
#[derive(Debug, Clone, Serialize)]
pub struct HubRender {
    pub provider: String,
    pub provider_id: String,
    /// The URL posted to (never holds a token).
    pub route: String,
    /// When the answer arrived (RFC 3339, UTC).
    pub date: String,
    /// The JSON body sent (the token travels only in the Authorization header).
    pub parameters_sent: serde_json::Value,
    pub status: u16,
    pub request_id: Option<String>,
    /// Every header of the provider's answer except `set-cookie`, lower-case names.
    pub response_headers: BTreeMap<String, String>,
    /// For providers answering with a URL: where the image was fetched from.
    pub output_url: Option<String>,
    /// `png`, `jpeg`, `webp`, `gif`.
    pub image_format: String,
    pub width: u32,
    pub height: u32,
    /// Parsed `x-hfsky-render` header: what the offline Hub actually rendered.
    pub reported_settings: Option<RenderReport>,
    #[serde(skip)]
    pub image: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("inference needs a Hub token: run `hfsky login` or set HF_TOKEN (a fine-grained token needs the permission \"Make calls to Inference Providers\")")]
    NoToken,
    #[error("{}", no_provider_message(.repo, .provider, .listed, .reasons))]
    NoProvider {
        repo: String,
        /// The provider asked for; `None` for `auto`.
        provider: Option<Provider>,
        /// What the Hub lists for the repo, e.g. `fal-ai (staging)`.
        listed: Vec<String>,
        /// Why no provider serves it, from the card and files.
        reasons: Vec<String>,
    },
    /// Boxed, so every `Result<_, InferenceError>` stays small.
    #[error("{0}")]
    Http(Box<ProviderFailure>),
    #[error("{provider}: the answer from {url} is not an image (HTTP {status}, request id: {}, content-type: {}): {detail}", .request_id.as_deref().unwrap_or("none"), .content_type.as_deref().unwrap_or("none"))]
    NotAnImage { provider: Provider, status: u16, url: String, request_id: Option<String>, content_type: Option<String>, detail: String },
    #[error("{provider}: unexpected answer from {url} (request id: {}): {detail}", .request_id.as_deref().unwrap_or("none"))]
    Protocol { provider: Provider, url: String, request_id: Option<String>, detail: String },
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// A provider route's HTTP error answer, and the repo it was asked to render.
#[derive(Debug)]
pub struct ProviderFailure {
    pub provider: Provider,
    pub repo: String,
    pub status: u16,
    pub url: String,
    pub request_id: Option<String>,
    pub message: String,
    pub retry_after: Option<String>,
}

impl std::fmt::Display for ProviderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ProviderFailure { provider, repo, status, url, request_id, message, retry_after } = self;
        f.write_str(&http_message(provider, status, url, request_id, message, retry_after, repo))
    }
}

impl InferenceError {
    pub fn status(&self) -> Option<u16> {
        match self {
            InferenceError::Http(f) => Some(f.status),
            InferenceError::NotAnImage { status, .. } => Some(*status),
            InferenceError::Hub(h) => h.status(),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            InferenceError::Http(f) => f.request_id.as_deref(),
            InferenceError::NotAnImage { request_id, .. } | InferenceError::Protocol { request_id, .. } => request_id.as_deref(),
            InferenceError::Hub(HubError::Http(f)) => f.request_id.as_deref(),
            _ => None,
        }
    }

    /// No token, or the token was refused (the command layer's "auth" exit code).
    pub fn is_auth(&self) -> bool {
        matches!(self, InferenceError::NoToken) || matches!(self.status(), Some(401 | 403))
    }
}

const HUB_IMAGE_HINT: &str = "To compare anyway, save images from the model page's widget and pass them with `--hub-image FILE…`.";

fn no_provider_message(repo: &str, provider: &Option<Provider>, listed: &[String], reasons: &[String]) -> String {
    let whom = match provider {
        Some(p) => format!("{p} does not serve {repo} for text-to-image"),
        None => format!("no Inference Provider serves {repo} for text-to-image"),
    };
    let listed = if listed.is_empty() { "none".to_string() } else { listed.join(", ") };
    let mut s = format!("{whom} (providers the Hub lists for it: {listed}).");
    if !reasons.is_empty() {
        s.push_str(&format!(" Found: {}.", reasons.join("; ")));
    }
    s.push_str(
        " Providers serve a LoRA repo when its model card names `base_model:` a base model a provider maps \
         (e.g. stabilityai/stable-diffusion-xl-base-1.0 or black-forest-labs/FLUX.1-dev), it has the tags `lora` and \
         `text-to-image`, the repo is public, and the weights are one .safetensors file named pytorch_lora_weights.safetensors. ",
    );
    s.push_str(HUB_IMAGE_HINT);
    s
}

fn http_message(
    provider: &Provider,
    status: &u16,
    url: &str,
    request_id: &Option<String>,
    message: &str,
    retry_after: &Option<String>,
    repo: &str,
) -> String {
    let reason = reqwest::StatusCode::from_u16(*status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut s = format!("{provider}: HTTP {status} {reason} from POST {url} (request id: {})", request_id.as_deref().unwrap_or("none"));
    if !message.is_empty() {
        s.push_str(&format!(": {message}"));
    }
    let hint = match *status {
        401 | 403 => "the token may not call Inference Providers: use a fine-grained token with the permission \
                      \"Make calls to Inference Providers\" (or a read/write token), via `hfsky login` or HF_TOKEN"
            .to_string(),
        402 => "the account is out of Inference Providers credits: add credits or subscribe to PRO at \
                https://huggingface.co/settings/billing, or pass `--hub-image FILE…` with images saved from the website"
            .to_string(),
        404 => format!("{repo} is not deployed on {provider}: try `--provider auto` or another provider the repo lists. {HUB_IMAGE_HINT}"),
        429 => match retry_after {
            Some(secs) => format!("rate limited by {provider}: retry after {secs} s (Retry-After)"),
            None => format!("rate limited by {provider}: wait a minute and retry"),
        },
        400 | 422 => format!("{provider} refused the request or its parameters"),
        500..=599 => format!("{provider} failed to render: try again later or another provider"),
        _ => String::new(),
    };
    if !hint.is_empty() {
        s.push_str(&format!(" — {hint}"));
    }
    s
}

/// The router for an endpoint: the public router for huggingface.co, the endpoint itself
/// otherwise (a mirror or the offline Hub serve the router's routes on their own origin).
pub fn router_for(endpoint: &str) -> String {
    let host = url::Url::parse(endpoint).ok().and_then(|u| u.host_str().map(str::to_string));
    match host.as_deref() {
        Some("huggingface.co" | "www.huggingface.co" | "hf.co") => PUBLIC_ROUTER.to_string(),
        _ => endpoint.trim_end_matches('/').to_string(),
    }
}

/// Picks the provider to call. `auto`: the first mapping that is live, for text-to-image and
/// of a provider hfsky speaks, in the Hub's order. An explicit provider must be listed and live,
/// except `hf-inference`, which huggingface_hub calls without a mapping (its answer, a 404 when
/// the model is not deployed there, then says so).
pub fn select(info: &RepoInference, choice: ProviderChoice) -> Result<Selection, InferenceError> {
    let usable = |m: &ProviderMapping| m.status == "live" && m.task == TASK;
    let picked = match choice {
        ProviderChoice::Auto => info.mappings.iter().find(|m| usable(m) && Provider::from_name(&m.provider).is_some()).cloned(),
        ProviderChoice::Only(p) => match info.mappings.iter().find(|m| m.provider == p.name()) {
            Some(m) if usable(m) => Some(m.clone()),
            None if p == Provider::HfInference => Some(ProviderMapping {
                provider: p.name().into(),
                provider_id: info.repo.to_string(),
                status: "live".into(),
                task: TASK.into(),
                adapter: None,
                adapter_weights_path: None,
                kind: Some("single-model".into()),
            }),
            _ => None,
        },
    };
    match picked {
        Some(mapping) => Ok(Selection {
            repo: info.repo.clone(),
            provider: Provider::from_name(&mapping.provider).expect("filtered to known providers"),
            mapping,
            base_model: info.base_model.clone(),
        }),
        None => Err(InferenceError::NoProvider {
            repo: info.repo.to_string(),
            provider: match choice {
                ProviderChoice::Auto => None,
                ProviderChoice::Only(p) => Some(p),
            },
            listed: info
                .mappings
                .iter()
                .map(|m| {
                    let mut notes = vec![];
                    if m.status != "live" {
                        notes.push(m.status.clone());
                    }
                    if m.task != TASK {
                        notes.push(format!("task {}", m.task));
                    }
                    if Provider::from_name(&m.provider).is_none() {
                        notes.push("not supported by hfsky".into());
                    }
                    if notes.is_empty() {
                        m.provider.clone()
                    } else {
                        format!("{} ({})", m.provider, notes.join(", "))
                    }
                })
                .collect(),
            reasons: why_not_served(info),
        }),
    }
}

/// The card and file facts that keep providers from serving a LoRA repo (hub-protocol.md §5.2).
fn why_not_served(info: &RepoInference) -> Vec<String> {
    let mut out = vec![];
    if info.files.iter().any(|f| f == names::MODEL_INDEX) {
        return out; // a full pipeline: only providers that map this exact model serve it
    }
    if info.base_model.is_none() {
        out.push("the card (README.md front matter) has no `base_model`".into());
    }
    let has = |t: &str| info.tags.iter().any(|x| x == t);
    if !has("lora") {
        out.push("the tag `lora` is missing".into());
    }
    if !has("text-to-image") && info.pipeline_tag.as_deref() != Some("text-to-image") {
        out.push("the tag `text-to-image` (or `pipeline_tag: text-to-image`) is missing".into());
    }
    if info.private {
        out.push("the repo is private, so providers cannot download the weights".into());
    }
    let weights: Vec<&String> = info.files.iter().filter(|f| f.ends_with(".safetensors")).collect();
    if weights.is_empty() {
        out.push("there is no .safetensors weight file".into());
    } else if !weights.iter().any(|f| *f == names::LORA_WEIGHTS) {
        out.push(format!("the weight file is {} rather than {}", weights[0], names::LORA_WEIGHTS));
    }
    out
}

/// A request ready to send: where, what, and the provider-specific headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub url: String,
    pub body: serde_json::Value,
    pub headers: Vec<(&'static str, &'static str)>,
}

fn insert_some<T: Serialize>(obj: &mut serde_json::Map<String, serde_json::Value>, key: &str, v: &Option<T>) {
    if let Some(v) = v {
        obj.insert(key.into(), serde_json::to_value(v).expect("serializable"));
    }
}

/// huggingface_hub's `parameters` for text-to-image, `None` values left out.
fn parameters(req: &TextToImageRequest) -> serde_json::Map<String, serde_json::Value> {
    let mut p = serde_json::Map::new();
    insert_some(&mut p, "negative_prompt", &req.negative_prompt);
    insert_some(&mut p, "height", &req.height);
    insert_some(&mut p, "width", &req.width);
    insert_some(&mut p, "num_inference_steps", &req.num_inference_steps);
    insert_some(&mut p, "guidance_scale", &req.guidance_scale);
    insert_some(&mut p, "scheduler", &req.scheduler);
    insert_some(&mut p, "seed", &req.seed);
    p
}

/// The request huggingface_hub's provider helpers (`_providers/hf_inference.py`, `fal_ai.py`,
/// `replicate.py`) build for `text_to_image`. `endpoint` is where providers download LoRA
/// weights from.
pub fn prepare(sel: &Selection, req: &TextToImageRequest, endpoint: &str, router: &str) -> Prepared {
    let router = router.trim_end_matches('/');
    let endpoint = endpoint.trim_end_matches('/');
    let m = &sel.mapping;
    let mut params = parameters(req);
    match sel.provider {
        Provider::HfInference => Prepared {
            url: format!("{router}/hf-inference/models/{}", m.provider_id),
            body: serde_json::json!({ "inputs": req.prompt, "parameters": params }),
            headers: vec![("accept", "image/png")],
        },
        Provider::FalAi => {
            let mut body = serde_json::Map::new();
            body.insert("prompt".into(), req.prompt.clone().into());
            if let (Some(w), Some(h)) = (req.width, req.height) {
                params.remove("width");
                params.remove("height");
                params.insert("image_size".into(), serde_json::json!({ "width": w, "height": h }));
            }
            body.extend(params);
            if let Some(path) = &m.adapter_weights_path {
                let url = format!("{endpoint}/{}/resolve/main/{path}", sel.repo);
                body.insert("loras".into(), serde_json::json!([{ "path": url, "scale": req.lora_scale.unwrap_or(1.0) }]));
                if m.provider_id == FAL_SD_LORA {
                    let base = sel.base_model.clone().unwrap_or_else(|| FAL_DEFAULT_BASE.into());
                    body.insert("model_name".into(), base.into());
                }
            }
            Prepared { url: format!("{router}/fal-ai/{}", m.provider_id), body: body.into(), headers: vec![] }
        }
        Provider::Replicate => {
            let mut input = serde_json::Map::new();
            input.insert("prompt".into(), req.prompt.clone().into());
            input.extend(params);
            if m.adapter_weights_path.is_some() {
                // huggingface_hub names the public Hub here whatever the endpoint (fal-ai gets the
                // endpoint); the offline Hub reads only the repo from it.
                input.insert("lora_weights".into(), format!("{}/{}", super::client::DEFAULT_ENDPOINT, sel.repo).into());
            }
            let mut body = serde_json::json!({ "input": input });
            let url = match m.provider_id.split_once(':') {
                Some((_, version)) => {
                    body["version"] = version.into();
                    format!("{router}/replicate/v1/predictions")
                }
                None => format!("{router}/replicate/v1/models/{}/predictions", m.provider_id),
            };
            Prepared { url, body, headers: vec![("prefer", "wait")] }
        }
    }
}

/// Image format from the first bytes, as a provider may answer JPEG or WebP although PNG was
/// asked for.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else {
        None
    }
}

/// Checks that `bytes` is an image that decodes; returns (format, width, height).
fn check_image(bytes: &[u8]) -> Result<(&'static str, u32, u32), String> {
    let Some(format) = sniff_image(bytes) else {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).replace(['\n', '\r'], " ");
        return Err(if bytes.is_empty() { "the body is empty".into() } else { format!("it starts with {head:?}") });
    };
    let img = image::load_from_memory(bytes).map_err(|e| format!("it looks like {format} but does not decode: {e}"))?;
    Ok((format, img.width(), img.height()))
}

fn header_value(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| redact(s.trim()))
}

fn request_id(resp: &Response) -> Option<String> {
    header_value(resp, "x-request-id")
        .or_else(|| resp.headers().iter().find(|(k, _)| k.as_str().ends_with("request-id")).and_then(|(_, v)| v.to_str().ok()).map(redact))
}

/// The calls of `hfsky compare`'s Hub side.
#[derive(Clone)]
pub struct InferenceClient {
    hub: HubClient,
    router: String,
}

impl InferenceClient {
    /// A client for `hub`'s endpoint and token; the router comes from `HF_INFERENCE_ROUTER`,
    /// else [`router_for`] the endpoint.
    pub fn new(hub: HubClient) -> Result<InferenceClient, HubError> {
        let router = match std::env::var("HF_INFERENCE_ROUTER").ok().filter(|v| !v.trim().is_empty()) {
            Some(r) => normalize_endpoint(&r).map_err(|e| HubError::Invalid(format!("HF_INFERENCE_ROUTER: {e}")))?,
            None => router_for(hub.endpoint()),
        };
        Ok(InferenceClient { hub, router })
    }

    pub fn with_router(mut self, router: &str) -> Result<InferenceClient, HubError> {
        self.router = normalize_endpoint(router)?;
        Ok(self)
    }

    pub fn router(&self) -> &str {
        &self.router
    }

    pub fn hub(&self) -> &HubClient {
        &self.hub
    }

    /// `GET /api/models/{repo}?expand[]=inferenceProviderMapping` plus the card facts that
    /// explain a missing mapping.
    pub async fn inspect(&self, repo: &RepoId) -> Result<RepoInference, InferenceError> {
        let expand = ["inferenceProviderMapping", "cardData", "tags", "pipeline_tag", "private", "siblings"];
        let query: Vec<String> = expand.iter().map(|e| format!("expand[]={e}")).collect();
        let url = self.hub.url(&format!("/api/models/{repo}?{}", query.join("&").replace("[]", "%5B%5D")));
        let resp = self.hub.execute("GET", &url, || Ok(self.hub.request(Method::GET, &url))).await?;
        let bytes = resp.bytes().await.map_err(|e| HubError::Network { url: url.clone(), detail: describe_error(&e), attempts: 1 })?;
        let info: ExpandedInfo =
            serde_json::from_slice(&bytes).map_err(|e| HubError::Protocol { url: url.clone(), detail: format!("invalid model info: {e}") })?;
        let base_model = info.card_data.as_ref().and_then(crate::card::base_model);
        Ok(RepoInference {
            repo: repo.clone(),
            mappings: info.mappings,
            base_model,
            tags: info.tags,
            pipeline_tag: info.pipeline_tag,
            private: info.private,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// [`inspect`](Self::inspect) then [`select`].
    pub async fn choose(&self, repo: &RepoId, choice: ProviderChoice) -> Result<Selection, InferenceError> {
        select(&self.inspect(repo).await?, choice)
    }

    /// One text-to-image render through the selected provider.
    pub async fn text_to_image(&self, sel: &Selection, req: &TextToImageRequest) -> Result<HubRender, InferenceError> {
        if !self.hub.has_token() {
            return Err(InferenceError::NoToken);
        }
        let provider = sel.provider;
        let p = prepare(sel, req, self.hub.endpoint(), &self.router);
        let url = redact(&p.url);
        let mut rb = self.hub.request(Method::POST, &p.url).json(&p.body);
        for (k, v) in &p.headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.map_err(|e| HubError::Network { url: url.clone(), detail: describe_error(&e), attempts: 1 })?;
        let status = resp.status().as_u16();
        let rid = request_id(&resp);
        if !resp.status().is_success() {
            let retry_after = header_value(&resp, "retry-after");
            return Err(match error_from_response("POST", &url, resp).await {
                HubError::Http(f) => {
                    let HttpFailure { status, url, request_id, message, .. } = *f;
                    InferenceError::Http(Box::new(ProviderFailure {
                        provider,
                        repo: sel.repo.to_string(),
                        status,
                        url,
                        request_id,
                        message,
                        retry_after,
                    }))
                }
                other => other.into(),
            });
        }
        let headers: BTreeMap<String, String> = resp
            .headers()
            .iter()
            .filter(|(k, _)| *k != header::SET_COOKIE)
            .map(|(k, v)| (k.as_str().to_string(), redact(&String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        let reported_settings = headers.get(RENDER_HEADER).and_then(|v| serde_json::from_str::<RenderReport>(v).ok());
        let content_type = header_value(&resp, "content-type");
        let body = resp.bytes().await.map_err(|e| HubError::Network { url: url.clone(), detail: describe_error(&e), attempts: 1 })?;
        let protocol = |detail: String| InferenceError::Protocol { provider, url: url.clone(), request_id: rid.clone(), detail };
        let (image, output_url) = match provider {
            Provider::HfInference => (body.to_vec(), None),
            Provider::FalAi | Provider::Replicate => {
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| InferenceError::NotAnImage {
                    provider,
                    status,
                    url: url.clone(),
                    request_id: rid.clone(),
                    content_type: content_type.clone(),
                    detail: format!("expected JSON naming the image, got {:?}", String::from_utf8_lossy(&body[..body.len().min(200)])),
                })?;
                let out = output_url(provider, &v).map_err(protocol)?;
                (self.fetch_output(provider, &out, rid.as_ref()).await?, Some(redact(&out)))
            }
        };
        let (format, width, height) = check_image(&image).map_err(|detail| InferenceError::NotAnImage {
            provider,
            status,
            url: output_url.clone().unwrap_or_else(|| url.clone()),
            request_id: rid.clone(),
            content_type: content_type.clone(),
            detail,
        })?;
        Ok(HubRender {
            provider: provider.name().into(),
            provider_id: sel.mapping.provider_id.clone(),
            route: url,
            date: super::clock::now_rfc3339(),
            parameters_sent: p.body,
            status,
            request_id: rid,
            response_headers: headers,
            output_url,
            image_format: format.into(),
            width,
            height,
            reported_settings,
            image,
        })
    }

    /// Downloads a provider's output URL without the Hub token (it is not a Hub host), or
    /// decodes a `data:` URL.
    async fn fetch_output(&self, provider: Provider, out: &str, rid: Option<&String>) -> Result<Vec<u8>, InferenceError> {
        if let Some(rest) = out.strip_prefix("data:") {
            let b64 = rest.split_once(";base64,").map(|(_, d)| d).ok_or_else(|| InferenceError::Protocol {
                provider,
                url: "data: URL".into(),
                request_id: rid.cloned(),
                detail: "the output is a data: URL that is not base64".into(),
            })?;
            return base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| InferenceError::Protocol {
                provider,
                url: "data: URL".into(),
                request_id: rid.cloned(),
                detail: format!("the output data: URL is not valid base64: {e}"),
            });
        }
        let safe = redact(out);
        let resp = self.hub.execute("GET", &safe, || Ok(self.hub.storage_request(Method::GET, out))).await?;
        let bytes = resp.bytes().await.map_err(|e| HubError::Network { url: safe.clone(), detail: describe_error(&e), attempts: 1 })?;
        Ok(bytes.to_vec())
    }
}

/// The image URL in a fal-ai (`{"images": [{"url"}]}`) or replicate (`{"output": url | [url]}`)
/// answer.
fn output_url(provider: Provider, v: &serde_json::Value) -> Result<String, String> {
    let found = match provider {
        Provider::FalAi => v["images"][0]["url"].as_str(),
        Provider::Replicate => match &v["output"] {
            serde_json::Value::String(s) => Some(s.as_str()),
            serde_json::Value::Array(a) => a.first().and_then(|x| x.as_str()),
            serde_json::Value::Null => {
                return Err(format!(
                    "no output yet (status {}): the model may be starting up; try again in a minute",
                    v["status"].as_str().unwrap_or("unknown")
                ))
            }
            _ => None,
        },
        Provider::HfInference => None,
    };
    found.map(String::from).ok_or_else(|| match provider {
        Provider::FalAi => "no images[0].url in the answer".to_string(),
        _ => "no output URL in the answer".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::client::DEFAULT_ENDPOINT;

    fn info(json: serde_json::Value) -> RepoInference {
        let e: ExpandedInfo = serde_json::from_value(json).unwrap();
        RepoInference {
            repo: RepoId::parse("alice/sky-lora").unwrap(),
            mappings: e.mappings,
            base_model: e.card_data.as_ref().and_then(crate::card::base_model),
            tags: e.tags,
            pipeline_tag: e.pipeline_tag,
            private: e.private,
            files: e.siblings.into_iter().map(|s| s.rfilename).collect(),
        }
    }

    #[test]
    fn mappings_keep_the_hubs_order_in_both_shapes() {
        let raw = r#"{"inferenceProviderMapping": {"replicate": {"status": "live", "providerId": "r/m", "task": "text-to-image"},
            "fal-ai": {"status": "live", "providerId": "fal-ai/lora", "task": "text-to-image", "adapter": "lora",
                       "adapterWeightsPath": "pytorch_lora_weights.safetensors", "type": "tag-filter"}}}"#;
        let e: ExpandedInfo = serde_json::from_str(raw).unwrap();
        let names: Vec<&str> = e.mappings.iter().map(|m| m.provider.as_str()).collect();
        assert_eq!(names, ["replicate", "fal-ai"]);
        assert_eq!(e.mappings[1].adapter_weights_path.as_deref(), Some("pytorch_lora_weights.safetensors"));
        let list = r#"{"inferenceProviderMapping": [{"provider": "fal-ai", "status": "live", "providerId": "x", "task": "text-to-image"}]}"#;
        assert_eq!(serde_json::from_str::<ExpandedInfo>(list).unwrap().mappings[0].provider, "fal-ai");
        assert!(serde_json::from_str::<ExpandedInfo>(r#"{"inferenceProviderMapping": null}"#).unwrap().mappings.is_empty());
    }

    #[test]
    fn auto_takes_the_first_live_text_to_image_mapping() {
        let i = info(serde_json::json!({"inferenceProviderMapping": {
            "together": {"status": "live", "providerId": "t", "task": "text-to-image"},
            "fal-ai": {"status": "staging", "providerId": "f", "task": "text-to-image"},
            "hf-inference": {"status": "live", "providerId": "alice/sky-lora", "task": "text-generation"},
            "replicate": {"status": "live", "providerId": "o/m:v1", "task": "text-to-image", "adapter": "lora", "adapterWeightsPath": "w.safetensors"}}}));
        let s = select(&i, ProviderChoice::Auto).unwrap();
        assert_eq!(s.provider, Provider::Replicate);
        let e = select(&i, ProviderChoice::Only(Provider::FalAi)).unwrap_err().to_string();
        assert!(
            e.contains("fal-ai does not serve alice/sky-lora") && e.contains("fal-ai (staging)") && e.contains("together (not supported by hfsky)"),
            "{e}"
        );
        // hf-inference is tried without a mapping, as huggingface_hub does.
        let s = select(&info(serde_json::json!({})), ProviderChoice::Only(Provider::HfInference)).unwrap();
        assert_eq!(s.mapping.provider_id, "alice/sky-lora");
    }

    #[test]
    fn no_provider_says_why_and_what_to_do() {
        let i = info(serde_json::json!({"private": true, "tags": ["diffusers"], "siblings": [{"rfilename": "sky.safetensors"}], "cardData": {}}));
        let e = select(&i, ProviderChoice::Auto).unwrap_err();
        let s = e.to_string();
        for part in [
            "no Inference Provider serves alice/sky-lora",
            "lists for it: none",
            "no `base_model`",
            "`lora` is missing",
            "private",
            "sky.safetensors rather than pytorch_lora_weights.safetensors",
            "--hub-image FILE",
        ] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
        assert!(!e.is_auth());
    }

    fn sel(provider: Provider, provider_id: &str, lora: bool) -> Selection {
        Selection {
            repo: RepoId::parse("alice/sky-lora").unwrap(),
            provider,
            mapping: ProviderMapping {
                provider: provider.name().into(),
                provider_id: provider_id.into(),
                status: "live".into(),
                task: TASK.into(),
                adapter: lora.then(|| "lora".into()),
                adapter_weights_path: lora.then(|| "pytorch_lora_weights.safetensors".into()),
                kind: None,
            },
            base_model: Some("alice/tiny-sd15".into()),
        }
    }

    #[test]
    fn payloads_match_huggingface_hub() {
        let req = TextToImageRequest {
            prompt: "a photo of the SKY river".into(),
            negative_prompt: Some("blurry".into()),
            width: Some(64),
            height: Some(64),
            num_inference_steps: Some(4),
            guidance_scale: Some(5.0),
            seed: Some(3),
            ..Default::default()
        };
        let p = prepare(&sel(Provider::HfInference, "alice/sky-lora", false), &req, "https://huggingface.co", PUBLIC_ROUTER);
        assert_eq!(p.url, "https://router.huggingface.co/hf-inference/models/alice/sky-lora");
        assert_eq!(
            p.body,
            serde_json::json!({"inputs": "a photo of the SKY river", "parameters": {"negative_prompt": "blurry", "height": 64, "width": 64, "num_inference_steps": 4, "guidance_scale": 5.0, "seed": 3}})
        );
        assert_eq!(p.headers, [("accept", "image/png")]);

        let p = prepare(&sel(Provider::FalAi, FAL_SD_LORA, true), &req, "https://huggingface.co", PUBLIC_ROUTER);
        assert_eq!(p.url, "https://router.huggingface.co/fal-ai/fal-ai/lora");
        assert_eq!(
            p.body,
            serde_json::json!({"prompt": "a photo of the SKY river", "negative_prompt": "blurry", "num_inference_steps": 4,
            "guidance_scale": 5.0, "seed": 3, "image_size": {"width": 64, "height": 64},
            "loras": [{"path": "https://huggingface.co/alice/sky-lora/resolve/main/pytorch_lora_weights.safetensors", "scale": 1.0}],
            "model_name": "alice/tiny-sd15"})
        );

        let p = prepare(&sel(Provider::Replicate, "owner/model:abc", true), &req, "http://127.0.0.1:5", "http://127.0.0.1:5");
        assert_eq!(p.url, "http://127.0.0.1:5/replicate/v1/predictions");
        assert_eq!(p.body["version"], "abc");
        assert_eq!(p.body["input"]["lora_weights"], "https://huggingface.co/alice/sky-lora");
        assert_eq!(p.body["input"]["num_inference_steps"], 4);
        assert_eq!(p.headers, [("prefer", "wait")]);
        let p = prepare(&sel(Provider::Replicate, "owner/model", false), &req, "http://h", "http://h");
        assert_eq!(p.url, "http://h/replicate/v1/models/owner/model/predictions");
        assert!(p.body["input"].get("lora_weights").is_none());
    }

    #[test]
    fn router_follows_the_endpoint() {
        assert_eq!(router_for("https://huggingface.co"), PUBLIC_ROUTER);
        assert_eq!(router_for("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(router_for(DEFAULT_ENDPOINT), PUBLIC_ROUTER);
    }

    #[test]
    fn images_are_sniffed_and_decoded() {
        let mut png = Vec::new();
        image::RgbImage::new(3, 2).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        assert_eq!(check_image(&png).unwrap(), ("png", 3, 2));
        assert!(check_image(br#"{"error": "Model is loading"}"#).unwrap_err().contains("Model is loading"));
        assert!(check_image(&png[..20]).unwrap_err().contains("does not decode"));
        assert!(check_image(b"").unwrap_err().contains("empty"));
    }

    #[test]
    fn http_errors_name_status_url_request_id_and_the_fix() {
        let e = |status: u16, retry: Option<&str>| {
            InferenceError::Http(Box::new(ProviderFailure {
                provider: Provider::FalAi,
                repo: "alice/sky-lora".into(),
                status,
                url: "https://router.huggingface.co/fal-ai/fal-ai/lora".into(),
                request_id: Some("req-9".into()),
                message: "boom".into(),
                retry_after: retry.map(String::from),
            }))
            .to_string()
        };
        for (status, part) in
            [(401, "Make calls to Inference Providers"), (402, "credits"), (404, "not deployed on fal-ai"), (503, "try again later")]
        {
            let s = e(status, None);
            assert!(s.contains(&status.to_string()) && s.contains("req-9") && s.contains("fal-ai/fal-ai/lora") && s.contains(part), "{s}");
        }
        assert!(e(429, Some("7")).contains("retry after 7 s"));
    }

    #[test]
    fn output_urls_are_found() {
        assert_eq!(output_url(Provider::FalAi, &serde_json::json!({"images": [{"url": "u"}]})).unwrap(), "u");
        assert_eq!(output_url(Provider::Replicate, &serde_json::json!({"output": ["u"]})).unwrap(), "u");
        assert_eq!(output_url(Provider::Replicate, &serde_json::json!({"output": "u"})).unwrap(), "u");
        assert!(output_url(Provider::Replicate, &serde_json::json!({"output": null, "status": "starting"})).unwrap_err().contains("starting"));
        assert!(output_url(Provider::FalAi, &serde_json::json!({})).is_err());
    }
}
