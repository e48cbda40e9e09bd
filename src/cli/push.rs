use super::{bad_input, exit, CliError, Ctx};
use anyhow::Context;
use hfsky::auth::{Credential, OidcOptions};
use hfsky::dataset::hub_source::prepare_push;
use hfsky::hub::push::{plan_push, push_folder, FileAction, PushEvent, PushOptions, PushOutcome, PushStatus, Reporter};
use hfsky::hub::HubClient;
use hfsky::names;
use hfsky::repo_id::{RepoId, RepoRef, RepoType};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Mutex;

/// Keyless publishing flags, shared by every command that publishes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OidcArgs {
    /// Publish keylessly from CI: exchange the CI's OIDC id token for a short-lived token that
    /// can write only the target repo (GitHub Actions: needs `permissions: id-token: write`)
    #[arg(long)]
    pub oidc: bool,
    /// Read the OIDC id token from this file (CI systems that mint their own, e.g. GitLab's
    /// `id_tokens`); implies --oidc
    #[arg(long, value_name = "FILE")]
    pub oidc_token_file: Option<PathBuf>,
}

impl OidcArgs {
    pub fn options(&self) -> OidcOptions {
        OidcOptions { enabled: self.oidc, token_file: self.oidc_token_file.clone() }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder to upload
    dir: PathBuf,
    /// Target repo, `namespace/name`
    #[arg(long)]
    repo: RepoId,
    /// What the repo is: a model, or a dataset (a photo folder in the Hub's imagefolder layout,
    /// checked first, with a dataset card added when the folder has no README.md)
    #[arg(long, value_enum, default_value_t = RepoType::Model)]
    repo_type: RepoType,
    /// Create the repo private (if it does not exist yet)
    #[arg(long)]
    private: bool,
    /// Branch to commit to (created from main if it does not exist)
    #[arg(long, default_value = "main")]
    revision: String,
    /// Open a pull request against --revision instead of committing to it
    #[arg(long)]
    create_pr: bool,
    /// Commit message
    #[arg(long, short, default_value = "Upload with hfsky")]
    message: String,
    /// Only files matching these globs
    #[arg(long)]
    include: Vec<String>,
    /// Skip files matching these globs
    #[arg(long)]
    exclude: Vec<String>,
    /// Delete remote files matching these globs that are not in the folder
    #[arg(long)]
    delete: Vec<String>,
    /// Show what would be added, updated and deleted and check the model card, writing nothing
    #[arg(long)]
    dry_run: bool,
    /// Upload Git LFS pointer files (the ~130-byte stubs a clone without git-lfs leaves) as
    /// their content; refused by default (exit 2, naming the files)
    #[arg(long)]
    allow_lfs_pointers: bool,
    #[command(flatten)]
    oidc: OidcArgs,
}

/// Checks with whoami-v2 that the token is valid and can write to `repo` (its namespace, or the
/// one repo a scoped token from an OIDC exchange may write).
pub(super) fn ensure_can_write(rt: &tokio::runtime::Runtime, client: &HubClient, repo: &RepoId) -> anyhow::Result<()> {
    match rt.block_on(client.whoami()) {
        Err(e) if e.status() == Some(401) => Err(CliError { code: exit::AUTH, message: format!("invalid token: {e}") }.into()),
        Err(e) => Err(e.into()),
        Ok(who) if who.can_write(repo) == Some(false) => Err(CliError {
            code: exit::AUTH,
            message: format!("the token of {} cannot write to {repo} (writable: {})", who.name, who.writable_summary()),
        }
        .into()),
        Ok(_) => Ok(()),
    }
}

/// A client whose token can write to `repo` (checked before any long work: hashing gigabytes,
/// or training for an hour), with the OIDC exchange first when asked for.
pub fn writer_client(ctx: &Ctx, rt: &tokio::runtime::Runtime, repo: &RepoId, oidc: &OidcArgs) -> anyhow::Result<(HubClient, Credential)> {
    let (client, cred) = super::client_for(ctx, rt, Some(repo), &oidc.options(), true)?;
    let cred = cred.expect("client_for requires a token");
    ensure_can_write(rt, &client, repo).with_context(|| format!("the token from {}", cred.source))?;
    Ok((client, cred))
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let repo = args.repo.clone();
    if !args.dir.is_dir() {
        return Err(bad_input(format!("{} is not an existing folder: pass the folder to push", args.dir.display())));
    }
    let rt = ctx.runtime();
    let (client, _) = writer_client(ctx, &rt, &repo, &args.oidc)?;
    // A dataset is checked and laid out as the Hub's imagefolder first (its metadata file, a
    // dataset card unless the repo has one), in a staging folder that lives until the push ends.
    let dataset = match args.repo_type {
        RepoType::Model => None,
        RepoType::Dataset => {
            let card_on_hub = match rt.block_on(client.paths_info(RepoRef::dataset(&repo), &args.revision, &[names::README.to_string()])) {
                Ok(found) => !found.is_empty(),
                Err(e) if matches!(e.status(), Some(404)) => false,
                Err(e) => return Err(e.into()),
            };
            let folder = prepare_push(&args.dir, &repo, card_on_hub)?;
            ctx.say(&format!("dataset: {} photo(s); {}", folder.images, folder.captions.describe()));
            if !folder.generated.is_empty() {
                ctx.say(&format!("added for the Hub's imagefolder layout: {}", folder.generated.join(", ")));
            }
            Some(folder)
        }
    };
    let dir = dataset.as_ref().map_or(args.dir.as_path(), |f| f.dir.as_path());
    let opts = PushOptions {
        repo,
        repo_type: args.repo_type,
        revision: args.revision,
        private: args.private.then_some(true),
        create_pr: args.create_pr,
        message: args.message,
        description: String::new(),
        include: args.include,
        exclude: args.exclude,
        delete: args.delete,
        allow_lfs_pointers: args.allow_lfs_pointers,
        reporter: progress_bars(ctx),
    };
    let outcome =
        if args.dry_run { rt.block_on(plan_push(&client, dir, &opts))?.dry_run_outcome() } else { rt.block_on(push_folder(&client, dir, &opts))? };
    ctx.say(&describe(&outcome));
    ctx.emit_json(&outcome);
    Ok(())
}

/// A push's progress as indicatif bars on stderr, one per phase (none with `--json`, `-q` or
/// without a terminal).
pub fn progress_bars(ctx: &Ctx) -> Reporter {
    if !ctx.show_progress() {
        return Reporter::default();
    }
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Reporter::new(move |e| {
        let mut bar = bar.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match e {
            PushEvent::Start { phase, total } => {
                let pb = ProgressBar::new(total);
                pb.set_style(
                    ProgressStyle::with_template("{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                pb.set_message(phase.label());
                if let Some(old) = bar.replace(pb) {
                    old.finish_and_clear();
                }
            }
            PushEvent::Progress { done, .. } => {
                if let Some(pb) = bar.as_ref() {
                    pb.set_position(done);
                }
            }
            PushEvent::Finish { .. } => {
                if let Some(pb) = bar.take() {
                    pb.finish_and_clear();
                }
            }
        }
    })
}

fn count(o: &PushOutcome, action: FileAction) -> usize {
    o.files.iter().filter(|f| f.action == action).count()
}

/// The human summary of a push or dry run.
pub fn describe(o: &PushOutcome) -> String {
    let target = format!("{}@{}", o.repo, o.revision);
    let (added, updated, deleted) = (count(o, FileAction::Add), count(o, FileAction::Update), count(o, FileAction::Delete));
    let mut changes = format!("{added} new, {updated} changed");
    if deleted > 0 {
        changes.push_str(&format!(", {deleted} deleted"));
    }
    match o.status {
        PushStatus::NothingToPush => format!("nothing to push: {target} already has these {} file(s)", o.unchanged),
        PushStatus::DryRun => {
            let mut s = format!(
                "Dry run, nothing written: pushing to {target} would commit {changes} file(s), {} bytes ({} unchanged)",
                o.total_bytes, o.unchanged
            );
            if o.new_repo {
                s.push_str(&format!("\n  the repo {} would be created", o.repo));
            } else if o.new_branch {
                s.push_str(&format!("\n  the branch {} would be created from main", o.revision));
            }
            for f in &o.files {
                let mode =
                    if f.action == FileAction::Delete { String::new() } else { format!(" ({} bytes{})", f.size, if f.lfs { ", LFS" } else { "" }) };
                let action = match f.action {
                    FileAction::Add => "add",
                    FileAction::Update => "update",
                    FileAction::Delete => "delete",
                };
                s.push_str(&format!("\n  {action:<6} {}{mode}", f.path));
            }
            s
        }
        PushStatus::Committed => {
            let mut s = format!(
                "Committed {changes} file(s) to {target} ({} unchanged; {} LFS bytes uploaded, {} LFS object(s) already stored)",
                o.unchanged, o.uploaded_lfs_bytes, o.reused_lfs_objects
            );
            if o.rebased > 0 {
                s.push_str(&format!("\n  rebased onto a concurrent commit that changed other files ({}x)", o.rebased));
            }
            if let Some(pr) = &o.pr_url {
                s.push_str(&format!("\n  pull request: {pr}"));
            }
            if let Some(url) = &o.commit_url {
                s.push_str(&format!("\n  {url}"));
            }
            s
        }
    }
}
