//! Lifecycle cycles: ingest new files, check the production run for drift,
//! retrain by the version's rules, gate and promote (in the training job, see
//! `gate.rs`), batch-predict, report. One cycle per version at a time across
//! every replica on the bucket (the `cycle-<ver>` lease); each leaves a record
//! in the bucket (`cycles/<ver>/<id>.json`) and posts one webhook.

mod record;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crs_domain::models::ModelVer;
use crs_platform::lifecycle::lease::{Lease, LeaseError};
use crs_platform::notify::webhook::Notifier;
use crs_platform::registry::catalog::Catalog;
use crs_platform::storage::bucket::{BucketKey, StorageError};
use crs_platform::storage::layout::{self, RunId};
use tokio_util::task::TaskTracker;

pub use record::{CycleRecord, CycleState, CycleStep};
use steps::CycleRunner;

use crate::jobs::{CANCEL_WAIT, Cancellation, Jobs};
use crate::metrics::TrainMetrics;
use crate::status::ApiError;

/// What asking for a cycle did.
#[derive(Debug)]
pub enum Start {
    /// This cycle started; its record as written.
    Started(CycleRecord),
    /// Another cycle of the version holds the lease, in this process or another: its record.
    AlreadyRunning(CycleRecord),
}

/// The cycles of this process, and the settings they share.
#[derive(Clone, Debug)]
pub struct Cycles {
    runner: Arc<CycleRunner>,
}

impl Cycles {
    /// Cycles abort at the fail point of `catalog`'s store, if it has one.
    pub fn new(
        catalog: Catalog,
        jobs: Jobs,
        notifier: Notifier,
        incoming: BucketKey,
        lease_ttl: Duration,
        metrics: Arc<TrainMetrics>,
    ) -> Self {
        let tasks = TaskTracker::new();
        Cycles { runner: Arc::new(CycleRunner { catalog, jobs, notifier, incoming, lease_ttl, metrics, tasks }) }
    }

    /// Starts a cycle of `model_ver` and returns its record; while one runs
    /// (here or in another replica), returns that one instead.
    pub async fn start(&self, model_ver: ModelVer, by: &str) -> Result<CycleRecord, ApiError> {
        match self.begin(model_ver, by).await? {
            Start::Started(record) | Start::AlreadyRunning(record) => Ok(record),
        }
    }

