//! The startup and shutdown sequence both services share. A service's `run`
//! calls [`Startup::begin`] (TLS, token, bucket, webhooks, fail point, metrics
//! registry), builds its own parts on what it returns, gives its HTTP API, if
//! it has one, to [`Startup::http_api`], and hands its gRPC services and its
//! [`Drain`] steps to [`Startup::serve`], which serves them with health,
//! reflection, request ids and the token on the gRPC listener, the HTTP API
//! (TLS, limits, request ids, the token, its metrics) on the HTTP listener and
//! the metrics endpoint on its own, until shutdown:
//!
//! 1. [`Drain::stop_accepting`]: the service refuses new work;
//! 2. health reports NOT_SERVING for every service of the server;
//! 3. [`Drain::drain`]: the servers still answer (clients can watch work end)
//!    while the work in flight finishes within the grace period;
//! 4. the gRPC and HTTP servers take no new connections; open calls and
//!    requests get what is left of the grace period, then [`Drain::cut_off`]
//!    tells them to stop and they get [`CUT_OFF_DRAIN`] more before they are
//!    closed;
//! 5. [`Drain::finish`] writes what the calls left behind, the webhook notices
//!    still being posted get [`WEBHOOK_FLUSH`], and the metrics endpoint stops.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crs_platform::failpoint::{FailPoint, UnknownFailPoint};
use crs_platform::notify::webhook::{self, Notifier, WebhookError};
use crs_platform::service::request_id::RequestIdLayer;
use crs_platform::service::security::{AuthLayer, Secret, SecurityError, TokenRule};
use crs_platform::storage::bucket::{Bucket, StorageError};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::task::AbortOnDropHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::grpc::{GrpcTokenRule, server_builder};
use crate::http::{HttpLimits, HttpServer, TlsError, tls_config};
use crate::metrics::HttpMetrics;
use crate::settings::CommonSettings;

/// Long enough for a notice posted just before shutdown to go through all its attempts.
pub const WEBHOOK_FLUSH: Duration =
    webhook::ATTEMPT_TIMEOUT.saturating_mul(webhook::ATTEMPTS).saturating_add(Duration::from_secs(1));

/// How long calls still open when the grace period ends get to answer once
/// they are told to stop (a cut-off batch aborts its upload in that time).
pub const CUT_OFF_DRAIN: Duration = Duration::from_secs(5);

/// How long a scrape in flight at the very end gets to finish.
const LAST_SCRAPE: Duration = Duration::from_secs(1);

/// A service: its name (in logs, webhooks and run metadata) and the gRPC
/// services it serves, which health and reflection report.
#[derive(Clone, Copy, Debug)]
pub struct ServiceInfo {
    pub name: &'static str,
    pub grpc_services: &'static [&'static str],
}

/// Why a service cannot start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{setting} {addr}: {source}")]
    Bind { setting: &'static str, addr: String, source: io::Error },
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("TLS_CERT, TLS_KEY: {0}")]
    Tls(tonic::transport::Error),
    #[error("TLS_CERT, TLS_KEY for the HTTP listener: {0}")]
    HttpTls(TlsError),
    #[error("{0} has an HTTP listener but no HTTP API to serve on it")]
    NoHttpApi(&'static str),
    #[error("BUCKET_URL: {0}")]
    Bucket(StorageError),
    #[error("WEBHOOK_URL: {0}")]
    Webhook(WebhookError),
    #[error("CRS_FAIL_AT: {0}")]
    FailPoint(UnknownFailPoint),
    #[error("building the reflection service: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("a listener's address: {0}")]
    Listener(io::Error),
    #[error("gRPC server: {0}")]
    Grpc(tonic::transport::Error),
    #[error("gRPC server task: {0}")]
    Task(tokio::task::JoinError),
    #[error("gRPC server stopped on its own")]
    StoppedOnItsOwn,
}

/// Binds the address a setting names; the error names both.
pub async fn bind(setting: &'static str, addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { setting, addr: addr.to_owned(), source })
}

/// [`bind`] for a listener that is off when its setting is unset.
pub async fn bind_optional(setting: &'static str, addr: Option<&str>) -> Result<Option<TcpListener>, ServerError> {
    match addr {
        Some(addr) => bind(setting, addr).await.map(Some),
        None => Ok(None),
    }
}

/// The sockets a service serves on, bound before it starts: from its settings
/// in `main`, on `127.0.0.1:0` in tests.
#[derive(Debug)]
pub struct Listeners {
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    http: Option<TcpListener>,
}

impl Listeners {
    /// The gRPC listener alone: no metrics endpoint, no HTTP API.
    pub fn new(grpc: TcpListener) -> Self {
        Listeners { grpc, metrics: None, http: None }
    }

