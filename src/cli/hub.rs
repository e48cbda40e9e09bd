use super::{bad_input, Ctx};
use hfsky::hub::serve::{serve, Faults, ServeConfig, TokenSpec};
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
    /// Inject failures: e.g. 500=0.1,429=0.05,drop=0.05,retry-after=1,seed=7
    #[arg(long)]
    faults: Option<String>,
    /// LFS objects above this size are uploaded in parts of this size (MiB)
    #[arg(long, default_value_t = 16)]
    multipart_chunk_mib: u64,
    /// Largest JSON/NDJSON request body (MiB); larger ones get 413
    #[arg(long, default_value_t = 256)]
    max_body_mib: usize,
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let Cmd::Serve(a) = cmd;
    let tokens = a.tokens.iter().map(|t| TokenSpec::parse(t).map_err(bad_input)).collect::<anyhow::Result<Vec<_>>>()?;
    let faults = a.faults.as_deref().map(Faults::parse).transpose().map_err(bad_input)?.map(Arc::new);
    if a.multipart_chunk_mib == 0 {
        return Err(bad_input("--multipart-chunk-mib must be at least 1"));
    }
    let cfg = ServeConfig {
        root: a.root.clone(),
        tokens,
        faults,
        multipart_chunk: a.multipart_chunk_mib * 1024 * 1024,
        max_body: a.max_body_mib * 1024 * 1024,
    };
    let addr = std::net::SocketAddr::new(a.host, a.port);
    let json = ctx.json;
    ctx.runtime().block_on(async move {
        let server = serve(cfg, addr, |bound| {
            if json {
                println!("{}", serde_json::json!({ "endpoint": format!("http://{bound}") }));
            } else {
                println!("Offline Hub listening on http://{bound}");
            }
            let _ = std::io::stdout().flush();
        });
        tokio::select! {
            r = server => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    }).map_err(|e| anyhow::anyhow!("offline Hub on {addr}: {e}"))?;
    Ok(())
}
