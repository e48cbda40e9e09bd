//! LoRA file keys → (component, module, field). Two namings of the module path exist:
//! dotted diffusers paths behind a component prefix (`unet.down_blocks.0…to_q`, PEFT and
//! diffusers files) and kohya's underscored ones (`lora_unet_down_blocks_0_…_to_q`, kohya
//! sd-scripts and LyCORIS files; for SDXL they name the original SGM UNet's blocks, mapped here
//! to diffusers paths as diffusers' `_maybe_map_sgm_blocks_to_diffusers` and
//! `_convert_unet_lora_key` do in `loaders/lora_conversion_utils.py`).

/// How a file names its module paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// `unet.<diffusers path>`, `text_encoder.<transformers path>`.
    Dotted,
    /// `lora_unet_<path with _>`, `lora_te_`/`lora_te1_`/`lora_te2_`.
    Kohya,
}

/// kohya prefix → component (longest prefixes first: `lora_te1_` before `lora_te_`).
const KOHYA_PREFIXES: [(&str, &str); 4] =
    [("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder")];

const COMPONENTS: [&str; 3] = ["text_encoder_2", "text_encoder", "unet"];

/// The tensor a key holds for its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Field {
    Down,
    Up,
    /// LoCon's Tucker core (`lora_mid`, [r, r, k, k]).
    Mid,
    Alpha,
    /// PEFT DoRA `lora_magnitude_vector` ([out]).
    Magnitude,
    /// kohya/LyCORIS DoRA `dora_scale` ([1, in, …] or [out, 1, …]).
    DoraScale,
    HadaW1A,
    HadaW1B,
    HadaW2A,
    HadaW2B,
    HadaT1,
    HadaT2,
    LokrW1,
    LokrW1A,
    LokrW1B,
    LokrW2,
    LokrW2A,
    LokrW2B,
    LokrT2,
}

/// Key suffix → field and the file format it marks (`None`: shared by several).
const SUFFIXES: [(&str, Field, Option<super::LoraFormat>); 24] = {
    use super::LoraFormat::*;
    [
        (".lora_A.weight", Field::Down, Some(Peft)),
        (".lora_B.weight", Field::Up, Some(Peft)),
        (".lora_magnitude_vector.weight", Field::Magnitude, Some(Peft)),
        (".lora_magnitude_vector", Field::Magnitude, Some(Peft)),
        (".lora.down.weight", Field::Down, Some(Diffusers)),
        (".lora.up.weight", Field::Up, Some(Diffusers)),
        (".lora_linear_layer.down.weight", Field::Down, Some(Diffusers)),
        (".lora_linear_layer.up.weight", Field::Up, Some(Diffusers)),
        (".lora_down.weight", Field::Down, None),
        (".lora_up.weight", Field::Up, None),
        (".lora_mid.weight", Field::Mid, None),
        (".alpha", Field::Alpha, None),
        (".dora_scale", Field::DoraScale, None),
        (".hada_w1_a", Field::HadaW1A, None),
        (".hada_w1_b", Field::HadaW1B, None),
        (".hada_w2_a", Field::HadaW2A, None),
        (".hada_w2_b", Field::HadaW2B, None),
        (".hada_t1", Field::HadaT1, None),
        (".hada_t2", Field::HadaT2, None),
        (".lokr_w1_a", Field::LokrW1A, None),
        (".lokr_w1_b", Field::LokrW1B, None),
        (".lokr_w2_a", Field::LokrW2A, None),
        (".lokr_w2_b", Field::LokrW2B, None),
        (".lokr_t2", Field::LokrT2, None),
    ]
};

/// One key understood: component, module name (in the file's naming), field, and the format the
/// suffix marks, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedKey {
    pub component: &'static str,
    pub module: String,
    pub naming: Naming,
    pub field: Field,
    pub format: Option<super::LoraFormat>,
}

/// Parses one key; `None` when either its prefix or its suffix is not one a LoRA file uses.
pub(crate) fn parse(key: &str) -> Option<ParsedKey> {
    let (component, rest, naming) = KOHYA_PREFIXES
        .iter()
        .find_map(|(p, c)| key.strip_prefix(p).map(|r| (*c, r, Naming::Kohya)))
        .or_else(|| COMPONENTS.iter().find_map(|c| key.strip_prefix(&format!("{c}.")).map(|r| (*c, r, Naming::Dotted))))?;
    if let Some((module, field, format)) = old_processor_key(rest).or_else(|| old_text_encoder_key(component, rest)) {
        return Some(ParsedKey { component, module, naming, field, format: Some(format) });
    }
    // `lokr_w1`/`lokr_w2` are prefixes of `lokr_w1_a` etc., so they are matched exactly last.
    let found = SUFFIXES
        .iter()
        .find_map(|(suffix, field, format)| rest.strip_suffix(suffix).map(|m| (m, *field, *format)))
        .or_else(|| rest.strip_suffix(".lokr_w1").map(|m| (m, Field::LokrW1, None)))
        .or_else(|| rest.strip_suffix(".lokr_w2").map(|m| (m, Field::LokrW2, None)));
    let (module, field, format) = found?;
    let format = format.or((naming == Naming::Kohya).then_some(super::LoraFormat::Kohya));
    Some(ParsedKey { component, module: module.to_string(), naming, field, format })
}

