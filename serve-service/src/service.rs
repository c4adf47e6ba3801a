//! The ServeService gRPC methods: thin wrappers over the model slots and the
//! platform's batch engine.

use std::sync::Arc;

use crs_domain::models::ModelVer;
use crs_platform::notify::webhook::{Notice, Outcome};
use crs_platform::predictions::batch::{BatchError, BatchOptions, DeviceColumn, predict_batch};
use crs_platform::predictions::shards::{Shard, ShardModel, ShardReport, predict_shard};
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::{InputPrefix, OutputKeyError, OutputPrefix};
use crs_proto::serve::serve_service_server::ServeService;
use crs_proto::serve::{
    BatchFile, DeviceFormat, GetModelRequest, LoadModelRequest, ModelInfo, PredictBatchRequest, PredictBatchResponse,
    PredictRequest, PredictResponse,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::convert::{keyword_rows, loaded_model, model_choice, model_info};
use crate::metrics::{Call, ServeMetrics};
use crate::model::{Models, Selection, Serving};
use crate::shadow::Shadows;
use crate::status::ServeError;

/// Where and how batches write their output, and how many run at once.
#[derive(Clone, Debug)]
pub struct BatchSettings {
    pub output_prefix: OutputPrefix,
    pub device_column: DeviceColumn,
    pub max_concurrent: usize,
}

/// What a batch request's input key names.
enum BatchInput {
    File(BucketKey),
    /// Every file under it, or a shard of them.
    Prefix(InputPrefix),
}

#[derive(Clone, Debug)]
pub struct Service {
    models: Arc<Models>,
    shadows: Arc<Shadows>,
    max_predict_rows: usize,
    batch: BatchSettings,
    /// One permit per batch that may run (MAX_CONCURRENT_BATCHES).
    batches: Arc<Semaphore>,
    /// Cancelled when shutdown's grace period ends: batches still running stop.
    cut_off: CancellationToken,
    metrics: Arc<ServeMetrics>,
}

impl Service {
    pub fn new(
        models: Arc<Models>,
        shadows: Arc<Shadows>,
        max_predict_rows: usize,
        batch: BatchSettings,
        cut_off: CancellationToken,
        metrics: Arc<ServeMetrics>,
    ) -> Self {
        let batches = Arc::new(Semaphore::new(batch.max_concurrent));
        Service { models, shadows, max_predict_rows, batch, batches, cut_off, metrics }
    }

    /// `ModelInfo` of `serving`, with every loaded version beside it.
    fn info(&self, serving: &Serving) -> ModelInfo {
        let loaded =
            self.models.loaded().iter().map(|s| loaded_model(s, self.shadows.primary_of(s.model_ver()))).collect();
        model_info(serving, loaded)
    }

    /// Labels a call with the model a request names, or the default one.
    fn label(&self, call: &mut Call<'_>, model_ver: &str) {
        if model_ver.is_empty() {
            call.model(self.models.default_ver());
        } else {
            call.model_named(model_ver);
        }
    }

    async fn batch(&self, request: PredictBatchRequest) -> Result<PredictBatchResponse, ServeError> {
        // Refused rather than queued: a batch takes minutes, and a client told
        // RESOURCE_EXHAUSTED can back off instead of holding a call open.
        let _permit = Arc::clone(&self.batches)
            .try_acquire_owned()
            .map_err(|_| ServeError::TooManyBatches { max: self.batch.max_concurrent })?;
        let input = if InputPrefix::is_prefix(&request.input_key) {
            BatchInput::Prefix(InputPrefix::parse(&request.input_key)?)
        } else {
            BatchInput::File(BucketKey::parse(&request.input_key)?)
        };
        let (model_ver, run) = model_choice(&request.model_ver, &request.run_id)?;
        let serving = self.models.require(model_ver, run.as_ref())?;
        let device_column = match request.device_format() {
            DeviceFormat::Unspecified => self.batch.device_column,
            DeviceFormat::Name => DeviceColumn::Name,
            DeviceFormat::Code => DeviceColumn::Code,
        };
        let fail_point = *self.models.store().fail_point();
        let options = BatchOptions { device_column, fail_point, ..BatchOptions::default() };
        let input = match input {
            BatchInput::File(file) => file,
            BatchInput::Prefix(prefix) => return self.batch_prefix(request, prefix, &serving, options).await,
        };
        if request.shard.is_some() {
            return Err(ServeError::InvalidRequest(format!(
                "shard: {} is one file; only a prefix (ending in '/') is split into shards",
                request.input_key
            )));
        }
        let bucket = self.models.store().bucket();
        let output = match &request.output_key {
            Some(key) => {
                let key = BucketKey::parse(key)?;
                self.batch.output_prefix.check(&key)?;
                // Checked before the upload starts; a key created by another writer
                // between this check and the upload's completion is replaced.
                if !request.overwrite && bucket.exists(&key).await.map_err(BatchError::from)? {
                    return Err(OutputKeyError::Exists { key: key.to_string() }.into());
                }
                key
            }
            // The run's own output: rewriting it with the same run is the normal rerun.
            None => self.batch.output_prefix.default_key(serving.model_ver(), serving.run_id()),
        };
        let model = serving.run.model.clone();
        // Dropping the batch when cut off aborts its upload.
        let report = tokio::select! {
            report = predict_batch(bucket, model, &input, &output, options) => report?,
            () = self.cut_off.cancelled() => return Err(ServeError::CutOff),
        };
        let response = PredictBatchResponse {
            output_key: output.to_string(),
            rows_read: report.rows_read,
            rows_written: report.rows_written,
            seconds: report.seconds,
            model_ver: serving.model_ver().to_string(),
            run_id: serving.run_id().to_string(),
            ..PredictBatchResponse::default()
        };
        self.shadows.offer_batch(&serving, input, output, report.rows_read);
        Ok(response)
    }

    /// A batch over every file under a prefix, or the request's shard of them:
    /// each to its own output under the run's output folder.
    async fn batch_prefix(
        &self,
        request: PredictBatchRequest,
        input: InputPrefix,
        serving: &Arc<Serving>,
        options: BatchOptions,
    ) -> Result<PredictBatchResponse, ServeError> {
        if let Some(key) = &request.output_key {
            return Err(ServeError::InvalidRequest(format!(
                "output_key {key}: a prefix's files are each written under the run's output folder; leave it unset"
            )));
        }
        let shard = match request.shard {
            Some(shard) => Shard::new(shard.index, shard.count)?,
            None => Shard::WHOLE,
        };
        let model = ShardModel {
            model: serving.run.model.clone(),
            model_ver: serving.model_ver(),
            run_id: serving.run_id().clone(),
        };
        let bucket = self.models.store().bucket();
        let started = std::time::Instant::now();
        let report = tokio::select! {
            report = predict_shard(bucket, &model, &input, &self.batch.output_prefix, shard, options) => report?,
            () = self.cut_off.cancelled() => return Err(ServeError::CutOff),
        };
        for file in report.files.iter().filter(|file| !file.skipped) {
            self.shadows.offer_batch(serving, file.input_key.clone(), file.output_key.clone(), file.rows_read);
        }
        Ok(shard_response(&report, serving, started.elapsed().as_secs_f64()))
    }
}

/// A shard's report as the wire carries it.
pub fn shard_response(report: &ShardReport, serving: &Serving, seconds: f64) -> PredictBatchResponse {
    PredictBatchResponse {
        output_key: report.output.folder().to_string(),
        rows_read: report.rows_read(),
        rows_written: report.rows_written(),
        seconds,
        model_ver: serving.model_ver().to_string(),
        run_id: serving.run_id().to_string(),
        files: report
            .files
            .iter()
            .map(|file| BatchFile {
                input_key: file.input_key.to_string(),
                output_key: file.output_key.to_string(),
                input_sha256: file.input_sha256.clone(),
                rows_read: file.rows_read,
                rows_written: file.rows_written,
                seconds: file.seconds,
                skipped: file.skipped,
            })
            .collect(),
        summary_key: report.summary.as_ref().map(ToString::to_string).unwrap_or_default(),
        inputs: u32::try_from(report.inputs).unwrap_or(u32::MAX),
    }
}

impl Service {
    fn predict_rows(&self, request: &PredictRequest, call: &mut Call<'_>) -> Result<PredictResponse, ServeError> {
        let (model_ver, run) = model_choice(&request.model_ver, &request.run_id)?;
        let rows = keyword_rows(request, self.max_predict_rows)?;
        let serving = self.models.require(model_ver, run.as_ref())?;
        call.model(serving.model_ver());
        let cr = self.shadows.predict(&serving, rows)?;
        Ok(PredictResponse { cr, model_ver: serving.model_ver().to_string(), run_id: serving.run_id().to_string() })
    }

    pub(crate) async fn batch_and_report(
        &self,
        request: PredictBatchRequest,
    ) -> Result<PredictBatchResponse, ServeError> {
        let input_key = request.input_key.clone();
        let cancelled = Cancelled { metrics: &self.metrics, input_key: &input_key, ended: false };
        let result = self.batch(request).await;
        cancelled.ended();
        match result {
            Ok(response) => {
                tracing::info!(input = %input_key, output = %response.output_key, rows = response.rows_written, seconds = response.seconds, "batch done");
                self.models.notifier().notify(
                    Notice::new(Outcome::Succeeded, format!("batch prediction of {input_key} succeeded"))
                        .field("output", &response.output_key)
                        .field("rows", response.rows_written)
                        .field("model", format!("{} run {}", response.model_ver, response.run_id))
                        .field("seconds", format!("{:.2}", response.seconds)),
                );
                Ok(response)
            }
            Err(e) => {
                tracing::warn!(input = %input_key, error = %e, "batch failed");
                self.models.notifier().notify(
                    Notice::new(Outcome::Failed, format!("batch prediction of {input_key} failed")).field("reason", &e),
                );
                Err(e)
            }
        }
    }

    async fn load(&self, request: LoadModelRequest, call: &mut Call<'_>) -> Result<ModelInfo, ServeError> {
        let model_ver = ModelVer::parse(&request.model_ver)?;
        call.model(model_ver);
        let selection: Selection = request.run.parse()?;
        let serving = self.models.select(model_ver, selection).await?;
        Ok(self.info(&serving))
    }
}

/// Reports a batch whose future is dropped before it ends: tonic drops it when
/// the client's deadline (`grpc-timeout`) passes or the client goes away.
/// Dropping it stops the work (see `predict_batch`); this says so.
struct Cancelled<'a> {
    metrics: &'a ServeMetrics,
    input_key: &'a str,
    ended: bool,
}

