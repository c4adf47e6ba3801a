//! Batch predictions over a prefix of many files, split between workers: a
//! layer above the batch engine (`batch.rs`), which it calls once per file.
//!
//! The files under the prefix (`.csv`, `.csv.gz`) are sorted by key and file
//! `i` belongs to shard `i mod N`, so N workers that know only their index
//! split the work without talking to each other. Each output is named after
//! its input under the run's output folder ([`ShardedOutput`]); beside it, a
//! skip record says which input (by sha256) and which run made it, so a worker
//! run again (a retried pod) skips what is done. Once every file of every
//! shard has its record, whichever shard finishes last writes the summary.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crs_domain::models::{ModelVer, TrainedModel};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::predictions::batch::{BatchError, BatchOptions, predict_batch};
use crate::storage::bucket::{Bucket, BucketKey, KeyError, ObjectInfo, StorageError};
use crate::storage::layout::{InputPrefix, OutputPrefix, RunId, ShardedOutput};

/// One worker's share of a prefix's files: `index` of `count`, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Every file: one worker alone.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::BadShard(format!("{index}/{count}")));
        }
        Ok(Shard { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether the file at `position` in key order is this shard's.
    pub fn owns(self, position: usize) -> bool {
        position % self.count as usize == self.index as usize
    }
}

/// `I/N`.
impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// `I/N`, counted from 0: `0/3`, `1/3`, `2/3`.
    fn from_str(text: &str) -> Result<Self, ShardError> {
        let bad = || ShardError::BadShard(text.to_owned());
        let (index, count) = text.trim().split_once('/').ok_or_else(bad)?;
        Shard::new(index.trim().parse().map_err(|_| bad())?, count.trim().parse().map_err(|_| bad())?)
    }
}

/// How a worker is told its shard: `--shard I/N`, or `--shards N` with the
/// index Kubernetes gives each pod of an Indexed Job.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ShardArgs {
    /// This worker's share of an input prefix's files, `I/N` counted from 0: the files sorted by key, file i goes to shard i mod N. Unset: every file (or, with --shards, the Indexed Job's index).
    #[arg(long, conflicts_with = "shards")]
    pub shard: Option<Shard>,
    /// Number of shards, the index coming from JOB_COMPLETION_INDEX (set by Kubernetes in each pod of an Indexed Job).
    #[arg(long)]
    pub shards: Option<u32>,
    /// This pod's index in a Kubernetes Indexed Job; Kubernetes sets it.
    #[arg(long, env = "JOB_COMPLETION_INDEX", hide = true)]
    pub job_completion_index: Option<u32>,
}

impl ShardArgs {
    /// The shard these arguments name: [`Shard::WHOLE`] when none is named.
    pub fn shard(&self) -> Result<Shard, ShardError> {
        match (self.shard, self.shards, self.job_completion_index) {
            (Some(shard), _, _) => Ok(shard),
            (None, Some(count), Some(index)) => Shard::new(index, count),
            (None, Some(count), None) => Err(ShardError::NoIndex { count }),
            // An Indexed Job's pods that all did every file would each redo the others' work.
            (None, None, Some(index)) => Err(ShardError::NoCount { index }),
            (None, None, None) => Ok(Shard::WHOLE),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0:?}: expected I/N with 0 <= I < N, e.g. 0/3")]
    BadShard(String),
    #[error(
        "--shards {count} needs the shard index from JOB_COMPLETION_INDEX (an Indexed Job sets it), or use --shard I/N"
    )]
    NoIndex { count: u32 },
    #[error("JOB_COMPLETION_INDEX is {index} (an Indexed Job) but the number of shards is not given: add --shards N")]
    NoCount { index: u32 },
    #[error("no .csv or .csv.gz files under {0}")]
    NoInputs(String),
    #[error("{first} and {second} would both be written to {output}: rename one")]
    SameOutput { first: String, second: String, output: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Boxed: the engine's error is large, and this type is also what parsing `--shard` returns.
    #[error("{input}: {source}")]
    Batch { input: String, source: Box<BatchError> },
    #[error("{key}: not a skip record this build can read: {source}")]
    Record { key: String, source: serde_json::Error },
}

impl Classify for ShardError {
    fn kind(&self) -> ErrorKind {
        match self {
            ShardError::BadShard(_) | ShardError::NoIndex { .. } | ShardError::NoCount { .. } => {
                ErrorKind::InvalidInput
            }
            ShardError::NoInputs(_) => ErrorKind::NotFound,
            ShardError::SameOutput { .. } | ShardError::Key(_) => ErrorKind::InvalidInput,
            ShardError::Storage(e) => e.kind(),
            ShardError::Batch { source, .. } => source.kind(),
            ShardError::Record { .. } => ErrorKind::Precondition,
        }
    }
}

/// The skip record beside an output: what it was made from, and with which run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub input_key: String,
    pub input_sha256: String,
    /// The input's size and ETag as listed: how the last shard checks the others' records without reading their inputs.
    pub input_bytes: u64,
    pub input_etag: Option<String>,
    pub model_ver: ModelVer,
    pub run_id: RunId,
    pub output_key: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub seconds: f64,
    /// The shard that wrote it, `I/N`.
    pub shard: String,
    pub written_at: DateTime<Utc>,
}

