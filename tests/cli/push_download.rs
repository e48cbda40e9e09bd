//! login → push → download against `hfsky hub serve`, run as a user would, plus the bad-input
//! and failure paths, and a scan of every output and written file for the token.

use crate::common::*;

fn login_file(env: &Env, token: &str) -> String {
    ok(&env.run_stdin(&["login", "--token-stdin", "--store", "file", "--name", "main"], &format!("{token}\n")))
}

fn sample_model(dir: &std::path::Path) {
    write(&dir.join("README.md"), b"---\nlicense: mit\ntags: [lora]\n---\n# sky lora\n");
    write(&dir.join("pytorch_lora_weights.safetensors"), &noise(300_000, 1));
    write(&dir.join("samples/image_0.png"), &noise(50_000, 2));
    write(&dir.join("big.bin"), &noise(3 * 1024 * 1024 + 17, 3));
    write(&dir.join("empty.txt"), b"");
}

#[test]
fn login_push_download_roundtrip_never_leaks_the_token() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &["--multipart-chunk-mib", "1"]);
    let env = Env::new(&hub.endpoint);
    let mut transcript = String::new();

    let out = login_file(&env, ALICE);
    assert!(out.contains("Logged in as alice") && out.contains("Can write to: alice"), "{out}");
    transcript += &out;
    let token_file = std::fs::read_to_string(env.hf_home().join("token")).unwrap();
    assert_eq!(token_file, ALICE, "huggingface_hub-compatible token file, no newline");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.hf_home().join("token")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let who = env.run(&["--json", "whoami"]);
    transcript += &text(&who);
    let v = json(&who);
    assert_eq!(v["user"], "alice");
    assert_eq!(v["role"], "write");
    assert_eq!(v["source"]["kind"], "file");

    let data = env.dir.path().join("model");
    sample_model(&data);
    let push = env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "-m", "first"]);
    transcript += &text(&push);
    let v = json(&push);
    assert_eq!(v["status"], "committed", "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 5);
    assert!(v["files"].as_array().unwrap().iter().all(|f| f["action"] == "add"), "{v}");
    assert!(v["commit_url"].as_str().unwrap().ends_with(&format!("/alice/sky-lora/commit/{}", v["commit_oid"].as_str().unwrap())), "{v}");
    assert!(v["pr_url"].is_null() && v["new_repo"] == true, "{v}");
    assert!(v["uploaded_lfs_bytes"].as_u64().unwrap() > 3 * 1024 * 1024);

    // Same folder again: no commit.
    let again = env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/sky-lora"]);
    transcript += &text(&again);
    let v2 = json(&again);
    assert_eq!(v2["status"], "nothing_to_push");
    assert_eq!(v2["commit_oid"], v["commit_oid"]);
    assert_eq!(v2["commit_url"], v["commit_url"]);

    // One file changes: only it is sent, the stored LFS objects are reused.
    write(&data.join("README.md"), b"---\nlicense: mit\n---\n# v2\n");
    let third = json(&env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/sky-lora"]));
    assert_eq!(third["files"], serde_json::json!([{"path": "README.md", "action": "update", "size": 26, "lfs": false}]));
    assert_eq!(third["uploaded_lfs_bytes"], 0);

    // Download into the standard cache and into a folder: byte-identical.
    let dl = env.run(&["--json", "download", "alice/sky-lora"]);
    transcript += &text(&dl);
    let files = json(&dl)["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 6, "5 files + .gitattributes");
    let repo_cache = env.hf_home().join("hub").join("models--alice--sky-lora");
    let commit = std::fs::read_to_string(repo_cache.join("refs/main")).unwrap();
    assert_eq!(commit, third["commit_oid"].as_str().unwrap());
    for (rel, bytes) in files_under(&data) {
        let snap = repo_cache.join("snapshots").join(&commit).join(&rel);
        assert!(std::fs::symlink_metadata(&snap).unwrap().file_type().is_symlink(), "{rel} should link into blobs/");
        assert_eq!(std::fs::read(&snap).unwrap(), bytes, "{rel}");
    }
    let local = env.dir.path().join("copy");
    ok(&env.run(&["download", "alice/sky-lora", "big.bin", "samples/image_0.png", "--local-dir", local.to_str().unwrap()]));
    assert_eq!(std::fs::read(local.join("big.bin")).unwrap(), std::fs::read(data.join("big.bin")).unwrap());

    // Deleting remote files that are gone locally.
    std::fs::remove_file(data.join("empty.txt")).unwrap();
    let del = json(&env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--delete", "*.txt"]));
    assert_eq!(del["files"], serde_json::json!([{"path": "empty.txt", "action": "delete", "size": 0, "lfs": false}]));

    let out = ok(&env.run(&["logout"]));
    transcript += &out;
    assert!(!env.hf_home().join("token").exists());
    code(&env.run(&["whoami"]), 3);

    // The token appears nowhere: not in any output, not in any file hfsky wrote outside the store.
    assert!(!transcript.contains(ALICE), "token leaked into output");
    let secret = ALICE.as_bytes();
    for dir in [env.dir.path(), hub.root.as_path()] {
        for (rel, bytes) in files_under(dir) {
            if rel.ends_with("stored_tokens") {
                continue;
            }
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "token found in {rel}");
        }
    }
}

#[test]
fn bad_input_is_refused_with_exit_code_2() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    login_file(&env, ALICE);
    let data = env.dir.path().join("d");
    write(&data.join("a.txt"), b"a");
    for repo in ["foo", "a/b/c", "../x", "user/na me"] {
        let out = code(&env.run(&["push", data.to_str().unwrap(), "--repo", repo]), 2);
        assert!(out.contains("invalid repo id"), "{out}");
    }
    let out = code(&env.run(&["push", "/no/such/folder", "--repo", "alice/x"]), 2);
    assert!(out.contains("not an existing folder"), "{out}");
    let empty = env.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = code(&env.run(&["push", empty.to_str().unwrap(), "--repo", "alice/x"]), 2);
    assert!(out.contains("nothing to push"), "{out}");
    let out = code(&env.run_stdin(&["login", "--token-stdin", "--store", "file"], "hf_abc def\n"), 2);
    assert!(out.contains("whitespace") && !out.contains("hf_abc def"), "{out}");
    let out = code(&Env::new("not a url").cmd(&["whoami"]).env("HF_TOKEN", ALICE).output().unwrap(), 2);
    assert!(out.contains("invalid endpoint"), "{out}");
    // The token is never a flag value.
    code(&env.run(&["login", "--token", ALICE]), 2);
    #[cfg(unix)]
    {
        let outside = env.dir.path().join("outside.txt");
        write(&outside, b"secret");
        std::os::unix::fs::symlink(&outside, data.join("link.txt")).unwrap();
        let out = code(&env.run(&["push", data.to_str().unwrap(), "--repo", "alice/x"]), 2);
        assert!(out.contains("outside"), "{out}");
    }
}

#[test]
fn auth_failures_say_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let out = code(&env.run_stdin(&["login", "--token-stdin", "--store", "file"], "hf_NotAValidTokenAtAll123456\n"), 3);
    assert!(out.contains("invalid token") && out.contains("request id"), "{out}");
    assert!(!env.hf_home().join("token").exists(), "a refused token is not stored");

    let read_env = Env::new(&hub.endpoint);
    login_file(&read_env, BOB_READ);
    let data = read_env.dir.path().join("d");
    write(&data.join("a.txt"), b"a");
    let out = code(&read_env.run(&["push", data.to_str().unwrap(), "--repo", "bob/x"]), 3);
    assert!(out.contains("cannot write"), "{out}");

    // Through the HTTP API directly, a read token gets 403 and no token 401.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{}/api/repos/create", hub.endpoint))
            .json(&serde_json::json!({"name":"x","organization":"bob"}))
            .bearer_auth(BOB_READ)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.headers().contains_key("x-request-id"));
        let r =
            http.post(format!("{}/api/repos/create", hub.endpoint)).json(&serde_json::json!({"name":"x","organization":"bob"})).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });
}

