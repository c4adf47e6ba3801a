//! Shadow scoring (`SHADOW_MODELS`): every request a primary answers is queued
//! for its shadows, scored by them on a background task and recorded with the
//! primary's answer in the bucket (crs-platform `shadow.rs`). The request never
//! waits for it: when the queue is full its shadow rows are dropped and counted.
//! A batch is queued as its input key once it has succeeded; the task reads the
//! input again, chunk by chunk, and scores it with both models.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crs_domain::data::{Attributes, KeywordRows, TableKind, TableReader};
use crs_domain::models::ModelVer;
use crs_platform::predictions::shadow::{self, ShadowRow};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use crate::config::ShadowPair;
use crate::metrics::{ServeMetrics, ShadowDrop};
use crate::model::{Models, Serving};

/// Rows a primary answered, waiting for its shadows.
#[derive(Debug)]
struct Answered {
    time: DateTime<Utc>,
    primary: Arc<Serving>,
    rows: KeywordRows,
    cr: Vec<f64>,
}

#[derive(Debug)]
enum Job {
    Rows(Answered),
    /// A batch the primary wrote: its input, scored again off the request path.
    Batch {
        time: DateTime<Utc>,
        primary: Arc<Serving>,
        input: BucketKey,
        rows: u64,
    },
}

/// Chunks of a batch input handed from the reading thread to the task.
const BATCH_HANDOFF: usize = 2;

/// The request side: hands answered rows to the background task.
#[derive(Debug)]
pub struct Shadows {
    /// Each primary's shadows.
    pairs: BTreeMap<ModelVer, Vec<ModelVer>>,
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
    /// No shadows: [`Shadows::offer`] does nothing.
    pub fn none(metrics: Arc<ServeMetrics>) -> Self {
        Shadows { pairs: BTreeMap::new(), queue: None, metrics }
    }

    /// The shadows of `pairs` and the task that scores and records them.
    pub fn start(
        pairs: &[ShadowPair],
        models: Arc<Models>,
        bucket: Bucket,
        queue: usize,
        flush: FlushSettings,
        metrics: Arc<ServeMetrics>,
    ) -> (Self, Option<Recorder>) {
        if pairs.is_empty() {
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
            cancelled: false,
        };
        let task = tokio::spawn(worker.run(rx, stopped));
        (Shadows { pairs: by_primary, queue: Some(tx), metrics }, Some(Recorder { stop, task }))
    }

    /// The primary `model_ver` shadows, if it is a shadow.
    pub fn primary_of(&self, model_ver: ModelVer) -> Option<ModelVer> {
        self.pairs.iter().find(|(_, shadows)| shadows.contains(&model_ver)).map(|(primary, _)| *primary)
    }

    /// Queues `rows`, which `primary` answered with `cr`, for its shadows, if it has any.
    pub fn offer(&self, primary: &Arc<Serving>, rows: KeywordRows, cr: &[f64]) {
        let Some(queue) = &self.queue else { return };
        let Some(shadows) = self.pairs.get(&primary.model_ver()) else { return };
        let count = rows.len();
        let job = Job::Rows(Answered { time: Utc::now(), primary: primary.clone(), rows, cr: cr.to_vec() });
        if queue.try_send(job).is_err() {
            for shadow in shadows {
                self.metrics.shadow_dropped(*shadow, ShadowDrop::QueueFull, count);
            }
        }
    }

    /// Queues a batch `primary` predicted from `input` (`rows` data rows) for its shadows, if it has any.
    pub fn offer_batch(&self, primary: &Arc<Serving>, input: BucketKey, rows: u64) {
        let Some(queue) = &self.queue else { return };
        let Some(shadows) = self.pairs.get(&primary.model_ver()) else { return };
        let job = Job::Batch { time: Utc::now(), primary: primary.clone(), input, rows };
        if queue.try_send(job).is_err() {
            for shadow in shadows {
                self.metrics.shadow_dropped(*shadow, ShadowDrop::QueueFull, rows as usize);
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
    }

    async fn run_job(&mut self, job: Job) {
        match job {
            Job::Rows(answered) => self.score(answered).await,
            Job::Batch { time, primary, input, rows } => {
                if let Err(e) = self.score_batch(time, &primary, &input).await {
                    tracing::warn!(primary = %primary.model_ver(), input = %input, error = %e, "cannot shadow a batch");
                    for shadow in self.pairs.get(&primary.model_ver()).into_iter().flatten() {
                        self.metrics.shadow_dropped(*shadow, ShadowDrop::Failed, rows as usize);
                    }
                }
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
            self.score(Answered { time, primary: primary.clone(), rows, cr }).await;
        }
        reading.await.map_err(|e| format!("the reading thread failed: {e}"))?
    }

    async fn score(&mut self, job: Answered) {
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
                self.metrics.shadow_dropped(shadow, ShadowDrop::NotLoaded, rows.len());
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
                    self.metrics.shadow_dropped(shadow, ShadowDrop::Failed, rows.len());
                }
                // The runtime is going away (dropped without a graceful stop):
                // nothing more can be scored or written, so the task ends.
                Err(e) if e.is_cancelled() => {
                    self.metrics.shadow_dropped(shadow, ShadowDrop::Failed, rows.len());
                    self.cancelled = true;
                    return;
                }
                Err(e) => {
                    tracing::error!(%shadow, error = %e, "shadow scoring panicked");
                    self.metrics.shadow_dropped(shadow, ShadowDrop::Failed, rows.len());
                }
            }
        }
        let buffer = self.buffers.entry(primary).or_default();
        buffer.extend(recorded);
        if buffer.len() >= self.flush.rows {
            self.flush_one(primary).await;
        }
    }

    async fn flush_all(&mut self) {
        let primaries: Vec<ModelVer> = self.buffers.keys().copied().collect();
        for primary in primaries {
            self.flush_one(primary).await;
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
                        self.metrics.shadow_dropped(*shadow, ShadowDrop::Unwritten, count);
                    }
                    rows.clear();
                }
                *buffer = rows;
            }
        }
    }
}
