//! HEIC/HEIF and AVIF photos (iPhones and many Android phones save them) through libheif, the
//! reference implementation, via the `libheif-rs` crate (cargo feature `heif`, or
//! `heif-embedded` to build libheif from source where the system's is older than 1.17).
//! Decoded like pillow-heif does for PIL: the primary image, with the file's geometric
//! transformations (`irot`, `imir`, `clap`, the HEIF form of EXIF orientation) applied by
//! libheif, to 8-bit interleaved RGB; alpha and the colour profile are dropped as for JPEG.

use super::images::{problem, ImageProblem, LoadedImage, ProblemKind, SourceInfo, MAX_PIXELS};
use crate::sniff::FileKind;
use image::{ExtendedColorType, RgbImage};
use libheif_rs::{ColorSpace, HeifContext, HeifErrorCode, LibHeif, RgbChroma};
use std::path::Path;

/// Decode the primary image of a HEIF/AVIF file (`kind` as sniffed) into upright 8-bit RGB.
pub(super) fn decode(path: &Path, bytes: &[u8], kind: FileKind) -> Result<LoadedImage, ImageProblem> {
    let name = kind.name();
    let fail = |e: libheif_rs::HeifError| {
        let pk = match e.code {
            HeifErrorCode::UnsupportedFeature | HeifErrorCode::UnsupportedFileType | HeifErrorCode::DecoderPluginError => ProblemKind::Unsupported,
            HeifErrorCode::MemoryAllocationError => ProblemKind::TooLarge,
            _ if e.message.to_lowercase().contains("end of") || e.message.to_lowercase().contains("truncat") => ProblemKind::Truncated,
            _ => ProblemKind::Unreadable,
        };
        let what = match pk {
            ProblemKind::Unsupported => format!(
                "libheif in this build cannot decode this {name} ({}): convert it to JPEG (`heif-convert photo.{} photo.jpg`)",
                e.message,
                kind.extensions()[0]
            ),
            ProblemKind::Truncated => format!("the {name} data ends early ({}): copy the photo again", e.message),
            _ => format!("corrupt {name} data ({}): re-export the photo", e.message),
        };
        problem(path, pk, what)
    };
    let ctx = HeifContext::read_from_bytes(bytes).map_err(fail)?;
    let handle = ctx.primary_image_handle().map_err(fail)?;
    let (w, h) = (handle.width(), handle.height());
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(problem(
            path,
            ProblemKind::TooLarge,
            format!("{w}×{h} is {:.0} megapixels, above the {} MP limit: downscale it first", pixels as f64 / 1e6, MAX_PIXELS / 1_000_000),
        ));
    }
    if pixels == 0 {
        return Err(problem(path, ProblemKind::Unreadable, format!("the image has no pixels ({w}×{h})")));
    }
    let has_alpha = handle.has_alpha_channel();
    let bits = u16::from(handle.luma_bits_per_pixel());
    let decoded = LibHeif::new().decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), None).map_err(fail)?;
    let plane = decoded
        .planes()
        .interleaved
        .ok_or_else(|| problem(path, ProblemKind::Unreadable, format!("libheif returned no RGB plane for this {name}")))?;
    let (pw, ph) = (plane.width, plane.height);
    let row = pw as usize * 3;
    let mut rgb = Vec::with_capacity(row * ph as usize);
    for y in 0..ph as usize {
        let start = y * plane.stride;
        let line =
            plane.data.get(start..start + row).ok_or_else(|| problem(path, ProblemKind::Unreadable, format!("short {name} plane from libheif")))?;
        rgb.extend_from_slice(line);
    }
    let rgb = RgbImage::from_raw(pw, ph, rgb).expect("rows of width × 3 bytes");
    let mut conversions = vec![format!("{name} decoded by libheif")];
    if bits > 8 {
        conversions.push(format!("{bits}-bit → 8-bit"));
    }
    if has_alpha {
        conversions.push("alpha dropped".to_string());
    }
    let color = match (has_alpha, bits > 8) {
        (false, false) => ExtendedColorType::Rgb8,
        (true, false) => ExtendedColorType::Rgba8,
        (false, true) => ExtendedColorType::Rgb16,
        (true, true) => ExtendedColorType::Rgba16,
    };
    Ok(LoadedImage {
        original_size: rgb.dimensions(),
        rgb,
        alpha: None,
        conversions,
        source: SourceInfo {
            format: kind,
            color,
            cmyk: false,
            bits_per_channel: bits.max(8),
            has_alpha,
            transparent_pixels: false,
            // libheif applies the file's own rotation and mirroring (irot/imir) while decoding.
            exif_orientation: 1,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::dataset::images::load_rgb;
    use std::path::Path;

    /// Real files made by libheif's own encoders (tests/fixtures/field-photos/make.sh): a
    /// 96×64 gradient whose red grows to the right and green downwards.
    #[test]
    fn real_heic_and_avif_photos_decode() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/field-photos");
        for f in ["sky.heic", "sky.avif"] {
            let l = load_rgb(&dir.join(f)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(l.original_size, (96, 64), "{f}");
            let (tl, br) = (l.rgb.get_pixel(2, 2).0, l.rgb.get_pixel(93, 61).0);
            // Source: (40 + x, 90 + y, 200 - y); lossy at q50, so within a few levels.
            for (got, want) in [(tl, [42u8, 92, 198]), (br, [133, 151, 139])] {
                assert!(got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 12), "{f}: {got:?} vs {want:?}");
            }
            assert!(l.conversions[0].ends_with("decoded by libheif"), "{:?}", l.conversions);
        }
    }

    /// A phone's rotation, stored as HEIF's `irot` (make.sh adds one: 90° anti-clockwise), is
    /// applied like EXIF orientation is for JPEG: the loader returns the upright picture.
    #[test]
    fn heif_rotation_is_applied() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/field-photos");
        let l = load_rgb(&dir.join("sky-irot90.heic")).unwrap();
        assert_eq!(l.original_size, (64, 96));
        // The old top-right corner (135, 90, 200) is now top-left; the old bottom-left (40, 153, 137) bottom-right.
        for (got, want) in [(l.rgb.get_pixel(1, 1).0, [135u8, 90, 200]), (l.rgb.get_pixel(62, 94).0, [40, 153, 137])] {
            assert!(got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 12), "{got:?} vs {want:?}");
        }
    }
}
