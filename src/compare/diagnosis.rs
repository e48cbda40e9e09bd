//! Which setting explains the gap between the local and the Hub renders: re-render locally with
//! the Hub's value of each differing setting, one at a time and all together, and rank each by
//! the share of the statistics distance it closes.

use super::settings::{Known, Setting, SideSettings, Source};
use crate::diffusion::schedulers::SchedulerKind;
use crate::generate::pipeline::LoraMode;
use crate::generate::render::{parse_dtype, RenderSpec};
use serde::Serialize;

/// One local re-render: the local spec with one (or every) Hub value adopted.
#[derive(Debug, Clone, Serialize)]
pub struct Ablation {
    /// `None` for the "all Hub settings together" render.
    pub setting: Option<Setting>,
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

/// The ablations for every setting whose Hub value is known and differs. `bf16_possible`: the
/// local device can compute in bf16 (a GPU).
pub fn plan(spec: &RenderSpec, local: &SideSettings, hub: &SideSettings, bf16_possible: bool) -> (Vec<Ablation>, Vec<Skipped>, Option<Ablation>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut all = spec.clone();
    let mut all_changes = Vec::new();
    let mut push = |setting: Setting, change: String, edit: &dyn Fn(&mut RenderSpec), all: &mut RenderSpec| {
        let mut s = spec.clone();
        edit(&mut s);
        edit(all);
        all_changes.push(change.clone());
        out.push(Ablation { setting: Some(setting), change, spec: s });
    };

    if let Some(b) = hub_value(&local.base_model, &hub.base_model) {
        let from = local.base_model.value.clone().unwrap_or_default();
        push(Setting::BaseModel, format!("base model {from} → {b}"), &|s| s.model = b.clone(), &mut all);
    }
    if let Some(applied) = hub_value(&local.lora_applied, &hub.lora_applied) {
        if applied {
            skipped.push(Skipped { setting: Setting::Lora, why: "the Hub applied a LoRA but the local side has none to apply".into() });
        } else {
            push(Setting::Lora, "LoRA off".into(), &|s| s.lora = None, &mut all);
        }
    }
    if spec.lora.is_some() && hub.lora_applied.value != Some(false) {
        if let Some(scale) = hub_value(&local.lora_scale, &hub.lora_scale) {
            push(Setting::LoraScale, format!("LoRA scale {} → {scale}", spec.lora_scale), &|s| s.lora_scale = scale, &mut all);
        }
    }
    let w = hub_value(&local.width, &hub.width);
    let h = hub_value(&local.height, &hub.height);
    if w.is_some() || h.is_some() {
        let (lw, lh) = (local.width.value.unwrap_or(0), local.height.value.unwrap_or(0));
        let (hw, hh) = (w.unwrap_or(lw), h.unwrap_or(lh));
        push(Setting::Size, format!("size {lw}×{lh} → {hw}×{hh}"), &|s| {
            s.width = Some(hw);
            s.height = Some(hh);
        }, &mut all);
    }
    if let Some(name) = hub_value(&local.scheduler, &hub.scheduler) {
        match SchedulerKind::from_class_name(&name) {
            Some(kind) => push(Setting::Scheduler, format!("scheduler {} → {name}", local.scheduler.value.clone().unwrap_or_default()), &|s| s.scheduler = Some(kind), &mut all),
            None => skipped.push(Skipped { setting: Setting::Scheduler, why: format!("hfsky has no {name}") }),
        }
    }
    if let Some(steps) = hub_value(&local.steps, &hub.steps) {
        push(Setting::Steps, format!("steps {} → {steps}", spec.steps), &|s| s.steps = steps, &mut all);
    }
    if let Some(g) = hub_value(&local.guidance, &hub.guidance) {
        push(Setting::Guidance, format!("guidance {} → {g}", local.guidance.value.unwrap_or_default()), &|s| s.guidance = Some(g), &mut all);
    }
    if let Some(d) = hub_value(&local.dtype, &hub.dtype) {
        match parse_dtype(&d) {
            Some(dt) if dt != candle_core::DType::BF16 || bf16_possible => {
                push(Setting::Dtype, format!("dtype {} → {d}", local.dtype.value.clone().unwrap_or_default()), &|s| s.dtype = dt, &mut all)
            }
            Some(_) => skipped.push(Skipped { setting: Setting::Dtype, why: "bf16 needs a CUDA GPU".into() }),
            None => skipped.push(Skipped { setting: Setting::Dtype, why: format!("unknown dtype {d}") }),
        }
    }
    if let Some(v) = hub_value(&local.vae, &hub.vae) {
        let label = v.clone().unwrap_or_else(|| "the pipeline's".into());
        push(Setting::Vae, format!("VAE → {label}"), &|s| s.vae = v.clone(), &mut all);
    }
    if hub_value(&local.noise, &hub.noise).is_some() {
        skipped.push(Skipped {
            setting: Setting::Seed,
            why: "the Hub draws its noise from torch's CPU generator, hfsky from its own seeded RNG: the same seed gives different noise, so images pair only in distribution".into(),
        });
    }
    // The Hub worker fuses the LoRA into the weights; only the all-together render copies that.
    if all.lora.is_some() && hub.lora_applied.source.is_some() {
        all.lora_mode = LoraMode::Fused;
    }
    let together = (out.len() > 1).then(|| Ablation { setting: None, change: all_changes.join(", "), spec: all });
    (out, skipped, together)
}

/// One cause, ranked by `effect`: the share of the local→Hub distance that adopting the Hub's
/// value closes (1: reproduces the Hub; 0: no help; negative: moves away).
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub setting: Setting,
    pub effect: f64,
    pub message: String,
    /// The statistic that moved most towards the Hub under this ablation.
    pub evidence: Option<String>,
}

