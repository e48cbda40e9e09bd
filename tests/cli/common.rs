//! Helpers for CLI tests: the real binary, temp HF_HOME, and an offline Hub on loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const ALICE: &str = "hf_AliceWriteToken0123456789abcdef";
pub const BOB_READ: &str = "hf_BobReadOnlyToken0123456789abcd";

/// The Python reference stack (torch, diffusers, peft) `scripts/test.sh` makes. Tests that need
/// it are `#[ignore]`d, so running one without it is a setup mistake, said as such.
pub fn pyref_python() -> String {
    std::env::var("HFSKY_PYREF_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .expect("HFSKY_PYREF_PYTHON is not set: run scripts/test.sh, or set it to the python scripts/pyref-venv.sh prints")
}

/// The test venv's python (huggingface_hub, maturin, nbclient) `scripts/test.sh` makes.
pub fn test_python() -> String {
    std::env::var("HFSKY_PYTHON").ok().filter(|p| !p.is_empty()).expect("HFSKY_PYTHON is not set: run scripts/test.sh, which makes .venv")
}

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
        c.env_remove("HF_TOKEN")
            .env_remove("HUGGING_FACE_HUB_TOKEN")
            .env_remove("HF_TOKEN_PATH")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_ENDPOINT");
        // CI variables of the machine running the tests must not leak into the sandbox.
        for v in [
            "HF_OIDC_RESOURCE",
            "HF_OIDC_SUBJECT_TOKEN",
            "HF_OIDC_ID_TOKEN",
            "HF_OIDC_AUDIENCE",
            "GITHUB_ACTIONS",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        ] {
            c.env_remove(v);
        }
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

// ---- OIDC: a stand-in CI issuer (test-only keys in tests/fixtures/oidc) ----

pub const CI_ISSUER: &str = "https://token.actions.githubusercontent.com";
pub const CI_SUBJECT: &str = "repo:org/project:ref:refs/heads/main";
pub const CI_REQUEST_TOKEN: &str = "ActionsRequestBearer-0123456789abcdef";

pub fn oidc_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc").join(name)
}

