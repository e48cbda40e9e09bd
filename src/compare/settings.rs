//! The settings each side rendered with, where each Hub value comes from, and how the two sides
//! differ. The Hub rarely says what it did: a value is `reported` (the offline Hub's
//! `x-hfsky-render` header), `sent` (we asked for it), `assumed` (the Hub worker's documented
//! defaults, ../shared/reference/hub-render.md) or unknown.

use crate::diffusion::config::Architecture;
use crate::diffusion::schedulers::SchedulerKind;
use crate::generate::render::ResolvedSettings;
use serde::{Deserialize, Serialize};

/// The settings a cause can name (issue 5's `causes[].setting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    Lora,
    LoraScale,
    /// Live (on the activations) or fused into the weights, and the precision of the fused weights.
    LoraFusion,
    Size,
    Scheduler,
    Steps,
    Guidance,
    BaseModel,
    Vae,
    Dtype,
    Seed,
    /// Scheduler config keys (scheduler_config.json): Karras noise levels, how the steps spread
    /// over the training timesteps, the offset of "leading" timesteps.
    KarrasSigmas,
    TimestepSpacing,
    StepsOffset,
    NegativePrompt,
    Unknown,
}

impl Setting {
    pub fn label(self) -> &'static str {
        match self {
            Setting::Lora => "LoRA applied",
            Setting::LoraScale => "LoRA scale",
            Setting::LoraFusion => "LoRA fused or live",
            Setting::Size => "size",
            Setting::Scheduler => "scheduler",
            Setting::Steps => "steps",
            Setting::Guidance => "guidance",
            Setting::BaseModel => "base model",
            Setting::Vae => "VAE",
            Setting::Dtype => "dtype",
            Setting::Seed => "noise (seed generator)",
            Setting::KarrasSigmas => "Karras sigmas",
            Setting::TimestepSpacing => "timestep spacing",
            Setting::StepsOffset => "steps offset",
            Setting::NegativePrompt => "negative prompt",
            Setting::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// What the local side used.
    Local,
    /// The Hub said so (response header).
    Reported,
    /// We sent it in the request.
    Sent,
    /// The Hub worker's documented default.
    Assumed,
}

/// A value and where it comes from; `value: None` means nobody knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Known<T> {
    pub value: Option<T>,
    pub source: Option<Source>,
}

impl<T> Known<T> {
    pub fn new(value: T, source: Source) -> Self {
        Known { value: Some(value), source: Some(source) }
    }
    pub fn unknown() -> Self {
        Known { value: None, source: None }
    }
}

/// One side's render settings, comparable field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideSettings {
    pub base_model: Known<String>,
    pub lora_applied: Known<bool>,
    pub lora_scale: Known<f64>,
    /// `live` or `fused` (diffusers' `fuse_lora`); the precision it was fused in is `dtype`.
    pub lora_mode: Known<String>,
    /// Diffusers scheduler class name (e.g. `EulerAncestralDiscreteScheduler`).
    pub scheduler: Known<String>,
    pub steps: Known<usize>,
    pub guidance: Known<f64>,
    pub width: Known<usize>,
    pub height: Known<usize>,
    pub dtype: Known<String>,
    /// `None` inside: the pipeline's own VAE.
    pub vae: Known<Option<String>>,
    /// Whose random numbers turn a seed into noise: `torch-cpu` (`torch.Generator("cpu")`, the
    /// Hub worker's and diffusers') or `hfsky` (hfsky's own seeded RNG).
    pub noise: Known<String>,
    /// The sampler's `use_karras_sigmas`, `timestep_spacing` and `steps_offset` in effect (the
    /// scheduler config as the sampling class reads it: DDIM and Euler ancestral have no
    /// Karras sigmas).
    pub karras_sigmas: Known<bool>,
    pub timestep_spacing: Known<String>,
    pub steps_offset: Known<usize>,
    /// `""`: none.
    pub negative_prompt: Known<String>,
}

pub const HFSKY_NOISE: &str = "hfsky";
pub const LORA_FUSED: &str = "fused";
pub const LORA_LIVE: &str = "live";