/// A measured ablation: its distance to the Hub side and the biggest statistic change it made.
pub struct Measured<'a> {
    pub ablation: &'a Ablation,
    pub distance: f64,
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
            let mut m = format!("the Hub renders at {}×{}{}", v(hub.width.value.map(|x| x.to_string())), v(hub.height.value.map(|x| x.to_string())), src(hub.width.source));
            if let Some(r) = training_resolution {
                m.push_str(&format!("; this LoRA was trained at {r} px"));
            }
            m
        }
        Setting::Lora => format!("the Hub rendered without the LoRA{}", src(hub.lora_applied.source)),
        Setting::LoraScale => format!("the Hub applies the LoRA at scale {}{}", v(hub.lora_scale.value.map(|x| x.to_string())), src(hub.lora_scale.source)),
        Setting::Scheduler => format!("the Hub samples with {}{}", v(hub.scheduler.value.clone()), src(hub.scheduler.source)),
        Setting::Steps => format!("the Hub runs {} steps{}", v(hub.steps.value.map(|x| x.to_string())), src(hub.steps.source)),
        Setting::Guidance => format!("the Hub uses guidance {}{}", v(hub.guidance.value.map(|x| x.to_string())), src(hub.guidance.source)),
        Setting::BaseModel => format!("the Hub renders on {}{}", v(hub.base_model.value.clone()), src(hub.base_model.source)),
        Setting::Dtype => format!("the Hub computes in {}{}", v(hub.dtype.value.clone()), src(hub.dtype.source)),
        Setting::Vae => format!("the Hub decodes with {}{}", hub.vae.value.clone().flatten().unwrap_or_else(|| "the pipeline's VAE".into()), src(hub.vae.source)),
        Setting::Seed => "the Hub draws different noise for the same seed".into(),
        Setting::Unknown => "something outside the known settings".into(),
    }
}

/// Causes ranked most likely first. `seed_share`: how much of the gap seed variation alone
/// explains, when the two sides' noise differs; `together`: the all-at-once render's distance.
pub fn rank(gap: f64, measured: &[Measured], together: Option<f64>, seed_share: Option<f64>, hub: &SideSettings, training_resolution: Option<usize>) -> Vec<Cause> {
    let mut causes: Vec<Cause> = measured
        .iter()
        .filter_map(|m| {
            let setting = m.ablation.setting?;
            let e = effect(gap, m.distance);
            let how = if e >= 0.8 {
                "reproduces the Hub's look"
            } else if e >= 0.3 {
                "moves the local renders part of the way to the Hub's"
            } else if e > 0.05 {
                "barely moves the local renders"
            } else {
                "does not move the local renders towards the Hub's"
            };
            let evidence = m.top_change.clone();
            let mut message = format!("{}; rendering locally with {} {how} ({:.0}% of the gap)", what_the_hub_does(setting, hub, training_resolution), m.ablation.change, e.max(0.0) * 100.0);
            if let (Some(ev), true) = (&evidence, e > 0.05) {
                message.push_str(&format!(": {ev}"));
            }
            Some(Cause { setting, effect: e, message, evidence })
        })
        .collect();
    if let Some(share) = seed_share {
        causes.push(Cause {
            setting: Setting::Seed,
            effect: (share * 1000.0).round() / 1000.0,
            message: format!("the Hub draws different noise for the same seed; seed-to-seed variation alone is about {:.0}% of the gap", share * 100.0),
            evidence: None,
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
        });
    }
    causes.sort_by(|a, b| b.effect.total_cmp(&a.effect));
    causes
}

