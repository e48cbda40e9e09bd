use super::{exit, CliError, Ctx};
use hfsky::auth;
use hfsky::hub::HubClient;

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let Some((token, source)) = auth::resolve()? else {
        return Err(CliError { code: exit::AUTH, message: "not logged in: run `hfsky login` (or set HF_TOKEN)".into() }.into());
    };
    let client = HubClient::new(&ctx.endpoint, Some(token))?;
    let who = match ctx.runtime().block_on(client.whoami()) {
        Ok(w) => w,
        Err(e) if e.status() == Some(401) => {
            return Err(CliError { code: exit::AUTH, message: format!("the token from {source} is invalid or revoked: {e}") }.into())
        }
        Err(e) => return Err(e.into()),
    };
    let writable = who.writable_namespaces();
    ctx.say(&format!("{}\n  token: {:?} (role {})\n  from: {source}\n  can write to: {}", who.name,
        who.token_name().unwrap_or("?"), who.role().unwrap_or("unknown"),
        match &writable { Some(ns) if !ns.is_empty() => ns.join(", "), Some(_) => "nothing (read-only token)".into(), None => "unknown".into() }));
    ctx.emit_json(&serde_json::json!({
        "user": who.name, "token_name": who.token_name(), "role": who.role(), "source": source,
        "writable_namespaces": writable, "orgs": who.orgs.iter().map(|o| &o.name).collect::<Vec<_>>(),
    }));
    Ok(())
}