#[test]
fn hf_token_env_wins_and_whoami_says_so() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    login_file(&env, BOB_READ);
    let out = env.cmd(&["--json", "whoami"]).env("HF_TOKEN", ALICE).output().unwrap();
    let v = json(&out);
    assert_eq!(v["user"], "alice");
    assert_eq!(v["source"]["kind"], "env_hf_token");
    let out = env.cmd(&["--json", "whoami"]).env("HUGGING_FACE_HUB_TOKEN", ALICE).output().unwrap();
    assert_eq!(json(&out)["source"]["kind"], "env_hugging_face_hub_token");
    let out = code(&env.cmd(&["whoami"]).env("HF_TOKEN", "hf_bad token").output().unwrap(), 2);
    assert!(out.contains("HF_TOKEN") && out.contains("whitespace"), "{out}");
}

#[test]
fn named_file_tokens_list_and_switch() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    ok(&env.run_stdin(&["login", "--token-stdin", "--store", "file", "--name", "writer"], ALICE));
    ok(&env.run_stdin(&["login", "--token-stdin", "--store", "file", "--name", "reader"], BOB_READ));
    let list = json(&env.run(&["--json", "token", "list"]));
    assert_eq!(list["active"], "reader");
    assert_eq!(list["tokens"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("hf_"), "list shows names only");
    ok(&env.run(&["token", "switch", "writer"]));
    assert_eq!(json(&env.run(&["--json", "whoami"]))["user"], "alice");
    code(&env.run(&["token", "switch", "nobody"]), 2);
    ok(&env.run(&["logout", "--all"]));
    assert!(json(&env.run(&["--json", "token", "list"]))["tokens"].as_array().unwrap().is_empty());
}

