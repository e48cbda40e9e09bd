//! `hfsky ci init` writes a CI workflow that publishes keylessly (OIDC trusted publishing);
//! `hfsky ci summary` turns a push's `--json` result into Markdown for the job summary.

use super::train::TrainJson;
use super::{bad_input, Ctx, ErrorJson};
use hfsky::hub::push::{FileAction, PushOutcome, PushStatus};
use hfsky::repo_id::RepoId;
use std::path::{Path, PathBuf};

const GITHUB_TEMPLATE: &str = include_str!("../../templates/ci/github-publish.yml.j2");

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Write a workflow that publishes (or trains and publishes) with keyless OIDC publishing
    Init(InitArgs),
    /// Markdown for the CI job summary from the JSON of `hfsky --json push` (or train-and-push)
    Summary {
        /// The JSON file the push wrote
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// CI system to write a workflow for
    #[arg(long, value_enum, default_value = "github")]
    provider: Provider,
    /// Model repo to publish to (default: the CI variable HF_REPO)
    #[arg(long)]
    repo: Option<RepoId>,
    /// Train and publish (`hfsky train-and-push`) instead of pushing a folder
    #[arg(long)]
    train: bool,
    /// Folder to publish (without --train)
    #[arg(long, default_value = "model", conflicts_with = "train")]
    dir: String,
    /// Training config (with --train)
    #[arg(long, default_value = "train.yaml")]
    config: String,
    /// Branch whose pushes publish
    #[arg(long, default_value = "main")]
    branch: String,
    /// Runner label (training wants a GPU runner, e.g. a self-hosted one)
    #[arg(long, default_value = "ubuntu-latest")]
    runs_on: String,
    /// Where hfsky is installed from: `pypi` (the wheel carrying the binary, this version:
    /// seconds), `crates` (crates.io, this version: builds it, ~10 min) or `git:URL`
    #[arg(long, default_value = "pypi")]
    install_from: String,
    /// Workflow file to write
    #[arg(long, default_value = ".github/workflows/hfsky-publish.yml")]
    out: PathBuf,
    /// Replace an existing workflow file
    #[arg(long)]
    force: bool,
}

/// Characters that would break out of a plain YAML scalar or a shell word in the workflow.
fn plain(value: &str, flag: &str) -> anyhow::Result<()> {
    let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_./@+=:".contains(c)) && !value.starts_with(['-', ':']);
    if !ok {
        return Err(bad_input(format!("{flag} {value:?}: use letters, digits and - _ . / @ + = : only")));
    }
    Ok(())
}

fn install_command(spec: &str) -> anyhow::Result<String> {
    let version = env!("CARGO_PKG_VERSION");
    if spec == "pypi" {
        return Ok(format!("python3 -m pip install --disable-pip-version-check hfsky=={version}"));
    }
    if spec == "crates" {
        return Ok(format!("cargo install --locked hfsky --version {version}"));
    }
    if let Some(url) = spec.strip_prefix("git:") {
        let parsed = url::Url::parse(url).map_err(|e| bad_input(format!("--install-from git:{url}: not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "https" | "http" | "ssh") {
            return Err(bad_input(format!("--install-from git:{url}: use an https:// (or ssh://) git URL")));
        }
        plain(url, "--install-from")?;
        return Ok(format!("cargo install --locked --git {url} hfsky"));
    }
    Err(bad_input(format!("--install-from {spec:?}: use `pypi`, `crates` or `git:URL`")))
}

/// `owner/repo` of the GitHub remote `origin` of the current folder, if there is one.
fn github_slug() -> Option<String> {
    let out = std::process::Command::new("git").args(["remote", "get-url", "origin"]).output().ok()?;
    let url = String::from_utf8(out.stdout).ok()?;
    let rest = url.trim().split("github.com").nth(1)?.trim_start_matches([':', '/']);
    let slug = rest.trim_end_matches(".git").trim_end_matches('/');
    (slug.split('/').count() == 2 && plain(slug, "remote").is_ok()).then(|| slug.to_string())
}

fn render(args: &InitArgs) -> anyhow::Result<(String, String)> {
    let repo = args.repo.as_ref();
    for (v, flag) in [(&args.dir, "--dir"), (&args.config, "--config"), (&args.branch, "--branch"), (&args.runs_on, "--runs-on")] {
        plain(v, flag)?;
    }
    let subject = format!("repo:{}:ref:refs/heads/{}", github_slug().unwrap_or_else(|| "OWNER/REPO".into()), args.branch);
    let ctx = minijinja::context! {
        version => env!("CARGO_PKG_VERSION"),
        what => if args.train { "a LoRA trained with `hfsky train-and-push`" } else { "a model folder" },
        train => args.train,
        repo_given => repo.is_some(),
        repo_value => repo.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "${{ vars.HF_REPO }}".into()),
        repo_label => repo.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "the model repo".into()),
        subject => subject.clone(),
        model_dir => args.dir,
        config => args.config,
        branch => args.branch,
        runs_on => args.runs_on,
        install => install_command(&args.install_from)?,
    };
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.add_template("github", GITHUB_TEMPLATE).expect("the bundled template parses");
    let text = env.get_template("github").expect("added above").render(ctx)?;
    Ok((text, subject))
}

