//! Local text-to-image generation with a base pipeline and optional LoRA: where models come
//! from, the sampling loop, and PNGs that carry every setting.

pub mod pipeline;
pub mod png_out;
pub mod prompts;
pub mod render;
pub mod repo_files;
pub mod sampling;
pub mod settings;
pub mod source;
