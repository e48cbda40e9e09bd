use super::{bad_input, exit, Ctx, Reported};
use anyhow::Context;
use hfsky::dataset::captioning::{write_target, CaptionOutcome, CaptionPlan, CaptionTemplate};
use hfsky::dataset::captions::{self, caption_issues, detect_source, load_captions, save_captions, CaptionSource, Captions};
use hfsky::dataset::check::{check, Severity, Sizes};
use hfsky::dataset::hub_source::{resolve, DatasetSource};
use hfsky::dataset::{blip, fix, list_images, relative_name, report};
use hfsky::model_ref::ModelRef;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Find what would hurt training: unreadable, small, stretched, duplicate, filtered photos, overlays, conversions
    Check(CheckArgs),
    /// Export, import or check all captions at once
    #[command(subcommand)]
    Captions(CaptionsCmd),
    /// Write captions from a template, e.g. "a photo of SKY, {caption}"
    Caption(CaptionArgs),
    /// Colour clusters and what they blend into, composition, caption vocabulary (HTML + JSON)
    Report(ReportArgs),
    /// Generate synthetic sky photos (for the benchmark)
    #[command(hide = true)]
    Synth(SynthArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The photo folder, or a Hub dataset `namespace/name` (imagefolder; downloaded into the HF
    /// cache as `train` does when no such local path exists)
    dir: DatasetSource,
    /// Training resolution (train.yaml's `resolution`): photos are checked against the
    /// aspect-ratio buckets made for it (or the resolution² square with --bucketing false)
    #[arg(long, default_value_t = 512)]
    resolution: u32,
    /// Check against aspect-ratio buckets, as training does by default (train.yaml's `bucketing`)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = true, action = clap::ArgAction::Set)]
    bucketing: bool,
    /// Bucket sides are multiples of this (train.yaml's `bucket_reso_steps`)
    #[arg(long, default_value_t = 64)]
    bucket_reso_steps: usize,
    /// Exit 1 when a finding of this severity or worse exists (error, warning or info)
    #[arg(long, default_value = "error")]
    fail_on: Severity,
    /// Write a cleaned, resized copy here (originals are never touched) plus dropped.tsv
    #[arg(long, value_name = "OUT")]
    fix: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum CaptionsCmd {
    /// Print all captions as TSV (file_name<TAB>text) for editing in one file
    Export(SourceArgs),
    /// Read a TSV (from `export`) back into sidecars or the metadata file (metadata.jsonl/.csv)
    Import(ImportArgs),
    /// List images with missing, empty or duplicated captions (exit 1 if any)
    Check(SourceArgs),
}

#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// The photo folder, or a Hub dataset `namespace/name` (imagefolder; downloaded into the HF
    /// cache as `train` does when no such local path exists)
    dir: DatasetSource,
    /// sidecar, metadata or instance (default: metadata.jsonl/metadata.csv if present, else sidecars)
    #[arg(long)]
    source: Option<CaptionSource>,
    /// The metadata column that holds the captions (default: the first of text, caption, prompt)
    #[arg(long)]
    caption_column: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    dir: PathBuf,
    /// The TSV file ("-" for stdin)
    file: PathBuf,
    /// Write to sidecar .txt files or the metadata file (default: what the folder uses, else sidecar)
    #[arg(long)]
    to: Option<CaptionSource>,
    /// The metadata column that holds the captions (default: the first of text, caption, prompt)
    #[arg(long)]
    caption_column: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct CaptionArgs {
    dir: PathBuf,
    /// Caption template: {caption} is the image's current caption (with --model: the generated
    /// one), {file} its file name without extension. Default with --model: "{caption}"
    #[arg(long)]
    template: Option<String>,
    /// Caption the photos with a BLIP captioning model: `blip` (Salesforce/blip-image-captioning-base),
    /// a local folder, or a Hub repo id `namespace/name[@revision]` (fetched into the Hugging Face cache)
    #[arg(long, value_parser = blip::caption_model)]
    model: Option<ModelRef>,
    /// Replace existing captions too (default: only images without one)
    #[arg(long)]
    overwrite: bool,
    /// Write to sidecar .txt files or the metadata file (default: what the folder uses, else sidecar)
    #[arg(long)]
    to: Option<CaptionSource>,
    /// The metadata column that holds the captions (default: the first of text, caption, prompt)
    #[arg(long)]
    caption_column: Option<String>,
    /// Show what would be written, write nothing
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The photo folder, or a Hub dataset `namespace/name` (imagefolder; downloaded into the HF
    /// cache as `train` does when no such local path exists)
    dir: DatasetSource,
    /// Folder for report.html and report.json (default: print the summary only)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Caption source for the vocabulary section (default: detected)
    #[arg(long)]
    source: Option<CaptionSource>,
    /// The metadata column that holds the captions (default: the first of text, caption, prompt)
    #[arg(long)]
    caption_column: Option<String>,
    /// The training resolution the aspect-ratio buckets are made for (train.yaml's `resolution`)
    #[arg(long, default_value_t = 512)]
    resolution: usize,
    /// Bucket sides are multiples of this (train.yaml's `bucket_reso_steps`)
    #[arg(long, default_value_t = 64)]
    bucket_reso_steps: usize,
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    count: u32,
    #[arg(long, default_value_t = 1024)]
    width: u32,
    #[arg(long, default_value_t = 768)]
    height: u32,
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Check(a) => run_check(ctx, a),
        Cmd::Captions(CaptionsCmd::Export(a)) => export(ctx, a),
        Cmd::Captions(CaptionsCmd::Import(a)) => import(ctx, a),
        Cmd::Captions(CaptionsCmd::Check(a)) => check_captions(ctx, a),
        Cmd::Caption(a) => caption(ctx, a),
        Cmd::Report(a) => run_report(ctx, a),
        Cmd::Synth(a) => synth(ctx, a),
    }
}

fn run_check(ctx: &Ctx, a: CheckArgs) -> anyhow::Result<()> {
    let dir = folder(ctx, &a.dir)?;
    if a.resolution < 64 {
        return Err(bad_input(format!("--resolution {} is too small: use the size you train at (512 for SD 1.5, 1024 for SDXL)", a.resolution)));
    }
    let sizes = if a.bucketing {
        Sizes::buckets(hfsky::train::buckets::BucketSpec::new(a.resolution as usize, None, None, a.bucket_reso_steps, 8).map_err(bad_input)?)
    } else {
        Sizes::Square { resolution: a.resolution }
    };
    let report = check(&dir, &sizes)?;
    let fixed = match &a.fix {
        Some(out) => Some(fix::fix(&dir, &report, out, a.resolution, a.fail_on)?),
        None => None,
    };
    /// The `--json` document of `dataset check`: the report, and with --fix what was written.
    #[derive(serde::Serialize)]
    struct CheckJson<'a> {
        #[serde(flatten)]
        report: &'a hfsky::dataset::check::CheckReport,
        #[serde(skip_serializing_if = "Option::is_none")]
        fix: Option<&'a fix::FixOutcome>,
    }
    ctx.emit_json(&CheckJson { report: &report, fix: fixed.as_ref() });
    for img in &report.images {
        for f in &img.findings {
            ctx.say(&format!("{}: {} {}: {}", img.file, json_name(f.severity), json_name(f.kind), f.message));
        }
    }
    let (e, w, i) = (report.count(Severity::Error), report.count(Severity::Warning), report.count(Severity::Info));
    ctx.say(&format!("{} files: {e} errors, {} warnings, {} info", report.images.len(), w - e, i - w));
    if let Some(f) = &fixed {
        ctx.say(&format!(
            "wrote {} images to {}, dropped {} (listed in {})",
            f.written,
            f.out.display(),
            f.dropped.len(),
            f.out.join(fix::DROPPED_LIST).display()
        ));
        return Ok(());
    }
    let failing = report.count(a.fail_on);
    if failing > 0 {
        return Err(Reported { code: exit::FAILURE, message: format!("{failing} finding(s) at or above {}", json_name(a.fail_on)) }.into());
    }
    Ok(())
}

/// A finding's severity or kind in the words its `--json` document uses (serde's name), so the
/// human lines and the JSON agree.
fn json_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// A caption of one image in a `--json` document (`null`: none).
#[derive(serde::Serialize)]
struct CaptionRow<'a> {
    file: String,
    caption: Option<&'a str>,
}

