//! Model cards: YAML front matter from a typed struct (serde_yaml), the body from a minijinja
//! template in `model_cards/` (embedded at build time, overridable with a file). The metadata
//! is what the Hub and its widget read: base_model, instance_prompt, tags, widget images.

use crate::model_ref::ModelRef;
use crate::repo_id::RepoType;
use crate::train::TrainSummary;
use serde::Serialize;

/// The default card template, `model_cards/lora.md.j2`.
pub const LORA_TEMPLATE: &str = include_str!("../../model_cards/lora.md.j2");

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("model card template: {0}")]
    Template(String),
    /// The card would be refused by the Hub's metadata check (the messages it would answer).
    #[error("the model card would be rejected by the Hub: {}", .0.join("; "))]
    Rejected(Vec<String>),
}

#[derive(Debug, Serialize, PartialEq)]
pub struct WidgetOutput {
    pub url: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct WidgetEntry {
    pub text: String,
    pub output: WidgetOutput,
}

/// The card's front matter, in the Hub's field names.
#[derive(Debug, Serialize, PartialEq)]
pub struct CardMetadata {
    /// A Hub model id, or absent: never a local path (the Hub rejects it, and it leaks the
    /// trainer's directory layout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    pub instance_prompt: String,
    pub license: String,
    pub library_name: String,
    pub pipeline_tag: String,
    pub tags: Vec<String>,
    /// The Hub dataset the LoRA was trained on, when it came from one: the Hub links the two.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub widget: Vec<WidgetEntry>,
    /// What a renderer needs to reproduce this LoRA's intended output (`hfsky compare` reads it):
    /// extra metadata keys are kept by the Hub.
    pub hfsky: RenderHints,
}

/// The training resolution and the validation settings, machine-readable in the front matter.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RenderHints {
    pub architecture: String,
    pub training_resolution: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<crate::train::trainer::ValidationSettings>,
}

impl RenderHints {
    /// From a card's README text, when it was written by hfsky.
    pub fn from_readme(readme: &str) -> Option<RenderHints> {
        let fm = front_matter(readme).ok()?;
        serde_json::from_value(fm.get("hfsky")?.clone()).ok()
    }
}

impl CardMetadata {
    pub fn from_summary(s: &TrainSummary) -> Self {
        let family = if s.architecture == "sdxl" { "stable-diffusion-xl" } else { "stable-diffusion" };
        let mut tags: Vec<String> = ["text-to-image", "diffusers", "lora", "template:sd-lora", family].iter().map(|t| t.to_string()).collect();
        if s.architecture == "sdxl" {
            tags.push("stable-diffusion-xl-diffusers".into());
        }
        tags.push("hfsky".into());
        let widget = s
            .validation
            .as_ref()
            .map(|v| v.images.iter().map(|url| WidgetEntry { text: v.prompt.clone(), output: WidgetOutput { url: url.clone() } }).collect())
            .unwrap_or_default();
        CardMetadata {
            base_model: card_base_model(s),
            instance_prompt: s.instance_prompt.clone(),
            license: s.license.clone(),
            library_name: "diffusers".into(),
            pipeline_tag: "text-to-image".into(),
            tags,
            datasets: s.hub_dataset.iter().cloned().collect(),
            widget,
            hfsky: RenderHints { architecture: s.architecture.clone(), training_resolution: s.resolution, validation: s.validation.clone() },
        }
    }
}

/// The card's `base_model` for a run: the id the trainer resolved, or (for a summary written
/// before that field existed) the id resolved from `base_model` now.
fn card_base_model(s: &TrainSummary) -> Option<String> {
    s.base_model_id.clone().or_else(|| hub_base_model(&s.base_model, None).ok().flatten())
}

