//! Bucket access and the layout of model runs inside the bucket.

mod bucket;
mod runs;

pub use bucket::{Bucket, BucketKey, KeyError, StorageError};
pub use runs::{
    ArtifactRecord, DataRecord, LoadError, LoadedRun, ModelStore, RunId, RunMetadata, RunMetrics, ServiceRecord,
    StageTiming,
};
