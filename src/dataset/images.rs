//! Loading one photo the way diffusers' training scripts see it (PIL `exif_transpose` then
//! `convert("RGB")`): EXIF orientation applied, any colour type reduced to 8-bit RGB, and a
//! refusal instead of a panic or an out-of-memory for corrupt, truncated or enormous files.

use crate::sniff::{sniff, FileKind};
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Decompression-bomb limit: a larger image is refused before its pixels are allocated. Real
/// camera photos stay below 64 megapixels (PIL's own warning starts at ~89 MP).
pub const MAX_PIXELS: u64 = 64_000_000;

#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub rgb: RgbImage,
    /// (width, height) after EXIF orientation, before any resizing.
    pub original_size: (u32, u32),
    /// The alpha channel (after EXIF orientation) when some pixel is not fully opaque: the
    /// photo's own loss mask under train.yaml's `masked_loss`.
    pub alpha: Option<image::GrayImage>,
    /// What was done to reach 8-bit RGB, in words ("CMYK → RGB", "EXIF orientation 6 applied").
    pub conversions: Vec<String>,
    /// The same facts, structured, for `dataset check`.
    pub source: SourceInfo,
}

/// What the file held before conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// The format by content ([`crate::sniff`]).
    pub format: FileKind,
    pub color: ExtendedColorType,
    pub cmyk: bool,
    pub bits_per_channel: u16,
    pub has_alpha: bool,
    /// Some pixel is not fully opaque: PIL's convert("RGB") shows what was hidden under it.
    pub transparent_pixels: bool,
    /// EXIF orientation tag (1 = upright).
    pub exif_orientation: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    Unreadable,
    Truncated,
    Unsupported,
    TooLarge,
    /// A Git LFS pointer stands where the photo should be.
    LfsPointer,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ImageProblem {
    pub path: PathBuf,
    pub kind: ProblemKind,
    pub reason: String,
}

pub(super) fn problem(path: &Path, kind: ProblemKind, reason: impl Into<String>) -> ImageProblem {
    ImageProblem { path: path.to_path_buf(), kind, reason: reason.into() }
}

/// Whether this build decodes photos of `kind` (by content, see [`crate::sniff`]).
pub fn decodes(kind: FileKind) -> bool {
    kind.is_decodable_image() || (cfg!(feature = "heif") && matches!(kind, FileKind::Heic | FileKind::Heif | FileKind::Avif))
}

/// Why a recognised photo format is not decoded, and what to do: phones save HEIC (iPhone) and
/// AVIF, cameras and editors JPEG XL, JPEG 2000 and Photoshop files.
pub fn unsupported_reason(kind: FileKind) -> String {
    match kind {
        FileKind::Heic | FileKind::Heif | FileKind::Avif => format!(
            "{} photo: this hfsky was built without the HEIF/AVIF decoder (cargo feature `heif`); convert it to JPEG (`heif-convert photo.{} photo.jpg` from libheif-examples, \
             or export from Photos/Preview; on an iPhone, Settings > Camera > Formats > Most Compatible takes JPEGs)",
            kind.name(),
            kind.extensions()[0]
        ),
        other => format!("{} files cannot be decoded for training: export it as JPEG or PNG", other.name()),
    }
}

/// Decode `path` into upright 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<LoadedImage, ImageProblem> {
    let bytes = std::fs::read(path).map_err(|e| problem(path, ProblemKind::Unreadable, format!("cannot read the file: {e}")))?;
    decode(path, &bytes)
}