/// The Hub model id a card should name for a run trained from `base_model` (train.yaml's
/// key, read as a [`ModelRef`]: a Hub id `namespace/name[@revision]` or a local folder):
/// `base_model_id` when set; else the repo of a Hub reference; else, for a path inside an
/// hf-hub cache (`…/models--org--name/snapshots/<commit>/…`, huggingface_hub's
/// `file_download.py` layout; the path need not exist here, e.g. a summary written on another
/// machine), the id that folder caches; else `None` (the card leaves `base_model` out). `Err`
/// when `base_model_id` is not a valid model id, with the Hub's own message.
pub fn hub_base_model(base_model: &str, base_model_id: Option<&str>) -> Result<Option<String>, String> {
    if let Some(id) = base_model_id {
        if !valid_model_id(id) {
            return Err(format!("base_model_id: {}", base_model_message(id)));
        }
        return Ok(Some(id.to_string()));
    }
    Ok(match ModelRef::parse(base_model) {
        Ok(ModelRef::Hub { repo, .. }) => Some(repo.to_string()),
        Ok(ModelRef::Local(path)) => cached_repo(&path),
        Err(_) => cached_repo(std::path::Path::new(base_model)),
    })
}

/// The repo id an hf-hub cache path spells (`…/models--org--name/snapshots/…`), as given or with
/// its links resolved: a link to a snapshot, or a snapshot reached through a linked folder.
fn cached_repo(path: &std::path::Path) -> Option<String> {
    let snapshot_id = |p: &std::path::Path| {
        let parts: Vec<String> = p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        parts.windows(2).rev().find_map(|w| match (w[0].strip_prefix("models--"), w[1].as_str()) {
            (Some(cached), "snapshots") => Some(cached.replace("--", "/")),
            _ => None,
        })
    };
    let id = snapshot_id(path).or_else(|| path.canonicalize().ok().and_then(|p| snapshot_id(&p)));
    id.filter(|id| valid_model_id(id))
}

/// A Hub model id: `name` (the few legacy root models) or `namespace/name`, each part letters,
/// digits, `-`, `_`, `.`, no `--` or `..`, not starting or ending with `-` or `.`, at most 96
/// characters (huggingface_hub's `validate_repo_id` and the Hub's naming rules).
pub fn valid_model_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| crate::repo_id::valid_part(p))
}

fn base_model_message(value: &str) -> String {
    format!("\"base_model\" with value \"{value}\" is not valid. Use a model id from https://hf.co/models.")
}

/// The `base_model_relation` values the Hub documents (model-cards.md, "Specifying a base model").
pub const BASE_MODEL_RELATIONS: &[&str] = &["adapter", "merge", "quantized", "finetune"];

/// The Hub's model-card metadata rules (hub-docs `model-cards.md` and the `ModelCardData`
/// fields of huggingface_hub's `repocard_data.py`) applied to a parsed metadata block: each
/// violation as the message the Hub's validate-yaml answers with (`"base_model" with value "…"
/// is not valid. Use a model id from https://hf.co/models.`), empty when the Hub accepts it.
pub fn metadata_errors(meta: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let mut errors = Vec::new();
    match &meta["base_model"] {
        Value::Null => {}
        Value::String(s) if valid_model_id(s) => {}
        Value::Array(items) => {
            for v in items {
                match v {
                    Value::String(s) if valid_model_id(s) => {}
                    Value::String(s) => errors.push(base_model_message(s)),
                    other => errors.push(base_model_message(&other.to_string())),
                }
            }
        }
        Value::String(s) => errors.push(base_model_message(s)),
        other => errors.push(base_model_message(&other.to_string())),
    }
    match &meta["base_model_relation"] {
        Value::Null => {}
        Value::String(s) if BASE_MODEL_RELATIONS.contains(&s.as_str()) => {}
        _ => errors.push(format!("\"base_model_relation\" must be one of [{}]", BASE_MODEL_RELATIONS.join(", "))),
    }
    if !meta["base_model_relation"].is_null() && meta["base_model"].is_null() {
        errors.push("\"base_model_relation\" requires \"base_model\"".into());
    }
    type_errors(
        meta,
        &["license", "library_name", "pipeline_tag", "license_name", "license_link", "model_name"],
        &["tags", "datasets", "language", "metrics"],
        &mut errors,
    );
    if meta["license"] == "other" && (meta["license_name"].is_null() != meta["license_link"].is_null()) {
        errors.push("\"license_name\" and \"license_link\" go together: give both (or neither)".into());
    }
    errors
}

