//! hfsky: fine-tune text-to-image LoRAs on your own photos and publish them on the Hugging Face Hub.

// Lets code shared with the integration tests name this crate `hfsky` from inside it too.
extern crate self as hfsky;

pub mod atomic;
pub mod auth;
pub mod card;
pub mod compare;
pub mod dataset;
pub mod devices;
pub mod diffusion;
pub mod exit;
pub mod generate;
pub mod hash;
pub mod html;
pub mod hub;
pub mod imagestats;
pub mod lfs_pointer;
pub mod model_ref;
pub mod names;
pub mod redact;
pub mod repo_id;
pub mod runtime;
pub mod sniff;
pub mod token;
pub mod train;
