//! Colour clusters over the whole set (k-means in CIELAB) and what the model is likely to blend
//! them into.

use crate::html::pct;
use crate::imagestats::colour::{blend, Lab, Temperature};

pub const K: usize = 6;
/// A cluster "is behind" an image when it covers at least this share of the image.
pub const COVERAGE: f32 = 0.2;
/// Blends are predicted between colours that each cover enough of the set to pull on the model.
const MIN_IMAGE_SHARE: f32 = 0.1;

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

/// Bins of the dataset report's hue histogram (15° each).
pub const HUE_BINS: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orange_and_purple_sets_predict_pink_and_warm_with_cool_grey() {
        let mk = |rgb, share| Cluster {
            name: Lab::from_rgb(rgb).name(),
            hex: String::new(),
            lab: Lab::from_rgb(rgb),
            pixel_share: share,
            image_share: share,
            images: vec![],
        };
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
        let coverage: Vec<Vec<f32>> = (0..10)
            .map(|i| {
                let mut c = vec![0.0; 4];
                c[i % 4] = 0.9;
                c
            })
            .collect();
        let b = predict_blends(&clusters, &coverage);
        assert_eq!(b.iter().filter(|x| x.text.starts_with("orange (30% of images) + blue")).count(), 1, "{b:?}");
        assert!(b.iter().any(|b| b.text.starts_with("warm (60% of images) + cool (40%) → ")), "{b:?}");
    }
}
