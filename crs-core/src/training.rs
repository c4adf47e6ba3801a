//! Everything a training run reads, fetched from the bucket and turned into
//! observations. The train-service job and `crctl evaluate` both start here.

use std::io::Cursor;

use bytes::Bytes;

use crate::data::{ColumnProfile, DataError, Observations, TrainingTable};
use crate::evaluation::{HOLDOUT_FRACTION, HOLDOUT_SEED};
use crate::models::{ParamError, RegisteredVersion};
use crate::storage::{Bucket, BucketKey, DataRecord, StorageError};

/// The default config key of a model version.
pub fn default_config_key(model_ver: &str) -> Result<BucketKey, crate::storage::KeyError> {
    BucketKey::parse(&format!("config/{model_ver}/params.yaml"))
}

/// Where a run's inputs are in the bucket.
#[derive(Clone, Debug)]
pub struct InputKeys {
    pub train: BucketKey,
    /// `None`: hold out a share of the training keywords.
    pub eval: Option<BucketKey>,
    pub config: BucketKey,
    /// A config named by the user must exist; the default one may be absent,
    /// which means the version's defaults.
    pub config_required: bool,
}

/// The raw bytes of a run's inputs.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub keys: InputKeys,
    pub train: Bytes,
    pub eval: Option<Bytes>,
    pub config: Option<Bytes>,
}

impl Inputs {
    pub async fn fetch(bucket: &Bucket, keys: InputKeys) -> Result<Self, StorageError> {
        let train = bucket.get(&keys.train).await?;
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

    /// Reads and checks the hyperparameters for `version`.
    pub fn params(&self, version: &dyn RegisteredVersion) -> Result<(serde_json::Value, DataRecord), ParamError> {
        let file = self.keys.config.as_str();
        let text = self.config.as_ref().map(|bytes| String::from_utf8_lossy(bytes).into_owned());
        let params = version.params(file, text.as_deref())?;
        let record = match &self.config {
            Some(bytes) => DataRecord::of(&self.keys.config, bytes, None),
            None => DataRecord { key: file.to_owned(), sha256: None, size_bytes: None, rows: None },
        };
        Ok((params, record))
    }

    /// Validates and aggregates the data files (CPU work: call it off the async runtime).
    pub fn prepare(&self) -> Result<PreparedData, DataError> {
        let mut train_table = TrainingTable::read(self.keys.train.as_str(), Cursor::new(self.train.clone()))?;
        let profile = train_table.profile();
        let all_train = train_table.observations()?;
        let train_record = DataRecord::of(&self.keys.train, &self.train, Some(train_table.counts.clone()));
        match (&self.keys.eval, &self.eval) {
            (Some(key), Some(bytes)) => {
                let mut eval_table = TrainingTable::read(key.as_str(), Cursor::new(bytes.clone()))?;
                let eval = eval_table.observations()?;
                Ok(PreparedData {
                    train: all_train,
                    eval,
                    train_record,
                    eval_record: Some(DataRecord::of(key, bytes, Some(eval_table.counts))),
                    profile,
                })
            }
            _ => {
                let (train, eval) = all_train.split_by_entity(HOLDOUT_FRACTION, HOLDOUT_SEED);
                Ok(PreparedData { train, eval, train_record, eval_record: None, profile })
            }
        }
    }
}

/// Observations ready for [`crate::evaluation::train_and_evaluate`], with the
/// record of where they came from.
#[derive(Debug)]
pub struct PreparedData {
    pub train: Observations,
    pub eval: Observations,
    pub train_record: DataRecord,
    /// `None` when `eval` is a holdout of the training keywords.
    pub eval_record: Option<DataRecord>,
    pub profile: Vec<ColumnProfile>,
}

impl PreparedData {
    pub fn eval_source(&self) -> &'static str {
        if self.eval_record.is_some() { "file" } else { "holdout" }
    }
}