/// The Hub's type rules for card metadata: each of `strings` absent or a string, each of `lists`
/// absent, a string, or an array of strings.
fn type_errors(meta: &serde_json::Value, strings: &[&str], lists: &[&str], errors: &mut Vec<String>) {
    use serde_json::Value;
    for key in strings {
        if !matches!(meta[key], Value::Null | Value::String(_)) {
            errors.push(format!("\"{key}\" must be a string"));
        }
    }
    for key in lists {
        let ok = match &meta[key] {
            Value::Null | Value::String(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            errors.push(format!("\"{key}\" must be a string or an array of strings"));
        }
    }
}

/// Every reason the Hub would refuse `readme`'s metadata: a block that does not parse, or the
/// rules of [`metadata_errors`].
pub fn card_errors(readme: &str) -> Vec<String> {
    match front_matter(readme) {
        Ok(meta) => metadata_errors(&meta),
        Err(e) => vec![e.to_string()],
    }
}

/// Every reason the Hub would refuse the card of a `kind` repo: model cards follow
/// [`metadata_errors`]; dataset cards (hub-docs `datasets-cards.md`) [`dataset_metadata_errors`].
pub fn repo_card_errors(readme: &str, kind: RepoType) -> Vec<String> {
    match (front_matter(readme), kind) {
        (Err(e), _) => vec![e.to_string()],
        (Ok(meta), RepoType::Model) => metadata_errors(&meta),
        (Ok(meta), RepoType::Dataset) => dataset_metadata_errors(&meta),
    }
}

/// The dataset-card metadata rules the Hub checks (hub-docs `datasets-cards.md`, the fields of
/// huggingface_hub's `DatasetCardData`): `license` and `pretty_name` strings, the list fields
/// strings or lists of strings; empty when the Hub accepts the block.
pub fn dataset_metadata_errors(meta: &serde_json::Value) -> Vec<String> {
    let mut errors = Vec::new();
    type_errors(
        meta,
        &["pretty_name"],
        &["license", "task_categories", "task_ids", "tags", "language", "size_categories", "source_datasets"],
        &mut errors,
    );
    errors
}

/// The Hub's `size_categories` bucket for `n` examples (`n<1K`, `1K<n<10K`, …).
pub fn size_category(n: usize) -> &'static str {
    match n {
        0..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        _ => "1M<n<10M",
    }
}

/// The dataset card `push --repo-type dataset` adds to a photo folder that has none: front
/// matter with `task_categories: [text-to-image]` (what the Hub's dataset search filters on),
/// `size_categories` and tags, and a body saying how the imagefolder is laid out and used.
/// `captions`: the metadata file and column the captions are in, when there are captions.
pub fn dataset_card(repo: &str, images: usize, captions: Option<(&str, &str)>) -> String {
    let meta = serde_json::json!({
        "task_categories": ["text-to-image"],
        "size_categories": [size_category(images)],
        "tags": ["image", "hfsky"],
    });
    let yaml = serde_yaml::to_string(&meta).expect("a JSON mapping is YAML");
    let captions = match captions {
        Some((file, column)) => format!("Each photo's caption is the `{column}` column of `{file}`, keyed by `file_name`."),
        None => "The photos have no captions: training uses one instance prompt for all of them.".to_string(),
    };
    format!(
        "---\n{yaml}---\n\n# {repo}\n\n{images} photo(s) in the Hub's `imagefolder` layout. {captions}\n\n\
         Load it with `datasets.load_dataset(\"{repo}\")`, or train a LoRA on it with hfsky (`dataset: {repo}` in train.yaml) \
         or with diffusers' training scripts (`--dataset_name {repo}`).\n"
    )
}

