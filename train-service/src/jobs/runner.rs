//! One job from the queue to its end: wait for a slot, load and check the
//! inputs, train and evaluate, then save; record how it ended.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use crs_domain::evaluation::{self, TrainingRun, train_and_evaluate_with_progress};
use crs_domain::models::Progress;
use crs_platform::lifecycle::inputs::{Inputs, PreparedInputs};
use crs_platform::storage::layout::RunId;
use crs_platform::registry::runs::{DataRecord, RunMetadata};

use super::log::JobLog;
use super::queue::Inner;
use super::{JobError, JobStage, JobState, notices};

/// A job's model and everything its metadata needs, between training and saving.
pub(super) struct Trained {
    pub(super) params: serde_json::Value,
    pub(super) config: DataRecord,
    pub(super) inputs: PreparedInputs,
    pub(super) run: TrainingRun,
    pub(super) loading_seconds: f64,
}

impl Inner {
    /// Runs one job to its end, whatever happens, and records how it ended.
    pub(super) async fn run(self: Arc<Self>, log: JobLog) {
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
            job.stage = Some(JobStage::LoadingData);
            job.progress = JobStage::LoadingData.progress();
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
            trained = self.train(&log) => trained,
        };
        let saved = match trained {
            Ok(trained) => self.save(&log, &job, run_id, trained).await,
            Err(e) => Err(e),
        };
        match saved {
            Ok((metadata, gate)) => self.succeed(&log, metadata, gate),
            Err(e) => self.fail(&log, e),
        }
    }

    async fn train(&self, log: &JobLog) -> Result<Trained, JobError> {
        let started = Instant::now();
        let job = log.current();
        let model_ver = job.model_ver;
        let inputs = Inputs::fetch(self.catalog.store().bucket(), job.keys).await?;
        let (params, config) = inputs.params(model_ver)?;
        let stages = log.clone();
        let fit_params = params.clone();
        // Parsing, validating and fitting are CPU work: keep them off the async workers.
        let (inputs, run, loading_seconds) = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
            let prepared = inputs.prepare()?;
            let loading_seconds = started.elapsed().as_secs_f64();
            let data = &prepared.data;
            let on_stage = |stage: evaluation::Stage| stages.enter(stage.into());
            let mut on_progress = |event: Progress| {
                stages.update(|job| job.search = Some(job.search.unwrap_or_default().after(&event)));
            };
            let run = train_and_evaluate_with_progress(
                model_ver,
                &fit_params,
                &data.train,
                &data.eval,
                on_stage,
                &mut on_progress,
            )?;
            Ok((prepared, run, loading_seconds))
        })
        .await
        .map_err(|e| JobError::Crashed(e.to_string()))??;
        Ok(Trained { params, config, inputs, run, loading_seconds })
    }

    fn succeed(&self, log: &JobLog, metadata: RunMetadata, gate: Option<String>) {
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

    pub(super) fn fail(&self, log: &JobLog, error: JobError) {
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
