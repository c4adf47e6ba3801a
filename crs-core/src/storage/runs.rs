//! Model runs in the bucket:
//!
//! ```text
//! model/<model_ver>/<run_id>/model.json          the artifact
//! model/<model_ver>/<run_id>/model.json.sha256   its checksum
//! model/<model_ver>/<run_id>/metadata.json       the run's record, written last
//! model/<model_ver>/LATEST                       the newest run's id
//! ```
//!
//! A run exists once its metadata.json does; LATEST only ever moves to a run
//! that exists, and only forward in run-id order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::bucket::{Bucket, BucketKey, KeyError, StorageError};
use crate::data::{ColumnProfile, RowCounts};
use crate::evaluation::Evaluation;
use crate::models::{ARTIFACT_FORMAT_VERSION, ArtifactError, TrainedModel, sha256_hex};
use crate::rng::SplitMix64;

pub const ARTIFACT_FILE: &str = "model.json";
const CHECKSUM_FILE: &str = "model.json.sha256";
const METADATA_FILE: &str = "metadata.json";
const LATEST_FILE: &str = "LATEST";

/// A run's id: its start time to the millisecond, then a random suffix, e.g.
/// `20261122T101500123Z-3fa9c2`. Ids sort by time and never repeat.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

static LAST_RUN_MILLIS: AtomicI64 = AtomicI64::new(0);

impl RunId {
    pub fn generate(now: DateTime<Utc>) -> Self {
        // Strictly increasing within the process, so two runs started in the
        // same millisecond still sort in start order.
        let mut millis = now.timestamp_millis();
        let prev = LAST_RUN_MILLIS.fetch_max(millis, Ordering::SeqCst);
        if prev >= millis {
            millis = LAST_RUN_MILLIS.fetch_add(1, Ordering::SeqCst) + 1;
        }
        let time = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or(now);
        let seed = now.timestamp_nanos_opt().unwrap_or_default() as u64 ^ u64::from(std::process::id()) << 32;
        let suffix = SplitMix64::new(seed).next_u64() & 0xff_ffff;
        RunId(format!("{}Z-{suffix:06x}", time.format("%Y%m%dT%H%M%S%3f")))
    }

