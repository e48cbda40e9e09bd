use super::{bad_input, exit, CliError, Ctx};
use hfsky::auth::{self, StoreKind};
use hfsky::hub::protocol::TokenRole;
use hfsky::hub::HubClient;
use hfsky::token::Token;
use std::io::{IsTerminal, Read};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read the token from standard input (for scripts); otherwise you are prompted (input hidden)
    #[arg(long)]
    token_stdin: bool,
    /// Name to store the token under (default: the token's name on the Hub)
    #[arg(long)]
    name: Option<String>,
    /// Where to keep it: the OS keyring, or a 0600 file that huggingface_hub reads too
    #[arg(long, value_enum, default_value = "keyring")]
    store: StoreKind,
}

pub fn valid_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(bad_input(format!("invalid token name {name:?}: use 1-64 letters, digits, `-`, `_` or `.`")));
    }
    Ok(())
}

fn read_token(args: &Args) -> anyhow::Result<Token> {
    let raw = if args.token_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else if std::io::stdin().is_terminal() {
        eprintln!("Create a token with write access at https://huggingface.co/settings/tokens");
        rpassword::prompt_password("Hugging Face token (input hidden): ")?
    } else {
        return Err(bad_input("no terminal to prompt on: pipe the token with `--token-stdin` (never as a flag value)"));
    };
    Ok(Token::parse(&raw)?)
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    if let Some(n) = &args.name {
        valid_name(n)?;
    }
    let token = read_token(&args)?;
    let client = HubClient::new(&ctx.endpoint, Some(token.clone()))?;
    let who = match ctx.runtime().block_on(client.whoami()) {
        Ok(w) => w,
        Err(e) if e.status() == Some(401) => {
            return Err(CliError { code: exit::AUTH, message: format!("invalid token: the Hub at {} refused it ({e})", ctx.endpoint) }.into())
        }
        Err(e) => return Err(e.into()),
    };
    let name = args.name.clone().or_else(|| who.token_name().filter(|n| valid_name(n).is_ok()).map(String::from)).unwrap_or_else(|| "default".into());
    let role = who.role().cloned();
    auth::save(&name, &token, args.store, Some(who.name.clone()), role.clone())?;
    let writable = who.writable_namespaces();
    let where_ = match args.store {
        StoreKind::Keyring => "the OS keyring".to_string(),
        StoreKind::File => auth::paths::token_file().display().to_string(),
    };
    ctx.say(&format!(
        "Logged in as {} (token {:?}, role {}), stored in {where_} as {name:?}.",
        who.name,
        who.token_name().unwrap_or("?"),
        role.as_ref().map_or("unknown", TokenRole::as_str)
    ));
    match &writable {
        Some(ns) if ns.is_empty() => ctx.say("This token cannot write to any namespace: pushing will fail. Create a write token to publish."),
        Some(ns) => ctx.say(&format!("Can write to: {}", ns.join(", "))),
        None => ctx.say("Write access: unknown for this kind of token (the Hub decides at push time)."),
    }
    if std::env::var_os("HF_TOKEN").is_some() {
        ctx.say("Note: HF_TOKEN is set in this environment and takes precedence over the stored token.");
    }
    ctx.emit_json(&LoginJson {
        user: &who.name,
        token_name: who.token_name(),
        role: role.as_ref(),
        stored_as: &name,
        store: args.store,
        writable_namespaces: writable.as_deref(),
    });
    Ok(())
}

/// The `--json` document of `login`.
#[derive(serde::Serialize)]
struct LoginJson<'a> {
    user: &'a str,
    token_name: Option<&'a str>,
    role: Option<&'a TokenRole>,
    stored_as: &'a str,
    store: StoreKind,
    writable_namespaces: Option<&'a [String]>,
}
