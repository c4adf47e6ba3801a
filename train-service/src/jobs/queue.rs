//! The jobs of this process: the registry every RPC reads, and the queue in
//! front of the CPU (`MAX_CONCURRENT_JOBS` run, the rest wait their turn).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crs_domain::models::ModelVer;
use crs_platform::notify::webhook::Notifier;
use crs_platform::registry::catalog::Catalog;
use crs_platform::storage::bucket::StorageError;
use futures::{Stream, StreamExt};

use super::log::JobLog;
use super::record::{keep_recorded, recorded, recorded_job, sweep};
use super::runner::JobRunner;
use super::{Cancellation, Job, JobRequest, JobState};
use crate::metrics::TrainMetrics;
use crate::status::ApiError;

/// How long jobs cut off by shutdown get to notice it. Only a job in the middle
/// of writing its run needs it: saving is never interrupted halfway.
const CUT_OFF_WAIT: Duration = Duration::from_secs(10);

/// How long a cancel waits for its job to stop. A job stops at once unless it
/// is writing its run, which is never interrupted halfway.
pub const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// The jobs of this process. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct Jobs {
    runner: Arc<JobRunner>,
}

impl Jobs {
    pub fn new(catalog: Catalog, notifier: Notifier, max_concurrent_jobs: usize, metrics: Arc<TrainMetrics>) -> Self {
        Jobs { runner: Arc::new(JobRunner::new(catalog, notifier, max_concurrent_jobs, metrics)) }
    }

    /// Checks that the inputs exist, queues the job and returns it in state
    /// QUEUED. Bad requests are refused here rather than failing later as jobs.
    pub async fn start(&self, request: JobRequest) -> Result<Job, ApiError> {
        let keys = &request.keys;
        let mut required = vec![("training data", &keys.train)];
        if let Some(key) = &keys.eval {
            required.push(("evaluation data", key));
        }
        if keys.config_required {
            required.push(("config", &keys.config));
        }
        // Ingested rows are not one object; their fetch says when there are none.
        if keys.weeks.is_some() {
            required.remove(0);
        }
        for (what, key) in required {
            if !self.runner.catalog.bucket().exists(key).await? {
                return Err(ApiError::MissingObject { what, key: key.to_string() });
            }
        }

        let now = Utc::now();
        let seq = self.runner.next_seq.fetch_add(1, Ordering::Relaxed);
        // The replica's random tag keeps ids apart across processes on one bucket.
        let tag = self.runner.replica.as_str().rsplit('-').next().unwrap_or_default();
        let job = Job {
            id: format!("job-{}-{tag}-{seq}", now.format("%Y%m%dT%H%M%S%3fZ")),
            model_ver: request.model_ver,
            state: JobState::Queued,
            phase: None,
            progress: 0.0,
            keys: request.keys,
            labels: request.labels,
            draft: request.draft,
            by: request.by,
            created_at: now,
            started_at: None,
            finished_at: None,
            run_id: None,
            error: None,
            evaluation: None,
            gate: None,
            search: None,
            cancelled: None,
            imported: request.import.as_ref().map(|file| file.record.clone()),
        };
        let file = request.import.map(|file| file.bytes);
        let log = JobLog::new(job.clone());
        {
            // Under the registry lock, so that shutdown sees every job it has to wait for.
            let mut registry = self.runner.registry();
            if self.runner.draining.is_cancelled() {
                return Err(ApiError::ShuttingDown);
            }
            let index = registry.logs.len();
            registry.by_id.insert(job.id.clone(), index);
            registry.logs.push(log.clone());
            // The job outlives the request: it keeps the request's id for its log
            // lines and notices, in a span of its own with the job id.
            let request_id = crs_platform::service::request_id::current().unwrap_or_default();
            let span = tracing::info_span!(parent: None, "job", job_id = %job.id, request_id = %request_id);
            let run = crs_platform::service::request_id::scope(request_id, self.runner.clone().run(log.clone(), file));
            self.runner.tasks.spawn(tracing::Instrument::instrument(run, span));
            let bucket = self.runner.catalog.bucket().clone();
            self.runner.tasks.spawn(keep_recorded(bucket, self.runner.replica.to_string(), log));
        }
        tracing::info!(job_id = %job.id, model_ver = %job.model_ver, train_key = %job.keys.train, "job queued");
        Ok(job)
    }

