//! PNGs that carry their own provenance: every generation setting as tEXt chunks.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("{}: {detail}", .path.display())]
    Write { path: std::path::PathBuf, detail: String },
    #[error("image data has {got} bytes, expected {want} for {width}x{height} RGB")]
    Size { got: usize, want: usize, width: u32, height: u32 },
}

/// Writes 8-bit RGB `pixels` (row-major) with `text` as tEXt key/value chunks.
pub fn write_png(path: &Path, width: u32, height: u32, pixels: &[u8], text: &[(String, String)]) -> Result<(), PngError> {
    let want = (width * height * 3) as usize;
    if pixels.len() != want {
        return Err(PngError::Size { got: pixels.len(), want, width, height });
    }
    let err = |e: &dyn std::fmt::Display| PngError::Write { path: path.to_path_buf(), detail: e.to_string() };
    let file = std::fs::File::create(path).map_err(|e| err(&e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text {
        // tEXt is Latin-1 only; settings with other characters go in iTXt (UTF-8).
        if v.is_ascii() && k.is_ascii() {
            enc.add_text_chunk(k.clone(), v.clone()).map_err(|e| err(&e))?;
        } else {
            enc.add_itxt_chunk(k.clone(), v.clone()).map_err(|e| err(&e))?;
        }
    }
    let mut w = enc.write_header().map_err(|e| err(&e))?;
    w.write_image_data(pixels).map_err(|e| err(&e))?;
    w.finish().map_err(|e| err(&e))
}

/// Reads back the text chunks of a PNG (for tests and `compare`).
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>, PngError> {
    let err = |e: &dyn std::fmt::Display| PngError::Write { path: path.to_path_buf(), detail: e.to_string() };
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().map_err(|e| err(&e))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info.uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| err(&e))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.png");
        let text = vec![("prompt".to_string(), "a photo of SKY".to_string()), ("negative".to_string(), "flou, «gris»".to_string())];
        write_png(&p, 2, 1, &[255, 0, 0, 0, 255, 0], &text).unwrap();
        let mut back = read_png_text(&p).unwrap();
        back.sort();
        let mut want = text.clone();
        want.sort();
        assert_eq!(back, want);
        assert!(write_png(&p, 2, 2, &[0; 3], &[]).is_err());
    }
}
