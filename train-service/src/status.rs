//! Every error train-service answers with, and the kind of each; the codes the
//! kinds are answered with are the one table in `crs_server::status`.

use crs_domain::models::UnknownVersion;
use crs_domain::models::imported::ImportError;
use crs_platform::error::{Classify, ErrorKind};
use crs_platform::lifecycle::ingest::IngestError;
use crs_platform::lifecycle::lease::LeaseError;
use crs_platform::registry::catalog::CatalogError;
use crs_platform::registry::runs::LoadError;
use crs_platform::registry::versions::VersionError;
use crs_platform::storage::bucket::{KeyError, StorageError};

use crate::gate::GateError;
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
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("no cycle with id {0:?}")]
    UnknownCycle(String),
    #[error("model {model_ver} has no run {run_id}")]
    UnknownRun { model_ver: String, run_id: String },
    #[error("{key}: not a valid record: {message}")]
    BadRecord { key: String, message: String },
    #[error("{0}")]
    Precondition(String),
    /// A request the HTTP API cannot read: a bad query parameter or body.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Data(#[from] crs_domain::data::DataError),
    #[error(transparent)]
    Features(#[from] crs_domain::features::FeatureError),
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The model file cannot be served; the message names what in it.
    #[error("{0}")]
    Import(#[from] ImportError),
    #[error("{0}")]
    NotTrained(String),
    #[error("{0}")]
    BadImport(String),
}

impl Classify for ApiError {
    fn kind(&self) -> ErrorKind {
        match self {
            ApiError::UnknownVersion(e) => e.kind(),
            ApiError::UnsafeKey(e) => e.kind(),
            ApiError::MissingObject { .. } | ApiError::UnknownJob(_) => ErrorKind::NotFound,
            ApiError::ShuttingDown => ErrorKind::Unavailable,
            ApiError::Storage(e) => e.kind(),
            ApiError::Runs(e) => e.kind(),
            ApiError::Catalog(e) => e.kind(),
            ApiError::Lease(e) => e.kind(),
            ApiError::Ingest(e) => e.kind(),
            ApiError::Gate(e) => e.kind(),
            ApiError::UnknownCycle(_) | ApiError::UnknownRun { .. } => ErrorKind::NotFound,
            ApiError::BadRecord { .. } => ErrorKind::Internal,
            ApiError::Precondition(_) => ErrorKind::Precondition,
            ApiError::BadRequest(_) => ErrorKind::InvalidInput,
            ApiError::Data(e) => e.kind(),
            ApiError::Features(e) => e.kind(),
            ApiError::Version(e) => e.kind(),
            ApiError::Import(_) | ApiError::NotTrained(_) | ApiError::BadImport(_) => ErrorKind::InvalidInput,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = crs_server::status::code(e.kind());
        // The bucket's failures are the operator's problem; the rest are the caller's.
        if matches!(e, ApiError::Storage(_) | ApiError::Runs(_)) && matches!(code, Code::Internal | Code::Unavailable) {
            tracing::error!(error = %e, "request failed");
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use crs_domain::models::ModelVer;
    use crs_platform::storage::bucket::BucketKey;

    use super::*;

    #[test]
    fn api_errors_of_each_kind_answer_with_its_code() {
        let cases: Vec<(ApiError, Code)> = vec![
            (ModelVer::parse("v9").unwrap_err().into(), Code::InvalidArgument),
            (BucketKey::parse("/etc").unwrap_err().into(), Code::InvalidArgument),
            (ApiError::MissingObject { what: "training data", key: "data/x.csv".into() }, Code::NotFound),
            (ApiError::UnknownJob("job-1".into()), Code::NotFound),
            (
                LoadError::Metadata { key: "model/v1/r/metadata.json".into(), message: "eof".into() }.into(),
                Code::FailedPrecondition,
            ),
            (StorageError::Conflict { key: "k".into() }.into(), Code::Aborted),
            (StorageError::AlreadyExists { key: "k".into() }.into(), Code::AlreadyExists),
            (ApiError::ShuttingDown, Code::Unavailable),
            (StorageError::Config { url: "s3://b".into(), message: "no region".into() }.into(), Code::Internal),
            (
                StorageError::Denied {
                    bucket: "s3://b".into(),
                    key: "k".into(),
                    source: Box::new(object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() }),
                }
                .into(),
                Code::Internal,
            ),
        ];
        for (error, expected) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), expected, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
