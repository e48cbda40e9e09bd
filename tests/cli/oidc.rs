//! Keyless publishing: a CI's OIDC id token (minted by a stand-in GitHub Actions endpoint or
//! read from a file) exchanged at the offline Hub's `/oauth/token` for a token that can write
//! one repo. Refusals are clear, exit 3, and no token (id token or exchanged) is ever printed.

use crate::common::*;
use std::process::Output;

fn model(dir: &std::path::Path) {
    write(&dir.join("README.md"), b"---\nlicense: mit\ntags: [lora]\n---\n# sky lora\n");
    write(&dir.join("pytorch_lora_weights.safetensors"), &noise(40_000, 7));
}

/// No short-lived token, id token or request bearer anywhere in the output.
#[track_caller]
fn assert_no_secrets(out: &str, jwts: &[String]) {
    assert!(!out.contains(CI_REQUEST_TOKEN), "request bearer leaked:\n{out}");
    for j in jwts {
        assert!(!out.contains(j.as_str()) && !out.contains(j.split('.').nth(2).unwrap()), "id token leaked:\n{out}");
    }
    if let Some(i) = out.find("hf_oidc_") {
        assert!(out[i + 8..].chars().take(8).all(|c| !c.is_ascii_alphanumeric()), "exchanged token leaked:\n{out}");
    }
}

fn with_env(env: &Env, args: &[&str], vars: &[(String, String)]) -> Output {
    let mut c = env.cmd(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

#[test]
fn github_actions_push_exchanges_the_id_token_and_never_prints_it() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &[]);
    let ci = IdTokenServer::start(CI_SUBJECT, 200);
    let env = Env::new(&hub.endpoint);
    let data = env.dir.path().join("model");
    model(&data);
    let mut vars = ci.github_env();
    // A stored read-only token is ignored: OIDC comes first.
    vars.push(("HF_TOKEN".into(), BOB_READ.into()));

    let out = with_env(&env, &["--json", "push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--oidc"], &vars);
    let mut transcript = text(&out);
    let v = json(&out);
    assert_eq!(v["status"], "committed", "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 2);
    assert!(v["commit_url"].as_str().unwrap().contains("/alice/sky-lora/commit/"), "{v}");
    // The id token was requested for this Hub's audience, with the job's request bearer.
    assert_eq!(ci.audiences.lock().unwrap().as_slice(), std::slice::from_ref(&hub.endpoint));

    // whoami through HF_OIDC_RESOURCE, as huggingface_hub does it.
    let mut vars2 = ci.github_env();
    vars2.push(("HF_OIDC_RESOURCE".into(), "alice/sky-lora".into()));
    let out = with_env(&env, &["--json", "whoami"], &vars2);
    transcript += &text(&out);
    let who = json(&out);
    assert_eq!(who["source"]["kind"], "oidc", "{who}");
    assert_eq!(who["source"]["resource"], "alice/sky-lora");
    assert_eq!(who["writable_repos"], serde_json::json!(["alice/sky-lora"]));
    let out = with_env(&env, &["whoami"], &vars2);
    transcript += &text(&out);
    assert!(text(&out).contains("OIDC token exchange for alice/sky-lora (id token from GitHub Actions)"), "{}", text(&out));

    // A second push, verbose: the exchange is not narrated with secrets either.
    write(&data.join("notes.txt"), b"v2");
    let out = with_env(&env, &["-v", "push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--oidc"], &vars);
    transcript += &text(&out);
    assert!(out.status.success(), "{}", text(&out));

    let minted = ci.minted.lock().unwrap().clone();
    assert_eq!(minted.len(), 4);
    assert_no_secrets(&transcript, &minted);
    for (rel, bytes) in files_under(env.dir.path()) {
        for j in &minted {
            assert!(!bytes.windows(j.len()).any(|w| w == j.as_bytes()), "id token written to {rel}");
        }
        assert!(!bytes.windows(8).any(|w| w == b"hf_oidc_"), "exchanged token written to {rel}");
    }
}

#[test]
fn refused_exchanges_say_why_and_exit_3() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let data = env.dir.path().join("model");
    model(&data);
    let id_file = env.dir.path().join("id-token");
    let cases: Vec<(&str, String, &str)> = vec![
        ("alice/sky-lora", mint_jwt("attacker-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, 300)), "signature does not verify"),
        ("alice/sky-lora", mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, -600)), "expired"),
        ("alice/sky-lora", mint_jwt("ci-key.der", &ci_claims("https://huggingface.co", CI_SUBJECT, 300)), "audience"),
        (
            "alice/sky-lora",
            mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, "repo:org/project:ref:refs/heads/feature", 300)),
            "is not a trusted publisher for alice/sky-lora",
        ),
        // A good id token for alice/sky-lora's publisher cannot get a token for another repo.
        ("alice/other", mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, 300)), "is not a trusted publisher for alice/other"),
    ];
    let mut jwts = vec![];
    for (repo, jwt, why) in cases {
        std::fs::write(&id_file, &jwt).unwrap();
        jwts.push(jwt);
        let out = env.run(&["push", data.to_str().unwrap(), "--repo", repo, "--oidc-token-file", id_file.to_str().unwrap()]);
        let msg = code(&out, 3);
        assert!(msg.contains("refused the OIDC token exchange") && msg.contains(why), "{why}: {msg}");
        assert!(msg.contains("request id"), "{msg}");
        assert_no_secrets(&msg, &jwts);
        let out = env.run(&["--json", "push", data.to_str().unwrap(), "--repo", repo, "--oidc-token-file", id_file.to_str().unwrap()]);
        let v = json(&out);
        assert_eq!(v["exit_code"], 3);
        assert!(v["error"].as_str().unwrap().contains(why), "{v}");
    }
    // Nothing was created or committed on the way.
    let anon = hfsky::hub::HubClient::new(&hub.endpoint, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(anon.repo_info(&hfsky::repo_id::RepoId::parse("alice/sky-lora").unwrap(), None)).unwrap_err();
    assert_eq!(err.error_code(), Some("RepoNotFound"));

    // The same id token through HF_OIDC_SUBJECT_TOKEN works.
    let good = mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, 300));
    let out = env
        .cmd(&["--json", "push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--oidc"])
        .env("HF_OIDC_SUBJECT_TOKEN", &good)
        .output()
        .unwrap();
    assert_eq!(json(&out)["status"], "committed");
    assert_no_secrets(&text(&out), &[good]);
}