/// DIR as a local folder: a Hub dataset is downloaded into the HF cache first (its images and
/// metadata, as `train` does); a local path is used as it is.
fn folder(ctx: &Ctx, dir: &DatasetSource) -> anyhow::Result<PathBuf> {
    if let DatasetSource::Local(p) = dir {
        return Ok(p.clone());
    }
    let client = super::client(ctx, false)?;
    let resolved = ctx.runtime().block_on(resolve(dir, None, &client))?;
    Ok(resolved.folder()?.to_path_buf())
}

fn source_or_detect(dir: &Path, images: &[PathBuf], source: Option<CaptionSource>) -> CaptionSource {
    source.unwrap_or_else(|| detect_source(dir, images))
}

fn export(ctx: &Ctx, a: SourceArgs) -> anyhow::Result<()> {
    let dir = folder(ctx, &a.dir)?;
    let images = list_images(&dir)?;
    let source = source_or_detect(&dir, &images, a.source);
    let loaded = load_captions(&dir, &images, source, a.caption_column.as_deref())?;
    let caps = &loaded.captions;
    if ctx.json {
        /// The `--json` document of `dataset captions export`.
        #[derive(serde::Serialize)]
        struct ExportJson<'a> {
            source: CaptionSource,
            captions: Vec<CaptionRow<'a>>,
            captions_from: &'a Captions,
        }
        let captions = images.iter().zip(caps).map(|(p, c)| CaptionRow { file: relative_name(&dir, p), caption: c.as_deref() }).collect();
        ctx.emit_json(&ExportJson { source: loaded.source, captions, captions_from: &loaded });
    } else {
        // TSV goes to stdout even with --quiet: it is the command's output, not chatter; the
        // note on where the captions came from goes to stderr so the TSV stays clean.
        print!("{}", captions::to_tsv(&dir, &images, caps));
        if !ctx.quiet {
            eprintln!("{}", loaded.describe());
        }
    }
    Ok(())
}

