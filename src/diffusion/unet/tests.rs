//! Parity with diffusers 0.42.1 on the tiny fixtures, and exact LoRA gradients.

use super::*;
use crate::diffusion::lora::LoraWeights;
use crate::diffusion::nn::{rel_error, Adapter};
use crate::diffusion::testing::{fixtures_dir, pipeline_dir, reference};
use candle_core::Var;
use std::collections::HashMap;
use std::path::PathBuf;

fn weights(name: &str) -> PathBuf {
    pipeline_dir(name).join("unet/diffusion_pytorch_model.safetensors")
}

fn load(name: &str, dtype: DType) -> (UNet2DConditionModel, Adapters) {
    let config = UNetConfig::from_file(&pipeline_dir(name).join("unet/config.json")).unwrap();
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights(name)], dtype, &Device::Cpu).unwrap() };
    let adapters = Adapters::new();
    let unet = UNet2DConditionModel::new(vb, &config, &adapters).unwrap();
    (unet, adapters)
}

fn run(unet: &UNet2DConditionModel, r: &HashMap<String, Tensor>) -> Tensor {
    let added = r.get("unet.text_embeds").map(|t| SdxlConditioning { text_embeds: t.clone(), time_ids: r["unet.time_ids"].clone() });
    unet.forward(&r["unet.sample"], &r["unet.timesteps"], &r["unet.encoder_hidden_states"], added.as_ref()).unwrap()
}

fn parity(name: &str) {
    let (unet, _) = load(name, DType::F32);
    let r = reference(name);
    let out = run(&unet, &r);
    assert_eq!(out.dims(), r["unet.out"].dims());
    let err = rel_error(&out, &r["unet.out"]).unwrap();
    eprintln!("{name}: UNet rel error vs diffusers = {err:.3e}");
    assert!(err < 1e-4, "{name}: rel error {err}");
}

#[test]
fn sd15_matches_diffusers() {
    parity("tiny-sd15");
}

#[test]
fn sdxl_matches_diffusers() {
    parity("tiny-sdxl");
}

/// The fixture LoRA (rank 4, alpha 8) through lora.rs onto our linears reproduces diffusers'
/// `unet.out_lora`: module paths and LoRA-on-activation semantics agree.
#[test]
fn fixture_lora_matches_diffusers() {
    for name in ["tiny-sd15", "tiny-sdxl"] {
        let (unet, adapters) = load(name, DType::F32);
        let lora = LoraWeights::load(&fixtures_dir().join(format!("{name}-lora/pytorch_lora_weights.safetensors"))).unwrap();
        assert!(lora.apply("unet", &adapters, 1.0).unwrap() > 0);
        let r = reference(name);
        let out = run(&unet, &r);
        let err = rel_error(&out, &r["unet.out_lora"]).unwrap();
        eprintln!("{name}: UNet+LoRA rel error vs diffusers = {err:.3e}");
        assert!(err < 1e-4, "{name}: rel error with LoRA {err}");
        assert!(rel_error(&out, &r["unet.out"]).unwrap() > 1e-3, "{name}: the LoRA changed nothing");
    }
}

/// A fused LoRA (diffusers' `fuse_lora`) computes what the live one does: to f32 precision in
/// f32, and within f16 rounding of the fused weights in f16.
#[test]
fn fused_lora_matches_live() {
    for name in ["tiny-sd15", "tiny-sdxl"] {
        let lora = LoraWeights::load(&fixtures_dir().join(format!("{name}-lora/pytorch_lora_weights.safetensors"))).unwrap();
        let r = reference(name);
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F16, 5e-3)] {
            let (unet, adapters) = load(name, dtype);
            let n = lora.apply("unet", &adapters, 0.7).unwrap();
            let live = run(&unet, &r);
            adapters.clear();
            assert_eq!(lora.fuse("unet", &adapters, 0.7).unwrap(), n);
            assert_eq!((adapters.len(), adapters.fused_len()), (0, n));
            let fused = run(&unet, &r);
            let err = rel_error(&fused, &live).unwrap();
            eprintln!("{name} {dtype:?}: fused vs live LoRA rel error = {err:.3e}");
            assert!(err < tol, "{name} {dtype:?}: fused vs live rel error {err}");
            adapters.unfuse();
            assert!(rel_error(&run(&unet, &r), &live).unwrap() > 1e-3, "{name}: unfuse restores the base weights");
        }
    }
}