impl FileRecord {
    /// Whether this record was made from `input` as it is listed now, by `run`.
    fn matches(&self, input: &ObjectInfo, run: &RunId) -> bool {
        self.run_id == *run
            && self.input_key == input.key.as_str()
            && self.input_bytes == input.size
            && self.input_etag == input.etag
    }
}

/// The summary of a batch over a prefix: every input, its output and rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub input_prefix: String,
    pub output_folder: String,
    pub model_ver: ModelVer,
    pub run_id: RunId,
    pub shards: u32,
    pub files: Vec<SummaryFile>,
    pub rows_read: u64,
    pub rows_written: u64,
    /// Objects under the prefix that are not `.csv` or `.csv.gz` files, left alone.
    pub ignored: Vec<String>,
    pub written_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryFile {
    pub input_key: String,
    pub input_sha256: String,
    pub output_key: String,
    pub rows_read: u64,
    pub rows_written: u64,
}

/// What happened to one file of the shard.
#[derive(Clone, Debug, PartialEq)]
pub struct FileOutcome {
    pub input_key: BucketKey,
    pub output_key: BucketKey,
    pub input_sha256: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub seconds: f64,
    /// Its output was already there, made from the same input by the same run.
    pub skipped: bool,
}

/// What one shard did.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardReport {
    pub shard: Shard,
    pub output: ShardedOutput,
    /// This shard's files, in key order.
    pub files: Vec<FileOutcome>,
    /// Files under the prefix, all shards together.
    pub inputs: usize,
    /// The summary's key, once every shard is done (now or before).
    pub summary: Option<BucketKey>,
}

impl ShardReport {
    pub fn rows_read(&self) -> u64 {
        self.files.iter().map(|f| f.rows_read).sum()
    }

    pub fn rows_written(&self) -> u64 {
        self.files.iter().map(|f| f.rows_written).sum()
    }
}

/// The run a shard predicts with.
#[derive(Clone, Debug)]
pub struct ShardModel {
    pub model: Arc<TrainedModel>,
    pub model_ver: ModelVer,
    pub run_id: RunId,
}

/// One planned file: where it is read from and written to.
#[derive(Clone, Debug)]
struct Planned {
    input: ObjectInfo,
    output: BucketKey,
}

/// Every batch input under `prefix` in key order with its output; the
/// objects that are not inputs.
async fn plan(
    bucket: &Bucket,
    prefix: &InputPrefix,
    output: &ShardedOutput,
) -> Result<(Vec<Planned>, Vec<String>), ShardError> {
    let mut planned = Vec::new();
    let mut ignored = Vec::new();
    let mut outputs: BTreeMap<BucketKey, BucketKey> = BTreeMap::new();
    for object in bucket.list_objects(prefix.folder()).await? {
        let Some(name) = prefix.input_name(&object.key) else {
            ignored.push(object.key.to_string());
            continue;
        };
        let key = output.output(name)?;
        if let Some(first) = outputs.insert(key.clone(), object.key.clone()) {
            return Err(ShardError::SameOutput {
                first: first.to_string(),
                second: object.key.to_string(),
                output: key.to_string(),
            });
        }
        planned.push(Planned { input: object, output: key });
    }
    if planned.is_empty() {
        return Err(ShardError::NoInputs(prefix.to_string()));
    }
    Ok((planned, ignored))
}

async fn read_record(bucket: &Bucket, key: &BucketKey) -> Result<Option<FileRecord>, ShardError> {
    match bucket.get_if_exists(key).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ShardError::Record { key: key.to_string(), source }),
        None => Ok(None),
    }
}