/// `load_rgb` on bytes already in memory; `path` only names the file in problems.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<LoadedImage, ImageProblem> {
    match sniff(&bytes[..bytes.len().min(crate::sniff::HEAD_LEN)]) {
        FileKind::Empty => return Err(problem(path, ProblemKind::Unreadable, "the file is empty (0 bytes): copy the photo again")),
        FileKind::LfsPointer => {
            let e = crate::lfs_pointer::check_bytes(path, bytes).expect_err("sniffed as a pointer");
            return Err(problem(path, ProblemKind::LfsPointer, format!("this is {}", e.what())));
        }
        #[cfg(feature = "heif")]
        k @ (FileKind::Heic | FileKind::Heif | FileKind::Avif) => return super::heif::decode(path, bytes, k),
        k if k.is_other_image() => return Err(problem(path, ProblemKind::Unsupported, unsupported_reason(k))),
        _ => {}
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| problem(path, ProblemKind::Unreadable, e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(problem(
            path,
            ProblemKind::Unsupported,
            "not a JPEG, PNG, WebP, BMP, TIFF or GIF file (unknown contents): convert it to JPEG or PNG",
        ));
    };
    if format == ImageFormat::Jpeg && !jpeg_complete(bytes) {
        return Err(problem(path, ProblemKind::Truncated, "the JPEG data ends early (truncated download or copy): copy the photo again"));
    }
    let mut decoder = reader.into_decoder().map_err(|e| classify(path, format, e))?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(problem(
            path,
            ProblemKind::TooLarge,
            format!(
                "{w}×{h} is {:.0} megapixels, above the {} MP limit (a decompression bomb or a huge scan): downscale it first",
                pixels as f64 / 1e6,
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    if pixels == 0 {
        return Err(problem(path, ProblemKind::Unreadable, format!("the image has no pixels ({w}×{h})")));
    }
    let mut limits = Limits::default();
    // Room for the largest allowed image at 16 bits × 4 channels plus decoder scratch.
    limits.max_alloc = Some(MAX_PIXELS * 8 * 2);
    decoder.set_limits(limits).map_err(|e| classify(path, format, e))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let color = decoder.original_color_type();
    let cmyk =
        matches!(color, ExtendedColorType::Cmyk8 | ExtendedColorType::Cmyk16) || (format == ImageFormat::Jpeg && jpeg_components(bytes) == Some(4));
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(path, format, e))?;

    let has_alpha = img.color().has_alpha();
    let transparent_pixels = has_alpha && !fully_opaque(&img);
    let bits_per_channel = color.bits_per_pixel() / u16::from(color.channel_count().max(1));
    let mut conversions = Vec::new();
    if cmyk {
        conversions.push("CMYK → RGB".to_string());
    }
    if bits_per_channel > 8 {
        conversions.push(format!("{bits_per_channel}-bit → 8-bit"));
    }
    if !img.color().has_color() {
        conversions.push("grayscale → RGB".to_string());
    }
    if transparent_pixels {
        conversions.push("alpha dropped (transparent pixels show their hidden colour)".to_string());
    } else if has_alpha {
        conversions.push("alpha dropped".to_string());
    }
    let exif_orientation = orientation.to_exif();
    if exif_orientation != 1 {
        img.apply_orientation(orientation);
        conversions.push(format!("EXIF orientation {exif_orientation} applied"));
    }
    let rgb = img.to_rgb8();
    let alpha = transparent_pixels.then(|| {
        let la = img.to_luma_alpha8();
        image::GrayImage::from_fn(la.width(), la.height(), |x, y| image::Luma([la.get_pixel(x, y).0[1]]))
    });
    Ok(LoadedImage {
        original_size: rgb.dimensions(),
        rgb,
        alpha,
        conversions,
        source: SourceInfo { format: kind_of(format), color, cmyk, bits_per_channel, has_alpha, transparent_pixels, exif_orientation },
    })
}

fn kind_of(format: ImageFormat) -> FileKind {
    match format {
        ImageFormat::Jpeg => FileKind::Jpeg,
        ImageFormat::Png => FileKind::Png,
        ImageFormat::WebP => FileKind::Webp,
        ImageFormat::Gif => FileKind::Gif,
        ImageFormat::Bmp => FileKind::Bmp,
        ImageFormat::Tiff => FileKind::Tiff,
        _ => FileKind::Unknown,
    }
}

fn classify(path: &Path, format: ImageFormat, e: ImageError) -> ImageProblem {
    let name = format!("{format:?}").to_uppercase();
    match e {
        ImageError::Unsupported(u) => {
            problem(path, ProblemKind::Unsupported, format!("{name} variant hfsky cannot decode ({u}): re-save it as a standard JPEG or PNG"))
        }
        ImageError::Limits(l) => problem(path, ProblemKind::TooLarge, format!("{l}: downscale it first")),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            problem(path, ProblemKind::Truncated, format!("the {name} data ends early (truncated download or copy): copy the photo again"))
        }
        other => {
            let text = other.to_string();
            let lower = text.to_lowercase();
            if lower.contains("eof") || lower.contains("end of file") || lower.contains("truncat") || lower.contains("no more data") {
                problem(path, ProblemKind::Truncated, format!("the {name} data ends early ({text}): copy the photo again"))
            } else {
                problem(path, ProblemKind::Unreadable, format!("corrupt {name} data ({text}): re-export the photo"))
            }
        }
    }
}

fn fully_opaque(img: &DynamicImage) -> bool {
    match img {
        DynamicImage::ImageLumaA8(i) => i.pixels().all(|p| p.0[1] == u8::MAX),
        DynamicImage::ImageRgba8(i) => i.pixels().all(|p| p.0[3] == u8::MAX),
        DynamicImage::ImageLumaA16(i) => i.pixels().all(|p| p.0[1] == u16::MAX),
        DynamicImage::ImageRgba16(i) => i.pixels().all(|p| p.0[3] == u16::MAX),
        DynamicImage::ImageRgba32F(i) => i.pixels().all(|p| p.0[3] >= 1.0),
        _ => true,
    }
}

/// JPEG segments before the image data: (marker, payload) in file order, stopping at SOS.
fn jpeg_segments(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8], usize)> {
    let mut i = 2;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i + 1 < bytes.len() && bytes[i] == 0xFF && bytes[i + 1] == 0xFF {
            i += 1;
        }
        if i + 4 > bytes.len() || bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        if (0xD0..=0xD9).contains(&marker) || marker == 0x01 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let start = i + 4;
        let end = (i + 2 + len).min(bytes.len());
        let seg = (marker, &bytes[start.min(end)..end], i);
        done = marker == 0xDA;
        i += 2 + len;
        Some(seg)
    })
}

