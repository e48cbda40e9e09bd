//! sRGB ↔ CIELAB (D65), HSV, and plain-English colour families, so clusters, blends and
//! statistics read as "orange", "purple", "grey" rather than numbers.

/// CIELAB colour: L* in 0..100, a* and b* roughly -128..127.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lab {
    pub l: f32,
    pub a: f32,
    pub b: f32,
}

fn srgb_to_linear(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(c: f32) -> f32 {
    if c <= 0.003_130_8 {
        c * 12.92
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

/// sRGB 8-bit → linear, precomputed once (pixel loops call this millions of times).
fn linear_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| srgb_to_linear(i as f32 / 255.0)))
}

const WHITE: [f32; 3] = [0.950_47, 1.0, 1.088_83];

fn f(t: f32) -> f32 {
    if t > 216.0 / 24389.0 {
        t.cbrt()
    } else {
        (24389.0 / 27.0 * t + 16.0) / 116.0
    }
}

fn f_inv(t: f32) -> f32 {
    if t * t * t > 216.0 / 24389.0 {
        t * t * t
    } else {
        (116.0 * t - 16.0) * 27.0 / 24389.0
    }
}

impl Lab {
    pub fn from_rgb(rgb: [u8; 3]) -> Lab {
        let t = linear_table();
        let [r, g, b] = rgb.map(|c| t[usize::from(c)]);
        let x = 0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b;
        let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175 * b;
        let z = 0.019_333_9 * r + 0.119_192 * g + 0.950_304_1 * b;
        let (fx, fy, fz) = (f(x / WHITE[0]), f(y / WHITE[1]), f(z / WHITE[2]));
        Lab { l: 116.0 * fy - 16.0, a: 500.0 * (fx - fy), b: 200.0 * (fy - fz) }
    }

    /// Back to sRGB, clamped into gamut.
    pub fn to_rgb(self) -> [u8; 3] {
        let fy = (self.l + 16.0) / 116.0;
        let (fx, fz) = (fy + self.a / 500.0, fy - self.b / 200.0);
        let (x, y, z) = (f_inv(fx) * WHITE[0], f_inv(fy) * WHITE[1], f_inv(fz) * WHITE[2]);
        let r = 3.240_454_2 * x - 1.537_138_5 * y - 0.498_531_4 * z;
        let g = -0.969_266 * x + 1.876_010_8 * y + 0.041_556 * z;
        let b = 0.055_643_4 * x - 0.204_025_9 * y + 1.057_225_2 * z;
        [r, g, b].map(|c| (linear_to_srgb(c.clamp(0.0, 1.0)) * 255.0).round() as u8)
    }

    pub fn chroma(self) -> f32 {
        self.a.hypot(self.b)
    }

    /// Hue angle in degrees, 0..360, measured in the a*b* plane.
    pub fn hue(self) -> f32 {
        self.b.atan2(self.a).to_degrees().rem_euclid(360.0)
    }

    pub fn dist2(self, o: Lab) -> f32 {
        (self.l - o.l).powi(2) + (self.a - o.a).powi(2) + (self.b - o.b).powi(2)
    }

    pub fn hex(self) -> String {
        let [r, g, b] = self.to_rgb();
        format!("#{r:02x}{g:02x}{b:02x}")
    }

    /// Below this chroma a colour reads as grey rather than a hue.
    pub const GREY_CHROMA: f32 = 12.0;

    /// A plain name; see [`Lab::family`].
    pub fn name(self) -> &'static str {
        self.family().name()
    }

    /// The named family a colour belongs to. Thresholds: chroma below [`Lab::GREY_CHROMA`] is
    /// achromatic (black below L* 20, white above L* 88, grey between); otherwise the Lab hue
    /// angle decides (pure sRGB red sits near 40°, blue near 306°, pink near 350°-10°):
    /// pink 340°-25° (magenta when darker than L* 40), red 25°-50°, orange 50°-80°,
    /// yellow 80°-110° (both brown when darker than L* 45), green 110°-185°, cyan 185°-235°,
    /// blue 235°-305°, purple 305°-340°.
    pub fn family(self) -> Family {
        if self.chroma() < Self::GREY_CHROMA {
            return match self.l {
                l if l < 20.0 => Family::Black,
                l if l > 88.0 => Family::White,
                _ => Family::Grey,
            };
        }
        match self.hue() {
            h if !(25.0..340.0).contains(&h) => {
                if self.l < 40.0 {
                    Family::Magenta
                } else {
                    Family::Pink
                }
            }
            h if h < 50.0 => Family::Red,
            h if h < 110.0 && self.l < 45.0 => Family::Brown,
            h if h < 80.0 => Family::Orange,
            h if h < 110.0 => Family::Yellow,
            h if h < 185.0 => Family::Green,
            h if h < 235.0 => Family::Cyan,
            h if h < 305.0 => Family::Blue,
            _ => Family::Purple,
        }
    }

    /// Warm hues (pink through yellow) against cool ones (cyan through purple).
    pub fn temperature(self) -> Option<Temperature> {
        if self.chroma() < Self::GREY_CHROMA {
            return None;
        }
        let h = self.hue();
        if !(110.0..340.0).contains(&h) {
            Some(Temperature::Warm)
        } else if h >= 185.0 {
            Some(Temperature::Cool)
        } else {
            None
        }
    }

    pub fn mix(self, o: Lab, w: f32) -> Lab {
        Lab { l: self.l + (o.l - self.l) * w, a: self.a + (o.a - self.a) * w, b: self.b + (o.b - self.b) * w }
    }
}

