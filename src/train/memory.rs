//! How much memory a LoRA training step needs, before any weight is loaded, and whether to turn
//! on gradient checkpointing for it.
//!
//! A step holds the frozen UNet, the LoRA factors with their gradients and AdamW moments (f32),
//! and the activations the backward pass needs. Activations are linear in the number of latent
//! pixels (the attention never holds an N×N score matrix: `fused::attention` works in query
//! chunks), so they are counted by walking the UNet's block plan: each resnet and transformer
//! block keeps a fixed number of tensors of its width per latent pixel. With gradient
//! checkpointing a block keeps only its input and recomputes the rest in backward, so the step
//! holds every block's input plus one block's full activations.
//!
//! The per-block counts ([`RESNET_KEEPS`], [`TRANSFORMER_KEEPS`], …) were measured, not derived:
//! peak RSS of `benches/diffusion_bench train-step` on the real SD 1.5 UNet config at 256, 384
//! and 512 px with and without checkpointing, f32 on the CPU (the slope per latent pixel), and
//! checked on the real SDXL config, which the fit never saw (256 px: 0.98× of measured with and
//! without checkpointing). The test below holds every measurement.

use crate::diffusion::unet::config::{BlockPlan, Plan, UNetConfig};

/// Tensors a resnet keeps per latent pixel, in units of (in_channels + out_channels).
const RESNET_KEEPS: f64 = 3.4;
/// Tensors a transformer block keeps per latent pixel, in units of its width (norms, q/k/v,
/// attention outputs, the 8× GEGLU projection and its 4× output, residuals).
const TRANSFORMER_KEEPS: f64 = 49.8;
/// The `Transformer2DModel` around the blocks (group norm, proj_in/out, layout copies).
const TRANSFORMER_WRAPPER_KEEPS: f64 = 6.8;
/// Under checkpointing: what each checkpointed block keeps, in units of its input width (its
/// input, and the output handed to the graph with the residual it joins).
const CHECKPOINT_INPUT_KEEPS: f64 = 2.8;
/// What a step holds beside weights and activations (the time embedding, kernel scratch, the
/// process itself): the intercept of the fit.
const WORKSPACE_BYTES: u64 = 48 << 20;

/// The estimated peak of one training step, in bytes, by part.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepMemory {
    /// The frozen UNet (and, with `train_text_encoder`, the text encoders kept beside it) in the
    /// run's weights dtype.
    pub weights: u64,
    /// LoRA factors, their gradients and AdamW's two moments, all f32 (Prodigy's two more
    /// tensors per value are counted by the caller as half again as many parameters).
    pub trainable: u64,
    /// What forward keeps for backward at this resolution, batch size and checkpointing.
    pub activations: u64,
    pub workspace: u64,
}

impl StepMemory {
    pub fn total(&self) -> u64 {
        self.weights + self.trainable + self.activations + self.workspace
    }
}

/// The step's shape: what the user can change to make it fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepShape {
    /// Training resolution in pixels (square).
    pub resolution: usize,
    pub batch: usize,
    pub checkpointing: bool,
    /// Bytes per element of the frozen weights and activations (4 for f32, 2 for bf16/f16).
    pub dtype_bytes: usize,
}

/// Estimates a step of the UNet `unet` (its config.json) with `unet_params` frozen parameters
/// and `lora_params` trainable ones. `vae_downscale` is the VAE's factor (8 for SD/SDXL).
/// Errors: a config the UNet cannot be built from (the same message loading it would give).
pub fn estimate(unet: &UNetConfig, unet_params: u64, lora_params: u64, vae_downscale: usize, shape: StepShape) -> Result<StepMemory, String> {
    Ok(estimate_plan(&unet.plan()?, unet_params, lora_params, vae_downscale, shape))
}

