use super::Ctx;
use hfsky::hub::download::{download, DownloadOptions};
use hfsky::repo_id::{RepoId, RepoType};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Repo, `namespace/name`
    repo: RepoId,
    /// What the repo is: a model or a dataset
    #[arg(long, value_enum, default_value_t = RepoType::Model)]
    repo_type: RepoType,
    /// Files to fetch (default: all)
    files: Vec<String>,
    /// Branch, tag or commit
    #[arg(long)]
    revision: Option<String>,
    /// Copy into this folder instead of only the cache
    #[arg(long)]
    local_dir: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let repo = args.repo;
    let rt = ctx.runtime();
    let (client, _) = super::client_for(ctx, &rt, None, &hfsky::auth::OidcOptions::default(), false)?;
    let opts = DownloadOptions { repo, repo_type: args.repo_type, revision: args.revision, files: args.files, local_dir: args.local_dir };
    let got = rt.block_on(download(&client, &opts))?;
    for d in &got {
        ctx.say(&format!("{} -> {}", d.path_in_repo, d.local_path.display()));
    }
    /// The `--json` document of `download`.
    #[derive(serde::Serialize)]
    struct DownloadJson<'a> {
        files: &'a [hfsky::hub::download::Downloaded],
    }
    ctx.emit_json(&DownloadJson { files: &got });
    Ok(())
}
