//! Which files of a pipeline repo to download, chosen the way diffusers'
//! `DiffusionPipeline.download` chooses them (`load_dict_from_json(model_index.json)`,
//! `_get_ignore_patterns`, `variant_compatible_siblings`): only the components `model_index.json`
//! lists, their configs and tokenizer files, and for each model component one set of weights: the
//! requested variant, falling back per component to the default weights, sharded through its
//! index or a single file. Never the repo's other files: single-file checkpoints at the root,
//! ONNX/OpenVINO/Flax exports, extra folders such as `vae_1_0/`, pickles when safetensors exist.

use crate::diffusion::config::add_variant;
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("model_index.json: {0}")]
    BadIndex(String),
    #[error(
        "{component}/: only pickle weights ({files}): hfsky loads safetensors only, because loading a pickle can run arbitrary code. \
         Convert the pipeline once with diffusers (in Python: `DiffusionPipeline.from_pretrained(\"REPO\").save_pretrained(\"OUT\", safe_serialization=True)`) \
         and pass OUT, or use a revision of the repo that has .safetensors weights"
    )]
    PickleOnly { component: String, files: String },
    #[error("{component}/: no safetensors weights in the repo (looked for {looked_for})")]
    NoWeights { component: String, looked_for: String },
    #[error("{index}: {detail}")]
    BadShardIndex { index: String, detail: String },
}

/// The weights chosen for one model component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsChoice {
    /// One file, e.g. `unet/diffusion_pytorch_model.fp16.safetensors`.
    Single(String),
    /// A shard index, e.g. `unet/diffusion_pytorch_model.safetensors.index.json`: its shards are
    /// known once it is read ([`shards_of`]).
    Sharded(String),
}

/// The first pass of the selection: everything but the shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// `model_index.json`, configs, tokenizer and scheduler files, single weight files and shard indexes.
    pub files: Vec<String>,
    /// The shard indexes among `files`, to read before the shards are known.
    pub indexes: Vec<String>,
}

/// The components `model_index.json` lists (`"unet": ["diffusers", "UNet2DConditionModel"]`);
/// entries whose library or class is null (`"safety_checker": [null, null]`) and private keys
/// (`_class_name`, `_diffusers_version`) are not components.
pub fn components(model_index: &serde_json::Value) -> Result<Vec<String>, SelectError> {
    let map = model_index.as_object().ok_or_else(|| SelectError::BadIndex("not a JSON object".into()))?;
    let mut out = Vec::new();
    for (key, value) in map {
        if key.starts_with('_') {
            continue;
        }
        if let Some([lib, class]) = value.as_array().map(|a| a.as_slice()) {
            if lib.is_string() && class.is_string() {
                if key.contains('/') || key.contains("..") || key.is_empty() {
                    return Err(SelectError::BadIndex(format!("{key:?} is not a component folder name")));
                }
                out.push(key.clone());
            }
        }
    }
    if out.is_empty() {
        return Err(SelectError::BadIndex("lists no components".into()));
    }
    Ok(out)
}