pub fn lora_mode_name(m: crate::generate::pipeline::LoraMode) -> &'static str {
    match m {
        crate::generate::pipeline::LoraMode::Live => LORA_LIVE,
        crate::generate::pipeline::LoraMode::Fused => LORA_FUSED,
    }
}
pub const TORCH_CPU_NOISE: &str = "torch-cpu";

impl SideSettings {
    /// The local side, from what the renderer actually used. `base_model` is the name the user
    /// knows the model by (the card's id when it came from there).
    pub fn local(r: &ResolvedSettings, base_model: &str, negative_prompt: &str) -> Self {
        let l = Source::Local;
        SideSettings {
            base_model: Known::new(base_model.to_string(), l),
            lora_applied: Known::new(r.lora.is_some(), l),
            lora_scale: Known::new(r.lora_scale, l),
            lora_mode: r.lora_mode.map(|m| Known::new(lora_mode_name(m).to_string(), l)).unwrap_or_else(Known::unknown),
            scheduler: Known::new(r.scheduler.clone(), l),
            steps: Known::new(r.steps, l),
            guidance: Known::new(r.guidance, l),
            width: Known::new(r.width, l),
            height: Known::new(r.height, l),
            dtype: Known::new(r.dtype.clone(), l),
            vae: Known::new(r.vae.clone(), l),
            noise: Known::new(r.noise.clone(), l),
            karras_sigmas: Known::new(r.karras_sigmas, l),
            timestep_spacing: Known::new(r.timestep_spacing.clone(), l),
            steps_offset: Known::new(r.steps_offset, l),
            negative_prompt: Known::new(negative_prompt.to_string(), l),
        }
    }

    fn all_unknown() -> Self {
        SideSettings {
            base_model: Known::unknown(),
            lora_applied: Known::unknown(),
            lora_scale: Known::unknown(),
            lora_mode: Known::unknown(),
            scheduler: Known::unknown(),
            steps: Known::unknown(),
            guidance: Known::unknown(),
            width: Known::unknown(),
            height: Known::unknown(),
            dtype: Known::unknown(),
            vae: Known::unknown(),
            noise: Known::unknown(),
            karras_sigmas: Known::unknown(),
            timestep_spacing: Known::unknown(),
            steps_offset: Known::unknown(),
            negative_prompt: Known::unknown(),
        }
    }
}

/// What the Hub's diffusers worker does when a request leaves a setting out (hub-render.md):
/// Euler Ancestral, 20 steps, the pipeline's default guidance and size, fp16, the LoRA fused at
/// 1.0, the card's base model, a CPU torch generator; the fp16-fix VAE only for the exact SDXL
/// base id.
pub fn worker_defaults(card_base_model: Option<&str>, architecture: Option<Architecture>, default_side: Option<usize>) -> SideSettings {
    let a = Source::Assumed;
    let xl = architecture == Some(Architecture::StableDiffusionXl);
    let mut s = SideSettings::all_unknown();
    if let Some(b) = card_base_model {
        s.base_model = Known::new(b.to_string(), a);
        let vae = (b == "stabilityai/stable-diffusion-xl-base-1.0").then(|| "madebyollin/sdxl-vae-fp16-fix".to_string());
        s.vae = Known::new(vae, a);
    }
    s.lora_applied = Known::new(true, a);
    s.lora_scale = Known::new(1.0, a);
    s.lora_mode = Known::new(LORA_FUSED.to_string(), a);
    s.scheduler = Known::new(SchedulerKind::EulerAncestral.class_name().to_string(), a);
    s.steps = Known::new(20, a);
    if let Some(arch) = architecture {
        s.guidance = Known::new(if arch == Architecture::StableDiffusionXl { 5.0 } else { 7.5 }, a);
    }
    if let Some(side) = default_side.or(if xl { Some(1024) } else { None }) {
        s.width = Known::new(side, a);
        s.height = Known::new(side, a);
    }
    s.dtype = Known::new("f16".to_string(), a);
    s.noise = Known::new(TORCH_CPU_NOISE.to_string(), a);
    // The widget sends the prompt alone: diffusers' default is no negative prompt.
    s.negative_prompt = Known::new(String::new(), a);
    s
}