/// What the card of a run will say about its base, known before training.
#[derive(Debug, Clone)]
pub struct CardPlan {
    /// The card's `base_model` ([`hub_base_model`]).
    pub base_model: Option<String>,
    /// A card with the metadata the trained card will carry (base model, license, prompt, tags),
    /// for the Hub's validate-yaml before any training time is spent.
    pub readme: String,
    /// Said to the user when the card will have no `base_model`.
    pub note: Option<String>,
}

/// The card check `train-and-push` runs before training: the base resolves to a Hub id or to
/// nothing, and the metadata the card will carry passes the Hub's rules ([`metadata_errors`]).
/// `Err(CardError::Rejected)` with the Hub's messages otherwise.
pub fn precheck(base_model: &str, base_model_id: Option<&str>, instance_prompt: &str, license: Option<&str>) -> Result<CardPlan, CardError> {
    let id = hub_base_model(base_model, base_model_id).map_err(|e| CardError::Rejected(vec![e]))?;
    let mut meta = serde_json::json!({
        "instance_prompt": instance_prompt,
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "tags": ["text-to-image", "diffusers", "lora", "hfsky"],
    });
    if let Some(id) = &id {
        meta["base_model"] = id.clone().into();
    }
    if let Some(l) = license {
        meta["license"] = l.into();
    }
    let errors = metadata_errors(&meta);
    if !errors.is_empty() {
        return Err(CardError::Rejected(errors));
    }
    let yaml = serde_yaml::to_string(&meta).map_err(|e| CardError::Template(e.to_string()))?;
    let note = id.is_none().then(|| {
        format!(
            "model card: base_model {base_model} is a local folder with no Hub id, so the card leaves `base_model` out (the Hub cannot link \
             the base; its widget and providers cannot render the LoRA): set base_model_id: namespace/name in train.yaml to name it"
        )
    });
    Ok(CardPlan { base_model: id, readme: format!("---\n{yaml}---\n"), note })
}

/// README.md for a trained LoRA that will live at `repo` (`namespace/name`).
pub fn render(summary: &TrainSummary, repo: &str, template: Option<&str>) -> Result<String, CardError> {
    let meta = CardMetadata::from_summary(summary);
    let front_matter = serde_yaml::to_string(&meta).map_err(|e| CardError::Template(e.to_string()))?;
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.add_template("card", template.unwrap_or(LORA_TEMPLATE)).map_err(|e| CardError::Template(e.to_string()))?;
    let title = repo.rsplit('/').next().unwrap_or(repo).to_string();
    let ctx = minijinja::context! {
        s => summary,
        base_model => meta.base_model,
        v => summary.validation,
        repo => repo,
        title => title,
        front_matter => front_matter,
        dataset_size => summary.examples.len(),
        // Prodigy's final step size, readable (it is a value like 2.3e-4).
        final_d => summary.optimizer.prodigy.as_ref().map(|p| format!("{:.3e}", p.final_d)),
    };
    let out = env.get_template("card").and_then(|t| t.render(ctx)).map_err(|e| CardError::Template(format!("{e:#}")))?;
    Ok(out.trim_start().to_string())
}

/// Why a card's metadata block does not parse (the texts the offline Hub's `validate-yaml`
/// answers with).
#[derive(Debug, thiserror::Error)]
pub enum FrontMatterError {
    #[error("the metadata block opened with --- is never closed")]
    Unclosed,
    #[error("invalid YAML metadata: {0}")]
    Yaml(#[source] serde_yaml::Error),
    #[error("the metadata must be a YAML mapping")]
    NotMapping,
}

/// The YAML metadata block of a model card as a JSON mapping (empty when the card has none):
/// opened by `---` on the first line and closed by the next `---` that starts a line, with LF
/// or CRLF line ends (the shape of `REGEX_YAML_BLOCK` in huggingface_hub's `repocard.py`).
pub fn front_matter(readme: &str) -> Result<serde_json::Value, FrontMatterError> {
    let Some(rest) = readme.strip_prefix("---\n").or_else(|| readme.strip_prefix("---\r\n")) else {
        return Ok(serde_json::json!({}));
    };
    let end = rest.find("\n---").ok_or(FrontMatterError::Unclosed)?;
    let v: serde_json::Value = serde_yaml::from_str(&rest[..end]).map_err(FrontMatterError::Yaml)?;
    match v {
        serde_json::Value::Object(_) => Ok(v),
        serde_json::Value::Null => Ok(serde_json::json!({})),
        _ => Err(FrontMatterError::NotMapping),
    }
}

/// A card's `base_model` from its metadata (the first when it lists several, as merges do).
pub fn base_model(meta: &serde_json::Value) -> Option<String> {
    first_string(&meta["base_model"])
}

/// A metadata field that is a string, or a list whose first entry is one.
pub fn first_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => a.first().and_then(|v| v.as_str()).map(String::from),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::train::trainer::ValidationSettings;