/// Weight files of every format (diffusers' and transformers' names): never fetched unless chosen.
fn is_weight_file(name: &str) -> bool {
    [".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".onnx_data", ".pb", ".h5", ".xml", ".ot", ".gguf"]
        .iter()
        .any(|ext| name.ends_with(ext))
        || name.ends_with(".index.json")
        || name == "weights.pb"
}

/// Chooses the files of the listed components among `repo_files` (the repo's paths).
/// `variant` (e.g. "fp16") is tried first for each model component, then the default weights.
pub fn select(model_index: &serde_json::Value, repo_files: &[String], variant: Option<&str>) -> Result<Selection, SelectError> {
    let present: BTreeSet<&str> = repo_files.iter().map(String::as_str).collect();
    let mut sel = Selection { files: vec!["model_index.json".to_string()], indexes: Vec::new() };
    for comp in components(model_index)? {
        let prefix = format!("{comp}/");
        let in_folder: Vec<&str> =
            repo_files.iter().filter_map(|p| p.strip_prefix(&prefix)).filter(|rest| !rest.contains('/') && !rest.is_empty()).collect();
        // Configs, tokenizer and scheduler files: every non-weight file directly in the folder.
        let mut any_weights = false;
        for name in &in_folder {
            if is_weight_file(name) {
                any_weights = true;
            } else {
                sel.files.push(format!("{prefix}{name}"));
            }
        }
        if !any_weights {
            continue; // tokenizer, scheduler, feature_extractor
        }
        let choice = choose_weights(&comp, &present, variant, &in_folder)?;
        match choice {
            WeightsChoice::Single(f) => sel.files.push(f),
            WeightsChoice::Sharded(i) => {
                sel.files.push(i.clone());
                sel.indexes.push(i);
            }
        }
    }
    Ok(sel)
}

/// One model component's weights in the folder `comp` ("" for the repo root), in the order
/// `ComponentWeights::find` loads them.
pub fn choose_weights(comp: &str, present: &BTreeSet<&str>, variant: Option<&str>, in_folder: &[&str]) -> Result<WeightsChoice, SelectError> {
    let prefix = if comp.is_empty() { String::new() } else { format!("{comp}/") };
    let variants: Vec<Option<&str>> = match variant {
        Some(v) => vec![Some(v), None],
        None => vec![None],
    };
    let mut looked_for = Vec::new();
    for v in variants {
        for stem in ["diffusion_pytorch_model", "model"] {
            let index = format!("{prefix}{}", add_variant(&format!("{stem}.safetensors.index.json"), v));
            if present.contains(index.as_str()) {
                return Ok(WeightsChoice::Sharded(index));
            }
            let single = format!("{prefix}{}", add_variant(&format!("{stem}.safetensors"), v));
            if present.contains(single.as_str()) {
                return Ok(WeightsChoice::Single(single));
            }
            looked_for.push(single);
        }
    }
    let pickles: Vec<&str> =
        in_folder.iter().copied().filter(|n| (n.ends_with(".bin") && !n.starts_with("openvino")) || n.ends_with(".ckpt")).collect();
    if !pickles.is_empty() {
        return Err(SelectError::PickleOnly { component: comp.to_string(), files: pickles.join(", ") });
    }
    Err(SelectError::NoWeights { component: comp.to_string(), looked_for: looked_for.join(", ") })
}

/// The shards a downloaded `*.safetensors.index.json` lists in its `weight_map` (as diffusers'
/// `_get_checkpoint_shard_files` reads it), as repo paths beside the index, each once, sorted;
/// every one must be in `repo_files`.
pub fn shards_of(index_path_in_repo: &str, index_json: &serde_json::Value, repo_files: &[String]) -> Result<Vec<String>, SelectError> {
    let bad = |detail: String| SelectError::BadShardIndex { index: index_path_in_repo.to_string(), detail };
    let map = index_json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let folder = index_path_in_repo.rsplit_once('/').map(|(f, _)| format!("{f}/")).unwrap_or_default();
    let mut out = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map.{tensor}: not a file name")))?;
        if file.contains('/') || file.contains('\\') || !file.ends_with(".safetensors") {
            return Err(bad(format!("weight_map.{tensor}: {file:?} is not a .safetensors file beside the index")));
        }
        let path = format!("{folder}{file}");
        if !repo_files.contains(&path) {
            return Err(bad(format!("shard {path} is not in the repo")));
        }
        out.insert(path);
    }
    if out.is_empty() {
        return Err(bad("\"weight_map\" is empty".into()));
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdxl_index() -> serde_json::Value {
        serde_json::json!({
            "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0",
            "force_zeros_for_empty_prompt": true,
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "safety_checker": [null, null]
        })
    }

    /// The file tree of stabilityai/stable-diffusion-xl-base-1.0 (abridged), with its decoys.
    fn sdxl_tree() -> Vec<String> {
        [
            ".gitattributes",
            "README.md",
            "model_index.json",
            "sd_xl_base_1.0.safetensors",
            "sd_xl_base_1.0_0.9vae.safetensors",
            "sd_xl_offset_example-lora_1.0.safetensors",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/flax_model.msgpack",
            "text_encoder/model.onnx",
            "text_encoder/openvino_model.xml",
            "text_encoder/openvino_model.bin",
            "text_encoder_2/config.json",
            "text_encoder_2/model.safetensors",
            "text_encoder_2/model.fp16.safetensors",
            "text_encoder_2/flax_model.msgpack",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "tokenizer_2/merges.txt",
            "tokenizer_2/special_tokens_map.json",
            "tokenizer_2/tokenizer_config.json",
            "tokenizer_2/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_flax_model.msgpack",
            "unet/model.onnx",
            "unet/model.onnx_data",
            "unet/openvino_model.xml",
            "unet/openvino_model.bin",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_flax_model.msgpack",
            "vae_1_0/config.json",
            "vae_1_0/diffusion_pytorch_model.safetensors",
            "vae_1_0/diffusion_pytorch_model.fp16.safetensors",
            "vae_decoder/config.json",
            "vae_decoder/model.onnx",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn weights(sel: &Selection) -> Vec<&str> {
        sel.files.iter().map(String::as_str).filter(|f| is_weight_file(f)).collect()
    }

    #[test]
    fn only_listed_components_and_one_set_of_weights_each() {
        let f32 = select(&sdxl_index(), &sdxl_tree(), None).unwrap();
        assert_eq!(
            weights(&f32),
            [
                "text_encoder/model.safetensors",
                "text_encoder_2/model.safetensors",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.safetensors"
            ]
        );
        let fp16 = select(&sdxl_index(), &sdxl_tree(), Some("fp16")).unwrap();
        assert_eq!(
            weights(&fp16),
            [
                "text_encoder/model.fp16.safetensors",
                "text_encoder_2/model.fp16.safetensors",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/diffusion_pytorch_model.fp16.safetensors"
            ]
        );
        for f in &fp16.files {
            assert!(!f.starts_with("vae_1_0/") && !f.starts_with("vae_decoder/") && f.contains('/') || f == "model_index.json", "{f}");
        }
        assert!(fp16.files.contains(&"tokenizer_2/merges.txt".to_string()) && fp16.files.contains(&"scheduler/scheduler_config.json".to_string()));
        assert!(fp16.indexes.is_empty());
    }

    #[test]
    fn the_variant_falls_back_per_component_and_shards_go_through_the_index() {
        let mut tree: Vec<String> = sdxl_tree()
            .into_iter()
            .filter(|f| f != "vae/diffusion_pytorch_model.fp16.safetensors" && !f.starts_with("unet/diffusion_pytorch_model"))
            .collect();
        tree.extend(
            [
                "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
                "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.json",
                "unet/diffusion_pytorch_model.bin",
            ]
            .map(String::from),
        );
        let sel = select(&sdxl_index(), &tree, Some("fp16")).unwrap();
        assert_eq!(
            weights(&sel),
            [
                "text_encoder/model.fp16.safetensors",
                "text_encoder_2/model.fp16.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.json",
                "vae/diffusion_pytorch_model.safetensors"
            ]
        );
        assert_eq!(sel.indexes, ["unet/diffusion_pytorch_model.safetensors.index.json"]);
        let index = serde_json::json!({"weight_map": {
            "a": "diffusion_pytorch_model-00002-of-00002.safetensors",
            "b": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "c": "diffusion_pytorch_model-00001-of-00002.safetensors"}});
        assert_eq!(
            shards_of(&sel.indexes[0], &index, &tree).unwrap(),
            ["unet/diffusion_pytorch_model-00001-of-00002.safetensors", "unet/diffusion_pytorch_model-00002-of-00002.safetensors"]
        );
        let escape = serde_json::json!({"weight_map": {"a": "../vae_1_0/diffusion_pytorch_model.safetensors"}});
        assert!(matches!(shards_of(&sel.indexes[0], &escape, &tree), Err(SelectError::BadShardIndex { .. })));
        let missing = serde_json::json!({"weight_map": {"a": "diffusion_pytorch_model-00003-of-00003.safetensors"}});
        assert!(shards_of(&sel.indexes[0], &missing, &tree).unwrap_err().to_string().contains("not in the repo"));
    }

    #[test]
    fn pickle_only_components_and_bad_indexes_are_refused() {
        let tree: Vec<String> = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let index = serde_json::json!({"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]});
        let err = select(&index, &tree, None).unwrap_err();
        assert!(matches!(&err, SelectError::PickleOnly { component, .. } if component == "unet"), "{err}");
        assert!(err.to_string().contains("arbitrary code") && err.to_string().contains("safe_serialization=True"));
        assert!(matches!(select(&serde_json::json!([1]), &tree, None), Err(SelectError::BadIndex(_))));
        assert!(matches!(select(&serde_json::json!({"../x": ["diffusers", "X"]}), &tree, None), Err(SelectError::BadIndex(_))));
        let none = ["model_index.json", "unet/config.json"].map(String::from).to_vec();
        // A folder with a config but no weights is left to the loader, which names it.
        assert_eq!(select(&index, &none, None).unwrap().files, ["model_index.json", "unet/config.json"]);
    }
}
