//! The webhook notices of a job: started, succeeded, failed.

use crs_platform::notify::webhook::{Notice, Outcome};
use crs_platform::registry::runs::RunMetadata;
use crs_platform::storage::layout::RunId;

use super::Job;

pub(super) fn started(job: &Job, run_id: &RunId) -> Notice {
    Notice::new(Outcome::Started, format!("Training job {} started: model {}, run {run_id}", job.id, job.model_ver))
        .field("Training data", &job.keys.train)
        .field(
            "Evaluation data",
            job.keys.eval.as_ref().map_or_else(|| "holdout of the training data".to_owned(), ToString::to_string),
        )
        .field("Config", &job.keys.config)
}

pub(super) fn succeeded(job: &Job, metadata: &RunMetadata) -> Notice {
    let eval = &metadata.metrics.eval;
    Notice::new(
        Outcome::Succeeded,
        format!("Training job {} succeeded: model {}, run {}", job.id, job.model_ver, metadata.run_id),
    )
    .field("Eval wMAE (model)", format!("{:.6}", eval.model.wmae))
    .field("Eval wMAE (device baseline)", format!("{:.6}", eval.device.wmae))
    .field("Eval log-loss (model)", format!("{:.6}", eval.model.logloss))
    .field("Run", &metadata.run_id)
    .field("Gate", job.gate.as_ref().map_or_else(|| "not gated: a draft".to_owned(), ToString::to_string))
}

pub(super) fn failed(job: &Job, reason: &str) -> Notice {
    Notice::new(Outcome::Failed, format!("Training job {} failed: {reason}", job.id))
        .field("Model", job.model_ver)
        .field("Training data", &job.keys.train)
}

pub(super) fn cancelled(job: &Job, reason: &str) -> Notice {
    Notice::new(Outcome::Failed, format!("Training job {} {reason}", job.id))
        .field("Model", job.model_ver)
        .field("Run", job.run_id.as_ref().map_or("none".to_owned(), ToString::to_string))
}
