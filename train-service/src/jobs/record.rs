//! Jobs in the bucket (`jobs/<job_id>.json`): the process running a job
//! writes its record on every change of state or phase, and every
//! [`HEARTBEAT`] while it runs, so that the list of jobs survives a restart and
//! is the same from every replica. The record of an unfinished job that
//! stopped being rewritten belongs to a process that died: it is shown failed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crs_domain::models::ModelVer;
use crs_platform::storage::bucket::{Bucket, StorageError};
use crs_platform::storage::layout;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::log::JobLog;
use super::{Job, JobPhase, JobState};

/// How often a running job's record is rewritten though nothing changed.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// An unfinished job's record not rewritten for this long (four heartbeats) is abandoned.
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::seconds(60);

#[derive(Debug, Serialize, Deserialize)]
struct JobRecord {
    /// The process running the job.
    replica: String,
    updated_at: DateTime<Utc>,
    job: Job,
}

/// Keeps the job's record up to date until the job ends; the last write is its end.
pub(super) async fn keep_recorded(bucket: Bucket, replica: String, log: JobLog) {
    let updates = log.updates();
    let mut updates = std::pin::pin!(updates);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<(JobState, Option<JobPhase>)> = None;
    loop {
        tokio::select! {
            update = updates.next() => {
                // Search progress changes neither; the heartbeat carries it.
                let Some(job) = update else { return };
                if written != Some((job.state, job.phase)) {
                    write(&bucket, &replica, &job).await;
                    written = Some((job.state, job.phase));
                }
            }
            _ = heartbeat.tick() => {
                let job = log.current();
                if !job.state.is_terminal() {
                    write(&bucket, &replica, &job).await;
                }
            }
        }
    }
}

/// Best effort: a failed write leaves the record as it was until the next one.
async fn write(bucket: &Bucket, replica: &str, job: &Job) {
    let key = match layout::job_record(&job.id) {
        Ok(key) => key,
        Err(e) => return tracing::error!(job_id = %job.id, error = %e, "a job id that is no key segment"),
    };
    let record = JobRecord { replica: replica.to_owned(), updated_at: Utc::now(), job: job.clone() };
    let bytes = serde_json::to_vec_pretty(&record).expect("job records are plain serde data");
    if let Err(e) = bucket.put(&key, bytes).await {
        tracing::warn!(job_id = %job.id, error = %e, "could not write the job's record");
    }
}

/// Every recorded job, with those of dead processes shown failed.
pub(super) async fn recorded(bucket: &Bucket, now: DateTime<Utc>) -> Result<Vec<Job>, StorageError> {
    let mut jobs = Vec::new();
    for key in bucket.list(&layout::jobs()).await? {
        let Some(bytes) = bucket.get_if_exists(&key).await? else { continue };
        match serde_json::from_slice::<JobRecord>(&bytes) {
            Ok(record) => jobs.push(shown(record, now)),
            Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable job record"),
        }
    }
    Ok(jobs)
}

/// One recorded job, if there is a record of it.
pub(super) async fn recorded_job(bucket: &Bucket, job_id: &str, now: DateTime<Utc>) -> Option<Job> {
    let key = layout::job_record(job_id).ok()?;
    let bytes = bucket.get_if_exists(&key).await.ok()??;
    serde_json::from_slice::<JobRecord>(&bytes).ok().map(|record| shown(record, now))
}

/// Deletes the records of `model_ver`'s jobs that ended (or were abandoned)
/// before `cutoff`; returns how many.
pub(super) async fn sweep(
    bucket: &Bucket,
    model_ver: ModelVer,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, StorageError> {
    let mut deleted = 0;
    for key in bucket.list(&layout::jobs()).await? {
        let Some(bytes) = bucket.get_if_exists(&key).await? else { continue };
        let Ok(record) = serde_json::from_slice::<JobRecord>(&bytes) else { continue };
        let job = shown(record, now);
        let ended = job.finished_at.unwrap_or(job.created_at);
        if job.model_ver == model_ver && job.state.is_terminal() && ended < cutoff {
            bucket.delete(&key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn shown(record: JobRecord, now: DateTime<Utc>) -> Job {
    let mut job = record.job;
    if !job.state.is_terminal() && now - record.updated_at > ABANDONED_AFTER {
        job.state = JobState::Failed;
        job.error = Some(format!(
            "abandoned: {} stopped updating it at {} (the process running it stopped)",
            record.replica, record.updated_at
        ));
    }
    job
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crs_platform::registry::events::RunStage;

    use super::*;
    use crate::gate::GateOutcome;

    /// `tests/fixtures/records/jobs/` holds records train-service wrote before
    /// jobs carried their gate outcome and phase as types: a cycle's two
    /// promoting jobs, a rejected one, a draft, a failed one, another rejected
    /// one and a cancelled one. Each must read, and write back byte for byte.
    #[test]
    fn records_written_before_the_types_read_and_write_back_unchanged() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records/jobs");
        let mut paths: Vec<_> =
            std::fs::read_dir(&dir).expect("the fixtures").map(|entry| entry.expect("an entry").path()).collect();
        paths.sort();
        let mut jobs = Vec::new();
        for path in paths {
            let bytes = std::fs::read(&path).expect("a fixture");
            let record: JobRecord =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let written = serde_json::to_vec_pretty(&record).expect("job records are plain serde data");
            assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&bytes), "{}", path.display());
            jobs.push(record.job);
        }

        let states: Vec<JobState> = jobs.iter().map(|job| job.state).collect();
        use JobState::{Cancelled, Failed, Succeeded};
        assert_eq!(states, [Succeeded, Succeeded, Succeeded, Succeeded, Failed, Succeeded, Cancelled]);
        let phases: Vec<Option<JobPhase>> = jobs.iter().map(|job| job.phase).collect();
        let (saving, loading) = (Some(JobPhase::Saving), Some(JobPhase::LoadingData));
        assert_eq!(phases, [saving, saving, saving, saving, loading, saving, loading]);
        let stages: Vec<Option<RunStage>> = jobs.iter().map(|job| job.gate.as_ref().map(|g| g.stage)).collect();
        let (production, rejected) = (Some(RunStage::Production), Some(RunStage::Rejected));
        assert_eq!(stages, [production, production, rejected, None, None, rejected, None]);
        let promoted: Vec<bool> = jobs.iter().map(|job| job.gate.as_ref().is_some_and(GateOutcome::promoted)).collect();
        assert_eq!(promoted, [true, true, false, false, false, false, false]);
        let first = jobs[0].gate.as_ref().expect("a gated job");
        assert_eq!(first.reason, "first production run: log-loss 0.21788, not worse than the baselines");
    }
}