fn import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let images = list_images(&a.dir)?;
    let text = if a.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading captions from stdin")?
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| bad_input(format!("cannot read {}: {e}", a.file.display())))?
    };
    let origin = if a.file.as_os_str() == "-" { Path::new("<stdin>") } else { a.file.as_path() };
    let caps = captions::from_tsv(&a.dir, &images, &text, origin).map_err(|e| bad_input(e.to_string()))?;
    let target = write_target(&a.dir, &images, a.to)?;
    let written = save_captions(&a.dir, &images, &caps, target, a.caption_column.as_deref())?;
    let after = load_captions(&a.dir, &images, target, a.caption_column.as_deref())?;
    let untouched: Vec<String> = images.iter().zip(&caps).filter(|(_, c)| c.is_none()).map(|(p, _)| relative_name(&a.dir, p)).collect();
    /// The `--json` document of `dataset captions import`.
    #[derive(serde::Serialize)]
    struct ImportJson<'a> {
        written: usize,
        target: CaptionSource,
        untouched: &'a [String],
        captions_from: &'a Captions,
    }
    ctx.emit_json(&ImportJson { written, target, untouched: &untouched, captions_from: &after });
    ctx.say(&format!("wrote {written} captions ({target}); {} images not in the file kept theirs", untouched.len()));
    ctx.say(&after.describe());
    Ok(())
}

fn check_captions(ctx: &Ctx, a: SourceArgs) -> anyhow::Result<()> {
    let dir = folder(ctx, &a.dir)?;
    let images = list_images(&dir)?;
    let source = source_or_detect(&dir, &images, a.source);
    let loaded = load_captions(&dir, &images, source, a.caption_column.as_deref())?;
    let issues = caption_issues(&dir, &images, &loaded.captions);
    /// The `--json` document of `dataset captions check`.
    #[derive(serde::Serialize)]
    struct CaptionsCheckJson<'a> {
        source: CaptionSource,
        images: usize,
        issues: &'a [captions::CaptionIssue],
        captions_from: &'a Captions,
    }
    ctx.emit_json(&CaptionsCheckJson { source: loaded.source, images: images.len(), issues: &issues, captions_from: &loaded });
    for i in &issues {
        ctx.say(&format!("{}: {}", i.file, i.message));
    }
    ctx.say(&loaded.describe());
    ctx.say(&format!("{} images, captions from {}: {} with problems", images.len(), loaded.source, issues.len()));
    if !issues.is_empty() {
        return Err(Reported { code: exit::FAILURE, message: format!("{} image(s) with missing, empty or duplicated captions", issues.len()) }.into());
    }
    Ok(())
}

