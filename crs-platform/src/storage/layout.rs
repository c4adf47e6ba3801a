//! Every key in the bucket, in one place, and the order they are written in.
//!
//! ```text
//! config/<model_ver>/params.yaml                                      hyperparameters
//! config/<model_ver>/lifecycle.yaml                                   retraining and promotion rules
//! config/<model_ver>/model.yaml                                       declares an imported version (framework)
//! data/train/train.csv.gz, data/train/eval.csv.gz                     default training and evaluation data
//! data/predict/input/prediction_input.csv.gz                          default prediction input
//! data/predict/output/<model_ver>/<run_id>/prediction_output.csv.gz   default batch output
//! data/predict/output/<model_ver>/<run_id>/<inputs>/<name>.csv.gz      one file of a batch over a prefix
//! data/predict/output/<model_ver>/<run_id>/<inputs>/<name>.csv.gz.done.json  what it was made from (skip record)
//! data/predict/output/<model_ver>/<run_id>/<inputs>/_SUMMARY.json     every file of that batch, once all are done
//! model/<model_ver>/<run_id>/model.json                               the artifact
//! model/<model_ver>/<run_id>/model.json.sha256                        its checksum
//! model/<model_ver>/<run_id>/metadata.json                            the run's record
//! model/<model_ver>/<run_id>/reference/<sha256>.json                  its score on a reference file (by content hash)
//! model/<model_ver>/LATEST                                            the newest complete run's id
//! model/<model_ver>/index.json                                        the metadata of every complete run (a cache)
//! history/<model_ver>/<seq>.json                                      stage and alias changes, in order
//! leases/<name>/<seq>.json                                            who holds a lease, until when
//! data/incoming/...                                                   new raw files (INCOMING_PREFIX)
//! data/ledger/<seq>.json                                              one entry per incoming file seen
//! data/ingested/<seq>.csv.gz                                          the new rows of ledger entry <seq>
//! cycles/<model_ver>/<cycle_id>.json                                  the record of one lifecycle cycle
//! cancels/cycles/<model_ver>/<cycle_id>.json                         a request to cancel a running cycle
//! jobs/<job_id>.json                                                  a training job, as its process last wrote it
//! reports/<model_ver>/...                                             HTML reports of runs and cycles
//! shadow/<primary>/<date>/<id>.csv.gz                                 a primary's and its shadows' predictions
//! capture/<model_ver>/<date>/<id>.csv.gz                              a sample of served rows and their answers (CAPTURE_SAMPLE)
//! capture/<model_ver>/<date>/<id>.batch.csv.gz                        a batch served with capture on, as its input key
//! trends/<model_ver>/<cycle_id>.json                                  one cycle's numbers, kept longer than its record
//! ```
//!
//! Write order, which readers rely on: a run's artifact, then its checksum, then
//! its metadata; a run exists once its metadata does. `LATEST` moves only after
//! that, only to a complete run, and only forward in run-id order. An ingested
//! file's rows are written before its ledger entry, and only rows a ledger
//! entry names count as ingested. A batch
//! output appears whole when its multipart upload completes, or not at all.
//! In a batch over a prefix, each file's output comes first, then its skip
//! record, and the summary only after every file of every shard has both; a
//! shard that predicts a file again first deletes the summary.
//!
//! Shadow and capture records are written with create-if-absent under a fresh
//! id and never changed: each object is one flushed batch, and the set only
//! grows (until retention deletes whole days of captures).
//!
//! `index.json` is a cache of the runs' metadata, never the truth: a listing
//! reads it, then the metadata of any run folder it lacks, drops entries
//! whose folder is gone, and writes it back when that changed it. A lost or
//! stale index costs reads, never a wrong answer.
//!
//! Delete order (retention, `crate::lifecycle::retention`), the write order reversed so
//! that no reader sees a run that cannot load: the run leaves the index, then
//! its metadata goes (the run stops existing), then its checksum and
//! artifact, then its report. A crash in between leaves a folder without
//! metadata, which is no run, as a crash while writing one does. A cycle's
//! record goes before its report, so no listed cycle lacks one it had.
//!
//! The event logs and leases are sequence-numbered objects written with
//! create-if-absent and never changed: the highest number is the current
//! state, and two writers racing for the next number cannot both win.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use crs_domain::models::ModelVer;
use crs_domain::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::storage::bucket::{BucketKey, KeyError};

