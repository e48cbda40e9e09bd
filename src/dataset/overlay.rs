//! Text and watermark overlays: near-white or near-black glyphs with thin strokes, of one
//! height, standing in a horizontal row. Snow, sparkles on water and silhouettes make blobs,
//! not rows of thin, equally tall shapes.

use image::{imageops, RgbImage};

/// Analysis width: glyphs of a caption or watermark stay several pixels tall at this size.
const WIDTH: u32 = 1024;
const MIN_GLYPHS: usize = 4;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextLine {
    pub glyphs: usize,
    /// Vertical position of the row, 0 = top, 1 = bottom.
    pub y: f32,
    pub colour: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Glyph {
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
}

impl Glyph {
    fn h(&self) -> usize {
        self.y1 - self.y0 + 1
    }
}

/// The longest row of glyph-like shapes, if one has at least `MIN_GLYPHS`.
pub fn find_text(rgb: &RgbImage) -> Option<TextLine> {
    let small;
    let img = if rgb.width() > WIDTH {
        small = image::DynamicImage::ImageRgb8(rgb.clone())
            .resize_exact(WIDTH, (rgb.height() * WIDTH / rgb.width()).max(1), imageops::FilterType::Triangle)
            .into_rgb8();
        &small
    } else {
        rgb
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut best: Option<TextLine> = None;
    for (colour, pick) in [("white", is_white as fn([u8; 3]) -> bool), ("black", is_black)] {
        let mask: Vec<bool> = img.as_raw().chunks_exact(3).map(|p| pick([p[0], p[1], p[2]])).collect();
        // Glyphs of a colour that fills a third of the picture would not stand out from it.
        if mask.iter().filter(|&&m| m).count() * 3 > mask.len() {
            continue;
        }
        let glyphs = glyph_like(&mask, w, h);
        if let Some((n, y)) = longest_row(&glyphs) {
            if n >= MIN_GLYPHS && best.as_ref().is_none_or(|b| n > b.glyphs) {
                best = Some(TextLine { glyphs: n, y: y as f32 / h as f32, colour });
            }
        }
    }
    best
}

fn is_white([r, g, b]: [u8; 3]) -> bool {
    let (min, max) = (r.min(g).min(b), r.max(g).max(b));
    min >= 225 && max - min <= 30
}

fn is_black([r, g, b]: [u8; 3]) -> bool {
    r <= 30 && g <= 30 && b <= 30
}

/// Connected components (4-neighbour) of `mask` that look like glyphs: 8 to 150 px tall, not
/// much wider than tall, and made of strokes thin against their height.
fn glyph_like(mask: &[bool], w: usize, h: usize) -> Vec<Glyph> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
        let (mut area, mut boundary) = (0usize, 0usize);
        let mut too_big = false;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
            area += 1;
            let mut edge = false;
            for (ok, j) in [(x > 0, i.wrapping_sub(1)), (x + 1 < w, i + 1), (y > 0, i.wrapping_sub(w)), (y + 1 < h, i + w)] {
                if !ok || !mask[j] {
                    edge = true;
                } else if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
            boundary += usize::from(edge);
            too_big |= area > 40_000;
        }
        let g = Glyph { x0, x1, y0, y1 };
        let (gw, gh) = (x1 - x0 + 1, g.h());
        // Stroke width ≈ area / half the boundary length (exact for a bar).
        let stroke = 2.0 * area as f32 / boundary.max(1) as f32;
        if !too_big && (8..=150).contains(&gh) && gw >= 2 && gw <= gh * 2 && stroke <= (0.3 * gh as f32).max(2.5) {
            out.push(g);
        }
    }
    out
}

/// Size of the largest group of glyphs of similar height whose tops and bottoms line up and
/// that follow each other closely from left to right, with the group's centre row.
fn longest_row(glyphs: &[Glyph]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..glyphs.len()).collect();
    order.sort_by_key(|&i| glyphs[i].x0);
    let mut best: Option<(usize, usize)> = None;
    for (pos, &first) in order.iter().enumerate() {
        let a = glyphs[first];
        let (mut n, mut right) = (1, a.x1);
        for &j in &order[pos + 1..] {
            let b = glyphs[j];
            if b.x0 > right + a.h() * 3 / 2 {
                break;
            }
            let tol = a.h() / 4 + 1;
            if b.h().abs_diff(a.h()) <= tol && b.y0.abs_diff(a.y0) <= tol && b.y1.abs_diff(a.y1) <= tol && b.x0 > right {
                n += 1;
                right = b.x1;
            }
        }
        if best.is_none_or(|(m, _)| n > m) {
            best = Some((n, (a.y0 + a.y1) / 2));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;

    #[test]
    fn finds_white_and_black_text_rows() {
        let mut img = gen::photo(800, 600, 4);
        gen::draw_text(&mut img, "SKYPHOTO 2024", 40, 520, 4, [255, 255, 255]);
        let t = find_text(&img).expect("white text");
        assert!(t.glyphs >= 8 && t.colour == "white" && t.y > 0.85, "{t:?}");
        let mut img = gen::photo(1600, 1200, 5);
        gen::draw_text(&mut img, "COPYRIGHT", 900, 100, 6, [0, 0, 0]);
        let t = find_text(&img).expect("black text");
        assert_eq!(t.colour, "black");
    }

    #[test]
    fn clean_photos_have_no_text() {
        for seed in 0..4 {
            assert_eq!(find_text(&gen::photo(800, 600, seed)), None);
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sky-photos");
        for p in crate::dataset::list_images(&dir).unwrap() {
            let t = find_text(&crate::dataset::images::load_rgb(&p).unwrap().rgb);
            assert_eq!(t, None, "{}", p.display());
        }
    }
}
