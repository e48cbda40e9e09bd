//! Which setting explains the gap between the local and the Hub renders: re-render locally with
//! the Hub's value of each differing setting, one at a time and all together, and rank each by
//! the share of the statistics distance it closes.

use super::settings::{Known, Setting, SideSettings, Source};
use crate::diffusion::noise::NoiseKind;
use crate::diffusion::schedulers::{SchedulerKind, TimestepSpacing};
use crate::generate::pipeline::LoraMode;
use crate::generate::render::{parse_dtype, RenderSpec};
use crate::model_ref::ModelRef;
use serde::Serialize;

/// One local re-render: the local spec with one (or every) Hub value adopted.
#[derive(Debug, Clone, Serialize)]
pub struct Ablation {
    /// `None` for the "all Hub settings together" renders.
    pub setting: Option<Setting>,
    /// For "all Hub settings but one" renders: the one left out.
    pub without: Option<Setting>,
    /// For the renders with two Hub settings adopted together (tried before answering
    /// "unknown"): the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<[Setting; 2]>,
    /// What changed, e.g. `size 64×64 → 128×128`.
    pub change: String,
    #[serde(skip)]
    pub spec: RenderSpec,
}

/// A setting that differs but cannot be re-rendered here, with why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub setting: Setting,
    pub why: String,
}

fn hub_value<T: Clone + PartialEq>(local: &Known<T>, hub: &Known<T>) -> Option<T> {
    match (&local.value, &hub.value) {
        (Some(l), Some(h)) if l != h => Some(h.clone()),
        _ => None,
    }
}

type Edit = Box<dyn Fn(&mut RenderSpec)>;

/// The ablations for every setting whose Hub value is known and differs: one per setting, all
/// together, and (with three or more) all but one per setting — settings interact (a scheduler
/// change may only show at the Hub's step count), so a cause is also measured by how much of
/// the gap re-opens when it alone is left out. `bf16_possible`: the local device computes bf16.
pub fn plan(spec: &RenderSpec, local: &SideSettings, hub: &SideSettings, bf16_possible: bool) -> (Vec<Ablation>, Vec<Skipped>, Vec<Ablation>) {
    let (edits, skipped) = edits(spec, local, hub, bf16_possible);
    let combined = |skip: Option<Setting>| {
        let mut s = spec.clone();
        for (setting, _, edit) in &edits {
            if Some(*setting) != skip {
                edit(&mut s);
            }
        }
        s
    };
    let singles: Vec<Ablation> = edits
        .iter()
        .map(|(setting, change, edit)| {
            let mut s = spec.clone();
            edit(&mut s);
            Ablation { setting: Some(*setting), without: None, pair: None, change: change.clone(), spec: s }
        })
        .collect();
    let mut combos = Vec::new();
    if edits.len() > 1 {
        let all: Vec<&str> = edits.iter().map(|(_, c, _)| c.as_str()).collect();
        // With two settings "all together" is their pair, named as [`pairs`] names one.
        let (pair, change) = match &edits[..] {
            [(a, ca, _), (b, cb, _)] => (Some([*a, *b]), format!("{ca} and {cb}")),
            _ => (None, all.join(", ")),
        };
        combos.push(Ablation { setting: None, without: None, pair, change, spec: combined(None) });
    }
    // With two settings, "all but one" is the other one alone: already rendered.
    if edits.len() > 2 {
        for (setting, change, _) in &edits {
            combos.push(Ablation {
                setting: None,
                without: Some(*setting),
                pair: None,
                change: format!("every Hub setting but {change}"),
                spec: combined(Some(*setting)),
            });
        }
    }
    (singles, skipped, combos)
}

/// Settings known to act together: the precision the LoRA is fused in, the VAE that survives
/// half precision, a sampler tuned to its step count, the size a guidance suits, the
/// generator a sampler draws from, the scheduler config keys only some samplers read (DDIM
/// and Euler ancestral ignore Karras sigmas), the negative prompt guidance pushes away from.
const INTERACTING: [[Setting; 2]; 9] = [
    [Setting::Dtype, Setting::LoraFusion],
    [Setting::Dtype, Setting::Vae],
    [Setting::Scheduler, Setting::Steps],
    [Setting::Size, Setting::Guidance],
    [Setting::Scheduler, Setting::Seed],
    [Setting::Scheduler, Setting::KarrasSigmas],
    [Setting::Scheduler, Setting::TimestepSpacing],
    [Setting::TimestepSpacing, Setting::StepsOffset],
    [Setting::Guidance, Setting::NegativePrompt],
];

/// At most this many pairs are rendered before answering "unknown".
pub const MAX_PAIRS: usize = 6;

