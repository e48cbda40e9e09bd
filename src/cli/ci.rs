//! `hfsky ci init` writes a CI workflow that publishes keylessly (OIDC trusted publishing);
//! `hfsky ci summary` turns a push's `--json` result into Markdown for the job summary.

use super::{bad_input, Ctx};
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

/// Markdown for a push result, a dry run, or an error object (`{"error", "exit_code"}`).
/// train-and-push results may carry the push under `"push"`.
pub fn summary_markdown(v: &serde_json::Value) -> String {
    if let Some(err) = v["error"].as_str() {
        return format!("### ❌ Publishing failed (exit code {})\n\n```\n{}\n```\n", v["exit_code"].as_i64().unwrap_or(1), err.replace("```", "'''"));
    }
    let push = if v["push"].is_object() { &v["push"] } else { v };
    let s = |k: &str| push[k].as_str().unwrap_or("");
    let target = format!("{}@{}", s("repo"), s("revision"));
    let files = push["files"].as_array().cloned().unwrap_or_default();
    let count = |a: &str| files.iter().filter(|f| f["action"] == a).count();
    let commit = match (push["commit_oid"].as_str(), push["commit_url"].as_str()) {
        (Some(oid), Some(url)) => format!("[`{}`]({url})", short(oid)),
        (Some(oid), None) => format!("`{}`", short(oid)),
        _ => "none".into(),
    };
    let mut md = match s("status") {
        "committed" => format!("### ✅ Published {target}\n\n"),
        "nothing_to_push" => format!("### ✅ {target} is up to date: nothing to publish\n\n"),
        "dry_run" => format!("### Dry run for {target}: nothing was written\n\n"),
        other => format!("### hfsky: {target} ({other})\n\n"),
    };
    md.push_str("| | |\n|---|---|\n");
    md.push_str(&format!("| commit | {commit} |\n"));
    if let Some(pr) = push["pr_url"].as_str() {
        md.push_str(&format!("| pull request | {pr} |\n"));
    }
    md.push_str(&format!(
        "| files | {} new, {} changed, {} deleted, {} unchanged |\n| bytes | {} ({} LFS bytes uploaded) |\n",
        count("add"),
        count("update"),
        count("delete"),
        push["unchanged"].as_u64().unwrap_or(0),
        push["total_bytes"].as_u64().unwrap_or(0),
        push["uploaded_lfs_bytes"].as_u64().unwrap_or(0)
    ));
    if !files.is_empty() {
        md.push_str("\n<details><summary>files</summary>\n\n");
        for f in &files {
            md.push_str(&format!("- {} `{}`\n", f["action"].as_str().unwrap_or("?"), f["path"].as_str().unwrap_or("?")));
        }
        md.push_str("\n</details>\n");
    }
    md
}

fn summary(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| bad_input(format!("cannot read {}: {e}", file.display())))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad_input(format!("{} is not the JSON of `hfsky --json push` ({e})", file.display())))?;
    if v["error"].is_null() && v["status"].is_null() && v["push"].is_null() {
        return Err(bad_input(format!("{} has neither a push result nor an error: pass the output of `hfsky --json push`", file.display())));
    }
    let md = summary_markdown(&v);
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

    #[test]
    fn summary_covers_commits_errors_and_dry_runs() {
        let v = serde_json::json!({"status":"committed","repo":"alice/x","revision":"main","commit_oid":"0123456789abcdef",
            "commit_url":"http://h/alice/x/commit/0123456789abcdef","files":[{"path":"a.bin","action":"add"}],"unchanged":2,
            "total_bytes":10,"uploaded_lfs_bytes":10});
        let md = summary_markdown(&v);
        assert!(md.contains("Published alice/x@main") && md.contains("(http://h/alice/x/commit/0123456789abcdef)") && md.contains("1 new"), "{md}");
        let md = summary_markdown(&serde_json::json!({"error":"HTTP 403 ```x```","exit_code":3}));
        assert!(md.contains("exit code 3") && !md.contains("```x"), "{md}");
        let md = summary_markdown(&serde_json::json!({"push":{"status":"dry_run","repo":"a/b","revision":"main","files":[]}}));
        assert!(md.contains("Dry run for a/b@main"), "{md}");
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
