//! Writing a job's run and moving LATEST to it. Once started, a save is not
//! interrupted: a run is either complete and kept, or removed.

use std::time::Instant;

use chrono::Utc;
use crs_platform::registry::events::Stage;
use crs_platform::failpoint::JOB_SAVED;
use crs_platform::storage::layout::RunId;
use crs_platform::registry::runs::{ArtifactRecord, FeatureImportance, RunMetadata, RunMetrics, ServiceRecord, StageTiming};

use super::log::JobLog;
use super::queue::Inner;
use super::stages::Trained;
use super::{Job, JobError, JobStage, SERVICE_NAME};
use crate::gate::gate_run;
use crate::reports;

impl Inner {
    /// Writes the run, moves LATEST to it, then (unless it is a draft) gates it.
    /// Returns the run's record and what the gate did.
    pub(super) async fn save(
        &self,
        log: &JobLog,
        job: &Job,
        run_id: RunId,
        trained: Trained,
    ) -> Result<(RunMetadata, Option<String>), JobError> {
        if self.cut_off.is_cancelled() {
            return Err(JobError::CutOff);
        }
        if let Some(cancelled) = log.cancelled() {
            return Err(cancelled);
        }
        log.enter(JobStage::Saving);
        let started = Instant::now();
        let Trained { params, config, inputs, run, loading_seconds } = trained;
        let eval = inputs.data.eval;
        let mut stage_seconds =
            vec![StageTiming { stage: JobStage::LoadingData.name().to_owned(), seconds: loading_seconds }];
        stage_seconds.extend(
            run.seconds
                .iter()
                .map(|&(stage, seconds)| StageTiming { stage: JobStage::from(stage).name().to_owned(), seconds }),
        );
        let mut metadata = RunMetadata {
            model_ver: job.model_ver,
            run_id,
            job_id: job.id.clone(),
            state: "succeeded".to_owned(),
            created_at: job.created_at,
            started_at: job.started_at.unwrap_or(job.created_at),
            finished_at: Utc::now(),
            labels: job.labels.clone(),
            hyperparameters: params,
            config,
            eval_source: inputs.data.eval_source.as_str().to_owned(),
            train_data: inputs.train_record,
            eval_data: inputs.eval_record,
            profile: inputs.data.profile,
            features: run.model.features.feature_names(),
            metrics: RunMetrics { train: run.train, eval: run.eval },
            stage_seconds,
            // save_run fills this in from the bytes it writes.
            artifact: ArtifactRecord { file: String::new(), sha256: String::new(), size_bytes: 0, format_version: 0 },
            service: ServiceRecord { name: SERVICE_NAME.to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() },
            stage: Some(if job.draft { Stage::Draft } else { Stage::Candidate }),
            weeks: inputs.weeks,
            feature_importance: run
                .model
                .importance()
                .into_iter()
                .map(|(feature, importance)| FeatureImportance { feature, importance })
                .collect(),
            fit_report: run.report,
        };
        let store = self.catalog.store();
        store.save_run(&run.model, &mut metadata).await.map_err(JobError::Save)?;
        if self.cut_off.is_cancelled() {
            self.discard(&metadata).await;
            return Err(JobError::CutOff);
        }
        // The last point where a cancel keeps nothing: LATEST has not moved.
        if let Some(cancelled) = log.cancelled() {
            self.discard(&metadata).await;
            return Err(cancelled);
        }
        match store.promote(metadata.model_ver, &metadata.run_id).await {
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
                return Err(JobError::Promote(e));
            }
        }
        store.fail_point().check(JOB_SAVED);
        if job.draft {
            reports::run(&self.catalog, &metadata, &run.model, &eval, "draft").await;
            return Ok((metadata, None));
        }
        // The run is complete and kept whatever the gate says; a gate that cannot
        // decide leaves it a candidate, to be promoted by hand or by a later cycle.
        let (stage, gate) = match gate_run(&self.catalog, &metadata, &eval, &job.by).await {
            Ok(gated) => (gated.stage.to_string(), format!("{}: {}", gated.stage, gated.decision.reason)),
            Err(e) => {
                tracing::error!(job_id = %job.id, run_id = %metadata.run_id, error = %e, "the gate could not decide");
                ("candidate".to_owned(), format!("candidate: the gate could not decide: {e}"))
            }
        };
        reports::run(&self.catalog, &metadata, &run.model, &eval, &stage).await;
        Ok((metadata, Some(gate)))
    }

    /// Removes a written run of a job that then failed: failed jobs leave nothing behind.
    async fn discard(&self, metadata: &RunMetadata) {
        if let Err(e) = self.catalog.store().delete_run(metadata.model_ver, &metadata.run_id).await {
            tracing::error!(run_id = %metadata.run_id, error = %e, "could not remove the run of a failed job");
        }
    }
}
