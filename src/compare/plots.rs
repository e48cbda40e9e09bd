//! The reports' plots (`compare`'s, and the training report's curves) as inline SVG:
//! self-contained strings (fixed viewBox, no script, no external assets) for pasting into HTML
//! as they are. Every side or series gets its own colour ([`SIDE_COLOURS`]) and a legend;
//! labels are XML-escaped.

use super::stats::{SideStats, Spread, HUE_BINS};
use crate::html::pct;
use crate::imagestats::colour::{Family, Lab};
use crate::imagestats::hue;
use std::fmt::Write;

/// One side of a comparison, as the plots label it (e.g. "local", "Hub").
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub label: &'a str,
    pub stats: &'a SideStats,
}

/// Side colours, in order (more sides reuse them).
pub const SIDE_COLOURS: [&str; 4] = ["#1c5d99", "#c2410c", "#2f855a", "#6b46c1"];

const FONT: &str = "font-family=\"system-ui, sans-serif\" font-size=\"12\"";
const WIDTH: f64 = 640.0;

fn side_colour(i: usize) -> &'static str {
    SIDE_COLOURS[i % SIDE_COLOURS.len()]
}

/// `s` safe inside XML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newlines are not allowed in XML at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn svg(height: f64, title: &str, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height:.0}\" width=\"{WIDTH}\" height=\"{height:.0}\" role=\"img\" {FONT}><title>{}</title>{body}</svg>",
        escape(title)
    )
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, fill: &str, s: &str) {
    let _ = write!(out, "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" fill=\"{fill}\">{}</text>", escape(s));
}

/// A row of legend entries (a small square in each side's colour and its label) at `y`.
fn legend(out: &mut String, sides: &[Side], y: f64) {
    let entries: Vec<(&str, usize)> = sides.iter().enumerate().map(|(i, s)| (s.label, i)).collect();
    legend_entries(out, &entries, y);
}

