//! huggingface_hub's `stored_tokens` INI file (`[name]` / `hf_token = …`), used by `--store file`.

use super::{paths, AuthError};
use crate::token::Token;
use std::collections::BTreeMap;

type Sections = BTreeMap<String, BTreeMap<String, String>>;

fn parse(text: &str) -> Sections {
    let mut out = Sections::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(name.to_string());
            out.entry(name.to_string()).or_default();
        } else if let (Some(sec), Some((k, v))) = (&current, l.split_once('=')) {
            out.entry(sec.clone()).or_default().insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

fn render(s: &Sections) -> String {
    let mut out = String::new();
    for (name, kv) in s {
        out.push_str(&format!("[{name}]\n"));
        for (k, v) in kv {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push('\n');
    }
    out
}

fn load() -> Result<Sections, AuthError> {
    let path = paths::stored_tokens_file();
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sections::new()),
        Err(source) => Err(AuthError::Io { path, source }),
    }
}

fn save(s: &Sections) -> Result<(), AuthError> {
    let path = paths::stored_tokens_file();
    paths::write_private(&path, render(s).as_bytes()).map_err(|source| AuthError::Io { path, source })
}

pub fn get(name: &str) -> Result<Option<Token>, AuthError> {
    let s = load()?;
    match s.get(name).and_then(|kv| kv.get("hf_token")) {
        Some(t) => {
            Token::parse(t).map(Some).map_err(|error| AuthError::BadToken { source_name: paths::stored_tokens_file().display().to_string(), error })
        }
        None => Ok(None),
    }
}

pub fn set(name: &str, token: &Token) -> Result<(), AuthError> {
    let mut s = load()?;
    s.entry(name.to_string()).or_default().insert("hf_token".into(), token.expose().to_string());
    save(&s)
}

pub fn remove(name: &str) -> Result<Option<Token>, AuthError> {
    let old = get(name)?;
    let mut s = load()?;
    if s.remove(name).is_some() {
        save(&s)?;
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_roundtrip_keeps_other_keys() {
        let text = "[a]\nhf_token = hf_aaa\nrefresh_token = r\n\n[b]\nhf_token = hf_bbb\n";
        let s = parse(text);
        assert_eq!(s["a"]["refresh_token"], "r");
        assert_eq!(parse(&render(&s)), s);
    }
}