    /// Accepts an id given by a user: one safe key segment.
    pub fn parse(id: &str) -> Result<Self, KeyError> {
        let ok = !id.is_empty()
            && id != "."
            && id != ".."
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok { Ok(RunId(id.to_owned())) } else { Err(KeyError::Invalid(id.to_owned(), "not a run id".into())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file the run read, as it was when read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    pub key: String,
    /// Absent for a config file that did not exist (defaults were used).
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    /// Row counts, for data files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowCounts>,
}

impl DataRecord {
    pub fn of(key: &BucketKey, bytes: &[u8], rows: Option<RowCounts>) -> Self {
        DataRecord { key: key.to_string(), sha256: Some(sha256_hex(bytes)), size_bytes: Some(bytes.len() as u64), rows }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub train: Evaluation,
    pub eval: Evaluation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub file: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub format_version: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub version: String,
}

/// metadata.json: the durable record of one successful training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    pub model_ver: String,
    pub run_id: RunId,
    pub job_id: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
    /// Hyperparameters as used, defaults filled in.
    pub hyperparameters: serde_json::Value,
    pub config: DataRecord,
    pub train_data: DataRecord,
    /// Absent when the evaluation rows are a holdout of the training data.
    pub eval_data: Option<DataRecord>,
    /// `file`, or `holdout` of the training keywords.
    pub eval_source: String,
    /// Per numeric column of the cleaned training data.
    pub profile: Vec<ColumnProfile>,
    /// Columns of the model's matrix, in order.
    pub features: Vec<String>,
    pub metrics: RunMetrics,
    pub stage_seconds: Vec<StageTiming>,
    pub artifact: ArtifactRecord,
    pub service: ServiceRecord,
}

/// A run loaded and checked, ready to predict.
#[derive(Debug)]
pub struct LoadedRun {
    /// Shared so that long work (a batch) can hold it while the run is swapped out.
    pub model: Arc<TrainedModel>,
    pub metadata: RunMetadata,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{key}: {source}")]
    Artifact {
        key: String,
        #[source]
        source: ArtifactError,
    },
    #[error("{key}: not valid run metadata: {message}")]
    Metadata { key: String, message: String },
    #[error("model {model_ver} has no LATEST run yet")]
    NoLatest { model_ver: String },
}

impl From<KeyError> for LoadError {
    fn from(e: KeyError) -> Self {
        LoadError::Storage(StorageError::Key(e))
    }
}

/// The runs of every model version in a bucket.
#[derive(Clone, Debug)]
pub struct ModelStore {
    bucket: Bucket,
    /// Serialises LATEST updates made through this store.
    latest_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ModelStore {
    pub fn new(bucket: Bucket) -> Self {
        ModelStore { bucket, latest_lock: Arc::default() }
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    fn version_key(model_ver: &str) -> Result<BucketKey, KeyError> {
        BucketKey::parse("model")?.join(model_ver)
    }

    pub fn run_key(model_ver: &str, run: &RunId, file: &str) -> Result<BucketKey, KeyError> {
        Self::version_key(model_ver)?.join(run.as_str())?.join(file)
    }

    /// Model versions with anything stored, sorted.
    pub async fn versions(&self) -> Result<Vec<String>, StorageError> {
        self.bucket.list_folders(&BucketKey::parse("model")?).await
    }

    pub async fn latest(&self, model_ver: &str) -> Result<Option<RunId>, StorageError> {
        let key = Self::version_key(model_ver)?.join(LATEST_FILE)?;
        match self.bucket.get_if_exists(&key).await? {
            None => Ok(None),
            Some(bytes) => {
                let id = String::from_utf8_lossy(&bytes).trim().to_owned();
                Ok(Some(RunId::parse(&id)?))
            }
        }
    }

    /// Complete runs (with metadata), oldest first.
    pub async fn runs(&self, model_ver: &str) -> Result<Vec<RunMetadata>, LoadError> {
        let mut runs = Vec::new();
        for folder in self.bucket.list_folders(&Self::version_key(model_ver)?).await? {
            let Ok(run) = RunId::parse(&folder) else { continue };
            match self.metadata(model_ver, &run).await {
                Ok(metadata) => runs.push(metadata),
                // Not complete (no metadata yet): not a run.
                Err(LoadError::Storage(StorageError::NotFound { .. })) => continue,
                // One unreadable run must not hide the others.
                Err(e @ LoadError::Metadata { .. }) => tracing::warn!(error = %e, "skipping a run with bad metadata"),
                Err(e) => return Err(e),
            }
        }
        Ok(runs)
    }

    pub async fn metadata(&self, model_ver: &str, run: &RunId) -> Result<RunMetadata, LoadError> {
        let key = Self::run_key(model_ver, run, METADATA_FILE)?;
        let bytes = self.bucket.get(&key).await?;
        serde_json::from_slice(&bytes).map_err(|e| LoadError::Metadata { key: key.to_string(), message: e.to_string() })
    }

    /// Loads a run, refusing an artifact whose checksum or format does not match.
    pub async fn load(&self, model_ver: &str, run: &RunId) -> Result<LoadedRun, LoadError> {
        let metadata = self.metadata(model_ver, run).await?;
        let checksum_key = Self::run_key(model_ver, run, CHECKSUM_FILE)?;
        let artifact_key = Self::run_key(model_ver, run, ARTIFACT_FILE)?;
        let checksum = self.bucket.get(&checksum_key).await?;
        let expected = String::from_utf8_lossy(&checksum).split_whitespace().next().unwrap_or_default().to_owned();
        let bytes = self.bucket.get(&artifact_key).await?;
        let model = TrainedModel::from_artifact(&bytes, &expected, model_ver)
            .map_err(|source| LoadError::Artifact { key: artifact_key.to_string(), source })?;
        Ok(LoadedRun { model: Arc::new(model), metadata })
    }

    /// Loads whatever LATEST points at.
    pub async fn load_latest(&self, model_ver: &str) -> Result<LoadedRun, LoadError> {
        let run = self.latest(model_ver).await?.ok_or_else(|| LoadError::NoLatest { model_ver: model_ver.into() })?;
        self.load(model_ver, &run).await
    }

    /// Writes a run: artifact, checksum, then metadata (which completes it).
    /// Fills in `metadata.artifact`. On failure it removes what it wrote.
    pub async fn save_run(&self, model: &TrainedModel, metadata: &mut RunMetadata) -> Result<(), StorageError> {
        let artifact = model.to_artifact();
        let sha256 = sha256_hex(&artifact);
        metadata.artifact = ArtifactRecord {
            file: ARTIFACT_FILE.to_owned(),
            sha256: sha256.clone(),
            size_bytes: artifact.len() as u64,
            format_version: ARTIFACT_FORMAT_VERSION,
        };
        let run = &metadata.run_id;
        let keys = [
            Self::run_key(&metadata.model_ver, run, ARTIFACT_FILE)?,
            Self::run_key(&metadata.model_ver, run, CHECKSUM_FILE)?,
            Self::run_key(&metadata.model_ver, run, METADATA_FILE)?,
        ];
        let contents = [
            artifact,
            format!("{sha256}  {ARTIFACT_FILE}\n").into_bytes(),
            serde_json::to_vec_pretty(&metadata).expect("metadata is plain serde data"),
        ];
        for (i, (key, bytes)) in keys.iter().zip(contents).enumerate() {
            if let Err(e) = self.bucket.put(key, bytes).await {
                for written in &keys[..i] {
                    let _ = self.bucket.delete(written).await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Points LATEST at `run` unless it already points at a later run. Returns
    /// whether it moved.
    pub async fn promote(&self, model_ver: &str, run: &RunId) -> Result<bool, StorageError> {
        let metadata = Self::run_key(model_ver, run, METADATA_FILE)?;
        if !self.bucket.exists(&metadata).await? {
            return Err(StorageError::NotFound { key: metadata.to_string() });
        }
        let _guard = self.latest_lock.lock().await;
        if self.latest(model_ver).await?.is_some_and(|current| current >= *run) {
            return Ok(false);
        }
        let key = Self::version_key(model_ver)?.join(LATEST_FILE)?;
        self.bucket.put(&key, format!("{run}\n")).await?;
        Ok(true)
    }

    /// Removes every object of a run (for a job that failed after writing some).
    pub async fn delete_run(&self, model_ver: &str, run: &RunId) -> Result<(), StorageError> {
        let prefix = Self::version_key(model_ver)?.join(run.as_str())?;
        for key in self.bucket.list(&prefix).await? {
            self.bucket.delete(&key).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_in_creation_order_even_within_a_millisecond() {
        let now = Utc::now();
        let ids: Vec<RunId> = (0..50).map(|_| RunId::generate(now)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), 50);
        assert!(RunId::parse(ids[0].as_str()).is_ok());
        assert!(RunId::parse("../x").is_err());
        assert!(RunId::parse("a/b").is_err());
    }
}
