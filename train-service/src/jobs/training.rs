//! A job's inputs fetched and checked and its model fitted: the part of a job
//! that may stop anywhere, since nothing is written yet.

use std::time::Instant;

use bytes::Bytes;
use crs_domain::evaluation::{TrainingPhase, TrainingRun, import_and_evaluate, train_and_evaluate_with_progress};
use crs_domain::models::Progress;
use crs_domain::models::imported::Framework;
use crs_platform::lifecycle::inputs::{Inputs, PreparedInputs};
use crs_platform::registry::runs::DataRecord;
use crs_platform::storage::bucket::Bucket;

use super::JobError;
use super::log::JobLog;

/// A job's model and everything its metadata needs, between training and saving.
pub(super) struct Trained {
    pub(super) params: serde_json::Value,
    pub(super) config: DataRecord,
    pub(super) inputs: PreparedInputs,
    pub(super) run: TrainingRun,
    pub(super) loading_seconds: f64,
}

/// Fetches the inputs of `log`'s job from `bucket`, then validates them and
/// fits the model (or, for an import job, converts its model `file`),
/// entering each phase in `log` as it starts.
pub(super) async fn train(bucket: &Bucket, log: &JobLog, file: Option<Bytes>) -> Result<Trained, JobError> {
    let started = Instant::now();
    let job = log.current();
    let model_ver = job.model_ver;
    let inputs = Inputs::fetch(bucket, job.keys).await?;
    if let (Some(file), Some(record)) = (file, job.imported) {
        return import(inputs, log, file, &record.framework, started).await;
    }
    let (params, config) = inputs.params(model_ver)?;
    let phases = log.clone();
    let fit_params = params.clone();
    // Parsing, validating and fitting are CPU work: keep them off the async workers.
    let (inputs, run, loading_seconds) = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
        let prepared = inputs.prepare()?;
        let loading_seconds = started.elapsed().as_secs_f64();
        let data = &prepared.data;
        let on_phase = |phase: TrainingPhase| phases.enter(phase.into());
        let mut on_progress = |event: Progress| {
            phases.update(|job| job.search = Some(job.search.unwrap_or_default().after(&event)));
        };
        let run = train_and_evaluate_with_progress(
            model_ver,
            &fit_params,
            &data.train,
            &data.eval,
            on_phase,
            &mut on_progress,
        )?;
        Ok((prepared, run, loading_seconds))
    })
    .await
    .map_err(|e| JobError::Crashed(e.to_string()))??;
    Ok(Trained { params, config, inputs, run, loading_seconds })
}

/// An import job's model file converted and scored on the evaluation rows,
/// with the baselines fitted on the pipeline's training data. Its "config" is
/// the version's declaration, and its hyperparameters what the file said.
async fn import(
    inputs: Inputs,
    log: &JobLog,
    file: Bytes,
    framework: &str,
    started: Instant,
) -> Result<Trained, JobError> {
    let model_ver = log.current().model_ver;
    let framework: Framework =
        framework.parse().map_err(|e: String| JobError::Crashed(format!("the job's framework: {e}")))?;
    let config = match &inputs.config {
        Some(bytes) => DataRecord::of(&inputs.keys.config, bytes, None),
        None => DataRecord { key: inputs.keys.config.to_string(), sha256: None, size_bytes: None, rows: None },
    };
    let phases = log.clone();
    let (inputs, run, loading_seconds) = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
        let prepared = inputs.prepare()?;
        let loading_seconds = started.elapsed().as_secs_f64();
        let data = &prepared.data;
        let on_phase = |phase: TrainingPhase| phases.enter(phase.into());
        let run = import_and_evaluate(model_ver, framework, &file, &data.train, &data.eval, on_phase)?;
        Ok((prepared, run, loading_seconds))
    })
    .await
    .map_err(|e| JobError::Crashed(e.to_string()))??;
    let params = run.model.params.clone();
    Ok(Trained { params, config, inputs, run, loading_seconds })
}
