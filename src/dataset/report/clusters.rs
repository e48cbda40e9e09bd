//! Colour clusters over the whole set (k-means in CIELAB), the hue histogram, and what the
//! model is likely to blend them into.

use crate::dataset::color::{blend, Lab, Temperature};
use rand::{Rng, SeedableRng};

pub const K: usize = 6;
const ITERATIONS: usize = 25;
/// A cluster "is behind" an image when it covers at least this share of the image.
pub const COVERAGE: f32 = 0.2;
/// Blends are predicted between colours that each cover enough of the set to pull on the model.
const MIN_IMAGE_SHARE: f32 = 0.1;

/// K-means (k-means++ seeding, fixed seed so reports are reproducible). Returns centroids
/// sorted by how many samples they hold, largest first.
pub fn kmeans(points: &[Lab], k: usize) -> Vec<Lab> {
    let k = k.min(points.len());
    if k == 0 {
        return Vec::new();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut centres = vec![points[rng.random_range(0..points.len())]];
    let mut d2: Vec<f32> = points.iter().map(|p| p.dist2(centres[0])).collect();
    while centres.len() < k {
        let total: f32 = d2.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut target = rng.random::<f32>() * total;
        let idx = d2.iter().position(|&d| {
            target -= d;
            target <= 0.0
        });
        let c = points[idx.unwrap_or(points.len() - 1)];
        centres.push(c);
        for (d, p) in d2.iter_mut().zip(points) {
            *d = d.min(p.dist2(c));
        }
    }
    let mut counts = vec![0usize; centres.len()];
    for _ in 0..ITERATIONS {
        let mut sums = vec![(0f64, 0f64, 0f64); centres.len()];
        counts.iter_mut().for_each(|c| *c = 0);
        for p in points {
            let i = nearest(&centres, *p);
            sums[i].0 += f64::from(p.l);
            sums[i].1 += f64::from(p.a);
            sums[i].2 += f64::from(p.b);
            counts[i] += 1;
        }
        let mut moved = 0f32;
        for (i, c) in centres.iter_mut().enumerate() {
            if counts[i] > 0 {
                let n = counts[i] as f64;
                let new = Lab { l: (sums[i].0 / n) as f32, a: (sums[i].1 / n) as f32, b: (sums[i].2 / n) as f32 };
                moved = moved.max(new.dist2(*c));
                *c = new;
            }
        }
        if moved < 0.01 {
            break;
        }
    }
    // k is fixed, so a set with fewer real colours gets split twins: merge centres closer than
    // a just-noticeable difference of a few ΔE, weighted by their members.
    let mut merged: Vec<(Lab, usize)> = Vec::new();
    for (c, n) in centres.into_iter().zip(counts).filter(|(_, n)| *n > 0) {
        match merged.iter_mut().find(|(m, _)| m.dist2(c) < MERGE_DISTANCE * MERGE_DISTANCE) {
            Some((m, mn)) => {
                *m = m.mix(c, n as f32 / (*mn + n) as f32);
                *mn += n;
            }
            None => merged.push((c, n)),
        }
    }
    merged.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    merged.into_iter().map(|(c, _)| c).collect()
}

const MERGE_DISTANCE: f32 = 10.0;

pub fn nearest(centres: &[Lab], p: Lab) -> usize {
    let mut best = (0, f32::MAX);
    for (i, c) in centres.iter().enumerate() {
        let d = p.dist2(*c);
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Cluster {
    pub name: &'static str,
    pub hex: String,
    pub lab: Lab,
    /// Share of all sampled pixels.
    pub pixel_share: f32,
    /// Share of images it covers at least `COVERAGE` of.
    pub image_share: f32,
    pub images: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Blend {
    pub from: Vec<BlendPart>,
    pub into: &'static str,
    pub hex: String,
    pub text: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BlendPart {
    pub name: String,
    pub hex: String,
    pub image_share: f32,
}

fn pct(x: f32) -> String {
    format!("{:.0}%", x * 100.0)
}

/// Pairs of strong, clearly different colours, and warm against cool, with what their
/// average looks like.
pub fn predict_blends(clusters: &[Cluster], coverage: &[Vec<f32>]) -> Vec<Blend> {
    let strong: Vec<&Cluster> = clusters.iter().filter(|c| c.lab.chroma() >= Lab::GREY_CHROMA && c.image_share >= MIN_IMAGE_SHARE).collect();
    let mut out = Vec::new();
    for (i, a) in strong.iter().enumerate() {
        for b in &strong[i + 1..] {
            let dh = (a.lab.hue() - b.lab.hue()).abs();
            if dh.min(360.0 - dh) < 60.0 || a.name == b.name {
                continue;
            }
            let (mix, name) = blend(a.lab, b.lab, 0.5);
            // Clusters come largest first, so a repeated pair of names keeps its strongest members.
            let repeated = out.iter().any(|x: &Blend| x.from[0].name == a.name && x.from[1].name == b.name);
            if name == a.name || name == b.name || repeated {
                continue;
            }
            out.push(Blend {
                text: format!("{} ({} of images) + {} ({}) → {name}", a.name, pct(a.image_share), b.name, pct(b.image_share)),
                from: vec![part(a.name, &a.hex, a.image_share), part(b.name, &b.hex, b.image_share)],
                into: name,
                hex: mix.hex(),
            });
        }
    }
    // Warm against cool: each image votes with its most covered colourful cluster.
    let mut sums = [(0usize, Lab { l: 0.0, a: 0.0, b: 0.0 }); 2];
    for cov in coverage {
        let best = cov.iter().enumerate().filter(|(i, _)| clusters[*i].lab.chroma() >= Lab::GREY_CHROMA).max_by(|x, y| x.1.total_cmp(y.1));
        let Some((i, &share)) = best else { continue };
        let slot = match clusters[i].lab.temperature() {
            Some(Temperature::Warm) if share > 0.0 => 0,
            Some(Temperature::Cool) if share > 0.0 => 1,
            _ => continue,
        };
        let (n, s) = &mut sums[slot];
        *n += 1;
        let c = clusters[i].lab;
        *s = Lab { l: s.l + c.l, a: s.a + c.a, b: s.b + c.b };
    }
    let n = coverage.len().max(1) as f32;
    let [(nw, sw), (nc, sc)] = sums;
    let (warm_share, cool_share) = (nw as f32 / n, nc as f32 / n);
    if warm_share >= 0.15 && cool_share >= 0.15 {
        let avg = |s: Lab, k: usize| Lab { l: s.l / k as f32, a: s.a / k as f32, b: s.b / k as f32 };
        let (w, c) = (avg(sw, nw), avg(sc, nc));
        let (mix, name) = blend(w, c, 0.5);
        // With one warm and one cool cluster this is the pair above again.
        let count = |t| strong.iter().filter(|c| c.lab.temperature() == Some(t)).count();
        if count(Temperature::Warm) == 1 && count(Temperature::Cool) == 1 {
            return out;
        }
        out.push(Blend {
            text: format!("warm ({} of images) + cool ({}) → {name}", pct(warm_share), pct(cool_share)),
            from: vec![part("warm", &w.hex(), warm_share), part("cool", &c.hex(), cool_share)],
            into: name,
            hex: mix.hex(),
        });
    }
    out
}

fn part(name: &str, hex: &str, image_share: f32) -> BlendPart {
    BlendPart { name: name.to_string(), hex: hex.to_string(), image_share }
}

pub const HUE_BINS: usize = 24;

#[derive(Debug, Clone, serde::Serialize)]
pub struct HueBin {
    pub from_degrees: f32,
    pub share: f32,
    pub hex: String,
}

pub fn hue_bins(counts: &[u64; HUE_BINS]) -> Vec<HueBin> {
    let total = counts.iter().sum::<u64>().max(1) as f32;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let h = (i as f32 + 0.5) * 360.0 / HUE_BINS as f32;
            HueBin { from_degrees: i as f32 * 360.0 / HUE_BINS as f32, share: c as f32 / total, hex: hsv_hex(h, 0.75, 0.9) }
        })
        .collect()
}

fn hsv_hex(h: f32, s: f32, v: f32) -> String {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let to = |u: f32| ((u + m) * 255.0).round() as u8;
    format!("#{:02x}{:02x}{:02x}", to(r), to(g), to(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_separates_well_separated_colours() {
        let mut pts = Vec::new();
        for i in 0..300 {
            let j = (i % 7) as f32;
            pts.push(Lab::from_rgb([240, 140, 40]).mix(Lab { l: 60.0 + j, a: 30.0, b: 60.0 }, 0.1));
            if i % 2 == 0 {
                pts.push(Lab::from_rgb([100, 50, 150]).mix(Lab { l: 30.0 - j, a: 40.0, b: -40.0 }, 0.1));
            }
        }
        let c = kmeans(&pts, 2);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name(), "orange");
        assert_eq!(c[1].name(), "purple");
    }

    #[test]
    fn orange_and_purple_sets_predict_pink_and_warm_with_cool_grey() {
        let mk = |rgb, share| Cluster { name: Lab::from_rgb(rgb).name(), hex: String::new(), lab: Lab::from_rgb(rgb), pixel_share: share, image_share: share, images: vec![] };
        let clusters = vec![mk([245, 140, 40], 0.5), mk([110, 50, 150], 0.4), mk([20, 20, 20], 0.9)];
        let coverage: Vec<Vec<f32>> = (0..10).map(|i| if i < 5 { vec![0.6, 0.0, 0.4] } else { vec![0.0, 0.6, 0.4] }).collect();
        let b = predict_blends(&clusters, &coverage);
        assert_eq!(b[0].into, "pink");
        assert_eq!(b[0].text, "orange (50% of images) + purple (40%) → pink");
        let clusters = vec![mk([230, 150, 80], 0.5), mk([80, 140, 200], 0.5)];
        let coverage: Vec<Vec<f32>> = (0..10).map(|i| if i < 5 { vec![0.9, 0.1] } else { vec![0.1, 0.9] }).collect();
        let b = predict_blends(&clusters, &coverage);
        // The warm-against-cool line would repeat this pair, so it is left out.
        assert_eq!(b.iter().map(|b| b.text.as_str()).collect::<Vec<_>>(), ["orange (50% of images) + blue (50%) → grey"]);
        // Two warm and two cool colours: the pairs and the warm/cool summary.
        let clusters = vec![mk([230, 150, 80], 0.3), mk([235, 120, 90], 0.2), mk([80, 140, 200], 0.3), mk([70, 120, 180], 0.2)];
        let coverage: Vec<Vec<f32>> = (0..10).map(|i| { let mut c = vec![0.0; 4]; c[i % 4] = 0.9; c }).collect();
        let b = predict_blends(&clusters, &coverage);
        assert_eq!(b.iter().filter(|x| x.text.starts_with("orange (30% of images) + blue")).count(), 1, "{b:?}");
        assert!(b.iter().any(|b| b.text.starts_with("warm (60% of images) + cool (40%) → ")), "{b:?}");
    }

    #[test]
    fn hue_bins_share_and_colour() {
        let mut counts = [0u64; HUE_BINS];
        counts[0] = 3;
        counts[16] = 1;
        let bins = hue_bins(&counts);
        assert_eq!(bins[0].share, 0.75);
        assert!(bins[0].hex.starts_with("#e6"), "{}", bins[0].hex);
        assert_eq!(bins[16].from_degrees, 240.0);
    }
}
