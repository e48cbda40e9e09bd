//! `hfsky generate --lora` with the LoRA formats people publish, from the field cases in
//! tests/fixtures/field-cases (built after public bug reports; README in /work/shared/field-cases):
//! a kohya SD 1.5 LoRA with 4-D (1×1 conv) proj_in/proj_out factors, fp16 and 0-d alphas; DoRA
//! in PEFT's and kohya/LyCORIS' layouts, each against the plain full-rank LoRA holding its merged
//! weights.

use crate::common::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn field(case: &str) -> PathBuf {
    fixtures().join("field-cases").join(case)
}

/// Renders tiny-sd15 at a fixed seed with `lora` (fused or live) and returns the PNG's pixels.
fn render(env: &Env, lora: &Path, merge: bool, tag: &str) -> Vec<u8> {
    let out = env.dir.path().join(tag);
    let mut args = vec!["--json", "generate", "--model", arg(&fixtures().join("tiny-sd15")), "--prompt", "a photo of the SKY river"];
    args.extend(["--steps", "3", "--seed", "7", "--lora", arg(lora), "--out", arg(&out)]);
    if merge {
        args.push("--lora-merge");
    }
    let v = json(&env.run(&args));
    pixels(Path::new(v["images"][0]["png"].as_str().unwrap()))
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

#[test]
fn dora_files_render_like_their_merged_plain_lora() {
    let env = Env::new("http://127.0.0.1:9");
    for layout in ["peft", "kohya"] {
        let plain = render(&env, &field("dora").join(format!("dora_{layout}_as_plain_lora.safetensors")), false, &format!("{layout}-plain"));
        for merge in [false, true] {
            let dora = render(&env, &field("dora").join(format!("dora_{layout}.safetensors")), merge, &format!("{layout}-{merge}"));
            let d = max_diff(&dora, &plain);
            eprintln!("DoRA {layout} (merge {merge}) vs plain: max |Δ| {d}/255");
            assert!(d <= 1, "DoRA {layout} (merge {merge}): max |Δ| {d}/255 against its plain-LoRA equivalent");
        }
    }
}

#[test]
fn kohya_sd15_lora_with_conv_proj_factors_applies_every_factor() {
    let env = Env::new("http://127.0.0.1:9");
    let case = field("kohya-sd15-conv");
    let with = render(&env, &case.join("sd15_kohya_default.safetensors"), false, "with");
    let fused = render(&env, &case.join("sd15_kohya_default.safetensors"), true, "with-fused");
    let without = render(&env, &case.join("sd15_kohya_without_proj.safetensors"), false, "without");
    assert!(max_diff(&with, &fused) <= 1, "live and fused differ");
    let d = max_diff(&with, &without);
    eprintln!("kohya with vs without proj factors: max |Δ| {d}/255");
    assert!(d > 0, "the proj_in/proj_out factors changed nothing");
}

/// `hfsky lora convert`: a LoHa has no PEFT form (exit 2, naming the module and what to use);
/// the kohya export of it loads back; a LoRA whose base cannot be told asks for --base.
#[test]
fn lora_convert_refuses_what_a_layout_cannot_hold() {
    let env = Env::new("http://127.0.0.1:9");
    let loha = fixtures().join("lycoris/loha.safetensors");
    let out = env.dir.path().join("out.safetensors");
    let e = code(&env.run(&["lora", "convert", loha.to_str().unwrap(), "--to", "peft", "--out", out.to_str().unwrap(), "--base", "sd15"]), 2);
    assert!(e.contains("LoHa module has no PEFT/diffusers form") && e.contains("convert to kohya"), "{e}");
    assert!(!out.exists());
    let v =
        json(&env.run(&["--json", "lora", "convert", loha.to_str().unwrap(), "--to", "comfyui", "--out", out.to_str().unwrap(), "--base", "sd15"]));
    assert_eq!(v["modules"], 5, "{v}");
    let back = hfsky::diffusion::lora::LoraWeights::load(&out).unwrap();
    assert!(back.components["unet"].values().all(|m| m.kind() == "LoHa"));
    // One attention module of a 2-block UNet says nothing about SD 1.x vs SDXL.
    let dir = env.dir.path();
    let ambiguous = dir.join("a.safetensors");
    let t = candle_core::Tensor::zeros((2, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            ("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight".to_string(), t.clone()),
            ("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight".to_string(), t.t().unwrap().contiguous().unwrap()),
        ]),
        &ambiguous,
    )
    .unwrap();
    let e = code(&env.run(&["lora", "convert", ambiguous.to_str().unwrap(), "--to", "kohya", "--out", out.to_str().unwrap()]), 2);
    assert!(e.contains("pass --base sd15|sdxl"), "{e}");
}