pub const TRAIN_KEY: &str = "data/train/train.csv.gz";
pub const EVAL_KEY: &str = "data/train/eval.csv.gz";
pub const PREDICTION_INPUT_KEY: &str = "data/predict/input/prediction_input.csv.gz";
pub const INCOMING_PREFIX: &str = "data/incoming";
/// Where batch outputs go unless serve-service is told otherwise (`OUTPUT_PREFIX`).
pub const DEFAULT_OUTPUT_PREFIX: &str = "data/predict/output/";
/// The folder of ingested rows, and what errors and run metadata call all of
/// them read together.
pub const INGESTED_NAME: &str = "data/ingested";
const LEDGER: &str = "data/ledger";
const TRAIN_ROOT: &str = "data/train";
const PREDICTION_INPUT_ROOT: &str = "data/predict/input";
const CONFIG_ROOT: &str = "config";
const MODEL_ROOT: &str = "model";
const HISTORY_ROOT: &str = "history";
const LEASES_ROOT: &str = "leases";
const SHADOW_ROOT: &str = "shadow";
const CAPTURE_ROOT: &str = "capture";
/// The name ending of a batch's capture object (a `.csv.gz` record object too).
const CAPTURED_BATCH: &str = ".batch.csv.gz";
const TRENDS_ROOT: &str = "trends";
const JOBS_ROOT: &str = "jobs";
const CYCLES_ROOT: &str = "cycles";
const CANCELS_ROOT: &str = "cancels";
const REPORTS_ROOT: &str = "reports";
const OUTPUT_FILE: &str = "prediction_output.csv.gz";
/// Added to a sharded batch output's key to name its skip record.
const DONE_SUFFIX: &str = ".done.json";
/// A sharded batch's summary; no output is named so (every output ends in `.csv.gz`).
const SUMMARY_FILE: &str = "_SUMMARY.json";
/// The extensions of the files a batch over a prefix predicts; other objects there are left alone.
const BATCH_INPUT_EXTENSIONS: [&str; 2] = [".csv.gz", ".csv"];
pub const ARTIFACT_FILE: &str = "model.json";
const CHECKSUM_FILE: &str = "model.json.sha256";
const METADATA_FILE: &str = "metadata.json";
const LATEST_FILE: &str = "LATEST";
const INDEX_FILE: &str = "index.json";
const REFERENCE_FOLDER: &str = "reference";
const DECLARATION_FILE: &str = "model.yaml";

/// The object of entry `seq` in a sequence-numbered log: zero-padded, so that
/// listing order is number order.
fn sequenced(prefix: &BucketKey, seq: u64) -> BucketKey {
    key(&[prefix.as_str(), &format!("{seq:010}.json")])
}

/// The number of a log entry from its key, if it is one.
pub fn sequence_number(key: &BucketKey) -> Option<u64> {
    let name = key.as_str().rsplit('/').next()?;
    name.strip_suffix(".json")?.parse().ok()
}

/// `data/ledger/`: the ingestion ledger.
pub fn ledger() -> BucketKey {
    key(&[LEDGER])
}

pub fn ledger_entry(seq: u64) -> BucketKey {
    sequenced(&ledger(), seq)
}

/// The rows ledger entry `seq` added.
pub fn ingested_rows(seq: u64) -> BucketKey {
    key(&[INGESTED_NAME, &format!("{seq:010}.csv.gz")])
}

/// `reports/<model_ver>/cycles/`: the reports of a version's cycles.
pub fn cycle_reports(model_ver: ModelVer) -> BucketKey {
    key(&[REPORTS_ROOT, model_ver.name(), CYCLES_ROOT])
}