#[test]
fn a_repo_scoped_token_is_refused_on_other_repos() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = |s: &str| hfsky::repo_id::RepoId::parse(s).unwrap();
    rt.block_on(async {
        let anon = hfsky::hub::HubClient::new(&hub.endpoint, None).unwrap();
        let jwt = mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, 300));
        let (token, ttl) = anon.exchange_oidc(&jwt, "alice/sky-lora").await.unwrap();
        assert_eq!(ttl, Some(3600));
        assert!(token.expose().starts_with("hf_oidc_"));
        let alice = hfsky::hub::HubClient::new(&hub.endpoint, Some(hfsky::token::Token::parse(ALICE).unwrap())).unwrap();
        alice.create_repo(&id("alice/other"), None, false).await.unwrap();
        let scoped = hfsky::hub::HubClient::new(&hub.endpoint, Some(token)).unwrap();
        scoped.create_repo(&id("alice/sky-lora"), None, false).await.unwrap();
        let who = scoped.whoami().await.unwrap();
        assert_eq!(who.can_write(&id("alice/sky-lora")), Some(true));
        assert_eq!(who.can_write(&id("alice/other")), Some(false));
        for e in [
            scoped.create_repo(&id("alice/third"), None, false).await.unwrap_err(),
            scoped
                .preupload(
                    &id("alice/other"),
                    "main",
                    vec![hfsky::hub::protocol::PreuploadFile { path: "a".into(), sample: String::new(), size: 0 }],
                    false,
                )
                .await
                .unwrap_err(),
            scoped.create_branch(&id("alice/other"), "dev", None).await.unwrap_err(),
        ] {
            assert_eq!(e.status(), Some(403), "{e}");
            assert!(e.to_string().contains("scoped to alice/sky-lora"), "{e}");
        }

        // RFC 8693's form encoding is accepted too; a wrong grant type is named.
        let http = reqwest::Client::new();
        let form = [
            ("grant_type", hfsky::hub::protocol::TOKEN_EXCHANGE_GRANT),
            ("subject_token_type", hfsky::hub::protocol::ID_TOKEN_TYPE),
            ("subject_token", jwt.as_str()),
            ("resource", "alice/sky-lora"),
        ];
        let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let r = http
            .post(format!("{}/oauth/token", hub.endpoint))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .post(format!("{}/oauth/token", hub.endpoint))
            .json(&serde_json::json!({"grant_type": "password", "subject_token_type": "x", "subject_token": jwt}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "unsupported_grant_type");
    });

    // hfsky refuses before any exchange when HF_OIDC_RESOURCE names another repo.
    let env = Env::new(&hub.endpoint);
    let data = env.dir.path().join("m");
    model(&data);
    let out = env.cmd(&["push", data.to_str().unwrap(), "--repo", "alice/other"]).env("HF_OIDC_RESOURCE", "alice/sky-lora").output().unwrap();
    let msg = code(&out, 2);
    assert!(msg.contains("HF_OIDC_RESOURCE is \"alice/sky-lora\"") && msg.contains("alice/other"), "{msg}");
    let out = env.cmd(&["whoami"]).env("HF_OIDC_RESOURCE", "not-a-repo").output().unwrap();
    assert!(code(&out, 2).contains("HF_OIDC_RESOURCE"));
}