/// Pairs of differing settings adopted together, for when no single setting, and not all of
/// them at once, explains the gap (with three or more settings; with two, "all" is the pair):
/// the known interacting pairs first, then the rest in table order, at most [`MAX_PAIRS`].
pub fn pairs(spec: &RenderSpec, local: &SideSettings, hub: &SideSettings, bf16_possible: bool) -> Vec<Ablation> {
    let (edits, _) = edits(spec, local, hub, bf16_possible);
    if edits.len() < 3 {
        return Vec::new();
    }
    let mut order: Vec<(usize, usize)> = Vec::new();
    for (i, j) in (0..edits.len()).flat_map(|i| (i + 1..edits.len()).map(move |j| (i, j))) {
        order.push((i, j));
    }
    let known = |&(i, j): &(usize, usize)| INTERACTING.iter().any(|p| p.contains(&edits[i].0) && p.contains(&edits[j].0));
    order.sort_by_key(|p| !known(p));
    order
        .into_iter()
        .take(MAX_PAIRS)
        .map(|(i, j)| {
            let mut s = spec.clone();
            (edits[i].2)(&mut s);
            (edits[j].2)(&mut s);
            Ablation {
                setting: None,
                without: None,
                pair: Some([edits[i].0, edits[j].0]),
                change: format!("{} and {}", edits[i].1, edits[j].1),
                spec: s,
            }
        })
        .collect()
}