pub(crate) fn estimate_plan(plan: &Plan, unet_params: u64, lora_params: u64, vae_downscale: usize, shape: StepShape) -> StepMemory {
    let latent = (shape.resolution / vae_downscale.max(1)) as f64;
    let pixels = latent * latent * shape.batch as f64;
    let per_pixel = if shape.checkpointing { checkpointed_keeps(plan) } else { full_keeps(plan) };
    StepMemory {
        weights: unet_params * shape.dtype_bytes as u64,
        trainable: lora_params * 16,
        activations: (per_pixel * pixels * shape.dtype_bytes as f64) as u64,
        workspace: WORKSPACE_BYTES,
    }
}

/// One checkpointing unit of the UNet: a resnet or a transformer block, with its width and the
/// fraction of the latent's pixels it runs at (1/4 per downsampling).
#[derive(Debug, Clone, Copy)]
enum Unit {
    Resnet { in_ch: usize, out_ch: usize, scale: f64 },
    Transformer { width: usize, scale: f64 },
}

impl Unit {
    /// Elements kept per latent pixel without checkpointing.
    fn keeps(&self) -> f64 {
        match *self {
            Unit::Resnet { in_ch, out_ch, scale } => RESNET_KEEPS * (in_ch + out_ch) as f64 * scale,
            Unit::Transformer { width, scale } => TRANSFORMER_KEEPS * width as f64 * scale,
        }
    }

    /// Elements of the unit's input per latent pixel (all a checkpointed unit keeps).
    fn input(&self) -> f64 {
        match *self {
            Unit::Resnet { in_ch, scale, .. } => in_ch as f64 * scale,
            Unit::Transformer { width, scale } => width as f64 * scale,
        }
    }
}

/// Every unit of the plan in forward order, and the per-pixel elements of the glue around them
/// (transformer wrappers, which are not checkpointed).
fn units(plan: &Plan) -> (Vec<Unit>, f64) {
    let mut units = Vec::new();
    let mut glue = 0.0;
    let mut scale = 1.0;
    let attention = |b: &BlockPlan, layer: usize, width: usize, scale: f64, units: &mut Vec<Unit>, glue: &mut f64| {
        if b.attention {
            *glue += TRANSFORMER_WRAPPER_KEEPS * width as f64 * scale;
            for _ in 0..b.transformer_layers.get(layer).copied().unwrap_or(1) {
                units.push(Unit::Transformer { width, scale });
            }
        }
    };
    for b in &plan.down {
        for layer in 0..b.num_layers {
            let in_ch = if layer == 0 { b.in_channels } else { b.out_channels };
            units.push(Unit::Resnet { in_ch, out_ch: b.out_channels, scale });
            attention(b, layer, b.out_channels, scale, &mut units, &mut glue);
        }
        if b.resample {
            scale /= 4.0;
        }
    }
    if let Some(m) = &plan.mid {
        units.push(Unit::Resnet { in_ch: m.channels, out_ch: m.channels, scale });
        glue += TRANSFORMER_WRAPPER_KEEPS * m.channels as f64 * scale;
        for _ in 0..m.transformer_layers.first().copied().unwrap_or(1) {
            units.push(Unit::Transformer { width: m.channels, scale });
        }
        units.push(Unit::Resnet { in_ch: m.channels, out_ch: m.channels, scale });
    }
    for b in &plan.up {
        for layer in 0..b.num_layers {
            // diffusers' up block: the previous output concatenated with a skip connection.
            let prev = if layer == 0 { b.prev_output_channels } else { b.out_channels };
            let skip = if layer + 1 == b.num_layers { b.in_channels } else { b.out_channels };
            units.push(Unit::Resnet { in_ch: prev + skip, out_ch: b.out_channels, scale });
            attention(b, layer, b.out_channels, scale, &mut units, &mut glue);
        }
        if b.resample {
            scale *= 4.0;
        }
    }
    (units, glue)
}

fn full_keeps(plan: &Plan) -> f64 {
    let (units, glue) = units(plan);
    units.iter().map(Unit::keeps).sum::<f64>() + glue
}

fn checkpointed_keeps(plan: &Plan) -> f64 {
    let (units, glue) = units(plan);
    let inputs: f64 = units.iter().map(|u| CHECKPOINT_INPUT_KEEPS * u.input()).sum();
    // Backward recomputes one unit at a time: its full activations exist once at the peak.
    let largest = units.iter().map(Unit::keeps).fold(0.0, f64::max);
    inputs + glue + largest
}

