//! Wire types to domain types and back.

use crs_domain::evaluation::Evaluation;
use crs_domain::metrics::Metrics;
use crs_domain::models::ModelVer;
use crs_domain::models::imported::Framework;
use crs_platform::lifecycle::ingest::LedgerEntry;
use crs_platform::lifecycle::inputs::InputKeys;
use crs_platform::registry::catalog::{RunEntry, RunList};
use crs_platform::registry::runs::ImportRecord;
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout;
use crs_proto::{timestamp, train as proto};

use crate::cycles::{CycleRecord, CycleState};
use crate::jobs::{ImportFile, Job, JobPhase, JobRequest, JobState};
use crate::status::ApiError;

/// Checks a StartTraining request for `model_ver`, the version it names
/// (resolved by the caller); empty fields take the server's defaults.
pub fn job_request(request: proto::StartTrainingRequest, model_ver: ModelVer) -> Result<JobRequest, ApiError> {
    if model_ver.is_imported() {
        return Err(ApiError::NotTrained(crs_domain::models::imported::not_trained(model_ver.name())));
    }
    let train = match request.train_key.as_str() {
        "" => layout::TRAIN_KEY,
        key => key,
    };
    let keys = InputKeys::new(
        model_ver,
        BucketKey::parse(train)?,
        request.eval_key.as_deref().map(BucketKey::parse).transpose()?,
        request.config_key.as_deref().map(BucketKey::parse).transpose()?,
    );
    let by = if request.draft { "crctl train --draft" } else { "crctl train" }.to_owned();
    Ok(JobRequest {
        model_ver,
        keys,
        labels: request.labels.into_iter().collect(),
        draft: request.draft,
        by,
        import: None,
    })
}

/// Checks an ImportModel header for `model_ver` (resolved by the caller) and
/// the file it streamed: the file is converted here, so that a model the
/// platform cannot serve is refused before anything is queued or written.
pub fn import_request(
    header: proto::ImportModelHeader,
    model_ver: ModelVer,
    framework: Framework,
    bytes: bytes::Bytes,
) -> Result<JobRequest, ApiError> {
    let conversion = crs_domain::models::imported::import(framework, &bytes)?;
    let source = &conversion.model.data().source;
    let record = ImportRecord {
        framework: framework.to_string(),
        file: framework.file_name(source.encoding == "ubjson").to_owned(),
        sha256: crs_domain::models::sha256_hex(&bytes),
        size_bytes: bytes.len() as u64,
    };
    let eval = BucketKey::parse(header.eval_key.as_deref().unwrap_or(layout::EVAL_KEY))?;
    // The pipeline's training data fits the baselines the import is compared with.
    let mut keys = InputKeys::new(model_ver, BucketKey::parse(layout::TRAIN_KEY)?, Some(eval), None);
    keys.config = layout::declaration_key_of(model_ver.name())?;
    let by = if header.draft { "crctl import --draft" } else { "crctl import" }.to_owned();
    Ok(JobRequest {
        model_ver,
        keys,
        labels: header.labels.into_iter().collect(),
        draft: header.draft,
        by,
        import: Some(ImportFile { framework, bytes, record }),
    })
}

/// A version's runs with their stages and aliases.
pub fn version_runs(list: &RunList) -> proto::ModelVersionRuns {
    proto::ModelVersionRuns {
        model_ver: list.model_ver.to_string(),
        latest_run_id: list.latest.as_ref().map(ToString::to_string).unwrap_or_default(),
        production_run_id: list.production.as_ref().map(ToString::to_string).unwrap_or_default(),
        runs: list.runs.iter().map(model_run).collect(),
    }
}