/// The id of the cycle or run an object under a per-id folder belongs to
/// (`<id>.json`, `<id>.html`).
pub fn id_of(key: &BucketKey) -> Option<RunId> {
    let name = key.as_str().rsplit('/').next()?;
    let (id, _extension) = name.rsplit_once('.')?;
    RunId::parse(id).ok()
}

/// `jobs/`: the records of training jobs, of every replica.
pub fn jobs() -> BucketKey {
    key(&[JOBS_ROOT])
}

/// A job's record; `job_id` must be one safe key segment (train-service's ids are).
pub fn job_record(job_id: &str) -> Result<BucketKey, KeyError> {
    jobs().join(&format!("{job_id}.json"))
}

/// `cancels/cycles/<model_ver>/`: requests to cancel cycles, which the replica
/// running one reads (outside `cycles/`, where every object is a record).
pub fn cycle_cancels(model_ver: ModelVer) -> BucketKey {
    key(&[CANCELS_ROOT, CYCLES_ROOT, model_ver.name()])
}

pub fn cycle_cancel(model_ver: ModelVer, cycle_id: &RunId) -> BucketKey {
    key(&[cycle_cancels(model_ver).as_str(), &format!("{cycle_id}.json")])
}

/// `cycles/<model_ver>/`: the records of a version's cycles.
pub fn cycles(model_ver: ModelVer) -> BucketKey {
    key(&[CYCLES_ROOT, model_ver.name()])
}

/// A cycle's record; `cycle_id` must be a [`RunId`]-like safe segment.
pub fn cycle_record(model_ver: ModelVer, cycle_id: &RunId) -> BucketKey {
    key(&[cycles(model_ver).as_str(), &format!("{cycle_id}.json")])
}

pub fn run_report(model_ver: ModelVer, run: &RunId) -> BucketKey {
    key(&[REPORTS_ROOT, model_ver.name(), "runs", &format!("{run}.html")])
}

pub fn cycle_report(model_ver: ModelVer, cycle_id: &RunId) -> BucketKey {
    key(&[cycle_reports(model_ver).as_str(), &format!("{cycle_id}.html")])
}

/// `reports/<model_ver>/index.html`: every run and cycle, with the trend of the headline metrics.
pub fn report_index(model_ver: ModelVer) -> BucketKey {
    key(&[REPORTS_ROOT, model_ver.name(), "index.html"])
}

/// `shadow/<primary>/`: every recorded batch of `primary`'s and its shadows' predictions.
pub fn shadow_prefix(primary: ModelVer) -> BucketKey {
    key(&[SHADOW_ROOT, primary.name()])
}

/// One flushed batch of shadow records, by the UTC date it was written on.
pub fn shadow_batch(primary: ModelVer, date: NaiveDate, id: &RunId) -> BucketKey {
    dated_record(&shadow_prefix(primary), date, id)
}

/// `capture/<model_ver>/`: every recorded batch of the rows `model_ver` served, sampled.
pub fn capture_prefix(model_ver: ModelVer) -> BucketKey {
    key(&[CAPTURE_ROOT, model_ver.name()])
}

/// One flushed batch of captured rows, by the UTC date it was written on.
pub fn capture_batch(model_ver: ModelVer, date: NaiveDate, id: &RunId) -> BucketKey {
    dated_record(&capture_prefix(model_ver), date, id)
}

/// The capture object of one batch served (kept as its input key), dated as
/// captured rows are and beside them.
pub fn captured_batch(model_ver: ModelVer, date: NaiveDate, id: &RunId) -> BucketKey {
    key(&[capture_prefix(model_ver).as_str(), &date.format("%Y-%m-%d").to_string(), &format!("{id}{CAPTURED_BATCH}")])
}

/// Whether `key` is the capture object of a batch ([`captured_batch`]).
pub fn is_captured_batch(key: &BucketKey) -> bool {
    key.as_str().ends_with(CAPTURED_BATCH)
}

/// `trends/<model_ver>/`: one trend point per cycle.
pub fn trends(model_ver: ModelVer) -> BucketKey {
    key(&[TRENDS_ROOT, model_ver.name()])
}

