//! Every error serve-service answers with, and the kind of each; the codes the
//! kinds are answered with are the one table in `crs_server::status`.

use crs_domain::features::FeatureError;
use crs_domain::models::{ModelVer, UnknownVersion};
use crs_platform::error::{Classify, ErrorKind};
use crs_platform::predictions::batch::BatchError;
use crs_platform::predictions::shards::ShardError;
use crs_platform::registry::catalog::CatalogError;
use crs_platform::registry::runs::LoadError;
use crs_platform::storage::bucket::KeyError;
use crs_platform::storage::layout::OutputKeyError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no model loaded: {0}")]
    NoModel(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request has {rows} rows; the limit is {max}")]
    TooManyRows { rows: usize, max: usize },
    #[error("model {0} has no production run yet")]
    NoProduction(ModelVer),
    #[error("{0}")]
    NotFound(String),
    #[error("attribute_names: {0}")]
    Features(#[from] FeatureError),
    #[error(transparent)]
    UnknownVersion(#[from] UnknownVersion),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot load the model: {0}")]
    Load(#[from] LoadError),
    #[error("cannot read the model's history: {0}")]
    Catalog(#[from] CatalogError),
    #[error("batch failed: {0}")]
    Batch(#[from] BatchError),
    #[error(transparent)]
    OutputKey(#[from] OutputKeyError),
    #[error("batch over a prefix failed: {0}")]
    Shard(#[from] ShardError),
    #[error(
        "cannot load model {model_ver}: {} of MAX_LOADED_MODELS={max} are loaded ({}); unload one first",
        held.len(),
        held.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
    )]
    TooManyModels { model_ver: ModelVer, max: usize, held: Vec<ModelVer> },
    #[error("cut off by shutdown: still running when the grace period ended; nothing was written")]
    CutOff,
    #[error("MAX_CONCURRENT_BATCHES={max} batches are running already; retry when one has finished")]
    TooManyBatches { max: usize },
    #[error(
        "cannot load model {model_ver}: its run {run_id} takes {} MiB and the other loaded models {} MiB, over MAX_MODEL_MEMORY_MB={}; unload one first",
        mib(*needed), mib(*held), mib(*max)
    )]
    TooMuchModelMemory { model_ver: ModelVer, run_id: String, needed: u64, held: u64, max: u64 },
}

impl ServeError {
    /// `MAX_PREDICT_ROWS` (`max`) against a request of `rows` rows, whichever API it came by.
    pub fn check_rows(rows: usize, max: usize) -> Result<(), ServeError> {
        if rows > max { Err(ServeError::TooManyRows { rows, max }) } else { Ok(()) }
    }
}

/// Bytes as MiB with three decimals, enough to tell small models apart.
fn mib(bytes: u64) -> String {
    format!("{:.3}", bytes as f64 / f64::from(1 << 20))
}

impl Classify for ServeError {
    fn kind(&self) -> ErrorKind {
        match self {
            ServeError::NoModel(_) => ErrorKind::Precondition,
            ServeError::InvalidRequest(_) | ServeError::TooManyRows { .. } => ErrorKind::InvalidInput,
            ServeError::NoProduction(_) | ServeError::NotFound(_) => ErrorKind::NotFound,
            ServeError::Features(e) => e.kind(),
            ServeError::UnknownVersion(e) => e.kind(),
            ServeError::Key(e) => e.kind(),
            ServeError::Load(e) => e.kind(),
            ServeError::Catalog(e) => e.kind(),
            ServeError::Batch(e) => e.kind(),
            ServeError::OutputKey(e) => e.kind(),
            ServeError::Shard(e) => e.kind(),
            // Not RESOURCE_EXHAUSTED: retrying as is fails again until someone
            // unloads a model, which is what FAILED_PRECONDITION tells a client.
            ServeError::TooManyModels { .. } => ErrorKind::Precondition,
            // Likewise: it fails again until a model is unloaded.
            ServeError::TooMuchModelMemory { .. } => ErrorKind::Precondition,
            ServeError::CutOff => ErrorKind::Unavailable,
            // Passes by itself once a running batch finishes.
            ServeError::TooManyBatches { .. } => ErrorKind::Exhausted,
        }
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        let code = crs_server::status::code(e.kind());
        // The bucket's and our own failures are the operator's problem; the rest are the caller's.
        if matches!(code, Code::Internal | Code::Unavailable) {
            tracing::error!(error = %e, "request failed");
        }
        Status::new(code, e.to_string())
    }
}

impl From<ServeError> for crs_server::status::HttpError {
    fn from(e: ServeError) -> Self {
        crs_server::status::HttpError::new(e.kind(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use crs_platform::storage::bucket::{BucketKey, StorageError};

    use super::*;

    #[test]
    fn serve_errors_of_each_kind_answer_with_its_code() {
        let storage = |e: StorageError| ServeError::Load(LoadError::Storage(e));
        let cases: Vec<(ServeError, Code)> = vec![
            (ServeError::InvalidRequest("rows[0].device".into()), Code::InvalidArgument),
            (ServeError::Key(BucketKey::parse("../x").unwrap_err()), Code::InvalidArgument),
            (storage(StorageError::NotFound { key: "k".into() }), Code::NotFound),
            (ServeError::NoModel("waiting".into()), Code::FailedPrecondition),
            (ServeError::NotFound("model 'v9' is not loaded".into()), Code::NotFound),
            (ServeError::NoProduction(ModelVer::parse("v1").unwrap()), Code::NotFound),
            (storage(StorageError::Conflict { key: "k".into() }), Code::Aborted),
            (storage(StorageError::AlreadyExists { key: "k".into() }), Code::AlreadyExists),
            (storage(StorageError::Config { url: "s3://b".into(), message: "no region".into() }), Code::Internal),
            (
                storage(StorageError::Backend {
                    bucket: "s3://b".into(),
                    key: "k".into(),
                    source: Box::new(object_store::Error::Generic { store: "S3", source: "connection refused".into() }),
                }),
                Code::Unavailable,
            ),
            (
                // The service's own credentials, not the caller's: the operator must fix them.
                storage(StorageError::Denied {
                    bucket: "s3://b".into(),
                    key: "k".into(),
                    source: Box::new(object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() }),
                }),
                Code::Internal,
            ),
            (ServeError::Batch(BatchError::Output("disk full".into())), Code::Internal),
            (
                ServeError::TooManyModels {
                    model_ver: ModelVer::parse("v2").unwrap(),
                    max: 1,
                    held: vec![ModelVer::parse("v1").unwrap()],
                },
                Code::FailedPrecondition,
            ),
            (
                ServeError::TooMuchModelMemory {
                    model_ver: ModelVer::parse("v0").unwrap(),
                    run_id: "r".into(),
                    needed: 1 << 20,
                    held: 3 << 20,
                    max: 3 << 20,
                },
                Code::FailedPrecondition,
            ),
            (ServeError::TooManyBatches { max: 2 }, Code::ResourceExhausted),
            (ServeError::CutOff, Code::Unavailable),
        ];
        for (error, expected) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), expected, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
