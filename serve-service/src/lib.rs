//! serve-service: loads the selected model runs from the bucket (one per model
//! version it serves) and answers online (`Predict`) and batch (`PredictBatch`)
//! predictions over gRPC, and the Open Inference Protocol beside them, over
//! gRPC (`inference.GRPCInferenceService`) and, on `SERVE_HTTP_ADDR`, over
//! HTTP/REST; shadows score the requests of their primaries in the background.

mod config;
mod convert;
mod inference;
mod metrics;
mod model;
mod service;
mod shadow;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::ModelStore;
use crs_proto::inference::grpc_inference_service_server::{
    GrpcInferenceServiceServer, SERVICE_NAME as INFERENCE_SERVICE,
};
use crs_proto::serve::serve_service_server::{SERVICE_NAME as SERVE_SERVICE, ServeServiceServer};
use crs_proto::serve::{BatchShard, PredictBatchRequest, PredictBatchResponse};
use crs_server::http::HttpTokenRule;
use crs_server::startup::{Drain, ServiceInfo, Startup, WEBHOOK_FLUSH};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::service::Routes;
use tonic_health::ServingStatus;

pub use config::{BatchCommand, Config, ServeCommand, ShadowPair, VersionName};
pub use crs_server::startup::Listeners;
use inference::Inference;
use inference::grpc::GrpcInference;
pub use inference::rest::openapi_document;
use metrics::ServeMetrics;
use model::{Models, ModelsSetup};
use service::{BatchSettings, Service};
use shadow::{FlushSettings, Recorder, Shadows};

const SERVICE: ServiceInfo =
    ServiceInfo { name: config::SERVICE_NAME, grpc_services: &[SERVE_SERVICE, INFERENCE_SERVICE] };