/// The trend point of one cycle.
pub fn trend_point(model_ver: ModelVer, cycle_id: &RunId) -> BucketKey {
    key(&[trends(model_ver).as_str(), &format!("{cycle_id}.json")])
}

/// The UTC date folder of a shadow or capture record object, if `key` is one.
pub fn record_date(key: &BucketKey) -> Option<NaiveDate> {
    let mut segments = key.as_str().rsplit('/');
    segments.next()?.strip_suffix(".csv.gz")?;
    NaiveDate::parse_from_str(segments.next()?, "%Y-%m-%d").ok()
}

fn dated_record(prefix: &BucketKey, date: NaiveDate, id: &RunId) -> BucketKey {
    key(&[prefix.as_str(), &date.format("%Y-%m-%d").to_string(), &format!("{id}.csv.gz")])
}

/// `leases/<name>/`: the records of one lease (see `crate::lifecycle::lease`).
pub fn lease_prefix(name: &str) -> BucketKey {
    key(&[LEASES_ROOT, name])
}

pub fn lease_record(name: &str, seq: u64) -> BucketKey {
    sequenced(&lease_prefix(name), seq)
}

/// Joins segments that are safe by construction (registry names, run ids and
/// the constants above).
fn key(segments: &[&str]) -> BucketKey {
    BucketKey::parse(&segments.join("/")).expect("layout keys are built from safe segments")
}

/// `config/<model_ver>/params.yaml`: the hyperparameters a job uses unless it names others.
pub fn params_key(model_ver: ModelVer) -> BucketKey {
    key(&[CONFIG_ROOT, model_ver.name(), "params.yaml"])
}

/// `config/`: one folder per model version with settings in the bucket.
pub fn config_root() -> BucketKey {
    key(&[CONFIG_ROOT])
}

/// `config/<name>/model.yaml`: declares `name` a version for imports. `name`
/// comes from outside and is checked as a key segment.
pub fn declaration_key_of(name: &str) -> Result<BucketKey, KeyError> {
    config_root().join(name)?.join(DECLARATION_FILE)
}

/// `config/<model_ver>/lifecycle.yaml`: the version's retraining and promotion rules.
pub fn lifecycle_key(model_ver: ModelVer) -> BucketKey {
    key(&[CONFIG_ROOT, model_ver.name(), "lifecycle.yaml"])
}

/// Areas no batch output may land in, whatever the output prefix: runs and
/// their LATEST, hyperparameters, training data, prediction inputs, shadow
/// and capture records, and trend points.
const PROTECTED: [&str; 7] =
    [MODEL_ROOT, CONFIG_ROOT, TRAIN_ROOT, PREDICTION_INPUT_ROOT, SHADOW_ROOT, CAPTURE_ROOT, TRENDS_ROOT];

/// Why a batch may not write its output to a key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputKeyError {
    #[error("output key {key}: batch outputs may only be written under {prefix}/")]
    OutsidePrefix { key: String, prefix: String },
    #[error("output key {key}: {area}/ holds models, config and input data, never batch outputs")]
    Protected { key: String, area: &'static str },
    #[error("output key {key} already exists; set overwrite to replace it")]
    Exists { key: String },
    #[error("output prefix {prefix:?}: {reason}")]
    BadPrefix { prefix: String, reason: String },
}

impl Classify for OutputKeyError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// Whether `key` is `area` or inside it, segment by segment (`data/trainer` is not in `data/train`).
fn is_within(key: &str, area: &str) -> bool {
    key == area || key.strip_prefix(area).is_some_and(|rest| rest.starts_with('/'))
}

/// The folder batch outputs must be written under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputPrefix(BucketKey);

