//! One job from the queue to its end: wait for a slot, load and fit
//! (`training.rs`), write the run and move LATEST, gate it, and record how it
//! ended. [`JobRunner`] is what every job of the process shares, with all of
//! its work in this file.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::Utc;
use crs_platform::failpoint::FailStep;
use crs_platform::notify::webhook::Notifier;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::events::RunStage;
use crs_platform::registry::runs::RunMetadata;
use crs_platform::storage::layout::RunId;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::log::JobLog;
use super::metadata::run_metadata;
use super::training::{Trained, train};
use super::{Job, JobError, JobPhase, JobState, notices};
use crate::gate::{GateOutcome, gate_run};
use crate::metrics::TrainMetrics;
use crate::reference;
use crate::reports;
use crate::status::ApiError;

/// What the jobs of this process share, and the running of each.
#[derive(Debug)]
pub(super) struct JobRunner {
    pub(super) catalog: Catalog,
    notifier: Notifier,
    metrics: Arc<TrainMetrics>,
    /// One permit per job allowed to run; the rest wait here, first come first served.
    slots: Arc<Semaphore>,
    registry: Mutex<Registry>,
    pub(super) next_seq: AtomicU64,
    pub(super) tasks: TaskTracker,
    /// Shutdown has begun: no new jobs, and queued ones never start.
    pub(super) draining: CancellationToken,
    /// The grace period is over: running jobs stop where they are.
    pub(super) cut_off: CancellationToken,
    /// This process, in the jobs' records and ids (unique across replicas and restarts).
    pub(super) replica: RunId,
}

/// The logs of this process's jobs.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// In creation order.
    pub(super) logs: Vec<JobLog>,
    pub(super) by_id: HashMap<String, usize>,
}

impl JobRunner {
    pub(super) fn new(
        catalog: Catalog,
        notifier: Notifier,
        max_concurrent_jobs: usize,
        metrics: Arc<TrainMetrics>,
    ) -> Self {
        JobRunner {
            catalog,
            notifier,
            metrics,
            slots: Arc::new(Semaphore::new(max_concurrent_jobs.max(1))),
            registry: Mutex::default(),
            next_seq: AtomicU64::new(1),
            tasks: TaskTracker::new(),
            draining: CancellationToken::new(),
            cut_off: CancellationToken::new(),
            replica: RunId::generate(Utc::now()),
        }
    }