    /// A job of this process, or one recorded in the bucket by another (or an earlier one).
    pub async fn get(&self, job_id: &str) -> Result<Job, ApiError> {
        match self.runner.log(job_id) {
            Ok(log) => Ok(log.current()),
            Err(unknown) => {
                let bucket = self.runner.catalog.bucket();
                recorded_job(bucket, job_id, Utc::now()).await.ok_or(unknown)
            }
        }
    }

    /// Every job of this process and every job recorded in the bucket, newest first.
    pub async fn list(&self) -> Result<Vec<Job>, ApiError> {
        let mut jobs: Vec<Job> = self.runner.registry().logs.iter().map(JobLog::current).collect();
        let recorded = recorded(self.runner.catalog.bucket(), Utc::now()).await?;
        let local: HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
        jobs.extend(recorded.into_iter().filter(|j| !local.contains(&j.id)));
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        Ok(jobs)
    }

    /// The job's current state, then every change until it ends.
    pub fn watch(&self, job_id: &str) -> Result<impl Stream<Item = Job> + Send + 'static, ApiError> {
        self.runner.log(job_id).map(|log| log.updates())
    }

    /// Cancels a queued or running job and returns it once it has stopped (or
    /// after [`CANCEL_WAIT`], as it is then). The blocking fit of a job cut
    /// off while training runs to its end on its own thread, but nothing of
    /// the run is written.
    pub async fn cancel(&self, job_id: &str, cancellation: Cancellation) -> Result<Job, ApiError> {
        let log = match self.runner.log(job_id) {
            Ok(log) => log,
            Err(unknown) => {
                let bucket = self.runner.catalog.bucket();
                return match recorded_job(bucket, job_id, Utc::now()).await {
                    Some(job) if !job.state.is_terminal() => {
                        Err(ApiError::Precondition(format!("job {job_id} runs in another process: cancel it there")))
                    }
                    Some(job) => {
                        Err(ApiError::Precondition(format!("job {job_id} has already ended: {}", job.state.as_str())))
                    }
                    None => Err(unknown),
                };
            }
        };
        let job = log.current();
        if job.state.is_terminal() {
            return Err(ApiError::Precondition(format!("job {job_id} has already ended: {}", job.state.as_str())));
        }
        tracing::info!(%job_id, by = %cancellation.by, reason = %cancellation.reason, "cancelling a job");
        log.request_cancel(cancellation);
        let updates = log.updates();
        let mut updates = std::pin::pin!(updates);
        let _ = tokio::time::timeout(CANCEL_WAIT, async { while updates.next().await.is_some() {} }).await;
        Ok(log.current())
    }

    /// Deletes the records of `model_ver`'s jobs that ended before `cutoff`
    /// (retention); returns how many.
    pub async fn sweep(&self, model_ver: ModelVer, cutoff: DateTime<Utc>) -> Result<usize, StorageError> {
        sweep(self.runner.catalog.bucket(), model_ver, cutoff, Utc::now()).await
    }

    /// Refuses new jobs from now on; queued jobs fail instead of starting.
    pub fn stop_accepting(&self) {
        // Under the registry lock, so that no job is added after drain starts waiting.
        let _registry = self.runner.registry();
        self.runner.draining.cancel();
    }

    /// Stops accepting jobs and waits up to `grace` for the running ones; those
    /// still running then are cut off and fail.
    pub async fn drain(&self, grace: Duration) {
        self.stop_accepting();
        self.runner.tasks.close();
        if tokio::time::timeout(grace, self.runner.tasks.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(grace_secs = grace.as_secs_f64(), "grace period over: cutting off running jobs");
        self.runner.cut_off.cancel();
        if tokio::time::timeout(CUT_OFF_WAIT, self.runner.tasks.wait()).await.is_err() {
            tracing::error!("jobs still saving after being cut off; leaving them");
        }
    }
}
