//! train-service: a gRPC server that runs training jobs in the background. A job
//! reads data and a hyperparameter config from the bucket, trains one model
//! version, evaluates it against the baselines and writes a versioned run to
//! `model/<model_ver>/<run_id>/`, then moves `model/<model_ver>/LATEST` to it.
//!
//! [`config`] is the settings, [`jobs`] the queue and the job runner, [`service`]
//! the gRPC methods, [`convert`] and [`status`] the wire types and error codes.

pub mod config;
pub mod convert;
pub mod cycles;
pub mod gate;
pub mod jobs;
pub mod metrics;
pub mod reports;
pub mod service;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crs_domain::models::ModelVer;
use crs_platform::failpoint::FailPoint;
use crs_platform::notify::webhook::{self, Notifier};
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout;
use crs_proto::train::train_service_server::{SERVICE_NAME as TRAIN_SERVICE, TrainServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

pub use config::Config;
use cycles::Cycles;
use jobs::Jobs;
use metrics::TrainMetrics;
use service::TrainApi;

/// Long enough for a notice posted just before shutdown to go through all its attempts.
const WEBHOOK_FLUSH: Duration =
    webhook::ATTEMPT_TIMEOUT.saturating_mul(webhook::ATTEMPTS).saturating_add(Duration::from_secs(1));

/// How long open calls get to finish once the jobs are done. Watch streams end
/// with their jobs, so only a stuck client or bucket call waits this long.
const SERVER_DRAIN: Duration = Duration::from_secs(5);

/// Serves on `listener` (and metrics on `TRAIN_METRICS_ADDR`, if set) until
/// `shutdown` resolves, then stops taking jobs, lets running ones finish within
/// the grace period, and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = match &config.metrics_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("TRAIN_METRICS_ADDR {addr}"))?),
        None => None,
    };
    run_with_metrics(config, listener, metrics, shutdown).await
}

/// [`run`] with the metrics endpoint on a listener the caller bound (or none),
/// whatever `TRAIN_METRICS_ADDR` says.
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = config.security.token.token()?;
    let tls = config.security.tls_identity()?;
    let serves_tls = tls.is_some();
    // Built now so that a bad certificate or key stops the start before anything else.
    let builder = crs_proto::server_builder(tls.map(|tls| (tls.cert_pem, tls.key_pem))).context("TLS_CERT, TLS_KEY")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(TrainMetrics::new(&mut registry));
    // Dropped, and so stopped, however this function returns.
    let _metrics_server = metrics_listener.map(|listener| crs_platform::metrics::serve(listener, Arc::new(registry)));
    let bucket = Bucket::open_with(&config.bucket_url, &config.s3_env).context("BUCKET_URL")?;
    bucket.check_access().await.context("BUCKET_URL")?;
    crs_platform::storage::staging::clean_at_startup(&bucket, Duration::from_secs(config.stale_upload_secs));
    let notifier = Notifier::new(config.webhook_url.as_deref(), config::SERVICE_NAME).context("WEBHOOK_URL")?;
    let incoming = BucketKey::parse(&config.incoming_prefix).context("INCOMING_PREFIX")?;
    let fail = FailPoint::new(config.fail_at.as_deref()).context("CRS_FAIL_AT")?;
    let store = ModelStore::new(bucket).with_fail_point(fail);
    let catalog = Catalog::new(store.clone());
    let max_jobs = usize::try_from(config.max_concurrent_jobs).unwrap_or(usize::MAX);
    let jobs = Jobs::new(catalog.clone(), notifier.clone(), max_jobs, metrics.clone());
    let cycles = Cycles::new(
        catalog.clone(),
        jobs.clone(),
        notifier.clone(),
        incoming,
        Duration::from_secs(config.cycle_lease_secs),
        metrics.clone(),
    );
    let scheduler = config
        .cycle_interval_secs
        .map(|secs| tokio::spawn(schedule(cycles.clone(), catalog.clone(), Duration::from_secs(secs))));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status(TRAIN_SERVICE, ServingStatus::Serving).await;
    let reflection = crs_proto::reflection_service(&[TRAIN_SERVICE]).context("building the reflection service")?;

    tracing::info!(
        addr = %listener.local_addr()?,
        bucket = store.bucket().url(),
        model_ver = %config.model_ver,
        max_concurrent_jobs = max_jobs,
        webhook = notifier.is_enabled(),
        tls = serves_tls,
        auth_token = token.is_some(),
        "train-service listening"
    );
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        builder
            .layer(crs_platform::request_id::RequestIdLayer)
            .layer(crs_platform::security::AuthLayer::new(token))
            .add_service(health_service)
            .add_service(reflection.v1)
            .add_service(reflection.v1alpha)
            .add_service(TrainServiceServer::new(TrainApi::new(
                jobs.clone(),
                cycles.clone(),
                catalog,
                config.model_ver,
                metrics,
            )))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = server_stopped.await;
            }),
    );

    tokio::select! {
        () = shutdown => {}
        ended = &mut server => {
            ended.context("server task")?.context("gRPC server")?;
            anyhow::bail!("gRPC server stopped on its own");
        }
    }

    // The server keeps answering while jobs drain, so that clients can watch them
    // end and are told UNAVAILABLE rather than left without an answer.
    let grace = config.shutdown_grace();
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: no new jobs, waiting for running ones");
    // Refuse jobs before reporting NOT_SERVING, so a client that sees the status is refused too.
    jobs.stop_accepting();
    if let Some(scheduler) = &scheduler {
        scheduler.abort();
    }
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_service_status(TRAIN_SERVICE, ServingStatus::NotServing).await;
    jobs.drain(grace).await;
    cycles.drain(SERVER_DRAIN).await;
    notifier.flush(WEBHOOK_FLUSH).await;

    let _ = stop_server.send(());
    let abort = server.abort_handle();
    match tokio::time::timeout(SERVER_DRAIN, server).await {
        Ok(ended) => ended.context("server task")?.context("gRPC server")?,
        Err(_) => {
            tracing::warn!("calls still open after the drain period; closing them");
            abort.abort();
        }
    }
    tracing::info!("train-service stopped");
    Ok(())
}

/// Every `interval`, a cycle for each version with a `config/<ver>/lifecycle.yaml`.
async fn schedule(cycles: Cycles, catalog: Catalog, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        for model_ver in ModelVer::all() {
            match catalog.store().bucket().exists(&layout::lifecycle_key(model_ver)).await {
                Ok(true) => {
                    if let Err(e) = cycles.start(model_ver, "schedule").await {
                        tracing::warn!(%model_ver, error = %e, "scheduled cycle did not start");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the bucket to schedule cycles"),
            }
        }
    }
}
