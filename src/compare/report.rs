//! The comparison written out: `report.json` (everything), `report.html` (images side by side,
//! plots as inline SVG, settings, ranked causes; every user string escaped) and the short
//! terminal summary.

use super::plots::{self, Side};
use super::run::Comparison;
use super::stats::{SideStats, Spread};
use crate::imagestats::colour::Family;
use serde::Serialize;
use std::path::Path;

const PAGE: (&str, &str) = ("compare_report.html.j2", include_str!("../../templates/compare_report.html.j2"));

#[derive(Serialize)]
struct Pair {
    seed: Option<u64>,
    local: Option<String>,
    hub: Option<String>,
}

#[derive(Serialize)]
struct StatRow {
    name: String,
    local: String,
    hub: String,
}

#[derive(Serialize)]
struct Plots {
    families: String,
    hue: String,
    palettes: String,
    profile: String,
}

fn pm(s: Spread, scale: f64, unit: &str) -> String {
    format!("{:.1}{unit} ± {:.1}{unit}", s.mean * scale, s.sd * scale)
}

fn stat_rows(l: &SideStats, h: &SideStats) -> Vec<StatRow> {
    let row = |name: &str, f: &dyn Fn(&SideStats) -> String| StatRow { name: name.into(), local: f(l), hub: f(h) };
    let mut rows = vec![
        row("mean colour (L*, a*, b*)", &|s| {
            format!("{} ({:.0}, {:.0}, {:.0})", s.mean_colour().family().name(), s.mean_lab.l.mean, s.mean_lab.a.mean, s.mean_lab.b.mean)
        }),
        row("chroma", &|s| pm(s.chroma, 1.0, "")),
        row("saturation", &|s| pm(s.saturation, 100.0, "%")),
        row("brightness", &|s| pm(s.brightness, 100.0, "%")),
        row("horizon height", &|s| s.horizon.map(|h| pm(h, 100.0, "%")).unwrap_or_else(|| "none found".into())),
        row("sky fraction", &|s| pm(s.sky_fraction, 100.0, "%")),
    ];
    let present = |f: Family| [l, h].iter().any(|s| s.families.get(&f).is_some_and(|x| x.mean >= 0.01));
    for f in Family::ALL.into_iter().filter(|f| present(*f)) {
        let share = |s: &SideStats| pm(s.families.get(&f).copied().unwrap_or(Spread { mean: 0.0, sd: 0.0 }), 100.0, "%");
        rows.push(StatRow { name: format!("{} share", f.name()), local: share(l), hub: share(h) });
    }
    rows
}

/// report.html for a comparison whose images lie under the same folder.
pub fn html(c: &Comparison) -> Result<String, minijinja::Error> {
    let sides = [Side { label: "local", stats: &c.local.stats }, Side { label: "Hub", stats: &c.hub.stats }];
    let n = c.local.images.len().max(c.hub.images.len());
    let pairs: Vec<Pair> = (0..n)
        .map(|i| {
            let l = c.local.images.get(i);
            Pair { seed: l.and_then(|x| x.seed), local: l.map(|x| x.file.clone()), hub: c.hub.images.get(i).map(|x| x.file.clone()) }
        })
        .collect();
    let ablations: Vec<serde_json::Value> = c
        .ablations
        .iter()
        .map(|a| serde_json::json!({ "change": a.change, "effect": a.effect, "images": a.images.iter().map(|i| &i.file).collect::<Vec<_>>() }))
        .collect();
    let plots = Plots {
        families: plots::family_shares(&sides),
        hue: plots::hue_histograms(&sides),
        palettes: plots::palettes(&sides),
        profile: plots::luminance_profiles(&sides),
    };
    let renders: Vec<serde_json::Value> = c
        .hub
        .renders
        .iter()
        .map(|h| {
            serde_json::json!({ "seed": h.seed, "provider": h.render.provider, "route": h.render.route, "date": h.render.date,
                "status": h.render.status, "request_id": h.render.request_id, "parameters_sent": h.render.parameters_sent.to_string() })
        })
        .collect();
    let hub = serde_json::json!({ "origin": c.hub.origin, "renders": renders });
    let mut env = crate::html::environment();
    env.add_template(PAGE.0, PAGE.1)?;
    let r = minijinja::context! {
        prompt => c.prompt, date => c.date, repo => c.repo, seeds => c.seeds, hfsky_version => c.hfsky_version,
        verdict => c.verdict, causes => c.causes, skipped => c.skipped, settings => c.settings,
        distance => c.distance, noise_floor => c.noise_floor, pairs => pairs, plots => plots,
        stat_rows => stat_rows(&c.local.stats, &c.hub.stats), ablations => ablations, hub => hub,
        seed_diffs => c.seed_diffs, full_scale => super::heatmap::FULL_SCALE,
    };
    env.get_template(PAGE.0)?.render(minijinja::context! { r => r })
}

/// Writes report.json and report.html into `out`; returns their paths.
pub fn write(c: &Comparison, out: &Path) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let json = out.join("report.json");
    let page = out.join("report.html");
    std::fs::write(&json, serde_json::to_vec_pretty(c).expect("serializable"))?;
    std::fs::write(&page, html(c).map_err(|e| std::io::Error::other(format!("report template: {e:#}")))?)?;
    Ok((json, page))
}

/// A few lines for the terminal: the verdict, the differing settings, the top causes.
pub fn summary(c: &Comparison) -> Vec<String> {
    let mut lines = vec![c.verdict.clone()];
    for d in c.differences.iter().take(3) {
        lines.push(format!("  Hub vs local: {d}"));
    }
    for r in c.settings.iter().filter(|r| r.differs) {
        lines.push(format!("  setting: {} — local {}, Hub {}", r.setting.label(), r.local, r.hub));
    }
    for (i, cause) in c.causes.iter().take(3).enumerate() {
        lines.push(format!("  {}. {} ({:.0}%): {}", i + 1, cause.setting.label(), cause.effect * 100.0, cause.message));
    }
    lines
}