/// Each differing setting whose Hub value is known, with its edit to the local spec, and those
/// that cannot be re-rendered here.
fn edits(spec: &RenderSpec, local: &SideSettings, hub: &SideSettings, bf16_possible: bool) -> (Vec<(Setting, String, Edit)>, Vec<Skipped>) {
    let mut edits: Vec<(Setting, String, Edit)> = Vec::new();
    let mut skipped = Vec::new();

    if let Some(b) = hub_value(&local.base_model, &hub.base_model) {
        let from = local.base_model.value.clone().unwrap_or_default();
        match ModelRef::parse(&b) {
            Ok(m) => edits.push((Setting::BaseModel, format!("base model {from} → {b}"), Box::new(move |s| s.model = m.clone()))),
            Err(e) => skipped.push(Skipped { setting: Setting::BaseModel, why: e.to_string() }),
        }
    }
    if let Some(applied) = hub_value(&local.lora_applied, &hub.lora_applied) {
        if applied {
            skipped.push(Skipped { setting: Setting::Lora, why: "the Hub applied a LoRA but the local side has none to apply".into() });
        } else {
            edits.push((Setting::Lora, "LoRA off".into(), Box::new(|s| s.lora = None)));
        }
    }
    if spec.lora.is_some() && hub.lora_applied.value != Some(false) {
        if let Some(scale) = hub_value(&local.lora_scale, &hub.lora_scale) {
            edits.push((Setting::LoraScale, format!("LoRA scale {} → {scale}", spec.lora_scale), Box::new(move |s| s.lora_scale = scale)));
        }
    }
    if spec.lora.is_some() && super::settings::fusion_differs(local, hub) {
        let mode = if hub.lora_mode.value.as_deref() == Some(super::settings::LORA_FUSED) { LoraMode::Fused } else { LoraMode::Live };
        let (from, to) = (super::settings::lora_fusion(local).unwrap_or_default(), super::settings::lora_fusion(hub).unwrap_or_default());
        edits.push((Setting::LoraFusion, format!("LoRA {from} → {to}"), Box::new(move |s| s.lora_mode = mode)));
    }
    let w = hub_value(&local.width, &hub.width);
    let h = hub_value(&local.height, &hub.height);
    if w.is_some() || h.is_some() {
        let (lw, lh) = (local.width.value.unwrap_or(0), local.height.value.unwrap_or(0));
        let (hw, hh) = (w.unwrap_or(lw), h.unwrap_or(lh));
        edits.push((
            Setting::Size,
            format!("size {lw}×{lh} → {hw}×{hh}"),
            Box::new(move |s| {
                s.width = Some(hw);
                s.height = Some(hh);
            }),
        ));
    }
    if let Some(name) = hub_value(&local.scheduler, &hub.scheduler) {
        match SchedulerKind::from_class_name(&name) {
            Some(kind) => edits.push((
                Setting::Scheduler,
                format!("scheduler {} → {name}", local.scheduler.value.clone().unwrap_or_default()),
                Box::new(move |s| s.scheduler = Some(kind)),
            )),
            None => skipped.push(Skipped { setting: Setting::Scheduler, why: format!("hfsky has no {name}") }),
        }
    }
    if let Some(steps) = hub_value(&local.steps, &hub.steps) {
        edits.push((Setting::Steps, format!("steps {} → {steps}", spec.steps), Box::new(move |s| s.steps = steps)));
    }
    if let Some(g) = hub_value(&local.guidance, &hub.guidance) {
        edits.push((
            Setting::Guidance,
            format!("guidance {} → {g}", local.guidance.value.unwrap_or_default()),
            Box::new(move |s| s.guidance = Some(g)),
        ));
    }
    if let Some(d) = hub_value(&local.dtype, &hub.dtype) {
        match parse_dtype(&d) {
            Some(dt) if dt != candle_core::DType::BF16 || bf16_possible => edits.push((
                Setting::Dtype,
                format!("dtype {} → {d}", local.dtype.value.clone().unwrap_or_default()),
                Box::new(move |s| s.dtype = dt),
            )),
            Some(_) => skipped.push(Skipped { setting: Setting::Dtype, why: "bf16 needs a CUDA GPU".into() }),
            None => skipped.push(Skipped { setting: Setting::Dtype, why: format!("unknown dtype {d}") }),
        }
    }
    if let Some(v) = hub_value(&local.vae, &hub.vae) {
        let label = v.clone().unwrap_or_else(|| "the pipeline's".into());
        match v.as_deref().map(ModelRef::parse).transpose() {
            Ok(v) => edits.push((Setting::Vae, format!("VAE → {label}"), Box::new(move |s| s.vae = v.clone()))),
            Err(e) => skipped.push(Skipped { setting: Setting::Vae, why: e.to_string() }),
        }
    }
    if let Some(k) = hub_value(&local.karras_sigmas, &hub.karras_sigmas) {
        edits.push((
            Setting::KarrasSigmas,
            format!("Karras sigmas {}", if k { "on" } else { "off" }),
            Box::new(move |s| s.scheduler_config.use_karras_sigmas = Some(k)),
        ));
    }
    if let Some(v) = hub_value(&local.timestep_spacing, &hub.timestep_spacing) {
        match <TimestepSpacing as clap::ValueEnum>::from_str(&v, false) {
            Ok(spacing) => edits.push((
                Setting::TimestepSpacing,
                format!("timestep spacing {} → {v}", local.timestep_spacing.value.clone().unwrap_or_default()),
                Box::new(move |s| s.scheduler_config.timestep_spacing = Some(spacing)),
            )),
            Err(_) => skipped.push(Skipped { setting: Setting::TimestepSpacing, why: format!("hfsky has no timestep spacing {v:?}") }),
        }
    }
    if let Some(o) = hub_value(&local.steps_offset, &hub.steps_offset) {
        edits.push((
            Setting::StepsOffset,
            format!("steps offset {} → {o}", local.steps_offset.value.unwrap_or_default()),
            Box::new(move |s| s.scheduler_config.steps_offset = Some(o)),
        ));
    }
    if let Some(n) = hub_value(&local.negative_prompt, &hub.negative_prompt) {
        let change = format!(
            "negative prompt {} → {}",
            super::settings::show_negative(local.negative_prompt.value.as_deref().unwrap_or_default()),
            super::settings::show_negative(&n)
        );
        edits.push((Setting::NegativePrompt, change, Box::new(move |s| s.negative = n.clone())));
    }
    if let Some(n) = hub_value(&local.noise, &hub.noise) {
        match <NoiseKind as clap::ValueEnum>::from_str(&n, false) {
            Ok(kind) => edits.push((
                Setting::Seed,
                format!("noise {} → {n}", local.noise.value.clone().unwrap_or_default()),
                Box::new(move |s| s.noise = kind),
            )),
            Err(_) => skipped.push(Skipped { setting: Setting::Seed, why: format!("hfsky cannot draw {n} noise") }),
        }
    }
    (edits, skipped)
}

/// One cause, ranked by `effect`: the share of the local→Hub distance that adopting the Hub's
/// value closes (1: reproduces the Hub; 0: no help; negative: moves away).
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub setting: Setting,
    /// The larger of `alone` and `with_others`.
    pub effect: f64,
    /// Share of the gap closed by this setting alone.
    pub alone: Option<f64>,
    /// Share of the gap that re-opens when every other Hub setting is applied but this one.
    pub with_others: Option<f64>,
    pub message: String,
    /// The statistic that moved most towards the Hub under this ablation.
    pub evidence: Option<String>,
}

/// A measured ablation: its distance to the Hub side and the biggest statistic change it made.
pub struct Measured<'a> {
    pub ablation: &'a Ablation,
    pub distance: f64,
    /// Distance of the render with every Hub setting but this one.
    pub without_distance: Option<f64>,
    pub top_change: Option<String>,
}

pub fn effect(gap: f64, distance: f64) -> f64 {
    if gap <= f64::EPSILON {
        return 0.0;
    }
    ((gap - distance) / gap * 1000.0).round() / 1000.0
}

