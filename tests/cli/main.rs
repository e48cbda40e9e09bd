//! The integration tests, one binary (one link of the library and its dependencies instead of
//! one per file; only tests/install.rs, which rebuilds the binary these tests run, is apart): each module runs the real `hfsky` binary against temp folders and the offline
//! Hub, or checks interop with the Python reference stack. Tests that need what
//! `scripts/test.sh` installs (Python stacks, a Secret Service, the wheel tools) are
//! `#[ignore]`d with the reason, and the script runs them (`--include-ignored`).

mod common;

mod ci_init;
mod compare;
mod dataset;
mod env;
mod field;
mod generate;
mod hub_dataset;
mod hub_inference;
mod keyring_store;
mod lora_formats;
mod oidc;
mod pipeline_layouts;
mod prodigy_reference;
mod push_download;
mod python_conformance;
mod python_lora_interop;
mod snapshots;
mod torch_noise;
mod train;
mod train_buckets;
