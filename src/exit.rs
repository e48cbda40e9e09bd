//! Exit-code categories, decided where each error is made. Every error type the command line
//! maps says which category each of its variants is in, with an exhaustive match (no `_`
//! arm), so a new variant cannot silently fall to "failure" (uv decides its `ExitStatus` the
//! same way, at the error, and its CLI looks it up once). The README's exit-code table is the
//! contract: 1 failure, 2 bad input, 3 authentication, 4 network.

use crate::auth::{oidc::OidcError, AuthError};
use crate::compare::local::CardError;
use crate::compare::run::CompareError;
use crate::dataset::captioning::CaptioningError;
use crate::dataset::captions::CaptionError;
use crate::dataset::fix::FixError;
use crate::dataset::hub_source::DatasetSourceError;
use crate::dataset::DatasetError;
use crate::generate::pipeline::GenerateError;
use crate::generate::render::RenderError;
use crate::generate::source::SourceError;
use crate::hub::inference::InferenceError;
use crate::hub::HubError;
use crate::train::checkpoint::CheckpointError;
use crate::train::dry_run::DryRunError;
use crate::train::examples::CacheError;
use crate::train::lora_params::LoraParamsError;
use crate::train::TrainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCategory {
    /// The job failed: a Hub error, I/O (a full disk), a conflict, anything else (exit 1).
    Failure,
    /// Usage or bad input the user can fix by changing the request (exit 2).
    BadInput,
    /// Authentication: no token, an invalid one, no write access, a refused OIDC exchange (exit 3).
    Auth,
    /// The Hub (or the CI's id-token endpoint) unreachable after retries (exit 4).
    Network,
}

impl ExitCategory {
    pub const fn code(self) -> i32 {
        match self {
            ExitCategory::Failure => 1,
            ExitCategory::BadInput => 2,
            ExitCategory::Auth => 3,
            ExitCategory::Network => 4,
        }
    }
}

/// An error that knows its exit category.
pub trait Categorized {
    fn category(&self) -> ExitCategory;
}