#[test]
fn missing_ci_permissions_and_sources_are_explained() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &[]);
    let env = Env::new(&hub.endpoint);
    let data = env.dir.path().join("m");
    model(&data);
    let push = ["push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--oidc"];

    // In GitHub Actions without `permissions: id-token: write` the request variables are absent.
    let out = env.cmd(&push).env("GITHUB_ACTIONS", "true").output().unwrap();
    assert!(code(&out, 3).contains("permissions: id-token: write"), "{}", text(&out));
    // Outside any CI.
    let out = env.run(&push);
    assert!(code(&out, 3).contains("--oidc-token-file"), "{}", text(&out));
    // The CI's endpoint refuses to mint.
    let refusing = IdTokenServer::start(CI_SUBJECT, 403);
    let out = with_env(&env, &push, &refusing.github_env());
    let msg = code(&out, 3);
    assert!(msg.contains("refused to mint") && msg.contains("HTTP 403"), "{msg}");
    assert_no_secrets(&msg, &[]);
    // A wrong request bearer is refused by the endpoint too.
    let ci = IdTokenServer::start(CI_SUBJECT, 200);
    let mut vars = ci.github_env();
    vars[2].1 = "WrongBearer".into();
    assert!(code(&with_env(&env, &push, &vars), 3).contains("HTTP 401"));
    // A token file that is missing or is not a JWT is bad input.
    let out = env.run(&["push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--oidc-token-file", "/no/such/file"]);
    assert!(code(&out, 2).contains("/no/such/file"));
    let f = env.dir.path().join("not-jwt");
    std::fs::write(&f, "hello").unwrap();
    let out = env.run(&["push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--oidc-token-file", f.to_str().unwrap()]);
    assert!(code(&out, 2).contains("does not hold a JWT"));
    // A Hub that trusts no issuer says so.
    let plain_root = tempfile::tempdir().unwrap();
    let plain = start_hub(plain_root.path(), &[]);
    let jwt = mint_jwt("ci-key.der", &ci_claims(&plain.endpoint, CI_SUBJECT, 300));
    std::fs::write(&f, &jwt).unwrap();
    let env2 = Env::new(&plain.endpoint);
    let out = env2.run(&["push", data.to_str().unwrap(), "--repo", "alice/sky-lora", "--oidc-token-file", f.to_str().unwrap()]);
    assert!(code(&out, 3).contains("trusts no OIDC issuer"));
    // The offline Hub's own flags are checked.
    let out = env.run(&["hub", "serve", "--root", root.path().to_str().unwrap(), "--trust-subject", "x=alice/y"]);
    assert!(code(&out, 2).contains("--trust-issuer"));
    let out = env.run(&["hub", "serve", "--root", root.path().to_str().unwrap(), "--trust-issuer", "https://i=/no/jwks.json"]);
    assert!(code(&out, 2).contains("cannot read"));
}

