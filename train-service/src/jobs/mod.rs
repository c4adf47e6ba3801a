//! Training jobs: what a job is ([`Job`] and its states), the queue in front of
//! the CPU ([`Jobs`], in `queue.rs`), each job's history (`log.rs`), the stages
//! that take a job from its inputs in the bucket to a trained model
//! (`stages.rs`), writing and promoting the run (`save.rs`), and the webhook
//! notices it posts (`notices.rs`).

mod log;
mod notices;
mod queue;
mod record;
mod save;
mod stages;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crs_domain::data::DataError;
use crs_domain::evaluation::{self, Evaluation, TrainError};
use crs_domain::models::{ModelVer, ParamError, Progress};
use crs_platform::storage::bucket::StorageError;
use crs_platform::error::{Classify, ErrorKind};
use crs_platform::lifecycle::inputs::{FetchError, InputKeys};
use crs_platform::storage::layout::RunId;
use serde::{Deserialize, Serialize};

pub use queue::{CANCEL_WAIT, Jobs};

pub use crate::config::SERVICE_NAME;

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

/// The stages of a running job, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStage {
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

impl JobStage {
    /// The share of the job done when the stage starts. Stages only report when
    /// they start, so these are fixed estimates of where the time goes.
    fn progress(self) -> f32 {
        match self {
            JobStage::LoadingData => 0.0,
            JobStage::Preparing => 0.3,
            JobStage::Training => 0.4,
            JobStage::Evaluating => 0.8,
            JobStage::Saving => 0.9,
        }
    }

    /// The stage's name in run metadata.
    fn name(self) -> &'static str {
        match self {
            JobStage::LoadingData => "loading_data",
            JobStage::Preparing => "preparing",
            JobStage::Training => "training",
            JobStage::Evaluating => "evaluating",
            JobStage::Saving => "saving",
        }
    }
}

impl From<evaluation::Stage> for JobStage {
    fn from(stage: evaluation::Stage) -> Self {
        match stage {
            evaluation::Stage::Preparing => JobStage::Preparing,
            evaluation::Stage::Training => JobStage::Training,
            evaluation::Stage::Evaluating => JobStage::Evaluating,
        }
    }
}

/// One job as it is at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub model_ver: ModelVer,
    pub state: JobState,
    /// The current stage; the last one reached once the job has ended.
    pub stage: Option<JobStage>,
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
    pub gate: Option<String>,
    /// How a hyperparameter search is going, for versions that search.
    pub search: Option<SearchState>,
    /// Set when the job ended cancelled.
    pub cancelled: Option<Cancellation>,
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
    #[error("training stopped unexpectedly: {0}")]
    Crashed(String),
    #[error("saving the run: {0}")]
    Save(#[source] StorageError),
    #[error("moving LATEST: {0}")]
    Promote(#[source] StorageError),
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
            JobError::Storage(e) | JobError::Save(e) | JobError::Promote(e) => e.kind(),
            JobError::Fetch(e) => e.kind(),
            JobError::Params(e) => e.kind(),
            JobError::Data(e) => e.kind(),
            JobError::Train(TrainError::Fit(e)) => e.kind(),
            JobError::Train(_) => ErrorKind::InvalidInput,
            JobError::Crashed(_) => ErrorKind::Internal,
            JobError::NotStarted | JobError::CutOff => ErrorKind::Unavailable,
            // Asked for: the caller knows, and nothing is wrong.
            JobError::Cancelled(_) => ErrorKind::Precondition,
        }
    }
}
