//! The `hfsky` command line: argument parsing, one module per command, and the single place
//! where errors become messages (always redacted) and exit codes.

mod card;
mod ci;
mod compare;
mod dataset;
mod diagnostics;
mod download;
mod download_bar;
mod env;
mod generate;
mod hash;
mod hub;
mod hub_render;
mod login;
mod logout;
mod lora;
mod push;
mod token;
mod train;
mod whoami;

use clap::{Parser, Subcommand};
use hfsky::auth::{Credential, OidcOptions};
use hfsky::redact::redact;
use hfsky::repo_id::RepoId;
use std::io::IsTerminal;

/// Stable exit codes, documented in the README.
pub mod exit {
    use hfsky::exit::ExitCategory;
    /// Success, including "nothing to push" and a dry run.
    pub const OK: i32 = 0;
    /// The job failed: a Hub error, I/O, a conflicting concurrent push, anything else.
    pub const FAILURE: i32 = ExitCategory::Failure.code();
    /// Usage or bad input: flags, repo ids, paths, files, token format, endpoint.
    pub const BAD_INPUT: i32 = ExitCategory::BadInput.code();
    /// Authentication: no credential (not logged in, no usable credential store, no OIDC id
    /// token), an invalid or refused token (401/403), a refused OIDC exchange.
    pub const AUTH: i32 = ExitCategory::Auth.code();
    // The network (4) is only ever decided by a library error: `ExitCategory::Network`.
}

#[derive(Parser, Debug)]
#[command(name = "hfsky", version, about = "Fine-tune a text-to-image LoRA on your photos and publish it on the Hugging Face Hub")]
pub struct Cli {
    /// Hub URL (default: $HF_ENDPOINT, else https://huggingface.co)
    #[arg(long, global = true, env = "HF_ENDPOINT", default_value = hfsky::hub::client::DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// Machine-readable JSON on stdout, no progress bars
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr: retries (-v), then debug (-vv) and trace (-vvv) events; RUST_LOG,
    /// when set, replaces this filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Store a Hub token in the OS keyring after checking it against the Hub
    Login(login::Args),
    /// Forget a stored token
    Logout(logout::Args),
    /// Show who the current token belongs to and where it came from
    Whoami,
    /// List or switch stored tokens
    #[command(subcommand)]
    Token(token::Cmd),
    /// Upload a folder to a model (or dataset) repo in one commit
    Push(push::Args),
    /// Download files into the Hugging Face cache (or a folder)
    Download(download::Args),
    /// Generate images locally with a base pipeline and an optional LoRA
    Generate(generate::Args),
    /// Render a prompt locally and through the Hub, measure both, and name the settings that
    /// explain the difference (HTML + JSON report)
    Compare(compare::Args),
    /// Train a DreamBooth LoRA from train.yaml (any key can also be a flag)
    Train(train::Args),
    /// Check the token can write to --repo, train, write the model card, push it all in one commit
    TrainAndPush(train::PushArgs),
    /// Model cards
    #[command(subcommand)]
    Card(card::Cmd),
    /// LoRA files: convert between PEFT/diffusers, kohya and ComfyUI layouts
    #[command(subcommand)]
    Lora(lora::Cmd),
    /// Check photos, manage captions, and report what the model will learn from them
    #[command(subcommand)]
    Dataset(dataset::Cmd),
    /// The offline Hub
    #[command(subcommand)]
    Hub(hub::Cmd),
    /// CI publishing: write a workflow, summarise a push for the job summary
    #[command(subcommand)]
    Ci(ci::Cmd),
    /// Version, build, devices, cache and token source, for bug reports (never the token)
    Env,
    /// sha256 of a file (used by the benchmark)
    #[command(hide = true)]
    Hash { file: std::path::PathBuf },
}

/// Output settings shared by every command.
pub struct Ctx {
    pub endpoint: String,
    pub json: bool,
    pub quiet: bool,
}

impl Ctx {
    pub fn show_progress(&self) -> bool {
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }

    /// Human output (suppressed by --json and --quiet), always redacted.
    pub fn say(&self, text: &str) {
        if !self.json && !self.quiet {
            println!("{}", redact(text));
        }
    }

    /// The one JSON document a command prints with --json, redacted like everything else.
    pub fn emit_json<T: serde::Serialize + ?Sized>(&self, doc: &T) {
        if self.json {
            println!("{}", redact(&serde_json::to_string_pretty(doc).expect("serializable")));
        }
    }

    pub fn runtime(&self) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
    }
}

/// A command-layer error that names its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

/// The command already printed its result (with --json, its one JSON document) and fails only
/// through its exit code, e.g. `dataset check` with findings at or above --fail-on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Reported {
    pub code: i32,
    pub message: String,
}

pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    CliError { code: exit::BAD_INPUT, message: message.into() }.into()
}

fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return c.code;
        }
        if let Some(r) = cause.downcast_ref::<Reported>() {
            return r.code;
        }
        // Error types that know their category (`hfsky::exit`); the diffusion errors (all about
        // the model files the user named), repo ids and tokens below are bad input as a whole.
        if let Some(c) = hfsky::exit::category_of(cause) {
            return c.code();
        }
        if cause.downcast_ref::<hfsky::diffusion::config::PipelineError>().is_some()
            || cause.downcast_ref::<hfsky::diffusion::lora::LoraError>().is_some()
            || cause.downcast_ref::<hfsky::diffusion::schedulers::SchedulerError>().is_some()
        {
            return exit::BAD_INPUT;
        }
        if cause.downcast_ref::<hfsky::repo_id::IdError>().is_some() || cause.downcast_ref::<hfsky::token::TokenError>().is_some() {
            return exit::BAD_INPUT;
        }
    }
    exit::FAILURE
}

pub fn run() -> i32 {
    diagnostics::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::BAD_INPUT } else { exit::OK };
            // A usage error (a bad flag value such as `--repo bad`) is still one JSON document
            // with --json, like every other error.
            if code != exit::OK && std::env::args_os().any(|a| a == "--json") {
                let rendered = e.render().to_string();
                let message = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
                print_error_json(message, code);
            }
            let _ = e.print();
            return code;
        }
    };
    diagnostics::init(cli.quiet, cli.verbose);
    let ctx = Ctx { endpoint: cli.endpoint.clone(), json: cli.json, quiet: cli.quiet };
    let result = match cli.command {
        Command::Login(a) => login::run(&ctx, a),
        Command::Logout(a) => logout::run(&ctx, a),
        Command::Whoami => whoami::run(&ctx),
        Command::Env => env::run(&ctx),
        Command::Token(c) => token::run(&ctx, c),
        Command::Push(a) => push::run(&ctx, a),
        Command::Download(a) => download::run(&ctx, a),
        Command::Generate(a) => generate::run(&ctx, a),
        Command::Compare(a) => compare::run(&ctx, a),
        Command::Dataset(c) => dataset::run(&ctx, c),
        Command::Hub(c) => hub::run(&ctx, c),
        Command::Ci(c) => ci::run(&ctx, c),
        Command::Train(a) => train::run(&ctx, a),
        Command::TrainAndPush(a) => train::run_and_push(&ctx, a),
        Command::Card(c) => card::run(&ctx, c),
        Command::Lora(c) => lora::run(&ctx, c),
        Command::Hash { file } => hash::run(&ctx, &file),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = exit_code(&e);
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(&format!(": {c}"));
                }
            }
            if ctx.json && e.downcast_ref::<Reported>().is_none() {
                print_error_json(&msg, code);
            }
            eprintln!("error: {}", redact(&msg));
            code
        }
    }
}

/// The `--json` document of any command that failed, on stdout; `ci summary` reads it back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorJson {
    /// The message, redacted, as the human output prints it after `error: `.
    pub error: String,
    /// The process's exit code (README, "Exit codes").
    pub exit_code: i32,
}

fn print_error_json(message: &str, exit_code: i32) {
    println!("{}", redact(&serde_json::to_string(&ErrorJson { error: message.to_string(), exit_code }).expect("serializable")));
}

fn not_logged_in() -> anyhow::Error {
    CliError { code: exit::AUTH, message: "not logged in: run `hfsky login` (in CI: set HF_TOKEN, or publish keylessly with --oidc)".into() }.into()
}

/// A Hub client with the credential for a command that writes to `write_target` (OIDC first,
/// see `hfsky::auth::resolve_for`), anonymous when there is none and `require_token` is false.
pub fn client_for(
    ctx: &Ctx,
    rt: &tokio::runtime::Runtime,
    write_target: Option<&RepoId>,
    oidc: &OidcOptions,
    require_token: bool,
) -> anyhow::Result<(hfsky::hub::HubClient, Option<Credential>)> {
    let (mut client, cred) = rt.block_on(hfsky::auth::hub_client(&ctx.endpoint, write_target, oidc))?;
    if require_token && cred.is_none() {
        return Err(not_logged_in());
    }
    if ctx.show_progress() {
        client = client.with_download_progress(download_bar::bar());
    }
    Ok((client, cred))
}

/// A Hub client for reading (OIDC only through HF_OIDC_RESOURCE), for commands that do not
/// write to a repo.
pub fn client(ctx: &Ctx, require_token: bool) -> anyhow::Result<hfsky::hub::HubClient> {
    let rt = ctx.runtime();
    Ok(client_for(ctx, &rt, None, &OidcOptions::default(), require_token)?.0)
}