/// Legend entries (label, colour index) at `y`, laid out right to left so the legend hugs the
/// right edge whatever the label lengths.
fn legend_entries(out: &mut String, entries: &[(&str, usize)], y: f64) {
    let mut x = WIDTH - 12.0;
    for (label, colour) in entries.iter().rev() {
        let w = 7.0 * label.chars().count() as f64 + 22.0;
        x -= w;
        let _ = write!(out, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>", y - 10.0, side_colour(*colour));
        text(out, x + 16.0, y, "start", "#222", label);
    }
}

/// At most `n` characters, with an ellipsis when cut (the full label is in the legend).
fn shortened(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// Text colour readable on a swatch of colour `lab`.
fn ink_on(lab: Lab) -> &'static str {
    if lab.l > 60.0 {
        "#111"
    } else {
        "#fff"
    }
}

/// Each side's palette as a bar of swatches whose widths are their pixel shares.
pub fn palettes(sides: &[Side]) -> String {
    let (left, bar_w, row_h) = (130.0, WIDTH - 130.0 - 12.0, 34.0);
    let mut b = String::new();
    for (i, side) in sides.iter().enumerate() {
        let y = 12.0 + i as f64 * (row_h + 14.0);
        let _ = write!(b, "<rect x=\"8\" y=\"{:.1}\" width=\"6\" height=\"{row_h}\" fill=\"{}\"/>", y, side_colour(i));
        let _ = write!(
            b,
            "<text x=\"20\" y=\"{:.1}\" fill=\"#222\">{}<title>{}</title></text>",
            y + row_h / 2.0 + 4.0,
            escape(&shortened(side.label, 16)),
            escape(side.label)
        );
        let mut x = left;
        for sw in &side.stats.palette {
            let w = sw.share * bar_w;
            let _ = write!(
                b,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{row_h}\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"1\"><title>{} {} {}</title></rect>",
                escape(&sw.hex),
                sw.family.name(),
                escape(&sw.hex),
                pct(sw.share)
            );
            if w >= 34.0 {
                text(&mut b, x + w / 2.0, y + row_h / 2.0 + 4.0, "middle", ink_on(sw.lab), &pct(sw.share));
            }
            x += w;
        }
    }
    let height = 12.0 + sides.len() as f64 * (row_h + 14.0);
    svg(height.max(40.0), "Dominant colours (k-means in CIELAB), width = share of pixels", &b)
}

/// The sides' hue histograms overlaid: per 10° of hue, one bar per side (left to right in
/// side order), tinted by the hue, outlined and capped in the side's colour.
pub fn hue_histograms(sides: &[Side]) -> String {
    let (x0, x1, top, bottom) = (48.0, WIDTH - 24.0, 30.0, 190.0);
    let max = sides.iter().flat_map(|s| s.stats.hue_histogram.iter().copied()).fold(0.05f64, f64::max);
    let bin_w = (x1 - x0) / HUE_BINS as f64;
    let bar_w = (bin_w - 2.0) / sides.len().max(1) as f64;
    let mut b = String::new();
    legend(&mut b, sides, 16.0);
    for frac in [0.0, 0.5, 1.0] {
        let y = bottom - frac * (bottom - top);
        let _ = write!(b, "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>");
        text(&mut b, x0 - 6.0, y + 4.0, "end", "#555", &pct(frac * max));
    }
    for k in 0..HUE_BINS {
        let tint = hue::bin_hex(k, HUE_BINS);
        for (i, side) in sides.iter().enumerate() {
            let share = side.stats.hue_histogram.get(k).copied().unwrap_or(0.0);
            let h = share / max * (bottom - top);
            if h < 0.5 {
                continue;
            }
            let x = x0 + k as f64 * bin_w + 1.0 + i as f64 * bar_w;
            let c = side_colour(i);
            let _ = write!(
                b,
                "<g><title>{}: {}-{}°, {}</title><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"{tint}\" stroke=\"{c}\" stroke-width=\"1\"/><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"3\" fill=\"{c}\"/></g>",
                escape(side.label),
                k * 360 / HUE_BINS,
                (k + 1) * 360 / HUE_BINS,
                pct(share),
                bottom - h,
                bottom - h - 1.5,
            );
        }
        let _ = write!(b, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bin_w:.1}\" height=\"8\" fill=\"{tint}\"/>", x0 + k as f64 * bin_w, bottom + 2.0);
    }
    for deg in (0..=360).step_by(60) {
        let x = x0 + f64::from(deg) / 360.0 * (x1 - x0);
        text(&mut b, x, bottom + 24.0, "middle", "#555", &format!("{deg}°"));
    }
    let order = if sides.len() > 1 { " (bars left to right in legend order)" } else { "" };
    text(&mut b, x0, 16.0, "start", "#222", &format!("share of colour per 10° of hue{order}"));
    svg(bottom + 34.0, "Hue histograms (HSV hue, weighted by chroma)", &b)
}

/// Mean L* per horizontal band (top of the image at the top) as one line per side, with a
/// shaded ± one standard deviation over seeds and a dashed line at the mean horizon.
pub fn luminance_profiles(sides: &[Side]) -> String {
    let (x0, x1, top, bottom) = (120.0, WIDTH - 24.0, 34.0, 274.0);
    let x_of = |l: f64| x0 + l.clamp(0.0, 100.0) / 100.0 * (x1 - x0);
    let mut b = String::new();
    legend(&mut b, sides, 16.0);
    for l in [0, 25, 50, 75, 100] {
        let x = x_of(f64::from(l));
        let _ = write!(b, "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>");
        text(&mut b, x, bottom + 16.0, "middle", "#555", &l.to_string());
    }
    text(&mut b, (x0 + x1) / 2.0, bottom + 30.0, "middle", "#555", "mean L* (0 black, 100 white)");
    text(&mut b, x0 - 8.0, top + 4.0, "end", "#555", "top of image");
    text(&mut b, x0 - 8.0, bottom, "end", "#555", "bottom");
    for (i, side) in sides.iter().enumerate() {
        let p: &[Spread] = &side.stats.luminance_profile;
        if p.is_empty() {
            continue;
        }
        let y_of = |k: usize| top + (k as f64 + 0.5) / p.len() as f64 * (bottom - top);
        let band: Vec<String> = p
            .iter()
            .enumerate()
            .map(|(k, s)| format!("{:.1},{:.1}", x_of(s.mean + s.sd), y_of(k)))
            .chain(p.iter().enumerate().rev().map(|(k, s)| format!("{:.1},{:.1}", x_of(s.mean - s.sd), y_of(k))))
            .collect();
        let line: Vec<String> = p.iter().enumerate().map(|(k, s)| format!("{:.1},{:.1}", x_of(s.mean), y_of(k))).collect();
        let c = side_colour(i);
        let _ = write!(b, "<polygon points=\"{}\" fill=\"{c}\" fill-opacity=\"0.15\" stroke=\"none\"/>", band.join(" "));
        let _ = write!(
            b,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"><title>{}</title></polyline>",
            line.join(" "),
            escape(side.label)
        );
        if let Some(h) = side.stats.horizon {
            let y = top + (1.0 - h.mean) * (bottom - top);
            let _ = write!(b, "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"{c}\" stroke-dasharray=\"6 4\"><title>{}: horizon at {:.2} of the height</title></line>", escape(side.label), h.mean);
        }
    }
    text(&mut b, 8.0, 16.0, "start", "#222", "luminance, top to bottom");
    svg(bottom + 40.0, "Vertical luminance profiles (dashed: horizon)", &b)
}

