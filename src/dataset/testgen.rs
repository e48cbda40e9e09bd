//! Flawed and clean test photos, made in code (EXIF rotations, CMYK JPEG/TIFF, 16-bit and alpha
//! PNGs, lying headers, over-saturated and captioned images). Shared by the dataset unit tests
//! and the integration tests, so both exercise the same files; compiled only for tests (the
//! `test-support` feature, which the test build turns on through a dev-dependency on this crate).

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use std::io::Cursor;

pub use crate::dataset::synth::sky as photo;

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92).encode_image(img).unwrap();
    out
}

pub fn png(img: &RgbImage) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png)
}

pub fn png16(img: &RgbImage) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb16(DynamicImage::ImageRgb8(img.clone()).to_rgb16()), ImageFormat::Png)
}

/// An RGBA PNG; with `transparent`, the left half is fully transparent (over black pixels).
pub fn png_alpha(img: &RgbImage, transparent: bool) -> Vec<u8> {
    let mut rgba = DynamicImage::ImageRgb8(img.clone()).to_rgba8();
    if transparent {
        let w = rgba.width();
        for (x, _, p) in rgba.enumerate_pixels_mut() {
            if x < w / 2 {
                p.0 = [0, 0, 0, 0];
            }
        }
    }
    encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png)
}

/// Insert an EXIF APP1 segment carrying only the orientation tag after the JPEG's SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one IFD entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Rewrite the frame header's size: a small file that claims to be enormous.
pub fn jpeg_claiming_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let mut i = 2;
    while i + 4 < out.len() {
        let marker = out[i + 1];
        let len = u16::from_be_bytes([out[i + 2], out[i + 3]]) as usize;
        if (0xC0..=0xC3).contains(&marker) {
            out[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            out[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
            return out;
        }
        i += 2 + len;
    }
    panic!("no frame header");
}

/// A baseline Adobe CMYK JPEG of one flat colour (ink amounts 0..255), written by hand because
/// no encoder we depend on writes CMYK. Adobe files store inverted samples.
pub fn cmyk_jpeg(w: u16, h: u16, ink: [u8; 4]) -> Vec<u8> {
    // Quantisation 1: a flat block's DC coefficient is 8 × (sample − 128), all AC are zero.
    let dc: Vec<i32> = ink.iter().map(|&v| 8 * (i32::from(255 - v) - 128)).collect();
    let category = |v: i32| 32 - v.unsigned_abs().leading_zeros();
    let mut symbols: Vec<u8> = dc.iter().map(|&v| category(v) as u8).chain([0]).collect();
    symbols.sort_unstable();
    symbols.dedup();
    let seg = |out: &mut Vec<u8>, marker: u8, body: &[u8]| {
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(body);
    };
    let mut out = vec![0xFF, 0xD8];
    seg(&mut out, 0xEE, b"Adobe\0\x64\0\0\0\0\0");
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&[1; 64]);
    seg(&mut out, 0xDB, &dqt);
    let mut sof = vec![8];
    sof.extend_from_slice(&h.to_be_bytes());
    sof.extend_from_slice(&w.to_be_bytes());
    sof.push(4);
    for id in 1..=4 {
        sof.extend_from_slice(&[id, 0x11, 0]);
    }
    seg(&mut out, 0xC0, &sof);
    // DC table: every symbol a 3-bit code (000, 001, ...); AC table: only EOB, code "0".
    let mut dht = vec![0x00, 0, 0, symbols.len() as u8];
    dht.extend_from_slice(&[0; 13]);
    dht.extend_from_slice(&symbols);
    seg(&mut out, 0xC4, &dht);
    let mut dht = vec![0x10, 1];
    dht.extend_from_slice(&[0; 15]);
    dht.push(0);
    seg(&mut out, 0xC4, &dht);
    seg(&mut out, 0xDA, &[4, 1, 0, 2, 0, 3, 0, 4, 0, 0, 63, 0]);

    let mut bits: Vec<bool> = Vec::new();
    let put = |v: u32, n: u32, bits: &mut Vec<bool>| (0..n).rev().for_each(|i| bits.push(v >> i & 1 == 1));
    let blocks = u32::from(w).div_ceil(8) * u32::from(h).div_ceil(8);
    for b in 0..blocks {
        for &d in &dc {
            let diff = if b == 0 { d } else { 0 };
            let cat = category(diff);
            let code = symbols.iter().position(|&s| u32::from(s) == cat).unwrap() as u32;
            put(code, 3, &mut bits);
            let extra = if diff < 0 { (diff - 1) as u32 & ((1 << cat) - 1) } else { diff as u32 };
            put(extra, cat, &mut bits);
            put(0, 1, &mut bits); // EOB
        }
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    for byte in bits.chunks(8) {
        let v = byte.iter().fold(0u8, |a, &b| a << 1 | u8::from(b));
        out.push(v);
        if v == 0xFF {
            out.push(0);
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// An uncompressed CMYK TIFF of one flat colour (ink amounts 0..255).
pub fn cmyk_tiff(w: u32, h: u32, ink: [u8; 4]) -> Vec<u8> {
    let pixels: Vec<u8> = (0..w * h).flat_map(|_| ink).collect();
    let entries: [(u16, u16, u32, u32); 9] = [
        (256, 4, 1, w),                   // ImageWidth
        (257, 4, 1, h),                   // ImageLength
        (258, 3, 1, 8),                   // BitsPerSample (8 for each, one value suffices)
        (259, 3, 1, 1),                   // no compression
        (262, 3, 1, 5),                   // Photometric: separated (CMYK)
        (273, 4, 1, 0),                   // StripOffsets, patched below
        (277, 3, 1, 4),                   // SamplesPerPixel
        (278, 4, 1, h),                   // RowsPerStrip
        (279, 4, 1, pixels.len() as u32), // StripByteCounts
    ];
    let ifd_len = 2 + entries.len() * 12 + 4;
    let data_at = (8 + ifd_len) as u32;
    let mut out = b"II*\0\x08\0\0\0".to_vec();
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, count, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&typ.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        let value = if tag == 273 { data_at } else { value };
        if typ == 3 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&pixels);
    out
}

/// A heavy "vivid" filter: saturation pushed far past the file's range, plus contrast.
pub fn oversaturate(img: &RgbImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y).0.map(f32::from);
        let mean = (p[0] + p[1] + p[2]) / 3.0;
        Rgb(p.map(|c| (mean + (c - mean) * 3.5 - 128.0) * 1.3 + 128.0).map(|c| c.clamp(0.0, 255.0) as u8))
    })
}

