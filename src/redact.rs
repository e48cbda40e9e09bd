//! The single path every message leaving hfsky takes, so a token can never be printed.
//!
//! Secrets are registered as soon as they are read (from env, keyring, file or stdin); `redact`
//! replaces them, and anything shaped like a Hub token (`hf_` + 20 or more alphanumerics) as a
//! second line of defence for tokens we never saw (e.g. echoed back inside a server message).

use std::sync::{Mutex, OnceLock};

fn registry() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a secret so that every later `redact` call hides it.
pub fn register_secret(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    let mut secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
        // Longest first so a secret containing another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

const MASK: &str = "hf_***";

/// Hide every registered secret and every token-shaped substring.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    {
        let secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
    }
    mask_token_shapes(&out)
}

fn mask_token_shapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let starts_token = (bytes[i..].starts_with(b"hf_") || bytes[i..].starts_with(b"api_org_"))
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if starts_token {
            let prefix = if bytes[i..].starts_with(b"hf_") { 3 } else { 8 };
            let body = bytes[i + prefix..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            if body >= 20 {
                out.push_str(MASK);
                i += prefix + body;
                continue;
            }
        }
        let ch = text[i..].chars().next().expect("index on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
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
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("hfsky: internal error{place}: {}", redact(&msg));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secret_is_hidden_anywhere() {
        register_secret("s3cr3t-value-xyz");
        assert_eq!(redact("a s3cr3t-value-xyz b"), "a hf_*** b");
    }

    #[test]
    fn token_shapes_are_hidden_even_unregistered() {
        let t = "hf_AbCdEfGhIjKlMnOpQrStUvWx";
        assert_eq!(redact(&format!("token={t}!")), "token=hf_***!");
        assert_eq!(redact("api_org_ABCDEFGHIJKLMNOPQRSTUV1"), "hf_***");
        // Short identifiers that merely start with hf_ stay readable.
        assert_eq!(redact("hf_hub and hf_home"), "hf_hub and hf_home");
        assert_eq!(redact("ünïcode hf_x"), "ünïcode hf_x");
    }
}