/// Share of pixels in each colour family, one bar per side; families under 0.5% on every
/// side are left out.
pub fn family_shares(sides: &[Side]) -> String {
    let share = |s: &SideStats, f: Family| s.families.get(&f).map_or(0.0, |x| x.mean);
    let shown: Vec<Family> = Family::ALL.into_iter().filter(|&f| sides.iter().any(|s| share(s.stats, f) >= 0.005)).collect();
    let (x0, x1, top) = (110.0, WIDTH - 60.0, 30.0);
    let bar_h = 10.0;
    let row_h = bar_h * sides.len().max(1) as f64 + 8.0;
    let max = sides.iter().flat_map(|s| shown.iter().map(|&f| share(s.stats, f))).fold(0.1f64, f64::max);
    // Round the axis up to a whole 10%.
    let max = (max * 10.0).ceil() / 10.0;
    let mut b = String::new();
    legend(&mut b, sides, 16.0);
    text(&mut b, 8.0, 16.0, "start", "#222", "share of pixels per colour family");
    for (r, &f) in shown.iter().enumerate() {
        let y = top + r as f64 * row_h;
        let _ = write!(
            b,
            "<rect x=\"8\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\" stroke=\"#888\" stroke-width=\"0.5\"/>",
            y + row_h / 2.0 - 10.0,
            f.hex()
        );
        text(&mut b, 26.0, y + row_h / 2.0, "start", "#222", f.name());
        for (i, side) in sides.iter().enumerate() {
            let v = share(side.stats, f);
            let w = v / max * (x1 - x0);
            let by = y + i as f64 * bar_h;
            let _ = write!(
                b,
                "<rect x=\"{x0}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {} {}</title></rect>",
                bar_h - 1.0,
                side_colour(i),
                escape(side.label),
                f.name(),
                pct(v)
            );
            text(&mut b, x0 + w + 4.0, by + bar_h - 1.5, "start", "#444", &pct(v));
        }
    }
    let bottom = top + shown.len() as f64 * row_h;
    let _ = write!(b, "<line x1=\"{x0}\" y1=\"{top}\" x2=\"{x0}\" y2=\"{bottom:.1}\" stroke=\"#888\"/>");
    let _ = write!(b, "<line x1=\"{x0}\" y1=\"{bottom:.1}\" x2=\"{x1}\" y2=\"{bottom:.1}\" stroke=\"#888\"/>");
    text(&mut b, x0, bottom + 14.0, "middle", "#555", "0%");
    text(&mut b, x1, bottom + 14.0, "middle", "#555", &pct(max));
    svg(bottom + 22.0, "Colour family shares", &b)
}

/// One line of a [`line_chart`].
#[derive(Debug, Clone)]
pub struct Series<'a> {
    pub label: &'a str,
    /// (x, y) points in x order; non-finite ones are left out.
    pub points: Vec<(f64, f64)>,
    /// Index into [`SIDE_COLOURS`].
    pub colour: usize,
    /// Drawn thin and pale (e.g. the raw values under their smoothed curve).
    pub faint: bool,
    /// A dot at every point (for sparse series such as a validation loss).
    pub markers: bool,
}

