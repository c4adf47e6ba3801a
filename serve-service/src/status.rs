//! Every error serve-service answers with, and the one table mapping each to a
//! gRPC status code.

use crs_core::batch::BatchError;
use crs_core::models::UnknownVersion;
use crs_core::storage::{KeyError, LoadError, StorageError};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no model loaded: {0}")]
    NoModel(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    UnknownVersion(#[from] UnknownVersion),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot load the model: {0}")]
    Load(#[from] LoadError),
    #[error("batch failed: {0}")]
    Batch(#[from] BatchError),
}

fn storage_code(e: &StorageError) -> Code {
    match e {
        StorageError::NotFound { .. } => Code::NotFound,
        StorageError::Key(_) => Code::InvalidArgument,
        StorageError::Backend { .. } | StorageError::Config { .. } => Code::Unavailable,
    }
}

impl ServeError {
    pub fn code(&self) -> Code {
        match self {
            ServeError::NoModel(_) => Code::FailedPrecondition,
            ServeError::InvalidRequest(_) | ServeError::UnknownVersion(_) | ServeError::Key(_) => Code::InvalidArgument,
            ServeError::Load(LoadError::Storage(e)) => storage_code(e),
            ServeError::Load(LoadError::NoLatest { .. }) => Code::NotFound,
            ServeError::Load(LoadError::Artifact { .. } | LoadError::Metadata { .. }) => Code::FailedPrecondition,
            ServeError::Batch(BatchError::Data(_) | BatchError::Features(_) | BatchError::OutputIsInput(_)) => {
                Code::InvalidArgument
            }
            ServeError::Batch(BatchError::Storage(e)) => storage_code(e),
            ServeError::Batch(BatchError::Output(_)) => Code::Internal,
        }
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
