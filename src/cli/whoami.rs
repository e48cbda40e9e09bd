use super::{exit, CliError, Ctx};
use hfsky::auth::OidcOptions;
use hfsky::hub::protocol::TokenRole;

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let rt = ctx.runtime();
    // OIDC applies here only through HF_OIDC_RESOURCE, as in huggingface_hub.
    let (client, cred) = super::client_for(ctx, &rt, None, &OidcOptions::default(), true)?;
    let source = cred.expect("client_for requires a token").source;
    let who = match rt.block_on(client.whoami()) {
        Ok(w) => w,
        Err(e) if e.status() == Some(401) => {
            return Err(CliError { code: exit::AUTH, message: format!("the token from {source} is invalid or revoked: {e}") }.into())
        }
        Err(e) => return Err(e.into()),
    };
    let writable = who.writable_namespaces();
    ctx.say(&format!(
        "{}\n  token: {:?} (role {})\n  from: {source}\n  can write to: {}",
        who.name,
        who.token_name().unwrap_or("?"),
        who.role().map_or("unknown", TokenRole::as_str),
        match &writable {
            Some(_) if who.writable_summary() != "nothing" => who.writable_summary(),
            Some(_) => "nothing (read-only token)".into(),
            None => "unknown".into(),
        }
    ));
    ctx.emit_json(&WhoamiJson {
        user: &who.name,
        token_name: who.token_name(),
        role: who.role(),
        source: &source,
        writable_namespaces: writable.as_deref(),
        writable_repos: who.writable_repos(),
        orgs: who.orgs.iter().map(|o| o.name.as_str()).collect(),
    });
    Ok(())
}

/// The `--json` document of `whoami`.
#[derive(serde::Serialize)]
struct WhoamiJson<'a> {
    user: &'a str,
    token_name: Option<&'a str>,
    role: Option<&'a TokenRole>,
    source: &'a hfsky::auth::TokenSource,
    writable_namespaces: Option<&'a [String]>,
    writable_repos: Vec<String>,
    orgs: Vec<&'a str>,
}