/// A "nice" tick step (1, 2 or 5 × 10ⁿ) giving about `n` ticks over `span`.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// A tick label: plain for everyday magnitudes, scientific for learning rates and the like.
fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() < 1e-3 || v.abs() >= 1e5 {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Series over a shared x axis (e.g. loss against optimizer step), with nice ticks, axis
/// labels and a legend; an empty chart says "no data".
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (x0, x1, top, bottom) = (72.0, WIDTH - 20.0, 34.0, 234.0);
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().filter(finite).copied()).collect();
    let mut b = String::new();
    let entries: Vec<(&str, usize)> = series.iter().filter(|s| !s.faint).map(|s| (s.label, s.colour)).collect();
    legend_entries(&mut b, &entries, 16.0);
    text(&mut b, 8.0, 16.0, "start", "#222", y_label);
    let _ = write!(b, "<line x1=\"{x0}\" y1=\"{bottom}\" x2=\"{x1}\" y2=\"{bottom}\" stroke=\"#888\"/>");
    let _ = write!(b, "<line x1=\"{x0}\" y1=\"{top}\" x2=\"{x0}\" y2=\"{bottom}\" stroke=\"#888\"/>");
    text(&mut b, (x0 + x1) / 2.0, bottom + 32.0, "middle", "#555", x_label);
    if all.is_empty() {
        text(&mut b, (x0 + x1) / 2.0, (top + bottom) / 2.0, "middle", "#777", "no data");
        return svg(bottom + 40.0, title, &b);
    }
    let range = |v: &mut dyn Iterator<Item = f64>| v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (mut xlo, mut xhi) = range(&mut all.iter().map(|p| p.0));
    let (mut ylo, mut yhi) = range(&mut all.iter().map(|p| p.1));
    if xhi - xlo <= 0.0 {
        (xlo, xhi) = (xlo - 1.0, xhi + 1.0);
    }
    if yhi - ylo <= 0.0 {
        let pad = if ylo == 0.0 { 1.0 } else { ylo.abs() * 0.1 };
        (ylo, yhi) = (ylo - pad, yhi + pad);
    }
    let ystep = tick_step(yhi - ylo, 4.0);
    let (ylo, yhi) = ((ylo / ystep).floor() * ystep, (yhi / ystep).ceil() * ystep);
    let xstep = tick_step(xhi - xlo, 6.0);
    let xs = |x: f64| x0 + (x - xlo) / (xhi - xlo) * (x1 - x0);
    let ys = |y: f64| bottom - (y - ylo) / (yhi - ylo) * (bottom - top);
    let mut y = ylo;
    while y <= yhi + ystep * 1e-6 {
        let py = ys(y);
        let _ = write!(b, "<line x1=\"{x0}\" y1=\"{py:.1}\" x2=\"{x1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>");
        text(&mut b, x0 - 6.0, py + 4.0, "end", "#555", &tick_label(y, ystep));
        y += ystep;
    }
    let mut x = (xlo / xstep).ceil() * xstep;
    while x <= xhi + xstep * 1e-6 {
        let px = xs(x);
        let _ = write!(b, "<line x1=\"{px:.1}\" y1=\"{bottom}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>", bottom + 4.0);
        text(&mut b, px, bottom + 17.0, "middle", "#555", &tick_label(x, xstep));
        x += xstep;
    }
    for s in series {
        let pts: Vec<(f64, f64)> = s.points.iter().filter(finite).map(|&(x, y)| (xs(x), ys(y))).collect();
        if pts.is_empty() {
            continue;
        }
        let c = side_colour(s.colour);
        let (width, opacity) = if s.faint { (1.0, 0.35) } else { (2.0, 1.0) };
        let line: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            b,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"{width}\" stroke-opacity=\"{opacity}\"><title>{}</title></polyline>",
            line.join(" "),
            escape(s.label)
        );
        if s.markers {
            for ((x, y), (vx, vy)) in pts.iter().zip(s.points.iter().filter(finite)) {
                let _ = write!(
                    b,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{c}\"><title>{} at {vx}: {vy:.4}</title></circle>",
                    escape(s.label)
                );
            }
        }
    }
    svg(bottom + 40.0, title, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::stats::ImageStats;
    use image::{Rgb, RgbImage};

    /// A minimal XML well-formedness check: tags balance, attributes are quoted, and every `&`
    /// starts a known entity. Returns the element names in document order.
    fn parse_xml(s: &str) -> Result<Vec<String>, String> {
        fn entity_ok(rest: &str) -> bool {
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| rest.starts_with(e))
                || rest
                    .strip_prefix("&#")
                    .and_then(|r| r.split_once(';'))
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        }
        fn check_text(t: &str) -> Result<(), String> {
            for (i, _) in t.match_indices('&') {
                if !entity_ok(&t[i..]) {
                    return Err(format!("bare & in {t:?}"));
                }
            }
            if t.contains('>') {
                return Err(format!("bare > in {t:?}"));
            }
            Ok(())
        }
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = s;
        let mut seen_root = false;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt])?;
            if stack.is_empty() && seen_root {
                return Err("content after the root element".into());
            }
            let end = rest[lt..].find('>').ok_or("unclosed tag")? + lt;
            let tag = &rest[lt + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name.trim() => continue,
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
                return Err(format!("bad element name {name:?}"));
            }
            let mut seen = Vec::new();
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let (key, after) = attrs.split_once('=').ok_or(format!("attribute without value in <{name}>"))?;
                let after = after.strip_prefix('"').ok_or(format!("unquoted attribute {key} in <{name}>"))?;
                let (value, after) = after.split_once('"').ok_or("unterminated attribute")?;
                if value.contains('<') {
                    return Err(format!("< in attribute {key}"));
                }
                check_text(value)?;
                if seen.contains(&key) {
                    return Err(format!("duplicate attribute {key} in <{name}>"));
                }
                seen.push(key);
                attrs = after;
            }
            if stack.is_empty() {
                if seen_root {
                    return Err("two root elements".into());
                }
                seen_root = true;
            }
            names.push(name.to_string());
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        check_text(rest)?;
        if !rest.trim().is_empty() || !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        Ok(names)
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        assert!(parse_xml("<svg><g></g></svg>").is_ok());
        for bad in
            ["<svg><g></svg>", "<svg>a & b</svg>", "<svg a=b/>", "<svg><text>x</text>", "<svg/><svg/>", "<svg a=\"<\"/>", "<svg a=\"1\" a=\"2\"/>"]
        {
            assert!(parse_xml(bad).is_err(), "{bad}");
        }
    }

    fn side_of(images: &[RgbImage]) -> SideStats {
        SideStats::aggregate(&images.iter().map(|i| ImageStats::measure(i).unwrap()).collect::<Vec<_>>()).unwrap()
    }

    fn sunset(green_rows: u32) -> RgbImage {
        RgbImage::from_fn(80, 60, |x, y| {
            Rgb(if y >= 60 - green_rows {
                [40, 190, 60]
            } else if y < 30 {
                [240, 140, 50]
            } else {
                [(40 + x % 5) as u8, 32, 28]
            })
        })
    }

    fn count(names: &[String], name: &str) -> usize {
        names.iter().filter(|n| *n == name).count()
    }

    #[test]
    fn plots_are_well_formed_svg_with_both_sides_and_escaped_labels() {
        let (local, hub) = (side_of(&[sunset(0), sunset(4)]), side_of(&[sunset(20), sunset(24)]));
        let label = "Hub <widget> & \"friends\"";
        let sides = [Side { label: "local", stats: &local }, Side { label, stats: &hub }];
        for (name, out) in [
            ("palettes", palettes(&sides)),
            ("hue", hue_histograms(&sides)),
            ("luminance", luminance_profiles(&sides)),
            ("families", family_shares(&sides)),
        ] {
            let names = parse_xml(&out).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
            assert_eq!(names[0], "svg", "{name}");
            assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 640 "), "{name}");
            assert!(!out.contains("<script") && !out.contains("href"), "{name}: self-contained");
            assert!(!out.contains("<widget>") && out.contains("Hub &lt;widget&gt; &amp; &quot;friends&quot;"), "{name}: label escaped");
            assert!(!out.contains("NaN") && !out.contains("inf\""), "{name}: {out}");
            assert!(out.contains(SIDE_COLOURS[0]) && out.contains(SIDE_COLOURS[1]), "{name}: both side colours");
        }
        let names = parse_xml(&hue_histograms(&sides)).unwrap();
        // Per non-empty bar a bar and its cap, a tint strip per bin, and the two legend squares.
        let max = local.hue_histogram.iter().chain(&hub.hue_histogram).fold(0.05f64, |m, &x| m.max(x));
        let bars: usize = [&local, &hub].iter().map(|s| s.hue_histogram.iter().filter(|&&x| x / max * 160.0 >= 0.5).count()).sum();
        assert!(bars >= 4, "{:?}", hub.hue_histogram);
        assert_eq!(count(&names, "rect"), bars * 2 + HUE_BINS + 2);
        assert!(hue_histograms(&sides).contains(&hue::bin_hex(3, HUE_BINS)), "bars tinted by hue");
        let names = parse_xml(&luminance_profiles(&sides)).unwrap();
        assert_eq!(count(&names, "polyline"), 2);
        assert_eq!(count(&names, "polygon"), 2);
        let pal = palettes(&sides);
        assert_eq!(count(&parse_xml(&pal).unwrap(), "rect"), local.palette.len() + hub.palette.len() + 2);
        assert!(hub.palette.iter().all(|s| pal.contains(&s.hex)));
        let fam = family_shares(&sides);
        assert!(fam.contains(">green</text>") && fam.contains(">orange</text>"), "{fam}");
        assert!(!fam.contains(">cyan</text>"), "absent families are left out");
    }

    #[test]
    fn the_luminance_profile_puts_the_top_of_the_image_at_the_top() {
        let bright_top = side_of(&[RgbImage::from_fn(20, 32, |_, y| Rgb(if y < 16 { [250, 250, 250] } else { [5, 5, 5] }))]);
        let svg = luminance_profiles(&[Side { label: "x", stats: &bright_top }]);
        let points = svg.split("<polyline points=\"").nth(1).unwrap().split('"').next().unwrap();
        let xy: Vec<(f64, f64)> =
            points.split(' ').map(|p| p.split_once(',').map(|(x, y)| (x.parse().unwrap(), y.parse().unwrap())).unwrap()).collect();
        assert_eq!(xy.len(), 16);
        // SVG y grows downwards: the first band (top of the image) is highest on the page and bright (far right).
        assert!(xy[0].1 < xy[15].1 && xy[0].0 > xy[15].0, "{xy:?}");
        parse_xml(&svg).unwrap();
    }

    #[test]
    fn line_charts_are_well_formed_and_place_points_by_value() {
        let loss = Series {
            label: "loss <raw> & co",
            points: vec![(1.0, 0.5), (2.0, 0.25), (3.0, f64::NAN), (4.0, 0.125)],
            colour: 0,
            faint: false,
            markers: false,
        };
        let val = Series { label: "val_loss", points: vec![(0.0, 0.4), (4.0, 0.3)], colour: 1, faint: false, markers: true };
        let out = line_chart("Loss", "step", "loss", &[loss, val]);
        let names = parse_xml(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(count(&names, "polyline"), 2);
        assert_eq!(count(&names, "circle"), 2, "a dot per val_loss point");
        assert!(out.contains("loss &lt;raw&gt; &amp; co") && !out.contains("NaN"), "{out}");
        // y grows downwards: 0.5 is drawn above 0.125, step 1 left of step 4.
        let pts: Vec<(f64, f64)> = out
            .split("<polyline points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .map(|p| p.split_once(',').map(|(x, y)| (x.parse().unwrap(), y.parse().unwrap())).unwrap())
            .collect();
        assert_eq!(pts.len(), 3, "the NaN point is left out");
        assert!(pts[0].0 < pts[2].0 && pts[0].1 < pts[2].1, "{pts:?}");
        for (lr, label) in [(1e-4, "1.0e-4"), (0.25, "0.25")] {
            let chart = line_chart(
                "lr",
                "step",
                "lr",
                &[Series { label: "lr", points: vec![(1.0, 0.0), (2.0, lr)], colour: 0, faint: false, markers: false }],
            );
            assert!(chart.contains(&format!(">{label}</text>")), "{label}: {chart}");
        }
        let empty = line_chart("Loss", "step", "loss", &[]);
        parse_xml(&empty).unwrap();
        assert!(empty.contains("no data"));
        let flat = line_chart("x", "step", "y", &[Series { label: "c", points: vec![(1.0, 2.0)], colour: 0, faint: false, markers: true }]);
        parse_xml(&flat).unwrap_or_else(|e| panic!("{e}: {flat}"));
    }

    #[test]
    fn one_side_and_no_sides_still_draw() {
        let s = side_of(&[sunset(10)]);
        for out in [palettes(&[]), hue_histograms(&[]), luminance_profiles(&[]), family_shares(&[]), hue_histograms(&[Side { label: "", stats: &s }])]
        {
            parse_xml(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        }
        assert_eq!(escape("a\u{1}b<"), "a\u{fffd}b&lt;");
    }
}
