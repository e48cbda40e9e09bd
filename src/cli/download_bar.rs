//! The byte progress bar of Hub downloads (the library reports `DownloadEvent`s; this draws them).

use hfsky::hub::download::{DownloadEvent, OnDownload};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    /// Bytes so far per file of the current batch.
    bytes: HashMap<String, u64>,
    files: usize,
    done: usize,
}

/// A sink drawing one bar per batch of files: bytes received (cached files count when found),
/// the total from the repo listing, rate and ETA, and the file being fetched.
pub fn bar() -> OnDownload {
    let pb = ProgressBar::hidden();
    pb.set_style(
        ProgressStyle::with_template("{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}").expect("template").progress_chars("=> "),
    );
    let state = Mutex::new(State::default());
    Arc::new(move |event: DownloadEvent| {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            DownloadEvent::Start { files, total_bytes } => {
                *s = State { files, ..State::default() };
                pb.reset();
                pb.set_message("");
                pb.set_length(total_bytes);
                pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            DownloadEvent::Progress { path, bytes, .. } => {
                pb.set_message(path.clone());
                s.bytes.insert(path, bytes);
            }
            DownloadEvent::Done { path, size } => {
                s.bytes.insert(path, size);
                s.done += 1;
            }
        }
        pb.set_position(s.bytes.values().sum());
        if s.files > 0 && s.done >= s.files {
            pb.finish_and_clear();
            s.files = 0;
        }
    })
}
