//! `dataset caption`: a caption for each photo from a template, filled with the photo's current
//! caption or with one a BLIP model generates. Three steps, so the model is loaded only when a
//! photo needs it: [`CaptionPlan::new`] (which photos, where captions go),
//! [`CaptionPlan::generate`] (BLIP over those photos) and [`CaptionPlan::apply`] (fill, write).

use super::blip::BlipError;
use super::captions::{detect_source, load_captions, save_captions, CaptionError, CaptionSource, Captions};
use super::{list_images, relative_name, DatasetError};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CaptioningError {
    #[error("give --template (e.g. \"a photo of SKY, {{caption}}\") or --model blip to generate captions")]
    NoTemplate,
    #[error("--template {0:?} has no {{caption}}: that is where the generated caption goes")]
    NoPlaceholder(String),
    #[error("--to instance: captions can only be written to sidecar or metadata")]
    InstanceTarget,
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Captions(#[from] CaptionError),
}

/// A caption template: `{caption}` is the photo's current (or generated) caption, `{file}` its
/// file name without extension.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionTemplate(String);

impl CaptionTemplate {
    /// The template to use: the one given, else `{caption}` when a model generates captions.
    /// Errors when there is neither, or when a model's captions would have nowhere to go.
    pub fn new(template: Option<&str>, with_model: bool) -> Result<Self, CaptioningError> {
        let t = match (template, with_model) {
            (Some(t), _) => t.to_string(),
            (None, true) => "{caption}".to_string(),
            (None, false) => return Err(CaptioningError::NoTemplate),
        };
        if with_model && !t.contains("{caption}") {
            return Err(CaptioningError::NoPlaceholder(t));
        }
        Ok(CaptionTemplate(t))
    }

    fn needs_caption(&self) -> bool {
        self.0.contains("{caption}")
    }

    fn fill(&self, caption: &str, image: &Path) -> String {
        let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.0.replace("{caption}", caption).replace("{file}", &stem).trim().to_string()
    }
}

/// Where captions are written: `to`, else what the folder uses (sidecars when it has none).
pub fn write_target(dir: &Path, images: &[PathBuf], to: Option<CaptionSource>) -> Result<CaptionSource, CaptioningError> {
    match to.unwrap_or_else(|| detect_source(dir, images)) {
        CaptionSource::Instance if to.is_some() => Err(CaptioningError::InstanceTarget),
        CaptionSource::Instance => Ok(CaptionSource::Sidecar),
        t => Ok(t),
    }
}

/// A photo captioning skipped, with the loader's reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unreadable {
    pub file: String,
    pub reason: String,
}

/// A caption written (or, in a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileCaption {
    pub file: String,
    pub caption: String,
}

/// Captions a model generated for the photos of a plan (by image index).
#[derive(Debug, Default)]
pub struct Generated {
    captions: Vec<Option<String>>,
    unreadable: Vec<Unreadable>,
}

/// What `dataset caption` did; its `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionOutcome {
    /// Captions written: 0 in a dry run.
    pub written: usize,
    pub dry_run: bool,
    pub target: CaptionSource,
    /// Every caption written (or that would be), in image order.
    pub captions: Vec<FileCaption>,
    /// Photos with no caption to put in `{caption}` (and no model to generate one).
    pub skipped_no_caption: Vec<String>,
    /// Photos whose existing caption was kept (not `overwrite`).
    pub kept_existing: usize,
    /// Photos the model could not read.
    pub unreadable: Vec<Unreadable>,
    /// Where the captions were read from before this run, and how many photos had none.
    pub captions_from: Captions,
}

/// The photos of a folder, their current captions, and which of them get a new one.
#[derive(Debug)]
pub struct CaptionPlan {
    dir: PathBuf,
    images: Vec<PathBuf>,
    current: Captions,
    target: CaptionSource,
    /// The metadata column captions are read from and written to (`caption_column`).
    column: Option<String>,
    todo: Vec<usize>,
}