#[test]
fn push_survives_injected_faults() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &["--faults", "500=0.15,429=0.1,drop=0.1,retry-after=0,seed=11", "--multipart-chunk-mib", "1"]);
    let env = Env::new(&hub.endpoint);
    let mut env = env;
    env.vars.push(("HFSKY_MAX_ATTEMPTS".into(), "12".into()));
    // login goes through the faulty server too
    ok(&env.run_stdin(&["login", "--token-stdin", "--store", "file"], ALICE));
    let data = env.dir.path().join("model");
    sample_model(&data);
    let v = json(&env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/flaky"]));
    assert_eq!(v["status"], "committed", "{v}");
    let out = env.dir.path().join("out");
    ok(&env.run(&["download", "alice/flaky", "big.bin", "--local-dir", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), std::fs::read(data.join("big.bin")).unwrap());
}

#[test]
fn stale_parent_commit_is_refused_and_state_survives_restart() {
    let root = tempfile::tempdir().unwrap();
    let env;
    let head;
    {
        let hub = start_hub(root.path(), &[]);
        env = Env::new(&hub.endpoint);
        login_file(&env, ALICE);
        let data = env.dir.path().join("m");
        write(&data.join("a.txt"), b"one");
        head = json(&env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/r"]))["commit_oid"].as_str().unwrap().to_string();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let http = reqwest::Client::new();
            let body = "{\"key\":\"header\",\"value\":{\"summary\":\"x\",\"parentCommit\":\"0000000000000000000000000000000000000000\"}}\n";
            let r = http.post(format!("{}/api/models/alice/r/commit/main", hub.endpoint)).bearer_auth(ALICE).body(body).send().await.unwrap();
            assert_eq!(r.status(), 412);
            let r = http.post(format!("{}/api/models/alice/r/commit/main", hub.endpoint)).bearer_auth(ALICE).body("not json\n").send().await.unwrap();
            assert_eq!(r.status(), 400);
            let body = format!("{{\"key\":\"header\",\"value\":{{\"summary\":\"x\"}}}}\n{{\"key\":\"lfsFile\",\"value\":{{\"path\":\"w.bin\",\"algo\":\"sha256\",\"oid\":\"{}\",\"size\":3}}}}\n", "ab".repeat(32));
            let r = http.post(format!("{}/api/models/alice/r/commit/main", hub.endpoint)).bearer_auth(ALICE).body(body).send().await.unwrap();
            assert_eq!(r.status(), 400);
            assert!(r.text().await.unwrap().contains("unknown"));
            let body = "{\"key\":\"header\",\"value\":{\"summary\":\"x\"}}\n{\"key\":\"file\",\"value\":{\"path\":\"../evil\",\"content\":\"eA==\",\"encoding\":\"base64\"}}\n";
            let r = http.post(format!("{}/api/models/alice/r/commit/main", hub.endpoint)).bearer_auth(ALICE).body(body).send().await.unwrap();
            assert_eq!(r.status(), 400);
        });
    }
    // A new server on the same root serves the same commit.
    let hub = start_hub(root.path(), &[]);
    let env2 = Env { dir: tempfile::tempdir().unwrap(), endpoint: hub.endpoint.clone(), vars: env.vars.clone() };
    let v = json(
        &env2.cmd(&["--json", "push", env.dir.path().join("m").to_str().unwrap(), "--repo", "alice/r"]).env("HF_TOKEN", ALICE).output().unwrap(),
    );
    assert_eq!(v["status"], "nothing_to_push");
    assert_eq!(v["commit_oid"], head);
}

