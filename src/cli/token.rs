use super::Ctx;
use hfsky::auth::{self, IndexEntry, TokenIndex};
use hfsky::hub::protocol::TokenRole;

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Stored tokens (names only) and which one is active
    List,
    /// Make another stored token the active one
    Switch { name: String },
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::List => {
            let index = TokenIndex::load()?;
            if index.tokens.is_empty() {
                ctx.say("No stored tokens: run `hfsky login`.");
            }
            for t in &index.tokens {
                let mark = if index.active.as_deref() == Some(t.name.as_str()) { "*" } else { " " };
                ctx.say(&format!(
                    "{mark} {:<20} {:<8} user {:<16} role {}",
                    t.name,
                    t.store.as_str(),
                    t.user.as_deref().unwrap_or("?"),
                    t.role.as_ref().map_or("?", TokenRole::as_str)
                ));
            }
            if std::env::var_os("HF_TOKEN").is_some() {
                ctx.say("Note: HF_TOKEN is set and overrides the active stored token.");
            }
            ctx.emit_json(&TokensJson { active: index.active.as_deref(), tokens: &index.tokens });
        }
        Cmd::Switch { name } => {
            let e = auth::switch(&name)?;
            ctx.say(&format!("Active token is now {:?} (user {}).", e.name, e.user.as_deref().unwrap_or("?")));
            ctx.emit_json(&SwitchJson { active: &e.name });
        }
    }
    Ok(())
}

/// The `--json` document of `token list`.
#[derive(serde::Serialize)]
struct TokensJson<'a> {
    active: Option<&'a str>,
    tokens: &'a [IndexEntry],
}

/// The `--json` document of `token switch`.
#[derive(serde::Serialize)]
struct SwitchJson<'a> {
    active: &'a str,
}
