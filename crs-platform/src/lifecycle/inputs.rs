//! Everything a training run reads, fetched from the bucket: the data files
//! and the hyperparameters. The train-service job and `crctl evaluate` both
//! start here and hand the bytes to the domain's data contract.

use bytes::Bytes;
use crs_domain::data::{DataError, DataFile, PreparedData, prepare, prepare_by_week};
use crs_domain::models::{ModelVer, ParamError};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::lifecycle::ingest::{IngestError, ingested_data};
use crate::registry::runs::{DataRecord, WeekSplit};
use crate::storage::bucket::{Bucket, BucketKey, StorageError};
use crate::storage::layout;

/// Training on the ingested rows, split by time instead of by file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekPlan {
    /// Newest weeks held out to judge on.
    pub holdout_weeks: usize,
    /// Weeks before them to train on; 0 means all.
    pub train_weeks: usize,
    /// By week, or by keyword for a first run. Stored only when by keyword, so
    /// that records of requests from before it read and write back unchanged.
    #[serde(default, skip_serializing_if = "IngestedSplit::is_weeks")]
    pub split: IngestedSplit,
}

/// How a run on the ingested rows is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestedSplit {
    /// On the newest `holdout_weeks` weeks, which it never trains on.
    #[default]
    Weeks,
    /// On a share of the keywords held out, as `crctl train` does with one file:
    /// for a first run from fewer weeks than `holdout_weeks + 1`, which a split
    /// by week cannot serve.
    Keywords,
}

impl IngestedSplit {
    fn is_weeks(&self) -> bool {
        *self == IngestedSplit::Weeks
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Ingested(#[from] IngestError),
    #[error("nothing has been ingested yet")]
    NothingIngested,
}

impl Classify for FetchError {
    fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Storage(e) => e.kind(),
            FetchError::Ingested(e) => e.kind(),
            FetchError::NothingIngested => ErrorKind::Precondition,
        }
    }
}

/// Where a run's inputs are in the bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputKeys {
    pub train: BucketKey,
    /// `None`: hold out a share of the training keywords.
    pub eval: Option<BucketKey>,
    pub config: BucketKey,
    /// A config named by the user must exist; the default one may be absent,
    /// which means the version's defaults.
    pub config_required: bool,
    /// Train on the ingested rows (`train` is then their name) rather than on files.
    pub weeks: Option<WeekPlan>,
}

impl InputKeys {
    /// `train` and `eval` with the version's own config, or the named one.
    pub fn new(model_ver: ModelVer, train: BucketKey, eval: Option<BucketKey>, config: Option<BucketKey>) -> Self {
        let config_required = config.is_some();
        let config = config.unwrap_or_else(|| layout::params_key(model_ver));
        InputKeys { train, eval, config, config_required, weeks: None }
    }

    /// The ingested rows split by `plan`, with the version's own config.
    pub fn ingested(model_ver: ModelVer, plan: WeekPlan) -> Self {
        let train = BucketKey::parse(layout::INGESTED_NAME).expect("a layout key");
        InputKeys { weeks: Some(plan), ..InputKeys::new(model_ver, train, None, None) }
    }
}

/// The raw bytes of a run's inputs.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub keys: InputKeys,
    pub train: Bytes,
    pub eval: Option<Bytes>,
    pub config: Option<Bytes>,
}

/// The prepared data and the record of the files it came from.
#[derive(Debug)]
pub struct PreparedInputs {
    pub data: PreparedData,
    pub train_record: DataRecord,
    /// `None` when the evaluation rows are a holdout of the training keywords.
    pub eval_record: Option<DataRecord>,
    /// For ingested rows: the weeks trained and judged on.
    pub weeks: Option<WeekSplit>,
}

impl Inputs {
    pub async fn fetch(bucket: &Bucket, keys: InputKeys) -> Result<Self, FetchError> {
        let train = match keys.weeks {
            None => bucket.get(&keys.train).await?,
            Some(_) => ingested_data(bucket).await?.ok_or(FetchError::NothingIngested)?.bytes,
        };
        let eval = match &keys.eval {
            Some(key) => Some(bucket.get(key).await?),
            None => None,
        };
        let config = if keys.config_required {
            Some(bucket.get(&keys.config).await?)
        } else {
            bucket.get_if_exists(&keys.config).await?
        };
        Ok(Inputs { keys, train, eval, config })
    }

    /// Reads and checks the hyperparameters for `model_ver`.
    pub fn params(&self, model_ver: ModelVer) -> Result<(serde_json::Value, DataRecord), ParamError> {
        let file = self.keys.config.as_str();
        let text = self.config.as_ref().map(|bytes| String::from_utf8_lossy(bytes).into_owned());
        let params = model_ver.version().params(file, text.as_deref())?;
        let record = match &self.config {
            Some(bytes) => DataRecord::of(&self.keys.config, bytes, None),
            None => DataRecord { key: file.to_owned(), sha256: None, size_bytes: None, rows: None },
        };
        Ok((params, record))
    }

    /// Validates and aggregates the data files (CPU work: call it off the async runtime).
    pub fn prepare(&self) -> Result<PreparedInputs, DataError> {
        let file = |key: &BucketKey, bytes: &Bytes| DataFile { name: key.to_string(), bytes: bytes.clone() };
        let train = file(&self.keys.train, &self.train);
        // A keyword split goes the way of a file without an evaluation file.
        if let Some(plan) = self.keys.weeks.filter(|plan| plan.split == IngestedSplit::Weeks) {
            let split = prepare_by_week(&train, plan.holdout_weeks, plan.train_weeks)?;
            let train_record = DataRecord::of(&self.keys.train, &self.train, Some(split.data.train_counts.clone()));
            let weeks = WeekSplit { train: split.train_weeks, eval: split.eval_weeks };
            return Ok(PreparedInputs { data: split.data, train_record, eval_record: None, weeks: Some(weeks) });
        }
        let eval = match (&self.keys.eval, &self.eval) {
            (Some(key), Some(bytes)) => Some(file(key, bytes)),
            _ => None,
        };
        let data = prepare(&train, eval.as_ref())?;
        let train_record = DataRecord::of(&self.keys.train, &self.train, Some(data.train_counts.clone()));
        let eval_record = match (&self.keys.eval, &self.eval) {
            (Some(key), Some(bytes)) => Some(DataRecord::of(key, bytes, data.eval_counts.clone())),
            _ => None,
        };
        let weeks = WeekSplit { train: data.train_weeks.clone(), eval: data.eval_weeks.clone() };
        Ok(PreparedInputs { data, train_record, eval_record, weeks: Some(weeks) })
    }
}