fn caption(ctx: &Ctx, a: CaptionArgs) -> anyhow::Result<()> {
    let template = CaptionTemplate::new(a.template.as_deref(), a.model.is_some())?;
    let plan = CaptionPlan::new(&a.dir, a.to, a.overwrite, a.caption_column.as_deref())?;
    let mut model_dir = None;
    let generated = match &a.model {
        Some(model) if plan.pending() > 0 => {
            let client = super::client(ctx, false)?;
            let dir = ctx.runtime().block_on(blip::resolve(model, &client)).map_err(|e| bad_input(e.to_string()))?;
            let device = candle_core::Device::cuda_if_available(0)?;
            let mut model = blip::Blip::load(&dir, &device)?;
            let bar = if ctx.show_progress() { ProgressBar::new(plan.pending() as u64) } else { ProgressBar::hidden() };
            bar.set_style(ProgressStyle::with_template("captioning [{bar:30}] {pos}/{len} {per_sec} {msg}").expect("template").progress_chars("=> "));
            let generated = plan.generate(
                |img| model.caption(img),
                |done, name| {
                    bar.set_position(done as u64);
                    bar.set_message(name.to_string());
                },
            )?;
            bar.finish_and_clear();
            model_dir = Some(dir);
            Some(generated)
        }
        Some(_) => Some(Default::default()),
        None => None,
    };
    let outcome = plan.apply(&template, generated, a.dry_run)?;
    /// The `--json` document of `dataset caption`.
    #[derive(serde::Serialize)]
    struct CaptionJson<'a> {
        #[serde(flatten)]
        outcome: &'a CaptionOutcome,
        model: Option<String>,
    }
    ctx.emit_json(&CaptionJson { outcome: &outcome, model: model_dir.map(|d| d.display().to_string()) });
    for c in &outcome.captions {
        ctx.say(&format!("{}: {}", c.file, c.caption));
    }
    let verb = if a.dry_run { "would write" } else { "wrote" };
    let kept = outcome.kept_existing;
    let kept_note = if kept > 0 && !a.overwrite { format!("; {kept} existing kept (--overwrite replaces them)") } else { String::new() };
    ctx.say(&format!("before: {}", outcome.captions_from.describe()));
    ctx.say(&format!("{verb} {} captions ({}){kept_note}", outcome.captions.len(), outcome.target));
    let skipped = &outcome.skipped_no_caption;
    if !skipped.is_empty() {
        eprintln!("warning: {} image(s) have no caption to put in {{caption}}: {} (write them with `hfsky dataset captions import`, or generate them with --model blip)", skipped.len(), skipped.join(", "));
    }
    for u in &outcome.unreadable {
        eprintln!("warning: {}: not captioned: {}", u.file, u.reason);
    }
    Ok(())
}

fn run_report(ctx: &Ctx, a: ReportArgs) -> anyhow::Result<()> {
    let dir = folder(ctx, &a.dir)?;
    let images = list_images(&dir)?;
    let source = source_or_detect(&dir, &images, a.source);
    let loaded = load_captions(&dir, &images, source, a.caption_column.as_deref())?;
    let spec = hfsky::train::buckets::BucketSpec::new(a.resolution, None, None, a.bucket_reso_steps, 8).map_err(bad_input)?;
    let r = report::build(&dir, &images, &loaded.captions, &spec)?;
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let html = report::html::render(&r)?;
        std::fs::write(out.join("report.html"), html).with_context(|| format!("writing {}", out.join("report.html").display()))?;
        std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", out.join("report.json").display()))?;
    }
    ctx.emit_json(&r);
    for line in r.summary_lines() {
        ctx.say(&line);
    }
    ctx.say(&loaded.describe());
    if let Some(out) = &a.out {
        ctx.say(&format!("report: {}", out.join("report.html").display()));
    }
    Ok(())
}

fn synth(ctx: &Ctx, a: SynthArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let ids: Vec<u32> = (0..a.count).collect();
    let results = hfsky::dataset::par_map(&ids, |&i| {
        let img = hfsky::dataset::synth::sky(a.width, a.height, i);
        let path = a.out.join(format!("sky-{i:05}.jpg"));
        let f = std::fs::File::create(&path)?;
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 90).encode_image(&img).map_err(std::io::Error::other)
    });
    results.into_iter().collect::<Result<Vec<_>, _>>().context("writing synthetic photos")?;
    ctx.say(&format!("wrote {} photos of {}×{} to {}", a.count, a.width, a.height, a.out.display()));
    Ok(())
}