/// Number of colour components in the JPEG frame header (4 = CMYK/YCCK, which the decoder
/// silently converts).
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    jpeg_segments(bytes).find(|(m, _, _)| matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF)).and_then(|(_, p, _)| p.get(5).copied())
}

/// A complete JPEG has an end-of-image marker after its scan data. Entropy-coded data cannot
/// contain FF D9, and a thumbnail's FF D9 sits before the first scan, so this is exact even with
/// trailing camera data. (The decoder pads a truncated file with grey instead of failing.)
fn jpeg_complete(bytes: &[u8]) -> bool {
    let Some((_, _, sos)) = jpeg_segments(bytes).find(|(m, _, _)| *m == 0xDA) else {
        return false;
    };
    bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::testgen as gen;

    #[test]
    fn plain_jpeg_loads_without_conversions() {
        let bytes = gen::jpeg(&gen::photo(64, 48, 1));
        let l = decode(Path::new("a.jpg"), &bytes).unwrap();
        assert_eq!(l.original_size, (64, 48));
        assert!(l.conversions.is_empty(), "{:?}", l.conversions);
        assert_eq!(l.source.exif_orientation, 1);
    }

    #[test]
    fn exif_orientation_is_applied_like_exif_transpose() {
        let img = gen::photo(64, 48, 2);
        let bytes = gen::with_exif_orientation(&gen::jpeg(&img), 6);
        let l = decode(Path::new("r.jpg"), &bytes).unwrap();
        assert_eq!(l.original_size, (48, 64));
        assert_eq!(l.source.exif_orientation, 6);
        assert!(l.conversions.contains(&"EXIF orientation 6 applied".to_string()));
        // Orientation 6 = rotate 90° clockwise: the old bottom-left pixel is now top-left.
        let plain = decode(Path::new("p.jpg"), &gen::jpeg(&img)).unwrap().rgb;
        let a = plain.get_pixel(0, 47).0;
        let b = l.rgb.get_pixel(0, 0).0;
        assert!(a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 12), "{a:?} vs {b:?}");
    }

    #[test]
    fn cmyk_jpeg_and_tiff_become_rgb() {
        let l = decode(Path::new("c.jpg"), &gen::cmyk_jpeg(32, 16, [0, 200, 255, 0])).unwrap();
        assert!(l.source.cmyk);
        assert_eq!(l.conversions, ["CMYK → RGB"]);
        assert_eq!(l.original_size, (32, 16));
        let p = l.rgb.get_pixel(20, 10).0;
        assert!(p[0] > 200 && p[1] < 100 && p[2] < 40, "{p:?}");
        let l = decode(Path::new("c.tif"), &gen::cmyk_tiff(20, 10, [0, 200, 255, 0])).unwrap();
        assert!(l.source.cmyk);
        let p = l.rgb.get_pixel(3, 3).0;
        // No cyan, much magenta, full yellow, no black: a strong orange-red.
        assert!(p[0] > 200 && p[1] < 100 && p[2] < 40, "{p:?}");
    }

    #[test]
    fn sixteen_bit_grayscale_and_alpha_are_reduced() {
        let l = decode(Path::new("d.png"), &gen::png16(&gen::photo(16, 16, 3))).unwrap();
        assert_eq!(l.source.bits_per_channel, 16);
        assert_eq!(l.conversions, ["16-bit → 8-bit"]);
        let gray = DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(gen::photo(16, 16, 4)).to_luma8());
        let l = decode(Path::new("g.png"), &gen::encode(&gray, ImageFormat::Png)).unwrap();
        assert_eq!(l.conversions, ["grayscale → RGB"]);
        let l = decode(Path::new("t.png"), &gen::png_alpha(&gen::photo(16, 16, 5), true)).unwrap();
        assert!(l.source.transparent_pixels);
        // The alpha is kept beside the RGB (masked_loss reads it): the left half is transparent.
        let alpha = l.alpha.expect("transparent pixels keep their alpha");
        assert_eq!((alpha.get_pixel(0, 0).0, alpha.get_pixel(15, 15).0), ([0], [255]));
        let l = decode(Path::new("o.png"), &gen::png_alpha(&gen::photo(16, 16, 5), false)).unwrap();
        assert!(l.source.has_alpha && !l.source.transparent_pixels);
        assert!(l.alpha.is_none(), "a fully opaque alpha is no mask");
        assert_eq!(l.conversions, ["alpha dropped"]);
    }

    #[test]
    fn broken_files_are_problems_not_panics() {
        let jpg = gen::jpeg(&gen::photo(64, 48, 6));
        let e = decode(Path::new("t.jpg"), &jpg[..jpg.len() * 2 / 3]).unwrap_err();
        assert_eq!(e.kind, ProblemKind::Truncated, "{e}");
        assert!(e.to_string().starts_with("t.jpg: "), "{e}");
        let png = gen::encode(&DynamicImage::ImageRgb8(gen::photo(64, 48, 6)), ImageFormat::Png);
        let e = decode(Path::new("t.png"), &png[..png.len() / 2]).unwrap_err();
        assert_eq!(e.kind, ProblemKind::Truncated, "{e}");
        for (bytes, kind) in
            [(&b""[..], ProblemKind::Unreadable), (&b"hello, not an image"[..], ProblemKind::Unsupported), (&png[..30], ProblemKind::Truncated)]
        {
            assert_eq!(decode(Path::new("x.png"), bytes).unwrap_err().kind, kind);
        }
        let mut garbage = png.clone();
        for b in &mut garbage[60..200] {
            *b ^= 0x5A;
        }
        assert!(decode(Path::new("g.png"), &garbage).is_err());
        let e = load_rgb(Path::new("/nonexistent/zz.jpg")).unwrap_err();
        assert_eq!(e.kind, ProblemKind::Unreadable);
    }

    #[test]
    fn the_bundled_sky_photos_all_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sky-photos");
        let images = crate::dataset::list_images(&dir).unwrap();
        assert!(images.len() >= 10);
        for p in images {
            let l = load_rgb(&p).unwrap();
            assert!(l.original_size.0 >= 512 && l.original_size.1 >= 512, "{}: {:?}", p.display(), l.original_size);
        }
    }

    #[test]
    fn decompression_bombs_are_refused_before_decoding() {
        let bomb = gen::jpeg_claiming_size(&gen::jpeg(&gen::photo(16, 16, 7)), 60_000, 60_000);
        let e = decode(Path::new("bomb.jpg"), &bomb).unwrap_err();
        assert_eq!(e.kind, ProblemKind::TooLarge, "{e}");
        assert!(e.to_string().contains("3600 megapixels"), "{e}");
    }
}