#[test]
fn lora_targets_use_diffusers_module_paths() {
    let (_, adapters) = load("tiny-sdxl", DType::F32);
    let known = adapters.known_modules();
    for m in [
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0",
        "up_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj",
        "up_blocks.0.attentions.1.proj_in",
        "time_embedding.linear_1",
        "add_embedding.linear_2",
        "down_blocks.0.resnets.0.time_emb_proj",
    ] {
        assert!(known.contains(m), "{m} not in {known:?}");
    }
    // SD 1.5 layout: proj_in/out are 1×1 convs, not linears.
    let (_, adapters) = load("tiny-sd15", DType::F32);
    assert!(!adapters.known_modules().contains("down_blocks.0.attentions.0.proj_in"));
}

#[test]
fn conditioning_mismatches_are_errors() {
    let (sd, _) = load("tiny-sd15", DType::F32);
    let (xl, _) = load("tiny-sdxl", DType::F32);
    let r = reference("tiny-sdxl");
    let err = xl.forward(&r["unet.sample"], &r["unet.timesteps"], &r["unet.encoder_hidden_states"], None).unwrap_err().to_string();
    assert!(err.contains("text_embeds"), "{err}");
    let cond = SdxlConditioning { text_embeds: r["unet.text_embeds"].clone(), time_ids: r["unet.time_ids"].clone() };
    let rs = reference("tiny-sd15");
    let err = sd.forward(&rs["unet.sample"], &rs["unet.timesteps"], &rs["unet.encoder_hidden_states"], Some(&cond)).unwrap_err().to_string();
    assert!(err.contains("no added conditioning"), "{err}");
    let err = sd.forward(&rs["unet.sample"], &rs["unet.timesteps"], &r["unet.encoder_hidden_states"], None).unwrap_err().to_string();
    assert!(err.contains("cross-attention width"), "{err}");
    let short = SdxlConditioning { text_embeds: cond.text_embeds.narrow(1, 0, 16).unwrap(), time_ids: cond.time_ids.clone() };
    let err = xl.forward(&r["unet.sample"], &r["unet.timesteps"], &r["unet.encoder_hidden_states"], Some(&short)).unwrap_err().to_string();
    assert!(err.contains("add_embedding"), "{err}");
}

/// One scalar timestep is broadcast over the batch; per-sample timesteps really are per sample.
#[test]
fn timesteps_are_per_sample() {
    let (unet, _) = load("tiny-sd15", DType::F32);
    let r = reference("tiny-sd15");
    let (x, ctx) = (&r["unet.sample"], &r["unet.encoder_hidden_states"]);
    let both = unet.forward(x, &Tensor::new(&[250f32, 250.0], &Device::Cpu).unwrap(), ctx, None).unwrap();
    let scalar = unet.forward(x, &Tensor::new(250i64, &Device::Cpu).unwrap(), ctx, None).unwrap();
    assert_eq!(rel_error(&both, &scalar).unwrap(), 0.0);
    let mixed = unet.forward(x, &r["unet.timesteps"], ctx, None).unwrap(); // [999, 250]
    assert_eq!(rel_error(&mixed.narrow(0, 1, 1).unwrap(), &both.narrow(0, 1, 1).unwrap()).unwrap(), 0.0);
    assert!(rel_error(&mixed.narrow(0, 0, 1).unwrap(), &both.narrow(0, 0, 1).unwrap()).unwrap() > 1e-3);
}

/// Odd latent sizes take diffusers' `forward_upsample_size` path (upsample to the skip's size).
#[test]
fn odd_latent_sizes_run() {
    let (unet, _) = load("tiny-sdxl", DType::F32);
    let r = reference("tiny-sdxl");
    let x = Tensor::ones((2, 4, 7, 9), DType::F32, &Device::Cpu).unwrap();
    let cond = SdxlConditioning { text_embeds: r["unet.text_embeds"].clone(), time_ids: r["unet.time_ids"].clone() };
    let out = unet.forward(&x, &r["unet.timesteps"], &r["unet.encoder_hidden_states"], Some(&cond)).unwrap();
    assert_eq!(out.dims(), &[2, 4, 7, 9]);
}