impl Cancelled<'_> {
    fn ended(mut self) {
        self.ended = true;
    }
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if !self.ended {
            tracing::warn!(input = %self.input_key, "batch cancelled (deadline passed or client gone); its output upload is aborted");
            self.metrics.batch_cancelled();
        }
    }
}

// Each method counts and times itself: the model it is about is known only inside.
#[tonic::async_trait]
impl ServeService for Service {
    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let mut call = self.metrics.call("Predict");
        self.models.resolve(&request.get_ref().model_ver).await;
        self.label(&mut call, &request.get_ref().model_ver);
        let result = self.predict_rows(request.get_ref(), &mut call);
        call.finish(result.map(Response::new).map_err(Status::from))
    }

    async fn predict_batch(
        &self,
        request: Request<PredictBatchRequest>,
    ) -> Result<Response<PredictBatchResponse>, Status> {
        let mut call = self.metrics.call("PredictBatch");
        self.models.resolve(&request.get_ref().model_ver).await;
        self.label(&mut call, &request.get_ref().model_ver);
        let result = self.batch_and_report(request.into_inner()).await;
        if let Ok(response) = &result
            && let Ok(model_ver) = ModelVer::parse(&response.model_ver)
        {
            self.metrics.batch_done(model_ver, response.rows_written, response.seconds);
        }
        call.finish(result.map(Response::new).map_err(Status::from))
    }

    async fn get_model(&self, request: Request<GetModelRequest>) -> Result<Response<ModelInfo>, Status> {
        let mut call = self.metrics.call("GetModel");
        let request = request.into_inner();
        self.models.resolve(&request.model_ver).await;
        self.label(&mut call, &request.model_ver);
        let result = model_choice(&request.model_ver, &request.run_id)
            .and_then(|(model_ver, run)| self.models.require(model_ver, run.as_ref()))
            .map(|serving| self.info(&serving));
        call.finish(result.map(Response::new).map_err(Status::from))
    }

    async fn load_model(&self, request: Request<LoadModelRequest>) -> Result<Response<ModelInfo>, Status> {
        let mut call = self.metrics.call("LoadModel");
        self.models.resolve(&request.get_ref().model_ver).await;
        let result = self.load(request.into_inner(), &mut call).await;
        call.finish(result.map(Response::new).map_err(Status::from))
    }
}