fn source_word(s: Option<Source>) -> &'static str {
    match s {
        Some(Source::Reported) => "reported by the Hub",
        Some(Source::Sent) => "as requested",
        Some(Source::Assumed) => "the Hub worker's default",
        _ => "",
    }
}

fn what_the_hub_does(setting: Setting, hub: &SideSettings, training_resolution: Option<usize>) -> String {
    let src = |s: Option<Source>| {
        let w = source_word(s);
        if w.is_empty() {
            String::new()
        } else {
            format!(" ({w})")
        }
    };
    let v = |k: Option<String>| k.unwrap_or_else(|| "?".into());
    match setting {
        Setting::Size => {
            let mut m = format!(
                "the Hub renders at {}×{}{}",
                v(hub.width.value.map(|x| x.to_string())),
                v(hub.height.value.map(|x| x.to_string())),
                src(hub.width.source)
            );
            if let Some(r) = training_resolution {
                m.push_str(&format!("; this LoRA was trained at {r} px"));
            }
            m
        }
        Setting::Lora => format!("the Hub rendered without the LoRA{}", src(hub.lora_applied.source)),
        Setting::LoraFusion => format!(
            "the Hub {}{}",
            match super::settings::lora_fusion(hub) {
                Some(f) if f.starts_with("fused") => format!("fuses the LoRA into the weights ({f}, diffusers' fuse_lora)"),
                Some(f) => format!("applies the LoRA {f}"),
                None => "applies the LoRA in an unknown way".into(),
            },
            src(hub.lora_mode.source)
        ),
        Setting::LoraScale => {
            format!("the Hub applies the LoRA at scale {}{}", v(hub.lora_scale.value.map(|x| x.to_string())), src(hub.lora_scale.source))
        }
        Setting::Scheduler => format!("the Hub samples with {}{}", v(hub.scheduler.value.clone()), src(hub.scheduler.source)),
        Setting::Steps => format!("the Hub runs {} steps{}", v(hub.steps.value.map(|x| x.to_string())), src(hub.steps.source)),
        Setting::Guidance => format!("the Hub uses guidance {}{}", v(hub.guidance.value.map(|x| x.to_string())), src(hub.guidance.source)),
        Setting::BaseModel => format!("the Hub renders on {}{}", v(hub.base_model.value.clone()), src(hub.base_model.source)),
        Setting::Dtype => format!("the Hub computes in {}{}", v(hub.dtype.value.clone()), src(hub.dtype.source)),
        Setting::Vae => {
            format!("the Hub decodes with {}{}", hub.vae.value.clone().flatten().unwrap_or_else(|| "the pipeline's VAE".into()), src(hub.vae.source))
        }
        Setting::Seed => match hub.noise.value.as_deref() {
            Some(n) => format!("the Hub turns seeds into noise with the {n} generator{}", src(hub.noise.source)),
            None => "the Hub draws different noise for the same seed".into(),
        },
        Setting::KarrasSigmas => format!(
            "the Hub samples {} Karras sigmas{}",
            match hub.karras_sigmas.value {
                Some(true) => "with",
                Some(false) => "without",
                None => "with or without",
            },
            src(hub.karras_sigmas.source)
        ),
        Setting::TimestepSpacing => {
            format!("the Hub spaces its timesteps {}{}", v(hub.timestep_spacing.value.clone()), src(hub.timestep_spacing.source))
        }
        Setting::StepsOffset => {
            format!("the Hub offsets its timesteps by {}{}", v(hub.steps_offset.value.map(|x| x.to_string())), src(hub.steps_offset.source))
        }
        Setting::NegativePrompt => match hub.negative_prompt.value.as_deref() {
            Some("") => format!("the Hub renders without a negative prompt{}", src(hub.negative_prompt.source)),
            Some(n) => format!("the Hub renders with the negative prompt {n:?}{}", src(hub.negative_prompt.source)),
            None => "the Hub's negative prompt is unknown".into(),
        },
        Setting::Unknown => "something outside the known settings".into(),
    }
}