#[test]
fn missing_or_misshaped_tensors_are_named() {
    let name = "tiny-sd15";
    let config = UNetConfig::from_file(&pipeline_dir(name).join("unet/config.json")).unwrap();
    let all = candle_core::safetensors::load(weights(name), &Device::Cpu).unwrap();
    let key = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let mut missing = all.clone();
    missing.remove(key);
    let vb = VarBuilder::from_tensors(missing, DType::F32, &Device::Cpu);
    let err = UNet2DConditionModel::new(vb, &config, &Adapters::new()).unwrap_err().to_string();
    assert!(err.contains(key), "{err}");
    let mut wrong = all;
    wrong.insert(key.to_string(), Tensor::zeros((64, 31), DType::F32, &Device::Cpu).unwrap());
    let vb = VarBuilder::from_tensors(wrong, DType::F32, &Device::Cpu);
    let err = UNet2DConditionModel::new(vb, &config, &Adapters::new()).unwrap_err().to_string();
    assert!(err.contains(key), "{err}");
}

/// Deterministic values in [-1, 1) (xorshift), so the gradient test is reproducible.
fn pseudo_random(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A random LoRA on every to_q/to_k/to_v/to_out.0: every factor gets a gradient, and sampled
/// gradient entries equal central finite differences of loss = Σ out² (f64 weights).
fn lora_gradients_are_exact(name: &str) {
    let (unet, adapters) = load(name, DType::F64);
    let shapes = candle_core::safetensors::load(weights(name), &Device::Cpu).unwrap();
    let r = reference(name);
    let rank = 2;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut vars: Vec<(String, Var, Var)> = Vec::new();
    for module in adapters.known_modules() {
        if !["to_q", "to_k", "to_v", "to_out.0"].iter().any(|s| module.ends_with(&format!(".{s}"))) {
            continue;
        }
        let (out_dim, in_dim) = shapes[&format!("{module}.weight")].dims2().unwrap();
        let mk = |seed: &mut u64, shape: (usize, usize), amp: f32| {
            let v: Vec<f32> = pseudo_random(seed, shape.0 * shape.1).into_iter().map(|x| x * amp).collect();
            Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
        };
        let down = mk(&mut seed, (rank, in_dim), 0.3);
        let up = mk(&mut seed, (out_dim, rank), 0.3);
        adapters.attach(&module, Adapter { down: down.as_tensor().clone(), up: up.as_tensor().clone(), scale: 1.0, magnitude: None }).unwrap();
        vars.push((module, down, up));
    }
    assert!(vars.len() >= 16, "{name}: only {} attention linears", vars.len());
    let loss = || -> Tensor {
        let out = run(&unet, &r);
        assert_eq!(out.dtype(), DType::F64);
        out.sqr().unwrap().sum_all().unwrap()
    };
    let grads = loss().backward().unwrap();
    for (module, down, up) in &vars {
        for (which, v) in [("A", down), ("B", up)] {
            let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient for {module} {which}"));
            let norm = g.abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert!(norm > 0.0, "{name}: zero gradient for {module} {which}");
        }
    }
    // Finite differences on the largest-gradient entry of A and B of a few layers spread over the
    // network (the largest entry keeps the f32 LoRA path's rounding far below the tolerance).
    let picks = [0, vars.len() / 3, vars.len() / 2, vars.len() - 1];
    let h = 1e-2f32;
    for &i in &picks {
        let (module, down, up) = &vars[i];
        for (which, v) in [("A", down), ("B", up)] {
            let (idx, analytic, numeric) = crate::diffusion::testing::central_difference(v, grads.get(v.as_tensor()).unwrap(), h, loss);
            let rel = (numeric - analytic as f64).abs() / numeric.abs().max(1e-12);
            eprintln!("{name}: {module} {which}[{idx}]: analytic {analytic:.6e}, numeric {numeric:.6e}, rel {rel:.1e}");
            assert!(rel < 1e-3, "{name}: {module} {which}[{idx}]: analytic {analytic} vs numeric {numeric}");
        }
    }
}

#[test]
fn sd15_lora_gradients_are_exact() {
    lora_gradients_are_exact("tiny-sd15");
}

#[test]
fn sdxl_lora_gradients_are_exact() {
    lora_gradients_are_exact("tiny-sdxl");
}

/// Half precision runs end to end (norms and attention softmax are taken in f32) and stays close.
#[test]
fn f16_stays_close_to_diffusers_f32() {
    for name in ["tiny-sd15", "tiny-sdxl"] {
        let (unet, _) = load(name, DType::F16);
        let r = reference(name);
        let out = run(&unet, &r);
        assert_eq!(out.dtype(), DType::F16);
        let err = rel_error(&out, &r["unet.out"]).unwrap();
        eprintln!("{name}: f16 UNet rel error vs diffusers f32 = {err:.3e}");
        assert!(err < 1e-2, "{name}: f16 rel error {err}");
    }
}

/// LyCORIS' own modules (lycoris-lora 4.1.3) applied to diffusers' UNet, against our loader:
/// LoHa (with Tucker cores on a 3×3 conv), LoKr (full/factorised halves, Tucker), kohya LoCon on
/// every conv kind (fp16, 0-d alphas, a Tucker `lora_mid`), LyCORIS DoRA on both axes, and a
/// kohya SDXL file in SGM block names (which diffusers' `load_lora_weights` reads to the same
/// output; tests/fixtures/make_lycoris.py checks that). Live and fused.
#[test]
fn lycoris_and_kohya_files_match_lycoris_own_application() {
    let refs = candle_core::safetensors::load(fixtures_dir().join("lycoris-reference.safetensors"), &Device::Cpu).unwrap();
    for (case, model) in [
        ("loha", "tiny-sd15"),
        ("lokr", "tiny-sd15"),
        ("locon", "tiny-sd15"),
        ("dora_out", "tiny-sd15"),
        ("dora_in", "tiny-sd15"),
        ("sdxl_kohya", "tiny-sdxl"),
    ] {
        let lora = LoraWeights::load(&fixtures_dir().join(format!("lycoris/{case}.safetensors"))).unwrap();
        let multiplier = refs[&format!("{case}.multiplier")].to_vec1::<f32>().unwrap()[0] as f64;
        let want = &refs[&format!("{case}.out")];
        let r = reference(model);
        let (unet, adapters) = load(model, DType::F32);
        let base = run(&unet, &r);
        let n = lora.apply("unet", &adapters, multiplier).unwrap();
        assert_eq!(n, lora.components["unet"].len(), "{case}: every module placed");
        let live = run(&unet, &r);
        adapters.clear();
        lora.fuse("unet", &adapters, multiplier).unwrap();
        let fused = run(&unet, &r);
        for (mode, out) in [("live", &live), ("fused", &fused)] {
            let err = rel_error(out, want).unwrap();
            eprintln!("{case} {mode}: rel error vs LyCORIS {err:.2e}");
            assert!(err < 1e-4, "{case} {mode}: rel error vs LyCORIS {err:.2e}");
        }
        assert!(rel_error(&base, want).unwrap() > 1e-2, "{case}: the adapter changes the output");
    }
}

/// Every LyCORIS-made file written back out in the kohya layout (and, for the kinds PEFT can
/// hold, the PEFT layout) and read again computes what LyCORIS computed.
#[test]
fn exported_layouts_compute_the_same() {
    use crate::diffusion::lora::export::{BaseLayout, ExportFormat};
    let refs = candle_core::safetensors::load(fixtures_dir().join("lycoris-reference.safetensors"), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (case, model, peft) in [
        ("loha", "tiny-sd15", false),
        ("lokr", "tiny-sd15", false),
        ("locon", "tiny-sd15", false),
        ("dora_in", "tiny-sd15", false),
        ("sdxl_kohya", "tiny-sdxl", true),
    ] {
        let lora = LoraWeights::load(&fixtures_dir().join(format!("lycoris/{case}.safetensors"))).unwrap();
        let base = BaseLayout::from_unet_config(&UNetConfig::from_file(&pipeline_dir(model).join("unet/config.json")).unwrap());
        let multiplier = refs[&format!("{case}.multiplier")].to_vec1::<f32>().unwrap()[0] as f64;
        let r = reference(model);
        let mut formats = vec![ExportFormat::Kohya];
        if peft {
            formats.push(ExportFormat::Peft);
        } else {
            let err = lora.export(ExportFormat::Peft, &base).unwrap_err().to_string();
            assert!(err.contains("no PEFT/diffusers form") || err.contains("keep it in kohya format"), "{case}: {err}");
        }
        for f in formats {
            let out = dir.path().join(format!("{case}-{f:?}.safetensors"));
            lora.export_to(f, &base, &out).unwrap();
            let back = LoraWeights::load(&out).unwrap();
            let (unet, adapters) = load(model, DType::F32);
            assert_eq!(back.apply("unet", &adapters, multiplier).unwrap(), lora.components["unet"].len());
            let err = rel_error(&run(&unet, &r), &refs[&format!("{case}.out")]).unwrap();
            assert!(err < 1e-4, "{case} via {f:?}: rel error {err:.2e}");
        }
    }
}
