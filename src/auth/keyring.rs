//! The OS keyring through keyring-core stores: Secret Service (Linux), Keychain (macOS),
//! Credential Manager (Windows). Opened explicitly (never the v1 facade), so a missing
//! keyring is reported instead of silently falling back to memory.

use super::AuthError;
use crate::token::Token;
use keyring_core::{CredentialStore, Entry, Error};
use std::sync::Arc;

/// The keyring service name; `HFSKY_KEYRING_SERVICE` isolates test runs from a real login.
pub fn service() -> String {
    std::env::var("HFSKY_KEYRING_SERVICE").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "hfsky".to_string())
}

fn unavailable(e: Error) -> AuthError {
    AuthError::KeyringUnavailable { detail: crate::redact::redact(&e.to_string()) }
}

#[cfg(target_os = "linux")]
pub fn open() -> Result<Arc<CredentialStore>, AuthError> {
    let s: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new().map_err(unavailable)?;
    Ok(s)
}

#[cfg(target_os = "macos")]
pub fn open() -> Result<Arc<CredentialStore>, AuthError> {
    let s: Arc<CredentialStore> = apple_native_keyring_store::keychain::Store::new().map_err(unavailable)?;
    Ok(s)
}

#[cfg(target_os = "windows")]
pub fn open() -> Result<Arc<CredentialStore>, AuthError> {
    let s: Arc<CredentialStore> = windows_native_keyring_store::Store::new().map_err(unavailable)?;
    Ok(s)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
pub fn open() -> Result<Arc<CredentialStore>, AuthError> {
    Err(AuthError::KeyringUnavailable { detail: "no keyring backend for this OS".into() })
}

fn entry(store: &Arc<CredentialStore>, name: &str) -> Result<Entry, AuthError> {
    Entry::new_in_store(store, &service(), name).map_err(map)
}

fn map(e: Error) -> AuthError {
    match e {
        Error::NoDefaultStore | Error::NoStorageAccess(_) | Error::PlatformFailure(_) => unavailable(e),
        other => AuthError::Keyring(crate::redact::redact(&other.to_string())),
    }
}

pub fn get(store: &Arc<CredentialStore>, name: &str) -> Result<Option<Token>, AuthError> {
    match entry(store, name)?.get_password() {
        Ok(p) => Token::parse(&p).map(Some).map_err(|error| AuthError::BadToken { source_name: format!("keyring entry {name:?}"), error }),
        Err(Error::NoEntry) => Ok(None),
        Err(e) => Err(map(e)),
    }
}

pub fn set(store: &Arc<CredentialStore>, name: &str, token: &Token) -> Result<(), AuthError> {
    entry(store, name)?.set_password(token.expose()).map_err(map)
}

pub fn delete(store: &Arc<CredentialStore>, name: &str) -> Result<(), AuthError> {
    match entry(store, name)?.delete_credential() {
        Ok(()) | Err(Error::NoEntry) => Ok(()),
        Err(e) => Err(map(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_store_roundtrip() {
        let store: Arc<CredentialStore> = keyring_core::mock::Store::new().unwrap();
        let t = Token::parse("hf_mockmockmockmockmock").unwrap();
        assert_eq!(get(&store, "default").unwrap(), None);
        set(&store, "default", &t).unwrap();
        assert_eq!(get(&store, "default").unwrap(), Some(t));
        delete(&store, "default").unwrap();
        assert_eq!(get(&store, "default").unwrap(), None);
        delete(&store, "default").unwrap();
    }
}