/// `gradient_checkpointing` in train.yaml: `auto` (the default) turns it on only when the step
/// would not fit the device's free memory without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpointing {
    #[default]
    Auto,
    On,
    Off,
}

impl serde::Serialize for Checkpointing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Checkpointing::Auto => s.serialize_str("auto"),
            Checkpointing::On => s.serialize_bool(true),
            Checkpointing::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Checkpointing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Checkpointing::On),
            Raw::Bool(false) => Ok(Checkpointing::Off),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for Checkpointing {
    type Err = String;
    /// `auto`, `true`/`on`/`yes`, `false`/`off`/`no` (the flag's values; the YAML key also takes booleans).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Checkpointing::Auto),
            "true" | "on" | "yes" => Ok(Checkpointing::On),
            "false" | "off" | "no" => Ok(Checkpointing::Off),
            _ => Err(format!("`{s}` is not one of auto, true, false")),
        }
    }
}

/// The step does not fit: what it needs, what there is, and what would fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.message())]
pub struct DoesNotFit {
    pub device: String,
    pub needed: StepMemory,
    pub shape: StepShape,
    pub available: u64,
    /// Changes that fit, each with its estimate (empty when nothing tried fits).
    pub suggestions: Vec<(String, u64)>,
}

impl DoesNotFit {
    fn message(&self) -> String {
        let s = &self.shape;
        let mut m = format!(
            "a training step at resolution {} with batch size {} ({}) needs about {} but the {} has {} free \
             (frozen weights {}, LoRA and optimizer {}, activations {})",
            s.resolution,
            s.batch,
            if s.checkpointing { "gradient checkpointing on" } else { "gradient checkpointing off" },
            gib(self.needed.total()),
            self.device,
            gib(self.available),
            gib(self.needed.weights),
            gib(self.needed.trainable),
            gib(self.needed.activations),
        );
        if self.suggestions.is_empty() {
            m.push_str(". Nothing tried fits (lower resolution, batch 1, checkpointing, half precision): use a device with more memory");
        } else {
            m.push_str(". What would fit: ");
            let tips: Vec<String> = self.suggestions.iter().map(|(what, bytes)| format!("{what} (~{})", gib(*bytes))).collect();
            m.push_str(&tips.join("; "));
        }
        m
    }
}

/// Bytes as GiB with one decimal, the way the messages and the summary print them.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// What a run will do, decided before any weight is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    pub checkpointing: bool,
    pub estimate: StepMemory,
    /// Why `auto` turned checkpointing on, for the progress output.
    pub note: Option<String>,
}

