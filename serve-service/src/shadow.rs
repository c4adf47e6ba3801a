//! Shadow scoring (`SHADOW_MODELS`): every request a primary answers is queued
//! for its shadows, scored by them on a background task and recorded with the
//! primary's answer in the bucket (crs-platform `shadow.rs`). The request never
//! waits for it: when the queue is full its shadow rows are dropped and counted.
//! A batch is queued as its input key once it has succeeded; the task reads the
//! input again, chunk by chunk, and scores it with both models.
//!
//! Capture (`CAPTURE_SAMPLE`) rides the same queue, task and flushes: a
//! sampled share of the rows any model answers online is recorded with the
//! request id, the attributes the model read and its answer under
//! `capture/<ver>/` (crs-platform `capture.rs`). The request side only draws
//! the sample; selecting the columns happens on the task, compressing and
//! writing on writes of their own, so that the task keeps draining the queue. Every
//! serving path that predicts through [`Shadows::predict`] is captured (online
//! `Predict`, V2 `ModelInfer` and REST). A batch is captured as its input and
//! output keys ([`Shadows::offer_batch`]), never as a copy of its rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crs_domain::data::{Attributes, KeywordRows, TableKind, TableReader};
use crs_domain::models::ModelVer;
use crs_domain::rng::unit_hash;
use crs_platform::predictions::capture::{self, CapturedBatch, CapturedRows};
use crs_platform::predictions::shadow::{self, ShadowRow};
use crs_platform::service::request_id;
use crs_platform::storage::bucket::{Bucket, BucketKey};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::io::SyncIoBridge;

use crate::config::ShadowPair;
use crate::metrics::{RecordDrop, ServeMetrics};
use crate::model::{Models, Serving};
use crate::status::ServeError;

/// Rows a model answered, waiting for its shadows or to be captured.
#[derive(Debug)]
struct Answered {
    time: DateTime<Utc>,
    primary: Arc<Serving>,
    rows: KeywordRows,
    cr: Vec<f64>,
    /// Score them with the primary's shadows (it has some).
    shadow: bool,
    capture: Sampled,
    request_id: String,
}

/// Which answered rows are captured.
#[derive(Debug, PartialEq)]
enum Sampled {
    None,
    All,
    Rows(Vec<usize>),
}

impl Sampled {
    fn count(&self, rows: usize) -> usize {
        match self {
            Sampled::None => 0,
            Sampled::All => rows,
            Sampled::Rows(picked) => picked.len(),
        }
    }
}

/// The share of served rows captured, and the draws that pick them: a hash of
/// a counter, so that a request pays a few nanoseconds per row for it.
#[derive(Debug)]
struct Sampler {
    share: f64,
    seed: u64,
    draws: AtomicU64,
}

impl Sampler {
    fn new(share: f64) -> Self {
        // Replicas draw differently, so that together they still sample the share.
        let seed = u64::from_str_radix(&request_id::generate(), 16).unwrap_or_default();
        Sampler { share, seed, draws: AtomicU64::new(0) }
    }

    fn draw(&self, rows: usize) -> Sampled {
        if self.share <= 0.0 || rows == 0 {
            return Sampled::None;
        }
        if self.share >= 1.0 {
            return Sampled::All;
        }
        let first = self.draws.fetch_add(rows as u64, Ordering::Relaxed);
        let picked: Vec<usize> = (0..rows).filter(|&i| unit_hash(first + i as u64, self.seed) < self.share).collect();
        if picked.is_empty() { Sampled::None } else { Sampled::Rows(picked) }
    }
}

#[derive(Debug)]
enum Job {
    Rows(Answered),
    /// A batch the primary wrote: its input, scored again off the request path
    /// by its shadows, and captured as its keys.
    Batch(ServedBatch),
}

#[derive(Debug)]
struct ServedBatch {
    time: DateTime<Utc>,
    primary: Arc<Serving>,
    input: BucketKey,
    output: BucketKey,
    rows: u64,
    request_id: String,
    shadow: bool,
    capture: bool,
}