/// The scheduler config keys a Hub side samples with when it renders from the base model's own
/// `scheduler_config.json` (`file`), swapping in its scheduler class with `from_config` as the
/// worker does; keys the Hub reported or that are already known stay. Nothing when the Hub's
/// class is unknown or one hfsky lacks.
pub fn with_scheduler_file(mut base: SideSettings, file: &crate::diffusion::schedulers::SchedulerConfig) -> SideSettings {
    let Some(kind) = base.scheduler.value.as_deref().and_then(SchedulerKind::from_class_name) else { return base };
    let source = base.scheduler.source.map(|s| if s == Source::Reported { s } else { Source::Assumed }).unwrap_or(Source::Assumed);
    let c = file.for_kind(kind);
    if base.karras_sigmas.value.is_none() {
        base.karras_sigmas = Known::new(c.use_karras_sigmas, source);
    }
    if base.timestep_spacing.value.is_none() {
        base.timestep_spacing = Known::new(c.spacing().to_string(), source);
    }
    if base.steps_offset.value.is_none() {
        base.steps_offset = Known::new(c.steps_offset, source);
    }
    base
}

/// What third-party providers (fal-ai, replicate) do is not public: only what we sent is known.
pub fn provider_unknowns(card_base_model: Option<&str>) -> SideSettings {
    let mut s = SideSettings::all_unknown();
    if let Some(b) = card_base_model {
        s.base_model = Known::new(b.to_string(), Source::Assumed);
    }
    s
}

/// Request parameters we sent (the hf-inference names), layered over `base`.
pub fn with_sent(mut base: SideSettings, sent: &serde_json::Value) -> SideSettings {
    let p = sent.get("parameters").unwrap_or(sent);
    let src = Source::Sent;
    if let Some(v) = p.get("num_inference_steps").and_then(|v| v.as_u64()) {
        base.steps = Known::new(v as usize, src);
    }
    if let Some(v) = p.get("guidance_scale").and_then(|v| v.as_f64()) {
        base.guidance = Known::new(v, src);
    }
    if let Some(v) = p.get("width").and_then(|v| v.as_u64()) {
        base.width = Known::new(v as usize, src);
    }
    if let Some(v) = p.get("height").and_then(|v| v.as_u64()) {
        base.height = Known::new(v as usize, src);
    }
    if let Some(v) = p.get("scheduler").and_then(|v| v.as_str()) {
        base.scheduler = Known::new(scheduler_class(v), src);
    }
    if let Some(v) = p.get("negative_prompt").and_then(|v| v.as_str()) {
        base.negative_prompt = Known::new(v.to_string(), src);
    }
    base
}

fn scheduler_class(name: &str) -> String {
    if SchedulerKind::from_class_name(name).is_some() {
        return name.to_string();
    }
    <SchedulerKind as clap::ValueEnum>::from_str(name, true).map(|k| k.class_name().to_string()).unwrap_or_else(|_| name.to_string())
}

/// The offline Hub's `x-hfsky-render` header: what it actually rendered. It renders with
/// hfsky's engine seeded as the worker does, from torch's CPU generator.
pub fn with_reported(mut base: SideSettings, r: &serde_json::Value) -> SideSettings {
    let src = Source::Reported;
    if let Some(v) = r.get("base_model").and_then(|v| v.as_str()) {
        base.base_model = Known::new(v.to_string(), src);
    }
    if let Some(v) = r.get("apply_lora").and_then(|v| v.as_bool()) {
        base.lora_applied = Known::new(v, src);
        // The offline Hub fuses the LoRA into the weights, as the worker does.
        base.lora_mode = if v { Known::new(LORA_FUSED.to_string(), src) } else { Known::unknown() };
    }
    if let Some(v) = r.get("lora_scale").and_then(|v| v.as_f64()) {
        base.lora_scale = Known::new(v, src);
    }
    if let Some(v) = r.get("scheduler").and_then(|v| v.as_str()) {
        base.scheduler = Known::new(scheduler_class(v), src);
    }
    if let Some(v) = r.get("steps").and_then(|v| v.as_u64()) {
        base.steps = Known::new(v as usize, src);
    }
    if let Some(v) = r.get("guidance").and_then(|v| v.as_f64()) {
        base.guidance = Known::new(v, src);
    }
    if let Some(v) = r.get("width").and_then(|v| v.as_u64()) {
        base.width = Known::new(v as usize, src);
    }
    if let Some(v) = r.get("height").and_then(|v| v.as_u64()) {
        base.height = Known::new(v as usize, src);
    }
    if let Some(v) = r.get("dtype").and_then(|v| v.as_str()) {
        base.dtype = Known::new(v.to_ascii_lowercase().replace("fp", "f").replace("float", "f"), src);
    }
    if let Some(v) = r.get("vae") {
        base.vae = Known::new(v.as_str().map(String::from), src);
    }
    base.noise = Known::new(TORCH_CPU_NOISE.to_string(), src);
    if let Some(k) = r.get("scheduler_config").filter(|k| k.is_object()) {
        if let Some(v) = k.get("use_karras_sigmas").and_then(|v| v.as_bool()) {
            base.karras_sigmas = Known::new(v, src);
        }
        if let Some(v) = k.get("timestep_spacing").and_then(|v| v.as_str()) {
            base.timestep_spacing = Known::new(v.to_string(), src);
        }
        if let Some(v) = k.get("steps_offset").and_then(|v| v.as_u64()) {
            base.steps_offset = Known::new(v as usize, src);
        }
    }
    if let Some(v) = r.get("negative_prompt").and_then(|v| v.as_str()) {
        base.negative_prompt = Known::new(v.to_string(), src);
    }
    base
}