/// Named colour families, in hue order then the achromatic ones (the order of JSON maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Red,
    Orange,
    Yellow,
    Brown,
    Green,
    Cyan,
    Blue,
    Purple,
    Magenta,
    Pink,
    Black,
    Grey,
    White,
}

impl Family {
    pub const ALL: [Family; 13] = [
        Family::Red,
        Family::Orange,
        Family::Yellow,
        Family::Brown,
        Family::Green,
        Family::Cyan,
        Family::Blue,
        Family::Purple,
        Family::Magenta,
        Family::Pink,
        Family::Black,
        Family::Grey,
        Family::White,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Red => "red",
            Family::Orange => "orange",
            Family::Yellow => "yellow",
            Family::Brown => "brown",
            Family::Green => "green",
            Family::Cyan => "cyan",
            Family::Blue => "blue",
            Family::Purple => "purple",
            Family::Magenta => "magenta",
            Family::Pink => "pink",
            Family::Black => "black",
            Family::Grey => "grey",
            Family::White => "white",
        }
    }

    /// A typical member, for legends and swatches.
    pub fn hex(self) -> &'static str {
        match self {
            Family::Red => "#e0302a",
            Family::Orange => "#f28c28",
            Family::Yellow => "#f2d43a",
            Family::Brown => "#7a5a32",
            Family::Green => "#3aa845",
            Family::Cyan => "#2ab7c4",
            Family::Blue => "#3c6ee6",
            Family::Purple => "#7d3fa8",
            Family::Magenta => "#8c1f5e",
            Family::Pink => "#f096b4",
            Family::Black => "#141414",
            Family::Grey => "#8a8a8a",
            Family::White => "#f5f5f5",
        }
    }
}

/// What a model pulled between two colours tends to paint: their Lab average, named. Opposite
/// hues cancel in a*b*, so a mix that keeps little of its parents' chroma reads as grey even
/// before it is strictly achromatic.
pub fn blend(x: Lab, y: Lab, w: f32) -> (Lab, &'static str) {
    let m = x.mix(y, w);
    let parent_chroma = x.chroma() * (1.0 - w) + y.chroma() * w;
    let name = if m.chroma() < Lab::GREY_CHROMA.max(0.35 * parent_chroma) { "grey" } else { m.name() };
    (m, name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Temperature {
    Warm,
    Cool,
}

/// HSV hue (degrees), saturation and value of an sRGB pixel.
pub fn hsv(rgb: [u8; 3]) -> (f32, f32, f32) {
    let [r, g, b] = rgb.map(|c| f32::from(c) / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let s = if max > 0.0 { d / max } else { 0.0 };
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    (h, s, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_matches_reference_values_and_round_trips() {
        let red = Lab::from_rgb([255, 0, 0]);
        assert!((red.l - 53.24).abs() < 0.1 && (red.a - 80.09).abs() < 0.2 && (red.b - 67.20).abs() < 0.2, "{red:?}");
        let white = Lab::from_rgb([255, 255, 255]);
        assert!((white.l - 100.0).abs() < 0.05 && white.chroma() < 0.05, "{white:?}");
        for rgb in [[12, 200, 99], [255, 128, 0], [90, 60, 160], [0, 0, 0]] {
            let back = Lab::from_rgb(rgb).to_rgb();
            assert!(rgb.iter().zip(back).all(|(a, b)| a.abs_diff(b) <= 1), "{rgb:?} → {back:?}");
        }
    }

    #[test]
    fn names_read_like_people_name_colours() {
        for (rgb, name) in [
            ([255, 0, 0], "red"),
            ([255, 150, 40], "orange"),
            ([250, 230, 60], "yellow"),
            ([40, 160, 60], "green"),
            ([60, 110, 230], "blue"),
            ([120, 50, 160], "purple"),
            ([240, 150, 180], "pink"),
            ([128, 128, 130], "grey"),
            ([5, 5, 8], "black"),
            ([110, 98, 62], "brown"),
            ([250, 250, 250], "white"),
        ] {
            assert_eq!(Lab::from_rgb(rgb).name(), name, "{rgb:?}");
        }
        assert_eq!(Lab::from_rgb([255, 150, 40]).temperature(), Some(Temperature::Warm));
        for f in Family::ALL {
            let [r, g, b] = [1, 3, 5].map(|i| u8::from_str_radix(&f.hex()[i..i + 2], 16).unwrap());
            assert_eq!(Lab::from_rgb([r, g, b]).family(), f, "{f:?}'s swatch {} is not one of it", f.hex());
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{}\"", f.name()));
        }
        assert_eq!(Lab::from_rgb([60, 110, 230]).temperature(), Some(Temperature::Cool));
    }

    #[test]
    fn orange_and_purple_mix_to_pink_and_warm_with_cool_to_grey() {
        let orange = Lab::from_rgb([245, 140, 40]);
        let purple = Lab::from_rgb([110, 50, 150]);
        assert_eq!(blend(orange, purple, 0.5).1, "pink");
        let warm = Lab::from_rgb([230, 150, 80]);
        let cool = Lab::from_rgb([80, 140, 200]);
        assert_eq!(blend(warm, cool, 0.5).1, "grey");
        assert_eq!(blend(orange, Lab::from_rgb([250, 120, 30]), 0.5).1, "orange");
    }

    #[test]
    fn hsv_hues() {
        assert_eq!(hsv([255, 0, 0]).0, 0.0);
        assert!((hsv([0, 0, 255]).0 - 240.0).abs() < 1e-3);
        assert_eq!(hsv([10, 10, 10]).1, 0.0);
    }
}
