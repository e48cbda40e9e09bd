//! Records the git commit hfsky is built from (`hfsky env`, `hfsky --version` stay lean: no
//! build dependencies). `HFSKY_GIT_HASH` overrides it (builds from a source tarball); a crate
//! from crates.io (`cargo install hfsky`) has the commit `cargo package` recorded in
//! `.cargo_vcs_info.json` and no git repository of its own.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// The commit in `.cargo_vcs_info.json`, which `cargo package` writes beside Cargo.toml.
fn packaged_commit() -> Option<String> {
    let text = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    let start = text.find("\"sha1\"")?;
    let rest = &text[start + 6..];
    let hex: String = rest.chars().skip_while(|c| !c.is_ascii_hexdigit()).take_while(|c| c.is_ascii_hexdigit()).collect();
    (hex.len() >= 12).then(|| hex[..12].to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=HFSKY_GIT_HASH");
    let hash = std::env::var("HFSKY_GIT_HASH").ok().or_else(packaged_commit).or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself and the branch it points to (only files that exist,
    // or cargo would rebuild every time).
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watch.push(git(&["rev-parse", "--git-common-dir"]).map(|d| format!("{d}/packed-refs")));
    for p in watch.into_iter().flatten() {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(h) = hash {
        println!("cargo:rustc-env=HFSKY_GIT_HASH={h}");
    }
}