/// An offline Hub that trusts the stand-in issuer and maps `CI_SUBJECT` to alice/sky-lora.
pub fn start_oidc_hub(root: &Path, extra: &[&str]) -> Hub {
    let issuer = format!("{CI_ISSUER}={}", oidc_fixture("ci-jwks.json").display());
    let subject = format!("{CI_SUBJECT}=alice/sky-lora");
    let mut args = vec!["--trust-issuer", issuer.as_str(), "--trust-subject", subject.as_str()];
    args.extend_from_slice(extra);
    start_hub(root, &args)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// GitHub-shaped id token claims.
pub fn ci_claims(aud: &str, sub: &str, exp_in: i64) -> serde_json::Value {
    let now = now_secs();
    serde_json::json!({
        "iss": CI_ISSUER, "aud": aud, "sub": sub, "exp": now + exp_in, "iat": now, "nbf": now - 5,
        "repository": "org/project", "ref": "refs/heads/main", "workflow": "publish",
    })
}

/// An RS256 JWT signed with a test key (`ci-key.der`, or `attacker-key.der` to forge one).
pub fn mint_jwt(key_file: &str, claims: &serde_json::Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("ci-test-key".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&std::fs::read(oidc_fixture(key_file)).unwrap());
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

/// Stands in for GitHub Actions' id-token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`): checks
/// the bearer, mints a JWT for the requested audience, and records every JWT it handed out.
pub struct IdTokenServer {
    pub url: String,
    pub minted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub audiences: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl IdTokenServer {
    /// `status` other than 200 makes it refuse every request with that status.
    pub fn start(subject: &str, status: u16) -> IdTokenServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/_apis/idtoken?api-version=2.0", listener.local_addr().unwrap());
        let minted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let audiences = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, a, subject) = (minted.clone(), audiences.clone(), subject.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf).to_string();
                let target = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let authorized = req.lines().any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {CI_REQUEST_TOKEN}")));
                let audience = url::Url::parse(&format!("http://x{target}"))
                    .ok()
                    .and_then(|u| u.query_pairs().find(|(k, _)| k == "audience").map(|(_, v)| v.into_owned()));
                let (code, body) = match (status, authorized, audience) {
                    (200, true, Some(aud)) => {
                        let jwt = mint_jwt("ci-key.der", &ci_claims(&aud, &subject, 300));
                        m.lock().unwrap().push(jwt.clone());
                        a.lock().unwrap().push(aud);
                        (200, serde_json::json!({ "count": 1, "value": jwt }).to_string())
                    }
                    (200, false, _) => (401, "{\"message\":\"bad request token\"}".to_string()),
                    (200, _, None) => (400, "{\"message\":\"audience missing\"}".to_string()),
                    (other, _, _) => (other, "{\"message\":\"Unable to get ACTIONS_ID_TOKEN_REQUEST_URL token\"}".to_string()),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        IdTokenServer { url, minted, audiences }
    }

    /// Environment variables of a GitHub Actions job with `permissions: id-token: write`.
    pub fn github_env(&self) -> Vec<(String, String)> {
        vec![
            ("GITHUB_ACTIONS".into(), "true".into()),
            ("ACTIONS_ID_TOKEN_REQUEST_URL".into(), self.url.clone()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(), CI_REQUEST_TOKEN.into()),
        ]
    }
}

/// The RGB bytes of a PNG.
pub fn pixels(png: &std::path::Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.width as usize * info.height as usize * 3);
    buf
}

/// Opens the page in headless Chromium (CI installs it; `HFSKY_TEST_BROWSER=1` makes its absence
/// a failure), checks that at least `min_images` images loaded and none broke, that there are at
/// least `min_svgs` SVG plots and each has a size and content, and keeps a screenshot in
/// target/`shot`.
pub fn browser_check(page: &Path, min_images: usize, min_svgs: usize, shot: &str) {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        assert!(std::env::var_os("HFSKY_TEST_BROWSER").is_none(), "HFSKY_TEST_BROWSER is set but no chromium is installed");
        eprintln!("no chromium: browser check skipped");
        return;
    };
    let checked = page.with_file_name("report-check.html");
    let probe = "<script>addEventListener('load',()=>{const broken=[...document.images].filter(i=>!(i.complete&&i.naturalWidth>0)).map(i=>i.getAttribute('src'));\
        const svgs=[...document.querySelectorAll('svg')];const empty=svgs.filter(e=>{const r=e.getBoundingClientRect();return !(r.width>100&&r.height>20&&e.querySelectorAll('rect,path,polyline,line,circle').length>0)}).length;\
        document.documentElement.setAttribute('data-check',JSON.stringify({images:document.images.length,broken,svgs:svgs.length,empty}));});</script></body>";
    std::fs::write(&checked, std::fs::read_to_string(page).unwrap().replace("</body>", probe)).unwrap();
    let url = format!("file://{}", checked.display());
    let common = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--virtual-time-budget=5000"];
    let o = std::process::Command::new(chromium).args(common).arg("--dump-dom").arg(&url).output().unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let attr = dom
        .split("data-check=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("the page's load check did not run: {}", String::from_utf8_lossy(&o.stderr)));
    let check: serde_json::Value = serde_json::from_str(&attr.replace("&quot;", "\"")).unwrap();
    assert!(check["images"].as_u64().unwrap() >= min_images as u64, "{check}");
    assert_eq!(check["broken"], serde_json::json!([]), "images that did not load: {check}");
    assert!(check["svgs"].as_u64().unwrap() >= min_svgs as u64 && check["empty"] == 0, "plots: {check}");
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join(shot);
    let o = std::process::Command::new(chromium)
        .args(common)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,2400")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&shot).unwrap().to_rgb8();
    let distinct: std::collections::HashSet<_> = img.pixels().step_by(97).map(|p| p.0).collect();
    assert!(distinct.len() > 20, "the screenshot looks blank");
}

/// `path` as a `&'static str` for an argument list beside string literals (leaked: a test process
/// is short-lived, and plain `&str` lists read as the command line they are).
pub fn arg(path: &Path) -> &'static str {
    path.to_str().unwrap().to_string().leak()
}
