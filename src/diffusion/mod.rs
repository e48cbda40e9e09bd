//! The diffusion engine: our own diffusers-faithful networks in candle (UNet with SDXL added
//! conditioning and LoRA-aware linears, VAE, CLIP text encoders), tokenizers, schedulers and
//! LoRA files, loaded from diffusers-layout pipelines.

pub mod autoencoder;
pub mod clip_tokenizer;
pub mod config;
pub mod fused;
pub mod lora;
pub mod nn;
pub mod noise;
pub mod recompute;
pub mod schedulers;
pub mod testing;
pub mod text_encoder;
pub mod unet;
pub mod weights;
