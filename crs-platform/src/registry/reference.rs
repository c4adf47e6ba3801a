//! A version's reference set: one labelled file in the bucket, named by
//! `reference_key` in `config/<ver>/lifecycle.yaml` and fixed until someone
//! changes it, on which every run is scored once and the score kept. Runs
//! trained on different weeks are judged on their own holdouts, which do not
//! compare; their scores on one reference set do, so charts of runs and trends
//! of cycles plot these.
//!
//! A score is kept beside its run as `model/<ver>/<run>/reference/<sha256>.json`,
//! named by the hash of the file's content: a changed file gets new scores and
//! the old ones stay true of the old file. Scores are written with
//! create-if-absent and never changed, so a replica that loses a race reads
//! the winner's, and readers may cache them for good.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use crs_domain::data::{DataError, TrainingTable};
use crs_domain::evaluation::{Baselines, Evaluation};
use crs_domain::features::FeatureError;
use crs_domain::models::{ModelVer, sha256_hex};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::registry::runs::{LoadError, ModelStore};
use crate::storage::bucket::{BucketKey, StorageError};
use crate::storage::layout::{ModelKey, RunId};

/// The reference file as it is now: its key and the hash of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceSet {
    pub key: BucketKey,
    pub sha256: String,
}

/// One run's score on one reference file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceScore {
    pub model_ver: ModelVer,
    pub run_id: RunId,
    pub reference_key: String,
    pub reference_sha256: String,
    pub scored_at: DateTime<Utc>,
    /// The run and the baselines on the reference rows (the baselines fitted on
    /// those rows, as `Score` does: they say how much the model adds there).
    pub evaluation: Evaluation,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("reference set: {0}")]
    Storage(#[from] StorageError),
    #[error("reference set: {0}")]
    Run(#[from] LoadError),
    #[error("reference set: {0}")]
    Data(#[from] DataError),
    #[error("reference set {key}: {source}")]
    Features { key: String, source: FeatureError },
    #[error("{key}: not a valid reference score: {message}")]
    Record { key: String, message: String },
    #[error("reference set {key}: scoring stopped: {message}")]
    Scoring { key: String, message: String },
}

impl Classify for ReferenceError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReferenceError::Storage(e) => e.kind(),
            ReferenceError::Run(e) => e.kind(),
            ReferenceError::Data(e) => e.kind(),
            // The file lacks attributes the run reads: the file, not the caller, must change.
            ReferenceError::Features { .. } => ErrorKind::Precondition,
            ReferenceError::Record { .. } | ReferenceError::Scoring { .. } => ErrorKind::Internal,
        }
    }
}

/// What a file's hash was computed from: its etag and size then, and the hash.
#[derive(Clone, Debug)]
struct HashedAs {
    etag: Option<String>,
    size: u64,
    sha256: String,
}

/// Scores runs on reference sets and reads the scores kept. Hashes are cached
/// by the file's etag and size, and scores for good (they never change), so
/// that pages listing many runs read each score once per process.
#[derive(Clone, Debug)]
pub struct References {
    store: ModelStore,
    hashes: Arc<Mutex<HashMap<BucketKey, HashedAs>>>,
    scores: Arc<Mutex<HashMap<BucketKey, ReferenceScore>>>,
}

impl References {
    pub fn new(store: ModelStore) -> Self {
        References { store, hashes: Arc::default(), scores: Arc::default() }
    }

    /// The reference file at `key` as it is now. The file is read and hashed
    /// only when its etag or size changed since this process last hashed it.
    pub async fn resolve(&self, key: &BucketKey) -> Result<ReferenceSet, ReferenceError> {
        let bucket = self.store.bucket();
        let info = bucket.head(key).await?;
        let cached = self.hashes.lock().expect("hash cache").get(key).cloned();
        if let Some(hashed) = cached
            && info.etag.is_some()
            && hashed.etag == info.etag
            && hashed.size == info.size
        {
            return Ok(ReferenceSet { key: key.clone(), sha256: hashed.sha256 });
        }
        let bytes = bucket.get(key).await?;
        let sha256 = sha256_hex(&bytes);
        self.hashes
            .lock()
            .expect("hash cache")
            .insert(key.clone(), HashedAs { etag: info.etag, size: info.size, sha256: sha256.clone() });
        Ok(ReferenceSet { key: key.clone(), sha256 })
    }

