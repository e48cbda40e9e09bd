//! The Hub: an HTTP client (whoami, repos, one-commit push, download) and `serve`, an offline
//! Hub that speaks the same protocol for tests and CI dry runs.

pub mod client;
pub mod clock;
pub mod download;
pub mod error;
pub mod inference;
pub mod protocol;
pub mod push;
pub mod serve;

pub use client::HubClient;
pub use error::{HttpFailure, HubError, PushConflict};