    /// With the Prometheus endpoint, `GET /metrics`, on `metrics` if given.
    pub fn with_metrics(mut self, metrics: Option<TcpListener>) -> Self {
        self.metrics = metrics;
        self
    }

    /// With the service's HTTP API ([`Startup::http_api`]) on `http` if given.
    pub fn with_http(mut self, http: Option<TcpListener>) -> Self {
        self.http = http;
        self
    }
}

/// Resolves on SIGTERM or Ctrl+C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl+C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// A service's own steps in the shutdown sequence (see the module), each a
/// no-op unless the service has something to do there.
pub trait Drain: Send {
    /// Shutdown has begun: refuse new work. Runs before health turns
    /// NOT_SERVING, so that a client that sees the status is refused too.
    fn stop_accepting(&mut self) {}

    /// While the server still answers: wait for the work in flight, at most `grace`.
    fn drain(&mut self, _grace: Duration) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The grace period is over and calls are still open: tell them to stop.
    fn cut_off(&mut self) {}

    /// The calls have ended or were abandoned: write what they left behind,
    /// giving it at most `grace`.
    fn finish(&mut self, _grace: Duration) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Health as gRPC's health service reports it: every gRPC service of the
/// server and the server as a whole (the empty name) move together.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: &'static [&'static str],
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("services", &self.services).finish_non_exhaustive()
    }
}

impl Health {
    pub async fn set(&self, status: ServingStatus) {
        for service in self.services.iter().copied().chain([""]) {
            self.reporter.set_service_status(service, status).await;
        }
    }
}

/// What every service starts with; see the module for the sequence.
pub struct Startup {
    service: ServiceInfo,
    grace: Duration,
    token: Option<Secret>,
    serves_tls: bool,
    grpc: tonic::transport::Server,
    http_tls: Option<Arc<ServerConfig>>,
    http_limits: HttpLimits,
    http_api: Option<axum::Router>,
    bucket: Bucket,
    notifier: Notifier,
    fail_point: FailPoint,
    registry: Registry,
    health: Health,
    health_service: HealthServer<HealthService>,
}