/// Causes ranked most likely first. `seed_share`: how much of the gap seed variation alone
/// explains, when the two sides' noise differs; `together`: the all-at-once render's distance.
pub fn rank(
    gap: f64,
    measured: &[Measured],
    together: Option<f64>,
    seed_share: Option<f64>,
    hub: &SideSettings,
    training_resolution: Option<usize>,
) -> Vec<Cause> {
    let mut causes: Vec<Cause> = measured
        .iter()
        .filter_map(|m| {
            let setting = m.ablation.setting?;
            let alone = effect(gap, m.distance);
            // What re-opens when this setting alone keeps the local value.
            let with_others = together.zip(m.without_distance).map(|(t, w)| effect(gap, t) - effect(gap, w));
            let e = with_others.map_or(alone, |w| alone.max(w)).min(1.0);
            let how = if with_others.is_some_and(|w| w > alone + 0.2 && w >= 0.3) {
                "closes little alone but most of the gap together with the other Hub settings"
            } else if e >= 0.8 {
                "reproduces the Hub's look"
            } else if e >= 0.3 {
                "moves the local renders part of the way to the Hub's"
            } else if e > 0.05 {
                "barely moves the local renders"
            } else {
                "does not move the local renders towards the Hub's"
            };
            let evidence = m.top_change.clone();
            let mut message = format!(
                "{}; rendering locally with {} {how} ({:.0}% of the gap)",
                what_the_hub_does(setting, hub, training_resolution),
                m.ablation.change,
                e.max(0.0) * 100.0
            );
            if let (Some(ev), true) = (&evidence, e > 0.05) {
                message.push_str(&format!(": {ev}"));
            }
            Some(Cause { setting, effect: e, alone: Some(alone), with_others, message, evidence })
        })
        .collect();
    if let Some(share) = seed_share {
        causes.push(Cause {
            setting: Setting::Seed,
            effect: (share * 1000.0).round() / 1000.0,
            message: format!(
                "the Hub draws different noise for the same seed; seed-to-seed variation alone is about {:.0}% of the gap",
                share * 100.0
            ),
            evidence: None,
            alone: None,
            with_others: None,
        });
    }
    let explained = together.map(|d| effect(gap, d)).into_iter().chain(causes.iter().map(|c| c.effect)).fold(0.0f64, f64::max);
    if explained < 0.5 {
        causes.push(Cause {
            setting: Setting::Unknown,
            effect: ((1.0 - explained.max(0.0)) * 1000.0).round() / 1000.0,
            message: format!(
                "none of the known settings explains the gap (the best closes {:.0}%): the provider may render with another pipeline, another LoRA loader, or weights other than this repo's",
                explained.max(0.0) * 100.0
            ),
            evidence: None,
            alone: None,
            with_others: None,
        });
    }
    causes.sort_by(|a, b| b.effect.total_cmp(&a.effect));
    causes
}

/// The two-setting case of [`with_pairs`]: with exactly two differing settings the "all
/// together" render (`together`, with its distance to the Hub) is their pair, so no pair search
/// runs; when neither setting closes half the gap alone but the two together do, both are named
/// as a pair, as a pair found among more settings is. Otherwise `causes` is returned unchanged.
pub fn with_together_pair(
    gap: f64,
    causes: Vec<Cause>,
    together: Option<(&Ablation, f64)>,
    hub: &SideSettings,
    training_resolution: Option<usize>,
) -> Vec<Cause> {
    let Some((ablation, distance)) = together.filter(|(a, _)| a.pair.is_some()) else { return causes };
    if causes.iter().any(|c| c.alone.is_some_and(|a| a >= 0.5)) {
        return causes;
    }
    with_pairs(gap, causes, &[(ablation, distance)], hub, training_resolution)
}

/// Folds the pair renders into `causes`: when the best pair closes at least half the gap, both
/// of its settings become causes with the pair's effect (each message naming the other) and the
/// "unknown" cause goes. `pairs`: each pair ablation with its distance to the Hub.
pub fn with_pairs(
    gap: f64,
    mut causes: Vec<Cause>,
    pairs: &[(&Ablation, f64)],
    hub: &SideSettings,
    training_resolution: Option<usize>,
) -> Vec<Cause> {
    let best = pairs.iter().filter_map(|(a, d)| a.pair.map(|p| (p, *a, effect(gap, *d)))).max_by(|x, y| x.2.total_cmp(&y.2));
    let Some((pair, ablation, e)) = best else { return causes };
    if e < 0.5 {
        return causes;
    }
    causes.retain(|c| c.setting != Setting::Unknown);
    for (k, setting) in pair.iter().enumerate() {
        let other = pair[1 - k];
        let message = format!(
            "{}; together with the {} ({}), rendering locally with {} reproduces the Hub's look ({:.0}% of the gap), though neither does alone",
            what_the_hub_does(*setting, hub, training_resolution),
            other.label(),
            what_the_hub_does(other, hub, training_resolution),
            ablation.change,
            e.min(1.0) * 100.0
        );
        match causes.iter_mut().find(|c| c.setting == *setting) {
            Some(c) => {
                // The pair's measured effect, which the message states: "with the others" of a
                // two-setting ranking can overstate it (the other setting alone may move away).
                c.effect = e.min(1.0);
                c.with_others = Some(e);
                c.message = message;
            }
            None => causes.push(Cause { setting: *setting, effect: e.min(1.0), alone: None, with_others: Some(e), message, evidence: None }),
        }
    }
    causes.sort_by(|a, b| b.effect.total_cmp(&a.effect));
    causes
}

