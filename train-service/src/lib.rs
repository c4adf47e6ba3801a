//! train-service: a gRPC server that runs training jobs in the background. A job
//! reads data and a hyperparameter config from the bucket, trains one model
//! version, evaluates it against the baselines and writes a versioned run to
//! `model/<model_ver>/<run_id>/`, then moves `model/<model_ver>/LATEST` to it.
//!
//! [`config`] is the settings, [`jobs`] the queue and the job runner, [`service`]
//! the gRPC methods, [`convert`] and [`status`] the wire types and error codes.

pub mod actions;
pub mod config;
pub mod console;
pub mod convert;
pub mod cycles;
pub mod gate;
pub mod jobs;
pub mod metrics;
pub mod once;
pub mod reference;
pub mod reports;
pub mod service;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crs_domain::models::ModelVer;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout;
use crs_proto::train::train_service_server::{SERVICE_NAME as TRAIN_SERVICE, TrainServiceServer};
use crs_server::startup::{Drain, ServiceInfo, Startup, WEBHOOK_FLUSH};
use tokio_util::task::AbortOnDropHandle;
use tonic::service::Routes;
use tonic_health::ServingStatus;

pub use config::Config;
pub use crs_server::startup::Listeners;
use cycles::Cycles;
use jobs::Jobs;
use metrics::TrainMetrics;
use service::TrainApi;

const SERVICE: ServiceInfo = ServiceInfo { name: config::SERVICE_NAME, grpc_services: &[TRAIN_SERVICE] };

/// How long cycles get to stop once their jobs are done: a cycle waits on its
/// job, so only a stuck bucket call waits this long.
const CYCLE_DRAIN: Duration = Duration::from_secs(5);

/// Serves on `listeners` until `shutdown` resolves, then stops taking jobs,
/// lets running ones finish within the grace period, and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut startup = Startup::begin(SERVICE, &config.common).await?;
    let Parts { catalog, jobs, cycles, metrics } = Parts::new(&mut startup, &config)?;
    let scheduler = config.cycle_interval_secs.map(|secs| {
        AbortOnDropHandle::new(tokio::spawn(schedule(cycles.clone(), catalog.clone(), Duration::from_secs(secs))))
    });
    let console = console::Console::new(catalog.clone(), jobs.clone(), cycles.clone(), config.model_ver);
    startup.http_api(metrics::PREFIX, console::router(console), console::ConsoleRule);
    let max_import = usize::try_from(config.max_import_bytes).unwrap_or(usize::MAX);
    let api = TrainApi::new(jobs.clone(), cycles.clone(), catalog, config.model_ver, max_import, metrics);

    tracing::info!(
        model_ver = %config.model_ver,
        max_concurrent_jobs = config.max_concurrent_jobs,
        cycle_interval_secs = ?config.cycle_interval_secs,
        "train-service configured"
    );
    startup.health().set(ServingStatus::Serving).await;
    let drain = TrainDrain { jobs, cycles, scheduler };
    startup.serve(listeners, Routes::new(TrainServiceServer::new(api)), shutdown, drain).await?;
    Ok(())
}

/// One job or one cycle without serving (see [`once`]): the same parts as
/// [`run`]. On `shutdown` the work gets the grace period, as in the service,
/// then is cut off. Webhooks are flushed before it returns.
pub async fn run_once(
    config: Config,
    command: config::OnceCommand,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<once::OnceOutcome> {
    let mut startup = Startup::begin(SERVICE, &config.common).await?;
    let Parts { jobs, cycles, .. } = Parts::new(&mut startup, &config)?;
    let running = once::run(&config, &jobs, &cycles, command);
    tokio::pin!(running);
    let outcome = tokio::select! {
        outcome = &mut running => outcome,
        () = shutdown => {
            let mut drain = TrainDrain { jobs: jobs.clone(), cycles: cycles.clone(), scheduler: None };
            drain.stop_accepting();
            drain.drain(config.common.shutdown_grace()).await;
            running.await
        }
    };
    startup.notifier().flush(WEBHOOK_FLUSH).await;
    Ok(outcome?)
}

/// What the service and a one-shot run are made of, built one way for both.
struct Parts {
    catalog: Catalog,
    jobs: Jobs,
    cycles: Cycles,
    metrics: Arc<TrainMetrics>,
}

impl Parts {
    fn new(startup: &mut Startup, config: &Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(TrainMetrics::new(startup.registry()));
        let incoming = BucketKey::parse(&config.incoming_prefix).context("INCOMING_PREFIX")?;
        let store = ModelStore::new(startup.bucket().clone()).with_fail_point(startup.fail_point());
        let catalog = Catalog::new(store);
        let notifier = startup.notifier().clone();
        let max_jobs = usize::try_from(config.max_concurrent_jobs).unwrap_or(usize::MAX);
        let jobs = Jobs::new(catalog.clone(), notifier.clone(), max_jobs, metrics.clone());
        let cycles = Cycles::new(
            catalog.clone(),
            jobs.clone(),
            notifier,
            incoming,
            Duration::from_secs(config.cycle_lease_secs),
            metrics.clone(),
        );
        Ok(Parts { catalog, jobs, cycles, metrics })
    }
}

/// train-service's steps in the shutdown sequence: no new jobs or scheduled
/// cycles, then the running jobs finish (or are cut off) within the grace
/// period while clients can still watch them end.
struct TrainDrain {
    jobs: Jobs,
    cycles: Cycles,
    scheduler: Option<AbortOnDropHandle<()>>,
}

impl Drain for TrainDrain {
    fn stop_accepting(&mut self) {
        self.jobs.stop_accepting();
        if let Some(scheduler) = &self.scheduler {
            scheduler.abort();
        }
    }

    async fn drain(&mut self, grace: Duration) {
        self.jobs.drain(grace).await;
        self.cycles.drain(CYCLE_DRAIN).await;
    }
}

/// Every `interval`, a cycle for each version with a `config/<ver>/lifecycle.yaml`.
async fn schedule(cycles: Cycles, catalog: Catalog, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        crs_platform::registry::versions::declare_all(catalog.bucket()).await;
        for model_ver in ModelVer::all() {
            match catalog.bucket().exists(&layout::lifecycle_key(model_ver)).await {
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