impl std::fmt::Debug for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Startup")
            .field("service", &self.service.name)
            .field("bucket", &self.bucket.url())
            .field("serves_tls", &self.serves_tls)
            .field("auth_token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Startup {
    /// The first steps of every service: the token and TLS files are read
    /// (a bad certificate stops the start before anything else), the bucket is
    /// opened and checked and a killed process's upload staging files removed,
    /// and the webhook notifier and the fail point are set up. Health reports
    /// nothing as serving yet.
    pub async fn begin(service: ServiceInfo, settings: &CommonSettings) -> Result<Self, ServerError> {
        let token = settings.security.token.token()?;
        let tls = settings.security.tls_identity()?;
        let grpc = server_builder(tls.as_ref()).map_err(ServerError::Tls)?;
        let http_tls = tls.as_ref().map(tls_config).transpose().map_err(ServerError::HttpTls)?;
        let bucket = Bucket::open_with(&settings.bucket_url, &settings.s3_env).map_err(ServerError::Bucket)?;
        bucket.check_access().await.map_err(ServerError::Bucket)?;
        crs_platform::storage::staging::clean_at_startup(&bucket, settings.stale_upload_age());
        let notifier = Notifier::new(settings.webhook_url.as_deref(), service.name).map_err(ServerError::Webhook)?;
        let fail_point = FailPoint::new(settings.fail_at.as_deref()).map_err(ServerError::FailPoint)?;
        let reporter = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = Health { reporter, services: service.grpc_services };
        health.set(ServingStatus::NotServing).await;
        Ok(Startup {
            service,
            grace: settings.shutdown_grace(),
            token,
            serves_tls: tls.is_some(),
            grpc,
            http_tls,
            http_limits: settings.http_limits(),
            http_api: None,
            bucket,
            notifier,
            fail_point,
            registry: Registry::default(),
            health,
            health_service,
        })
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn fail_point(&self) -> FailPoint {
        self.fail_point
    }

    /// Where the service registers its metrics, under its own prefix.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The service's HTTP API, served on the HTTP listener if [`Listeners`]
    /// has one: `rule` says which requests need the bearer token (when one is
    /// set), and every request, refused or not, is counted and timed under
    /// `<metrics_prefix>_http_*` ([`HttpMetrics`]).
    pub fn http_api(&mut self, metrics_prefix: &str, router: axum::Router, rule: impl TokenRule) {
        let metrics = Arc::new(HttpMetrics::new(self.registry.sub_registry_with_prefix(metrics_prefix)));
        // Each `layer` wraps the ones before it: the metrics see the token's refusals.
        let router = router
            .layer(AuthLayer::new(self.token.clone(), rule))
            .layer(axum::middleware::from_fn_with_state(metrics, HttpMetrics::record));
        self.http_api = Some(router);
    }

    /// Serves `routes` (the service's own gRPC services) with health and
    /// reflection on `listeners` until `shutdown` resolves, then runs the
    /// shutdown sequence with the service's `drain` steps.
    pub async fn serve(
        self,
        listeners: Listeners,
        routes: Routes,
        shutdown: impl Future<Output = ()> + Send,
        mut drain: impl Drain,
    ) -> Result<(), ServerError> {
        let Startup {
            service,
            grace,
            token,
            serves_tls,
            grpc,
            http_tls,
            http_limits,
            http_api,
            bucket,
            notifier,
            registry,
            health,
            health_service,
            ..
        } = self;
        let http = match (listeners.http, http_api) {
            (Some(listener), Some(api)) => {
                let api =
                    HttpServer::start(listener, api, http_tls.clone(), http_limits).map_err(ServerError::Listener)?;
                let scheme = if http_tls.is_some() { "https" } else { "http" };
                tracing::info!(addr = %api.local_addr(), tls = serves_tls, "HTTP API at {scheme}://{}", api.local_addr());
                Some(api)
            }
            (Some(_), None) => return Err(ServerError::NoHttpApi(service.name)),
            (None, _) => None,
        };
        let reflection = crs_proto::reflection_service(service.grpc_services).map_err(ServerError::Reflection)?;
        let routes = routes.add_service(health_service).add_service(reflection.v1).add_service(reflection.v1alpha);
        let addr = listeners.grpc.local_addr().map_err(ServerError::Listener)?;
        let incoming = TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let auth_token = token.is_some();
        let mut server = AbortOnDropHandle::new(tokio::spawn(
            grpc.layer(RequestIdLayer)
                .layer(AuthLayer::new(token, GrpcTokenRule))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = server_stopped.await;
                }),
        ));
        // Plain HTTP whatever TLS_CERT says: scrapers are configured for it, and the port is the operator's.
        let metrics = match listeners.metrics {
            Some(listener) => {
                let endpoint =
                    HttpServer::start(listener, crate::metrics::router(Arc::new(registry)), None, http_limits)
                        .map_err(ServerError::Listener)?;
                let metrics_addr = endpoint.local_addr();
                tracing::info!(addr = %metrics_addr, "metrics at http://{metrics_addr}/metrics");
                Some(endpoint)
            }
            None => None,
        };
        tracing::info!(
            %addr,
            bucket = bucket.url(),
            webhook = notifier.is_enabled(),
            tls = serves_tls,
            auth_token,
            "{} listening",
            service.name
        );

        tokio::select! {
            () = shutdown => {}
            ended = &mut server => {
                drain.stop_accepting();
                drain.finish(grace).await;
                notifier.flush(WEBHOOK_FLUSH).await;
                return Err(match ended {
                    Ok(Ok(())) => ServerError::StoppedOnItsOwn,
                    Ok(Err(e)) => ServerError::Grpc(e),
                    Err(e) => ServerError::Task(e),
                });
            }
        }

        let began = Instant::now();
        tracing::info!(grace_secs = grace.as_secs(), "shutting down: no new work, waiting for the work in flight");
        drain.stop_accepting();
        health.set(ServingStatus::NotServing).await;
        drain.drain(grace).await;
        let _ = stop_server.send(());
        // The HTTP API stops with the gRPC server, its requests in flight given the same time.
        let http_stopped =
            http.map(|http| AbortOnDropHandle::new(tokio::spawn(http.shutdown(grace.saturating_sub(began.elapsed())))));
        let ended = match tokio::time::timeout(grace.saturating_sub(began.elapsed()), &mut server).await {
            Ok(ended) => Some(ended),
            Err(_) => {
                tracing::warn!(?grace, "grace period over; cutting off the calls still open");
                drain.cut_off();
                let ended = tokio::time::timeout(CUT_OFF_DRAIN, &mut server).await.ok();
                if ended.is_none() {
                    tracing::warn!("closing the calls still open");
                }
                ended
            }
        };
        if let Some(http_stopped) = http_stopped {
            // Its own shutdown closes what is still open when its grace period ends.
            let _ = http_stopped.await;
        }
        // Every call has been answered or abandoned: what they left is all there is.
        drain.finish(grace).await;
        notifier.flush(WEBHOOK_FLUSH).await;
        if let Some(metrics) = metrics {
            metrics.shutdown(LAST_SCRAPE).await;
        }
        if let Some(ended) = ended {
            ended.map_err(ServerError::Task)?.map_err(ServerError::Grpc)?;
        }
        tracing::info!("{} stopped", service.name);
        Ok(())
    }
}
