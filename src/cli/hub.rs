use super::{bad_input, Ctx};
use hfsky::hub::inference::Provider;
use hfsky::hub::serve::{
    serve, Faults, InferenceConfig, InferenceRenderer, OidcTrust, RenderProfile, ServeConfig, TokenSpec, TrustedIssuer, TrustedSubject,
};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Run an offline Hub (same HTTP protocol) on loopback, storing everything under --root
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Folder for repos, commits and blobs (kept across restarts)
    #[arg(long)]
    root: PathBuf,
    /// Port (0 = any free port; the address is printed)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to bind
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Accepted token, NAME:ROLE:SECRET with ROLE read or write (repeatable)
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Inject failures: e.g. 500=0.1,429=0.05,drop=0.05,retry-after=1,seed=7; on the inference
    /// routes also infer-402=RATE, infer-404=RATE, infer-429=RATE
    #[arg(long)]
    faults: Option<String>,
    /// Inference providers to advertise and answer (rendered locally), in the order `auto`
    /// picks them: hf-inference, fal-ai, replicate
    #[arg(long, value_delimiter = ',', default_value = "hf-inference")]
    providers: Vec<Provider>,
    /// YAML overriding the Hub worker's render defaults: scheduler, steps, guidance, width,
    /// height, apply_lora, lora_scale, base_model, dtype
    #[arg(long, value_name = "FILE.yaml")]
    render_profile: Option<PathBuf>,
    /// LFS objects above this size are uploaded in parts of this size (MiB)
    #[arg(long, default_value_t = 16)]
    multipart_chunk_mib: u64,
    /// Largest JSON/NDJSON request body (MiB); larger ones get 413
    #[arg(long, default_value_t = 256)]
    max_body_mib: usize,
    /// Trust OIDC id tokens from this issuer, checked with the keys of a JWKS file:
    /// ISSUER_URL=JWKS_FILE (repeatable)
    #[arg(long = "trust-issuer", value_name = "URL=JWKS_FILE")]
    trust_issuers: Vec<String>,
    /// Let id tokens with this subject publish to this repo: SUBJECT=namespace/name, e.g.
    /// "repo:org/project:ref:refs/heads/main=alice/sky-lora" (repeatable)
    #[arg(long = "trust-subject", value_name = "SUBJECT=REPO")]
    trust_subjects: Vec<String>,
    /// The audience (aud) id tokens must name (default: this Hub's URL as clients reach it)
    #[arg(long)]
    oidc_audience: Option<String>,
    /// Lifetime of tokens issued by /oauth/token, in seconds
    #[arg(long, default_value_t = 3600)]
    oidc_token_ttl: u64,
}

fn oidc_trust(a: &ServeArgs) -> anyhow::Result<Option<OidcTrust>> {
    if a.trust_issuers.is_empty() {
        if !a.trust_subjects.is_empty() {
            return Err(bad_input("--trust-subject needs --trust-issuer URL=JWKS_FILE: whose id tokens should be trusted?"));
        }
        return Ok(None);
    }
    if a.oidc_token_ttl == 0 {
        return Err(bad_input("--oidc-token-ttl must be at least 1 second"));
    }
    Ok(Some(OidcTrust {
        issuers: a.trust_issuers.iter().map(|s| TrustedIssuer::parse(s).map_err(bad_input)).collect::<anyhow::Result<_>>()?,
        subjects: a.trust_subjects.iter().map(|s| TrustedSubject::parse(s).map_err(bad_input)).collect::<anyhow::Result<_>>()?,
        audience: a.oidc_audience.as_ref().map(|s| s.trim_end_matches('/').to_string()),
        token_ttl: std::time::Duration::from_secs(a.oidc_token_ttl),
    }))
}

fn inference_config(a: &ServeArgs) -> anyhow::Result<InferenceConfig> {
    let profile = match &a.render_profile {
        Some(p) => RenderProfile::load(p).map_err(|e| bad_input(format!("--render-profile {e}")))?,
        None => RenderProfile::default(),
    };
    let renderer = super::hub_render::EngineRenderer::new();
    let origin = a.render_profile.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default();
    renderer.check(&profile).map_err(|e| bad_input(format!("--render-profile{origin}: {e}")))?;
    let mut providers: Vec<Provider> = vec![];
    for p in &a.providers {
        if !providers.contains(p) {
            providers.push(*p);
        }
    }
    Ok(InferenceConfig { providers, profile, renderer: Arc::new(renderer) })
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let Cmd::Serve(a) = cmd;
    let tokens = a.tokens.iter().map(|t| TokenSpec::parse(t).map_err(bad_input)).collect::<anyhow::Result<Vec<_>>>()?;
    let faults = a.faults.as_deref().map(Faults::parse).transpose().map_err(bad_input)?.map(Arc::new);
    if a.multipart_chunk_mib == 0 {
        return Err(bad_input("--multipart-chunk-mib must be at least 1"));
    }
    let oidc = oidc_trust(&a)?;
    let inference = inference_config(&a)?;
    let cfg = ServeConfig {
        root: a.root.clone(),
        tokens,
        faults,
        multipart_chunk: a.multipart_chunk_mib * 1024 * 1024,
        max_body: a.max_body_mib * 1024 * 1024,
        oidc,
        inference: Some(inference),
    };
    let addr = std::net::SocketAddr::new(a.host, a.port);
    let json = ctx.json;
    ctx.runtime()
        .block_on(async move {
            let server = serve(cfg, addr, |bound| {
                if json {
                    /// The `--json` line of `hub serve`, printed once listening.
                    #[derive(serde::Serialize)]
                    struct ServeJson {
                        endpoint: String,
                    }
                    println!("{}", serde_json::to_string(&ServeJson { endpoint: format!("http://{bound}") }).expect("serializable"));
                } else {
                    println!("Offline Hub listening on http://{bound}");
                }
                let _ = std::io::stdout().flush();
            });
            tokio::select! {
                r = server => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        })
        .map_err(|e| anyhow::anyhow!("offline Hub on {addr}: {e}"))?;
    Ok(())
}