/// Picks checkpointing for `choice` and refuses a step that cannot fit `available` bytes.
/// `estimate_with(checkpointing, resolution, batch, dtype_bytes)` estimates a variant of the step;
/// `half_precision_possible` says whether suggesting f16/bf16 makes sense on this device.
pub fn plan(
    choice: Checkpointing,
    shape: StepShape,
    available: Option<u64>,
    device: &str,
    half_precision_possible: bool,
    estimate_with: impl Fn(StepShape) -> StepMemory,
) -> Result<MemoryPlan, DoesNotFit> {
    let with = |checkpointing: bool| StepShape { checkpointing, ..shape };
    let (off, on) = (estimate_with(with(false)), estimate_with(with(true)));
    let Some(available) = available else {
        // Nothing to compare with: keep what was asked; auto stays off (the faster step).
        let checkpointing = choice == Checkpointing::On;
        return Ok(MemoryPlan { checkpointing, estimate: if checkpointing { on } else { off }, note: None });
    };
    let (checkpointing, est, note) = match choice {
        Checkpointing::On => (true, on, None),
        Checkpointing::Off => (false, off, None),
        Checkpointing::Auto if off.total() <= available => (false, off, None),
        Checkpointing::Auto => (
            true,
            on,
            Some(format!(
                "gradient checkpointing on (auto): the step needs ~{} without it and the {device} has {} free; ~{} with it",
                gib(off.total()),
                gib(available),
                gib(on.total())
            )),
        ),
    };
    if est.total() <= available {
        return Ok(MemoryPlan { checkpointing, estimate: est, note });
    }
    let mut suggestions = Vec::new();
    let mut tip = |what: String, s: StepShape| {
        let e = estimate_with(s);
        if e.total() <= available {
            suggestions.push((what, e.total()));
        }
    };
    if !checkpointing {
        tip("gradient_checkpointing: true".into(), with(true));
    }
    if shape.batch > 1 {
        tip(
            format!("train_batch_size: 1 with gradient_accumulation_steps: {} (same effective batch)", shape.batch),
            StepShape { batch: 1, checkpointing: true, ..shape },
        );
    }
    if half_precision_possible && shape.dtype_bytes > 2 {
        tip("precision: auto (half-precision weights on this GPU)".into(), StepShape { dtype_bytes: 2, ..with(true) });
    }
    // The largest resolution (a multiple of 64, as buckets use) that fits with checkpointing.
    let largest = (4..shape.resolution.div_ceil(64))
        .rev()
        .map(|k| k * 64)
        .find(|&r| estimate_with(StepShape { resolution: r, ..with(true) }).total() <= available);
    if let Some(r) = largest {
        tip(format!("resolution: {r} (with gradient checkpointing)"), StepShape { resolution: r, ..with(true) });
    }
    Err(DoesNotFit { device: device.to_string(), needed: est, shape: with(checkpointing), available, suggestions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::unet::config::UNetConfig;

    fn real(kind: &str) -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/realsize/{kind}/unet/config.json"));
        UNetConfig::from_file(&path).unwrap().plan().unwrap()
    }

    const SD15_PARAMS: u64 = 859_520_964;
    const SDXL_PARAMS: u64 = 2_567_463_684;
    /// Rank-4 LoRA on to_q/k/v/out.0 (what benches/diffusion_bench train-step trains).
    const SD15_LORA: u64 = 797_184;
    const SDXL_LORA: u64 = 2_899_840;

    fn f32_step(resolution: usize, checkpointing: bool) -> StepShape {
        StepShape { resolution, batch: 1, checkpointing, dtype_bytes: 4 }
    }

    /// Peak RSS of `diffusion_bench train-step` (one step, f32, CPU) on the real configs with
    /// random weights, measured 2026-12-01 (see the module doc); the process's own ~40 MB
    /// (binary, allocator, thread stacks) is part of the measurement.
    #[test]
    fn estimates_are_within_a_quarter_of_measured_peaks_on_real_configs() {
        let cases = [
            ("sd15", SD15_PARAMS, SD15_LORA, 256, false, 4_247_248_896u64),
            ("sd15", SD15_PARAMS, SD15_LORA, 384, false, 5_185_241_088),
            ("sd15", SD15_PARAMS, SD15_LORA, 512, false, 6_536_114_176),
            ("sd15", SD15_PARAMS, SD15_LORA, 256, true, 3_691_773_952),
            ("sd15", SD15_PARAMS, SD15_LORA, 512, true, 4_387_622_912),
            ("sdxl", SDXL_PARAMS, SDXL_LORA, 256, false, 12_071_710_720),
            ("sdxl", SDXL_PARAMS, SDXL_LORA, 256, true, 10_812_469_248),
        ];
        for (kind, params, lora, res, ckpt, measured) in cases {
            let e = estimate_plan(&real(kind), params, lora, 8, f32_step(res, ckpt)).total();
            let ratio = e as f64 / measured as f64;
            assert!((0.75..=1.25).contains(&ratio), "{kind} {res} px checkpointing={ckpt}: estimate {} vs measured {}", gib(e), gib(measured));
        }
    }

    #[test]
    fn activations_scale_with_pixels_and_batch_and_checkpointing_saves_most() {
        let p = real("sd15");
        let a = |res, batch, ckpt| {
            estimate_plan(&p, SD15_PARAMS, SD15_LORA, 8, StepShape { resolution: res, batch, checkpointing: ckpt, dtype_bytes: 4 }).activations
        };
        let base = a(512, 1, false) as f64;
        assert!((a(1024, 1, false) as f64 / base - 4.0).abs() < 1e-6);
        assert!((a(512, 2, false) as f64 / base - 2.0).abs() < 1e-6);
        assert!((a(512, 1, true) as f64) < base / 3.0, "checkpointing keeps block inputs and one block");
        let half = estimate_plan(&p, SD15_PARAMS, SD15_LORA, 8, StepShape { resolution: 512, batch: 1, checkpointing: false, dtype_bytes: 2 });
        assert_eq!(half.weights, SD15_PARAMS * 2);
        // SDXL's ten-block transformers at 1/16 of the pixels make it heavier per pixel than SD 1.5.
        assert!(full_keeps(&real("sdxl")) > full_keeps(&p));
    }

    #[test]
    fn auto_turns_checkpointing_on_only_when_needed_and_too_big_names_what_fits() {
        let p = real("sdxl");
        let est = |s: StepShape| estimate_plan(&p, SDXL_PARAMS, SDXL_LORA, 8, s);
        let shape = StepShape { resolution: 1024, batch: 1, checkpointing: false, dtype_bytes: 2 };
        let (off, on) = (est(shape).total(), est(StepShape { checkpointing: true, ..shape }).total());
        assert!(on < off);

        let roomy = plan(Checkpointing::Auto, shape, Some(off + (1 << 30)), "GPU", true, est).unwrap();
        assert!(!roomy.checkpointing && roomy.note.is_none());
        let tight = plan(Checkpointing::Auto, shape, Some((on + off) / 2), "GPU", true, est).unwrap();
        assert!(tight.checkpointing && tight.note.as_deref().unwrap().contains("gradient checkpointing on (auto)"));
        // An explicit choice is kept when it fits; unknown free memory keeps auto off.
        assert!(!plan(Checkpointing::Off, shape, Some(off), "GPU", true, est).unwrap().checkpointing);
        assert!(!plan(Checkpointing::Auto, shape, None, "GPU", true, est).unwrap().checkpointing);

        // Off does not fit but on would: the error says so, before anything is loaded.
        let e = plan(Checkpointing::Off, shape, Some((on + off) / 2), "GPU", true, est).unwrap_err();
        assert!(e.to_string().contains("gradient_checkpointing: true"), "{e}");
        // f32 on a 12 GiB card: half precision and a lower resolution are what fit.
        let f32_shape = StepShape { dtype_bytes: 4, ..shape };
        let e = plan(Checkpointing::Auto, f32_shape, Some(12 << 30), "GPU", true, est).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("resolution 1024") && msg.contains("12.0 GiB free") && msg.contains("precision: auto"), "{msg}");
        assert!(msg.contains("resolution: 8") || msg.contains("resolution: 9"), "the largest that fits, between 768 and 1024: {msg}");
        for (_, bytes) in &e.suggestions {
            assert!(*bytes <= 12 << 30);
        }
        // Nothing fits a tiny device: say so.
        let e = plan(Checkpointing::Auto, shape, Some(1 << 30), "GPU", true, est).unwrap_err();
        assert!(e.suggestions.is_empty() && e.to_string().contains("Nothing tried fits"), "{e}");
    }

    #[test]
    fn the_yaml_key_takes_auto_and_booleans() {
        let read = |y: &str| serde_yaml::from_str::<Checkpointing>(y);
        assert_eq!(read("auto").unwrap(), Checkpointing::Auto);
        assert_eq!(read("true").unwrap(), Checkpointing::On);
        assert_eq!(read("false").unwrap(), Checkpointing::Off);
        assert_eq!(read("\"on\"").unwrap(), Checkpointing::On);
        assert!(read("sometimes").unwrap_err().to_string().contains("auto, true, false"));
        assert_eq!(serde_yaml::to_string(&Checkpointing::On).unwrap().trim(), "true");
        assert_eq!(serde_yaml::to_string(&Checkpointing::Auto).unwrap().trim(), "auto");
    }
}
