//! `hfsky card render`: the model card of a finished training run, from its training_summary.json;
//! `hfsky card report`: its report.html again (the run writes one at its end).

use super::{bad_input, Ctx};
use hfsky::names;
use hfsky::repo_id::RepoId;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Render README.md from a training output folder (training_summary.json)
    Render {
        /// The training output folder
        dir: PathBuf,
        /// The repo the card is for, `namespace/name` (used in snippets)
        #[arg(long)]
        repo: RepoId,
        /// A card template of your own (minijinja; default: model_cards/lora.md.j2)
        #[arg(long)]
        template: Option<PathBuf>,
        /// Where to write (default: DIR/README.md; `-` for stdout)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also check the metadata with the Hub's validate-yaml
        #[arg(long)]
        validate: bool,
    },
    /// Render report.html (loss curves, validation images, dataset, settings) from a training
    /// output folder; training writes it at its end too
    Report {
        /// The training output folder
        dir: PathBuf,
    },
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let (dir, repo, template, out, validate) = match cmd {
        Cmd::Render { dir, repo, template, out, validate } => (dir, repo, template, out, validate),
        Cmd::Report { dir } => return report(ctx, &dir),
    };
    let summary_path = dir.join(names::TRAINING_SUMMARY);
    let text = std::fs::read_to_string(&summary_path)
        .map_err(|e| bad_input(format!("{}: {e} (is {} a training output folder?)", summary_path.display(), dir.display())))?;
    let summary: hfsky::train::TrainSummary = serde_json::from_str(&text).map_err(|e| bad_input(format!("{}: {e}", summary_path.display())))?;
    let tpl = template.as_ref().map(|p| std::fs::read_to_string(p).map_err(|e| bad_input(format!("{}: {e}", p.display())))).transpose()?;
    let card = hfsky::card::render(&summary, &repo.to_string(), tpl.as_deref()).map_err(|e| bad_input(e.to_string()))?;
    if validate {
        let client = super::client(ctx, false)?;
        let warnings = ctx.runtime().block_on(client.validate_yaml(&card, hfsky::repo_id::RepoType::Model))?;
        for w in &warnings {
            eprintln!("model card: {w}");
        }
    }
    match out.as_deref() {
        Some(p) if p.as_os_str() == "-" => print!("{card}"),
        other => {
            let path = other.map(PathBuf::from).unwrap_or_else(|| dir.join(names::README));
            std::fs::write(&path, &card)?;
            ctx.say(&path.display().to_string());
            /// The `--json` document of `card render`.
            #[derive(serde::Serialize)]
            struct CardJson<'a> {
                card: &'a std::path::Path,
            }
            ctx.emit_json(&CardJson { card: &path });
        }
    }
    Ok(())
}

fn report(ctx: &Ctx, dir: &std::path::Path) -> anyhow::Result<()> {
    use hfsky::train::report::{write, ReportError};
    let path = write(dir).map_err(|e| match e {
        ReportError::Read { .. } => bad_input(format!("{e} (is {} a training output folder?)", dir.display())),
        ReportError::Template(_) => bad_input(e.to_string()),
        ReportError::Write { .. } => anyhow::Error::from(e),
    })?;
    ctx.say(&path.display().to_string());
    /// The `--json` document of `card report`.
    #[derive(serde::Serialize)]
    struct ReportJson<'a> {
        report: &'a std::path::Path,
    }
    ctx.emit_json(&ReportJson { report: &path });
    Ok(())
}