impl OutputPrefix {
    /// A folder key (a trailing `/` is optional) outside the protected areas.
    pub fn parse(prefix: &str) -> Result<Self, OutputKeyError> {
        let bad = |reason: String| OutputKeyError::BadPrefix { prefix: prefix.to_owned(), reason };
        let key = BucketKey::parse(prefix.strip_suffix('/').unwrap_or(prefix)).map_err(|e| bad(e.to_string()))?;
        if let Some(area) = PROTECTED.iter().find(|area| is_within(key.as_str(), area)) {
            return Err(bad(format!("it is inside {area}/, which holds models, config and input data")));
        }
        Ok(OutputPrefix(key))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Checks a key a request names for a batch output: under the prefix and
    /// in no protected area. (Whether it exists is the caller's check: see
    /// [`OutputKeyError::Exists`].)
    pub fn check(&self, key: &BucketKey) -> Result<(), OutputKeyError> {
        let text = key.as_str();
        if let Some(area) = PROTECTED.iter().find(|area| is_within(text, area)) {
            return Err(OutputKeyError::Protected { key: text.to_owned(), area });
        }
        if !text.strip_prefix(self.as_str()).is_some_and(|rest| rest.len() > 1 && rest.starts_with('/')) {
            return Err(OutputKeyError::OutsidePrefix { key: text.to_owned(), prefix: self.as_str().to_owned() });
        }
        Ok(())
    }

    /// Where a batch writes unless the request names an output: under the
    /// prefix (`<prefix>/<model_ver>/<run_id>/prediction_output.csv.gz`).
    pub fn default_key(&self, model_ver: ModelVer, run: &RunId) -> BucketKey {
        key(&[self.as_str(), model_ver.name(), run.as_str(), OUTPUT_FILE])
    }
}

/// A batch over many files: a bucket prefix, given with its trailing `/`
/// (`data/predict/input/many/`), so that it is never taken for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputPrefix(BucketKey);

impl InputPrefix {
    /// Whether `text` names a prefix (ends in `/`) rather than one object.
    pub fn is_prefix(text: &str) -> bool {
        text.ends_with('/')
    }

    /// A prefix ending in `/`; the folder itself must be a valid key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let folder = text
            .strip_suffix('/')
            .ok_or_else(|| KeyError::Invalid(text.to_owned(), "an input prefix ends in '/'".into()))?;
        Ok(InputPrefix(BucketKey::parse(folder)?))
    }

    /// The folder, without the trailing `/`.
    pub fn folder(&self) -> &BucketKey {
        &self.0
    }

    /// The name under which this prefix's outputs are grouped in a run's
    /// output folder: its path below `data/predict/input/`, or its whole path
    /// when it lies elsewhere, so that two prefixes never share one.
    pub fn output_name(&self) -> &str {
        let folder = self.0.as_str();
        folder.strip_prefix(PREDICTION_INPUT_ROOT).and_then(|rest| rest.strip_prefix('/')).unwrap_or(folder)
    }

    /// The path of `key` below this prefix, if `key` is a batch input file
    /// under it (`.csv` or `.csv.gz`).
    pub fn input_name<'a>(&self, key: &'a BucketKey) -> Option<&'a str> {
        let rest = key.as_str().strip_prefix(self.0.as_str())?.strip_prefix('/')?;
        BATCH_INPUT_EXTENSIONS.iter().any(|ext| rest.ends_with(ext) && rest.len() > ext.len()).then_some(rest)
    }
}

impl fmt::Display for InputPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.0)
    }
}

/// Where a batch over `input` with one run writes:
/// `<output prefix>/<model_ver>/<run_id>/<input's output name>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardedOutput(BucketKey);

impl ShardedOutput {
    pub fn new(prefix: &OutputPrefix, model_ver: ModelVer, run: &RunId, input: &InputPrefix) -> Self {
        ShardedOutput(key(&[prefix.as_str(), model_ver.name(), run.as_str(), input.output_name()]))
    }

    pub fn folder(&self) -> &BucketKey {
        &self.0
    }

    /// The output of the input file at `name` below the prefix: the same path,
    /// as gzip CSV (`day/part-1.csv` -> `day/part-1.csv.gz`).
    pub fn output(&self, name: &str) -> Result<BucketKey, KeyError> {
        let stem = BATCH_INPUT_EXTENSIONS.iter().find_map(|ext| name.strip_suffix(ext)).unwrap_or(name);
        BucketKey::parse(&format!("{}/{stem}{}", self.0, BATCH_INPUT_EXTENSIONS[0]))
    }