    /// Starts a cycle of `model_ver`, or says which one runs already.
    pub async fn begin(&self, model_ver: ModelVer, by: &str) -> Result<Start, ApiError> {
        let lease_name = lease_name(model_ver);
        let cycle_id = RunId::generate(Utc::now());
        let bucket = self.runner.catalog.bucket();
        // A cycle's record says it ended a moment before its lease is released:
        // a caller who saw it end and starts the next must get a new cycle.
        let mut ended_waits = 0;
        let lease = loop {
            match Lease::acquire(bucket, &lease_name, cycle_id.as_str(), self.runner.lease_ttl).await {
                Ok(lease) => break lease,
                Err(LeaseError::Busy { holder, .. }) => {
                    let running = RunId::parse(&holder)?;
                    return match self.get(model_ver, &running).await {
                        Ok(record) if record.state != CycleState::Running && ended_waits < 100 => {
                            ended_waits += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Ok(record) => Ok(Start::AlreadyRunning(record)),
                        // Its record is not written yet: say which cycle it is.
                        Err(ApiError::UnknownCycle(_)) => {
                            Ok(Start::AlreadyRunning(CycleRecord::new(running, model_ver, by)))
                        }
                        Err(e) => Err(e),
                    };
                }
                Err(e) => return Err(ApiError::Lease(e)),
            }
        };
        let record = CycleRecord::new(cycle_id, model_ver, by);
        record.save(bucket).await?;
        tracing::info!(cycle_id = %record.cycle_id, %model_ver, %by, "cycle started");
        let cycles = self.clone();
        let started = record.clone();
        // Closing dead cycles reads every record: in the cycle's task, not in the caller's request.
        self.runner.tasks.spawn(async move {
            cycles.close_abandoned(model_ver, &started.cycle_id).await;
            cycles.runner.clone().run(started, lease).await;
        });
        Ok(Start::Started(record))
    }

    /// Where new raw files arrive.
    pub fn incoming(&self) -> &BucketKey {
        &self.runner.incoming
    }

    pub fn lease_ttl(&self) -> Duration {
        self.runner.lease_ttl
    }

    pub async fn get(&self, model_ver: ModelVer, cycle_id: &RunId) -> Result<CycleRecord, ApiError> {
        CycleRecord::load(self.runner.catalog.bucket(), model_ver, cycle_id).await
    }

    /// Every recorded cycle of `model_ver`, newest first.
    pub async fn list(&self, model_ver: ModelVer) -> Result<Vec<CycleRecord>, ApiError> {
        Ok(self.page(model_ver, 0, usize::MAX).await?.1)
    }

    /// The recorded cycles of `model_ver` from the `offset`-th newest, at most
    /// `limit` of them, and how many there are in all. Only the page's records
    /// are read: a version keeps thousands.
    pub async fn page(
        &self,
        model_ver: ModelVer,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<CycleRecord>), ApiError> {
        let bucket = self.runner.catalog.bucket();
        let mut ids: Vec<RunId> =
            bucket.list(&layout::cycles(model_ver)).await?.iter().filter_map(layout::id_of).collect();
        // Ids start with their start time, so the newest sorts last.
        ids.sort_by(|a, b| b.cmp(a));
        let mut records = Vec::new();
        for id in ids.iter().skip(offset).take(limit) {
            match self.get(model_ver, id).await {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable cycle record"),
            }
        }
        Ok((ids.len(), records))
    }

    /// Asks cycle `cycle_id` to stop, wherever it runs, and returns its record
    /// once it has stopped, or after [`CANCEL_WAIT`] as it is then. The request
    /// is an object in the bucket that the cycle reads before each step and,
    /// while training, every [`steps::CANCEL_POLL`].
    pub async fn cancel(
        &self,
        model_ver: ModelVer,
        cycle_id: &RunId,
        cancellation: Cancellation,
    ) -> Result<CycleRecord, ApiError> {
        let record = self.get(model_ver, cycle_id).await?;
        if record.state != CycleState::Running {
            return Err(ApiError::Precondition(format!(
                "cycle {cycle_id} has already ended: {}",
                record.state.as_str()
            )));
        }
        let bucket = self.runner.catalog.bucket();
        let bytes = serde_json::to_vec_pretty(&cancellation).expect("cancellations are plain serde data");
        match bucket.create(&layout::cycle_cancel(model_ver, cycle_id), bytes).await {
            // Asked before: the first request's who and why stand.
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(%cycle_id, %model_ver, by = %cancellation.by, reason = %cancellation.reason, "cancelling a cycle");
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        loop {
            let record = self.get(model_ver, cycle_id).await?;
            if record.state != CycleState::Running || tokio::time::Instant::now() >= deadline {
                return Ok(record);
            }
            tokio::time::sleep(steps::CANCEL_POLL / 2).await;
        }
    }

    /// Marks failed the records still saying `running` of cycles whose process
    /// died: this one holds the version's lease, so no other cycle of it runs.
    /// Best effort: a record left as it was misleads, but harms nothing.
    async fn close_abandoned(&self, model_ver: ModelVer, current: &RunId) {
        let records = match self.list(model_ver).await {
            Ok(records) => records,
            Err(e) => return tracing::warn!(error = %e, "cannot list the cycles to close abandoned ones"),
        };
        let bucket = self.runner.catalog.bucket();
        for mut record in records {
            if record.state != CycleState::Running || record.cycle_id == *current {
                continue;
            }
            record.state = CycleState::Failed;
            record.error =
                Some(format!("abandoned at step {}: its process stopped before the cycle ended", record.step));
            record.decision = format!("abandoned at {}", record.step);
            match record.save(bucket).await {
                Ok(()) => tracing::warn!(cycle_id = %record.cycle_id, step = %record.step, "closed an abandoned cycle"),
                Err(e) => tracing::warn!(cycle_id = %record.cycle_id, error = %e, "cannot close an abandoned cycle"),
            }
        }
    }

    /// Waits up to `within` for cycles still running (at shutdown).
    pub async fn drain(&self, within: Duration) {
        self.runner.tasks.close();
        if tokio::time::timeout(within, self.runner.tasks.wait()).await.is_err() {
            tracing::warn!("cycles still running at shutdown; their leases expire by themselves");
        }
    }
}

fn lease_name(model_ver: ModelVer) -> String {
    format!("cycle-{model_ver}")
}
