//! The steps of one cycle, in order, run by [`CycleRunner`], with all of its
//! work in this file. The end of each step that changes the bucket is a fail
//! point for the crash tests ([`CycleStep::fail_point`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crs_domain::data::{Device, EvalSource, HOLDOUT_FRACTION, Observations, TrainingTable};
use crs_domain::drift::{input_shift, rate_psi, row_shift};
use crs_domain::lifecycle::{
    DriftBasis, DriftLevel, DriftReport, LabelledLive, LifecycleConfig, LiveDriftReport, Retrain, drift, live_drift,
};
use crs_domain::metrics::score;
use crs_domain::models::ModelVer;
use crs_platform::lifecycle::ingest::{IngestError, LedgerEntry, Outcome, ingest_new, ingested_data};
use crs_platform::lifecycle::inputs::{IngestedSplit, InputKeys, WeekPlan};
use crs_platform::lifecycle::lease::{Lease, LeaseError};
use crs_platform::lifecycle::retention::{Policy, sweep};
use crs_platform::lifecycle::trends::{self, DriftNumbers, IngestCounts, LiveNumbers, ReferencePoint, TrendPoint};
use crs_platform::notify::webhook::{self, Notice, Notifier};
use crs_platform::predictions::batch::{BatchOptions, predict_batch};
use crs_platform::predictions::capture::{self, CapturedRows};
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::{RunMetadata, StageTiming};
use crs_platform::reports::pages::CycleChecks;
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::{self, OutputPrefix, RunId};
use futures::StreamExt;
use tokio_util::task::TaskTracker;

use super::record::{CycleRecord, CycleState, CycleStep};
use crate::gate::{GateOutcome, lifecycle_config};
use crate::jobs::{Cancellation, JobRequest, JobState, Jobs};
use crate::metrics::TrainMetrics;
use crate::{reference, reports};

const MILLIS_PER_DAY: f64 = 24.0 * 3600.0 * 1000.0;