impl CaptionPlan {
    /// Every photo in `dir`, to be written to `to` (see [`write_target`]); photos that have a
    /// non-empty caption are left alone unless `overwrite`. `column`: the metadata column
    /// (`caption_column`; default the first of text, caption, prompt).
    pub fn new(dir: &Path, to: Option<CaptionSource>, overwrite: bool, column: Option<&str>) -> Result<Self, CaptioningError> {
        let images = list_images(dir)?;
        let target = write_target(dir, &images, to)?;
        let current = load_captions(dir, &images, detect_source(dir, &images), column)?;
        let has = |i: usize| current.captions[i].as_deref().is_some_and(|c| !c.is_empty());
        let todo = (0..images.len()).filter(|&i| overwrite || !has(i)).collect();
        Ok(CaptionPlan { dir: dir.to_path_buf(), images, current, target, column: column.map(String::from), todo })
    }

    /// Photos that get a caption (so a model is only loaded when this is not 0).
    pub fn pending(&self) -> usize {
        self.todo.len()
    }

    /// Generates a caption for each pending photo with `model` (BLIP's `caption`), calling
    /// `on_image(done, name)` before each photo (`done` of [`pending`](Self::pending) finished);
    /// unreadable photos are listed, not fatal.
    pub fn generate(
        &self,
        mut model: impl FnMut(&image::RgbImage) -> Result<String, BlipError>,
        mut on_image: impl FnMut(usize, &str),
    ) -> Result<Generated, BlipError> {
        let mut out = Generated { captions: vec![None; self.images.len()], unreadable: Vec::new() };
        for (done, &i) in self.todo.iter().enumerate() {
            let name = relative_name(&self.dir, &self.images[i]);
            on_image(done, &name);
            match super::images::load_rgb(&self.images[i]) {
                Ok(img) => out.captions[i] = Some(model(&img.rgb)?),
                Err(problem) => out.unreadable.push(Unreadable { file: name, reason: problem.reason }),
            }
        }
        Ok(out)
    }

