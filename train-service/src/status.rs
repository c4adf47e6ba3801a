//! The one table from request errors to gRPC status codes.

use crs_core::models::UnknownVersion;
use crs_core::storage::{KeyError, LoadError, StorageError};
use tonic::{Code, Status};

/// Why a request was refused or could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    UnknownVersion(#[from] UnknownVersion),
    #[error(transparent)]
    UnsafeKey(#[from] KeyError),
    #[error("{what} {key:?} not found in the bucket")]
    MissingObject { what: &'static str, key: String },
    #[error("no training job with id {0:?}")]
    UnknownJob(String),
    #[error("the server is shutting down and accepts no new jobs")]
    ShuttingDown,
    #[error("bucket: {0}")]
    Storage(#[from] StorageError),
    #[error("stored runs: {0}")]
    Runs(#[from] LoadError),
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::UnknownVersion(_) | ApiError::UnsafeKey(_) => Code::InvalidArgument,
            ApiError::MissingObject { .. } | ApiError::UnknownJob(_) => Code::NotFound,
            ApiError::ShuttingDown => Code::Unavailable,
            ApiError::Storage(e) | ApiError::Runs(LoadError::Storage(e)) => match e {
                StorageError::Key(_) => Code::InvalidArgument,
                StorageError::NotFound { .. } => Code::NotFound,
                // Usually an object store that is down or throttling: worth a retry.
                StorageError::Backend { .. } => Code::Unavailable,
                StorageError::Config { .. } => Code::Internal,
            },
            ApiError::Runs(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = e.code();
        // The bucket's failures are the operator's problem; the rest are the caller's.
        if matches!(e, ApiError::Storage(_) | ApiError::Runs(_)) && matches!(code, Code::Internal | Code::Unavailable) {
            tracing::error!(error = %e, "request failed");
        }
        Status::new(code, e.to_string())
    }
}