    pub(crate) fn summary(arch: &str, res: usize) -> TrainSummary {
        TrainSummary {
            base_model: "stabilityai/stable-diffusion-xl-base-1.0".into(),
            base_model_id: None,
            architecture: arch.into(),
            instance_prompt: "a photo of SKY".into(),
            resolution: res,
            steps: 500,
            epochs: 3.6,
            rank: 4,
            alpha: 4.0,
            target_modules: vec!["to_q".into(), "to_v".into()],
            learning_rate: 1e-4,
            optimizer: Default::default(),
            lr_scheduler: "constant".into(),
            train_batch_size: 1,
            gradient_accumulation_steps: 1,
            precision: "bf16".into(),
            min_snr_gamma: Some(5.0),
            noise_offset: 0.0,
            prior_preservation: None,
            captions: "sidecar".into(),
            caption_template: "{instance_prompt}, {caption}".into(),
            caption_dropout: 0.0,
            shuffle_tags: false,
            keep_tokens: 0,
            examples: vec![("a.jpg".into(), "a photo of SKY, orange sunset".into()), ("b.jpg".into(), "a photo of SKY, <purple> storm".into())],
            buckets: Vec::new(),
            example_buckets: Vec::new(),
            skipped: vec![("c.jpg".into(), "truncated".into())],
            final_loss: Some(0.1234),
            seconds: 10.0,
            peak_host_memory_bytes: None,
            peak_device_memory_bytes: None,
            gradient_checkpointing: false,
            estimated_step_memory_bytes: None,
            validation: Some(ValidationSettings {
                prompt: "a photo of SKY river".into(),
                negative_prompt: String::new(),
                scheduler: "EulerDiscreteScheduler".into(),
                steps: 25,
                guidance_scale: 5.0,
                width: res,
                height: res,
                lora_scale: 1.0,
                seeds: vec![0, 1],
                images: vec!["validation-seed-0.png".into(), "validation-seed-1.png".into()],
            }),
            validation_loss: None,
            license: "openrail++".into(),
            lora_file: "pytorch_lora_weights.safetensors".into(),
            hub_dataset: None,
        }
    }

    #[test]
    fn front_matter_has_the_hub_fields_and_widgets() {
        let card = render(&summary("sdxl", 512), "alice/sky-lora", None).unwrap();
        let fm = front_matter(&card).expect("front matter parses");
        assert_eq!(fm["base_model"], "stabilityai/stable-diffusion-xl-base-1.0");
        assert_eq!(fm["instance_prompt"], "a photo of SKY");
        let hints = RenderHints::from_readme(&card).expect("hfsky render hints");
        assert_eq!((hints.architecture.as_str(), hints.training_resolution), ("sdxl", 512));
        assert_eq!(hints.validation, summary("sdxl", 512).validation);
        assert_eq!(fm["library_name"], "diffusers");
        assert_eq!(fm["pipeline_tag"], "text-to-image");
        let tags: Vec<&str> = fm["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        for t in ["text-to-image", "diffusers", "lora", "template:sd-lora", "stable-diffusion-xl"] {
            assert!(tags.contains(&t), "{t} in {tags:?}");
        }
        assert_eq!(fm["widget"][1]["output"]["url"], "validation-seed-1.png");
        assert_eq!(fm["widget"][0]["text"], "a photo of SKY river");
    }

