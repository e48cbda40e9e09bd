//! The token in the OS keyring. Against a real Secret Service (gnome-keyring under
//! dbus-run-session, as `.ci/run` starts it) when `HFSKY_TEST_SECRET_SERVICE=1`, and the
//! no-keyring path everywhere.

use crate::common::*;

#[test]
fn unreachable_keyring_is_a_clear_error_and_nothing_is_stored() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let out = env
        .cmd(&["login", "--token-stdin"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/hfsky-test-bus")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(ALICE.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let msg = code(&out, 3);
    assert!(msg.contains("keyring is not reachable") && msg.contains("--store file") && msg.contains("HF_TOKEN"), "{msg}");
    assert!(!msg.contains(ALICE));
    assert!(!env.hf_home().join("token").exists());
    assert!(!env.hf_home().join("hfsky/tokens.json").exists());
}

fn secret_tool_lookup(service: &str, name: &str) -> Option<String> {
    let out = std::process::Command::new("secret-tool").args(["lookup", "service", service, "username", name]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
#[ignore = "needs a Secret Service (scripts/test.sh starts gnome-keyring under dbus-run-session)"]
fn login_keeps_the_token_in_the_secret_service() {
    assert_eq!(
        std::env::var("HFSKY_TEST_SECRET_SERVICE").as_deref(),
        Ok("1"),
        "no Secret Service in this run: run scripts/test.sh (gnome-keyring under dbus-run-session)"
    );
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let service = env.vars.iter().find(|(k, _)| k == "HFSKY_KEYRING_SERVICE").unwrap().1.clone();

    let out = ok(&env.run_stdin(&["login", "--token-stdin", "--name", "laptop"], ALICE));
    assert!(out.contains("OS keyring") && !out.contains(ALICE), "{out}");
    assert_eq!(secret_tool_lookup(&service, "laptop").as_deref(), Some(ALICE), "the token is in the Secret Service");
    assert!(!env.hf_home().join("token").exists(), "keyring logins write no token file");
    let index = std::fs::read_to_string(env.hf_home().join("hfsky/tokens.json")).unwrap();
    assert!(!index.contains(ALICE), "the index holds names only");

    let v = json(&env.run(&["--json", "whoami"]));
    assert_eq!(v["user"], "alice");
    assert_eq!(v["source"]["kind"], "keyring");
    assert_eq!(v["source"]["name"], "laptop");

    ok(&env.run_stdin(&["login", "--token-stdin", "--name", "ci-reader"], BOB_READ));
    assert_eq!(json(&env.run(&["--json", "whoami"]))["user"], "bob");
    ok(&env.run(&["token", "switch", "laptop"]));
    assert_eq!(json(&env.run(&["--json", "whoami"]))["user"], "alice");

    ok(&env.run(&["logout", "--name", "laptop"]));
    assert_eq!(secret_tool_lookup(&service, "laptop"), None, "logout deletes the keyring entry");
    code(&env.run(&["whoami"]), 3);
    ok(&env.run(&["logout", "--all"]));
    assert_eq!(secret_tool_lookup(&service, "ci-reader"), None);
}