#[test]
fn an_expired_short_lived_token_is_exchanged_again_mid_push() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &["--oidc-token-ttl", "1"]);
    let work = tempfile::tempdir().unwrap();
    let id_file = work.path().join("id-token");
    std::fs::write(&id_file, mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, 300))).unwrap();
    let data = work.path().join("m");
    model(&data);
    let repo = hfsky::repo_id::RepoId::parse("alice/sky-lora").unwrap();
    let opts = hfsky::auth::OidcOptions { enabled: true, token_file: Some(id_file.clone()) };
    let push_opts = hfsky::hub::push::PushOptions::new(repo.clone(), "m");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (client, cred) = hfsky::auth::hub_client(&hub.endpoint, Some(&repo), &opts).await.unwrap();
        let cred = cred.unwrap();
        assert_eq!(cred.expires_in, Some(1));
        client.whoami().await.unwrap();
        // Training takes a while; the exchanged token expires meanwhile.
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        let stale = hfsky::hub::HubClient::new(&hub.endpoint, Some(cred.token.clone())).unwrap();
        let e = stale.whoami().await.unwrap_err();
        assert!(e.status() == Some(401) && e.to_string().contains("expired"), "{e}");
        let o = hfsky::hub::push::push_folder(&client, &data, &push_opts).await.unwrap();
        assert_eq!(o.status, hfsky::hub::push::PushStatus::Committed);
        assert_ne!(client.token().unwrap(), cred.token, "a fresh token was exchanged");

        // When the re-exchange itself is refused, the push stops and says why.
        std::fs::write(&id_file, mint_jwt("ci-key.der", &ci_claims(&hub.endpoint, CI_SUBJECT, -600))).unwrap();
        write(&data.join("more.txt"), b"more");
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        let e = hfsky::hub::push::push_folder(&client, &data, &push_opts).await.unwrap_err();
        assert!(matches!(e, hfsky::hub::HubError::Auth(_)), "{e:?}");
        assert!(e.to_string().contains("refused the OIDC token exchange") && e.to_string().contains("expired"), "{e}");
    });
}

/// Hands out a token the Hub does not know: the retried request is refused again.
struct UselessRefresh;

impl hfsky::hub::client::TokenRefresh for UselessRefresh {
    fn refresh(&self) -> futures_util::future::BoxFuture<'_, Result<hfsky::token::Token, hfsky::hub::HubError>> {
        Box::pin(async { Ok(hfsky::token::Token::parse("hf_oidc_StillNotKnownToThisHub0123456789").unwrap()) })
    }
}

#[test]
fn a_token_refused_again_after_the_re_exchange_stops_the_request() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_oidc_hub(root.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stale = hfsky::token::Token::parse("hf_oidc_ExpiredLongAgo0123456789abcdefgh").unwrap();
    let client = hfsky::hub::HubClient::new(&hub.endpoint, Some(stale)).unwrap().with_refresh(std::sync::Arc::new(UselessRefresh));
    let e = rt.block_on(client.whoami()).unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("refused again right after exchanging for a fresh token"), "{e}");
    assert!(!e.to_string().contains("StillNotKnown") && !e.to_string().contains("ExpiredLongAgo"), "{e}");
}