/// Capture writes under way at once: a flush waits for one to end beyond
/// this, which bounds the memory of rows being written.
const CAPTURE_WRITES: usize = 2;

/// How one capture write ended.
#[derive(Debug)]
enum CaptureWrite {
    Written,
    /// The bucket refused them: buffered again for the next flush.
    Unwritten(CapturedRows),
    /// The compressing thread did not run (the runtime is stopping) or panicked.
    Stopped(tokio::task::JoinError),
}

/// Chunks of a batch input handed from the reading thread to the task.
const BATCH_HANDOFF: usize = 2;

/// The request side: hands answered rows to the background task.
#[derive(Debug)]
pub struct Shadows {
    /// Each primary's shadows.
    pairs: BTreeMap<ModelVer, Vec<ModelVer>>,
    sampler: Sampler,
    queue: Option<mpsc::Sender<Job>>,
    metrics: Arc<ServeMetrics>,
}

/// How the background task batches its writes.
#[derive(Clone, Copy, Debug)]
pub struct FlushSettings {
    pub rows: usize,
    pub every: Duration,
}

/// The background task; [`Recorder::finish`] scores what is queued and writes
/// everything buffered.
#[derive(Debug)]
pub struct Recorder {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Shadows {
    /// No shadows and no capture: [`Shadows::offer`] does nothing.
    pub fn none(metrics: Arc<ServeMetrics>) -> Self {
        Shadows { pairs: BTreeMap::new(), sampler: Sampler::new(0.0), queue: None, metrics }
    }

    /// The shadows of `pairs`, the capture of `capture_sample` of the served
    /// rows, and the task that scores and records them.
    pub fn start(
        pairs: &[ShadowPair<ModelVer>],
        capture_sample: f64,
        models: Arc<Models>,
        bucket: Bucket,
        queue: usize,
        flush: FlushSettings,
        metrics: Arc<ServeMetrics>,
    ) -> (Self, Option<Recorder>) {
        if pairs.is_empty() && capture_sample <= 0.0 {
            return (Shadows::none(metrics), None);
        }
        let mut by_primary: BTreeMap<ModelVer, Vec<ModelVer>> = BTreeMap::new();
        for pair in pairs {
            let shadows = by_primary.entry(pair.primary).or_default();
            if !shadows.contains(&pair.shadow) {
                shadows.push(pair.shadow);
            }
        }
        let (tx, rx) = mpsc::channel(queue);
        let (stop, stopped) = oneshot::channel();
        let worker = Worker {
            pairs: by_primary.clone(),
            models,
            bucket,
            flush,
            metrics: metrics.clone(),
            buffers: BTreeMap::new(),
            captures: BTreeMap::new(),
            capture_share: capture_sample,
            capture_writes: JoinSet::new(),
            cancelled: false,
        };
        let task = tokio::spawn(worker.run(rx, stopped));
        let sampler = Sampler::new(capture_sample);
        (Shadows { pairs: by_primary, sampler, queue: Some(tx), metrics }, Some(Recorder { stop, task }))
    }

    /// The primary `model_ver` shadows, if it is a shadow.
    pub fn primary_of(&self, model_ver: ModelVer) -> Option<ModelVer> {
        self.pairs.iter().find(|(_, shadows)| shadows.contains(&model_ver)).map(|(primary, _)| *primary)
    }

    /// The rates `primary` predicts for `rows`; the rows and rates are then
    /// queued for its shadows, if it has any, and for capture. Every online
    /// request predicts through here, whichever API it came by.
    pub fn predict(&self, primary: &Arc<Serving>, rows: KeywordRows) -> Result<Vec<f64>, ServeError> {
        let cr = primary.run.model.predict(&rows)?;
        self.offer(primary, rows, &cr);
        Ok(cr)
    }

