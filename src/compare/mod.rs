//! `hfsky compare`: the same prompt and seeds rendered locally and by the Hub, measured, and the
//! gap between them explained: the settings that differ, and ablations that measure which
//! difference is the cause.

pub mod diagnosis;
pub mod heatmap;
pub mod local;
pub mod plots;
pub mod report;
pub mod run;
pub mod settings;
pub mod stats;
