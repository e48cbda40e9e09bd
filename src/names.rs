//! Well-known file names, in one place: those the Hub, diffusers and huggingface_hub give a
//! meaning to, and those a training run writes into its output folder.

/// The LoRA weights as diffusers' DreamBooth scripts save them and `load_lora_weights` looks
/// for them first (diffusers `LORA_WEIGHT_NAME_SAFE`, `loaders/lora_base.py`).
pub const LORA_WEIGHTS: &str = "pytorch_lora_weights.safetensors";
/// The same LoRA in kohya's key layout (A1111/Forge, kohya sd-scripts), written beside
/// [`LORA_WEIGHTS`] when train.yaml's `lora_formats` lists `kohya`.
pub const LORA_WEIGHTS_KOHYA: &str = "pytorch_lora_weights_kohya.safetensors";
/// The same LoRA for ComfyUI's LoRA loader (`lora_formats: [comfyui]`).
pub const LORA_WEIGHTS_COMFYUI: &str = "pytorch_lora_weights_comfyui.safetensors";
/// A model card: the README whose YAML front matter the Hub reads as metadata.
pub const README: &str = "README.md";
/// The file that makes a folder or repo a diffusers pipeline (diffusers `DiffusionPipeline`).
pub const MODEL_INDEX: &str = "model_index.json";
/// A training run's resolved configuration (`hfsky train` output).
pub const TRAIN_CONFIG: &str = "train_config.yaml";
/// A training run's per-step log, one JSON object a line.
pub const TRAINING_LOG: &str = "training_log.jsonl";
/// A training run's summary, read by `hfsky card render`.
pub const TRAINING_SUMMARY: &str = "training_summary.json";
/// A training run's report (loss curves, validation images, dataset and settings), written
/// into the output folder and published by `train-and-push`.
pub const TRAINING_REPORT: &str = "report.html";
/// The folder inside a dataset whose photos are held out of training for the validation loss
/// (the Hub imagefolder layout's `validation` split).
pub const VALIDATION_PHOTOS_DIR: &str = "validation";
/// The suffix of a photo's loss mask beside it (`sky-1.jpg` → `sky-1.mask.png`), read with
/// train.yaml's `masked_loss`: white pixels train, black ones are ignored. Such files are not
/// photos of the dataset.
pub const MASK_SUFFIX: &str = ".mask.png";