    #[test]
    fn body_puts_the_training_resolution_first_and_reproduces_validation() {
        let card = render(&summary("sdxl", 512), "alice/sky-lora", None).unwrap();
        let res_at = card.find("Training resolution: 512×512").expect("resolution heading");
        assert!(res_at < card.find("## Training settings").unwrap());
        assert!(card.contains("SDXL renders at 1024×1024"), "{card}");
        assert!(card.contains("--seeds 0..2"), "{card}");
        assert!(card.contains("pipe.load_lora_weights(\"alice/sky-lora\""));
        assert!(card.contains("c.jpg: truncated"));
        assert!(card.contains("<purple> storm"), "markdown is not HTML-escaped");
        let sd = render(&summary("sd", 512), "alice/x", None).unwrap();
        assert!(!sd.contains("renders at 1024"));
        assert!(front_matter(&sd).unwrap()["tags"].as_array().unwrap().iter().any(|t| t == "stable-diffusion"));
    }

    #[test]
    fn the_card_lists_the_buckets_trained_on() {
        let bare = render(&summary("sd", 512), "alice/x", None).unwrap();
        assert!(!bare.contains("Aspect-ratio buckets"), "a run from before buckets has none to list");
        let mut s = summary("sd", 512);
        s.buckets = vec![
            crate::train::buckets::BucketCount { width: 512, height: 512, count: 6 },
            crate::train::buckets::BucketCount { width: 576, height: 448, count: 3 },
        ];
        let card = render(&s, "alice/x", None).unwrap();
        assert!(
            card.contains(
                "\n\nAspect-ratio buckets: 512×512 (6), 576×448 (3) (width×height, photos trained at that size); these sizes render well too.\n"
            ),
            "{card}"
        );
        assert!(card.find("Aspect-ratio buckets").unwrap() < card.find("## Training settings").unwrap());
        s.buckets.truncate(1);
        let card = render(&s, "alice/x", None).unwrap();
        assert!(card.contains("Aspect-ratio buckets: 512×512 (6) (width×height, photos trained at that size).\n"), "{card}");
    }

    #[test]
    fn the_settings_name_the_optimizer_and_the_caption_augmentation() {
        let card = render(&summary("sd", 512), "alice/x", None).unwrap();
        assert!(card.contains("| optimizer | AdamW (β 0.9/0.999, weight decay 0.01) |"), "{card}");
        assert!(!card.contains("left out with probability") && !card.contains("shuffled"));
        let mut s = summary("sd", 512);
        s.learning_rate = 1.0;
        s.optimizer = crate::train::optim::OptimizerSummary {
            name: "prodigy".into(),
            prodigy: Some(crate::train::optim::ProdigySummary {
                d_coef: 1.0,
                use_bias_correction: true,
                safeguard_warmup: true,
                final_d: 0.000_231_4,
            }),
            ..Default::default()
        };
        (s.caption_dropout, s.shuffle_tags, s.keep_tokens) = (0.1, true, 2);
        let card = render(&s, "alice/x", None).unwrap();
        assert!(card.contains("| learning rate | 1.0 (constant), a multiplier of Prodigy's adapted step size |"), "{card}");
        assert!(card.contains("| optimizer | Prodigy (d_coef 1.0, bias correction on, safeguard warmup on, β 0.9/0.999, weight decay 0.01); final step size d = 2.314e-4 |"), "{card}");
        assert!(card.contains("left out with probability 0.1") && card.contains("shuffled every step, the first 2 kept in place"), "{card}");
        assert!(card_errors(&card).is_empty());
    }

    #[test]
    fn front_matter_is_checked() {
        assert_eq!(front_matter("---\nlicense: mit\ntags: [a]\n---\n# x").unwrap()["license"], "mit");
        assert!(matches!(front_matter("---\nlicense: [unclosed\n---\n"), Err(FrontMatterError::Yaml(_))));
        assert!(matches!(front_matter("---\nlicense: mit\n"), Err(FrontMatterError::Unclosed)));
        assert!(matches!(front_matter("---\n- a\n---\n"), Err(FrontMatterError::NotMapping)));
        assert_eq!(front_matter("# no metadata").unwrap(), serde_json::json!({}));
    }

