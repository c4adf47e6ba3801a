//! The kinds of failure both services answer with, one per kind of cause.
//!
//! Every error type of the domain and the platform says which kind it is
//! ([`Classify`]). The one table from a kind to its gRPC code and HTTP status
//! is `crs_server::status`, the server kit both services answer through; this
//! crate knows nothing of either protocol.

use crs_domain::data::DataError;
use crs_domain::features::FeatureError;
use crs_domain::models::{ArtifactError, FitError, ParamError, UnknownVersion};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller sent something wrong: a bad row, key, version or parameter.
    InvalidInput,
    /// What the caller named does not exist: data, config, job or run.
    NotFound,
    /// The request is fine but the system is not in a state to answer it: no
    /// model loaded yet, a stored run that cannot be used.
    Precondition,
    /// Lost a race: a conditional write lost, or the work is already running.
    Conflict,
    /// What the caller asked to create exists already.
    AlreadyExists,
    /// No valid credentials.
    Unauthenticated,
    /// Worth retrying later: shutting down, storage unreachable.
    Unavailable,
    /// A limit on work in flight is reached: retry when some of it is done.
    Exhausted,
    /// The request is larger than the service takes (MAX_MESSAGE_BYTES): it
    /// fails again unless it is made smaller.
    TooLarge,
    /// Our fault, including misconfiguration.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidInput,
        ErrorKind::NotFound,
        ErrorKind::Precondition,
        ErrorKind::Conflict,
        ErrorKind::AlreadyExists,
        ErrorKind::Unauthenticated,
        ErrorKind::Unavailable,
        ErrorKind::Exhausted,
        ErrorKind::TooLarge,
        ErrorKind::Internal,
    ];
}

/// An error that knows which [`ErrorKind`] it is.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

impl Classify for DataError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl Classify for FeatureError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl Classify for ParamError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl Classify for UnknownVersion {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl Classify for FitError {
    fn kind(&self) -> ErrorKind {
        match self {
            // Data too small or too odd for the hyperparameters: the caller can fix it.
            FitError::NoData | FitError::Search(_) => ErrorKind::InvalidInput,
            FitError::Library(_) => ErrorKind::Internal,
        }
    }
}

impl Classify for ArtifactError {
    /// A stored artifact that cannot be used: the run exists, but serving it is
    /// not possible in this state.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Precondition
    }
}