/// A negative prompt as the settings table shows it.
pub fn show_negative(n: &str) -> String {
    if n.is_empty() {
        "none".into()
    } else {
        format!("{n:?}")
    }
}

/// How a side applies its LoRA: `live`, or `fused in <dtype>`; `None` when unknown or no LoRA.
pub fn lora_fusion(s: &SideSettings) -> Option<String> {
    s.lora_mode.value.as_ref().map(|m| match (m.as_str(), s.dtype.value.as_deref()) {
        (LORA_FUSED, Some(d)) => format!("fused in {d}"),
        (m, _) => m.to_string(),
    })
}

/// Whether the two sides apply the LoRA in ways that compute differently. Fusing in f32
/// changes the weights by f32 rounding only, which live application matches; fusing in half
/// precision rounds the merged weights (diffusers' `fuse_lora` on an fp16 pipeline, the
/// worker's way), which live application in any precision does not.
pub fn fusion_differs(local: &SideSettings, hub: &SideSettings) -> bool {
    let exact = |s: &SideSettings| lora_fusion(s).map(|f| if f == "fused in f32" { LORA_LIVE.to_string() } else { f });
    matches!((exact(local), exact(hub)), (Some(a), Some(b)) if a != b)
}

/// One row of the settings table.
#[derive(Debug, Clone, Serialize)]
pub struct SettingRow {
    pub setting: Setting,
    pub local: String,
    pub hub: String,
    pub hub_source: Option<Source>,
    pub differs: bool,
    /// Why it matters, when it does (e.g. the training resolution).
    pub note: Option<String>,
}

fn show<T: std::fmt::Display>(k: &Known<T>) -> String {
    k.value.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
}

fn differs<T: PartialEq>(a: &Known<T>, b: &Known<T>) -> bool {
    matches!((&a.value, &b.value), (Some(x), Some(y)) if x != y)
}

