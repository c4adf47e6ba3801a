//! The steps of one cycle, in order, run by [`CycleRunner`], with all of its
//! work in this file. The end of each step that changes the bucket is a fail
//! point for the crash tests ([`CycleStep::fail_point`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use crs_domain::data::TrainingTable;
use crs_domain::drift::input_shift;
use crs_domain::lifecycle::{DriftReport, LifecycleConfig, Retrain, drift};
use crs_domain::metrics::score;
use crs_domain::models::ModelVer;
use crs_platform::lifecycle::ingest::{IngestError, LedgerEntry, ingest_new, ingested_data};
use crs_platform::lifecycle::inputs::{InputKeys, WeekPlan};
use crs_platform::lifecycle::lease::{Lease, LeaseError};
use crs_platform::lifecycle::retention::{Policy, sweep};
use crs_platform::notify::webhook::{Notice, Notifier, Outcome};
use crs_platform::predictions::batch::{BatchOptions, predict_batch};
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::StageTiming;
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::{self, OutputPrefix, RunId};
use futures::StreamExt;
use tokio_util::task::TaskTracker;

use super::record::{CycleRecord, CycleState, CycleStep};
use crate::gate::{GateOutcome, lifecycle_config};
use crate::jobs::{Cancellation, JobRequest, JobState, Jobs};
use crate::metrics::TrainMetrics;
use crate::reports;

const MILLIS_PER_DAY: f64 = 24.0 * 3600.0 * 1000.0;

/// How often a training cycle looks for a request to cancel it.
pub(super) const CANCEL_POLL: Duration = Duration::from_millis(500);

/// How often a cycle looks whether the ingest lease is free again.
const INGEST_LEASE_POLL: Duration = Duration::from_millis(200);

/// What the cycles of this process share, and the running of each.
#[derive(Debug)]
pub(super) struct CycleRunner {
    pub(super) catalog: Catalog,
    pub(super) jobs: Jobs,
    pub(super) notifier: Notifier,
    /// Where new raw files arrive.
    pub(super) incoming: BucketKey,
    pub(super) lease_ttl: Duration,
    pub(super) metrics: Arc<TrainMetrics>,
    pub(super) tasks: TaskTracker,
}