    /// `run`'s score on `set`: the kept one, or scored now and kept.
    pub async fn score(
        &self,
        model_ver: ModelVer,
        run: &RunId,
        set: &ReferenceSet,
    ) -> Result<ReferenceScore, ReferenceError> {
        let record = ModelKey::new(model_ver).run(run).reference_score(&set.sha256);
        if let Some(score) = self.read(&record).await? {
            return Ok(score);
        }
        let loaded = self.store.load(model_ver, run).await?;
        let bytes = self.store.bucket().get(&set.key).await?;
        if sha256_hex(&bytes) != set.sha256 {
            // Changed since it was resolved: a score named by the old hash would lie.
            return Err(ReferenceError::Scoring {
                key: set.key.to_string(),
                message: "the file changed while it was being scored; try again".into(),
            });
        }
        let file = set.key.to_string();
        let evaluation = tokio::task::spawn_blocking(move || -> Result<Evaluation, ReferenceError> {
            let mut table = TrainingTable::read(&file, std::io::Cursor::new(bytes))?;
            let rows = table.observations()?;
            Baselines::fit(&rows)
                .evaluate(&loaded.model, &rows)
                .map_err(|source| ReferenceError::Features { key: file.clone(), source })
        })
        .await
        .map_err(|e| ReferenceError::Scoring { key: set.key.to_string(), message: e.to_string() })??;
        let score = ReferenceScore {
            model_ver,
            run_id: run.clone(),
            reference_key: set.key.to_string(),
            reference_sha256: set.sha256.clone(),
            scored_at: Utc::now(),
            evaluation,
        };
        let json = serde_json::to_vec_pretty(&score).expect("scores are plain serde data");
        match self.store.bucket().create(&record, json).await {
            Ok(()) => {}
            // Another replica scored it first: its score is the one kept.
            Err(StorageError::AlreadyExists { .. }) => {
                return self.read(&record).await?.ok_or_else(|| ReferenceError::Record {
                    key: record.to_string(),
                    message: "written by another process, then gone".into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.scores.lock().expect("score cache").insert(record, score.clone());
        Ok(score)
    }

    /// Every kept score of `model_ver`'s runs on `set`, by run; scores nothing.
    pub async fn kept(
        &self,
        model_ver: ModelVer,
        set: &ReferenceSet,
    ) -> Result<BTreeMap<RunId, ReferenceScore>, ReferenceError> {
        let runs = ModelKey::new(model_ver);
        let name = format!("{}.json", set.sha256);
        let mut kept = BTreeMap::new();
        for key in self.store.bucket().list(&runs.prefix()).await? {
            let Some(run) = reference_record_run(&runs, &key, &name) else { continue };
            if let Some(score) = self.read(&key).await? {
                kept.insert(run, score);
            }
        }
        Ok(kept)
    }

    async fn read(&self, key: &BucketKey) -> Result<Option<ReferenceScore>, ReferenceError> {
        if let Some(score) = self.scores.lock().expect("score cache").get(key) {
            return Ok(Some(score.clone()));
        }
        let Some(bytes) = self.store.bucket().get_if_exists(key).await? else { return Ok(None) };
        let score: ReferenceScore = serde_json::from_slice(&bytes)
            .map_err(|e| ReferenceError::Record { key: key.to_string(), message: e.to_string() })?;
        self.scores.lock().expect("score cache").insert(key.clone(), score.clone());
        Ok(Some(score))
    }
}

/// The run a key names if it is `model/<ver>/<run>/reference/<name>`.
fn reference_record_run(runs: &ModelKey, key: &BucketKey, name: &str) -> Option<RunId> {
    let rest = key.as_str().strip_prefix(runs.prefix().as_str())?.strip_prefix('/')?;
    let (run, _file) = rest.split_once('/')?;
    let run = RunId::parse(run).ok()?;
    (runs.run(&run).reference_score(name.strip_suffix(".json")?) == *key).then_some(run)
}
