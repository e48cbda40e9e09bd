//! `report.html`: a training run on one page, drawn from its output folder alone
//! (training_summary.json, training_log.jsonl, train_config.yaml and the validation images), so
//! it can be written at the end of a run and again from any finished output folder. Loss and
//! `val_loss` curves and the learning rate as the shared inline-SVG plots
//! ([`crate::compare::plots`]), the validation images of every validation step side by side
//! with their prompt, the held-out photos, the dataset's buckets and prompt vocabulary, the
//! settings, time and peak memory. Images are embedded as small JPEG thumbnails (data URIs):
//! the intermediate validation images stay out of the Hub commit, and the page must work when
//! only it is downloaded.

use super::trainer::TrainSummary;
use crate::compare::plots::{line_chart, Series};
use crate::dataset::report::vocabulary::{self, Vocabulary};
use crate::names;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const PAGE: (&str, &str) = ("train_report.html.j2", include_str!("../../templates/train_report.html.j2"));

/// Longest side of an embedded validation image, in pixels.
const THUMB: u32 = 256;

/// Weight of the previous value in the smoothed loss curve (TensorBoard's smoothing, debiased).
const SMOOTHING: f64 = 0.9;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {detail}", .path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{}: cannot write the report: {detail}", .path.display())]
    Write { path: PathBuf, detail: String },
    #[error("report template: {0:#}")]
    Template(#[from] minijinja::Error),
}

/// One line of training_log.jsonl; a line may hold only `val_loss` (step 0, before training).
#[derive(Debug, Clone, Default, Deserialize)]
struct LogLine {
    step: usize,
    loss: Option<f64>,
    lr: Option<f64>,
    val_loss: Option<f64>,
    /// Prodigy's adapted step size (absent with AdamW).
    d: Option<f64>,
}

/// A bucket as training_summary.json lists them (aspect-ratio bucketing).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bucket {
    width: usize,
    height: usize,
    count: usize,
}

#[derive(Debug, Serialize)]
struct Thumb {
    seed: Option<u64>,
    /// A `data:image/jpeg;base64,…` URI.
    src: String,
    /// The full-size file, relative to the output folder.
    file: String,
}

#[derive(Debug, Serialize)]
struct ValidationRow {
    label: String,
    images: Vec<Thumb>,
}

#[derive(Debug, Serialize)]
struct Page {
    summary: TrainSummary,
    duration: String,
    peak_host: Option<String>,
    peak_device: Option<String>,
    loss_plot: String,
    lr_plot: String,
    /// Prodigy's d and the step actually taken, d × lr, when the log has `d`.
    d_plot: Option<String>,
    validation_rows: Vec<ValidationRow>,
    buckets: Vec<Bucket>,
    vocabulary: Vocabulary,
    settings: Vec<(String, String)>,
    hfsky_version: &'static str,
}

fn read(path: &Path) -> Result<Vec<u8>, ReportError> {
    std::fs::read(path).map_err(|e| ReportError::Read { path: path.to_path_buf(), detail: e.to_string() })
}

fn gib(bytes: Option<u64>) -> Option<String> {
    bytes.map(|b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64))
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, _) => format!("{seconds:.1} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, _) => format!("{h} h {m:02} min"),
    }
}

/// `values` smoothed by an exponential moving average, debiased at the start (as TensorBoard
/// draws noisy scalars).
fn smoothed(values: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let (mut avg, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&(x, y)| {
            avg = avg * SMOOTHING + (1.0 - SMOOTHING) * y;
            weight = weight * SMOOTHING + (1.0 - SMOOTHING);
            (x, avg / weight)
        })
        .collect()
}

