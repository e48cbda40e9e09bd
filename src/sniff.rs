//! What a file is, judged by its first bytes (its "magic number"), never by its name: phone
//! exports save JPEG data under `.HEIC`, downloads lose their extension, and a clone made
//! without git-lfs leaves ~130-byte text stubs where weights and photos should be. The
//! signatures follow each format's specification (JPEG SOI, the PNG signature, RIFF/WEBP, GIF87a/89a,
//! BMP "BM", TIFF II*/MM*, the ISO-BMFF `ftyp` box of HEIF/AVIF (ISO/IEC 23008-12), JPEG XL,
//! JPEG 2000, Photoshop, the safetensors header) and the Git LFS pointer spec.

use std::io::Read;
use std::path::Path;

/// How many leading bytes [`sniff_file`] reads: enough for every signature here and for a whole
/// Git LFS pointer (the spec keeps pointers under 1024 bytes).
pub const HEAD_LEN: usize = 1024;

/// A file's type by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    Jpeg,
    Png,
    Webp,
    Gif,
    Bmp,
    Tiff,
    /// HEIF with HEVC images (iPhone photos): brands heic, heix, heim, heis, hevc, hevx.
    Heic,
    /// HEIF with another or unnamed codec (brands mif1, msf1).
    Heif,
    /// AV1 in HEIF (brands avif, avis).
    Avif,
    JpegXl,
    Jpeg2000,
    Psd,
    /// A safetensors file: an 8-byte little-endian header length, then a JSON object.
    Safetensors,
    /// A Git LFS pointer: the text git leaves when the LFS object was never fetched.
    LfsPointer,
    /// No bytes at all.
    Empty,
    /// None of the above.
    Unknown,
}

impl FileKind {
    /// Photo formats the `image` crate decodes for training.
    pub fn is_decodable_image(self) -> bool {
        matches!(self, Self::Jpeg | Self::Png | Self::Webp | Self::Gif | Self::Bmp | Self::Tiff)
    }

    /// Photo formats recognised but not decoded by this build.
    pub fn is_other_image(self) -> bool {
        matches!(self, Self::Heic | Self::Heif | Self::Avif | Self::JpegXl | Self::Jpeg2000 | Self::Psd)
    }

    /// The usual name of the format, for messages ("JPEG", "HEIC").
    pub fn name(self) -> &'static str {
        match self {
            Self::Jpeg => "JPEG",
            Self::Png => "PNG",
            Self::Webp => "WebP",
            Self::Gif => "GIF",
            Self::Bmp => "BMP",
            Self::Tiff => "TIFF",
            Self::Heic => "HEIC",
            Self::Heif => "HEIF",
            Self::Avif => "AVIF",
            Self::JpegXl => "JPEG XL",
            Self::Jpeg2000 => "JPEG 2000",
            Self::Psd => "Photoshop",
            Self::Safetensors => "safetensors",
            Self::LfsPointer => "Git LFS pointer",
            Self::Empty => "empty",
            Self::Unknown => "unknown",
        }
    }

    /// Lowercase file extensions that name this format (first = the usual one).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Jpeg => &["jpg", "jpeg", "jpe", "jfif"],
            Self::Png => &["png"],
            Self::Webp => &["webp"],
            Self::Gif => &["gif"],
            Self::Bmp => &["bmp", "dib"],
            Self::Tiff => &["tif", "tiff"],
            Self::Heic => &["heic", "heif", "hif"],
            Self::Heif => &["heif", "heic", "hif"],
            Self::Avif => &["avif"],
            Self::JpegXl => &["jxl"],
            Self::Jpeg2000 => &["jp2", "j2k", "jpf", "jpx"],
            Self::Psd => &["psd", "psb"],
            Self::Safetensors => &["safetensors"],
            Self::LfsPointer | Self::Empty | Self::Unknown => &[],
        }
    }

    /// A note when `path`'s extension names another format than the content ("IMG_0002.HEIC
    /// holds JPEG data"): worth saying, never a reason to refuse the file. `None` when they agree
    /// or the content has no usual extension.
    pub fn extension_note(self, path: &Path) -> Option<String> {
        let exts = self.extensions();
        if exts.is_empty() {
            return None;
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if exts.contains(&ext.as_str()) {
            return None;
        }
        let named = if ext.is_empty() { "no extension".to_string() } else { format!("a .{ext} name") };
        Some(format!("{} data under {named}: read as {} (renaming it to .{} avoids confusing other tools)", self.name(), self.name(), exts[0]))
    }
}

/// The kind of the bytes `head` (the start of a file; pass at least [`HEAD_LEN`] bytes when the
/// file is that long, so a whole LFS pointer is seen).
pub fn sniff(head: &[u8]) -> FileKind {
    if head.is_empty() {
        return FileKind::Empty;
    }
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return FileKind::Jpeg;
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return FileKind::Png;
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return FileKind::Webp;
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return FileKind::Gif;
    }
    if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") || head.starts_with(b"II+\0") || head.starts_with(b"MM\0+") {
        return FileKind::Tiff;
    }
    // "BM" then the file size and two reserved zero words: "BM" alone starts too much text.
    if head.len() >= 14 && head.starts_with(b"BM") && head[6..10] == [0, 0, 0, 0] {
        return FileKind::Bmp;
    }
    if let Some(kind) = ftyp_kind(head) {
        return kind;
    }
    if head.starts_with(&[0xFF, 0x0A]) || head.starts_with(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return FileKind::JpegXl;
    }
    if head.starts_with(b"\0\0\0\x0CjP  \r\n\x87\n") || head.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
        return FileKind::Jpeg2000;
    }
    if head.starts_with(b"8BPS") {
        return FileKind::Psd;
    }
    if crate::lfs_pointer::parse(head).is_some() {
        return FileKind::LfsPointer;
    }
    if head.len() >= 9 && head[8] == b'{' && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) < 100_000_000 {
        return FileKind::Safetensors;
    }
    FileKind::Unknown
}

