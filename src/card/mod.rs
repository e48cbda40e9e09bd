//! Model cards: YAML front matter from a typed struct (serde_yaml), the body from a minijinja
//! template in `model_cards/` (embedded at build time, overridable with a file). The metadata
//! is what the Hub and its widget read: base_model, instance_prompt, tags, widget images.

use crate::train::TrainSummary;
use serde::Serialize;

/// The default card template, `model_cards/lora.md.j2`.
pub const LORA_TEMPLATE: &str = include_str!("../../model_cards/lora.md.j2");

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("model card template: {0}")]
    Template(String),
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
    pub base_model: String,
    pub instance_prompt: String,
    pub license: String,
    pub library_name: String,
    pub pipeline_tag: String,
    pub tags: Vec<String>,
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
            base_model: s.base_model.clone(),
            instance_prompt: s.instance_prompt.clone(),
            license: s.license.clone(),
            library_name: "diffusers".into(),
            pipeline_tag: "text-to-image".into(),
            tags,
            widget,
            hfsky: RenderHints { architecture: s.architecture.clone(), training_resolution: s.resolution, validation: s.validation.clone() },
        }
    }
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
        v => summary.validation,
        repo => repo,
        title => title,
        front_matter => front_matter,
        dataset_size => summary.examples.len(),
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
mod tests {
    use super::*;
    use crate::train::trainer::ValidationSettings;

    pub(crate) fn summary(arch: &str, res: usize) -> TrainSummary {
        TrainSummary {
            base_model: "stabilityai/stable-diffusion-xl-base-1.0".into(),
            architecture: arch.into(),
            instance_prompt: "a photo of SKY".into(),
            resolution: res,
            steps: 500,
            epochs: 3.6,
            rank: 4,
            alpha: 4.0,
            target_modules: vec!["to_q".into(), "to_v".into()],
            learning_rate: 1e-4,
            lr_scheduler: "constant".into(),
            train_batch_size: 1,
            gradient_accumulation_steps: 1,
            precision: "bf16".into(),
            min_snr_gamma: Some(5.0),
            noise_offset: 0.0,
            prior_preservation: None,
            captions: "sidecar".into(),
            caption_template: "{instance_prompt}, {caption}".into(),
            examples: vec![("a.jpg".into(), "a photo of SKY, orange sunset".into()), ("b.jpg".into(), "a photo of SKY, <purple> storm".into())],
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
            license: "openrail++".into(),
            lora_file: "pytorch_lora_weights.safetensors".into(),
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
    fn front_matter_is_checked() {
        assert_eq!(front_matter("---\nlicense: mit\ntags: [a]\n---\n# x").unwrap()["license"], "mit");
        assert!(matches!(front_matter("---\nlicense: [unclosed\n---\n"), Err(FrontMatterError::Yaml(_))));
        assert!(matches!(front_matter("---\nlicense: mit\n"), Err(FrontMatterError::Unclosed)));
        assert!(matches!(front_matter("---\n- a\n---\n"), Err(FrontMatterError::NotMapping)));
        assert_eq!(front_matter("# no metadata").unwrap(), serde_json::json!({}));
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
