//! Hue histograms: binning HSV hues, the bins' display colours, and the circular earth mover's
//! distance between two histograms.

/// The bin of an HSV hue in degrees (0..360) among `bins` equal bins starting at 0° (red).
pub fn bin(hue: f32, bins: usize) -> usize {
    ((hue / 360.0 * bins as f32) as usize).min(bins - 1)
}

/// Centre of bin `i` of `bins`, in degrees.
pub fn centre(i: usize, bins: usize) -> f32 {
    (i as f32 + 0.5) * 360.0 / bins as f32
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HueBin {
    pub from_degrees: f32,
    pub share: f32,
    pub hex: String,
}

/// Bins with their share of the total weight and a colour for drawing them.
pub fn hue_bins(weights: &[f64]) -> Vec<HueBin> {
    let bins = weights.len();
    let total = weights.iter().sum::<f64>().max(1.0) as f32;
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| HueBin { from_degrees: i as f32 * 360.0 / bins as f32, share: w as f32 / total, hex: bin_hex(i, bins) })
        .collect()
}

/// The colour bars of bin `i` are drawn in: its centre hue, fairly saturated.
pub fn bin_hex(i: usize, bins: usize) -> String {
    let [r, g, b] = hsv_to_rgb(centre(i, bins), 0.75, 0.9);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// HSV (hue in degrees, saturation and value 0..1) → sRGB.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [u8; 3] {
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
    [r, g, b].map(|u| ((u + m) * 255.0).round() as u8)
}

/// Earth mover's distance between two hue histograms on the colour wheel, in degrees: the
/// least hue shift, averaged over all the weight, that turns one into the other (0 for equal
/// histograms, 180 for all weight at opposite hues). Histograms are normalised first; an empty
/// one (an achromatic image) counts as spread evenly over the wheel, having no hue of its own.
pub fn hue_emd(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "hue histograms of different bin counts");
    let n = a.len();
    if n == 0 {
        return 0.0;
    }
    let (a, b) = (normalised(a), normalised(b));
    // On a circle the optimal transport is the line's, after removing the median of the
    // cumulative differences (Werman, Peleg & Rosenfeld 1985).
    let mut cum = Vec::with_capacity(n);
    let mut c = 0.0;
    for (x, y) in a.iter().zip(&b) {
        c += x - y;
        cum.push(c);
    }
    let mut sorted = cum.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[n / 2];
    cum.iter().map(|c| (c - median).abs()).sum::<f64>() * 360.0 / n as f64
}

fn normalised(h: &[f64]) -> Vec<f64> {
    let total: f64 = h.iter().sum();
    if total > 0.0 {
        h.iter().map(|x| x / total).collect()
    } else {
        vec![1.0 / h.len() as f64; h.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hue_bins_share_and_colour() {
        let mut counts = [0.0; 24];
        counts[0] = 3.0;
        counts[16] = 1.0;
        let bins = hue_bins(&counts);
        assert_eq!(bins[0].share, 0.75);
        assert!(bins[0].hex.starts_with("#e6"), "{}", bins[0].hex);
        assert_eq!(bins[16].from_degrees, 240.0);
        assert_eq!(bin(359.9, 24), 23);
        assert_eq!(bin(120.0, 36), 12);
    }

    fn spike(bins: usize, at: usize) -> Vec<f64> {
        let mut h = vec![0.0; bins];
        h[at] = 1.0;
        h
    }

    #[test]
    fn emd_is_zero_for_equal_maximal_for_opposite_and_takes_the_short_way_round() {
        let a: Vec<f64> = (0..36).map(|i| (i % 5) as f64).collect();
        assert!(hue_emd(&a, &a).abs() < 1e-12);
        // Scale does not matter: histograms are compared as distributions.
        assert!(hue_emd(&a, &a.iter().map(|x| x * 3.0).collect::<Vec<_>>()).abs() < 1e-12);
        assert!((hue_emd(&spike(36, 0), &spike(36, 18)) - 180.0).abs() < 1e-9);
        // 350° to 10° is 20° across red, not 340° the long way.
        assert!((hue_emd(&spike(36, 35), &spike(36, 1)) - 20.0).abs() < 1e-9);
        assert!((hue_emd(&spike(36, 3), &spike(36, 12)) - 90.0).abs() < 1e-9);
        // Half the weight moving 60° is 30° on average.
        let mut half = spike(36, 0);
        half[0] = 0.5;
        half[6] = 0.5;
        assert!((hue_emd(&spike(36, 0), &half) - 30.0).abs() < 1e-9);
        for (x, y) in [(spike(36, 2), half.clone()), (a.clone(), spike(36, 20))] {
            assert!((hue_emd(&x, &y) - hue_emd(&y, &x)).abs() < 1e-9);
        }
        // No opposite pair is further apart than 180°.
        for i in 0..36 {
            for j in 0..36 {
                assert!(hue_emd(&spike(36, i), &spike(36, j)) <= 180.0 + 1e-9);
            }
        }
        // An achromatic image (empty histogram) is 90° from any single hue: spread evenly.
        assert!((hue_emd(&vec![0.0; 36], &spike(36, 7)) - 90.0).abs() < 1e-9);
        assert!(hue_emd(&vec![0.0; 36], &vec![0.0; 36]).abs() < 1e-12);
    }
}