/// The settings table of the two sides. `training_resolution` comes from the card.
pub fn diff(local: &SideSettings, hub: &SideSettings, training_resolution: Option<usize>) -> Vec<SettingRow> {
    let size = |s: &SideSettings| match (s.width.value, s.height.value) {
        (Some(w), Some(h)) => format!("{w}×{h}"),
        _ => "unknown".into(),
    };
    let size_source = hub.width.source.or(hub.height.source);
    let size_differs = differs(&local.width, &hub.width) || differs(&local.height, &hub.height);
    let size_note = training_resolution.and_then(|r| {
        let off = |s: &SideSettings| s.width.value.is_some_and(|w| w != r) || s.height.value.is_some_and(|h| h != r);
        match (off(local), off(hub)) {
            (false, false) => None,
            (l, h) => Some(format!(
                "trained at {r}×{r}; {} renders outside it",
                match (l, h) {
                    (true, true) => "each side",
                    (true, false) => "the local side",
                    _ => "the Hub",
                }
            )),
        }
    });
    let vae = |k: &Known<Option<String>>| match &k.value {
        Some(Some(v)) => v.clone(),
        Some(None) => "the pipeline's".into(),
        None => "unknown".into(),
    };
    let negative = |k: &Known<String>| k.value.as_deref().map(show_negative).unwrap_or_else(|| "unknown".into());
    let row = |setting, local: String, hub: String, source, differs| SettingRow { setting, local, hub, hub_source: source, differs, note: None };
    let (lf, hf) = (lora_fusion(local), lora_fusion(hub));
    vec![
        compared(Setting::BaseModel, &local.base_model, &hub.base_model, show),
        compared(Setting::Lora, &local.lora_applied, &hub.lora_applied, show),
        compared(Setting::LoraScale, &local.lora_scale, &hub.lora_scale, show),
        row(
            Setting::LoraFusion,
            lf.unwrap_or_else(|| "unknown".into()),
            hf.unwrap_or_else(|| "unknown".into()),
            hub.lora_mode.source,
            fusion_differs(local, hub),
        ),
        SettingRow { note: size_note, ..row(Setting::Size, size(local), size(hub), size_source, size_differs) },
        compared(Setting::Scheduler, &local.scheduler, &hub.scheduler, show),
        compared(Setting::Steps, &local.steps, &hub.steps, show),
        compared(Setting::Guidance, &local.guidance, &hub.guidance, show),
        compared(Setting::Dtype, &local.dtype, &hub.dtype, show),
        compared(Setting::Vae, &local.vae, &hub.vae, vae),
        compared(Setting::Seed, &local.noise, &hub.noise, show),
        compared(Setting::KarrasSigmas, &local.karras_sigmas, &hub.karras_sigmas, show),
        compared(Setting::TimestepSpacing, &local.timestep_spacing, &hub.timestep_spacing, show),
        compared(Setting::StepsOffset, &local.steps_offset, &hub.steps_offset, show),
        compared(Setting::NegativePrompt, &local.negative_prompt, &hub.negative_prompt, negative),
    ]
}

