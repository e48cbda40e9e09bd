use super::{bad_input, exit, CliError, Ctx};
use hfsky::hub::push::{push_folder, PushOptions, PushOutcome};
use hfsky::repo_id::RepoId;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder to upload
    dir: PathBuf,
    /// Target model repo, `namespace/name`
    #[arg(long)]
    repo: String,
    /// Create the repo private (if it does not exist yet)
    #[arg(long)]
    private: bool,
    /// Branch to commit to
    #[arg(long, default_value = "main")]
    revision: String,
    /// Open a pull request instead of committing to the branch
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
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let repo = RepoId::parse(&args.repo)?;
    if !args.dir.is_dir() {
        return Err(bad_input(format!("{} is not an existing folder: pass the folder to push", args.dir.display())));
    }
    let client = super::client(ctx, true)?;
    let rt = ctx.runtime();
    // Fail in a second on a bad token, not after hashing gigabytes.
    ensure_can_write(&rt, &client, &repo)?;
    let opts = PushOptions {
        repo,
        revision: args.revision,
        private: args.private.then_some(true),
        create_pr: args.create_pr,
        message: args.message,
        description: String::new(),
        include: args.include,
        exclude: args.exclude,
        delete: args.delete,
        show_progress: ctx.show_progress(),
    };
    let outcome = rt.block_on(push_folder(&client, &args.dir, &opts))?;
    match &outcome {
        PushOutcome::NothingToPush { repo, revision, unchanged, .. } => {
            ctx.say(&format!("nothing to push: {repo}@{revision} already has these {unchanged} file(s)"))
        }
        PushOutcome::Committed { commit_url, added, deleted, unchanged, uploaded_lfs_bytes, reused_lfs_objects, pull_request_url, .. } => {
            ctx.say(&format!(
                "Committed {} file(s){}{} ({} unchanged; {} LFS bytes uploaded, {} LFS object(s) already stored)\n{}",
                added.len(),
                if deleted.is_empty() { String::new() } else { format!(", deleted {}", deleted.len()) },
                pull_request_url.as_ref().map(|u| format!(", pull request {u}")).unwrap_or_default(),
                unchanged, uploaded_lfs_bytes, reused_lfs_objects, commit_url
            ));
        }
    }
    ctx.emit_json(&serde_json::to_value(&outcome)?);
    Ok(())
}

/// Checks with whoami-v2 that the token is valid and can write to the repo's namespace.
pub(super) fn ensure_can_write(rt: &tokio::runtime::Runtime, client: &hfsky::hub::HubClient, repo: &RepoId) -> anyhow::Result<()> {
    match rt.block_on(client.whoami()) {
        Err(e) if e.status() == Some(401) => Err(CliError { code: exit::AUTH, message: format!("invalid token: {e}") }.into()),
        Err(e) => Err(e.into()),
        Ok(who) => {
            if let Some(ns) = who.writable_namespaces() {
                if !ns.contains(&repo.namespace) {
                    return Err(CliError {
                        code: exit::AUTH,
                        message: format!(
                            "the token of {} cannot write to {} (writable: {})",
                            who.name,
                            repo.namespace,
                            if ns.is_empty() { "nothing".into() } else { ns.join(", ") }
                        ),
                    }
                    .into());
                }
            }
            Ok(())
        }
    }
}