pub fn ledger_entry(entry: &LedgerEntry) -> proto::LedgerEntry {
    proto::LedgerEntry {
        seq: entry.seq,
        key: entry.key.clone(),
        size: entry.size,
        sha256: entry.sha256.clone(),
        etag: entry.etag.clone().unwrap_or_default(),
        rows_read: entry.rows.read,
        rows_duplicate: entry.rows.duplicate,
        rows_conflict: entry.rows.conflict,
        rows_used: entry.rows.used,
        weeks: entry.weeks.clone(),
        at: Some(timestamp(entry.at)),
        outcome: serde_json::to_value(entry.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        message: entry.message.clone().unwrap_or_default(),
    }
}

pub fn cycle(record: &CycleRecord) -> proto::Cycle {
    let state = match record.state {
        CycleState::Running => proto::CycleState::Running,
        CycleState::Succeeded => proto::CycleState::Succeeded,
        CycleState::Failed => proto::CycleState::Failed,
        CycleState::Cancelled => proto::CycleState::Cancelled,
    };
    proto::Cycle {
        cycle_id: record.cycle_id.to_string(),
        model_ver: record.model_ver.to_string(),
        state: state.into(),
        step: record.step.name().to_owned(),
        started_at: Some(timestamp(record.started_at)),
        finished_at: record.finished_at.map(timestamp),
        decision: record.decision.clone(),
        run_id: record.run_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        production_run_id: record.production_run_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        error: record.error.clone().unwrap_or_default(),
        record_key: record.key().to_string(),
        report_key: record.report_key.clone().unwrap_or_default(),
        cancelled_by: record.cancelled.as_ref().map(|c| c.by.clone()).unwrap_or_default(),
        cancel_reason: record.cancelled.as_ref().map(|c| c.reason.clone()).unwrap_or_default(),
    }
}

pub fn job(job: &Job) -> proto::TrainingJob {
    let state = match job.state {
        JobState::Queued => proto::JobState::Queued,
        JobState::Running => proto::JobState::Running,
        JobState::Succeeded => proto::JobState::Succeeded,
        JobState::Failed => proto::JobState::Failed,
        JobState::Cancelled => proto::JobState::Cancelled,
    };
    let stage = match job.phase {
        None => proto::Stage::Unspecified,
        Some(JobPhase::LoadingData) => proto::Stage::LoadingData,
        Some(JobPhase::Preparing) => proto::Stage::Preparing,
        Some(JobPhase::Training) => proto::Stage::Training,
        Some(JobPhase::Evaluating) => proto::Stage::Evaluating,
        Some(JobPhase::Saving) => proto::Stage::Saving,
    };
    proto::TrainingJob {
        job_id: job.id.clone(),
        model_ver: job.model_ver.to_string(),
        state: state.into(),
        stage: stage.into(),
        progress: job.progress,
        train_key: job.keys.train.to_string(),
        eval_key: job.keys.eval.as_ref().map(ToString::to_string),
        config_key: job.keys.config.to_string(),
        labels: job.labels.clone().into_iter().collect(),
        created_at: Some(timestamp(job.created_at)),
        started_at: job.started_at.map(timestamp),
        finished_at: job.finished_at.map(timestamp),
        run_id: job.run_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        error: job.error.clone().unwrap_or_default(),
        evaluation: job.evaluation.as_ref().map(evaluation),
        search: job.search.map(|s| proto::SearchProgress {
            point: s.point as u32,
            points: s.points as u32,
            folds_done: s.folds_done as u32,
            folds: s.folds as u32,
            best_point: s.best_point as u32,
            best_logloss: s.best_logloss,
            best_trees: s.best_trees as u32,
            refitting: s.refitting,
        }),
        cancelled_by: job.cancelled.as_ref().map(|c| c.by.clone()).unwrap_or_default(),
        imported: job.imported.as_ref().map(|i| proto::ImportedFile {
            framework: i.framework.clone(),
            sha256: i.sha256.clone(),
            size_bytes: i.size_bytes,
        }),
        cancel_reason: job.cancelled.as_ref().map(|c| c.reason.clone()).unwrap_or_default(),
    }
}

pub fn evaluation(e: &Evaluation) -> proto::Evaluation {
    proto::Evaluation {
        rows: e.rows,
        // Clicks are counts; the domain sums them as floats.
        clicks: e.clicks.round() as u64,
        model: Some(metrics(&e.model)),
        zero: Some(metrics(&e.zero)),
        global: Some(metrics(&e.global)),
        device: Some(metrics(&e.device)),
    }
}

fn metrics(m: &Metrics) -> proto::Metrics {
    proto::Metrics { wmae: m.wmae, wmse: m.wmse, logloss: m.logloss, mae: m.mae }
}

fn model_run(entry: &RunEntry) -> proto::ModelRun {
    let run = &entry.metadata;
    let event = entry.stage_event.as_ref();
    proto::ModelRun {
        stage: entry.stage.to_string(),
        aliases: entry.aliases.iter().map(|a| (*a).to_owned()).collect(),
        trained_at: Some(timestamp(run.finished_at)),
        stage_by: event.map(|e| e.by.clone()).unwrap_or_default(),
        stage_reason: event.map(|e| e.reason.clone()).unwrap_or_default(),
        stage_at: event.map(|e| timestamp(e.at)),
        model_ver: run.model_ver.to_string(),
        run_id: run.run_id.to_string(),
        job_id: run.job_id.clone(),
        created_at: Some(timestamp(run.created_at)),
        train: Some(evaluation(&run.metrics.train)),
        eval: Some(evaluation(&run.metrics.eval)),
        artifact_sha256: run.artifact.sha256.clone(),
        labels: run.labels.clone().into_iter().collect(),
    }
}
