//! `hfsky compare`: the same prompt and seeds rendered locally and by the Hub, measured, and the
//! gap between them explained.

pub mod plots;
pub mod stats;
