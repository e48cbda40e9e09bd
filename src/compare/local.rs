//! The local side's settings: what the user passed, else the card's validation settings, else
//! the engine's defaults. The card (README front matter) also names the base model the Hub
//! renders on and the training resolution.

use crate::card::{base_model, first_string, front_matter, RenderHints};
use crate::diffusion::schedulers::SchedulerKind;
use crate::generate::render::{Overrides, RenderSpec};
use crate::hub::{download::snapshot, HubClient, HubError};
use crate::model_ref::{ModelRef, ModelRefError};
use crate::names;
use crate::repo_id::RepoId;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("{repo}: the repo has no README.md (model card); the Hub cannot tell which base model to render on. Push a card with `base_model:` in its front matter (hfsky train-and-push writes one), or pass --model for the local side")]
    NoCard { repo: String },
    #[error("{repo}: the model card has no `base_model` in its front matter, so the Hub does not know which model this LoRA belongs to and no provider will serve it. Add `base_model: <base repo id>` to README.md's front matter (and pass --model for the local side)")]
    NoBaseModel { repo: String },
    #[error("{repo}: the model card's base_model: {source}")]
    BadBaseModel { repo: String, source: ModelRefError },
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// What a LoRA repo's card says.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Card {
    pub base_model: Option<String>,
    pub instance_prompt: Option<String>,
    pub hints: Option<RenderHints>,
}

impl Card {
    pub fn parse(readme: &str) -> Card {
        // A card whose metadata does not parse reads as one without metadata.
        let meta = front_matter(readme).unwrap_or_default();
        Card { base_model: base_model(&meta), instance_prompt: first_string(&meta["instance_prompt"]), hints: RenderHints::from_readme(readme) }
    }

    pub fn training_resolution(&self) -> Option<usize> {
        self.hints.as_ref().map(|h| h.training_resolution)
    }
}

/// Downloads and parses a repo's model card.
pub async fn fetch_card(client: &HubClient, repo: &RepoId) -> Result<Card, CardError> {
    let dir = snapshot(client, repo, None, vec![names::README.into()]).await?;
    let readme = std::fs::read_to_string(dir.join(names::README)).map_err(|_| CardError::NoCard { repo: repo.to_string() })?;
    Ok(Card::parse(&readme))
}

/// The local side's flags: base model and LoRA, then the generation settings `compare` shares
/// with `generate`.
#[derive(Debug, Clone, Default)]
pub struct LocalFlags {
    pub model: Option<ModelRef>,
    pub lora: Option<ModelRef>,
    pub overrides: Overrides,
}

/// Flags first, then the card's validation settings (the renders its author saw), then its
/// training resolution, then the engine's defaults. `lora_repo` is the LoRA when no --lora is given.
pub fn local_spec(prompt: &str, flags: &LocalFlags, card: &Card, lora_repo: Option<&RepoId>) -> Result<RenderSpec, CardError> {
    let repo_label = || lora_repo.map_or_else(|| "the LoRA".to_string(), RepoId::to_string);
    let model = match (&flags.model, &card.base_model) {
        (Some(m), _) => m.clone(),
        (None, Some(b)) => ModelRef::parse(b).map_err(|source| CardError::BadBaseModel { repo: repo_label(), source })?,
        (None, None) => return Err(CardError::NoBaseModel { repo: repo_label() }),
    };
    let mut spec = RenderSpec::new(model, prompt);
    spec.lora = flags.lora.clone().or_else(|| lora_repo.cloned().map(ModelRef::hub));
    if let Some(v) = card.hints.as_ref().and_then(|h| h.validation.as_ref()) {
        spec.lora_scale = v.lora_scale;
        spec.negative = v.negative_prompt.clone();
        spec.steps = v.steps;
        spec.guidance = Some(v.guidance_scale);
        spec.scheduler = SchedulerKind::from_class_name(&v.scheduler);
        spec.width = Some(v.width);
        spec.height = Some(v.height);
    } else if let Some(r) = card.training_resolution() {
        spec.width = Some(r);
        spec.height = Some(r);
    }
    flags.overrides.apply(&mut spec);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "---\nbase_model: tiny/sd15\ninstance_prompt: a photo of SKY\nhfsky:\n  architecture: sd15\n  training_resolution: 64\n  validation:\n    prompt: a photo of SKY\n    negative_prompt: blurry\n    scheduler: DDIMScheduler\n    steps: 12\n    guidance_scale: 6.0\n    width: 64\n    height: 64\n    lora_scale: 0.8\n    seeds: [3]\n    images: [validation-seed-3.png]\n---\n# card\n";

    #[test]
    fn flags_win_then_the_cards_validation_settings() {
        let card = Card::parse(CARD);
        let me = RepoId::parse("me/sky").unwrap();
        assert_eq!(card.base_model.as_deref(), Some("tiny/sd15"));
        assert_eq!(card.training_resolution(), Some(64));
        let spec = local_spec(
            "a photo of the SKY river",
            &LocalFlags { overrides: Overrides { steps: Some(5), ..Default::default() }, ..Default::default() },
            &card,
            Some(&me),
        )
        .unwrap();
        assert_eq!((spec.model.to_string(), spec.lora.map(|l| l.to_string())), ("tiny/sd15".into(), Some("me/sky".into())));
        assert_eq!((spec.steps, spec.guidance, spec.scheduler), (5, Some(6.0), Some(SchedulerKind::Ddim)));
        assert_eq!((spec.width, spec.height, spec.lora_scale, spec.negative.as_str()), (Some(64), Some(64), 0.8, "blurry"));
    }

    #[test]
    fn a_card_without_base_model_needs_model() {
        let card = Card::parse("---\nlicense: mit\n---\n");
        let me = RepoId::parse("me/sky").unwrap();
        let e = local_spec("x", &LocalFlags::default(), &card, Some(&me)).unwrap_err().to_string();
        assert!(e.contains("me/sky") && e.contains("base_model"), "{e}");
        let base = ModelRef::parse("tiny/base").unwrap();
        let spec = local_spec("x", &LocalFlags { model: Some(base.clone()), ..Default::default() }, &card, Some(&me)).unwrap();
        assert_eq!((&spec.model, spec.steps, spec.width), (&base, 30, None));
        let odd = Card::parse("---\nbase_model: not a model id\n---\n");
        let e = local_spec("x", &LocalFlags::default(), &odd, Some(&me)).unwrap_err();
        assert!(matches!(e, CardError::BadBaseModel { .. }) && e.to_string().starts_with("me/sky: the model card's base_model: "), "{e}");
        assert_eq!(Card::parse("---\nbase_model:\n- a/b\n- c/d\n---\n").base_model.as_deref(), Some("a/b"));
    }
}