    /// Queues `rows`, which `primary` answered with `cr`, for its shadows, if
    /// it has any, and the sampled share of them for capture.
    fn offer(&self, primary: &Arc<Serving>, rows: KeywordRows, cr: &[f64]) {
        let Some(queue) = &self.queue else { return };
        let shadows = self.pairs.get(&primary.model_ver());
        let capture = self.sampler.draw(rows.len());
        let (count, captured) = (rows.len(), capture.count(rows.len()));
        if shadows.is_none() && captured == 0 {
            return;
        }
        let job = Job::Rows(Answered {
            time: Utc::now(),
            primary: primary.clone(),
            rows,
            cr: cr.to_vec(),
            shadow: shadows.is_some(),
            capture,
            request_id: request_id::current().unwrap_or_default(),
        });
        if queue.try_send(job).is_err() {
            for shadow in shadows.into_iter().flatten() {
                self.metrics.shadow_dropped(*shadow, RecordDrop::QueueFull, count);
            }
            if captured > 0 {
                self.metrics.capture_dropped(primary.model_ver(), RecordDrop::QueueFull, captured);
            }
        }
    }

    /// Queues a batch `primary` predicted from `input` into `output` (`rows`
    /// data rows) for its shadows, if it has any, and for capture, if it is on.
    pub fn offer_batch(&self, primary: &Arc<Serving>, input: BucketKey, output: BucketKey, rows: u64) {
        let Some(queue) = &self.queue else { return };
        let shadows = self.pairs.get(&primary.model_ver());
        let capture = self.sampler.share > 0.0;
        if shadows.is_none() && !capture {
            return;
        }
        let job = Job::Batch(ServedBatch {
            time: Utc::now(),
            primary: primary.clone(),
            input,
            output,
            rows,
            request_id: request_id::current().unwrap_or_default(),
            shadow: shadows.is_some(),
            capture,
        });
        if queue.try_send(job).is_err() {
            for shadow in shadows.into_iter().flatten() {
                self.metrics.shadow_dropped(*shadow, RecordDrop::QueueFull, rows as usize);
            }
            if capture {
                self.metrics.capture_dropped(primary.model_ver(), RecordDrop::QueueFull, rows as usize);
            }
        }
    }
}

impl Recorder {
    /// Scores every queued request, writes every buffered row, and returns;
    /// call it once no request can queue more.
    pub async fn finish(self, within: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(within, self.task).await.is_err() {
            tracing::warn!(?within, "shadow records not all written before the deadline");
        }
    }
}

#[derive(Debug)]
struct Worker {
    pairs: BTreeMap<ModelVer, Vec<ModelVer>>,
    models: Arc<Models>,
    bucket: Bucket,
    flush: FlushSettings,
    metrics: Arc<ServeMetrics>,
    /// Rows waiting to be written, by primary.
    buffers: BTreeMap<ModelVer, Vec<ShadowRow>>,
    /// Captured rows waiting to be written, by model version.
    captures: BTreeMap<ModelVer, CapturedRows>,
    /// `CAPTURE_SAMPLE`, which a batch's capture object keeps.
    capture_share: f64,
    /// Captured rows being compressed and written, off the loop that drains the queue.
    capture_writes: JoinSet<CaptureWrite>,
    /// Set when the runtime refuses blocking work: it is shutting down.
    cancelled: bool,
}

impl Worker {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(self.flush.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.cancelled {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => self.run_job(job).await,
                    None => break,
                },
                _ = tick.tick() => self.flush_all().await,
                _ = &mut stop => {
                    while let Ok(job) = jobs.try_recv() {
                        self.run_job(job).await;
                    }
                    break;
                }
            }
        }
        if self.cancelled {
            tracing::warn!("the runtime stopped under the shadow recorder: buffered records are lost");
            return;
        }
        self.flush_all().await;
        self.finish_capture_writes().await;
    }

    async fn run_job(&mut self, job: Job) {
        match job {
            Job::Rows(answered) => self.score(answered).await,
            Job::Batch(batch) => {
                if batch.capture {
                    self.capture_batch(&batch).await;
                }
                let ServedBatch { time, primary, input, rows, shadow, .. } = batch;
                if shadow && let Err(e) = self.score_batch(time, &primary, &input).await {
                    tracing::warn!(primary = %primary.model_ver(), input = %input, error = %e, "cannot shadow a batch");
                    for shadow in self.pairs.get(&primary.model_ver()).into_iter().flatten() {
                        self.metrics.shadow_dropped(*shadow, RecordDrop::Failed, rows as usize);
                    }
                }
            }
        }
    }

    /// Writes a batch's capture object: its keys, not its rows (its input is
    /// in the bucket already), so it is written at once rather than buffered.
    async fn capture_batch(&self, batch: &ServedBatch) {
        let model_ver = batch.primary.model_ver();
        let captured = CapturedBatch {
            time: batch.time,
            model: model_ver,
            run: batch.primary.run_id().clone(),
            request_id: batch.request_id.clone(),
            input_key: batch.input.to_string(),
            output_key: batch.output.to_string(),
            rows: batch.rows,
            share: self.capture_share,
        };
        match capture::write_batch(&self.bucket, &captured).await {
            Ok(key) => {
                tracing::debug!(%key, input = %batch.input, "batch captured");
                self.metrics.captured(model_ver, batch.rows as usize);
            }
            Err(e) => {
                tracing::error!(%model_ver, input = %batch.input, error = %e, "cannot capture a batch");
                self.metrics.capture_dropped(model_ver, RecordDrop::Unwritten, batch.rows as usize);
            }
        }
    }

    /// Reads a batch's input again and scores it chunk by chunk, the primary
    /// on the reading thread (the same run, so the same answers it wrote) and
    /// the shadows as for online rows. A failure part-way leaves the chunks
    /// scored so far recorded.
    async fn score_batch(
        &mut self,
        time: DateTime<Utc>,
        primary: &Arc<Serving>,
        input: &BucketKey,
    ) -> Result<(), String> {
        let mut needed: BTreeSet<String> = primary.run.model.required_attributes().iter().cloned().collect();
        for shadow in self.pairs.get(&primary.model_ver()).into_iter().flatten() {
            if let Some(serving) = self.models.current(*shadow) {
                needed.extend(serving.run.model.required_attributes().iter().cloned());
            }
        }
        let download = self.bucket.reader(input).await.map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::channel::<(KeywordRows, Vec<f64>)>(BATCH_HANDOFF);
        let model = primary.run.model.clone();
        let name = input.to_string();
        let reading = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let attributes = Attributes::Only(needed.into_iter().collect());
            let mut reader =
                TableReader::open(&name, SyncIoBridge::new(download), TableKind::PredictionInput, attributes)
                    .map_err(|e| e.to_string())?;
            while let Some(rows) = reader.next_rows().map_err(|e| e.to_string())? {
                let cr = model.predict(&rows).map_err(|e| e.to_string())?;
                if tx.blocking_send((rows, cr)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        while let Some((rows, cr)) = rx.recv().await {
            let answered = Answered {
                time,
                primary: primary.clone(),
                rows,
                cr,
                shadow: true,
                capture: Sampled::None,
                request_id: String::new(),
            };
            self.score(answered).await;
        }
        reading.await.map_err(|e| format!("the reading thread failed: {e}"))?
    }

    async fn score(&mut self, job: Answered) {
        self.capture(&job).await;
        if !job.shadow {
            return;
        }
        let primary = job.primary.model_ver();
        let shadows = self.pairs.get(&primary).cloned().unwrap_or_default();
        let rows = Arc::new(job.rows);
        let record = |model: ModelVer, run: &crs_platform::storage::layout::RunId, cr: &[f64]| {
            cr.iter()
                .enumerate()
                .map(|(i, &cr)| ShadowRow {
                    time: job.time,
                    model,
                    run: run.clone(),
                    entity_id: rows.entity_id[i],
                    device: rows.device[i],
                    cr,
                })
                .collect::<Vec<_>>()
        };
        let mut recorded = record(primary, job.primary.run_id(), &job.cr);
        for shadow in shadows {
            let Some(serving) = self.models.current(shadow) else {
                self.metrics.shadow_dropped(shadow, RecordDrop::NotLoaded, rows.len());
                continue;
            };
            let model = serving.run.model.clone();
            let input = rows.clone();
            // The CPU work of a tree ensemble: off the async workers.
            match tokio::task::spawn_blocking(move || model.predict(&input)).await {
                Ok(Ok(cr)) => {
                    self.metrics.shadow_scored(shadow, cr.len());
                    recorded.extend(record(shadow, serving.run_id(), &cr));
                }
                Ok(Err(e)) => {
                    tracing::warn!(%shadow, %primary, error = %e, "the shadow cannot score the primary's rows");
                    self.metrics.shadow_dropped(shadow, RecordDrop::Failed, rows.len());
                }
                // The runtime is going away (dropped without a graceful stop):
                // nothing more can be scored or written, so the task ends.
                Err(e) if e.is_cancelled() => {
                    self.metrics.shadow_dropped(shadow, RecordDrop::Failed, rows.len());
                    self.cancelled = true;
                    return;
                }
                Err(e) => {
                    tracing::error!(%shadow, error = %e, "shadow scoring panicked");
                    self.metrics.shadow_dropped(shadow, RecordDrop::Failed, rows.len());
                }
            }
        }
        let buffer = self.buffers.entry(primary).or_default();
        buffer.extend(recorded);
        if buffer.len() >= self.flush.rows {
            self.flush_one(primary).await;
        }
    }

    /// Buffers the sampled rows of `job` with the attributes its model read.
    async fn capture(&mut self, job: &Answered) {
        let indices = match &job.capture {
            Sampled::None => return,
            Sampled::All => None,
            Sampled::Rows(picked) => Some(picked.as_slice()),
        };
        let model_ver = job.primary.model_ver();
        let model_names = job.primary.run.model.required_attributes();
        // An object holds rows that read the same attributes: another run may read others.
        if self.captures.get(&model_ver).is_some_and(|c| c.rows.attribute_names() != model_names) {
            self.flush_capture(model_ver).await;
            self.captures.remove(&model_ver);
        }
        // The buffer's names are shared by every row projected into it: a
        // request costs no copy of them (a model may read hundreds).
        let buffer = self.captures.entry(model_ver).or_insert_with(|| CapturedRows::new(model_ver, model_names.into()));
        let Some(rows) = job.rows.project(indices, buffer.rows.shared_attribute_names().clone()) else {
            // The model answered, so it had its attributes: this cannot happen, but must not panic.
            self.metrics.capture_dropped(model_ver, RecordDrop::Failed, job.capture.count(job.rows.len()));
            return;
        };
        let cr: Vec<f64> = match indices {
            None => job.cr.clone(),
            Some(picked) => picked.iter().map(|&i| job.cr[i]).collect(),
        };
        buffer.extend(job.time, job.primary.run_id(), &job.request_id, &rows, &cr);
        if buffer.len() >= self.flush.rows {
            self.flush_capture(model_ver).await;
        }
    }

    /// Hands the buffered captured rows of `model_ver` to a write of their
    /// own, so that the queue keeps draining while they are compressed and
    /// written; waits only when [`CAPTURE_WRITES`] writes are under way already.
    async fn flush_capture(&mut self, model_ver: ModelVer) {
        let Some(buffer) = self.captures.get_mut(&model_ver).filter(|rows| !rows.is_empty()) else { return };
        let captured =
            std::mem::replace(buffer, CapturedRows::new(model_ver, buffer.rows.shared_attribute_names().clone()));
        while self.capture_writes.len() >= CAPTURE_WRITES {
            self.reap_capture_write().await;
        }
        let (bucket, metrics) = (self.bucket.clone(), self.metrics.clone());
        self.capture_writes.spawn(async move {
            let (bytes, captured) =
                match tokio::task::spawn_blocking(move || (capture::encode(&captured), captured)).await {
                    Ok(encoded) => encoded,
                    Err(e) => return CaptureWrite::Stopped(e),
                };
            match capture::write_encoded(&bucket, model_ver, bytes).await {
                Ok(key) => {
                    tracing::debug!(%key, rows = captured.len(), "captured rows written");
                    metrics.captured(model_ver, captured.len());
                    CaptureWrite::Written
                }
                Err(e) => {
                    tracing::error!(%model_ver, rows = captured.len(), error = %e, "cannot write captured rows; will retry");
                    CaptureWrite::Unwritten(captured)
                }
            }
        });
    }

    /// Waits for one capture write ([`Worker::settle_capture_write`]).
    async fn reap_capture_write(&mut self) {
        if let Some(done) = self.capture_writes.join_next().await {
            self.settle_capture_write(done);
        }
    }

    /// Rows the bucket refused are buffered again for the next flush, up to
    /// the same bound as shadow records.
    fn settle_capture_write(&mut self, done: Result<CaptureWrite, tokio::task::JoinError>) {
        match done {
            Ok(CaptureWrite::Written) => {}
            Ok(CaptureWrite::Unwritten(captured)) => {
                let model_ver = captured.model;
                let buffer = self
                    .captures
                    .entry(model_ver)
                    .or_insert_with(|| CapturedRows::new(model_ver, captured.rows.attribute_names().into()));
                if buffer.rows.attribute_names() != captured.rows.attribute_names() {
                    // Another run's rows were buffered meanwhile: these cannot share their object.
                    self.metrics.capture_dropped(model_ver, RecordDrop::Unwritten, captured.len());
                    return;
                }
                let newer = std::mem::replace(buffer, captured);
                buffer.append(newer);
                if buffer.len() >= self.flush.rows.saturating_mul(4) {
                    self.metrics.capture_dropped(model_ver, RecordDrop::Unwritten, buffer.len());
                    self.captures.remove(&model_ver);
                }
            }
            Ok(CaptureWrite::Stopped(e)) | Err(e) => {
                tracing::error!(error = %e, "cannot encode captured rows");
                self.cancelled |= e.is_cancelled();
            }
        }
    }

    /// Every capture write under way, finished.
    async fn finish_capture_writes(&mut self) {
        while !self.capture_writes.is_empty() {
            self.reap_capture_write().await;
        }
    }

    async fn flush_all(&mut self) {
        let primaries: Vec<ModelVer> = self.buffers.keys().copied().collect();
        for primary in primaries {
            self.flush_one(primary).await;
        }
        // Writes finished since the last flush put back what the bucket refused, retried here.
        while let Some(done) = self.capture_writes.try_join_next() {
            self.settle_capture_write(done);
        }
        let captured: Vec<ModelVer> = self.captures.keys().copied().collect();
        for model_ver in captured {
            self.flush_capture(model_ver).await;
        }
    }

    async fn flush_one(&mut self, primary: ModelVer) {
        let Some(buffer) = self.buffers.get_mut(&primary).filter(|rows| !rows.is_empty()) else { return };
        let rows = std::mem::take(buffer);
        // Compressing a full buffer is CPU work: off the async workers that answer requests.
        let (bytes, mut rows) = match tokio::task::spawn_blocking(move || (shadow::encode(&rows), rows)).await {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::error!(%primary, error = %e, "cannot encode shadow records");
                self.cancelled = e.is_cancelled();
                return;
            }
        };
        match shadow::write_encoded(&self.bucket, primary, bytes).await {
            Ok(key) => tracing::debug!(%key, rows = rows.len(), "shadow records written"),
            // Kept for the next flush, up to a bound: a bucket that stays down
            // must not take the service's memory with it.
            Err(e) => {
                tracing::error!(%primary, rows = rows.len(), error = %e, "cannot write shadow records; will retry");
                let buffer = self.buffers.entry(primary).or_default();
                rows.append(buffer);
                if rows.len() >= self.flush.rows.saturating_mul(4) {
                    for shadow in self.pairs.get(&primary).into_iter().flatten() {
                        let count = rows.iter().filter(|row| row.model == *shadow).count();
                        self.metrics.shadow_dropped(*shadow, RecordDrop::Unwritten, count);
                    }
                    rows.clear();
                }
                *buffer = rows;
            }
        }
    }
}