#[test]
fn pull_requests_paths_info_and_server_limits() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &["--max-body-mib", "1"]);
    let env = Env::new(&hub.endpoint);
    login_file(&env, ALICE);
    let data = env.dir.path().join("m");
    write(&data.join("a.txt"), b"one");
    let first = json(&env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/pr"]));
    write(&data.join("a.txt"), b"two");
    let pr = json(&env.run(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/pr", "--create-pr"]));
    assert!(pr["pr_url"].as_str().unwrap().ends_with("/alice/pr/discussions/1"), "{pr}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = hfsky::token::Token::parse(ALICE).unwrap();
        let client = hfsky::hub::HubClient::new(&hub.endpoint, Some(token)).unwrap();
        let id = hfsky::repo_id::RepoId::parse("alice/pr").unwrap();
        // main is untouched by the PR; the PR ref has the new content.
        assert_eq!(client.repo_info(&id, Some("main")).await.unwrap().sha, first["commit_oid"].as_str().map(String::from));
        assert_eq!(client.repo_info(&id, Some("refs/pr/1")).await.unwrap().sha, pr["commit_oid"].as_str().map(String::from));
        let info = client.paths_info(&id, "refs/pr/1", &["a.txt".into(), "missing.txt".into()]).await.unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].oid, hfsky::hash::git_blob_sha1(b"two"));
        let err = client.repo_info(&hfsky::repo_id::RepoId::parse("alice/nope").unwrap(), None).await.unwrap_err();
        assert_eq!(err.error_code(), Some("RepoNotFound"));
        assert!(err.to_string().contains("request id: req-"), "{err}");

        // Oversize JSON bodies → 413; an LFS upload whose bytes do not match its oid → 400.
        // No pooled connections: the server closes the one it answered 413 on without reading
        // the body, and reusing it would race with that close.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let big = serde_json::json!({ "files": [], "pad": "x".repeat(2 * 1024 * 1024) });
        // Its own connection: the server answers 413 without reading the whole body and closes
        // the connection, which a pooled client could otherwise reuse for the next request.
        let r = http
            .post(format!("{}/api/models/alice/pr/preupload/main", hub.endpoint))
            .bearer_auth(ALICE)
            .header(reqwest::header::CONNECTION, "close")
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let http = reqwest::Client::new();
        let oid = hfsky::hash::sha256_hex(b"abc");
        let batch = client.lfs_batch(&id, "main", &[hfsky::hub::protocol::LfsObject { oid: oid.clone(), size: 3 }], false).await.unwrap();
        let href = batch[0].actions.as_ref().unwrap().upload.as_ref().unwrap().href.clone();
        let r = http.put(&href).body("abd").send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("does not match"));
        let r = http.put(&href).body("abcd").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = http.put(&href).body("abc").send().await.unwrap();
        assert_eq!(r.status(), 200);
    });
}

