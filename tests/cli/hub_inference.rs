//! The offline Hub's inference routes rendered by hfsky's engine on the tiny SD 1.5 fixture,
//! called through the library's inference client as `hfsky compare` calls them: every provider
//! route, the worker's defaults and `--render-profile`, explicit overrides, and the bad-input
//! answers (no base_model, no provider, 402/429 from the provider, a bad profile).

use crate::common::*;
use hfsky::hub::inference::{HubRender, InferenceClient, InferenceError, Provider, ProviderChoice, TextToImageRequest};
use hfsky::hub::HubClient;
use hfsky::repo_id::RepoId;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Publishes the tiny SD 1.5 pipeline, a LoRA whose card names it, a LoRA without base_model
/// and a repo that is not text-to-image.
fn publish(env: &Env) {
    let push = |dir: &Path, repo: &str| ok(&env.cmd(&["push", dir.to_str().unwrap(), "--repo", repo]).env("HF_TOKEN", ALICE).output().unwrap());
    push(&fixtures().join("tiny-sd15"), "alice/tiny-sd15");
    let lora = std::fs::read(fixtures().join("tiny-sd15-lora/pytorch_lora_weights.safetensors")).unwrap();
    for (repo, card) in [
        ("alice/sky-lora", "---\nbase_model: alice/tiny-sd15\ntags: [lora, text-to-image]\n---\n# Sky\n"),
        ("alice/no-base", "---\ntags: [lora, text-to-image]\n---\n# No base\n"),
    ] {
        let dir = env.dir.path().join(repo.replace('/', "_"));
        write(&dir.join("README.md"), card.as_bytes());
        write(&dir.join("pytorch_lora_weights.safetensors"), &lora);
        push(&dir, repo);
    }
    let notes = env.dir.path().join("notes");
    write(&notes.join("README.md"), b"# Notes, no model\n");
    push(&notes, "alice/notes");
}

fn client(endpoint: &str) -> InferenceClient {
    let token = hfsky::token::Token::parse(ALICE).unwrap();
    InferenceClient::new(HubClient::new(endpoint, Some(token)).unwrap()).unwrap()
}

fn render(
    rt: &tokio::runtime::Runtime,
    c: &InferenceClient,
    repo: &str,
    provider: ProviderChoice,
    req: &TextToImageRequest,
) -> Result<HubRender, InferenceError> {
    let repo = RepoId::parse(repo).unwrap();
    rt.block_on(async { c.text_to_image(&c.choose(&repo, provider).await?, req).await })
}

fn req(seed: u64) -> TextToImageRequest {
    TextToImageRequest { prompt: "a photo of the SKY river".into(), seed: Some(seed), ..Default::default() }
}