fn init(ctx: &Ctx, args: InitArgs) -> anyhow::Result<()> {
    let Provider::Github = args.provider;
    let (text, subject) = render(&args)?;
    // The written file must be a workflow GitHub can load.
    serde_yaml::from_str::<serde_yaml::Value>(&text).map_err(|e| anyhow::anyhow!("the generated workflow is not valid YAML: {e}"))?;
    if args.out.exists() && !args.force {
        return Err(bad_input(format!("{} already exists: pass --force to replace it (or --out another file)", args.out.display())));
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&args.out, &text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
    let target = args.repo.as_ref().map_or_else(|| "the repo in the HF_REPO variable".into(), RepoId::to_string);
    ctx.say(&format!(
        "Wrote {}.\nNext: on the Hub, add this GitHub repository as a Trusted Publisher of {target} (subject {subject}),\n{}then commit the workflow.",
        args.out.display(),
        if args.repo.is_none() { "set the repository variable HF_REPO, " } else { "" }
    ));
    ctx.emit_json(&InitJson { path: &args.out, provider: args.provider, repo: args.repo.as_ref(), train: args.train, subject: &subject });
    Ok(())
}

/// The `--json` document of `ci init`.
#[derive(serde::Serialize)]
struct InitJson<'a> {
    path: &'a std::path::Path,
    provider: Provider,
    repo: Option<&'a RepoId>,
    train: bool,
    subject: &'a str,
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(10)]
}

/// What `ci summary` reads: one of the `--json` documents, as its own type, so a renamed field
/// is a compile error here rather than an empty cell in a job summary.
#[derive(Debug)]
pub enum Published {
    /// Any command's error document ([`ErrorJson`]).
    Failed(ErrorJson),
    /// `push`'s document (a dry run's too), or the push inside `train-and-push`'s ([`TrainJson`]).
    Pushed(PushOutcome),
}

impl Published {
    /// Reads the document, telling the kinds apart by their keys; the message names what is
    /// wrong (a missing field, a bad value) for a document of the right kind.
    pub fn from_json(text: &str) -> Result<Published, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let typed = |e: serde_json::Error| e.to_string();
        if v.get("error").is_some() {
            return serde_json::from_value(v).map(Published::Failed).map_err(typed);
        }
        if v.get("push").is_some() {
            let train: TrainJson = serde_json::from_value(v).map_err(typed)?;
            return train.push.map(Published::Pushed).ok_or_else(|| "`push` is null".into());
        }
        if v.get("status").is_some() {
            return serde_json::from_value(v).map(Published::Pushed).map_err(typed);
        }
        Err("it has neither a push result nor an error".into())
    }
}

/// Markdown for a push result, a dry run, or an error.
pub fn summary_markdown(doc: &Published) -> String {
    let push = match doc {
        Published::Failed(e) => {
            return format!("### ❌ Publishing failed (exit code {})\n\n```\n{}\n```\n", e.exit_code, e.error.replace("```", "'''"));
        }
        Published::Pushed(p) => p,
    };
    let target = format!("{}@{}", push.repo, push.revision);
    let count = |a: FileAction| push.files.iter().filter(|f| f.action == a).count();
    let commit = match (&push.commit_oid, &push.commit_url) {
        (Some(oid), Some(url)) => format!("[`{}`]({url})", short(oid)),
        (Some(oid), None) => format!("`{}`", short(oid)),
        _ => "none".into(),
    };
    let mut md = match push.status {
        PushStatus::Committed => format!("### ✅ Published {target}\n\n"),
        PushStatus::NothingToPush => format!("### ✅ {target} is up to date: nothing to publish\n\n"),
        PushStatus::DryRun => format!("### Dry run for {target}: nothing was written\n\n"),
    };
    md.push_str("| | |\n|---|---|\n");
    md.push_str(&format!("| commit | {commit} |\n"));
    if let Some(pr) = &push.pr_url {
        md.push_str(&format!("| pull request | {pr} |\n"));
    }
    md.push_str(&format!(
        "| files | {} new, {} changed, {} deleted, {} unchanged |\n| bytes | {} ({} LFS bytes uploaded) |\n",
        count(FileAction::Add),
        count(FileAction::Update),
        count(FileAction::Delete),
        push.unchanged,
        push.total_bytes,
        push.uploaded_lfs_bytes
    ));
    if !push.files.is_empty() {
        md.push_str("\n<details><summary>files</summary>\n\n");
        for f in &push.files {
            // The JSON's names (`FileAction`'s serde form).
            let action = match f.action {
                FileAction::Add => "add",
                FileAction::Update => "update",
                FileAction::Delete => "delete",
            };
            md.push_str(&format!("- {action} `{}`\n", f.path));
        }
        md.push_str("\n</details>\n");
    }
    md
}

