//! huggingface_hub's locations, so both tools share one login file and one cache.

use std::path::{Path, PathBuf};

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn hf_home() -> PathBuf {
    if let Some(h) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("huggingface");
    }
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")).unwrap_or_default();
    PathBuf::from(home).join(".cache").join("huggingface")
}

/// `HF_TOKEN_PATH`, else `$HF_HOME/token`.
pub fn token_file() -> PathBuf {
    std::env::var_os("HF_TOKEN_PATH").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| hf_home().join("token"))
}

/// `stored_tokens` sits beside the token file, as in huggingface_hub.
pub fn stored_tokens_file() -> PathBuf {
    token_file().parent().map(|p| p.join("stored_tokens")).unwrap_or_else(|| hf_home().join("stored_tokens"))
}

pub fn index_file() -> PathBuf {
    hf_home().join("hfsky").join("tokens.json")
}

/// Writes a file readable by its owner only (0600, parent 0700 where new), atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("file paths have a parent");
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    crate::atomic::write_private(path, bytes)
}