fn log_lines(text: &str) -> Vec<LogLine> {
    // A line cut by a kill mid-write is skipped, as the resume truncation would drop it.
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The loss, learning-rate and (with Prodigy) step-size plots.
fn plots(log: &[LogLine]) -> (String, String, Option<String>) {
    let loss: Vec<(f64, f64)> = log.iter().filter_map(|l| Some((l.step as f64, l.loss?))).collect();
    let val: Vec<(f64, f64)> = log.iter().filter_map(|l| Some((l.step as f64, l.val_loss?))).collect();
    let lr: Vec<(f64, f64)> = log.iter().filter_map(|l| Some((l.step as f64, l.lr?))).collect();
    let mut series = vec![
        Series { label: "loss", points: loss.clone(), colour: 0, faint: true, markers: false },
        Series { label: "loss (smoothed)", points: smoothed(&loss), colour: 0, faint: false, markers: false },
    ];
    if !val.is_empty() {
        series.push(Series { label: "val_loss (held-out photos)", points: val, colour: 1, faint: false, markers: true });
    }
    let loss_plot = line_chart("Training loss per step, and the held-out photos' val_loss", "optimizer step", "loss", &series);
    let lr_plot = line_chart(
        "Learning rate per step",
        "optimizer step",
        "learning rate",
        &[Series { label: "learning rate", points: lr, colour: 2, faint: false, markers: false }],
    );
    let d: Vec<(f64, f64)> = log.iter().filter_map(|l| Some((l.step as f64, l.d?))).collect();
    let step: Vec<(f64, f64)> = log.iter().filter_map(|l| Some((l.step as f64, l.d? * l.lr?))).collect();
    let d_plot = (!d.is_empty()).then(|| {
        line_chart(
            "Prodigy's adapted step size d, and the step taken (d × learning rate)",
            "optimizer step",
            "step size",
            &[
                Series { label: "d", points: d, colour: 3, faint: false, markers: false },
                Series { label: "d × learning rate", points: step, colour: 2, faint: false, markers: false },
            ],
        )
    });
    (loss_plot, lr_plot, d_plot)
}

/// A small JPEG of the image at `path` as a data URI.
fn thumbnail(path: &Path) -> Result<String, ReportError> {
    let bytes = read(path)?;
    let bad = |detail: String| ReportError::Read { path: path.to_path_buf(), detail };
    let img = image::load_from_memory(&bytes).map_err(|e| bad(e.to_string()))?.to_rgb8();
    let small = crate::imagestats::thumbnail(&img, THUMB);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&small).map_err(|e| bad(e.to_string()))?;
    Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(jpeg)))
}

/// The seed in `validation-seed-<n>.png`.
fn seed_of(file: &str) -> Option<u64> {
    file.rsplit('/').next()?.strip_prefix("validation-seed-")?.strip_suffix(".png")?.parse().ok()
}

/// Every validation step's images (`validation/step-NNNNNN/`, in step order), then the final ones.
fn validation_rows(dir: &Path, summary: &TrainSummary) -> Result<Vec<ValidationRow>, ReportError> {
    let Some(v) = &summary.validation else { return Ok(Vec::new()) };
    let mut rows = Vec::new();
    let steps_dir = dir.join("validation");
    let mut steps: Vec<(usize, PathBuf)> = std::fs::read_dir(&steps_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| Some((p.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()?, p)))
        .collect();
    steps.sort();
    let row = |label: String, files: Vec<String>| -> Result<ValidationRow, ReportError> {
        let mut images: Vec<Thumb> = files
            .into_iter()
            .map(|file| Ok(Thumb { seed: seed_of(&file), src: thumbnail(&dir.join(&file))?, file }))
            .collect::<Result<_, ReportError>>()?;
        images.sort_by_key(|t| t.seed);
        Ok(ValidationRow { label, images })
    };
    for (step, path) in steps.into_iter().filter(|(s, _)| *s < summary.steps) {
        let files: Vec<String> = v
            .seeds
            .iter()
            .map(|s| format!("validation/{}/validation-seed-{s}.png", path.file_name().unwrap_or_default().to_string_lossy()))
            .filter(|f| dir.join(f).is_file())
            .collect();
        if !files.is_empty() {
            rows.push(row(format!("step {step}"), files)?);
        }
    }
    rows.push(row(format!("step {} (final)", summary.steps), v.images.clone())?);
    Ok(rows)
}

/// train_config.yaml's keys as (key, value) rows, in file order.
fn settings(text: &str) -> Vec<(String, String)> {
    let Ok(serde_yaml::Value::Mapping(map)) = serde_yaml::from_str::<serde_yaml::Value>(text) else { return Vec::new() };
    let show = |v: &serde_yaml::Value| match v {
        serde_yaml::Value::Null => "—".to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Sequence(items) => {
            items.iter().map(|i| serde_yaml::to_string(i).unwrap_or_default().trim().to_string()).collect::<Vec<_>>().join(", ")
        }
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    };
    map.iter().map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_else(|| show(k)), show(v))).collect()
}

