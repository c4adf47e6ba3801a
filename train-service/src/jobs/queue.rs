//! The jobs of this process: the registry every RPC reads, and the queue in
//! front of the CPU (`MAX_CONCURRENT_JOBS` run, the rest wait their turn).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crs_domain::models::ModelVer;
use crs_platform::storage::bucket::StorageError;
use crs_platform::registry::catalog::Catalog;
use crs_platform::storage::layout::RunId;
use crs_platform::notify::webhook::Notifier;
use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::log::JobLog;
use super::record::{keep_recorded, recorded, recorded_job, sweep};
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
    inner: Arc<Inner>,
}

/// What the running jobs share.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) catalog: Catalog,
    pub(super) notifier: Notifier,
    pub(super) metrics: Arc<TrainMetrics>,
    /// One permit per job allowed to run; the rest wait here, first come first served.
    pub(super) slots: Arc<Semaphore>,
    registry: Mutex<Registry>,
    next_seq: AtomicU64,
    tasks: TaskTracker,
    /// Shutdown has begun: no new jobs, and queued ones never start.
    pub(super) draining: CancellationToken,
    /// The grace period is over: running jobs stop where they are.
    pub(super) cut_off: CancellationToken,
    /// This process, in the jobs' records and ids (unique across replicas and restarts).
    replica: RunId,
}

#[derive(Debug, Default)]
struct Registry {
    /// In creation order.
    logs: Vec<JobLog>,
    by_id: HashMap<String, usize>,
}

impl Jobs {
    pub fn new(catalog: Catalog, notifier: Notifier, max_concurrent_jobs: usize, metrics: Arc<TrainMetrics>) -> Self {
        Jobs {
            inner: Arc::new(Inner {
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
            }),
        }
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
            if !self.inner.catalog.store().bucket().exists(key).await? {
                return Err(ApiError::MissingObject { what, key: key.to_string() });
            }
        }

        let now = Utc::now();
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        // The replica's random tag keeps ids apart across processes on one bucket.
        let tag = self.inner.replica.as_str().rsplit('-').next().unwrap_or_default();
        let job = Job {
            id: format!("job-{}-{tag}-{seq}", now.format("%Y%m%dT%H%M%S%3fZ")),
            model_ver: request.model_ver,
            state: JobState::Queued,
            stage: None,
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
        };
        let log = JobLog::new(job.clone());
        {
            // Under the registry lock, so that shutdown sees every job it has to wait for.
            let mut registry = self.inner.registry();
            if self.inner.draining.is_cancelled() {
                return Err(ApiError::ShuttingDown);
            }
            let index = registry.logs.len();
            registry.by_id.insert(job.id.clone(), index);
            registry.logs.push(log.clone());
            // The job outlives the request: it keeps the request's id for its log
            // lines and notices, in a span of its own with the job id.
            let request_id = crs_platform::request_id::current().unwrap_or_default();
            let span = tracing::info_span!(parent: None, "job", job_id = %job.id, request_id = %request_id);
            let run = crs_platform::request_id::scope(request_id, self.inner.clone().run(log.clone()));
            self.inner.tasks.spawn(tracing::Instrument::instrument(run, span));
            let bucket = self.inner.catalog.store().bucket().clone();
            self.inner.tasks.spawn(keep_recorded(bucket, self.inner.replica.to_string(), log));
        }
        tracing::info!(job_id = %job.id, model_ver = %job.model_ver, train_key = %job.keys.train, "job queued");
        Ok(job)
    }

    /// A job of this process, or one recorded in the bucket by another (or an earlier one).
    pub async fn get(&self, job_id: &str) -> Result<Job, ApiError> {
        match self.inner.log(job_id) {
            Ok(log) => Ok(log.current()),
            Err(unknown) => {
                let bucket = self.inner.catalog.store().bucket();
                recorded_job(bucket, job_id, Utc::now()).await.ok_or(unknown)
            }
        }
    }

    /// Every job of this process and every job recorded in the bucket, newest first.
    pub async fn list(&self) -> Result<Vec<Job>, ApiError> {
        let mut jobs: Vec<Job> = self.inner.registry().logs.iter().map(JobLog::current).collect();
        let recorded = recorded(self.inner.catalog.store().bucket(), Utc::now()).await?;
        let local: HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
        jobs.extend(recorded.into_iter().filter(|j| !local.contains(&j.id)));
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        Ok(jobs)
    }

    /// The job's current state, then every change until it ends.
    pub fn watch(&self, job_id: &str) -> Result<impl Stream<Item = Job> + Send + 'static, ApiError> {
        self.inner.log(job_id).map(|log| log.updates())
    }

    /// Cancels a queued or running job and returns it once it has stopped (or
    /// after [`CANCEL_WAIT`], as it is then). The blocking fit of a job cut
    /// off while training runs to its end on its own thread, but nothing of
    /// the run is written.
    pub async fn cancel(&self, job_id: &str, cancellation: Cancellation) -> Result<Job, ApiError> {
        let log = match self.inner.log(job_id) {
            Ok(log) => log,
            Err(unknown) => {
                let bucket = self.inner.catalog.store().bucket();
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
        sweep(self.inner.catalog.store().bucket(), model_ver, cutoff, Utc::now()).await
    }

    /// Refuses new jobs from now on; queued jobs fail instead of starting.
    pub fn stop_accepting(&self) {
        // Under the registry lock, so that no job is added after drain starts waiting.
        let _registry = self.inner.registry();
        self.inner.draining.cancel();
    }

    /// Stops accepting jobs and waits up to `grace` for the running ones; those
    /// still running then are cut off and fail.
    pub async fn drain(&self, grace: Duration) {
        self.stop_accepting();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(grace_secs = grace.as_secs_f64(), "grace period over: cutting off running jobs");
        self.inner.cut_off.cancel();
        if tokio::time::timeout(CUT_OFF_WAIT, self.inner.tasks.wait()).await.is_err() {
            tracing::error!("jobs still saving after being cut off; leaving them");
        }
    }
}

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // The registry is only ever pushed to, so a panic elsewhere cannot leave it half-updated.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn log(&self, job_id: &str) -> Result<JobLog, ApiError> {
        let registry = self.registry();
        let index = registry.by_id.get(job_id).ok_or_else(|| ApiError::UnknownJob(job_id.to_owned()))?;
        Ok(registry.logs[*index].clone())
    }
}
