//! One training job or one lifecycle cycle, then exit: train-service without
//! its server, for a Kubernetes Job or CronJob, so that the training happens on
//! the Job's compute and not inside the long-lived service. The parts are the
//! service's own ([`Jobs`], [`Cycles`], the gate, the webhooks), built the same
//! way, so a run trained here is saved and gated exactly as one trained
//! through `StartTraining`.

use std::fmt;

use crs_platform::registry::events::RunStage;
use crs_platform::storage::layout::RunId;
use crs_proto::train::StartTrainingRequest;
use futures::StreamExt;

use crate::config::{Config, JobArgs, OnceCommand};
use crate::convert;
use crate::cycles::{CycleRecord, CycleState, Cycles, Start};
use crate::jobs::{Job, JobState, Jobs};
use crate::status::ApiError;

/// The exit code of a job whose run the gate rejected: the run is kept, but
/// nothing will serve it. Apart from a failure (1) and clap's usage errors (2),
/// so that a Job's `podFailurePolicy` can tell "retrain" from "retraining
/// gives the same answer".
pub const EXIT_REJECTED: u8 = 3;

/// Who the gate records as having asked for a one-shot job's run.
const JOB_BY: &str = "train-service job";
/// And for a one-shot cycle.
const CYCLE_BY: &str = "train-service cycle";

/// How a one-shot run ended well enough to report; [`OnceError`] otherwise.
#[derive(Debug)]
pub enum OnceOutcome {
    /// The job succeeded: its run is production, a candidate or a draft.
    Trained(Job),
    /// The job succeeded but the gate rejected its run.
    Rejected(Job),
    /// The cycle ran to its end, whatever it decided (boxed: a record is large).
    Cycled(Box<CycleRecord>),
}

impl OnceOutcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            OnceOutcome::Trained(_) | OnceOutcome::Cycled(_) => 0,
            OnceOutcome::Rejected(_) => EXIT_REJECTED,
        }
    }
}

impl fmt::Display for OnceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnceOutcome::Trained(job) | OnceOutcome::Rejected(job) => {
                let run = job.run_id.as_ref().map(ToString::to_string).unwrap_or_default();
                let gate = job.gate.as_ref().map_or_else(|| "not gated: a draft".to_owned(), ToString::to_string);
                write!(f, "job {} succeeded: model {} run {run}; gate: {gate}", job.id, job.model_ver)
            }
            OnceOutcome::Cycled(record) => {
                write!(f, "cycle {} of model {} succeeded: {}", record.cycle_id, record.model_ver, record.decision)
            }
        }
    }
}

/// Why a one-shot run failed; the process exits 1 with this message.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error(transparent)]
    Request(#[from] ApiError),
    #[error("job {job_id} {state}: {reason}")]
    Job { job_id: String, state: &'static str, reason: String },
    #[error("cycle {running} of model {model_ver} is running in another process; this one did not start")]
    CycleBusy { model_ver: String, running: RunId },
    #[error("cycle {cycle_id} {state} at step {step}: {reason}")]
    Cycle { cycle_id: RunId, state: &'static str, step: String, reason: String },
}

/// Runs `command` with the service's `jobs` and `cycles` and waits until it
/// and every notice it posts are done.
pub async fn run(
    config: &Config,
    jobs: &Jobs,
    cycles: &Cycles,
    command: OnceCommand,
) -> Result<OnceOutcome, OnceError> {
    match command {
        OnceCommand::Job(args) => job(config, jobs, args).await,
        OnceCommand::Cycle => cycle(config, jobs, cycles).await,
    }
}

async fn job(config: &Config, jobs: &Jobs, args: JobArgs) -> Result<OnceOutcome, OnceError> {
    let wire = StartTrainingRequest {
        model_ver: String::new(),
        train_key: args.train_key,
        eval_key: args.eval_key,
        config_key: args.config_key,
        labels: args.labels.into_iter().collect(),
        draft: args.draft,
    };
    let mut request = convert::job_request(wire, config.model_ver)?;
    request.by = JOB_BY.to_owned();
    let started = jobs.start(request).await?;
    tracing::info!(job_id = %started.id, "one-shot job queued");
    let mut updates = std::pin::pin!(jobs.watch(&started.id)?);
    let mut last = started;
    while let Some(job) = updates.next().await {
        last = job;
    }
    // The job's notices are posted when its task ends, just after its state does.
    jobs.drain(config.common.shutdown_grace()).await;
    match last.state {
        JobState::Succeeded if last.gate.as_ref().is_some_and(|gate| gate.stage == RunStage::Rejected) => {
            Ok(OnceOutcome::Rejected(last))
        }
        JobState::Succeeded => Ok(OnceOutcome::Trained(last)),
        state => {
            let reason = match (&last.error, &last.cancelled) {
                (Some(error), _) => error.clone(),
                (None, Some(cancelled)) => format!("by {}: {}", cancelled.by, cancelled.reason),
                (None, None) => "it stopped before it ended".to_owned(),
            };
            Err(OnceError::Job { job_id: last.id, state: state.as_str(), reason })
        }
    }
}

async fn cycle(config: &Config, jobs: &Jobs, cycles: &Cycles) -> Result<OnceOutcome, OnceError> {
    let record = match cycles.begin(config.model_ver, CYCLE_BY).await? {
        Start::Started(record) => record,
        Start::AlreadyRunning(running) => {
            return Err(OnceError::CycleBusy { model_ver: config.model_ver.to_string(), running: running.cycle_id });
        }
    };
    tracing::info!(cycle_id = %record.cycle_id, "one-shot cycle started");
    // The cycle's task ends after its record, its lease and its notice.
    cycles.drain(std::time::Duration::MAX).await;
    jobs.drain(config.common.shutdown_grace()).await;
    let record = cycles.get(config.model_ver, &record.cycle_id).await?;
    match record.state {
        CycleState::Succeeded => Ok(OnceOutcome::Cycled(Box::new(record))),
        state => Err(OnceError::Cycle {
            reason: record.error.clone().unwrap_or_else(|| record.decision.clone()),
            cycle_id: record.cycle_id,
            state: state.as_str(),
            step: record.step.name().to_owned(),
        }),
    }
}