/// report.html for the finished run in `dir`.
pub fn html(dir: &Path) -> Result<String, ReportError> {
    let summary_path = dir.join(names::TRAINING_SUMMARY);
    let raw: serde_json::Value =
        serde_json::from_slice(&read(&summary_path)?).map_err(|e| ReportError::Read { path: summary_path.clone(), detail: e.to_string() })?;
    let summary: TrainSummary =
        serde_json::from_value(raw.clone()).map_err(|e| ReportError::Read { path: summary_path.clone(), detail: e.to_string() })?;
    // Buckets are listed when the run bucketed its photos; a summary without them has none.
    let buckets: Vec<Bucket> = raw.get("buckets").and_then(|b| serde_json::from_value(b.clone()).ok()).unwrap_or_default();
    let log = match std::fs::read_to_string(dir.join(names::TRAINING_LOG)) {
        Ok(text) => log_lines(&text),
        Err(_) => Vec::new(),
    };
    let (loss_plot, lr_plot, d_plot) = plots(&log);
    let prompts: Vec<Option<String>> = summary.examples.iter().map(|(_, p)| Some(p.clone())).collect();
    let vocabulary = vocabulary::vocabulary(&prompts, &vec![None; prompts.len()]);
    let settings = std::fs::read_to_string(dir.join(names::TRAIN_CONFIG)).map(|t| settings(&t)).unwrap_or_default();
    let page = Page {
        duration: duration(summary.seconds),
        peak_host: gib(summary.peak_host_memory_bytes),
        peak_device: gib(summary.peak_device_memory_bytes),
        loss_plot,
        lr_plot,
        d_plot,
        validation_rows: validation_rows(dir, &summary)?,
        buckets,
        vocabulary,
        settings,
        summary,
        hfsky_version: env!("CARGO_PKG_VERSION"),
    };
    let mut env = crate::html::environment();
    env.add_template(PAGE.0, PAGE.1)?;
    Ok(env.get_template(PAGE.0)?.render(minijinja::context! { r => page })?)
}