#[test]
fn dry_run_writes_nothing_and_checks_the_model_card() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    login_file(&env, ALICE);
    let data = env.dir.path().join("model");
    sample_model(&data);
    let d = path(&data);

    // A repo that does not exist yet: everything would be added, the repo created.
    let v = json(&env.run(&["--json", "push", &d, "--repo", "alice/dry", "--dry-run"]));
    assert_eq!(v["status"], "dry_run", "{v}");
    assert_eq!(v["new_repo"], true);
    assert!(v["commit_oid"].is_null() && v["commit_url"].is_null());
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    let lfs = |p: &str| files.iter().find(|f| f["path"] == p).unwrap()["lfs"].as_bool().unwrap();
    assert!(lfs("pytorch_lora_weights.safetensors") && lfs("big.bin") && !lfs("README.md") && !lfs("empty.txt"));
    let human = ok(&env.run(&["push", &d, "--repo", "alice/dry", "--dry-run"]));
    assert!(human.contains("Dry run, nothing written") && human.contains("would be created") && human.contains("add    big.bin"), "{human}");
    let anon = hfsky::hub::HubClient::new(&hub.endpoint, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = hfsky::repo_id::RepoId::parse("alice/dry").unwrap();
    assert_eq!(rt.block_on(anon.repo_info(&id, None)).unwrap_err().error_code(), Some("RepoNotFound"));

    // After a real push, a dry run of one changed file names only it, and still writes nothing.
    let pushed = json(&env.run(&["--json", "push", &d, "--repo", "alice/dry"]));
    write(&data.join("README.md"), b"---\nlicense: apache-2.0\n---\n# v2\n");
    let v = json(&env.run(&["--json", "push", &d, "--repo", "alice/dry", "--dry-run", "--revision", "staging"]));
    assert_eq!(v["files"], serde_json::json!([{"path": "README.md", "action": "update", "size": 33, "lfs": false}]));
    assert_eq!((v["new_repo"].as_bool(), v["new_branch"].as_bool()), (Some(false), Some(true)));
    assert_eq!(v["parent_commit"], pushed["commit_oid"]);
    let info = rt.block_on(anon.repo_info(&id, None)).unwrap();
    assert_eq!(info.sha.as_deref(), pushed["commit_oid"].as_str());
    assert_eq!(rt.block_on(anon.repo_info(&id, Some("staging"))).unwrap_err().error_code(), Some("RevisionNotFound"));

    // A model card whose metadata does not parse is refused before anything is uploaded.
    write(&data.join("README.md"), b"---\nlicense: [unclosed\n---\n# broken\n");
    for extra in [&["--dry-run"][..], &[][..]] {
        let mut args = vec!["push", d.as_str(), "--repo", "alice/dry"];
        args.extend_from_slice(extra);
        let msg = code(&env.run(&args), 2);
        assert!(msg.contains("README.md") && msg.contains("metadata is invalid"), "{msg}");
    }
    assert_eq!(rt.block_on(anon.repo_info(&id, None)).unwrap().sha, info.sha);
}

