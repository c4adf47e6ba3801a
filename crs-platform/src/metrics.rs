//! The Prometheus endpoint both services share: `GET /metrics` over plain
//! HTTP/1 on its own port, in the OpenMetrics text format. What is measured is
//! each service's business; this module only serves a registry.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What Prometheus is told the body is.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, from 0.5 ms to about 16 s: online requests take
/// milliseconds, batches and training stages seconds.
pub fn seconds_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// The registry's metrics as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a metric that cannot be encoded is a bug worth a visible gap.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    text
}

/// The running endpoint; dropping it stops it, so it ends with the service that
/// owns it however that service returns.
#[derive(Debug)]
pub struct MetricsServer(JoinHandle<()>);

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `registry` at `/metrics` on `listener` until the returned handle is dropped.
pub fn serve(listener: TcpListener, registry: Arc<Registry>) -> MetricsServer {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    MetricsServer(tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the gRPC side matters more; keep going.
                    tracing::warn!(error = %e, "metrics listener cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(registry.clone(), request));
                if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(error = %e, %peer, "metrics connection ended with an error");
                }
            });
        }
    }))
}

async fn answer(registry: Arc<Registry>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(render(&registry)))),
        (_, "/metrics") => Response::builder().status(StatusCode::METHOD_NOT_ALLOWED).body(Full::default()),
        _ => Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from("see /metrics\n"))),
    };
    Ok(response.expect("static response parts are valid"))
}
