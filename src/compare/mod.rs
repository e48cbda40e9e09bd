//! `hfsky compare`: the same prompt rendered locally and through the Hub, statistics of both
//! sides, the settings that differ, and ablations that measure which difference is the cause.

pub mod diagnosis;
pub mod local;
pub mod settings;
