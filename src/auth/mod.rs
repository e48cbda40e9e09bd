//! Where the Hub token lives and how it is found.
//!
//! Resolution order: OIDC (when `HF_OIDC_RESOURCE` is set, or `--oidc`/`--oidc-token-file` is
//! given: a CI id token exchanged for a short-lived token scoped to the target repo) >
//! `HF_TOKEN` > `HUGGING_FACE_HUB_TOKEN` > the OS keyring (active name) > `$HF_HOME/token`
//! (huggingface_hub's file, read for compatibility; written only with `--store file`). Named tokens are listed in `$HF_HOME/hfsky/tokens.json`, which holds
//! names and where each is stored, never a secret.

pub mod keyring;
pub mod oidc;
pub mod paths;
pub mod stored_tokens;

use crate::hub::protocol::TokenRole;
use crate::hub::{HubClient, HubError};
use crate::repo_id::RepoId;
use crate::token::{Token, TokenError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{source_name}: {error}")]
    BadToken { source_name: String, error: TokenError },
    #[error("the OS keyring is not reachable ({detail}).\n  On a desktop, unlock your keyring (GNOME Keyring/KWallet, macOS Keychain, Windows Credential Manager) and retry.\n  On a headless machine or in CI: set HF_TOKEN in the environment, or run `hfsky login --store file` to keep the token in a 0600 file ($HF_HOME/token) that huggingface_hub reads too.")]
    KeyringUnavailable { detail: String },
    #[error("keyring error: {0}")]
    Keyring(String),
    #[error("no stored token is named {0:?}: see `hfsky token list`")]
    UnknownName(String),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a valid token index ({detail}); move it aside and log in again", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(transparent)]
    Oidc(#[from] oidc::OidcError),
    #[error("HF_OIDC_RESOURCE is {resource:?} but this command publishes to {target}: the exchanged token could not write there. Set HF_OIDC_RESOURCE={target} (or unset it and pass --oidc)")]
    OidcResourceMismatch { resource: String, target: String },
    #[error("HF_OIDC_RESOURCE={0:?} is not a model repo id (namespace/name)")]
    BadOidcResource(String),
    #[error("--oidc needs the repo to publish to: the exchanged token is scoped to that one repo")]
    OidcNeedsRepo,
    #[error(transparent)]
    Hub(#[from] HubError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Keyring,
    File,
}

impl StoreKind {
    /// The name `--store` takes and the token index records.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Keyring => "keyring",
            StoreKind::File => "file",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenSource {
    EnvHfToken,
    EnvHuggingFaceHubToken,
    Keyring {
        name: String,
    },
    File {
        path: PathBuf,
    },
    /// A short-lived token from an OIDC exchange, scoped to `resource`.
    Oidc {
        resource: String,
        id_token_from: String,
    },
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::EnvHfToken => write!(f, "the HF_TOKEN environment variable"),
            TokenSource::EnvHuggingFaceHubToken => write!(f, "the HUGGING_FACE_HUB_TOKEN environment variable"),
            TokenSource::Keyring { name } => write!(f, "the OS keyring (token {name:?})"),
            TokenSource::File { path } => write!(f, "the file {}", path.display()),
            TokenSource::Oidc { resource, id_token_from } => {
                write!(f, "an OIDC token exchange for {resource} (id token from {id_token_from})")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub store: StoreKind,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub role: Option<TokenRole>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenIndex {
    #[serde(default)]
    pub active: Option<String>,
    #[serde(default)]
    pub tokens: Vec<IndexEntry>,
}

impl TokenIndex {
    pub fn load() -> Result<TokenIndex, AuthError> {
        let path = paths::index_file();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AuthError::Corrupt { path, detail: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenIndex::default()),
            Err(source) => Err(AuthError::Io { path, source }),
        }
    }

    pub fn save(&self) -> Result<(), AuthError> {
        let path = paths::index_file();
        paths::write_private(&path, &serde_json::to_vec_pretty(self).expect("serializable")).map_err(|source| AuthError::Io { path, source })
    }

    pub fn get(&self, name: &str) -> Option<&IndexEntry> {
        self.tokens.iter().find(|t| t.name == name)
    }

    pub fn upsert(&mut self, entry: IndexEntry) {
        self.tokens.retain(|t| t.name != entry.name);
        self.tokens.push(entry);
        self.tokens.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

fn env_token(var: &str) -> Result<Option<Token>, AuthError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => {
            Token::parse(&v).map(Some).map_err(|error| AuthError::BadToken { source_name: format!("the {var} environment variable"), error })
        }
        _ => Ok(None),
    }
}

/// The token to use now and where it came from; `None` when not logged in anywhere.
pub fn resolve() -> Result<Option<(Token, TokenSource)>, AuthError> {
    if let Some(t) = env_token("HF_TOKEN")? {
        return Ok(Some((t, TokenSource::EnvHfToken)));
    }
    if let Some(t) = env_token("HUGGING_FACE_HUB_TOKEN")? {
        return Ok(Some((t, TokenSource::EnvHuggingFaceHubToken)));
    }
    let index = TokenIndex::load()?;
    if let Some(active) = index.active.as_deref().and_then(|a| index.get(a)) {
        if active.store == StoreKind::Keyring {
            let store = keyring::open()?;
            return match keyring::get(&store, &active.name)? {
                Some(t) => Ok(Some((t, TokenSource::Keyring { name: active.name.clone() }))),
                None => Err(AuthError::Keyring(format!(
                    "the active token {:?} is missing from the keyring: run `hfsky login --name {}` again",
                    active.name, active.name
                ))),
            };
        }
    }
    let path = paths::token_file();
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Token::parse(&s)
            .map(|t| Some((t, TokenSource::File { path: path.clone() })))
            .map_err(|error| AuthError::BadToken { source_name: path.display().to_string(), error }),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::Io { path, source }),
    }
}

/// How a command asks for keyless publishing: `--oidc` and `--oidc-token-file FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OidcOptions {
    pub enabled: bool,
    pub token_file: Option<PathBuf>,
}

/// A resolved credential. With OIDC, `client()` exchanges again when the short-lived token is
/// refused mid-push.
#[derive(Clone)]
pub struct Credential {
    pub token: Token,
    pub source: TokenSource,
    /// Lifetime of an exchanged token in seconds, when the Hub said.
    pub expires_in: Option<u64>,
    pub oidc: Option<Arc<oidc::OidcSession>>,
}

impl Credential {
    pub fn client(&self, endpoint: &str) -> Result<HubClient, HubError> {
        let client = HubClient::new(endpoint, Some(self.token.clone()))?;
        Ok(match &self.oidc {
            Some(s) => client.with_refresh(s.clone()),
            None => client,
        })
    }
}

/// The repo an OIDC token must be scoped to, or `None` when OIDC is off. `write_target` is the
/// repo the command writes to (None for read-only commands).
pub fn oidc_resource(write_target: Option<&RepoId>, opts: &OidcOptions) -> Result<Option<RepoId>, AuthError> {
    if let Some(res) = std::env::var("HF_OIDC_RESOURCE").ok().filter(|v| !v.trim().is_empty()) {
        let resource = RepoId::parse(res.trim()).map_err(|_| AuthError::BadOidcResource(res.clone()))?;
        if let Some(target) = write_target.filter(|t| **t != resource) {
            return Err(AuthError::OidcResourceMismatch { resource: resource.to_string(), target: target.to_string() });
        }
        return Ok(Some(resource));
    }
    if opts.enabled || opts.token_file.is_some() {
        return write_target.cloned().map(Some).ok_or(AuthError::OidcNeedsRepo);
    }
    Ok(None)
}

/// The credential for a command that talks to `endpoint` and writes to `write_target`: OIDC
/// first (minting and exchanging now), else `resolve()`. `None` when there is none at all.
pub async fn resolve_for(endpoint: &str, write_target: Option<&RepoId>, opts: &OidcOptions) -> Result<Option<Credential>, AuthError> {
    let Some(resource) = oidc_resource(write_target, opts)? else {
        return Ok(resolve()?.map(|(token, source)| Credential { token, source, expires_in: None, oidc: None }));
    };
    let source = oidc::IdTokenSource::detect(opts.token_file.clone())?;
    let session = oidc::OidcSession::new(endpoint, &resource.to_string(), source.clone())?;
    let (token, expires_in) = session.exchange().await?;
    Ok(Some(Credential {
        token,
        source: TokenSource::Oidc { resource: resource.to_string(), id_token_from: source.to_string() },
        expires_in,
        oidc: Some(Arc::new(session)),
    }))
}

/// A Hub client for `endpoint` with the credential `resolve_for` finds (anonymous if none).
pub async fn hub_client(endpoint: &str, write_target: Option<&RepoId>, opts: &OidcOptions) -> Result<(HubClient, Option<Credential>), AuthError> {
    match resolve_for(endpoint, write_target, opts).await? {
        Some(c) => Ok((c.client(endpoint)?, Some(c))),
        None => Ok((HubClient::new(endpoint, None)?, None)),
    }
}

/// Stores a validated token under `name` and makes it the active one.
pub fn save(name: &str, token: &Token, store: StoreKind, user: Option<String>, role: Option<TokenRole>) -> Result<(), AuthError> {
    match store {
        StoreKind::Keyring => {
            let s = keyring::open()?;
            keyring::set(&s, name, token)?;
        }
        StoreKind::File => {
            stored_tokens::set(name, token)?;
            let path = paths::token_file();
            paths::write_private(&path, token.expose().as_bytes()).map_err(|source| AuthError::Io { path, source })?;
        }
    }
    let mut index = TokenIndex::load()?;
    index.upsert(IndexEntry { name: name.to_string(), store, user, role });
    index.active = Some(name.to_string());
    index.save()
}

/// Forgets one stored token. Returns false if it was not known.
pub fn remove(name: &str) -> Result<bool, AuthError> {
    let mut index = TokenIndex::load()?;
    let Some(entry) = index.get(name).cloned() else { return Ok(false) };
    match entry.store {
        StoreKind::Keyring => {
            let s = keyring::open()?;
            keyring::delete(&s, name)?;
        }
        StoreKind::File => {
            let old = stored_tokens::remove(name)?;
            // Only clear $HF_HOME/token if it still holds this very token.
            let path = paths::token_file();
            if let (Some(old), Ok(current)) = (old, std::fs::read_to_string(&path)) {
                if current.trim() == old.expose() {
                    std::fs::remove_file(&path).map_err(|source| AuthError::Io { path, source })?;
                }
            }
        }
    }
    index.tokens.retain(|t| t.name != name);
    if index.active.as_deref() == Some(name) {
        index.active = None;
    }
    index.save()?;
    Ok(true)
}

/// Makes a stored token the active one.
pub fn switch(name: &str) -> Result<IndexEntry, AuthError> {
    let mut index = TokenIndex::load()?;
    let entry = index.get(name).cloned().ok_or_else(|| AuthError::UnknownName(name.to_string()))?;
    if entry.store == StoreKind::File {
        let token = stored_tokens::get(name)?.ok_or_else(|| AuthError::UnknownName(name.to_string()))?;
        let path = paths::token_file();
        paths::write_private(&path, token.expose().as_bytes()).map_err(|source| AuthError::Io { path, source })?;
    }
    index.active = Some(name.to_string());
    index.save()?;
    Ok(entry)
}