/// Why a cycle failed; its message is the record's `error`.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("ingesting: {0}")]
    Ingest(#[from] IngestError),
    #[error("lifecycle config: {0}")]
    Config(#[from] crate::gate::GateError),
    #[error(transparent)]
    Catalog(#[from] crs_platform::registry::catalog::CatalogError),
    #[error("the production run: {0}")]
    Load(#[from] crs_platform::registry::runs::LoadError),
    #[error("the ingested data: {0}")]
    Data(#[from] crs_domain::data::DataError),
    #[error("scoring the production run on the new weeks: {0}")]
    Features(#[from] crs_domain::features::FeatureError),
    #[error("training: {0}")]
    Train(String),
    #[error("batch prediction: {0}")]
    Batch(#[from] crs_platform::predictions::batch::BatchError),
    #[error(transparent)]
    Storage(#[from] crs_platform::storage::bucket::StorageError),
    #[error("{0}")]
    Crashed(String),
    #[error("cancelled by {}: {}", .0.by, .0.reason)]
    Cancelled(Cancellation),
}

impl CycleRunner {
    pub(super) async fn run(self: Arc<Self>, mut record: CycleRecord, lease: Lease) {
        // Renewed in the background while the steps run; lost means another
        // replica may start a cycle, so stop before changing anything more.
        let (lost_tx, mut lost_rx) = tokio::sync::watch::channel(false);
        let renewer = tokio::spawn(renew(lease, self.lease_ttl / 3, lost_tx));
        let outcome = tokio::select! {
            outcome = self.steps(&mut record) => outcome,
            _ = lost_rx.wait_for(|lost| *lost) => Err(CycleError::Crashed("the cycle lease was lost".into())),
        };
        // Tells the renewer the steps are over.
        drop(lost_rx);
        match outcome {
            Ok(()) => record.state = CycleState::Succeeded,
            Err(CycleError::Cancelled(cancellation)) => {
                record.state = CycleState::Cancelled;
                record.decision =
                    format!("cancelled at {} by {}: {}", record.step, cancellation.by, cancellation.reason);
                record.cancelled = Some(cancellation);
            }
            Err(e) => {
                record.state = CycleState::Failed;
                record.error = Some(e.to_string());
                if record.decision.is_empty() {
                    record.decision = format!("failed at {}", record.step);
                }
            }
        }
        record.finished_at = Some(Utc::now());
        record.production_run_id = self.catalog.production(record.model_ver).await.ok().flatten();
        if let Err(e) = record.save(self.catalog.bucket()).await {
            tracing::error!(cycle_id = %record.cycle_id, error = %e, "could not write the cycle's record");
        }
        let lease = renewer.await.ok().flatten();
        if let Some(lease) = lease
            && let Err(e) = lease.release().await
        {
            tracing::warn!(error = %e, "could not release the cycle lease; it expires by itself");
        }
        tracing::info!(cycle_id = %record.cycle_id, model_ver = %record.model_ver, decision = %record.decision, state = ?record.state, "cycle ended");
        self.metrics.cycle_ended(record.model_ver, record.state.as_str(), &record.timings);
        self.notifier.notify(notice(&record));
    }

    async fn steps(&self, record: &mut CycleRecord) -> Result<(), CycleError> {
        let model_ver = record.model_ver;
        let bucket = self.catalog.bucket().clone();
        let config = lifecycle_config(&self.catalog, model_ver).await?;

        let holder = format!("cycle {}", record.cycle_id);
        let new_entries = self.step(record, CycleStep::Ingest, self.ingest(&holder)).await?;
        record.ingested = new_entries;
        let new_rows = self.unlearnt_rows(model_ver, &record.cycle_id).await?;

        let production = self.catalog.production(model_ver).await?;
        if let Some(production) = &production
            && new_rows > 0
        {
            record.drift = self.step(record, CycleStep::Drift, self.drift(model_ver, production, &config)).await?;
        }

        let ingested_any = crs_platform::lifecycle::ingest::ledger(&bucket).await?.iter().any(|e| e.rows.used > 0);
        let retrain = match (&production, config.retrain) {
            (None, _) => ingested_any,
            (Some(_), Retrain::NewData) => new_rows > 0,
            (Some(_), Retrain::Drift) => record.drift.as_ref().is_some_and(|d| d.drifted),
            (Some(id), Retrain::Schedule) => {
                let trained = self.catalog.store().metadata(model_ver, id).await?.finished_at;
                (Utc::now() - trained).as_seconds_f64() > config.schedule_hours * 3600.0
            }
        };
        if !retrain {
            record.decision = match (&production, &record.drift) {
                (None, _) => "nothing ingested yet: no run to train".to_owned(),
                (Some(_), _) if new_rows == 0 => "no new data: nothing to do".to_owned(),
                (Some(_), Some(d)) if !d.drifted => "new data, no drift: kept production".to_owned(),
                _ => "kept production".to_owned(),
            };
            self.retention(record, &config).await;
            self.report(record).await;
            return Ok(());
        }
        if model_ver.is_imported() {
            // The drift check above ran and is reported (and posted); the
            // retraining it calls for is a data scientist's: a new file.
            let why = match &record.drift {
                Some(d) if d.drifted => format!("drift ({})", d.reasons.join("; ")),
                _ if production.is_none() => "no production run".to_owned(),
                _ => "new data".to_owned(),
            };
            record.decision = format!(
                "{why}: a retrain is due, but {model_ver} is imported, not trained here: a new import is needed (crctl import)"
            );
            self.retention(record, &config).await;
            self.report(record).await;
            return Ok(());
        }

        let plan = WeekPlan { holdout_weeks: config.holdout_weeks, train_weeks: config.train_weeks };
        let cycle_id = record.cycle_id.clone();
        let (run_id, gate) = self.step(record, CycleStep::Train, self.train(model_ver, plan, &cycle_id)).await?;
        record.run_id = run_id;
        record.gate = gate;
        record.decision = match &record.gate {
            Some(gate) => format!("trained run {}: {gate}", record.run_id.as_ref().map(RunId::as_str).unwrap_or("?")),
            None => "trained a run".to_owned(),
        };

        let promoted = record.gate.as_ref().is_some_and(GateOutcome::promoted);
        if promoted && let Some(input) = &config.batch_input {
            let output = self.step(record, CycleStep::Batch, self.batch(model_ver, input)).await?;
            record.batch_output = Some(output);
        }
        self.retention(record, &config).await;
        self.report(record).await;
        Ok(())
    }

    /// The request to cancel this cycle, if someone made one. An unreadable
    /// request is no request: the cycle goes on, and says why in its log.
    async fn cancellation(&self, model_ver: ModelVer, cycle_id: &RunId) -> Option<Cancellation> {
        let key = layout::cycle_cancel(model_ver, cycle_id);
        match self.catalog.bucket().get_if_exists(&key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .inspect_err(|e| tracing::warn!(%key, error = %e, "ignoring an unreadable cancel request"))
                .ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot read whether the cycle was cancelled");
                None
            }
        }
    }

    /// Runs one step, timing it and recording it as the current step.
    async fn step<T, E: Into<CycleError>>(
        &self,
        record: &mut CycleRecord,
        step: CycleStep,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CycleError> {
        if let Some(cancellation) = self.cancellation(record.model_ver, &record.cycle_id).await {
            return Err(CycleError::Cancelled(cancellation));
        }
        record.step = step;
        if let Err(e) = record.save(self.catalog.bucket()).await {
            tracing::warn!(error = %e, "could not update the cycle's record");
        }
        let started = Instant::now();
        let result = work.await.map_err(Into::into);
        record.timings.push(StageTiming { stage: step.name().to_owned(), seconds: started.elapsed().as_secs_f64() });
        self.fail_point(step);
        result
    }

    /// Aborts the process here if the crash tests asked for the end of `step`.
    fn fail_point(&self, step: CycleStep) {
        if let Some(fail_step) = step.fail_point() {
            self.catalog.fail_point().check(fail_step);
        }
    }

    /// Ingests the new files, waiting out an ingestion that holds the lease: a
    /// `crctl ingest` that ends soon, or a crashed one whose lease expires
    /// within its ttl.
    async fn ingest(&self, holder: &str) -> Result<Vec<LedgerEntry>, IngestError> {
        let bucket = self.catalog.bucket();
        let fail = self.catalog.fail_point();
        let deadline = Instant::now() + self.lease_ttl * 2;
        loop {
            match ingest_new(bucket, &self.incoming, holder, self.lease_ttl, fail).await {
                Err(IngestError::Lease(LeaseError::Busy { .. })) if Instant::now() < deadline => {
                    tokio::time::sleep(INGEST_LEASE_POLL).await;
                }
                result => return result,
            }
        }
    }

    /// Rows no cycle has decided about and no run has learnt from: those
    /// ingested after the later of the newest cycle that succeeded and the
    /// newest run trained on ingested rows. Besides this cycle's, that counts
    /// rows of a cycle killed before it decided and of `crctl ingest`.
    async fn unlearnt_rows(&self, model_ver: ModelVer, current: &RunId) -> Result<u64, CycleError> {
        let bucket = self.catalog.bucket();
        let trained = self
            .catalog
            .store()
            .runs(model_ver)
            .await?
            .into_iter()
            .filter(|m| m.train_data.key == layout::INGESTED_NAME)
            .map(|m| m.started_at)
            .max();
        let mut records = bucket.list(&layout::cycles(model_ver)).await?;
        // Newest first (ids sort by time); usually the first one read is it.
        records.reverse();
        let mut decided = None;
        for key in records {
            if layout::id_of(&key).as_ref() == Some(current) {
                continue;
            }
            let Some(bytes) = bucket.get_if_exists(&key).await? else { continue };
            if let Ok(record) = serde_json::from_slice::<CycleRecord>(&bytes)
                && record.state == CycleState::Succeeded
            {
                decided = record.finished_at;
                break;
            }
        }
        let since = trained.max(decided);
        let ledger = crs_platform::lifecycle::ingest::ledger(bucket).await?;
        Ok(ledger.iter().filter(|e| since.is_none_or(|t| e.at > t)).map(|e| e.rows.used).sum())
    }

    /// Scores production on the weeks it was not trained on, against its score
    /// at promotion, and compares the new inputs with what it learnt from.
    async fn drift(
        &self,
        model_ver: ModelVer,
        production: &RunId,
        config: &LifecycleConfig,
    ) -> Result<Option<DriftReport>, CycleError> {
        let loaded = self.catalog.store().load(model_ver, production).await?;
        let history = self.catalog.history(model_ver).await?;
        // Production's log-loss when the gate promoted it; none for a run promoted by hand.
        let reference_logloss = history.production_event().and_then(|e| e.numbers.as_ref()).map(|n| n.logloss);
        let Some(data) = ingested_data(self.catalog.bucket()).await? else { return Ok(None) };
        let trained_weeks = loaded.metadata.weeks.as_ref().map(|w| w.train.clone());
        let thresholds = config.drift.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<DriftReport>, CycleError> {
            let mut table = TrainingTable::read(&data.name, Cursor::new(data.bytes.clone()))?;
            let weeks = table.weeks()?;
            // A run from before weeks were recorded knows none: then every ingested
            // week is new to it and the oldest week stands in for what it learnt from.
            let trained = trained_weeks.unwrap_or_default();
            let new_weeks: Vec<i64> = weeks.iter().copied().filter(|w| !trained.contains(w)).collect();
            if new_weeks.is_empty() {
                return Ok(None);
            }
            let reference_weeks: Vec<i64> = if trained.is_empty() { weeks[..1].to_vec() } else { trained.clone() };
            let new = table.observations_of_weeks(|w| new_weeks.contains(&w))?;
            let reference = table.observations_of_weeks(|w| reference_weeks.contains(&w))?;
            let predicted = loaded.model.predict(&new.rows)?;
            let scored = score(&predicted, &new.clicks, &new.conversions);
            let shift = input_shift(&reference, &new);
            Ok(Some(drift(new_weeks, &scored, reference_logloss, shift, &thresholds)))
        })
        .await
        .map_err(|e| CycleError::Crashed(e.to_string()))?
    }

    /// Trains a challenger on the ingested rows through the job queue (which
    /// gates it) and returns its run and the gate's decision.
    async fn train(
        &self,
        model_ver: ModelVer,
        plan: WeekPlan,
        cycle_id: &RunId,
    ) -> Result<(Option<RunId>, Option<GateOutcome>), CycleError> {
        let request = JobRequest {
            model_ver,
            keys: InputKeys::ingested(model_ver, plan),
            labels: BTreeMap::from([("cycle".to_owned(), cycle_id.to_string())]),
            draft: false,
            by: format!("cycle {cycle_id}"),
            import: None,
        };
        let job = self.jobs.start(request).await.map_err(|e| CycleError::Train(e.to_string()))?;
        let updates = self.jobs.watch(&job.id).map_err(|e| CycleError::Train(e.to_string()))?;
        let mut updates = std::pin::pin!(updates);
        let job_id = job.id.clone();
        let mut last = job;
        let mut poll = tokio::time::interval(CANCEL_POLL);
        let mut cancelled = false;
        loop {
            tokio::select! {
                update = updates.next() => match update {
                    Some(update) => last = update,
                    None => break,
                },
                _ = poll.tick(), if !cancelled => {
                    if let Some(cancellation) = self.cancellation(model_ver, cycle_id).await {
                        cancelled = true;
                        // Returns once the job has stopped; the updates say how it ended.
                        if let Err(e) = self.jobs.cancel(&job_id, cancellation).await {
                            tracing::warn!(%job_id, error = %e, "could not cancel the cycle's job");
                        }
                    }
                }
            }
        }
        match last.state {
            JobState::Succeeded => Ok((last.run_id, last.gate)),
            // By this cycle's request, or the job's own.
            JobState::Cancelled => Err(CycleError::Cancelled(last.cancelled.unwrap_or_else(|| Cancellation {
                by: "unknown".to_owned(),
                reason: format!("job {} was cancelled", last.id),
            }))),
            _ => Err(CycleError::Train(format!("job {} failed: {}", last.id, last.error.unwrap_or_default()))),
        }
    }

    async fn batch(&self, model_ver: ModelVer, input: &str) -> Result<String, CycleError> {
        let production =
            self.catalog.production(model_ver).await?.ok_or_else(|| CycleError::Crashed("no production run".into()))?;
        let loaded = self.catalog.store().load(model_ver, &production).await?;
        let input = BucketKey::parse(input).map_err(crs_platform::storage::bucket::StorageError::from)?;
        let output = OutputPrefix::default().default_key(model_ver, &production);
        let options = BatchOptions { fail_point: *self.catalog.fail_point(), ..BatchOptions::default() };
        predict_batch(self.catalog.bucket(), loaded.model, &input, &output, options).await?;
        Ok(output.to_string())
    }

    /// Deletes what the version no longer keeps, before the report so that the
    /// report index lists only what is kept. Best effort, like the report: the
    /// next cycle's sweep finishes what this one could not.
    async fn retention(&self, record: &mut CycleRecord, config: &LifecycleConfig) {
        record.step = CycleStep::Retention;
        let policy = Policy {
            keep_runs: config.keep_runs,
            keep_for: chrono::Duration::milliseconds((config.keep_days * MILLIS_PER_DAY) as i64),
        };
        let started = Instant::now();
        let now = Utc::now();
        match sweep(&self.catalog, record.model_ver, &policy, now).await {
            Ok(mut swept) => {
                // Training jobs are train-service's records, so it sweeps them here.
                if let Some(cutoff) = now.checked_sub_signed(policy.keep_for) {
                    match self.jobs.sweep(record.model_ver, cutoff).await {
                        Ok(jobs) => swept.jobs = jobs,
                        Err(e) => tracing::warn!(error = %e, "could not sweep the job records; the next cycle retries"),
                    }
                }
                record.retention = Some(swept);
            }
            Err(e) => {
                tracing::warn!(cycle_id = %record.cycle_id, error = %e, "retention failed; the next cycle retries")
            }
        }
        record.timings.push(StageTiming {
            stage: CycleStep::Retention.name().to_owned(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    /// Reports are best effort: a cycle that did its work is not failed by them.
    async fn report(&self, record: &mut CycleRecord) {
        record.step = CycleStep::Report;
        let summary = reports::CycleSummary {
            model_ver: record.model_ver,
            cycle_id: &record.cycle_id,
            decision: &record.decision,
            record: serde_json::to_value(&*record).unwrap_or_default(),
            drift: record.drift.as_ref(),
            timings: &record.timings,
        };
        record.report_key = reports::cycle(&self.catalog, summary).await.map(|k| k.to_string());
        self.fail_point(CycleStep::Report);
    }
}

/// Renews `lease` every `every` until the cycle ends (the receiver side is
/// dropped), then hands it back for release; `None` if it was lost.
async fn renew(mut lease: Lease, every: Duration, lost: tokio::sync::watch::Sender<bool>) -> Option<Lease> {
    loop {
        tokio::select! {
            () = lost.closed() => return Some(lease),
            () = tokio::time::sleep(every) => {}
        }
        match lease.renew().await {
            Ok(()) => {}
            Err(e @ LeaseError::Lost { .. }) => {
                tracing::error!(error = %e, "cycle lease lost");
                let _ = lost.send(true);
                return None;
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the cycle lease; trying again"),
        }
    }
}

fn notice(record: &CycleRecord) -> Notice {
    let outcome = if record.state == CycleState::Succeeded { Outcome::Succeeded } else { Outcome::Failed };
    let mut notice =
        Notice::new(outcome, format!("Cycle {} of model {}: {}", record.cycle_id, record.model_ver, record.decision))
            .field("Ingested files", record.ingested.len())
            .field("Production", record.production_run_id.as_ref().map_or("none".to_owned(), ToString::to_string));
    if let Some(drift) = &record.drift {
        notice = notice.field("Drift", if drift.drifted { drift.reasons.join("; ") } else { "none".to_owned() });
    }
    if let Some(error) = &record.error {
        notice = notice.field("Error", error);
    }
    notice
}
