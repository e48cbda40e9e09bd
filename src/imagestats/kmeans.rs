//! K-means in CIELAB: the dominant colours of a set of pixels, or of weighted colours.

use super::colour::Lab;
use rand::{Rng, SeedableRng};

const ITERATIONS: usize = 25;
/// k is fixed, so a set with fewer real colours gets split twins: centres closer than a
/// just-noticeable difference of a few ΔE are merged.
const MERGE_DISTANCE: f32 = 10.0;

/// K-means (k-means++ seeding, fixed seed so results are reproducible). Returns centroids
/// sorted by how many samples they hold, largest first.
pub fn kmeans(points: &[Lab], k: usize) -> Vec<Lab> {
    let weighted: Vec<(Lab, f64)> = points.iter().map(|&p| (p, 1.0)).collect();
    kmeans_weighted(&weighted, k).into_iter().map(|(c, _)| c).collect()
}

/// K-means over colours with weights (e.g. palette entries and their shares). Returns each
/// centroid with the total weight of its members, heaviest first. Weights must not be negative.
pub fn kmeans_weighted(points: &[(Lab, f64)], k: usize) -> Vec<(Lab, f64)> {
    let k = k.min(points.len());
    if k == 0 {
        return Vec::new();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut centres = vec![points[rng.random_range(0..points.len())].0];
    let mut d2: Vec<f32> = points.iter().map(|(p, w)| p.dist2(centres[0]) * *w as f32).collect();
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
        let c = points[idx.unwrap_or(points.len() - 1)].0;
        centres.push(c);
        for (d, (p, w)) in d2.iter_mut().zip(points) {
            *d = d.min(p.dist2(c) * *w as f32);
        }
    }
    let mut weights = vec![0f64; centres.len()];
    for _ in 0..ITERATIONS {
        let mut sums = vec![(0f64, 0f64, 0f64); centres.len()];
        weights.iter_mut().for_each(|c| *c = 0.0);
        for (p, w) in points {
            let i = nearest(&centres, *p);
            sums[i].0 += f64::from(p.l) * w;
            sums[i].1 += f64::from(p.a) * w;
            sums[i].2 += f64::from(p.b) * w;
            weights[i] += w;
        }
        let mut moved = 0f32;
        for (i, c) in centres.iter_mut().enumerate() {
            if weights[i] > 0.0 {
                let n = weights[i];
                let new = Lab { l: (sums[i].0 / n) as f32, a: (sums[i].1 / n) as f32, b: (sums[i].2 / n) as f32 };
                moved = moved.max(new.dist2(*c));
                *c = new;
            }
        }
        if moved < 0.01 {
            break;
        }
    }
    let mut merged: Vec<(Lab, f64)> = Vec::new();
    for (c, n) in centres.into_iter().zip(weights).filter(|(_, n)| *n > 0.0) {
        match merged.iter_mut().find(|(m, _)| m.dist2(c) < MERGE_DISTANCE * MERGE_DISTANCE) {
            Some((m, mn)) => {
                *m = m.mix(c, n as f32 / (*mn + n) as f32);
                *mn += n;
            }
            None => merged.push((c, n)),
        }
    }
    merged.sort_by(|a, b| b.1.total_cmp(&a.1));
    merged
}

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
    fn weights_count_like_repeated_points() {
        let (orange, purple) = (Lab::from_rgb([240, 140, 40]), Lab::from_rgb([100, 50, 150]));
        let c = kmeans_weighted(&[(orange, 0.2), (purple, 0.7), (purple.mix(orange, 0.02), 0.1)], 2);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].0.name(), "purple");
        assert!((c[0].1 - 0.8).abs() < 1e-9 && (c[1].1 - 0.2).abs() < 1e-9, "{c:?}");
        // Twins closer than a few ΔE merge into one centre.
        let twins = kmeans_weighted(&[(orange, 0.5), (orange.mix(Lab::from_rgb([250, 150, 50]), 0.5), 0.5)], 2);
        assert_eq!(twins.len(), 1, "{twins:?}");
        assert!(kmeans_weighted(&[], 3).is_empty());
    }
}