fn path(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn revision_creates_the_branch_and_leaves_main_alone() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    login_file(&env, ALICE);
    let data = env.dir.path().join("m");
    write(&data.join("a.txt"), b"one");
    let main = json(&env.run(&["--json", "push", &path(&data), "--repo", "alice/rev"]));
    write(&data.join("a.txt"), b"two");
    let staged = json(&env.run(&["--json", "push", &path(&data), "--repo", "alice/rev", "--revision", "staging"]));
    assert_eq!(staged["status"], "committed", "{staged}");
    assert_eq!((staged["new_branch"].as_bool(), staged["revision"].as_str()), (Some(true), Some("staging")));
    assert_eq!(staged["parent_commit"], main["commit_oid"]);
    let again = json(&env.run(&["--json", "push", &path(&data), "--repo", "alice/rev", "--revision", "staging"]));
    assert_eq!((again["status"].as_str(), again["new_branch"].as_bool()), (Some("nothing_to_push"), Some(false)));
    // A pull request against the new branch, and against a branch that does not exist.
    write(&data.join("a.txt"), b"three");
    let pr = json(&env.run(&["--json", "push", &path(&data), "--repo", "alice/rev", "--revision", "staging", "--create-pr"]));
    assert!(pr["pr_url"].as_str().unwrap().ends_with("/alice/rev/discussions/1"), "{pr}");
    let msg = code(&env.run(&["push", &path(&data), "--repo", "alice/rev", "--revision", "nope", "--create-pr"]), 2);
    assert!(msg.contains("--revision nope does not exist"), "{msg}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let anon = hfsky::hub::HubClient::new(&hub.endpoint, None).unwrap();
    let id = hfsky::repo_id::RepoId::parse("alice/rev").unwrap();
    assert_eq!(rt.block_on(anon.repo_info(&id, Some("main"))).unwrap().sha.as_deref(), main["commit_oid"].as_str());
    assert_eq!(rt.block_on(anon.repo_info(&id, Some("staging"))).unwrap().sha.as_deref(), staged["commit_oid"].as_str());
}

#[test]
fn a_concurrent_push_is_rebased_onto_or_refused_when_files_overlap() {
    use hfsky::hub::push::{commit_plan, plan_push, prepare_target, PushOptions};
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("ours");
    let theirs = work.path().join("theirs");
    write(&ours.join("weights.safetensors"), &noise(5000, 1));
    write(&ours.join("README.md"), b"# ours\n");
    let id = hfsky::repo_id::RepoId::parse("alice/race").unwrap();
    let opts = |m: &str| PushOptions::new(id.clone(), m);
    let client = hfsky::hub::HubClient::new(&hub.endpoint, Some(hfsky::token::Token::parse(ALICE).unwrap())).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        prepare_target(&client, &opts("ours")).await.unwrap();
        let plan = plan_push(&client, &ours, &opts("ours")).await.unwrap();
        // Someone else commits other files after we planned: our commit is rebased onto theirs.
        write(&theirs.join("samples/one.png"), &noise(300, 2));
        let other = hfsky::hub::push::push_folder(&client, &theirs, &opts("theirs")).await.unwrap();
        let o = commit_plan(&client, &plan, &opts("ours")).await.unwrap();
        assert_eq!(o.rebased, 1);
        assert_eq!(o.parent_commit, other.commit_oid);
        let tree: Vec<String> = client.list_tree(&id, "main").await.unwrap().into_iter().map(|e| e.path).collect();
        for p in ["README.md", "weights.safetensors", "samples/one.png"] {
            assert!(tree.contains(&p.to_string()), "{p} missing from {tree:?}");
        }

        // Someone else changes a file we are pushing too: refused, nothing of ours committed.
        write(&ours.join("README.md"), b"# ours v2\n");
        let plan = plan_push(&client, &ours, &opts("ours v2")).await.unwrap();
        write(&theirs.join("README.md"), b"# theirs\n");
        let other = hfsky::hub::push::push_folder(&client, &theirs, &opts("theirs v2")).await.unwrap();
        let e = commit_plan(&client, &plan, &opts("ours v2")).await.unwrap_err();
        assert!(matches!(&e, hfsky::hub::HubError::Conflict(c) if c.paths == vec!["README.md".to_string()]), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("changed while pushing") && msg.contains("README.md") && msg.contains("nothing was committed"), "{msg}");
        assert_eq!(client.repo_info(&id, None).await.unwrap().sha, other.commit_oid);
    });
}