#[test]
fn every_provider_route_renders_the_lora_with_the_profile_and_explicit_overrides() {
    let root = tempfile::tempdir().unwrap();
    let profile = root.path().join("profile.yaml");
    write(&profile, b"steps: 2\nguidance: 3\n");
    let hub = start_hub(&root.path().join("hub"), &["--providers", "fal-ai,hf-inference,replicate", "--render-profile", profile.to_str().unwrap()]);
    let env = Env::new(&hub.endpoint);
    publish(&env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client(&hub.endpoint);
    assert_eq!(c.router(), hub.endpoint, "a non-public endpoint serves the router routes itself");

    let mut images = vec![];
    for choice in [ProviderChoice::Auto, ProviderChoice::Only(Provider::HfInference), ProviderChoice::Only(Provider::Replicate)] {
        let r = render(&rt, &c, "alice/sky-lora", choice, &req(3)).unwrap_or_else(|e| panic!("{choice:?}: {e}"));
        let img = image::load_from_memory(&r.image).expect("the Hub's answer decodes").to_rgb8();
        let s = r.reported_settings.clone().expect("x-hfsky-render");
        // The worker's defaults where the profile is silent; the profile's values where it speaks.
        assert_eq!(s.scheduler, "EulerAncestralDiscreteScheduler");
        assert_eq!((s.dtype.as_str(), s.apply_lora, s.lora_scale), ("f16", true, 1.0));
        assert_eq!((s.steps, s.guidance, s.seed), (2, 3.0, 3));
        assert_eq!((s.base_model.as_str(), s.lora_file.as_deref()), ("alice/tiny-sd15", Some("pytorch_lora_weights.safetensors")));
        assert_eq!((img.width(), img.height(), r.width as usize), (s.width as u32, s.height as u32, s.width));
        assert!(r.request_id.is_some() && !r.date.is_empty() && r.parameters_sent.to_string().contains("SKY river"));
        images.push((r.provider.clone(), img));
    }
    // `auto` took the first provider in the --providers order; every provider rendered the
    // same job, so the same seed gives the same image.
    assert_eq!(images[0].0, "fal-ai");
    assert!(images.iter().all(|(_, img)| *img == images[0].1), "one job, one image");
    // The offline Hub renders with the engine of `hfsky generate`: the same settings and seed
    // locally give the same pixels.
    let out = env.dir.path().join("local");
    let fx = fixtures();
    let (model, lora) = (fx.join("tiny-sd15"), fx.join("tiny-sd15-lora/pytorch_lora_weights.safetensors"));
    ok(&env.run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--lora",
        lora.to_str().unwrap(),
        "--lora-merge",
        "--prompt",
        "a photo of the SKY river",
        "--scheduler",
        "euler-ancestral",
        "--steps",
        "2",
        "--guidance",
        "3",
        "--dtype",
        "f16",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(image::open(out.join("seed-3.png")).unwrap().to_rgb8(), images[0].1, "local render with the Hub's settings");

    let explicit = TextToImageRequest { num_inference_steps: Some(3), guidance_scale: Some(6.0), scheduler: Some("DDIMScheduler".into()), ..req(3) };
    let r = render(&rt, &c, "alice/sky-lora", ProviderChoice::Only(Provider::HfInference), &explicit).unwrap();
    let s = r.reported_settings.unwrap();
    assert_eq!((s.steps, s.guidance, s.scheduler.as_str()), (3, 6.0, "DDIMScheduler"));
    assert_ne!(image::load_from_memory(&r.image).unwrap().to_rgb8(), images[0].1, "other settings, other image");
}

#[test]
fn the_profile_plants_a_difference_the_header_reports() {
    let root = tempfile::tempdir().unwrap();
    let profile = root.path().join("no-lora.yaml");
    write(&profile, b"steps: 2\napply_lora: false\nwidth: 32\nheight: 48\ndtype: f32\n");
    let hub = start_hub(&root.path().join("hub"), &["--render-profile", profile.to_str().unwrap()]);
    let env = Env::new(&hub.endpoint);
    publish(&env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = render(&rt, &client(&hub.endpoint), "alice/sky-lora", ProviderChoice::Auto, &req(1)).unwrap();
    let s = r.reported_settings.unwrap();
    assert_eq!((r.provider.as_str(), s.apply_lora, s.lora_file, s.width, s.height, s.dtype.as_str()), ("hf-inference", false, None, 32, 48, "f32"));
    assert_eq!((r.width, r.height), (32, 48));
}

#[test]
fn bad_input_says_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(&root.path().join("hub"), &["--providers", "hf-inference,fal-ai"]);
    let env = Env::new(&hub.endpoint);
    publish(&env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client(&hub.endpoint);

    let e = render(&rt, &c, "alice/no-base", ProviderChoice::Auto, &req(1)).unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(e.to_string().contains("alice/no-base has no base_model in its model card"), "{e}");

    let e = render(&rt, &c, "alice/notes", ProviderChoice::Auto, &req(1)).unwrap_err().to_string();
    assert!(e.contains("no Inference Provider serves alice/notes") && e.contains("base_model") && e.contains("--hub-image FILE"), "{e}");
    let e = render(&rt, &c, "alice/no-base", ProviderChoice::Only(Provider::FalAi), &req(1)).unwrap_err().to_string();
    assert!(e.contains("fal-ai does not serve alice/no-base") && e.contains("no `base_model`"), "{e}");
    let e = render(&rt, &c, "alice/sky-lora", ProviderChoice::Only(Provider::Replicate), &req(1)).unwrap_err().to_string();
    assert!(e.contains("replicate does not serve alice/sky-lora") && e.contains("hf-inference, fal-ai"), "{e}");

    for (profile, named) in [("stepz: 3\n", "stepz"), ("scheduler: lms\n", "lms"), ("width: 30\nheight: 30\n", "30")] {
        let p = root.path().join("bad.yaml");
        write(&p, profile.as_bytes());
        let o =
            env.run(&["hub", "serve", "--port", "0", "--root", root.path().join("other").to_str().unwrap(), "--render-profile", p.to_str().unwrap()]);
        let out = code(&o, 2);
        assert!(out.contains("--render-profile") && out.contains("bad.yaml") && out.contains(named), "{out}");
    }
}

#[test]
fn provider_refusals_name_status_and_request_id() {
    let root = tempfile::tempdir().unwrap();
    for (faults, status, hint) in
        [("infer-402=1", 402, "credits"), ("infer-429=1,retry-after=4", 429, "retry after 4 s"), ("infer-404=1", 404, "not deployed on hf-inference")]
    {
        let hub = start_hub(&root.path().join(format!("hub-{status}")), &["--faults", faults]);
        let env = Env::new(&hub.endpoint);
        publish(&env);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let e = render(&rt, &client(&hub.endpoint), "alice/sky-lora", ProviderChoice::Auto, &req(1)).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.status(), Some(status), "{text}");
        assert!(text.contains(e.request_id().expect("request id")) && text.contains(hint), "{text}");
        assert!(text.contains(&format!("{}/hf-inference/models/alice/sky-lora", hub.endpoint)) && !text.contains(ALICE), "{text}");
    }
}