/// One plain sentence for the terminal and the top of the report.
pub fn verdict(gap: f64, noise_floor: f64, causes: &[Cause], together_effect: Option<f64>) -> String {
    if gap <= noise_floor {
        return format!(
            "the two sides differ no more than two seeds of the same side do (distance {gap:.3}, seed-to-seed {noise_floor:.3}): nothing to explain"
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::settings::{with_reported, SideSettings, HFSKY_NOISE};

    fn local() -> SideSettings {
        let l = Source::Local;
        SideSettings {
            base_model: Known::new("tiny/base".into(), l),
            lora_applied: Known::new(true, l),
            lora_scale: Known::new(1.0, l),
            scheduler: Known::new("DDIMScheduler".into(), l),
            steps: Known::new(8, l),
            guidance: Known::new(7.5, l),
            width: Known::new(64, l),
            height: Known::new(64, l),
            dtype: Known::new("f32".into(), l),
            vae: Known::new(None, l),
            noise: Known::new(HFSKY_NOISE.into(), l),
        }
    }

    fn spec() -> RenderSpec {
        let mut s = RenderSpec::new("tiny/base", "a photo of SKY");
        s.lora = Some("me/sky-lora".into());
        s.steps = 8;
        s
    }

    #[test]
    fn one_ablation_per_differing_setting_and_one_together() {
        let hub = with_reported(local(), &serde_json::json!({"width": 128, "height": 128, "apply_lora": false, "scheduler": "euler-ancestral", "steps": 8}));
        let (abl, skipped, together) = plan(&spec(), &local(), &hub, false);
        let settings: Vec<_> = abl.iter().map(|a| a.setting.unwrap()).collect();
        assert_eq!(settings, vec![Setting::Lora, Setting::Size, Setting::Scheduler]);
        assert!(skipped.is_empty());
        let size = &abl[1].spec;
        assert_eq!((size.width, size.height, size.lora.is_some()), (Some(128), Some(128), true));
        let t = together.unwrap();
        assert_eq!((t.spec.width, t.spec.lora.is_none(), t.spec.scheduler), (Some(128), true, Some(SchedulerKind::EulerAncestral)));
    }

    #[test]
    fn ranking_puts_the_setting_that_closes_the_gap_first_and_says_when_nothing_does() {
        let hub = with_reported(local(), &serde_json::json!({"width": 128, "height": 128, "steps": 20}));
        let (abl, _, _) = plan(&spec(), &local(), &hub, false);
        let measured = vec![
            Measured { ablation: &abl[0], distance: 0.1, top_change: Some("green share 3% → 31%".into()) },
            Measured { ablation: &abl[1], distance: 0.9, top_change: None },
        ];
        let causes = rank(1.0, &measured, Some(0.05), None, &hub, Some(64));
        assert_eq!(causes[0].setting, Setting::Size);
        assert!((causes[0].effect - 0.9).abs() < 1e-9);
        assert!(causes[0].message.contains("the Hub renders at 128×128 (reported by the Hub); this LoRA was trained at 64 px"), "{}", causes[0].message);
        assert!(causes[0].message.contains("green share 3% → 31%"));
        assert!(!causes.iter().any(|c| c.setting == Setting::Unknown));
        let v = verdict(1.0, 0.1, &causes, Some(0.95));
        assert!(v.starts_with("the Hub renders at 128×128") && v.contains("together close 95%"), "{v}");

        let weak = vec![Measured { ablation: &abl[0], distance: 0.95, top_change: None }];
        let causes = rank(1.0, &weak, None, None, &hub, None);
        assert_eq!(causes[0].setting, Setting::Unknown);
        assert!(verdict(1.0, 0.1, &causes, None).contains("none of the known settings"));
        assert!(verdict(0.05, 0.1, &causes, None).contains("nothing to explain"));
    }
}
