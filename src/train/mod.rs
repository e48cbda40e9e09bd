//! DreamBooth LoRA training on SD 1.5 / SDXL: config, examples and latent cache, caption
//! augmentation, the objective, AdamW and Prodigy, checkpoints, prior preservation and the loop.

pub mod buckets;
pub mod caption_augment;
pub mod checkpoint;
pub mod config;
pub mod dry_run;
pub mod examples;
pub mod lora_params;
pub mod loss_scale;
pub mod mask;
pub mod memory;
pub mod objective;
pub mod optim;
mod prior;
pub mod prodigy;
pub mod report;
pub mod trainer;
pub mod validation_loss;

pub use config::{TrainConfig, TrainKeys};
pub use trainer::{Event, TrainError, TrainSummary, Trainer};
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_buckets;