/// `…attn1.processor.to_q_lora.down.weight` → `…attn1.to_q` (diffusers' pre-PEFT format).
fn old_processor_key(rest: &str) -> Option<(String, Field, super::LoraFormat)> {
    let (field, stem) = if let Some(s) = rest.strip_suffix("_lora.down.weight") {
        (Field::Down, s)
    } else if let Some(s) = rest.strip_suffix("_lora.up.weight") {
        (Field::Up, s)
    } else {
        return None;
    };
    let (parent, proj) = stem.rsplit_once(".processor.")?;
    let proj = if proj == "to_out" { "to_out.0" } else { proj };
    Some((format!("{parent}.{proj}"), field, super::LoraFormat::DiffusersOld))
}

/// `text_model.encoder.layers.0.self_attn.to_q_lora.down.weight` → `….self_attn.q_proj`: the
/// pre-PEFT diffusers text-encoder form (diffusers' `_convert_text_encoder_lora_key` writes it).
fn old_text_encoder_key(component: &str, rest: &str) -> Option<(String, Field, super::LoraFormat)> {
    if component == "unet" {
        return None;
    }
    let (field, stem) =
        if let Some(s) = rest.strip_suffix("_lora.down.weight") { (Field::Down, s) } else { (Field::Up, rest.strip_suffix("_lora.up.weight")?) };
    let (parent, proj) = stem.rsplit_once(".self_attn.to_")?;
    let proj = match proj {
        "q" | "k" | "v" | "out" => format!("{proj}_proj"),
        _ => return None,
    };
    Some((format!("{parent}.self_attn.{proj}"), field, super::LoraFormat::DiffusersOld))
}

