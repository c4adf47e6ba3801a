//! A job's run record (`metadata.json`), from the job and what it trained.

use chrono::Utc;
use crs_platform::registry::events::RunStage;
use crs_platform::registry::runs::{
    ArtifactRecord, FeatureImportance, RunMetadata, RunMetrics, ServiceRecord, StageTiming,
};
use crs_platform::storage::layout::RunId;

use super::training::Trained;
use super::{Job, JobPhase, SERVICE_NAME};

/// The metadata of `job`'s run `run_id`, finished now. The artifact record is
/// left empty: `save_run` fills it in from the bytes it writes.
pub(super) fn run_metadata(job: &Job, run_id: RunId, trained: &Trained) -> RunMetadata {
    let Trained { params, config, inputs, run, loading_seconds } = trained;
    let mut stage_seconds =
        vec![StageTiming { stage: JobPhase::LoadingData.name().to_owned(), seconds: *loading_seconds }];
    stage_seconds.extend(
        run.seconds
            .iter()
            .map(|&(phase, seconds)| StageTiming { stage: JobPhase::from(phase).name().to_owned(), seconds }),
    );
    RunMetadata {
        model_ver: job.model_ver,
        run_id,
        job_id: job.id.clone(),
        state: "succeeded".to_owned(),
        created_at: job.created_at,
        started_at: job.started_at.unwrap_or(job.created_at),
        finished_at: Utc::now(),
        labels: job.labels.clone(),
        hyperparameters: params.clone(),
        config: config.clone(),
        eval_source: inputs.data.eval_source.as_str().to_owned(),
        train_data: inputs.train_record.clone(),
        eval_data: inputs.eval_record.clone(),
        profile: inputs.data.profile.clone(),
        features: run.model.features.feature_names(),
        metrics: RunMetrics { train: run.train.clone(), eval: run.eval.clone() },
        stage_seconds,
        artifact: ArtifactRecord { file: String::new(), sha256: String::new(), size_bytes: 0, format_version: 0 },
        service: ServiceRecord { name: SERVICE_NAME.to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() },
        stage: Some(if job.draft { RunStage::Draft } else { RunStage::Candidate }),
        weeks: inputs.weeks.clone(),
        feature_importance: run
            .model
            .importance()
            .into_iter()
            .map(|(feature, importance)| FeatureImportance { feature, importance })
            .collect(),
        fit_report: run.report.clone(),
        imported: job.imported.clone(),
    }
}
