//! Where diagnostics go: the library emits `tracing` events (retries, timings); `-q`, `-v` (or
//! `RUST_LOG`) choose which reach stderr, always redacted, as does an internal error (a panic).

use hfsky::redact::redact;
use tracing_subscriber::EnvFilter;

/// The filter for the flags: errors only with `-q`; warnings by default; hfsky's info, debug and
/// trace events with `-v`, `-vv` and `-vvv` (dependencies stay at warnings). `RUST_LOG`, when
/// set, replaces it (e.g. `RUST_LOG=hfsky=debug,reqwest=debug`).
fn filter(quiet: bool, verbose: u8, rust_log: Option<&str>) -> EnvFilter {
    if let Some(directives) = rust_log.filter(|s| !s.trim().is_empty()) {
        if let Ok(f) = EnvFilter::try_new(directives) {
            return f;
        }
    }
    let directives = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,hfsky=info",
        (false, 2) => "warn,hfsky=debug",
        (false, _) => "warn,hfsky=trace",
    };
    EnvFilter::new(directives)
}

/// Writes each event to stderr through `redact` (a URL or an error body can carry a token).
struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer formats a whole event, then writes it in one call.
        std::io::Write::write_all(&mut std::io::stderr().lock(), redact(&String::from_utf8_lossy(buf)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

/// Installs the subscriber for this process: the message alone on a line, as the rest of the
/// output reads (no timestamp, level or module).
pub fn init(quiet: bool, verbose: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    tracing_subscriber::fmt()
        .with_env_filter(filter(quiet, verbose, rust_log.as_deref()))
        .with_writer(|| RedactedStderr)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .init();
}

/// Panics can carry formatted values; route them through `redact` too.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("hfsky: internal error{place}: {}", redact(&msg));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_the_level_and_rust_log_replaces_them() {
        let f = |q, v, env: Option<&str>| filter(q, v, env).to_string();
        assert_eq!(f(false, 0, None), "warn");
        assert_eq!(f(true, 3, None), "error", "-q wins over -v");
        assert!(f(false, 1, None).contains("hfsky=info"));
        assert!(f(false, 2, None).contains("hfsky=debug"));
        assert_eq!(f(false, 0, Some("hfsky=trace")), "hfsky=trace");
        assert_eq!(f(false, 1, Some(" ")), f(false, 1, None), "an empty RUST_LOG is unset");
    }
}