    #[test]
    fn base_model_is_a_hub_id_or_nothing() {
        assert_eq!(
            hub_base_model("stabilityai/stable-diffusion-xl-base-1.0", None).unwrap().as_deref(),
            Some("stabilityai/stable-diffusion-xl-base-1.0")
        );
        assert_eq!(hub_base_model("alice/base@refs/pr/1", None).unwrap().as_deref(), Some("alice/base"));
        assert_eq!(hub_base_model("alice/base", Some("bob/other")).unwrap().as_deref(), Some("bob/other"));
        let e = hub_base_model("alice/base", Some("/home/me/sd15")).unwrap_err();
        assert!(e.starts_with("base_model_id: \"base_model\" with value \"/home/me/sd15\" is not valid"), "{e}");
        let t = tempfile::tempdir().unwrap();
        // An hf-hub cache snapshot names its repo; any folder inside it too.
        let snap = t.path().join("hub/models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots/451f4fe16113bff5a5d2269ed5ad43b0592e9a14");
        std::fs::create_dir_all(snap.join("unet")).unwrap();
        for p in [&snap, &snap.join("unet")] {
            assert_eq!(hub_base_model(p.to_str().unwrap(), None).unwrap().as_deref(), Some("stable-diffusion-v1-5/stable-diffusion-v1-5"));
        }
        let plain = t.path().join("my-sd15");
        std::fs::create_dir(&plain).unwrap();
        assert_eq!(hub_base_model(plain.to_str().unwrap(), None).unwrap(), None);
        assert_eq!(hub_base_model(plain.to_str().unwrap(), Some("alice/sd15")).unwrap().as_deref(), Some("alice/sd15"));
        assert_eq!(hub_base_model("./relative", None).unwrap(), None);
        // A cache path from another machine (absent here) still names its repo.
        assert_eq!(
            hub_base_model("/home/bob/.cache/huggingface/hub/models--alice--sd15/snapshots/abc", None).unwrap().as_deref(),
            Some("alice/sd15")
        );
        assert_eq!(hub_base_model("not a repo id", None).unwrap(), None);
    }

    #[test]
    fn a_local_base_leaves_base_model_out_and_the_card_passes_the_hubs_rules() {
        let mut s = summary("sd", 512);
        s.base_model = "/home/me/models/sd15".into();
        let card = render(&s, "alice/sky-lora", None).unwrap();
        assert!(!card.contains("/home/me"), "the local path never reaches the card:\n{card}");
        assert!(front_matter(&card).unwrap().get("base_model").is_none());
        assert!(card.contains("base_model_id"), "the body says how to name the base");
        assert!(card_errors(&card).is_empty(), "{:?}", card_errors(&card));
        s.base_model_id = Some("alice/sd15".into());
        let card = render(&s, "alice/sky-lora", None).unwrap();
        assert_eq!(front_matter(&card).unwrap()["base_model"], "alice/sd15");
        assert!(card.contains("from_pretrained(\"alice/sd15\""));
    }

    #[test]
    fn the_hubs_metadata_rules() {
        let errs = |yaml: &str| metadata_errors(&serde_yaml::from_str(yaml).unwrap());
        assert!(errs("base_model: alice/x\nbase_model_relation: adapter\nlicense: mit\ntags: [a, b]\nlanguage: en").is_empty());
        assert_eq!(errs("base_model: my model"), ["\"base_model\" with value \"my model\" is not valid. Use a model id from https://hf.co/models."]);
        assert_eq!(errs("base_model: [alice/x, ../y]").len(), 1);
        assert_eq!(errs("base_model: 3").len(), 1);
        assert_eq!(errs("base_model_relation: adapter"), ["\"base_model_relation\" requires \"base_model\""]);
        assert_eq!(errs("license: [mit]"), ["\"license\" must be a string"]);
        assert_eq!(errs("tags: [a, [b]]"), ["\"tags\" must be a string or an array of strings"]);
        assert_eq!(errs("license: other\nlicense_name: mine").len(), 1);
        assert!(
            valid_model_id("gpt2") && valid_model_id("a/b.c_d-e") && !valid_model_id("a/b/c") && !valid_model_id("a--b/c") && !valid_model_id("")
        );
        assert_eq!(card_errors("---\nlicense: [x\n---\n").len(), 1);
    }