    /// The skip record beside `output`: which input, by sha256, and which run made it.
    pub fn record(output: &BucketKey) -> BucketKey {
        BucketKey::parse(&format!("{output}{DONE_SUFFIX}")).expect("a checked key with a plain suffix is a key")
    }

    /// The summary of the whole batch, written once every file is done.
    pub fn summary(&self) -> BucketKey {
        key(&[self.0.as_str(), SUMMARY_FILE])
    }
}

/// [`DEFAULT_OUTPUT_PREFIX`].
impl Default for OutputPrefix {
    fn default() -> Self {
        OutputPrefix::parse(DEFAULT_OUTPUT_PREFIX).expect("the default output prefix is outside the protected areas")
    }
}

/// The folder holding every model version.
pub fn models_root() -> BucketKey {
    key(&[MODEL_ROOT])
}

/// `model/<model_ver>/`: the runs of one version and its `LATEST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelKey(ModelVer);

impl ModelKey {
    pub fn new(model_ver: ModelVer) -> Self {
        ModelKey(model_ver)
    }

    pub fn prefix(self) -> BucketKey {
        key(&[MODEL_ROOT, self.0.name()])
    }

    pub fn latest(self) -> BucketKey {
        key(&[MODEL_ROOT, self.0.name(), LATEST_FILE])
    }

    /// The index of the version's runs: a file, so every folder beside it is still a run.
    pub fn index(self) -> BucketKey {
        key(&[MODEL_ROOT, self.0.name(), INDEX_FILE])
    }

    /// `history/<model_ver>/`: the version's stage and alias history, kept
    /// apart from `model/<model_ver>/` so that every folder there is a run.
    pub fn events(self) -> BucketKey {
        key(&[HISTORY_ROOT, self.0.name()])
    }

    pub fn event(self, seq: u64) -> BucketKey {
        sequenced(&self.events(), seq)
    }

    pub fn run(self, run: &RunId) -> RunKey {
        RunKey { model_ver: self.0, run: run.clone() }
    }
}

/// `model/<model_ver>/<run_id>/`: the objects of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunKey {
    model_ver: ModelVer,
    run: RunId,
}

impl RunKey {
    fn file(&self, name: &str) -> BucketKey {
        key(&[MODEL_ROOT, self.model_ver.name(), self.run.as_str(), name])
    }

    pub fn prefix(&self) -> BucketKey {
        key(&[MODEL_ROOT, self.model_ver.name(), self.run.as_str()])
    }

    pub fn artifact(&self) -> BucketKey {
        self.file(ARTIFACT_FILE)
    }

    pub fn checksum(&self) -> BucketKey {
        self.file(CHECKSUM_FILE)
    }

    /// Written last: the run exists once this does.
    pub fn metadata(&self) -> BucketKey {
        self.file(METADATA_FILE)
    }

    /// The run's score on the reference file whose content hashes to `sha256`
    /// (see `crate::registry::reference`); written after the run exists.
    pub fn reference_score(&self, sha256: &str) -> BucketKey {
        key(&[self.prefix().as_str(), REFERENCE_FOLDER, &format!("{sha256}.json")])
    }
}

/// A run's id: its start time to the millisecond, then a random suffix, e.g.
/// `20261122T101500123Z-3fa9c2`. Ids sort by time and never repeat.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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

    /// When the run or cycle started, from its id; `None` for an id given by
    /// hand in another form.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let stamp = self.0.split_once("Z-")?.0;
        let naive = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3f").ok()?;
        Some(naive.and_utc())
    }
}

impl TryFrom<String> for RunId {
    type Error = KeyError;