#[test]
fn exit_codes_follow_the_readme() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let data = env.dir.path().join("m");
    write(&data.join("a.txt"), b"a");
    // 3: not logged in.
    let out = env.run(&["--json", "push", &path(&data), "--repo", "alice/x"]);
    assert_eq!(json(&out)["exit_code"], 3);
    assert!(code(&out, 3).contains("not logged in"));
    // 2: usage, and no prompt without a terminal.
    code(&env.run(&["push"]), 2);
    let out = env.run(&["login"]);
    assert!(code(&out, 2).contains("no terminal to prompt on"), "{}", text(&out));
    // 4: the Hub cannot be reached after retries.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut offline = Env::new(&dead_url);
    offline.vars.push(("HFSKY_MAX_ATTEMPTS".into(), "2".into()));
    let out = offline.cmd(&["--json", "push", &path(&data), "--repo", "alice/x"]).env("HF_TOKEN", ALICE).output().unwrap();
    assert_eq!(json(&out)["exit_code"], 4);
    assert!(code(&out, 4).contains("could not reach") && !text(&out).contains(ALICE));
    let out = offline.cmd(&["download", "alice/x"]).output().unwrap();
    code(&out, 4);
}

#[test]
fn every_command_speaks_json() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let data = env.dir.path().join("m");
    write(&data.join("a.txt"), b"a");
    let d = path(&data);
    let login = json(&env.run_stdin(&["--json", "login", "--token-stdin", "--store", "file", "--name", "ci"], ALICE));
    assert_eq!((login["user"].as_str(), login["stored_as"].as_str(), login["store"].as_str()), (Some("alice"), Some("ci"), Some("file")));
    assert_eq!(json(&env.run(&["--json", "whoami"]))["writable_namespaces"], serde_json::json!(["alice"]));
    assert_eq!(json(&env.run(&["--json", "token", "list"]))["active"], "ci");
    assert_eq!(json(&env.run(&["--json", "token", "switch", "ci"]))["active"], "ci");
    let push = env.run(&["--json", "push", &d, "--repo", "alice/j"]);
    let p = json(&push);
    for key in [
        "status",
        "repo",
        "revision",
        "commit_oid",
        "commit_url",
        "pr_url",
        "parent_commit",
        "files",
        "unchanged",
        "total_bytes",
        "uploaded_lfs_bytes",
        "reused_lfs_objects",
        "new_repo",
        "new_branch",
        "rebased",
    ] {
        assert!(p.get(key).is_some(), "push JSON lacks {key}: {p}");
    }
    let result = env.dir.path().join("push.json");
    std::fs::write(&result, &push.stdout).unwrap();
    assert!(json(&env.run(&["--json", "ci", "summary", result.to_str().unwrap()]))["markdown"].as_str().unwrap().contains("alice/j@main"));
    let dl = json(&env.run(&["--json", "download", "alice/j", "a.txt"]));
    assert_eq!(dl["files"][0]["path_in_repo"], "a.txt");
    let wf = env.dir.path().join("wf.yml");
    assert_eq!(json(&env.run(&["--json", "ci", "init", "--out", wf.to_str().unwrap()]))["provider"], "github");
    assert_eq!(json(&env.run(&["--json", "logout"]))["removed"], serde_json::json!(["ci"]));
    // Errors are one JSON document too, on stdout, with the exit code.
    let e = json(&env.run(&["--json", "push", &d, "--repo", "bad"]));
    assert_eq!(e["exit_code"], 2);
    assert!(e["error"].as_str().unwrap().contains("invalid repo id"));
    // The offline Hub announces its endpoint as JSON.
    let hub_root = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["--json", "hub", "serve", "--port", "0", "--root"])
        .arg(hub_root.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["endpoint"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{v}");
}