/// Predicts `shard`'s files under `input` with `model` into the run's output
/// folder under `output_prefix`, skipping those already done from the same
/// input by the same run, then writes the summary if every shard is done.
pub async fn predict_shard(
    bucket: &Bucket,
    model: &ShardModel,
    input: &InputPrefix,
    output_prefix: &OutputPrefix,
    shard: Shard,
    options: BatchOptions,
) -> Result<ShardReport, ShardError> {
    let output = ShardedOutput::new(output_prefix, model.model_ver, &model.run_id, input);
    let (planned, ignored) = plan(bucket, input, &output).await?;
    let mut files = Vec::new();
    let mut summary_deleted = false;
    for (position, file) in planned.iter().enumerate() {
        if !shard.owns(position) {
            continue;
        }
        let input_key = &file.input.key;
        let sha256 = bucket.sha256(input_key).await?;
        let record_key = ShardedOutput::record(&file.output);
        if let Some(record) = read_record(bucket, &record_key).await?
            && record.input_sha256 == sha256
            && record.run_id == model.run_id
            && record.input_key == input_key.as_str()
            && bucket.exists(&file.output).await?
        {
            tracing::info!(input = %input_key, output = %file.output, %shard, "already predicted from the same input by the same run; skipped");
            files.push(FileOutcome {
                input_key: input_key.clone(),
                output_key: file.output.clone(),
                input_sha256: sha256,
                rows_read: record.rows_read,
                rows_written: record.rows_written,
                seconds: 0.0,
                skipped: true,
            });
            continue;
        }
        // A summary from an earlier, finished batch no longer describes what is there.
        if !summary_deleted {
            bucket.delete(&output.summary()).await?;
            summary_deleted = true;
        }
        let report = predict_batch(bucket, model.model.clone(), input_key, &file.output, options)
            .await
            .map_err(|source| ShardError::Batch { input: input_key.to_string(), source: Box::new(source) })?;
        let record = FileRecord {
            input_key: input_key.to_string(),
            input_sha256: sha256.clone(),
            input_bytes: file.input.size,
            input_etag: file.input.etag.clone(),
            model_ver: model.model_ver,
            run_id: model.run_id.clone(),
            output_key: file.output.to_string(),
            rows_read: report.rows_read,
            rows_written: report.rows_written,
            seconds: report.seconds,
            shard: shard.to_string(),
            written_at: Utc::now(),
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("records are plain serde data");
        bucket.put(&record_key, bytes).await?;
        tracing::info!(input = %input_key, output = %file.output, rows = report.rows_written, seconds = report.seconds, %shard, "file predicted");
        files.push(FileOutcome {
            input_key: input_key.clone(),
            output_key: file.output.clone(),
            input_sha256: sha256,
            rows_read: report.rows_read,
            rows_written: report.rows_written,
            seconds: report.seconds,
            skipped: false,
        });
    }
    let summary = write_summary_if_done(bucket, model, input, &output, shard, &planned, ignored).await?;
    Ok(ShardReport { shard, output, files, inputs: planned.len(), summary })
}

/// Writes the summary when every planned file has a record of this run made
/// from the input as listed; returns its key then, `None` while a shard is missing.
async fn write_summary_if_done(
    bucket: &Bucket,
    model: &ShardModel,
    input: &InputPrefix,
    output: &ShardedOutput,
    shard: Shard,
    planned: &[Planned],
    ignored: Vec<String>,
) -> Result<Option<BucketKey>, ShardError> {
    let mut files = Vec::with_capacity(planned.len());
    for file in planned {
        let record = read_record(bucket, &ShardedOutput::record(&file.output)).await?;
        match record {
            Some(record) if record.matches(&file.input, &model.run_id) => files.push(SummaryFile {
                input_key: record.input_key,
                input_sha256: record.input_sha256,
                output_key: record.output_key,
                rows_read: record.rows_read,
                rows_written: record.rows_written,
            }),
            _ => {
                tracing::info!(%shard, waiting_for = %file.input.key, "not every file is done yet; no summary");
                return Ok(None);
            }
        }
    }
    let summary = BatchSummary {
        input_prefix: input.to_string(),
        output_folder: output.folder().to_string(),
        model_ver: model.model_ver,
        run_id: model.run_id.clone(),
        shards: shard.count(),
        rows_read: files.iter().map(|f| f.rows_read).sum(),
        rows_written: files.iter().map(|f| f.rows_written).sum(),
        files,
        ignored,
        written_at: Utc::now(),
    };
    let key = output.summary();
    // Two shards ending together may both write it: the same files, rows and run.
    bucket.put(&key, serde_json::to_vec_pretty(&summary).expect("summaries are plain serde data")).await?;
    tracing::info!(summary = %key, files = summary.files.len(), rows = summary.rows_written, "every shard is done; summary written");
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_i_of_n_counted_from_zero() {
        let shard: Shard = "1/3".parse().unwrap();
        assert_eq!((shard.index(), shard.count(), shard.to_string()), (1, 3, "1/3".to_owned()));
        let owned: Vec<usize> = (0..7).filter(|&i| shard.owns(i)).collect();
        assert_eq!(owned, [1, 4]);
        for bad in ["3/3", "0/0", "1", "-1/3", "a/b", "1/3/4"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!((0..5).all(|i| Shard::WHOLE.owns(i)));
    }

    #[test]
    fn an_indexed_job_gives_the_index_and_the_arguments_the_count() {
        let args = |shard: Option<&str>, shards: Option<u32>, index: Option<u32>| ShardArgs {
            shard: shard.map(|s| s.parse().unwrap()),
            shards,
            job_completion_index: index,
        };
        assert_eq!(args(None, None, None).shard().unwrap(), Shard::WHOLE);
        assert_eq!(args(Some("2/4"), None, Some(1)).shard().unwrap(), Shard::new(2, 4).unwrap());
        assert_eq!(args(None, Some(3), Some(2)).shard().unwrap(), Shard::new(2, 3).unwrap());
        assert!(matches!(args(None, Some(3), None).shard(), Err(ShardError::NoIndex { count: 3 })));
        assert!(matches!(args(None, None, Some(0)).shard(), Err(ShardError::NoCount { index: 0 })));
        assert!(matches!(args(None, Some(3), Some(3)).shard(), Err(ShardError::BadShard(_))));
    }
}