/// The ISO-BMFF `ftyp` box: major brand at 8..12, compatible brands after the minor version.
fn ftyp_kind(head: &[u8]) -> Option<FileKind> {
    if head.len() < 16 || &head[4..8] != b"ftyp" {
        return None;
    }
    let size = (u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize).clamp(16, head.len());
    let specific = |b: &[u8]| match b {
        b"avif" | b"avis" => Some(FileKind::Avif),
        b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => Some(FileKind::Heic),
        _ => None,
    };
    let compatible = || head[16..size].chunks_exact(4);
    // The major brand decides; a generic mif1/msf1 file is named by the codec brand it lists.
    specific(&head[8..12])
        .or_else(|| compatible().find_map(specific))
        .or_else(|| std::iter::once(&head[8..12]).chain(compatible()).any(|b| b == b"mif1" || b == b"msf1").then_some(FileKind::Heif))
}

/// The first [`HEAD_LEN`] bytes of `path` (fewer for a shorter file).
pub fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_LEN);
    std::fs::File::open(path)?.take(HEAD_LEN as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// [`sniff`] on the start of `path`.
pub fn sniff_file(path: &Path) -> std::io::Result<FileKind> {
    read_head(path).map(|h| sniff(&h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ftyp(major: &[u8; 4], compat: &[&[u8; 4]]) -> Vec<u8> {
        let size = 16 + 4 * compat.len();
        let mut v = (size as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b"ftyp");
        v.extend_from_slice(major);
        v.extend_from_slice(&[0, 0, 0, 0]);
        for c in compat {
            v.extend_from_slice(*c);
        }
        v.extend_from_slice(&[0, 0, 0, 8, b'm', b'e', b't', b'a']);
        v
    }

    #[test]
    fn magic_bytes_decide_the_kind() {
        let webp = [b"RIFF".as_slice(), &[1, 2, 3, 4], b"WEBPVP8 "].concat();
        let bmp = [b"BM".as_slice(), &[0x36, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0]].concat();
        for (bytes, kind) in [
            (&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10][..], FileKind::Jpeg),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", FileKind::Png),
            (&webp, FileKind::Webp),
            (b"GIF89a\x01\0", FileKind::Gif),
            (&bmp, FileKind::Bmp),
            (b"II*\0\x08\0\0\0", FileKind::Tiff),
            (b"MM\0*\0\0\0\x08", FileKind::Tiff),
            (b"8BPS\0\x01", FileKind::Psd),
            (&[0xFF, 0x0A, 0xFA], FileKind::JpegXl),
            (b"", FileKind::Empty),
            (b"BMW is a car, not a bitmap", FileKind::Unknown),
            (b"hello", FileKind::Unknown),
        ] {
            assert_eq!(sniff(bytes), kind, "{bytes:?}");
        }
        let mut st = 14u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"__metadata__\":{}}");
        assert_eq!(sniff(&st), FileKind::Safetensors);
    }

    #[test]
    fn heif_brands_tell_heic_avif_and_generic_heif_apart() {
        assert_eq!(sniff(&ftyp(b"heic", &[b"mif1", b"heic"])), FileKind::Heic);
        assert_eq!(sniff(&ftyp(b"mif1", &[b"mif1", b"heic"])), FileKind::Heic);
        assert_eq!(sniff(&ftyp(b"avif", &[b"avif", b"mif1", b"miaf"])), FileKind::Avif);
        assert_eq!(sniff(&ftyp(b"mif1", &[b"avif"])), FileKind::Avif);
        assert_eq!(sniff(&ftyp(b"mif1", &[b"miaf"])), FileKind::Heif);
        // An MP4 video is ISO-BMFF too, but not a photo.
        assert_eq!(sniff(&ftyp(b"isom", &[b"iso2", b"mp41"])), FileKind::Unknown);
    }

    #[test]
    fn a_mismatched_extension_is_a_note() {
        assert_eq!(FileKind::Jpeg.extension_note(Path::new("a.JPG")), None);
        assert_eq!(FileKind::Jpeg.extension_note(Path::new("a.jpeg")), None);
        let n = FileKind::Jpeg.extension_note(Path::new("IMG_0002.HEIC")).unwrap();
        assert!(n.starts_with("JPEG data under a .heic name"), "{n}");
        let n = FileKind::Png.extension_note(Path::new("download")).unwrap();
        assert!(n.contains("no extension") && n.contains(".png"), "{n}");
        assert_eq!(FileKind::Heic.extension_note(Path::new("x.HEIF")), None);
        assert_eq!(FileKind::Unknown.extension_note(Path::new("x.jpg")), None);
    }

    #[test]
    fn files_are_sniffed_from_their_start() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.bin");
        std::fs::write(&p, [b"GIF87a".as_slice(), &vec![0u8; 5000]].concat()).unwrap();
        assert_eq!(sniff_file(&p).unwrap(), FileKind::Gif);
        assert_eq!(read_head(&p).unwrap().len(), HEAD_LEN);
        assert!(sniff_file(&t.path().join("gone")).is_err());
    }
}