/// Runs the service on `listeners` until `shutdown` resolves, then drains
/// in-flight requests for up to the configured grace period.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut startup = Startup::begin(SERVICE, &config.common).await?;
    let bucket = startup.bucket().clone();
    let served = config.resolve_models(&bucket).await?;
    let metrics = Arc::new(ServeMetrics::new(startup.registry()));
    let setup = ModelsSetup {
        default: (served.default, config.model_run.clone()),
        others: served.others.clone(),
        max_loaded: config.max_loaded_models as usize,
        max_memory_bytes: config.max_model_memory_bytes(),
    };
    let store = ModelStore::new(bucket.clone()).with_fail_point(startup.fail_point());
    let models = Arc::new(Models::new(Catalog::new(store), setup, startup.notifier().clone(), metrics.clone()));
    let flush = FlushSettings { rows: config.shadow_flush_rows as usize, every: config.shadow_flush_interval() };
    let (shadows, recorder) = Shadows::start(
        &served.shadows,
        config.capture_sample,
        models.clone(),
        bucket,
        config.shadow_queue as usize,
        flush,
        metrics.clone(),
    );
    let shadows = Arc::new(shadows);
    let health_follows_slot = AbortOnDropHandle::new(tokio::spawn({
        // The default version decides: requests that name no model need it.
        let mut loaded = models.default_slot().loaded();
        let health = startup.health();
        async move {
            // SERVING while a model is in; an unload turns it back to NOT_SERVING.
            loop {
                let now = *loaded.borrow_and_update();
                health.set(if now { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
                if loaded.changed().await.is_err() {
                    return;
                }
            }
        }
    }));
    models.refresh().await;
    let poller = AbortOnDropHandle::new(tokio::spawn({
        let models = models.clone();
        let metrics = metrics.clone();
        let interval = config.poll_interval();
        async move {
            loop {
                tokio::time::sleep(interval).await;
                models.refresh().await;
                metrics.polled();
            }
        }
    }));

    let open_inference = Arc::new(Inference::new(models.clone(), shadows.clone(), config.max_predict_rows));
    let inference = GrpcInferenceServiceServer::new(GrpcInference::new(open_inference.clone(), metrics.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    startup.http_api(
        metrics::PREFIX,
        inference::rest::router(open_inference, config.max_message_bytes),
        HttpTokenRule::new(crs_proto::serve_rest_access),
    );
    let batch = BatchSettings {
        output_prefix: config.output_prefix.clone(),
        device_column: config.output_device,
        max_concurrent: config.max_concurrent_batches as usize,
    };
    let cut_off = CancellationToken::new();
    let service = Service::new(models, shadows, config.max_predict_rows, batch, cut_off.clone(), metrics);
    let serve = ServeServiceServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    tracing::info!(
        model_ver = %served.default,
        run = %config.model_run.describe(),
        others = ?served.others,
        shadow_models = ?served.shadows,
        capture_sample = config.capture_sample,
        "serve-service configured"
    );
    let drain = ServeDrain { background: [poller, health_follows_slot], cut_off, recorder };
    startup.serve(listeners, Routes::new(serve).add_service(inference), shutdown, drain).await?;
    Ok(())
}

/// serve-service's steps in the shutdown sequence: the poller and the health
/// that follows the default slot stop; batches still running when the grace
/// period ends are cut off; what the answered requests queued for the shadows
/// is written last.
struct ServeDrain {
    background: [AbortOnDropHandle<()>; 2],
    cut_off: CancellationToken,
    recorder: Option<Recorder>,
}

impl Drain for ServeDrain {
    fn stop_accepting(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }

    fn cut_off(&mut self) {
        self.cut_off.cancel();
    }

    async fn finish(&mut self, grace: Duration) {
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(grace).await;
        }
    }
}

/// One batch with the configured model, without serving: what a Kubernetes
/// Job runs. The same code as `PredictBatch` (the run loaded as a slot would
/// load it, the same output keys, skip records and webhooks). On `shutdown`
/// the batch gets the grace period to finish, then is cut off, leaving no
/// partial output.
pub async fn run_batch(
    config: Config,
    command: BatchCommand,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<PredictBatchResponse> {
    let shard = command.shard.shard()?;
    let mut startup = Startup::begin(SERVICE, &config.common).await?;
    let model_ver = config.resolve_model_ver(startup.bucket()).await?;
    let metrics = Arc::new(ServeMetrics::new(startup.registry()));
    let setup = ModelsSetup {
        default: (model_ver, config.model_run.clone()),
        others: Vec::new(),
        max_loaded: 1,
        max_memory_bytes: config.max_model_memory_bytes(),
    };
    let store = ModelStore::new(startup.bucket().clone()).with_fail_point(startup.fail_point());
    let models = Arc::new(Models::new(Catalog::new(store), setup, startup.notifier().clone(), metrics.clone()));
    let serving = models
        .select(model_ver, config.model_run.clone())
        .await
        .with_context(|| format!("model {model_ver} at {}", config.model_run.describe()))?;
    tracing::info!(model_ver = %serving.model_ver(), run_id = %serving.run_id(), input = %command.input, %shard, "batch starting");
    // A one-shot batch records no shadows: they are a serving-time comparison.
    let shadows = Shadows::none(metrics.clone());
    let batch = BatchSettings {
        output_prefix: config.output_prefix.clone(),
        device_column: config.output_device,
        max_concurrent: 1,
    };
    let cut_off = CancellationToken::new();
    let service = Service::new(models, Arc::new(shadows), config.max_predict_rows, batch, cut_off.clone(), metrics);
    let request = PredictBatchRequest {
        input_key: command.input,
        output_key: command.output,
        overwrite: command.overwrite,
        shard: (shard != crs_platform::predictions::shards::Shard::WHOLE)
            .then(|| BatchShard { index: shard.index(), count: shard.count() }),
        ..PredictBatchRequest::default()
    };
    let running = service.batch_and_report(request);
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result,
        () = shutdown => {
            let grace = config.common.shutdown_grace();
            tracing::info!(grace_secs = grace.as_secs(), "shutting down: the batch gets the grace period to finish");
            match tokio::time::timeout(grace, &mut running).await {
                Ok(result) => result,
                Err(_) => {
                    cut_off.cancel();
                    running.await
                }
            }
        }
    };
    startup.notifier().flush(WEBHOOK_FLUSH).await;
    Ok(result?)
}
