//! serve-service: loads the selected model runs from the bucket (one per model
//! version it serves) and answers online (`Predict`) and batch (`PredictBatch`)
//! predictions over gRPC, and the Open Inference Protocol
//! (`inference.GRPCInferenceService`) beside them; shadows score the requests
//! of their primaries in the background.

mod config;
mod convert;
mod inference;
mod metrics;
mod model;
mod service;
mod shadow;
mod status;
mod tensors;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crs_platform::failpoint::FailPoint;
use crs_platform::notify::webhook::Notifier;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::bucket::Bucket;
use crs_proto::inference::grpc_inference_service_server::{
    GrpcInferenceServiceServer, SERVICE_NAME as INFERENCE_SERVICE,
};
use crs_proto::serve::serve_service_server::{SERVICE_NAME as SERVE_SERVICE, ServeServiceServer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

pub use config::{Config, ShadowPair};
use inference::Inference;
use metrics::ServeMetrics;
use model::{Models, ModelsSetup};
use service::{BatchSettings, Service};
use shadow::{FlushSettings, Shadows};

/// How long batches cut off at the end of the grace period get to stop.
const CUT_OFF_DRAIN: Duration = Duration::from_secs(5);

/// Runs the service on `listener` (and its metrics on `SERVE_METRICS_ADDR`, if
/// set) until `shutdown` resolves, then drains in-flight requests for up to the
/// configured grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = match &config.metrics_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("SERVE_METRICS_ADDR {addr}"))?),
        None => None,
    };
    run_with_metrics(config, listener, metrics, shutdown).await
}

/// [`run`] with the metrics endpoint on a listener the caller bound (or none),
/// whatever `SERVE_METRICS_ADDR` says.
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let others = config.other_models()?;
    let token = config.security.token.token()?;
    let tls = config.security.tls_identity()?;
    let serves_tls = tls.is_some();
    // Built now so that a bad certificate or key stops the start before anything else.
    let builder = crs_proto::server_builder(tls.map(|tls| (tls.cert_pem, tls.key_pem))).context("TLS_CERT, TLS_KEY")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(ServeMetrics::new(&mut registry));
    // Dropped, and so stopped, however this function returns: after the drain, so
    // that a last scrape still sees the requests it answered.
    let _metrics_server = metrics_listener.map(|listener| crs_platform::metrics::serve(listener, Arc::new(registry)));
    let bucket = Bucket::open_with(&config.bucket_url, &config.s3_env).context("BUCKET_URL")?;
    bucket.check_access().await.context("BUCKET_URL")?;
    crs_platform::storage::staging::clean_at_startup(&bucket, Duration::from_secs(config.stale_upload_secs));
    let fail = FailPoint::new(config.fail_at.as_deref()).context("CRS_FAIL_AT")?;
    let notifier = Notifier::new(config.webhook_url.as_deref(), "serve-service").context("WEBHOOK_URL")?;

    let (health, health_service) = tonic_health::server::health_reporter();
    // Not serving until a model has loaded.
    health.set_not_serving::<ServeServiceServer<Service>>().await;
    health.set_service_status(INFERENCE_SERVICE, tonic_health::ServingStatus::NotServing).await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let reflection = crs_proto::reflection_service(&[SERVE_SERVICE, INFERENCE_SERVICE])?;

    let setup = ModelsSetup {
        default: (config.model_ver, config.model_run.clone()),
        others,
        max_loaded: config.max_loaded_models as usize,
        max_memory_bytes: config.max_model_memory_bytes(),
    };
    let store = ModelStore::new(bucket.clone()).with_fail_point(fail);
    let models = Arc::new(Models::new(Catalog::new(store), setup, notifier.clone(), metrics.clone()));
    let flush = FlushSettings { rows: config.shadow_flush_rows as usize, every: config.shadow_flush_interval() };
    let (shadows, recorder) = Shadows::start(
        &config.shadow_models,
        models.clone(),
        bucket,
        config.shadow_queue as usize,
        flush,
        metrics.clone(),
    );
    let shadows = Arc::new(shadows);
    let health_follows_slot = tokio::spawn({
        // The default version decides: requests that name no model need it.
        let mut loaded = models.default_slot().loaded();
        let health = health.clone();
        async move {
            // SERVING while a model is in; an unload turns it back to NOT_SERVING.
            loop {
                let now = *loaded.borrow_and_update();
                let status =
                    if now { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
                health.set_service_status(SERVE_SERVICE, status).await;
                health.set_service_status(INFERENCE_SERVICE, status).await;
                health.set_service_status("", status).await;
                if loaded.changed().await.is_err() {
                    return;
                }
            }
        }
    });
    models.refresh().await;
    let poller = tokio::spawn({
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
    });

    let inference = GrpcInferenceServiceServer::new(Inference::new(
        models.clone(),
        shadows.clone(),
        config.max_predict_rows,
        metrics.clone(),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
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
    tracing::info!(addr = %listener.local_addr()?, model_ver = %config.model_ver, run = %config.model_run.describe(), serve_models = ?config.serve_models, shadow_models = ?config.shadow_models, bucket = %config.bucket_url, tls = serves_tls, auth_token = token.is_some(), "serve-service listening");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = builder
        .layer(crs_platform::request_id::RequestIdLayer)
        .layer(crs_platform::security::AuthLayer::new(token))
        .add_service(health_service)
        .add_service(reflection.v1)
        .add_service(reflection.v1alpha)
        .add_service(serve)
        .add_service(inference)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => {
            poller.abort();
            health_follows_slot.abort();
            if let Some(recorder) = recorder {
                recorder.finish(Duration::from_secs(config.shutdown_grace_secs)).await;
            }
            return result.context("gRPC server failed");
        }
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new connections, draining requests in flight");
    poller.abort();
    health_follows_slot.abort();
    for service in [SERVE_SERVICE, INFERENCE_SERVICE, ""] {
        health.set_service_status(service, tonic_health::ServingStatus::NotServing).await;
    }
    let _ = stop_tx.send(());
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.context("gRPC server failed")?,
        Err(_) => {
            tracing::warn!(?grace, "grace period over; cutting off the batches still running");
            cut_off.cancel();
            // Long enough for the cut-off batches to answer and abort their uploads.
            if tokio::time::timeout(CUT_OFF_DRAIN, &mut server).await.is_err() {
                tracing::warn!("exiting with requests still in flight");
            }
        }
    }
    // Every request has been answered (or abandoned): what they queued for the
    // shadows is all there is, and is written now.
    if let Some(recorder) = recorder {
        recorder.finish(grace).await;
    }
    notifier.flush(Duration::from_secs(3)).await;
    tracing::info!("serve-service stopped");
    Ok(())
}
