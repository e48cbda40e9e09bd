//! Helpers for CLI tests: the real binary, temp HF_HOME, and an offline Hub on loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const ALICE: &str = "hf_AliceWriteToken0123456789abcdef";
pub const BOB_READ: &str = "hf_BobReadOnlyToken0123456789abcd";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hfsky"))
}

pub struct Hub {
    pub endpoint: String,
    pub root: PathBuf,
    child: Child,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_hub(root: &Path, extra: &[&str]) -> Hub {
    let mut cmd = Command::new(bin());
    cmd.args(["hub", "serve", "--port", "0", "--root"])
        .arg(root)
        .args(["--token", &format!("alice:write:{ALICE}"), "--token", &format!("bob:read:{BOB_READ}")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start hfsky hub serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let endpoint = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "unexpected serve banner {line:?}");
    Hub { endpoint, root: root.to_path_buf(), child }
}

/// A sandbox: its own HF_HOME, no inherited tokens, a keyring service of its own.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn new(endpoint: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let vars = vec![
            ("HF_HOME".into(), dir.path().join("hf").display().to_string()),
            ("HFSKY_KEYRING_SERVICE".into(), format!("hfsky-test-{}", rand_suffix())),
            ("HFSKY_RETRY_BASE_MS".into(), "20".into()),
        ];
        Env { dir, endpoint: endpoint.to_string(), vars }
    }

    pub fn hf_home(&self) -> PathBuf {
        self.dir.path().join("hf")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env_remove("HF_TOKEN").env_remove("HUGGING_FACE_HUB_TOKEN").env_remove("HF_TOKEN_PATH").env_remove("HF_HUB_CACHE");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.arg("--endpoint").arg(&self.endpoint).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self.cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn rand_suffix() -> String {
    format!("{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "command failed ({:?}):\n{}", o.status.code(), text(o));
    text(o)
}

#[track_caller]
pub fn code(o: &Output, expected: i32) -> String {
    assert_eq!(o.status.code(), Some(expected), "unexpected exit code; output:\n{}", text(o));
    text(o)
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Deterministic pseudo-random bytes (no RNG dependency in tests).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(o)))
}

/// Every file under `dir`, as (relative path, bytes).
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, std::fs::read(e.path()).unwrap()));
        }
    }
    out
}