    fn try_from(id: String) -> Result<Self, KeyError> {
        RunId::parse(&id)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
        let given = RunId::parse("20261122T101500123Z-3fa9c2").unwrap();
        assert_eq!(given.time().map(|t| t.to_rfc3339()), Some("2026-11-22T10:15:00.123+00:00".to_owned()));
        assert!(ids.iter().all(|id| id.time().is_some_and(|t| t.timestamp_millis() >= now.timestamp_millis())));
        assert_eq!(RunId::parse("by-hand").unwrap().time(), None);
        assert!(RunId::parse("../x").is_err());
        assert!(RunId::parse("a/b").is_err());
        assert!(serde_json::from_str::<RunId>("\"a/b\"").is_err());
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let v1 = ModelVer::parse("v1").unwrap();
        let run = RunId::parse("20261122T101500123Z-3fa9c2").unwrap();
        let model = ModelKey::new(v1);
        assert_eq!(model.latest().as_str(), "model/v1/LATEST");
        assert_eq!(model.index().as_str(), "model/v1/index.json");
        assert_eq!(job_record("job-1").unwrap().as_str(), "jobs/job-1.json");
        assert!(job_record("../x").is_err());
        assert_eq!(id_of(&cycle_record(v1, &run)), Some(run.clone()));
        assert_eq!(id_of(&cycle_report(v1, &run)), Some(run.clone()));
        assert_eq!(cycle_report(v1, &run).as_str().rsplit_once('/').unwrap().0, cycle_reports(v1).as_str());
        assert_eq!(model.run(&run).metadata().as_str(), "model/v1/20261122T101500123Z-3fa9c2/metadata.json");
        assert_eq!(model.run(&run).artifact().as_str(), "model/v1/20261122T101500123Z-3fa9c2/model.json");
        assert_eq!(model.run(&run).checksum().as_str(), "model/v1/20261122T101500123Z-3fa9c2/model.json.sha256");
        assert_eq!(params_key(v1).as_str(), "config/v1/params.yaml");
        assert_eq!(model.event(7).as_str(), "history/v1/0000000007.json");
        assert_eq!(sequence_number(&model.event(12)), Some(12));
        assert_eq!(lease_record("cycle-v1", 3).as_str(), "leases/cycle-v1/0000000003.json");
        assert_eq!(lifecycle_key(v1).as_str(), "config/v1/lifecycle.yaml");
        assert_eq!(cycle_cancel(v1, &run).as_str(), "cancels/cycles/v1/20261122T101500123Z-3fa9c2.json");
        assert_eq!(cycle_record(v1, &run).as_str(), "cycles/v1/20261122T101500123Z-3fa9c2.json");
        assert_eq!(ingested_rows(3).as_str(), "data/ingested/0000000003.csv.gz");
        let day = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert_eq!(shadow_batch(v1, day, &run).as_str(), "shadow/v1/2026-11-22/20261122T101500123Z-3fa9c2.csv.gz");
        let captured = capture_batch(v1, day, &run);
        assert_eq!(captured.as_str(), "capture/v1/2026-11-22/20261122T101500123Z-3fa9c2.csv.gz");
        let batch = captured_batch(v1, day, &run);
        assert_eq!(batch.as_str(), "capture/v1/2026-11-22/20261122T101500123Z-3fa9c2.batch.csv.gz");
        assert_eq!(
            (record_date(&batch), is_captured_batch(&batch), is_captured_batch(&captured)),
            (Some(day), true, false)
        );
        assert_eq!((record_date(&captured), record_date(&cycle_record(v1, &run))), (Some(day), None));
        assert_eq!(trend_point(v1, &run).as_str(), "trends/v1/20261122T101500123Z-3fa9c2.json");
        let prefix = OutputPrefix::parse(DEFAULT_OUTPUT_PREFIX).unwrap();
        assert_eq!(prefix, OutputPrefix::default());
        assert_eq!(
            prefix.default_key(v1, &run).as_str(),
            "data/predict/output/v1/20261122T101500123Z-3fa9c2/prediction_output.csv.gz"
        );
        let many = InputPrefix::parse("data/predict/input/many/").unwrap();
        let sharded = ShardedOutput::new(&prefix, v1, &run, &many);
        assert_eq!(sharded.folder().as_str(), "data/predict/output/v1/20261122T101500123Z-3fa9c2/many");
        let output = sharded.output("day/part-1.csv").unwrap();
        assert_eq!(output.as_str(), "data/predict/output/v1/20261122T101500123Z-3fa9c2/many/day/part-1.csv.gz");
        assert_eq!(
            sharded.output("part-1.csv.gz").unwrap().as_str(),
            sharded.folder().join("part-1.csv.gz").unwrap().as_str()
        );
        assert_eq!(ShardedOutput::record(&output).as_str(), format!("{output}.done.json"));
        assert_eq!(sharded.summary().as_str(), "data/predict/output/v1/20261122T101500123Z-3fa9c2/many/_SUMMARY.json");
        let elsewhere = InputPrefix::parse("exports/2026-11/").unwrap();
        assert_eq!(elsewhere.output_name(), "exports/2026-11");
        assert_eq!(elsewhere.to_string(), "exports/2026-11/");
    }