/// 5×7 bitmap glyphs for the overlay text tests (a watermark's letters, digits and ©).
const FONT: &[(char, [&str; 7])] = &[
    ('A', [" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"]),
    ('C', [" ####", "#    ", "#    ", "#    ", "#    ", "#    ", " ####"]),
    ('G', [" ####", "#    ", "#    ", "#  ##", "#   #", "#   #", " ####"]),
    ('H', ["#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"]),
    ('I', ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "#####"]),
    ('K', ["#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"]),
    ('O', [" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "]),
    ('P', ["#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "]),
    ('R', ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"]),
    ('S', [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "]),
    ('T', ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "]),
    ('Y', ["#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "]),
    ('0', [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "]),
    ('2', [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"]),
    ('4', ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "]),
    ('©', [" ### ", "#   #", "# ###", "# #  ", "# ###", "#   #", " ### "]),
];

/// Draw `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
pub fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, colour: [u8; 3]) {
    for (i, ch) in text.chars().enumerate() {
        let Some((_, rows)) = FONT.iter().find(|(c, _)| *c == ch) else { continue };
        let gx = x + i as u32 * 6 * scale;
        for (ry, row) in rows.iter().enumerate() {
            for (rx, cell) in row.chars().enumerate() {
                if cell != '#' {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (gx + rx as u32 * scale + dx, y + ry as u32 * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, Rgb(colour));
                        }
                    }
                }
            }
        }
    }
}