    pub(super) fn registry(&self) -> MutexGuard<'_, Registry> {
        // The registry is only ever pushed to, so a panic elsewhere cannot leave it half-updated.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn log(&self, job_id: &str) -> Result<JobLog, ApiError> {
        let registry = self.registry();
        let index = registry.by_id.get(job_id).ok_or_else(|| ApiError::UnknownJob(job_id.to_owned()))?;
        Ok(registry.logs[*index].clone())
    }

    /// Runs one job to its end, whatever happens, and records how it ended.
    /// `file` is an import job's model file.
    pub(super) async fn run(self: Arc<Self>, log: JobLog, file: Option<bytes::Bytes>) {
        let slot = tokio::select! {
            biased;
            () = self.draining.cancelled() => Err(JobError::NotStarted),
            () = log.cancel_requested() => Err(log.cancelled().expect("cancellation was requested")),
            slot = self.slots.clone().acquire_owned() => slot.map_err(|_| JobError::NotStarted),
        };
        let _slot = match slot {
            Ok(slot) => slot,
            Err(e) => return self.fail(&log, e),
        };

        let started_at = Utc::now();
        let run_id = RunId::generate(started_at);
        log.update(|job| {
            job.state = JobState::Running;
            job.started_at = Some(started_at);
            job.run_id = Some(run_id.clone());
            job.phase = Some(JobPhase::LoadingData);
            job.progress = JobPhase::LoadingData.progress();
        });
        let job = log.current();
        self.metrics.job_started();
        tracing::info!(job_id = %job.id, run_id = %run_id, "job started");
        self.notifier.notify(notices::started(&job, &run_id));

        // Loading and training can stop anywhere: nothing is written yet.
        let trained = tokio::select! {
            biased;
            () = self.cut_off.cancelled() => Err(JobError::CutOff),
            () = log.cancel_requested() => Err(log.cancelled().expect("cancellation was requested")),
            trained = train(self.catalog.bucket(), &log, file.clone()) => trained,
        };
        let saved = match trained {
            Ok(trained) => self.save(&log, &job, run_id, trained, file).await,
            Err(e) => Err(e),
        };
        match saved {
            Ok((metadata, gate)) => self.succeed(&log, metadata, gate),
            Err(e) => self.fail(&log, e),
        }
    }

    /// Writes the run, moves LATEST to it, then (unless it is a draft) gates it.
    /// Returns the run's record and what the gate did. Once started, a save is
    /// not interrupted: a run is either complete and kept, or removed.
    async fn save(
        &self,
        log: &JobLog,
        job: &Job,
        run_id: RunId,
        trained: Trained,
        file: Option<bytes::Bytes>,
    ) -> Result<(RunMetadata, Option<GateOutcome>), JobError> {
        if self.cut_off.is_cancelled() {
            return Err(JobError::CutOff);
        }
        if let Some(cancelled) = log.cancelled() {
            return Err(cancelled);
        }
        log.enter(JobPhase::Saving);
        let started = Instant::now();
        let mut metadata = run_metadata(job, run_id, &trained);
        let model = &trained.run.model;
        let eval = &trained.inputs.data.eval;
        let store = self.catalog.store();
        match file {
            Some(bytes) => store.save_imported_run(model, &mut metadata, bytes).await,
            None => store.save_run(model, &mut metadata).await,
        }
        .map_err(JobError::Save)?;
        if self.cut_off.is_cancelled() {
            self.discard(&metadata).await;
            return Err(JobError::CutOff);
        }
        // The last point where a cancel keeps nothing: LATEST has not moved.
        if let Some(cancelled) = log.cancelled() {
            self.discard(&metadata).await;
            return Err(cancelled);
        }
        match store.advance_latest(metadata.model_ver, &metadata.run_id).await {
            Ok(moved) => {
                tracing::info!(
                    job_id = %job.id,
                    run_id = %metadata.run_id,
                    latest_moved = moved,
                    seconds = started.elapsed().as_secs_f64(),
                    "run saved"
                );
            }
            Err(e) => {
                self.discard(&metadata).await;
                return Err(JobError::AdvanceLatest(e));
            }
        }
        self.catalog.fail_point().check(FailStep::JobSaved);
        reference::score_new_run(&self.catalog, metadata.model_ver, &metadata.run_id).await;
        if job.draft {
            reports::run(&self.catalog, &metadata, model, eval, RunStage::Draft).await;
            return Ok((metadata, None));
        }
        // The run is complete and kept whatever the gate says; a gate that cannot
        // decide leaves it a candidate, to be promoted by hand or by a later cycle.
        let outcome = match gate_run(&self.catalog, &metadata, eval, &job.by).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(job_id = %job.id, run_id = %metadata.run_id, error = %e, "the gate could not decide");
                GateOutcome { stage: RunStage::Candidate, reason: format!("the gate could not decide: {e}") }
            }
        };
        reports::run(&self.catalog, &metadata, model, eval, outcome.stage).await;
        Ok((metadata, Some(outcome)))
    }

    /// Removes a written run of a job that then failed: failed jobs leave nothing behind.
    async fn discard(&self, metadata: &RunMetadata) {
        if let Err(e) = self.catalog.store().delete_run(metadata.model_ver, &metadata.run_id).await {
            tracing::error!(run_id = %metadata.run_id, error = %e, "could not remove the run of a failed job");
        }
    }

    fn succeed(&self, log: &JobLog, metadata: RunMetadata, gate: Option<GateOutcome>) {
        let eval = metadata.metrics.eval.clone();
        log.update(|job| {
            job.state = JobState::Succeeded;
            job.progress = 1.0;
            job.finished_at = Some(metadata.finished_at);
            job.evaluation = Some(eval.clone());
            job.gate = gate;
        });
        let job = log.current();
        self.metrics.job_ended(job.model_ver, true, true, &metadata.stage_seconds);
        tracing::info!(job_id = %job.id, run_id = %metadata.run_id, eval_wmae = eval.model.wmae, "job succeeded");
        self.notifier.notify(notices::succeeded(&job, &metadata));
    }

    fn fail(&self, log: &JobLog, error: JobError) {
        let reason = error.to_string();
        let cancelled = match error {
            JobError::Cancelled(cancellation) => Some(cancellation),
            _ => None,
        };
        log.update(|job| {
            job.finished_at = Some(Utc::now());
            match &cancelled {
                Some(cancellation) => {
                    job.state = JobState::Cancelled;
                    job.cancelled = Some(cancellation.clone());
                }
                None => {
                    job.state = JobState::Failed;
                    job.error = Some(reason.clone());
                }
            }
        });
        let job = log.current();
        self.metrics.job_ended(job.model_ver, false, job.started_at.is_some(), &[]);
        if cancelled.is_some() {
            tracing::info!(job_id = %job.id, %reason, "job cancelled");
            self.notifier.notify(notices::cancelled(&job, &reason));
        } else {
            tracing::warn!(job_id = %job.id, error = %reason, "job failed");
            self.notifier.notify(notices::failed(&job, &reason));
        }
    }
}