/// The category of an error in a chain, if its type is one that knows it.
pub fn category_of(e: &(dyn std::error::Error + 'static)) -> Option<ExitCategory> {
    fn of<T: Categorized + std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> Option<ExitCategory> {
        e.downcast_ref::<T>().map(Categorized::category)
    }
    of::<HubError>(e)
        .or_else(|| of::<AuthError>(e))
        .or_else(|| of::<OidcError>(e))
        .or_else(|| of::<InferenceError>(e))
        .or_else(|| of::<TrainError>(e))
        .or_else(|| of::<CheckpointError>(e))
        .or_else(|| of::<CacheError>(e))
        .or_else(|| of::<LoraParamsError>(e))
        .or_else(|| of::<GenerateError>(e))
        .or_else(|| of::<RenderError>(e))
        .or_else(|| of::<CompareError>(e))
        .or_else(|| of::<DatasetError>(e))
        .or_else(|| of::<DatasetSourceError>(e))
        .or_else(|| of::<CaptionError>(e))
        .or_else(|| of::<FixError>(e))
        .or_else(|| of::<DryRunError>(e))
        .or_else(|| of::<CaptioningError>(e))
}

fn http(status: u16) -> ExitCategory {
    if matches!(status, 401 | 403) {
        ExitCategory::Auth
    } else {
        ExitCategory::Failure
    }
}

impl Categorized for HubError {
    fn category(&self) -> ExitCategory {
        match self {
            HubError::Http(f) => http(f.status),
            HubError::Network { .. } => ExitCategory::Network,
            HubError::Invalid(_) => ExitCategory::BadInput,
            HubError::Auth(_) => ExitCategory::Auth,
            HubError::Protocol { .. } | HubError::Io { .. } | HubError::Conflict(_) | HubError::Download(_) => ExitCategory::Failure,
        }
    }
}

impl Categorized for OidcError {
    fn category(&self) -> ExitCategory {
        match self {
            OidcError::File { .. } | OidcError::EmptyIdToken { .. } | OidcError::NotAJwt { .. } => ExitCategory::BadInput,
            OidcError::MintNetwork(_) => ExitCategory::Network,
            OidcError::Exchange { error, .. } => error.category(),
            OidcError::MissingPermission | OidcError::NoSource | OidcError::Mint(_) | OidcError::Refused { .. } => ExitCategory::Auth,
        }
    }
}

impl Categorized for AuthError {
    fn category(&self) -> ExitCategory {
        match self {
            AuthError::KeyringUnavailable { .. } => ExitCategory::Auth,
            AuthError::BadToken { .. }
            | AuthError::UnknownName(_)
            | AuthError::OidcResourceMismatch { .. }
            | AuthError::BadOidcResource(_)
            | AuthError::OidcNeedsRepo => ExitCategory::BadInput,
            AuthError::Oidc(o) => o.category(),
            AuthError::Hub(h) => h.category(),
            AuthError::Keyring(_) | AuthError::Io { .. } | AuthError::Corrupt { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for InferenceError {
    fn category(&self) -> ExitCategory {
        match self {
            InferenceError::Hub(h) => h.category(),
            InferenceError::NoToken => ExitCategory::Auth,
            InferenceError::NoProvider { .. } => ExitCategory::BadInput,
            InferenceError::Http(f) => http(f.status),
            InferenceError::NotAnImage { status, .. } => http(*status),
            InferenceError::Protocol { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for GenerateError {
    fn category(&self) -> ExitCategory {
        match self {
            GenerateError::Pipeline(_) | GenerateError::Lora(_) | GenerateError::Scheduler(_) => ExitCategory::BadInput,
            GenerateError::Model(_) | GenerateError::VaeOverflow { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for CheckpointError {
    fn category(&self) -> ExitCategory {
        match self {
            CheckpointError::Io { .. } => ExitCategory::Failure,
            CheckpointError::Tensors(t) => t.category(),
            CheckpointError::NotFound(_) | CheckpointError::Mismatch { .. } => ExitCategory::BadInput,
        }
    }
}

impl Categorized for CacheError {
    fn category(&self) -> ExitCategory {
        match self {
            CacheError::Io { .. } | CacheError::Vae(_) => ExitCategory::Failure,
        }
    }
}

impl Categorized for LoraParamsError {
    fn category(&self) -> ExitCategory {
        match self {
            LoraParamsError::NoTargets { .. } => ExitCategory::BadInput,
            LoraParamsError::Tensor(_) | LoraParamsError::File { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for TrainError {
    fn category(&self) -> ExitCategory {
        match self {
            TrainError::Input(_) | TrainError::DoesNotFit(_) => ExitCategory::BadInput,
            TrainError::Model(g) => g.category(),
            TrainError::Checkpoint(c) => c.category(),
            TrainError::Cache(c) => c.category(),
            TrainError::Lora(l) => l.category(),
            TrainError::Tensor(_) | TrainError::Io { .. } | TrainError::NonFinite { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for SourceError {
    fn category(&self) -> ExitCategory {
        match self {
            SourceError::NotFound { .. } | SourceError::NotAPipeline(_) | SourceError::Select(_) => ExitCategory::BadInput,
            SourceError::Hub(h) => h.category(),
        }
    }
}

impl Categorized for RenderError {
    fn category(&self) -> ExitCategory {
        match self {
            RenderError::Source(s) => s.category(),
            RenderError::Generate(g) => g.category(),
            RenderError::Pipeline(_)
            | RenderError::Lora(_)
            | RenderError::Settings(_)
            | RenderError::Bf16OnCpu
            | RenderError::LoraMatchesNothing(_)
            | RenderError::Invalid(_) => ExitCategory::BadInput,
            RenderError::Io { .. } | RenderError::Tensor(_) => ExitCategory::Failure,
        }
    }
}

impl Categorized for CardError {
    fn category(&self) -> ExitCategory {
        match self {
            CardError::NoCard { .. } | CardError::NoBaseModel { .. } | CardError::BadBaseModel { .. } => ExitCategory::BadInput,
            CardError::Hub(h) => h.category(),
        }
    }
}

impl Categorized for CompareError {
    fn category(&self) -> ExitCategory {
        match self {
            CompareError::Card(c) => c.category(),
            CompareError::Inference(i) => i.category(),
            CompareError::Hub(h) => h.category(),
            CompareError::Render(r) => r.category(),
            CompareError::NotAnImage { .. } | CompareError::Invalid(_) => ExitCategory::BadInput,
            CompareError::Io { .. } | CompareError::Stats(_) => ExitCategory::Failure,
        }
    }
}

impl Categorized for DryRunError {
    fn category(&self) -> ExitCategory {
        match self {
            // The base model the user named is not a diffusers pipeline.
            DryRunError::Pipeline(_) => ExitCategory::BadInput,
            DryRunError::Dataset(e) => e.category(),
            DryRunError::Captions(e) => e.category(),
            DryRunError::Config(_) => ExitCategory::BadInput,
            DryRunError::Source(e) => e.category(),
            DryRunError::Train(e) => e.category(),
        }
    }
}

impl Categorized for DatasetSourceError {
    fn category(&self) -> ExitCategory {
        match self {
            // A dataset that is not there is a name to fix, like a missing folder.
            DatasetSourceError::NotFound(_)
            | DatasetSourceError::RevisionForLocal { .. }
            | DatasetSourceError::NoRepo { .. }
            | DatasetSourceError::NoRevision { .. }
            | DatasetSourceError::NoImages { .. } => ExitCategory::BadInput,
            // A caller that skipped the download: a bug, not the user's input.
            DatasetSourceError::NotDownloaded(_) => ExitCategory::Failure,
            DatasetSourceError::Hub { source, .. } => source.category(),
            DatasetSourceError::Folder(e) => e.category(),
            DatasetSourceError::Captions(e) => e.category(),
            DatasetSourceError::Write { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for CaptioningError {
    fn category(&self) -> ExitCategory {
        match self {
            CaptioningError::NoTemplate | CaptioningError::NoPlaceholder(_) | CaptioningError::InstanceTarget => ExitCategory::BadInput,
            CaptioningError::Dataset(e) => e.category(),
            CaptioningError::Captions(e) => e.category(),
        }
    }
}

impl Categorized for DatasetError {
    fn category(&self) -> ExitCategory {
        match self {
            DatasetError::Missing(_) | DatasetError::NotADir(_) | DatasetError::NoImages { .. } => ExitCategory::BadInput,
            DatasetError::Io { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for CaptionError {
    fn category(&self) -> ExitCategory {
        match self {
            // A caption file that cannot be read is one the user named or put there.
            CaptionError::Read { .. }
            | CaptionError::NotUtf8 { .. }
            | CaptionError::Line { .. }
            | CaptionError::NoMetadata { .. }
            | CaptionError::TwoMetadata { .. }
            | CaptionError::NoColumn { .. }
            | CaptionError::SidecarClash { .. }
            | CaptionError::InstanceTarget => ExitCategory::BadInput,
            CaptionError::Write { .. } => ExitCategory::Failure,
        }
    }
}

impl Categorized for FixError {
    fn category(&self) -> ExitCategory {
        match self {
            FixError::NotEmpty(_) | FixError::Inside { .. } => ExitCategory::BadInput,
            FixError::Write { .. } => ExitCategory::Failure,
            FixError::Captions(c) => c.category(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_full_disk_while_checkpointing_is_a_failure_not_bad_input() {
        let full = CheckpointError::Io { path: PathBuf::from("out/.checkpoint-2.partial"), detail: "No space left on device (os error 28)".into() };
        let e = TrainError::from(full);
        assert_eq!(e.category(), ExitCategory::Failure);
        assert_eq!(category_of(&e).map(ExitCategory::code), Some(1));
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert_eq!(TrainError::from(CheckpointError::NotFound("x".into())).category().code(), 2);
    }

    #[test]
    fn hub_errors_follow_the_readme_table() {
        assert_eq!(HubError::Network { url: "u".into(), detail: "d".into(), attempts: 3 }.category().code(), 4);
        assert_eq!(HubError::Invalid("x".into()).category().code(), 2);
        assert_eq!(HubError::Auth("x".into()).category().code(), 3);
        assert_eq!(AuthError::Hub(HubError::Download("x".into())).category().code(), 1);
    }
}