fn days(days: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((days * MILLIS_PER_DAY) as i64)
}

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
    #[error("captured traffic: {0}")]
    Capture(#[from] capture::CaptureError),
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
        // A cycle that succeeded wrote its point before its report, which charts it.
        if record.state != CycleState::Succeeded {
            self.save_trend(&record, record.state).await;
        }
        // Tells the renewer the work is over.
        drop(lost_rx);
        let lease = renewer.await.ok().flatten();
        // The record says the cycle ended only now, just before the lease goes:
        // a caller who sees it end and starts the next one finds the lease free
        // (or released a moment later, which `Cycles::begin` waits for).
        if let Err(e) = record.save(self.catalog.bucket()).await {
            tracing::error!(cycle_id = %record.cycle_id, error = %e, "could not write the cycle's record");
        }
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
        if let Some(production) = &production {
            record.live = self.step(record, CycleStep::Live, self.live(model_ver, production, &config)).await?;
        }

        let ledger = crs_platform::lifecycle::ingest::ledger(&bucket).await?;
        let ingested_any = ledger.iter().any(|e| e.rows.used > 0);
        let retrain = match (&production, config.retrain) {
            (None, _) => ingested_any,
            (Some(_), Retrain::NewData) => new_rows > 0,
            (Some(_), Retrain::Drift) => in_drift(record),
            (Some(id), Retrain::Schedule) => {
                let trained = self.catalog.store().metadata(model_ver, id).await?.finished_at;
                (Utc::now() - trained).as_seconds_f64() > config.schedule_hours * 3600.0
            }
        };
        let weeks: BTreeSet<i64> =
            ledger.iter().filter(|e| e.rows.used > 0).flat_map(|e| e.weeks.iter().copied()).collect();
        // A challenger is judged against production on weeks it never saw: too few, and it cannot be.
        let too_few_weeks = production.is_some() && weeks.len() <= config.holdout_weeks;
        if retrain && too_few_weeks {
            record.decision = format!(
                "kept production: {} week(s) ingested, and a challenger needs holdout_weeks + 1 = {} to be judged against it",
                weeks.len(),
                config.holdout_weeks + 1
            );
            self.retention(record, &config).await;
            self.report(record).await;
            return Ok(());
        }
        if !retrain {
            let rejected = rejected(&record.ingested);
            record.decision = match (&production, &record.drift) {
                (None, _) if rejected.is_empty() => "nothing ingested yet: no run to train".to_owned(),
                (None, _) => format!("nothing ingested yet: no run to train; {}", rejected.join("; ")),
                (Some(_), _) if new_rows == 0 && rejected.is_empty() => "no new data: nothing to do".to_owned(),
                (Some(_), _) if new_rows == 0 => format!("no new data: {}", rejected.join("; ")),
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

        let split = first_run_split(production.is_none(), weeks.len(), config.holdout_weeks);
        record.split = Some(split);
        let plan = WeekPlan { holdout_weeks: config.holdout_weeks, train_weeks: config.train_weeks, split };
        let cycle_id = record.cycle_id.clone();
        let (run_id, gate) = self.step(record, CycleStep::Train, self.train(model_ver, plan, &cycle_id)).await?;
        record.run_id = run_id;
        record.gate = gate;
        let judged = match split {
            IngestedSplit::Weeks => String::new(),
            IngestedSplit::Keywords => format!(
                "first run from {} week(s), fewer than holdout_weeks + 1 = {}: judged on {:.0}% of the keywords held out, as crctl train does; ",
                weeks.len(),
                config.holdout_weeks + 1,
                HOLDOUT_FRACTION * 100.0
            ),
        };
        record.decision = match &record.gate {
            Some(gate) => {
                format!("{judged}trained run {}: {gate}", record.run_id.as_ref().map(RunId::as_str).unwrap_or("?"))
            }
            None => format!("{judged}trained a run"),
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
    /// at promotion, and compares the new inputs with what it learnt from
    /// ([`learnt_from`]).
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
        let training = self.learnt_file(&loaded.metadata).await?;
        let trained = loaded.metadata.weeks.as_ref().map(|w| w.train.clone()).unwrap_or_default();
        let logloss_on = EvalSource::parse(&loaded.metadata.eval_source);
        let thresholds = config.drift.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<DriftReport>, CycleError> {
            let mut table = TrainingTable::read(&data.name, Cursor::new(data.bytes.clone()))?;
            let weeks = table.weeks()?;
            let new_weeks: Vec<i64> = weeks.iter().copied().filter(|w| !trained.contains(w)).collect();
            if new_weeks.is_empty() {
                return Ok(None);
            }
            let new = table.observations_of_weeks(|w| new_weeks.contains(&w))?;
            let Some((reference, inputs)) = learnt_from(Some(&mut table), &trained, training)? else { return Ok(None) };
            let predicted = loaded.model.predict(&new.rows)?;
            let scored = score(&predicted, &new.clicks, &new.conversions);
            let shift = input_shift(&reference, &new);
            let basis = DriftBasis { logloss_on, inputs };
            Ok(Some(drift(new_weeks, &scored, reference_logloss, shift, basis, &thresholds)))
        })
        .await
        .map_err(|e| CycleError::Crashed(e.to_string()))?
    }

    /// The file standing for what a run learnt from, when that is not the
    /// ingested rows and the file is still there: the one `crctl train`
    /// trained it on, or for an imported run (trained elsewhere, on rows the
    /// bucket never had; its `train_data` only fitted the baselines) the one
    /// it was evaluated on.
    async fn learnt_file(&self, metadata: &RunMetadata) -> Result<Option<LearntFile>, CycleError> {
        let (key, basis) = match (&metadata.imported, &metadata.eval_data) {
            (Some(_), Some(eval)) => (&eval.key, format!("the file this imported run was evaluated on, {}", eval.key)),
            _ if metadata.train_data.key == layout::INGESTED_NAME => return Ok(None),
            _ => (&metadata.train_data.key, format!("the file it was trained on, {}", metadata.train_data.key)),
        };
        let parsed = BucketKey::parse(key).map_err(crs_platform::storage::bucket::StorageError::from)?;
        let bytes = self.catalog.bucket().get_if_exists(&parsed).await?;
        Ok(bytes.map(|bytes| LearntFile { key: key.clone(), bytes: bytes.to_vec(), basis }))
    }

    /// Compares what production served since it was promoted (the rows
    /// serve-service captured, `CAPTURE_SAMPLE`) with what it learnt from, and
    /// joins its captured answers with labelled rows ingested since. `None`
    /// when nothing of it was captured.
    async fn live(
        &self,
        model_ver: ModelVer,
        production: &RunId,
        config: &LifecycleConfig,
    ) -> Result<Option<LiveDriftReport>, CycleError> {
        let bucket = self.catalog.bucket();
        let history = self.catalog.history(model_ver).await?;
        let event = history.production_event();
        let since = event.map(|e| e.at);
        let reference_logloss = event.and_then(|e| e.numbers.as_ref()).map(|n| n.logloss);
        let loaded = self.catalog.store().load(model_ver, production).await?;
        let names: Arc<[String]> = loaded.model.required_attributes().into();
        // Only production's own answers: another run's share the version but not the model.
        let mut live = CapturedRows::new(model_ver, names.clone());
        for object in capture::read_since(bucket, model_ver, since).await? {
            let own: Vec<usize> = (0..object.len()).filter(|&i| object.run[i] == *production).collect();
            if !own.is_empty() && object.rows.attribute_names() == &names[..] {
                live.append(capture::select(&object, &own));
            }
        }
        // Batches were captured as their input keys: their rows are read again,
        // the share capture drew online, and answered by the same run again.
        let mut batches = Vec::new();
        for batch in capture::batches_since(bucket, model_ver, since).await? {
            if batch.run != *production {
                continue;
            }
            // An input replaced since by a file that cannot be read is not what was served.
            match capture::batch_rows(bucket, &batch, names.clone()).await {
                Ok(Some(rows)) => batches.push((batch, rows)),
                Ok(None) => tracing::warn!(input = %batch.input_key, "a captured batch's input is gone: left out"),
                Err(e) => tracing::warn!(input = %batch.input_key, error = %e, "a captured batch is left out"),
            }
        }
        if live.is_empty() && batches.iter().all(|(_, rows)| rows.is_empty()) {
            return Ok(None);
        }
        let data = ingested_data(bucket).await?;
        let training = self.learnt_file(&loaded.metadata).await?;
        let trained = loaded.metadata.weeks.as_ref().map(|w| w.train.clone()).unwrap_or_default();
        // Labels carry a week, captures a time: the labelled rows are those ingested since the promotion.
        let ledger = crs_platform::lifecycle::ingest::ledger(bucket).await?;
        let label_weeks: BTreeSet<i64> = ledger
            .iter()
            .filter(|e| e.rows.used > 0 && since.is_none_or(|t| e.at > t))
            .flat_map(|e| e.weeks.iter().copied())
            .collect();
        let thresholds = config.drift.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<LiveDriftReport>, CycleError> {
            let mut table = match &data {
                Some(data) => Some(TrainingTable::read(&data.name, Cursor::new(data.bytes.clone()))?),
                None => None,
            };
            let Some((reference, basis)) = learnt_from(table.as_mut(), &trained, training)? else { return Ok(None) };
            for (batch, rows) in batches {
                let cr = loaded.model.predict(&rows)?;
                live.extend(batch.time, &batch.run, &batch.request_id, &rows, &cr);
            }
            let reference_rates = loaded.model.predict(&reference.rows)?;
            let prediction_psi = rate_psi(&reference_rates, &live.cr);
            let shift = row_shift(&reference.rows, &live.rows);
            let labelled = match table.as_mut().filter(|_| !label_weeks.is_empty()) {
                Some(table) => {
                    let labels = table.observations_of_weeks(|w| label_weeks.contains(&w))?;
                    join_labels(&live, &labels, label_weeks.into_iter().collect(), reference_logloss)
                }
                None => None,
            };
            Ok(Some(live_drift(live.len(), shift, prediction_psi, labelled, basis, &thresholds)))
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
            keep_for: days(config.keep_days),
            keep_captures_for: days(config.capture_keep_days),
            keep_trends_for: days(config.trend_keep_days),
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
        // The index lists the records as stored: this one's must carry its decision.
        if let Err(e) = record.save(self.catalog.bucket()).await {
            tracing::warn!(error = %e, "could not update the cycle's record");
        }
        // Before the report, so its charts have every kept run on the reference set.
        if let Err(e) = reference::score_unscored_runs(&self.catalog, record.model_ver).await {
            tracing::warn!(cycle_id = %record.cycle_id, error = %e, "could not score the runs on the reference set");
        }
        self.save_trend(record, CycleState::Succeeded).await;
        let summary = reports::CycleSummary {
            model_ver: record.model_ver,
            cycle_id: &record.cycle_id,
            decision: &record.decision,
            record: serde_json::to_value(&*record).unwrap_or_default(),
            checks: CycleChecks { drift: record.drift.as_ref(), live: record.live.as_ref() },
            timings: &record.timings,
        };
        record.report_key = reports::cycle(&self.catalog, summary).await.map(|k| k.to_string());
        self.fail_point(CycleStep::Report);
    }
}

impl CycleRunner {
    /// Writes the cycle's trend point (best effort, like the report): what it
    /// ingested and found, production's score on the reference set, and the
    /// rows captured since the version's previous point.
    async fn save_trend(&self, record: &CycleRecord, state: CycleState) {
        let (model_ver, bucket) = (record.model_ver, self.catalog.bucket());
        let production = self.catalog.production(model_ver).await.ok().flatten();
        let reference = match &production {
            Some(run) => reference::score_new_run(&self.catalog, model_ver, run).await.map(|score| ReferencePoint {
                key: score.reference_key,
                sha256: score.reference_sha256,
                run_id: score.run_id,
                logloss: score.evaluation.model.logloss,
                device_baseline_logloss: score.evaluation.device.logloss,
            }),
            None => None,
        };
        // The newest two: the previous point even were this cycle's own written already.
        let previous = match trends::newest(bucket, model_ver, 2).await {
            Ok(points) => points.into_iter().rfind(|p| p.cycle_id != record.cycle_id),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the previous trend point");
                None
            }
        };
        let was_in_drift = previous.as_ref().is_some_and(|p| p.in_drift);
        // A cycle that failed or was cancelled did not look: the state stands.
        let now_in_drift = if state == CycleState::Succeeded { in_drift(record) } else { was_in_drift };
        if now_in_drift != was_in_drift {
            self.notifier.notify(drift_alert(record, now_in_drift));
        }
        let captured_rows = match capture::read_since(bucket, model_ver, previous.map(|p| p.at)).await {
            Ok(objects) => Some(objects.iter().map(|o| o.len() as u64).sum()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the captured rows");
                None
            }
        };
        let point = TrendPoint {
            cycle_id: record.cycle_id.clone(),
            model_ver,
            at: record.finished_at.unwrap_or_else(Utc::now),
            state: state.as_str().to_owned(),
            decision: record.decision.clone(),
            production_run_id: production,
            trained_run_id: record.run_id.clone(),
            ingest: IngestCounts {
                files: record.ingested.len(),
                rejected_files: record.ingested.iter().filter(|e| e.outcome == Outcome::Rejected).count(),
                rows: record.ingested.iter().map(|e| e.rows.used).sum(),
            },
            drift: record.drift.as_ref().map(DriftNumbers::from),
            live: record.live.as_ref().map(LiveNumbers::from),
            in_drift: now_in_drift,
            reference,
            captured_rows,
            timings: record.timings.clone(),
        };
        if let Err(e) = point.save(bucket).await {
            tracing::warn!(cycle_id = %record.cycle_id, error = %e, "could not write the cycle's trend point");
        }
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
    let outcome =
        if record.state == CycleState::Succeeded { webhook::Outcome::Succeeded } else { webhook::Outcome::Failed };
    let mut notice =
        Notice::new(outcome, format!("Cycle {} of model {}: {}", record.cycle_id, record.model_ver, record.decision))
            .field("Ingested files", record.ingested.len())
            .field("Production", record.production_run_id.as_ref().map_or("none".to_owned(), ToString::to_string));
    if let Some(drift) = &record.drift {
        notice = notice.field("Drift", if drift.drifted { drift.reasons.join("; ") } else { "none".to_owned() });
    }
    let rejected = rejected(&record.ingested);
    if !rejected.is_empty() {
        notice = notice.field("Rejected files", rejected.join("\n"));
    }
    if let Some(error) = &record.error {
        notice = notice.field("Error", error);
    }
    notice
}

/// The alert of a version entering or leaving drift: sent once per change,
/// not every cycle.
fn drift_alert(record: &CycleRecord, entered: bool) -> Notice {
    let model_ver = record.model_ver;
    if !entered {
        return Notice::new(webhook::Outcome::Succeeded, format!("Model {model_ver} left drift"))
            .field("Cycle", &record.cycle_id)
            .field("Decision", &record.decision);
    }
    let mut reasons: Vec<&str> = record.drift.iter().flat_map(|d| d.reasons.iter().map(String::as_str)).collect();
    reasons.extend(record.live.iter().flat_map(|l| l.reasons.iter().map(String::as_str)));
    let mut notice =
        Notice::new(webhook::Outcome::Failed, format!("Model {model_ver} entered drift: {}", reasons.join("; ")))
            .field("Cycle", &record.cycle_id)
            .field("Decision", &record.decision);
    if let Some(live) = &record.live {
        notice = notice
            .field("Live rows", live.rows)
            .field("Live device mix PSI", format!("{:.3}", live.shift.device_psi))
            .field("Live largest attribute PSI", format!("{:.3}", live.shift.max_attribute_psi()))
            .field("Live predicted rate PSI", format!("{:.3}", live.prediction_psi));
    }
    notice
}

/// Whether the cycle found production drifted, on new labelled weeks or on live traffic.
fn in_drift(record: &CycleRecord) -> bool {
    record.drift.as_ref().is_some_and(|d| d.drifted)
        || record.live.as_ref().is_some_and(|l| l.level == DriftLevel::Drift)
}

/// A file in the bucket standing for what a run learnt from ([`CycleRunner::learnt_file`]).
struct LearntFile {
    key: String,
    bytes: Vec<u8>,
    /// What it is, in words.
    basis: String,
}

/// The rows production learnt from, and what they are in words: the file
/// standing for them (`training`, see [`CycleRunner::learnt_file`]) when
/// there is one; else its weeks of the ingested rows; else (a run
/// from before weeks were recorded, or whose file is gone) the oldest
/// ingested week stands in. `None` with neither file nor ingested rows.
fn learnt_from(
    table: Option<&mut TrainingTable>,
    trained: &[i64],
    training: Option<LearntFile>,
) -> Result<Option<(Observations, String)>, CycleError> {
    if let Some(file) = training {
        let reference = TrainingTable::read(&file.key, Cursor::new(file.bytes))?.observations()?;
        return Ok(Some((reference, file.basis)));
    }
    let Some(table) = table else { return Ok(None) };
    let weeks = table.weeks()?;
    let known: Vec<i64> = trained.iter().copied().filter(|w| weeks.contains(w)).collect();
    let (reference_weeks, inputs) = match (known.is_empty(), weeks.first()) {
        (false, _) => (known.clone(), format!("weeks {known:?} of the ingested rows, which it was trained on")),
        (true, Some(&oldest)) => {
            (vec![oldest], format!("week {oldest} of the ingested rows, standing in for what it learnt from"))
        }
        (true, None) => return Ok(None),
    };
    Ok(Some((table.observations_of_weeks(|w| reference_weeks.contains(&w))?, inputs)))
}

/// Production's latest captured answer for each labelled (entity_id, device),
/// scored on the labels; `None` when no labelled row was captured.
fn join_labels(
    live: &CapturedRows,
    labels: &Observations,
    weeks: Vec<i64>,
    reference_logloss: Option<f64>,
) -> Option<LabelledLive> {
    // Captures are read in time order: a later answer replaces an earlier one.
    let mut answers: HashMap<(i64, Device), (DateTime<Utc>, f64)> = HashMap::new();
    for i in 0..live.len() {
        let key = (live.rows.entity_id[i], live.rows.device[i]);
        if answers.get(&key).is_none_or(|(time, _)| *time <= live.time[i]) {
            answers.insert(key, (live.time[i], live.cr[i]));
        }
    }
    let (mut rows, mut predicted) = (Vec::new(), Vec::new());
    for i in 0..labels.len() {
        if let Some((_, cr)) = answers.get(&(labels.rows.entity_id[i], labels.rows.device[i])) {
            rows.push(i);
            predicted.push(*cr);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let joined = labels.select(&rows);
    let scored = score(&predicted, &joined.clicks, &joined.conversions);
    let expected: f64 = predicted.iter().zip(&joined.clicks).map(|(cr, clicks)| cr * clicks).sum();
    let observed: f64 = joined.conversions.iter().sum();
    Some(LabelledLive {
        rows: rows.len(),
        clicks: joined.total_clicks(),
        weeks,
        logloss: scored.logloss,
        calibration: if observed > 0.0 { expected / observed } else { f64::NAN },
        reference_logloss,
    })
}

/// Each file this cycle rejected, with why (the message names the file).
fn rejected(ingested: &[LedgerEntry]) -> Vec<String> {
    ingested
        .iter()
        .filter(|e| e.outcome == Outcome::Rejected)
        .map(|e| format!("rejected {}", e.message.as_deref().unwrap_or(&e.key)))
        .collect()
}

/// A first run (no production yet) from too few weeks to hold the newest out
/// is judged on held-out keywords instead, so that one weekly file starts the
/// platform as `crctl train` does; once production exists, runs are judged
/// on weeks, which they never saw, as champion and challenger must be.
fn first_run_split(first: bool, weeks: usize, holdout_weeks: usize) -> IngestedSplit {
    if first && weeks <= holdout_weeks { IngestedSplit::Keywords } else { IngestedSplit::Weeks }
}