/// Whether a kohya UNet module name uses the SGM (original SDXL UNet) block names.
pub(crate) fn is_sgm(name: &str) -> bool {
    ["input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "label_emb_", "out_2"].iter().any(|p| name.starts_with(p))
}

/// The SGM resnet's inner layer names → diffusers' (`in_layers.2` is conv1, …).
const SGM_RESNET: [(&str, &str); 4] =
    [("in_layers_2", "conv1"), ("out_layers_3", "conv2"), ("emb_layers_1", "time_emb_proj"), ("skip_connection", "conv_shortcut")];

/// kohya SGM UNet module name → diffusers module path with `_` for `.` (as kohya spells it),
/// given the UNet's `layers_per_block`. SGM numbers the input blocks after `conv_in` as
/// (layers_per_block resnet[+attention] slots, then a downsampler) per down block, and the
/// output blocks as layers_per_block + 1 slots per up block with the upsampler in the last slot's
/// third (or, without attention, second) position. `None`: not an SGM name this maps.
pub(crate) fn sgm_to_diffusers(name: &str, layers_per_block: usize) -> Option<String> {
    let fixed = [
        ("time_embed_0", "time_embedding_linear_1"),
        ("time_embed_2", "time_embedding_linear_2"),
        ("label_emb_0_0", "add_embedding_linear_1"),
        ("label_emb_0_2", "add_embedding_linear_2"),
        ("out_2", "conv_out"),
        ("input_blocks_0_0", "conv_in"),
    ];
    if let Some((_, to)) = fixed.iter().find(|(from, _)| name == *from) {
        return Some(to.to_string());
    }
    let resnet_inner = |rest: &str| -> String {
        SGM_RESNET.iter().find_map(|(from, to)| (rest == *from).then(|| to.to_string())).unwrap_or_else(|| rest.to_string())
    };
    let numbers = |rest: &str| -> Option<(usize, usize, String)> {
        let mut it = rest.splitn(3, '_');
        let i = it.next()?.parse().ok()?;
        let j = it.next()?.parse().ok()?;
        Some((i, j, it.next().unwrap_or("").to_string()))
    };
    let slots = layers_per_block + 1;
    if let Some(rest) = name.strip_prefix("input_blocks_") {
        let (i, j, inner) = numbers(rest)?;
        if i == 0 {
            return None;
        }
        let (block, layer) = ((i - 1) / slots, (i - 1) % slots);
        return Some(if layer == layers_per_block {
            // `input_blocks_3_0_op`: the downsampler conv.
            (j == 0 && inner == "op").then(|| format!("down_blocks_{block}_downsamplers_0_conv"))?
        } else if j == 0 {
            format!("down_blocks_{block}_resnets_{layer}_{}", resnet_inner(&inner))
        } else if j == 1 {
            format!("down_blocks_{block}_attentions_{layer}_{inner}")
        } else {
            return None;
        });
    }
    if let Some(rest) = name.strip_prefix("middle_block_") {
        let (i, inner) = rest.split_once('_')?;
        return Some(match i {
            "0" => format!("mid_block_resnets_0_{}", resnet_inner(inner)),
            "1" => format!("mid_block_attentions_0_{inner}"),
            "2" => format!("mid_block_resnets_1_{}", resnet_inner(inner)),
            _ => return None,
        });
    }
    if let Some(rest) = name.strip_prefix("output_blocks_") {
        let (i, j, inner) = numbers(rest)?;
        let (block, layer) = (i / slots, i % slots);
        return Some(match (j, inner.as_str()) {
            (0, _) => format!("up_blocks_{block}_resnets_{layer}_{}", resnet_inner(&inner)),
            (1 | 2, "conv") => format!("up_blocks_{block}_upsamplers_0_conv"),
            (1, _) => format!("up_blocks_{block}_attentions_{layer}_{inner}"),
            _ => return None,
        });
    }
    None
}

/// diffusers module path (dotted) → kohya's SGM name for SDXL (the inverse of
/// [`sgm_to_diffusers`]), as kohya sd-scripts writes SDXL LoRAs. `None`: a path SGM has no name for.
pub(crate) fn diffusers_to_sgm(path: &str, layers_per_block: usize, up_has_attention: impl Fn(usize) -> bool) -> Option<String> {
    let fixed = [
        ("time_embedding.linear_1", "time_embed_0"),
        ("time_embedding.linear_2", "time_embed_2"),
        ("add_embedding.linear_1", "label_emb_0_0"),
        ("add_embedding.linear_2", "label_emb_0_2"),
        ("conv_out", "out_2"),
        ("conv_in", "input_blocks_0_0"),
    ];
    if let Some((_, to)) = fixed.iter().find(|(from, _)| path == *from) {
        return Some(to.to_string());
    }
    let slots = layers_per_block + 1;
    let under = |s: &str| s.replace('.', "_");
    let resnet_inner = |rest: &str| -> String {
        let rest = under(rest);
        SGM_RESNET.iter().find_map(|(from, to)| (rest == *to).then(|| from.to_string())).unwrap_or(rest)
    };
    if let ["mid_block", kind, l, rest] = path.splitn(4, '.').collect::<Vec<_>>().as_slice() {
        return match (*kind, *l) {
            ("resnets", "0") => Some(format!("middle_block_0_{}", resnet_inner(rest))),
            ("attentions", "0") => Some(format!("middle_block_1_{}", under(rest))),
            ("resnets", "1") => Some(format!("middle_block_2_{}", resnet_inner(rest))),
            _ => None,
        };
    }
    let parts: Vec<&str> = path.splitn(5, '.').collect();
    match parts.as_slice() {
        ["down_blocks", b, kind, l, rest] | ["up_blocks", b, kind, l, rest] => {
            let (b, l): (usize, usize) = (b.parse().ok()?, l.parse().ok()?);
            let down = parts[0] == "down_blocks";
            match (down, *kind) {
                (true, "resnets") => Some(format!("input_blocks_{}_0_{}", 1 + b * slots + l, resnet_inner(rest))),
                (true, "attentions") => Some(format!("input_blocks_{}_1_{}", 1 + b * slots + l, under(rest))),
                (true, "downsamplers") if *rest == "conv" => Some(format!("input_blocks_{}_0_op", 1 + b * slots + layers_per_block)),
                (false, "resnets") => Some(format!("output_blocks_{}_0_{}", b * slots + l, resnet_inner(rest))),
                (false, "attentions") => Some(format!("output_blocks_{}_1_{}", b * slots + l, under(rest))),
                (false, "upsamplers") if *rest == "conv" => {
                    let j = if up_has_attention(b) { 2 } else { 1 };
                    Some(format!("output_blocks_{}_{j}_conv", b * slots + layers_per_block))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_every_format_parse() {
        let k = parse("lora_unet_input_blocks_4_1_proj_in.lora_down.weight").unwrap();
        assert_eq!((k.component, k.module.as_str(), k.naming, k.field), ("unet", "input_blocks_4_1_proj_in", Naming::Kohya, Field::Down));
        assert_eq!(parse("lora_te2_text_model_encoder_layers_0_mlp_fc1.hada_w1_a").unwrap().component, "text_encoder_2");
        assert_eq!(parse("lora_unet_x.lokr_w1").unwrap().field, Field::LokrW1);
        assert_eq!(parse("lora_unet_x.lokr_w1_b").unwrap().field, Field::LokrW1B);
        let p = parse("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight").unwrap();
        assert_eq!((p.component, p.naming), ("text_encoder_2", Naming::Dotted));
        assert_eq!(parse("unet.a.to_q.lora_magnitude_vector").unwrap().field, Field::Magnitude);
        assert_eq!(parse("unet.a.attn1.processor.to_out_lora.up.weight").unwrap().module, "a.attn1.to_out.0");
        let t = parse("text_encoder.text_model.encoder.layers.1.self_attn.to_out_lora.up.weight").unwrap();
        assert_eq!((t.module.as_str(), t.field), ("text_model.encoder.layers.1.self_attn.out_proj", Field::Up));
        assert!(parse("unet.a.self_attn.to_q_lora.up.weight").is_none());
        assert!(parse("lora_unet_x.oft_blocks").is_none());
        assert!(parse("model.diffusion_model.x.lora_down.weight").is_none());
    }

    #[test]
    fn sgm_names_map_both_ways_as_diffusers_maps_them() {
        // SDXL: layers_per_block 2; up block 2 has no attention.
        for (sgm, diffusers) in [
            ("input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"),
            ("input_blocks_1_0_in_layers_2", "down_blocks_0_resnets_0_conv1"),
            ("input_blocks_4_0_skip_connection", "down_blocks_1_resnets_0_conv_shortcut"),
            ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
            ("input_blocks_8_1_proj_out", "down_blocks_2_attentions_1_proj_out"),
            ("middle_block_1_proj_in", "mid_block_attentions_0_proj_in"),
            ("middle_block_2_emb_layers_1", "mid_block_resnets_1_time_emb_proj"),
            ("output_blocks_0_1_transformer_blocks_9_ff_net_2", "up_blocks_0_attentions_0_transformer_blocks_9_ff_net_2"),
            ("output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"),
            ("output_blocks_5_0_out_layers_3", "up_blocks_1_resnets_2_conv2"),
            ("output_blocks_8_0_skip_connection", "up_blocks_2_resnets_2_conv_shortcut"),
            ("time_embed_0", "time_embedding_linear_1"),
            ("label_emb_0_2", "add_embedding_linear_2"),
            ("input_blocks_0_0", "conv_in"),
            ("out_2", "conv_out"),
        ] {
            assert_eq!(sgm_to_diffusers(sgm, 2).as_deref(), Some(diffusers), "{sgm}");
            // The inverse needs the dotted path; kohya's underscores inside names (`to_q`, `ff_net`)
            // are rebuilt from the known layer names in practice, here from a table.
            let dotted = diffusers
                .replace('_', ".")
                .replace("down.blocks", "down_blocks")
                .replace("up.blocks", "up_blocks")
                .replace("mid.block", "mid_block")
                .replace("transformer.blocks", "transformer_blocks")
                .replace("to.q", "to_q")
                .replace("proj.out", "proj_out")
                .replace("proj.in", "proj_in")
                .replace("conv.shortcut", "conv_shortcut")
                .replace("time.emb.proj", "time_emb_proj")
                .replace("time.embedding.linear.1", "time_embedding.linear_1")
                .replace("add.embedding.linear.2", "add_embedding.linear_2")
                .replace("conv.in", "conv_in")
                .replace("conv.out", "conv_out");
            assert_eq!(diffusers_to_sgm(&dotted, 2, |b| b < 2).as_deref(), Some(sgm), "{dotted}");
        }
        // SD 1.x in SGM naming: up block 0 has no attention, its upsampler is the second entry.
        assert_eq!(sgm_to_diffusers("output_blocks_2_1_conv", 2).as_deref(), Some("up_blocks_0_upsamplers_0_conv"));
        assert_eq!(diffusers_to_sgm("up_blocks.0.upsamplers.0.conv", 2, |b| b > 0).as_deref(), Some("output_blocks_2_1_conv"));
        assert_eq!(sgm_to_diffusers("middle_block_3_x", 2), None);
    }
}