/// With the same initial noise on both sides (paired seeds), a gap under this share of the
/// seed-to-seed distance is numerical noise (fused vs live LoRA, f16 rounding), not a setting.
pub const PAIRED_SHARE: f64 = 0.05;

/// The gap below which there is nothing to explain: seed-to-seed variation, or with paired
/// seeds a small share of it.
pub fn threshold(noise_floor: f64, paired: bool) -> f64 {
    if paired {
        noise_floor * PAIRED_SHARE
    } else {
        noise_floor
    }
}

/// One plain sentence for the terminal and the top of the report.
pub fn verdict(gap: f64, noise_floor: f64, paired: bool, causes: &[Cause], together_effect: Option<f64>) -> String {
    if gap <= threshold(noise_floor, paired) {
        return nothing_to_explain(gap, noise_floor, paired);
    }
    match causes.first() {
        Some(c) if c.setting != Setting::Unknown && c.effect >= 0.5 => {
            let mut v = c.message.clone();
            if let Some(t) = together_effect {
                v.push_str(&format!(". All Hub settings together close {:.0}% of the gap", t.max(0.0) * 100.0));
            }
            v
        }
        Some(c) => c.message.clone(),
        None => "the two sides differ, and no setting that differs could be re-rendered here".into(),
    }
}

