use super::{bad_input, Ctx};
use hfsky::auth::{self, TokenIndex};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Forget this stored token (default: the active one)
    #[arg(long, conflicts_with = "all")]
    name: Option<String>,
    /// Forget every token hfsky stored
    #[arg(long)]
    all: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let index = TokenIndex::load()?;
    let names: Vec<String> = if args.all {
        index.tokens.iter().map(|t| t.name.clone()).collect()
    } else if let Some(n) = args.name {
        if index.get(&n).is_none() {
            return Err(bad_input(format!("no stored token is named {n:?}: see `hfsky token list`")));
        }
        vec![n]
    } else {
        index.active.clone().into_iter().collect()
    };
    let mut removed = Vec::new();
    for n in names {
        if auth::remove(&n)? {
            removed.push(n);
        }
    }
    if removed.is_empty() {
        ctx.say("No stored token to forget.");
    } else {
        ctx.say(&format!("Forgot {}.", removed.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")));
    }
    if std::env::var_os("HF_TOKEN").is_some() || std::env::var_os("HUGGING_FACE_HUB_TOKEN").is_some() {
        ctx.say("Note: a token is still set in the environment (HF_TOKEN / HUGGING_FACE_HUB_TOKEN); unset it to log out fully.");
    }
    /// The `--json` document of `logout`.
    #[derive(serde::Serialize)]
    struct LogoutJson {
        removed: Vec<String>,
    }
    ctx.emit_json(&LogoutJson { removed });
    Ok(())
}
