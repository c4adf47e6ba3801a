//! Training jobs: the in-memory registry, the queue in front of the CPU, and the
//! runner that takes one job from its inputs in the bucket to a promoted run.
//!
//! Every state a job passes through is appended to its log, a `watch` channel.
//! Readers take the last entry; watchers walk the log from where they joined, so
//! a slow watcher still sees every stage instead of only the newest one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crs_core::data::DataError;
use crs_core::evaluation::{self, Evaluation, TrainError, TrainingRun, train_and_evaluate};
use crs_core::models::{ParamError, RegisteredVersion, lookup};
use crs_core::storage::{
    ArtifactRecord, BucketKey, DataRecord, ModelStore, RunId, RunMetadata, RunMetrics, ServiceRecord, StageTiming,
    StorageError,
};
use crs_core::training::{InputKeys, Inputs, PreparedData, default_config_key};
use crs_core::webhook::{Notice, Notifier, Outcome};
use futures::Stream;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::status::ApiError;

/// Recorded in every run's metadata as the service that wrote it.
pub const SERVICE_NAME: &str = "train-service";

/// How long jobs cut off by shutdown get to notice it. Only a job in the middle
/// of writing its run needs it: saving is never interrupted halfway.
const CUT_OFF_WAIT: Duration = Duration::from_secs(10);

/// What a caller asks for; empty and unset fields take the server's defaults.
#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    pub model_ver: String,
    pub train_key: String,
    pub eval_key: Option<String>,
    pub config_key: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// The stages of a running job, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobStage {
    /// Fetching data and config from the bucket, validating and aggregating them.
    LoadingData,
    /// Fitting the feature pipeline.
    Preparing,
    Training,
    /// Scoring the model and the baselines.
    Evaluating,
    /// Writing the run and moving LATEST.
    Saving,
}

impl JobStage {
    /// The share of the job done when the stage starts. Stages only report when
    /// they start, so these are fixed estimates of where the time goes.
    fn progress(self) -> f32 {
        match self {
            JobStage::LoadingData => 0.0,
            JobStage::Preparing => 0.3,
            JobStage::Training => 0.4,
            JobStage::Evaluating => 0.8,
            JobStage::Saving => 0.9,
        }
    }

    /// The stage's name in run metadata.
    fn name(self) -> &'static str {
        match self {
            JobStage::LoadingData => "loading_data",
            JobStage::Preparing => "preparing",
            JobStage::Training => "training",
            JobStage::Evaluating => "evaluating",
            JobStage::Saving => "saving",
        }
    }
}

impl From<evaluation::Stage> for JobStage {
    fn from(stage: evaluation::Stage) -> Self {
        match stage {
            evaluation::Stage::Preparing => JobStage::Preparing,
            evaluation::Stage::Training => JobStage::Training,
            evaluation::Stage::Evaluating => JobStage::Evaluating,
        }
    }
}

/// One job as it is at one moment.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub model_ver: String,
    pub state: JobState,
    /// The current stage; the last one reached once the job has ended.
    pub stage: Option<JobStage>,
    pub progress: f32,
    pub keys: InputKeys,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub run_id: Option<RunId>,
    pub error: Option<String>,
    /// The evaluation-set scores, once the job has succeeded.
    pub evaluation: Option<Evaluation>,
}

/// Why a job failed; its message is the job's `error`.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("training stopped unexpectedly: {0}")]
    Crashed(String),
    #[error("saving the run: {0}")]
    Save(#[source] StorageError),
    #[error("moving LATEST: {0}")]
    Promote(#[source] StorageError),
    #[error("cancelled by shutdown before it started")]
    NotStarted,
    #[error("cut off by shutdown: still running when the grace period ended")]
    CutOff,
}

/// The jobs of this process. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct Jobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: ModelStore,
    notifier: Notifier,
    default_model_ver: String,
    /// One permit per job allowed to run; the rest wait here, first come first served.
    slots: Arc<Semaphore>,
    registry: Mutex<Registry>,
    next_seq: AtomicU64,
    tasks: TaskTracker,
    /// Shutdown has begun: no new jobs, and queued ones never start.
    draining: CancellationToken,
    /// The grace period is over: running jobs stop where they are.
    cut_off: CancellationToken,
}