pub fn nothing_to_explain(gap: f64, noise_floor: f64, paired: bool) -> String {
    if paired {
        format!("the two sides render the same noise into nearly the same images (distance {gap:.4}, under {:.0}% of the seed-to-seed {noise_floor:.3}): nothing to explain", PAIRED_SHARE * 100.0)
    } else {
        format!(
            "the two sides differ no more than two seeds of the same side do (distance {gap:.3}, seed-to-seed {noise_floor:.3}): nothing to explain"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::settings::{with_reported, SideSettings, TORCH_CPU_NOISE};

    fn local() -> SideSettings {
        let l = Source::Local;
        SideSettings {
            base_model: Known::new("tiny/base".into(), l),
            lora_applied: Known::new(true, l),
            lora_scale: Known::new(1.0, l),
            lora_mode: Known::new("live".into(), l),
            scheduler: Known::new("DDIMScheduler".into(), l),
            steps: Known::new(8, l),
            guidance: Known::new(7.5, l),
            width: Known::new(64, l),
            height: Known::new(64, l),
            dtype: Known::new("f32".into(), l),
            vae: Known::new(None, l),
            noise: Known::new(TORCH_CPU_NOISE.into(), l),
            karras_sigmas: Known::new(false, l),
            timestep_spacing: Known::new("leading".into(), l),
            steps_offset: Known::new(1, l),
            negative_prompt: Known::new("blurry".into(), l),
        }
    }

    fn spec() -> RenderSpec {
        let mut s = RenderSpec::new(ModelRef::parse("tiny/base").unwrap(), "a photo of SKY");
        s.negative = "blurry".into();
        s.lora = Some(ModelRef::parse("me/sky-lora").unwrap());
        s.steps = 8;
        s
    }

    #[test]
    fn one_ablation_per_differing_setting_and_one_together() {
        let hub = with_reported(
            local(),
            &serde_json::json!({"width": 128, "height": 128, "apply_lora": false, "scheduler": "euler-ancestral", "steps": 8}),
        );
        let (abl, skipped, combos) = plan(&spec(), &local(), &hub, false);
        let settings: Vec<_> = abl.iter().map(|a| a.setting.unwrap()).collect();
        assert_eq!(settings, vec![Setting::Lora, Setting::Size, Setting::Scheduler]);
        assert!(skipped.is_empty());
        let size = &abl[1].spec;
        assert_eq!((size.width, size.height, size.lora.is_some()), (Some(128), Some(128), true));
        assert_eq!(combos.len(), 4, "all together, and all but each of three");
        let but_size = combos.iter().find(|a| a.without == Some(Setting::Size)).unwrap();
        assert_eq!((but_size.spec.width, but_size.spec.lora.is_none()), (None, true));
        let t = &combos[0];
        assert_eq!((t.spec.width, t.spec.lora.is_none(), t.spec.scheduler), (Some(128), true, Some(SchedulerKind::EulerAncestral)));
    }

    #[test]
    fn pairs_are_tried_known_interactions_first_and_replace_unknown() {
        let hub = with_reported(local(), &serde_json::json!({"width": 128, "height": 128, "scheduler": "euler-ancestral", "steps": 20}));
        let pairs = pairs(&spec(), &local(), &hub, false);
        let order: Vec<[Setting; 2]> = pairs.iter().map(|a| a.pair.unwrap()).collect();
        assert_eq!(order, vec![[Setting::Scheduler, Setting::Steps], [Setting::Size, Setting::Scheduler], [Setting::Size, Setting::Steps]]);
        let both = &pairs[0].spec;
        assert_eq!((both.scheduler, both.steps, both.width), (Some(SchedulerKind::EulerAncestral), 20, None));
        // Two settings only: the "all together" render is the pair, so none are planned.
        let two = with_reported(local(), &serde_json::json!({"steps": 20, "scheduler": "euler-ancestral"}));
        assert!(super::pairs(&spec(), &local(), &two, false).is_empty());

        let unknown = vec![Cause {
            setting: Setting::Unknown,
            effect: 0.9,
            alone: None,
            with_others: None,
            message: "none of the known settings".into(),
            evidence: None,
        }];
        let measured: Vec<(&Ablation, f64)> = pairs.iter().zip([0.1, 0.95, 0.9]).collect();
        let causes = with_pairs(1.0, unknown.clone(), &measured, &hub, None);
        let settings: Vec<Setting> = causes.iter().map(|c| c.setting).collect();
        assert_eq!(settings, vec![Setting::Scheduler, Setting::Steps]);
        assert!((causes[0].effect - 0.9).abs() < 1e-9);
        assert!(causes[0].message.contains("together with the steps"), "{}", causes[0].message);
        // No pair closes half the gap: "unknown" stays.
        let weak: Vec<(&Ablation, f64)> = pairs.iter().map(|a| (a, 0.8)).collect();
        assert_eq!(with_pairs(1.0, unknown, &weak, &hub, None)[0].setting, Setting::Unknown);
    }

    #[test]
    fn ranking_puts_the_setting_that_closes_the_gap_first_and_says_when_nothing_does() {
        let hub = with_reported(local(), &serde_json::json!({"width": 128, "height": 128, "steps": 20}));
        let (abl, _, combos) = plan(&spec(), &local(), &hub, false);
        assert_eq!(combos.len(), 1, "two settings: all together only");
        let measured = vec![
            Measured { ablation: &abl[0], distance: 0.1, without_distance: Some(0.9), top_change: Some("green share 3% → 31%".into()) },
            Measured { ablation: &abl[1], distance: 0.9, without_distance: Some(0.1), top_change: None },
        ];
        let causes = rank(1.0, &measured, Some(0.05), None, &hub, Some(64));
        assert_eq!(causes[0].setting, Setting::Size);
        assert!((causes[0].effect - 0.9).abs() < 1e-9);
        assert!(
            causes[0].message.contains("the Hub renders at 128×128 (reported by the Hub); this LoRA was trained at 64 px"),
            "{}",
            causes[0].message
        );
        assert!(causes[0].message.contains("green share 3% → 31%"));
        assert!(!causes.iter().any(|c| c.setting == Setting::Unknown));
        let v = verdict(1.0, 0.1, false, &causes, Some(0.95));
        assert!(v.starts_with("the Hub renders at 128×128") && v.contains("together close 95%"), "{v}");

        let weak = vec![Measured { ablation: &abl[0], distance: 0.95, without_distance: None, top_change: None }];
        // Interacting settings: neither closes the gap alone, both re-open it when left out.
        let pair = vec![
            Measured { ablation: &abl[0], distance: 0.9, without_distance: Some(1.1), top_change: None },
            Measured { ablation: &abl[1], distance: 1.1, without_distance: Some(0.9), top_change: None },
        ];
        let causes = rank(1.0, &pair, Some(0.0), None, &hub, None);
        assert!(causes[0].effect > 0.8 && causes[1].effect > 0.8, "{causes:?}");
        assert!(causes[0].message.contains("together with the other Hub settings"), "{}", causes[0].message);
        let causes = rank(1.0, &weak, None, None, &hub, None);
        assert_eq!(causes[0].setting, Setting::Unknown);
        assert!(verdict(1.0, 0.1, false, &causes, None).contains("none of the known settings"));
        assert!(verdict(0.05, 0.1, false, &causes, None).contains("nothing to explain"));
        assert!(!verdict(0.05, 0.1, true, &causes, None).contains("nothing to explain"), "paired seeds: a gap half the seed spread is real");
        assert!(verdict(0.001, 0.1, true, &causes, None).contains("nothing to explain"));
    }

    #[test]
    fn scheduler_config_keys_and_the_negative_prompt_are_ablated_on_the_spec() {
        let hub = with_reported(
            local(),
            &serde_json::json!({"scheduler": "ddim", "scheduler_config": {"use_karras_sigmas": true, "timestep_spacing": "trailing", "steps_offset": 0}, "negative_prompt": ""}),
        );
        let (abl, skipped, _) = plan(&spec(), &local(), &hub, false);
        let settings: Vec<_> = abl.iter().map(|a| a.setting.unwrap()).collect();
        assert_eq!(settings, vec![Setting::KarrasSigmas, Setting::TimestepSpacing, Setting::StepsOffset, Setting::NegativePrompt]);
        assert!(skipped.is_empty());
        assert_eq!(abl[0].spec.scheduler_config.use_karras_sigmas, Some(true));
        assert_eq!(abl[1].spec.scheduler_config.timestep_spacing, Some(TimestepSpacing::Trailing));
        assert_eq!((abl[2].spec.scheduler_config.steps_offset, abl[2].spec.negative.as_str()), (Some(0), "blurry"));
        assert_eq!((abl[3].spec.negative.as_str(), abl[3].change.as_str()), ("", "negative prompt \"blurry\" → none"));
        // Each ablation changes its own key only.
        assert!(abl[3].spec.scheduler_config.is_empty());
        let pairs = pairs(&spec(), &local(), &hub, false);
        assert_eq!(pairs[0].pair, Some([Setting::TimestepSpacing, Setting::StepsOffset]), "known interactions first");
        let measured = vec![Measured { ablation: &abl[3], distance: 0.05, without_distance: None, top_change: None }];
        let causes = rank(1.0, &measured, None, None, &hub, None);
        assert!(causes[0].message.starts_with("the Hub renders without a negative prompt (reported by the Hub)"), "{}", causes[0].message);
    }

    #[test]
    fn two_settings_that_act_only_together_are_named_as_a_pair() {
        let hub = with_reported(local(), &serde_json::json!({"steps": 20, "scheduler": "euler-ancestral"}));
        let (abl, _, combos) = plan(&spec(), &local(), &hub, false);
        assert_eq!(combos.len(), 1);
        let all = &combos[0];
        assert_eq!(all.pair, Some([Setting::Scheduler, Setting::Steps]));
        assert_eq!(all.change, "scheduler DDIMScheduler → EulerAncestralDiscreteScheduler and steps 8 → 20");
        assert_eq!((all.spec.scheduler, all.spec.steps), (Some(SchedulerKind::EulerAncestral), 20));
        // Neither closes the gap alone (more steps alone even move away); together they do.
        let measured = vec![
            Measured { ablation: &abl[0], distance: 0.9, without_distance: Some(1.3), top_change: None },
            Measured { ablation: &abl[1], distance: 1.3, without_distance: Some(0.9), top_change: None },
        ];
        let together = 0.1;
        let causes = rank(1.0, &measured, Some(together), None, &hub, None);
        let causes = with_together_pair(1.0, causes, Some((all, together)), &hub, None);
        let settings: Vec<Setting> = causes.iter().map(|c| c.setting).collect();
        assert_eq!(&settings[..2], &[Setting::Scheduler, Setting::Steps], "{causes:#?}");
        assert!(!settings.contains(&Setting::Unknown));
        for (c, other) in causes.iter().zip(["steps", "scheduler"]) {
            assert!((c.effect - 0.9).abs() < 1e-9, "{c:?}");
            assert!(c.message.contains(&format!("together with the {other}")) && c.message.contains("neither does alone"), "{}", c.message);
            assert!(c.message.contains(&all.change), "{}", c.message);
        }
        // One setting reproduces the Hub alone: no pair is claimed.
        let strong = vec![
            Measured { ablation: &abl[0], distance: 0.2, without_distance: Some(0.95), top_change: None },
            Measured { ablation: &abl[1], distance: 0.95, without_distance: Some(0.2), top_change: None },
        ];
        let causes = rank(1.0, &strong, Some(together), None, &hub, None);
        let kept: Vec<String> = causes.iter().map(|c| c.message.clone()).collect();
        let after = with_together_pair(1.0, causes, Some((all, together)), &hub, None);
        assert_eq!(after.iter().map(|c| c.message.clone()).collect::<Vec<_>>(), kept);
        // Together they do not close half the gap: "unknown" stays.
        let measured = vec![
            Measured { ablation: &abl[0], distance: 0.9, without_distance: Some(0.95), top_change: None },
            Measured { ablation: &abl[1], distance: 0.95, without_distance: Some(0.9), top_change: None },
        ];
        let causes = rank(1.0, &measured, Some(0.8), None, &hub, None);
        assert_eq!(with_together_pair(1.0, causes, Some((all, 0.8)), &hub, None)[0].setting, Setting::Unknown);
        // Three settings: the "all together" render is no pair, and nothing changes here.
        let three = with_reported(local(), &serde_json::json!({"steps": 20, "scheduler": "euler-ancestral", "width": 128}));
        let (_, _, combos) = plan(&spec(), &local(), &three, false);
        assert!(combos.iter().all(|a| a.pair.is_none()));
    }
}
