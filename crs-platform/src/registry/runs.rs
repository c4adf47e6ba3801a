//! Model runs in the bucket: saving, listing, loading and deleting them, and
//! moving `LATEST`, in the order [`crate::storage::layout`] documents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crs_domain::data::{ColumnProfile, RowCounts};
use crs_domain::evaluation::Evaluation;
use crs_domain::models::{ARTIFACT_FORMAT_VERSION, ArtifactError, ModelVer, TrainedModel, sha256_hex};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::failpoint::{FailPoint, FailStep};
use crate::registry::events::RunStage;
use crate::storage::bucket::{Bucket, BucketKey, KeyError, StorageError};
use crate::storage::layout::{self, ARTIFACT_FILE, ModelKey, RunId};

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
    pub model_ver: ModelVer,
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
    /// The stage the run was written with (`draft` or `candidate`); absent in
    /// runs written before stages existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<RunStage>,
    /// The weeks of the rows trained and evaluated on (absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weeks: Option<WeekSplit>,
    /// What the model version records about its fit, e.g. v2's hyperparameter
    /// search: every grid point with its folds' scores, and the values chosen.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub fit_report: serde_json::Value,
    /// Importance of each feature, largest first (empty for versions without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_importance: Vec<FeatureImportance>,
    /// For a run of an imported version: the model file it was converted from,
    /// kept in the run's folder for lineage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportRecord>,
}

/// The library's model file an imported run was converted from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// `xgboost` or `lightgbm`.
    pub framework: String,
    /// Its name in the run's folder (`imported.json`, `imported.ubj`, `imported.txt`).
    pub file: String,
    pub sha256: String,
    pub size_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureImportance {
    pub feature: String,
    pub importance: f64,
}

/// Which weeks of the ingested data a run trained on and was judged on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekSplit {
    pub train: Vec<i64>,
    pub eval: Vec<i64>,
}

/// `model/<ver>/index.json`.
#[derive(Deserialize)]
struct RunIndex {
    runs: Vec<RunMetadata>,
}

#[derive(Serialize)]
struct RunIndexRef<'a> {
    runs: &'a [RunMetadata],
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
    NoLatest { model_ver: ModelVer },
}

impl Classify for LoadError {
    fn kind(&self) -> ErrorKind {
        match self {
            LoadError::Storage(e) => e.kind(),
            LoadError::Artifact { source, .. } => source.kind(),
            // The run is there but cannot be used, like a refused artifact.
            LoadError::Metadata { .. } => ErrorKind::Precondition,
            LoadError::NoLatest { .. } => ErrorKind::NotFound,
        }
    }
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
    /// Shared by everything that writes through this store (the crash tests' hook).
    fail: FailPoint,
    /// Each version's index as last parsed, with the etag it had: a listing
    /// asks the bucket only whether the index changed (a HEAD) before parsing
    /// it again, which for a thousand runs is most of a listing's time.
    indexes: Arc<std::sync::Mutex<HashMap<ModelVer, ParsedIndex>>>,
}

#[derive(Debug)]
struct ParsedIndex {
    etag: String,
    runs: BTreeMap<RunId, RunMetadata>,
}

impl ModelStore {
    pub fn new(bucket: Bucket) -> Self {
        ModelStore { bucket, latest_lock: Arc::default(), fail: FailPoint::default(), indexes: Arc::default() }
    }

    /// The store, aborting the process at `fail` (see [`crate::failpoint`]).
    pub fn with_fail_point(self, fail: FailPoint) -> Self {
        ModelStore { fail, ..self }
    }