    #[test]
    fn an_input_prefix_ends_in_a_slash_and_holds_csv_files() {
        assert!(InputPrefix::is_prefix("data/predict/input/many/"));
        assert!(!InputPrefix::is_prefix(PREDICTION_INPUT_KEY));
        for bad in ["data/predict/input/many", "/", "../x/", "a//"] {
            assert!(InputPrefix::parse(bad).is_err(), "{bad}");
        }
        let many = InputPrefix::parse("data/predict/input/many/").unwrap();
        let name = |k: &str| many.input_name(&BucketKey::parse(k).unwrap()).map(str::to_owned);
        assert_eq!(name("data/predict/input/many/a.csv.gz").as_deref(), Some("a.csv.gz"));
        assert_eq!(name("data/predict/input/many/day/b.csv").as_deref(), Some("day/b.csv"));
        for skipped in [
            "data/predict/input/many/_SUCCESS",
            "data/predict/input/many/a.csv.gz#3",
            "data/predict/input/manyx/a.csv",
            "data/predict/input/many/.csv",
        ] {
            assert_eq!(name(skipped), None, "{skipped}");
        }
    }

    #[test]
    fn batch_outputs_stay_under_the_prefix_and_out_of_protected_areas() {
        let check = |prefix: &OutputPrefix, key: &str| prefix.check(&BucketKey::parse(key).unwrap());
        let default = OutputPrefix::default();
        assert_eq!(check(&default, "data/predict/output/mine.csv.gz"), Ok(()));
        assert_eq!(check(&default, "data/predict/output/v1/x/prediction_output.csv.gz"), Ok(()));
        for outside in ["out/a.csv.gz", "data/predict/outputs/a.csv", "data/predict/output", "a.csv"] {
            let err = check(&default, outside).unwrap_err();
            assert!(matches!(err, OutputKeyError::OutsidePrefix { .. }), "{outside}: {err}");
            assert!(err.to_string().contains("only be written under data/predict/output/"), "{err}");
        }
        // A wide prefix still keeps every protected area out of reach.
        let wide = OutputPrefix::parse("data").unwrap();
        for protected in [
            "model/v1/LATEST",
            "model/v1/20261122T101500123Z-3fa9c2/model.json",
            "config/v1/params.yaml",
            "data/train/train.csv.gz",
            "data/predict/input/prediction_input.csv.gz",
        ] {
            for prefix in [&default, &wide] {
                let err = check(prefix, protected).unwrap_err();
                assert!(matches!(err, OutputKeyError::Protected { .. }), "{protected}: {err}");
            }
        }
        assert_eq!(check(&wide, "data/trainer/a.csv"), Ok(()), "areas are whole segments");
        for bad in [
            "model",
            "model/v1/",
            "config/x",
            "data/train/out",
            "shadow/v1",
            "capture",
            "capture/v1/x",
            "trends/v1",
            "../x",
            "",
        ] {
            assert!(OutputPrefix::parse(bad).is_err(), "{bad}");
        }
    }
}