fn summary(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| bad_input(format!("cannot read {}: {e}", file.display())))?;
    let doc = Published::from_json(&text)
        .map_err(|e| bad_input(format!("{} is not the JSON of `hfsky --json push` or `train-and-push`, nor an error ({e})", file.display())))?;
    let md = summary_markdown(&doc);
    if ctx.json {
        #[derive(serde::Serialize)]
        struct SummaryJson<'a> {
            markdown: &'a str,
        }
        ctx.emit_json(&SummaryJson { markdown: &md });
    } else {
        // Markdown goes out even with --quiet: it is this command's product.
        print!("{}", hfsky::redact::redact(&md));
    }
    Ok(())
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Init(a) => init(ctx, a),
        Cmd::Summary { file } => summary(ctx, &file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hfsky::hub::push::FileChange;

    fn outcome(status: PushStatus) -> PushOutcome {
        PushOutcome {
            status,
            repo: "alice/x".into(),
            revision: "main".into(),
            commit_oid: Some("0123456789abcdef".into()),
            commit_url: Some("http://h/alice/x/commit/0123456789abcdef".into()),
            pr_url: None,
            parent_commit: None,
            files: vec![
                FileChange { path: "a.bin".into(), action: FileAction::Add, size: 10, lfs: true },
                FileChange { path: "old.txt".into(), action: FileAction::Delete, size: 0, lfs: false },
            ],
            unchanged: 2,
            total_bytes: 10,
            uploaded_lfs_bytes: 10,
            reused_lfs_objects: 0,
            new_repo: false,
            new_branch: false,
            rebased: 0,
        }
    }

    /// Each document is written by the type its command prints and read back by `summary`.
    #[test]
    fn summary_reads_the_documents_the_commands_write() {
        let push = serde_json::to_string(&outcome(PushStatus::Committed)).unwrap();
        let md = summary_markdown(&Published::from_json(&push).unwrap());
        assert!(md.contains("Published alice/x@main") && md.contains("(http://h/alice/x/commit/0123456789abcdef)"), "{md}");
        assert!(md.contains("| files | 1 new, 0 changed, 1 deleted, 2 unchanged |") && md.contains("- delete `old.txt`"), "{md}");

        let train = TrainJson {
            output_dir: "out".into(),
            lora: "out/pytorch_lora_weights.safetensors".into(),
            card: "out/README.md".into(),
            steps: 2,
            final_loss: Some(0.1),
            seconds: 1.0,
            peak_host_memory_bytes: None,
            peak_device_memory_bytes: None,
            gradient_checkpointing: false,
            resolution: 64,
            examples: 3,
            buckets: vec![],
            skipped: vec![],
            validation_images: vec![],
            final_val_loss: None,
            report: "out/report.html".into(),
            push: Some(outcome(PushStatus::DryRun)),
        };
        let md = summary_markdown(&Published::from_json(&serde_json::to_string(&train).unwrap()).unwrap());
        assert!(md.contains("Dry run for alice/x@main"), "{md}");

        let error = serde_json::to_string(&ErrorJson { error: "HTTP 403 ```x```".into(), exit_code: 3 }).unwrap();
        let md = summary_markdown(&Published::from_json(&error).unwrap());
        assert!(md.contains("exit code 3") && !md.contains("```x"), "{md}");
    }

    #[test]
    fn documents_of_other_shapes_are_refused_with_the_field() {
        let mut push = serde_json::to_value(outcome(PushStatus::Committed)).unwrap();
        push.as_object_mut().unwrap().remove("total_bytes");
        assert!(Published::from_json(&push.to_string()).unwrap_err().contains("total_bytes"));
        let train_only = serde_json::json!({"output_dir": "out", "steps": 2});
        assert!(Published::from_json(&train_only.to_string()).unwrap_err().contains("neither a push result nor an error"));
        assert!(Published::from_json("{\"status\": \"exploded\"}").unwrap_err().contains("exploded"));
    }

    #[test]
    fn odd_values_cannot_break_the_workflow() {
        assert!(plain("model/out", "--dir").is_ok());
        for bad in ["a b", "x\"; rm -rf /", "$(id)", "a\nb", "-x", ""] {
            assert!(plain(bad, "--dir").is_err(), "{bad:?}");
        }
        assert!(install_command("crates").unwrap().starts_with("cargo install --locked hfsky --version "));
        assert!(install_command("git:https://github.com/o/hfsky").unwrap().ends_with("--git https://github.com/o/hfsky hfsky"));
        assert!(install_command("git:file:///etc").is_err());
        assert_eq!(
            install_command("pypi").unwrap(),
            format!("python3 -m pip install --disable-pip-version-check hfsky=={}", env!("CARGO_PKG_VERSION"))
        );
        assert!(install_command("pip").is_err());
    }
}