/// Writes `dir/report.html` (atomically) for the finished run in `dir`; returns its path.
pub fn write(dir: &Path) -> Result<PathBuf, ReportError> {
    let page = html(dir)?;
    let path = dir.join(names::TRAINING_REPORT);
    crate::atomic::write(&path, page.as_bytes()).map_err(|e| ReportError::Write { path: path.clone(), detail: e.to_string() })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output folder as a run with validation images at step 2 and a held-out photo leaves it.
    fn output_folder(dir: &Path, prompt: &str, buckets: bool) {
        let mut s = crate::card::tests::summary("sd", 64);
        s.steps = 4;
        s.examples = vec![("sky-0.png".into(), "a photo of SKY, orange sunset".into()), ("sky-1.png".into(), "a photo of SKY, purple storm".into())];
        let v = s.validation.as_mut().unwrap();
        v.prompt = prompt.into();
        v.seeds = vec![3];
        v.images = vec!["validation-seed-3.png".into()];
        let mut raw = serde_json::to_value(&s).unwrap();
        if buckets {
            raw["buckets"] = serde_json::json!([{ "width": 64, "height": 48, "count": 2 }, { "width": 48, "height": 64, "count": 1 }]);
        }
        std::fs::write(dir.join(names::TRAINING_SUMMARY), serde_json::to_vec(&raw).unwrap()).unwrap();
        let log = "{\"step\":0,\"val_loss\":0.5}\n{\"step\":1,\"loss\":0.4,\"lr\":0.01,\"seconds\":1}\n{\"step\":2,\"loss\":0.3,\"lr\":0.01,\"seconds\":1,\"val_loss\":0.45}\n{\"step\":3,\"loss\":0.35,\"lr\":0.01,\"seconds\":1}\n{\"step\":4,\"loss\":0.2,\"lr\":0.01,\"seconds\":1,\"val_loss\":0.47}\n{\"step\":5,\"lo";
        std::fs::write(dir.join(names::TRAINING_LOG), log).unwrap();
        std::fs::write(dir.join(names::TRAIN_CONFIG), "base_model: m\nrank: 4\ntarget_modules:\n- to_q\n- to_v\nvalidation_prompt: null\n").unwrap();
        let png = |p: &Path, c: u8| image::RgbImage::from_pixel(64, 64, image::Rgb([c, 90, 200])).save(p).unwrap();
        std::fs::create_dir_all(dir.join("validation/step-000002")).unwrap();
        png(&dir.join("validation/step-000002/validation-seed-3.png"), 10);
        png(&dir.join("validation-seed-3.png"), 240);
    }

    #[test]
    fn the_report_has_the_curves_the_images_and_escapes_user_text() {
        let d = tempfile::tempdir().unwrap();
        output_folder(d.path(), "a photo of <b>SKY</b> & \"friends\"", true);
        let out = write(d.path()).unwrap();
        assert_eq!(out, d.path().join("report.html"));
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(
            !html.contains("<b>SKY</b>") && html.contains("a photo of &lt;b&gt;SKY&lt;&#x2f;b&gt; &amp; &quot;friends&quot;"),
            "the prompt is escaped"
        );
        assert_eq!(html.matches("<svg ").count(), 2, "loss and learning-rate plots; no d without Prodigy");
        assert!(!html.contains("Prodigy's adapted step size"));
        assert!(html.contains("val_loss (held-out photos)") && html.contains(">loss (smoothed)</text>"), "both curves and their legend");
        // Each validation step's image and the final one, embedded, labelled by step.
        assert_eq!(html.matches("<img src=\"data:image").count(), 2, "{html}");
        let (step2, fin) = (html.find(">step 2<").expect("step 2 row"), html.find(">step 4 (final)<").expect("final row"));
        assert!(step2 < fin);
        assert!(html.contains("64 × 48") && html.contains("48 × 64"), "buckets listed");
        assert!(html.contains(">sky<") && html.contains("purple"), "prompt vocabulary");
        assert!(html.contains(">target_modules<") && html.contains("to_q, to_v"), "settings");
        // A summary without buckets (a run before bucketing) still renders, without the table.
        let d = tempfile::tempdir().unwrap();
        output_folder(d.path(), "sky", false);
        let page = super::html(d.path()).unwrap();
        assert!(!page.contains("id=\"buckets\""));
    }

    #[test]
    fn a_prodigy_run_plots_d_and_the_step_taken() {
        let d = tempfile::tempdir().unwrap();
        output_folder(d.path(), "sky", false);
        let log = "{\"step\":1,\"loss\":0.4,\"lr\":0.5,\"d\":1e-6,\"seconds\":1}\n{\"step\":2,\"loss\":0.3,\"lr\":0.5,\"d\":4e-4,\"seconds\":1}\n";
        std::fs::write(d.path().join(names::TRAINING_LOG), log).unwrap();
        let page = super::html(d.path()).unwrap();
        assert_eq!(page.matches("<svg ").count(), 3, "loss, learning rate and d");
        assert!(page.contains("adapted step size d, and the step taken"), "the chart's title");
        assert!(page.contains(">d × learning rate</text>"), "both series in the legend");
        let (_, _, plot) = plots(&log_lines(log));
        let plot = plot.unwrap();
        // The y axis spans the step taken (up to 2e-4 = 4e-4 × 0.5) and d (up to 4e-4).
        assert!(plot.contains("4.0e-4") || plot.contains("4e-4"), "{plot}");
    }

    #[test]
    fn a_missing_summary_is_named() {
        let d = tempfile::tempdir().unwrap();
        let e = write(d.path()).unwrap_err().to_string();
        assert!(e.contains("training_summary.json"), "{e}");
    }

    #[test]
    fn smoothing_is_debiased_and_durations_read_well() {
        let s = smoothed(&[(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]);
        assert!(s.iter().all(|p| (p.1 - 2.0).abs() < 1e-12), "{s:?}");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(125.0), "2 min 05 s");
        assert_eq!(duration(7260.0), "2 h 01 min");
    }
}
