//! Training jobs: what a job is ([`Job`], its states and phases), the queue in
//! front of the CPU ([`Jobs`], in `queue.rs`), each job's history (`log.rs`)
//! and its record in the bucket (`record.rs`), one job from the queue to its
//! end (`runner.rs`): its inputs loaded and its model fitted (`training.rs`),
//! its run written with its metadata (`metadata.rs`) and gated, and the webhook
//! notices it posts (`notices.rs`).

mod log;
mod metadata;
mod notices;
mod queue;
mod record;
mod runner;
mod training;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crs_domain::data::DataError;
use crs_domain::evaluation::ImportRunError;
use crs_domain::evaluation::{Evaluation, TrainError, TrainingPhase};
use crs_domain::models::imported::Framework;
use crs_domain::models::{ModelVer, ParamError, Progress};
use crs_platform::error::{Classify, ErrorKind};
use crs_platform::lifecycle::inputs::{FetchError, InputKeys};
use crs_platform::registry::runs::ImportRecord;
use crs_platform::storage::bucket::StorageError;
use crs_platform::storage::layout::RunId;
use serde::{Deserialize, Serialize};

pub use queue::{CANCEL_WAIT, Jobs};

pub use crate::config::SERVICE_NAME;
use crate::gate::GateOutcome;

/// A checked request for a job: the version, where its inputs are, its labels.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub model_ver: ModelVer,
    pub keys: InputKeys,
    pub labels: BTreeMap<String, String>,
    /// A development run: kept as a draft and never gated.
    pub draft: bool,
    /// Who asked, recorded with the gate's decision (`crctl train`, `cycle <id>`).
    pub by: String,
    /// For an import: the model file, converted instead of a fit.
    pub import: Option<ImportFile>,
}

/// A model file to import, with its record.
#[derive(Clone, Debug)]
pub struct ImportFile {
    pub framework: Framework,
    pub bytes: bytes::Bytes,
    pub record: ImportRecord,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Who cancelled a job, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub by: String,
    pub reason: String,
}

/// The phases of a running job, in order (the wire calls them stages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Fetching data and config from the bucket, validating and aggregating them.
    LoadingData,
    /// Fitting the feature pipeline.
    Preparing,
    Training,
    /// Scoring the model and the baselines.
    Evaluating,
    /// Writing the run and moving LATEST.
    Saving,
}

impl JobPhase {
    /// The share of the job done when the phase starts. Phases only report when
    /// they start, so these are fixed estimates of where the time goes.
    fn progress(self) -> f32 {
        match self {
            JobPhase::LoadingData => 0.0,
            JobPhase::Preparing => 0.3,
            JobPhase::Training => 0.4,
            JobPhase::Evaluating => 0.8,
            JobPhase::Saving => 0.9,
        }
    }

    /// The phase's name in run metadata (`stage_seconds`).
    fn name(self) -> &'static str {
        match self {
            JobPhase::LoadingData => "loading_data",
            JobPhase::Preparing => "preparing",
            JobPhase::Training => "training",
            JobPhase::Evaluating => "evaluating",
            JobPhase::Saving => "saving",
        }
    }
}

impl From<TrainingPhase> for JobPhase {
    fn from(phase: TrainingPhase) -> Self {
        match phase {
            TrainingPhase::Preparing => JobPhase::Preparing,
            TrainingPhase::Training => JobPhase::Training,
            TrainingPhase::Evaluating => JobPhase::Evaluating,
        }
    }
}

/// One job as it is at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub model_ver: ModelVer,
    pub state: JobState,
    /// The current phase; the last one reached once the job has ended.
    #[serde(rename = "stage")]
    pub phase: Option<JobPhase>,
    pub progress: f32,
    pub keys: InputKeys,
    pub labels: BTreeMap<String, String>,
    pub draft: bool,
    pub by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub run_id: Option<RunId>,
    pub error: Option<String>,
    /// The evaluation-set scores, once the job has succeeded.
    pub evaluation: Option<Evaluation>,
    /// What the gate did with the run, once the job has succeeded (not for drafts).
    pub gate: Option<GateOutcome>,
    /// How a hyperparameter search is going, for versions that search.
    pub search: Option<SearchState>,
    /// Set when the job ended cancelled.
    pub cancelled: Option<Cancellation>,
    /// For an import job: the model file it converts (its bytes are not part of the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportRecord>,
}

/// A search's progress as a job reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    pub point: usize,
    pub points: usize,
    pub folds_done: usize,
    pub folds: usize,
    pub best_point: usize,
    pub best_logloss: f64,
    pub best_trees: usize,
    pub refitting: bool,
}

impl SearchState {
    /// The state after `event`.
    pub fn after(self, event: &Progress) -> Self {
        match *event {
            Progress::Fold { point, points, fold, folds, .. } => {
                SearchState { point, points, folds_done: fold, folds, ..self }
            }
            Progress::Point { point, points, best_point, best_logloss, trees, .. } => {
                let best_trees = if best_point == point { trees } else { self.best_trees };
                SearchState { point, points, folds_done: self.folds, best_point, best_logloss, best_trees, ..self }
            }
            Progress::Refit { point, trees } => {
                SearchState { best_point: point, best_trees: trees, refitting: true, ..self }
            }
        }
    }
}

/// Why a job failed; its message is the job's `error`.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Import(#[from] ImportRunError),
    #[error("training stopped unexpectedly: {0}")]
    Crashed(String),
    #[error("saving the run: {0}")]
    Save(#[source] StorageError),
    #[error("moving LATEST: {0}")]
    AdvanceLatest(#[source] StorageError),
    #[error("cancelled by shutdown before it started")]
    NotStarted,
    #[error("cut off by shutdown: still running when the grace period ended")]
    CutOff,
    #[error("cancelled by {}: {}", .0.by, .0.reason)]
    Cancelled(Cancellation),
}

impl Classify for JobError {
    fn kind(&self) -> ErrorKind {
        match self {
            JobError::Storage(e) | JobError::Save(e) | JobError::AdvanceLatest(e) => e.kind(),
            JobError::Fetch(e) => e.kind(),
            JobError::Params(e) => e.kind(),
            JobError::Data(e) => e.kind(),
            JobError::Train(TrainError::Fit(e)) => e.kind(),
            JobError::Train(_) | JobError::Import(_) => ErrorKind::InvalidInput,
            JobError::Crashed(_) => ErrorKind::Internal,
            JobError::NotStarted | JobError::CutOff => ErrorKind::Unavailable,
            // Asked for: the caller knows, and nothing is wrong.
            JobError::Cancelled(_) => ErrorKind::Precondition,
        }
    }
}
