//! The single path every message leaving hfsky takes, so a token can never be printed.
//!
//! Secrets are registered as soon as they are read (from env, keyring, file or stdin); `redact`
//! replaces them, and anything shaped like a Hub token (`hf_` + 20 or more alphanumerics) as a
//! second line of defence for tokens we never saw (e.g. echoed back inside a server message),
//! including the Hub's JWT-based `hf_jwt_…` tokens and bare JWTs (OIDC id tokens).

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
const JWT_MASK: &str = "eyJ***";

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

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

fn base64url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// Length of a JWT (`eyJ…` header, payload and signature, base64url, dot-separated) at the
/// start of `bytes`, if there is one: OIDC id tokens are bearer secrets too.
fn jwt_len(bytes: &[u8]) -> Option<usize> {
    if !bytes.starts_with(b"eyJ") {
        return None;
    }
    let mut i = 0;
    for part in 0..3 {
        let n = bytes[i..].iter().take_while(|b| base64url_char(**b)).count();
        if n < if part == 2 { 0 } else { 4 } {
            return None;
        }
        i += n;
        if part < 2 {
            if bytes.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    Some(i)
}

fn mask_token_shapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !token_char(bytes[i - 1]);
        let starts_token = (bytes[i..].starts_with(b"hf_") || bytes[i..].starts_with(b"api_org_")) && boundary;
        if starts_token {
            let prefix = if bytes[i..].starts_with(b"hf_") { 3 } else { 8 };
            let mut body = bytes[i + prefix..].iter().take_while(|b| token_char(**b)).count();
            // A sentence may end right after a token: its final `.` is punctuation.
            while body > 0 && matches!(bytes[i + prefix + body - 1], b'.' | b'-' | b'_') {
                body -= 1;
            }
            if body >= 20 {
                out.push_str(MASK);
                i += prefix + body;
                continue;
            }
        }
        if boundary {
            if let Some(n) = jwt_len(&bytes[i..]) {
                out.push_str(JWT_MASK);
                i += n;
                continue;
            }
        }
        let ch = text[i..].chars().next().expect("index on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
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
        assert_eq!(redact("hf_hub_download and hf_home/hub"), "hf_hub_download and hf_home/hub");
    }

    #[test]
    fn jwt_based_tokens_and_bare_jwts_are_hidden() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmEvYiJ9.c2lnbmF0dXJlLWJ5dGVz";
        assert_eq!(redact(&format!("got {jwt} back")), "got eyJ*** back");
        assert_eq!(redact(&format!("token hf_jwt_{jwt}.")), "token hf_***.");
        assert_eq!(redact("hf_oidc_AbCdEfGhIjKlMnOpQrStUv, done"), "hf_***, done");
        // Ordinary text starting with eyJ but not shaped like a JWT stays.
        assert_eq!(redact("eyJust a word"), "eyJust a word");
    }
}