    /// Fills `template` for each pending photo (with the generated caption when `generated` is
    /// given, else its current one) and writes the captions, unless `dry_run`.
    pub fn apply(self, template: &CaptionTemplate, generated: Option<Generated>, dry_run: bool) -> Result<CaptionOutcome, CaptioningError> {
        let with_model = generated.is_some();
        let Generated { captions: generated, unreadable } = generated.unwrap_or_default();
        let mut new = vec![None; self.images.len()];
        let mut skipped = Vec::new();
        for &i in &self.todo {
            let fill = if with_model { generated[i].as_deref() } else { self.current.captions[i].as_deref().filter(|c| !c.is_empty()) };
            match fill.or((!template.needs_caption()).then_some("")) {
                Some(fill) => new[i] = Some(template.fill(fill, &self.images[i])),
                // A photo the model could not read is listed as unreadable instead.
                None if !with_model => skipped.push(relative_name(&self.dir, &self.images[i])),
                None => {}
            }
        }
        let written = if dry_run { 0 } else { save_captions(&self.dir, &self.images, &new, self.target, self.column.as_deref())? };
        let captions =
            self.images.iter().zip(new).filter_map(|(p, c)| c.map(|caption| FileCaption { file: relative_name(&self.dir, p), caption })).collect();
        Ok(CaptionOutcome {
            written,
            dry_run,
            target: self.target,
            captions,
            skipped_no_caption: skipped,
            kept_existing: self.images.len() - self.todo.len(),
            unreadable,
            captions_from: self.current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photos(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            image::RgbImage::from_pixel(16, 16, image::Rgb([200, 120, 40])).save(d.path().join(n)).unwrap();
        }
        d
    }

    #[test]
    fn a_template_needs_a_caption_slot_when_a_model_fills_it() {
        assert!(matches!(CaptionTemplate::new(None, false), Err(CaptioningError::NoTemplate)));
        assert!(matches!(CaptionTemplate::new(Some("SKY"), true), Err(CaptioningError::NoPlaceholder(t)) if t == "SKY"));
        assert_eq!(CaptionTemplate::new(None, true).unwrap(), CaptionTemplate("{caption}".into()));
        assert_eq!(CaptionTemplate::new(Some("a photo of SKY, {file}"), false).unwrap().fill("x", Path::new("a/dusk.png")), "a photo of SKY, dusk");
    }

    #[test]
    fn fills_from_current_captions_keeps_existing_and_skips_photos_without_one() {
        let d = photos(&["a.png", "b.png", "c.png"]);
        std::fs::write(d.path().join("a.txt"), "orange sunset").unwrap();
        std::fs::write(d.path().join("c.txt"), "").unwrap();
        let t = CaptionTemplate::new(Some("a photo of SKY, {caption}"), false).unwrap();
        // a has a caption (kept), b and c have none to fill {caption} with.
        let plan = CaptionPlan::new(d.path(), None, false, None).unwrap();
        assert_eq!(plan.pending(), 2);
        let o = plan.apply(&t, None, false).unwrap();
        assert_eq!((o.written, o.kept_existing, o.target), (0, 1, CaptionSource::Sidecar));
        assert_eq!(o.skipped_no_caption, ["b.png", "c.png"]);
        // --overwrite: a's caption goes through the template and is written.
        let o = CaptionPlan::new(d.path(), None, true, None).unwrap().apply(&t, None, false).unwrap();
        assert_eq!(o.captions, [FileCaption { file: "a.png".into(), caption: "a photo of SKY, orange sunset".into() }]);
        assert_eq!(o.written, 1);
        assert_eq!(std::fs::read_to_string(d.path().join("a.txt")).unwrap(), "a photo of SKY, orange sunset");
    }

    #[test]
    fn a_dry_run_writes_nothing_and_a_template_without_caption_fills_every_photo() {
        let d = photos(&["a.png", "b.png"]);
        let t = CaptionTemplate::new(Some("a photo of SKY {file}"), false).unwrap();
        let o = CaptionPlan::new(d.path(), None, false, None).unwrap().apply(&t, None, true).unwrap();
        assert_eq!((o.written, o.dry_run, o.captions.len()), (0, true, 2));
        assert_eq!(o.captions[1].caption, "a photo of SKY b");
        assert!(!d.path().join("a.txt").exists());
        let e = CaptionPlan::new(d.path(), Some(CaptionSource::Instance), false, None).unwrap_err();
        assert!(matches!(e, CaptioningError::InstanceTarget), "{e}");
    }

    #[test]
    fn generated_captions_fill_the_template_and_unreadable_photos_are_listed() {
        let d = photos(&["a.png", "b.png"]);
        std::fs::write(d.path().join("broken.png"), b"\x89PNG not really").unwrap();
        let plan = CaptionPlan::new(d.path(), Some(CaptionSource::Metadata), false, None).unwrap();
        let mut seen = Vec::new();
        let generated =
            plan.generate(|img| Ok(format!("a {}x{} sky", img.width(), img.height())), |done, name| seen.push((done, name.to_string()))).unwrap();
        assert_eq!(seen, [(0, "a.png".to_string()), (1, "b.png".into()), (2, "broken.png".into())]);
        let t = CaptionTemplate::new(Some("SKY, {caption}"), true).unwrap();
        let o = plan.apply(&t, Some(generated), false).unwrap();
        assert_eq!(o.captions.iter().map(|c| c.caption.as_str()).collect::<Vec<_>>(), ["SKY, a 16x16 sky", "SKY, a 16x16 sky"]);
        assert_eq!(o.unreadable.len(), 1);
        assert_eq!(o.unreadable[0].file, "broken.png");
        assert!(o.skipped_no_caption.is_empty(), "an unreadable photo is not also 'without caption'");
        assert_eq!((o.written, o.target), (2, CaptionSource::Metadata));
        assert!(d.path().join(crate::dataset::captions::METADATA_FILE).is_file());
    }
}