#[derive(Debug, Default)]
struct Registry {
    /// In creation order.
    logs: Vec<JobLog>,
    by_id: HashMap<String, usize>,
}

/// Every state of one job, oldest first; never empty.
#[derive(Clone, Debug)]
struct JobLog(watch::Sender<Vec<Job>>);

impl JobLog {
    fn new(job: Job) -> Self {
        JobLog(watch::Sender::new(vec![job]))
    }

    fn current(&self) -> Job {
        self.0.borrow().last().cloned().expect("a job's log starts with its creation")
    }

    fn update(&self, change: impl FnOnce(&mut Job)) {
        self.0.send_modify(|log| {
            let mut next = log.last().cloned().expect("a job's log starts with its creation");
            change(&mut next);
            log.push(next);
        });
    }

    fn enter(&self, stage: JobStage) {
        self.update(|job| {
            job.stage = Some(stage);
            job.progress = stage.progress();
        });
    }

    /// The current state, then every later one, ending after the terminal state.
    fn updates(&self) -> impl Stream<Item = Job> + Send + 'static + use<> {
        let receiver = self.0.subscribe();
        let current = receiver.borrow().len() - 1;
        futures::stream::unfold(Some((receiver, current)), |state| async move {
            let (mut receiver, next) = state?;
            loop {
                let job = receiver.borrow_and_update().get(next).cloned();
                if let Some(job) = job {
                    let rest = (!job.state.is_terminal()).then_some((receiver, next + 1));
                    return Some((job, rest));
                }
                receiver.changed().await.ok()?;
            }
        })
    }
}

/// A job's model and everything its metadata needs, between training and saving.
struct Trained {
    params: serde_json::Value,
    config: DataRecord,
    data: PreparedData,
    run: TrainingRun,
    loading_seconds: f64,
}

impl Jobs {
    pub fn new(store: ModelStore, notifier: Notifier, default_model_ver: &str, max_concurrent_jobs: usize) -> Self {
        Jobs {
            inner: Arc::new(Inner {
                store,
                notifier,
                default_model_ver: default_model_ver.to_owned(),
                slots: Arc::new(Semaphore::new(max_concurrent_jobs.max(1))),
                registry: Mutex::default(),
                next_seq: AtomicU64::new(1),
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
                cut_off: CancellationToken::new(),
            }),
        }
    }