    #[test]
    fn a_lora_trained_on_a_hub_dataset_names_it() {
        let mut s = summary("sd", 512);
        assert!(front_matter(&render(&s, "alice/sky-lora", None).unwrap()).unwrap().get("datasets").is_none());
        s.hub_dataset = Some("alice/sky-photos".into());
        let card = render(&s, "alice/sky-lora", None).unwrap();
        assert_eq!(front_matter(&card).unwrap()["datasets"], serde_json::json!(["alice/sky-photos"]));
        assert!(card_errors(&card).is_empty(), "{:?}", card_errors(&card));
    }

    #[test]
    fn dataset_cards_follow_the_dataset_rules() {
        let card = dataset_card("alice/sky-photos", 12, Some(("metadata.jsonl", "text")));
        let meta = front_matter(&card).unwrap();
        assert_eq!((meta["task_categories"][0].as_str(), meta["size_categories"][0].as_str()), (Some("text-to-image"), Some("n<1K")));
        assert!(repo_card_errors(&card, RepoType::Dataset).is_empty() && card.contains("`text` column of `metadata.jsonl`"));
        // A dataset card is not held to the model rules, and breaks its own when a list is not one.
        assert!(repo_card_errors("---\nbase_model: my photos\n---\n", RepoType::Dataset).is_empty());
        assert_eq!(repo_card_errors("---\nbase_model: my photos\n---\n", RepoType::Model).len(), 1);
        assert_eq!(repo_card_errors("---\ntask_categories: {a: b}\n---\n", RepoType::Dataset).len(), 1);
        assert_eq!((size_category(999), size_category(1000), size_category(10_000_000)), ("n<1K", "1K<n<10K", "1M<n<10M"));
    }

    #[test]
    fn precheck_refuses_before_training_and_notes_a_missing_base() {
        let e = precheck("alice/base", Some("not an id"), "a photo of SKY", None).unwrap_err();
        assert!(matches!(&e, CardError::Rejected(m) if m.len() == 1) && e.to_string().contains("not an id"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let plan = precheck(t.path().to_str().unwrap(), None, "a photo of SKY", Some("mit")).unwrap();
        assert!(plan.base_model.is_none() && plan.note.as_deref().unwrap().contains("base_model_id"));
        assert!(card_errors(&plan.readme).is_empty() && front_matter(&plan.readme).unwrap()["license"] == "mit");
        let plan = precheck("alice/base", None, "a photo of SKY", None).unwrap();
        assert_eq!((plan.base_model.as_deref(), plan.note), (Some("alice/base"), None));
        assert!(matches!(precheck("alice/base", None, "x", None).map(|p| p.readme).as_deref(), Ok(r) if r.contains("base_model: alice/base")));
    }

    #[test]
    fn a_crlf_cards_base_model_is_read() {
        let readme = "---\r\nlicense: mit\r\nbase_model: alice/base\r\ntags:\r\n- lora\r\n---\r\n# Sky\r\n";
        let meta = front_matter(readme).unwrap();
        assert_eq!(base_model(&meta).as_deref(), Some("alice/base"));
        assert_eq!(meta["tags"][0], "lora");
        let listed = front_matter("---\nbase_model:\n- alice/first\n- bob/second\n---\n").unwrap();
        assert_eq!(base_model(&listed).as_deref(), Some("alice/first"));
        assert_eq!(base_model(&serde_json::json!({})), None);
    }
}