    pub fn fail_point(&self) -> &FailPoint {
        &self.fail
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Registered model versions with anything stored, sorted. Folders of
    /// versions this build does not know are left out.
    pub async fn versions(&self) -> Result<Vec<ModelVer>, StorageError> {
        let folders = self.bucket.list_folders(&layout::models_root()).await?;
        Ok(folders.iter().filter_map(|name| ModelVer::parse(name).ok()).collect())
    }

    pub async fn latest(&self, model_ver: ModelVer) -> Result<Option<RunId>, StorageError> {
        match self.bucket.get_if_exists(&ModelKey::new(model_ver).latest()).await? {
            None => Ok(None),
            Some(bytes) => {
                let id = String::from_utf8_lossy(&bytes).trim().to_owned();
                Ok(Some(RunId::parse(&id)?))
            }
        }
    }

    /// Complete runs (with metadata), oldest first. Reads the version's index
    /// and only the metadata of runs it lacks, and rewrites it when it was
    /// missing or stale (see `layout.rs`).
    pub async fn runs(&self, model_ver: ModelVer) -> Result<Vec<RunMetadata>, LoadError> {
        let model = ModelKey::new(model_ver);
        let folders = self.bucket.list_folders(&model.prefix()).await?;
        let mut indexed = self.read_index(model_ver).await?;
        let mut changed = false;
        let mut runs = Vec::new();
        for folder in folders {
            let Ok(run) = RunId::parse(&folder) else { continue };
            if let Some(metadata) = indexed.remove(&run) {
                runs.push(metadata);
                continue;
            }
            match self.metadata(model_ver, &run).await {
                Ok(metadata) => {
                    changed = true;
                    runs.push(metadata);
                }
                // Not complete (no metadata yet): not a run.
                Err(LoadError::Storage(StorageError::NotFound { .. })) => continue,
                // One unreadable run must not hide the others.
                Err(e @ LoadError::Metadata { .. }) => tracing::warn!(error = %e, "skipping a run with bad metadata"),
                Err(e) => return Err(e),
            }
        }
        // Entries left over are runs deleted since.
        if changed || !indexed.is_empty() {
            self.write_index(model_ver, &runs).await;
        }
        Ok(runs)
    }

    /// The index as stored; empty when missing or unreadable (it is rebuilt).
    /// Parsed again only when its etag changed since this store last read it.
    async fn read_index(&self, model_ver: ModelVer) -> Result<BTreeMap<RunId, RunMetadata>, StorageError> {
        let key = ModelKey::new(model_ver).index();
        let etag = match self.bucket.head(&key).await {
            Ok(info) => info.etag,
            Err(StorageError::NotFound { .. }) => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        if let Some(etag) = &etag {
            let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(parsed) = indexes.get(&model_ver).filter(|parsed| &parsed.etag == etag) {
                return Ok(parsed.runs.clone());
            }
        }
        // Changed (or gone) since the HEAD: the bytes read are at least as new as
        // `etag`, so a stale pairing is only ever parsed once more, never served stale.
        let Some(bytes) = self.bucket.get_if_exists(&key).await? else { return Ok(BTreeMap::new()) };
        match serde_json::from_slice::<RunIndex>(&bytes) {
            Ok(index) => {
                let runs: BTreeMap<RunId, RunMetadata> =
                    index.runs.into_iter().map(|m| (m.run_id.clone(), m)).collect();
                if let Some(etag) = etag {
                    let parsed = ParsedIndex { etag, runs: runs.clone() };
                    self.indexes.lock().unwrap_or_else(|e| e.into_inner()).insert(model_ver, parsed);
                }
                Ok(runs)
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "unreadable run index; rebuilding it from the runs' metadata");
                Ok(BTreeMap::new())
            }
        }
    }

    /// Best effort: a failed write costs the next listing some reads.
    async fn write_index(&self, model_ver: ModelVer, runs: &[RunMetadata]) {
        let key = ModelKey::new(model_ver).index();
        let index = RunIndexRef { runs };
        let bytes = serde_json::to_vec(&index).expect("metadata is plain serde data");
        if let Err(e) = self.bucket.put(&key, bytes).await {
            tracing::warn!(%key, error = %e, "could not write the run index");
        }
    }

    /// Drops `run` from the index, first step of deleting it (see `layout.rs`).
    pub async fn unindex(&self, model_ver: ModelVer, run: &RunId) -> Result<(), StorageError> {
        let mut indexed = self.read_index(model_ver).await?;
        if indexed.remove(run).is_some() {
            let runs: Vec<RunMetadata> = indexed.into_values().collect();
            let bytes = serde_json::to_vec(&RunIndexRef { runs: &runs }).expect("metadata is plain serde data");
            self.bucket.put(&ModelKey::new(model_ver).index(), bytes).await?;
        }
        Ok(())
    }

    pub async fn metadata(&self, model_ver: ModelVer, run: &RunId) -> Result<RunMetadata, LoadError> {
        let key = ModelKey::new(model_ver).run(run).metadata();
        let bytes = self.bucket.get(&key).await?;
        serde_json::from_slice(&bytes).map_err(|e| LoadError::Metadata { key: key.to_string(), message: e.to_string() })
    }

    /// Loads a run, refusing an artifact whose checksum, format or structure is wrong.
    pub async fn load(&self, model_ver: ModelVer, run: &RunId) -> Result<LoadedRun, LoadError> {
        let metadata = self.metadata(model_ver, run).await?;
        let keys = ModelKey::new(model_ver).run(run);
        let checksum = self.bucket.get(&keys.checksum()).await?;
        let expected = String::from_utf8_lossy(&checksum).split_whitespace().next().unwrap_or_default().to_owned();
        let artifact_key = keys.artifact();
        let bytes = self.bucket.get(&artifact_key).await?;
        let model = TrainedModel::from_artifact(&bytes, &expected, model_ver)
            .map_err(|source| LoadError::Artifact { key: artifact_key.to_string(), source })?;
        Ok(LoadedRun { model: Arc::new(model), metadata })
    }

    /// Loads whatever LATEST points at.
    pub async fn load_latest(&self, model_ver: ModelVer) -> Result<LoadedRun, LoadError> {
        let run = self.latest(model_ver).await?.ok_or(LoadError::NoLatest { model_ver })?;
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
        let run = ModelKey::new(metadata.model_ver).run(&metadata.run_id);
        let keys = [run.artifact(), run.checksum(), run.metadata()];
        let contents = [
            artifact,
            format!("{sha256}  {ARTIFACT_FILE}\n").into_bytes(),
            serde_json::to_vec_pretty(&metadata).expect("metadata is plain serde data"),
        ];
        for (i, (key, bytes)) in keys.iter().zip(contents).enumerate() {
            if i == 2 {
                self.fail.check(FailStep::RunArtifactWritten);
            }
            if let Err(e) = self.bucket.put(key, bytes).await {
                for written in &keys[..i] {
                    let _ = self.bucket.delete(written).await;
                }
                return Err(e);
            }
        }
        self.fail.check(FailStep::RunSaved);
        // Keeps listings to one read; a failure here only costs the next listing a few.
        if let Err(e) = self.runs(metadata.model_ver).await {
            tracing::warn!(error = %e, "could not update the run index");
        }
        Ok(())
    }

    /// Saves an imported run: the library's model file `bytes` first (into the
    /// run's folder, named by `metadata.imported`), then the run as
    /// [`Self::save_run`] does. The run exists once its metadata does, so a
    /// failure on the way leaves no run, and the file is removed with it.
    pub async fn save_imported_run(
        &self,
        model: &TrainedModel,
        metadata: &mut RunMetadata,
        bytes: bytes::Bytes,
    ) -> Result<(), StorageError> {
        let file =
            metadata.imported.as_ref().map(|i| i.file.clone()).expect("an imported run's metadata names its file");
        let key = ModelKey::new(metadata.model_ver).run(&metadata.run_id).prefix().join(&file)?;
        self.bucket.put(&key, bytes).await?;
        if let Err(e) = self.save_run(model, metadata).await {
            let _ = self.bucket.delete(&key).await;
            return Err(e);
        }
        Ok(())
    }

    /// Points LATEST at `run` unless it already points at a later run. Returns
    /// whether it moved.
    pub async fn advance_latest(&self, model_ver: ModelVer, run: &RunId) -> Result<bool, StorageError> {
        let model = ModelKey::new(model_ver);
        let metadata = model.run(run).metadata();
        if !self.bucket.exists(&metadata).await? {
            return Err(StorageError::NotFound { key: metadata.to_string() });
        }
        let _guard = self.latest_lock.lock().await;
        let key = model.latest();
        // A compare-and-swap, so that a replica moving LATEST to an earlier run
        // at the same moment cannot undo a later one; the loser reads again.
        loop {
            let read = self.bucket.get_versioned(&key).await?;
            if let Some(read) = &read {
                let current = RunId::parse(String::from_utf8_lossy(&read.bytes).trim())?;
                if current >= *run {
                    return Ok(false);
                }
            }
            match self.bucket.replace(&key, format!("{run}\n"), read.as_ref()).await {
                Ok(()) => return Ok(true),
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes every object of a run, in the delete order of `layout.rs`: out
    /// of the index, metadata (the run stops existing), checksum, artifact,
    /// then anything else in its folder.
    pub async fn delete_run(&self, model_ver: ModelVer, run: &RunId) -> Result<(), StorageError> {
        self.unindex(model_ver, run).await?;
        let keys = ModelKey::new(model_ver).run(run);
        for key in [keys.metadata(), keys.checksum(), keys.artifact()] {
            self.bucket.delete(&key).await?;
        }
        for key in self.bucket.list(&keys.prefix()).await? {
            self.bucket.delete(&key).await?;
        }
        Ok(())
    }
}