    /// Checks the request, queues the job and returns it in state QUEUED. Bad
    /// requests are refused here rather than failing later as jobs.
    pub async fn start(&self, request: StartRequest) -> Result<Job, ApiError> {
        let model_ver = if request.model_ver.is_empty() { &self.inner.default_model_ver } else { &request.model_ver };
        let version = lookup(model_ver)?;
        let train_key = match request.train_key.as_str() {
            "" => crs_core::sample_data::TRAIN_KEY,
            key => key,
        };
        let keys = InputKeys {
            train: BucketKey::parse(train_key)?,
            eval: request.eval_key.as_deref().map(BucketKey::parse).transpose()?,
            config: match &request.config_key {
                Some(key) => BucketKey::parse(key)?,
                None => default_config_key(version.name())?,
            },
            config_required: request.config_key.is_some(),
        };
        let mut required = vec![("training data", &keys.train)];
        if let Some(key) = &keys.eval {
            required.push(("evaluation data", key));
        }
        if keys.config_required {
            required.push(("config", &keys.config));
        }
        for (what, key) in required {
            if !self.inner.store.bucket().exists(key).await? {
                return Err(ApiError::MissingObject { what, key: key.to_string() });
            }
        }

        let now = Utc::now();
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            id: format!("job-{}-{seq}", now.format("%Y%m%dT%H%M%S%3fZ")),
            model_ver: version.name().to_owned(),
            state: JobState::Queued,
            stage: None,
            progress: 0.0,
            keys,
            labels: request.labels,
            created_at: now,
            started_at: None,
            finished_at: None,
            run_id: None,
            error: None,
            evaluation: None,
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
            self.inner.tasks.spawn(self.inner.clone().run(log, version));
        }
        tracing::info!(job_id = %job.id, model_ver = %job.model_ver, train_key = %job.keys.train, "job queued");
        Ok(job)
    }

    pub fn get(&self, job_id: &str) -> Result<Job, ApiError> {
        self.inner.log(job_id).map(|log| log.current())
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<Job> {
        self.inner.registry().logs.iter().rev().map(JobLog::current).collect()
    }

    /// The job's current state, then every change until it ends.
    pub fn watch(&self, job_id: &str) -> Result<impl Stream<Item = Job> + Send + 'static, ApiError> {
        self.inner.log(job_id).map(|log| log.updates())
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

    /// Runs one job to its end, whatever happens, and records how it ended.
    async fn run(self: Arc<Self>, log: JobLog, version: &'static dyn RegisteredVersion) {
        let slot = tokio::select! {
            biased;
            () = self.draining.cancelled() => None,
            slot = self.slots.clone().acquire_owned() => slot.ok(),
        };
        let Some(_slot) = slot else {
            return self.fail(&log, JobError::NotStarted);
        };

        let started_at = Utc::now();
        let run_id = RunId::generate(started_at);
        log.update(|job| {
            job.state = JobState::Running;
            job.started_at = Some(started_at);
            job.run_id = Some(run_id.clone());
            job.stage = Some(JobStage::LoadingData);
            job.progress = JobStage::LoadingData.progress();
        });
        let job = log.current();
        tracing::info!(job_id = %job.id, run_id = %run_id, "job started");
        self.notifier.notify(
            Notice::new(
                Outcome::Started,
                format!("Training job {} started: model {}, run {run_id}", job.id, job.model_ver),
            )
            .field("Training data", &job.keys.train)
            .field(
                "Evaluation data",
                job.keys.eval.as_ref().map_or_else(|| "holdout of the training data".to_owned(), ToString::to_string),
            )
            .field("Config", &job.keys.config),
        );

        // Loading and training can stop anywhere: nothing is written yet.
        let trained = tokio::select! {
            biased;
            () = self.cut_off.cancelled() => Err(JobError::CutOff),
            trained = self.train(&log, version) => trained,
        };
        let saved = match trained {
            Ok(trained) => self.save(&log, &job, run_id, trained).await,
            Err(e) => Err(e),
        };
        match saved {
            Ok(metadata) => self.succeed(&log, metadata),
            Err(e) => self.fail(&log, e),
        }
    }

    async fn train(&self, log: &JobLog, version: &'static dyn RegisteredVersion) -> Result<Trained, JobError> {
        let started = Instant::now();
        let job = log.current();
        let inputs = Inputs::fetch(self.store.bucket(), job.keys).await?;
        let (params, config) = inputs.params(version)?;
        let stages = log.clone();
        let fit_params = params.clone();
        // Parsing, validating and fitting are CPU work: keep them off the async workers.
        let (data, run, loading_seconds) = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
            let data = inputs.prepare()?;
            let loading_seconds = started.elapsed().as_secs_f64();
            let run = train_and_evaluate(version, &fit_params, &data.train, &data.eval, |stage| {
                stages.enter(stage.into());
            })?;
            Ok((data, run, loading_seconds))
        })
        .await
        .map_err(|e| JobError::Crashed(e.to_string()))??;
        Ok(Trained { params, config, data, run, loading_seconds })
    }

    /// Writes the run, then moves LATEST to it. Once started, a save is not
    /// interrupted: a run is either complete and kept, or removed.
    async fn save(&self, log: &JobLog, job: &Job, run_id: RunId, trained: Trained) -> Result<RunMetadata, JobError> {
        if self.cut_off.is_cancelled() {
            return Err(JobError::CutOff);
        }
        log.enter(JobStage::Saving);
        let started = Instant::now();
        let Trained { params, config, data, run, loading_seconds } = trained;
        let mut stage_seconds =
            vec![StageTiming { stage: JobStage::LoadingData.name().to_owned(), seconds: loading_seconds }];
        stage_seconds.extend(
            run.seconds
                .iter()
                .map(|&(stage, seconds)| StageTiming { stage: JobStage::from(stage).name().to_owned(), seconds }),
        );
        let mut metadata = RunMetadata {
            model_ver: job.model_ver.clone(),
            run_id,
            job_id: job.id.clone(),
            state: "succeeded".to_owned(),
            created_at: job.created_at,
            started_at: job.started_at.unwrap_or(job.created_at),
            finished_at: Utc::now(),
            labels: job.labels.clone(),
            hyperparameters: params,
            config,
            eval_source: data.eval_source().to_owned(),
            train_data: data.train_record,
            eval_data: data.eval_record,
            profile: data.profile,
            features: run.model.features.feature_names(),
            metrics: RunMetrics { train: run.train, eval: run.eval },
            stage_seconds,
            // save_run fills this in from the bytes it writes.
            artifact: ArtifactRecord { file: String::new(), sha256: String::new(), size_bytes: 0, format_version: 0 },
            service: ServiceRecord { name: SERVICE_NAME.to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() },
        };
        self.store.save_run(&run.model, &mut metadata).await.map_err(JobError::Save)?;
        if self.cut_off.is_cancelled() {
            self.discard(&metadata).await;
            return Err(JobError::CutOff);
        }
        match self.store.promote(&metadata.model_ver, &metadata.run_id).await {
            Ok(moved) => {
                tracing::info!(
                    job_id = %job.id,
                    run_id = %metadata.run_id,
                    latest_moved = moved,
                    seconds = started.elapsed().as_secs_f64(),
                    "run saved"
                );
                Ok(metadata)
            }
            Err(e) => {
                self.discard(&metadata).await;
                Err(JobError::Promote(e))
            }
        }
    }

    /// Removes a written run of a job that then failed: failed jobs leave nothing behind.
    async fn discard(&self, metadata: &RunMetadata) {
        if let Err(e) = self.store.delete_run(&metadata.model_ver, &metadata.run_id).await {
            tracing::error!(run_id = %metadata.run_id, error = %e, "could not remove the run of a failed job");
        }
    }

    fn succeed(&self, log: &JobLog, metadata: RunMetadata) {
        let eval = metadata.metrics.eval;
        log.update(|job| {
            job.state = JobState::Succeeded;
            job.progress = 1.0;
            job.finished_at = Some(metadata.finished_at);
            job.evaluation = Some(eval.clone());
        });
        let job = log.current();
        tracing::info!(job_id = %job.id, run_id = %metadata.run_id, eval_wmae = eval.model.wmae, "job succeeded");
        self.notifier.notify(
            Notice::new(
                Outcome::Succeeded,
                format!("Training job {} succeeded: model {}, run {}", job.id, job.model_ver, metadata.run_id),
            )
            .field("Eval wMAE (model)", format!("{:.6}", eval.model.wmae))
            .field("Eval wMAE (device baseline)", format!("{:.6}", eval.device.wmae))
            .field("Eval log-loss (model)", format!("{:.6}", eval.model.logloss))
            .field("Run", &metadata.run_id),
        );
    }

    fn fail(&self, log: &JobLog, error: JobError) {
        let reason = error.to_string();
        log.update(|job| {
            job.state = JobState::Failed;
            job.finished_at = Some(Utc::now());
            job.error = Some(reason.clone());
        });
        let job = log.current();
        tracing::warn!(job_id = %job.id, error = %reason, "job failed");
        self.notifier.notify(
            Notice::new(Outcome::Failed, format!("Training job {} failed: {reason}", job.id))
                .field("Model", &job.model_ver)
                .field("Training data", &job.keys.train),
        );
    }
}