/// The row of a setting both sides know the same way: each side shown by `fmt`, the Hub side's
/// source, and whether the two known values differ.
fn compared<T: PartialEq>(setting: Setting, local: &Known<T>, hub: &Known<T>, fmt: impl Fn(&Known<T>) -> String) -> SettingRow {
    SettingRow { setting, local: fmt(local), hub: fmt(hub), hub_source: hub.source, differs: differs(local, hub), note: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SideSettings {
        let l = Source::Local;
        SideSettings {
            base_model: Known::new("stabilityai/stable-diffusion-xl-base-1.0".into(), l),
            lora_applied: Known::new(true, l),
            lora_scale: Known::new(1.0, l),
            lora_mode: Known::new(LORA_LIVE.into(), l),
            scheduler: Known::new("EulerDiscreteScheduler".into(), l),
            steps: Known::new(30, l),
            guidance: Known::new(5.0, l),
            width: Known::new(512, l),
            height: Known::new(512, l),
            dtype: Known::new("f32".into(), l),
            vae: Known::new(None, l),
            noise: Known::new(TORCH_CPU_NOISE.into(), l),
            karras_sigmas: Known::new(false, l),
            timestep_spacing: Known::new("leading".into(), l),
            steps_offset: Known::new(1, l),
            negative_prompt: Known::new(String::new(), l),
        }
    }

    #[test]
    fn the_worker_renders_sdxl_at_1024_with_euler_ancestral_and_sent_values_win() {
        let hub = worker_defaults(Some("stabilityai/stable-diffusion-xl-base-1.0"), Some(Architecture::StableDiffusionXl), None);
        let hfsky_noise = SideSettings { noise: Known::new(HFSKY_NOISE.into(), Source::Local), ..local() };
        let rows = diff(&hfsky_noise, &hub, Some(512));
        let get = |s| rows.iter().find(|r| r.setting == s).unwrap();
        assert!(get(Setting::Size).differs && get(Setting::Size).hub == "1024×1024");
        assert!(get(Setting::Size).note.as_deref().unwrap().contains("trained at 512×512; the Hub renders outside it"));
        assert_eq!(get(Setting::Scheduler).hub, "EulerAncestralDiscreteScheduler");
        assert!(get(Setting::Steps).differs && get(Setting::Seed).differs && get(Setting::Vae).differs);
        assert!(!get(Setting::Guidance).differs && !get(Setting::BaseModel).differs);
        let sent = with_sent(
            hub,
            &serde_json::json!({"inputs": "x", "parameters": {"width": 512, "height": 512, "num_inference_steps": 30, "scheduler": "euler"}}),
        );
        let rows = diff(&local(), &sent, Some(512));
        let get = |s| rows.iter().find(|r| r.setting == s).unwrap();
        assert!(!get(Setting::Size).differs && get(Setting::Size).hub_source == Some(Source::Sent));
        assert!(!get(Setting::Steps).differs && !get(Setting::Scheduler).differs);
        assert!(get(Setting::Size).note.is_none());
    }

    #[test]
    fn reported_values_override_and_unknowns_never_differ() {
        let hub = with_reported(
            provider_unknowns(None),
            &serde_json::json!({"scheduler": "ddim", "steps": 30, "apply_lora": false, "dtype": "F16", "width": 512, "height": 512}),
        );
        let rows = diff(&local(), &hub, None);
        let differing: Vec<Setting> = rows.iter().filter(|r| r.differs).map(|r| r.setting).collect();
        assert_eq!(differing, vec![Setting::Lora, Setting::Scheduler, Setting::Dtype]);
        assert_eq!(rows.iter().find(|r| r.setting == Setting::Guidance).unwrap().hub, "unknown");
        assert_eq!(hub.scheduler.source, Some(Source::Reported));
    }

    #[test]
    fn scheduler_keys_come_from_the_base_file_as_the_hub_class_reads_it_and_reports_win() {
        // SD 1.5 ships a PNDMScheduler config without timestep_spacing; Karras on as some fine-tunes ship it.
        let file: crate::diffusion::schedulers::SchedulerConfig =
            serde_json::from_value(serde_json::json!({"_class_name": "PNDMScheduler", "steps_offset": 1, "use_karras_sigmas": true})).unwrap();
        let worker = || worker_defaults(Some("x/base"), Some(Architecture::StableDiffusion), None);
        // Euler ancestral: linspace (its default, as from_config fills it in), no Karras sigmas.
        let hub = with_scheduler_file(worker(), &file);
        assert_eq!(
            (hub.karras_sigmas.value, hub.timestep_spacing.value.as_deref(), hub.steps_offset.value),
            (Some(false), Some("linspace"), Some(1))
        );
        assert_eq!((hub.timestep_spacing.source, hub.negative_prompt.value.as_deref()), (Some(Source::Assumed), Some("")));
        let sent = with_sent(worker(), &serde_json::json!({"parameters": {"scheduler": "euler", "negative_prompt": "blurry"}}));
        let hub = with_scheduler_file(sent, &file);
        assert_eq!(hub.karras_sigmas.value, Some(true), "Euler reads use_karras_sigmas");
        let rows = diff(&local(), &hub, None);
        let get = |s| rows.iter().find(|r| r.setting == s).unwrap();
        assert!(get(Setting::KarrasSigmas).differs && get(Setting::TimestepSpacing).differs && !get(Setting::StepsOffset).differs);
        let neg = get(Setting::NegativePrompt);
        assert_eq!((neg.local.as_str(), neg.hub.as_str(), neg.hub_source, neg.differs), ("none", "\"blurry\"", Some(Source::Sent), true));
        // What the offline Hub reports wins over what the file implies.
        let reported = with_reported(
            hub,
            &serde_json::json!({"scheduler": "euler", "scheduler_config": {"use_karras_sigmas": false, "timestep_spacing": "trailing", "steps_offset": 0}, "negative_prompt": ""}),
        );
        let reported = with_scheduler_file(reported, &file);
        assert_eq!(
            (
                reported.karras_sigmas.value,
                reported.timestep_spacing.value.as_deref(),
                reported.steps_offset.value,
                reported.negative_prompt.value.as_deref()
            ),
            (Some(false), Some("trailing"), Some(0), Some(""))
        );
        assert_eq!(reported.steps_offset.source, Some(Source::Reported));
    }
}
