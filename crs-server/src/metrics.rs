//! What every service measures the same way: each gRPC call's count, errors
//! and latency, and each HTTP API request's count and latency, under the
//! service's own prefix, and the `/metrics` endpoint that serves a service's
//! registry as OpenMetrics text.
//!
//! | metric | labels |
//! |---|---|
//! | `<prefix>_requests_total` | `rpc`, the subject's labels, `code` |
//! | `<prefix>_request_errors_total` | the same (every code but OK) |
//! | `<prefix>_request_duration_seconds` (histogram) | `rpc`, the subject's labels |
//! | `<prefix>_http_requests_total` | `route`, `method`, `status` |
//! | `<prefix>_http_request_duration_seconds` (histogram) | `route`, `method` |
//!
//! The subject is what a call is about, as labels: nothing for train-service
//! ([`NoSubject`]), the model version for serve-service ([`ModelSubject`]).
//! An HTTP request's `route` is the pattern it matched (`/v2/models/{model}/infer`),
//! or `unmatched`, so the label set stays small whatever clients send.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use crs_domain::models::ModelVer;
use http::StatusCode;
use http::header::CONTENT_TYPE as CONTENT_TYPE_HEADER;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic::{Code, Status};

/// What Prometheus is told the body is.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, from 0.5 ms to about 16 s: online requests take
/// milliseconds, batches and training stages seconds.
pub fn seconds_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// A histogram over [`seconds_buckets`], as a family's constructor.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(seconds_buckets())
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

/// `GET /metrics`: the registry as OpenMetrics text; any other path is 404.
pub fn router(registry: Arc<Registry>) -> Router {
    let scrape = move || {
        let registry = registry.clone();
        async move { ([(CONTENT_TYPE_HEADER, CONTENT_TYPE)], render(&registry)) }
    };
    Router::new().route("/metrics", get(scrape)).fallback(|| async { (StatusCode::NOT_FOUND, "see /metrics\n") })
}

/// What a call is about, as the labels between `rpc` and `code`.
pub trait CallSubject: EncodeLabelSet + Clone + Default + Hash + Eq + fmt::Debug + Send + Sync + 'static {
    /// How the counters' help names their labels: "RPC and status code".
    const LABELS_HELP: &'static str;
}

/// No labels: a service whose calls are told apart by RPC alone.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct NoSubject;

impl EncodeLabelSet for NoSubject {
    fn encode(&self, _encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        Ok(())
    }
}

impl CallSubject for NoSubject {
    const LABELS_HELP: &'static str = "RPC and status code";
}

/// `model`: a registered model version, or empty when the call named none or
/// an unknown one, so the label set stays small whatever clients send.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ModelSubject {
    model: &'static str,
}

impl CallSubject for ModelSubject {
    const LABELS_HELP: &'static str = "RPC, model and status code";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CallLabels<S> {
    rpc: &'static str,
    subject: S,
    code: &'static str,
}

impl<S: EncodeLabelSet> EncodeLabelSet for CallLabels<S> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        [("rpc", self.rpc)].encode(encoder)?;
        self.subject.encode(encoder)?;
        [("code", self.code)].encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RpcLabels<S> {
    rpc: &'static str,
    subject: S,
}

impl<S: EncodeLabelSet> EncodeLabelSet for RpcLabels<S> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        [("rpc", self.rpc)].encode(encoder)?;
        self.subject.encode(encoder)
    }
}

/// Each gRPC call's count, errors and latency.
#[derive(Debug)]
pub struct CallMetrics<S: CallSubject> {
    requests: Family<CallLabels<S>, Counter>,
    errors: Family<CallLabels<S>, Counter>,
    latency: Family<RpcLabels<S>, Histogram, fn() -> Histogram>,
}

impl<S: CallSubject> CallMetrics<S> {
    /// The metrics, registered in `registry`: the service's registry under its prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = CallMetrics {
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
        };
        let by = S::LABELS_HELP;
        registry.register("requests", format!("gRPC requests answered, by {by}"), metrics.requests.clone());
        registry.register("request_errors", "gRPC requests answered with a code other than OK", metrics.errors.clone());
        registry.register_with_unit(
            "request_duration",
            "Time to answer a gRPC request",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    /// Starts timing one request of `rpc`.
    pub fn call(&self, rpc: &'static str) -> Call<'_, S> {
        Call { metrics: self, rpc, subject: S::default(), started: Instant::now() }
    }
}

/// One request being timed; [`Call::finish`] records it.
#[derive(Debug)]
pub struct Call<'a, S: CallSubject> {
    metrics: &'a CallMetrics<S>,
    rpc: &'static str,
    subject: S,
    started: Instant,
}

impl<S: CallSubject> Call<'_, S> {
    /// Records the answer and passes it on.
    pub fn finish<T>(self, result: Result<T, Status>) -> Result<T, Status> {
        let code = crs_proto::code_name(result.as_ref().err().map_or(Code::Ok, Status::code));
        let labels = CallLabels { rpc: self.rpc, subject: self.subject.clone(), code };
        self.metrics.requests.get_or_create(&labels).inc();
        if result.is_err() {
            self.metrics.errors.get_or_create(&labels).inc();
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        self.metrics.latency.get_or_create(&RpcLabels { rpc: self.rpc, subject: self.subject }).observe(elapsed);
        result
    }
}

impl Call<'_, ModelSubject> {
    /// The model the request is about, once known.
    pub fn model(&mut self, model_ver: ModelVer) {
        self.subject = ModelSubject { model: model_ver.name() };
    }

    /// The model a request names, if it is a registered one.
    pub fn model_named(&mut self, name: &str) {
        if let Ok(model_ver) = ModelVer::parse(name) {
            self.model(model_ver);
        }
    }
}

/// The labels of one answered HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HttpLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
    method: &'static str,
}

/// What an HTTP request's `route` label is when it matched no route.
const UNMATCHED: &str = "unmatched";

/// Each HTTP API request's count and latency, by the route it matched and the
/// status it was answered with; [`HttpMetrics::record`] is the middleware.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    unmatched: Arc<str>,
}

impl HttpMetrics {
    /// The metrics, registered in `registry`: the service's registry under its prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            unmatched: Arc::from(UNMATCHED),
        };
        registry.register(
            "http_requests",
            "HTTP API requests answered, by route, method and status",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP API request, until its response starts",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    /// The middleware: counts and times every request of the router it is a
    /// layer of (`axum::middleware::from_fn_with_state`), refusals included.
    pub async fn record(
        axum::extract::State(metrics): axum::extract::State<Arc<HttpMetrics>>,
        request: Request,
        next: Next,
    ) -> Response {
        let route = match request.extensions().get::<MatchedPath>() {
            Some(path) => Arc::from(path.as_str()),
            None => metrics.unmatched.clone(),
        };
        let method = method_label(request.method());
        let started = Instant::now();
        let response = next.run(request).await;
        let status = response.status().as_u16();
        metrics
            .latency
            .get_or_create(&RouteLabels { route: route.clone(), method })
            .observe(started.elapsed().as_secs_f64());
        metrics.requests.get_or_create(&HttpLabels { route, method, status }).inc();
        response
    }
}

/// A method as a label: the standard ones by name, anything else `other`.
fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [(http::Method, &str); 9] = [
        (http::Method::GET, "GET"),
        (http::Method::HEAD, "HEAD"),
        (http::Method::POST, "POST"),
        (http::Method::PUT, "PUT"),
        (http::Method::DELETE, "DELETE"),
        (http::Method::PATCH, "PATCH"),
        (http::Method::OPTIONS, "OPTIONS"),
        (http::Method::CONNECT, "CONNECT"),
        (http::Method::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(known, _)| known == method).map_or("other", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded<S: CallSubject>(record: impl FnOnce(&CallMetrics<S>)) -> String {
        let mut registry = Registry::default();
        let metrics = CallMetrics::<S>::new(registry.sub_registry_with_prefix("crs_test"));
        record(&metrics);
        render(&registry)
    }

    #[test]
    fn calls_are_counted_by_rpc_and_code_under_the_prefix() {
        let text = recorded::<NoSubject>(|metrics| {
            let _ = metrics.call("Ping").finish(Ok(()));
            let _ = metrics.call("Ping").finish::<()>(Err(Status::not_found("gone")));
        });
        assert!(text.contains("# HELP crs_test_requests gRPC requests answered, by RPC and status code"), "{text}");
        assert!(text.contains("crs_test_requests_total{rpc=\"Ping\",code=\"OK\"} 1\n"), "{text}");
        assert!(text.contains("crs_test_requests_total{rpc=\"Ping\",code=\"NotFound\"} 1\n"), "{text}");
        assert!(text.contains("crs_test_request_errors_total{rpc=\"Ping\",code=\"NotFound\"} 1\n"), "{text}");
        assert!(!text.contains("crs_test_request_errors_total{rpc=\"Ping\",code=\"OK\"}"), "{text}");
        assert!(text.contains("crs_test_request_duration_seconds_count{rpc=\"Ping\"} 2\n"), "{text}");
    }

    #[test]
    fn the_model_label_sits_between_rpc_and_code_and_stays_empty_for_unknown_names() {
        let text = recorded::<ModelSubject>(|metrics| {
            let mut call = metrics.call("Predict");
            call.model_named("v1");
            let _ = call.finish(Ok(()));
            let mut call = metrics.call("Predict");
            call.model_named("v99");
            let _ = call.finish(Ok(()));
        });
        assert!(text.contains("by RPC, model and status code"), "{text}");
        assert!(text.contains("crs_test_requests_total{rpc=\"Predict\",model=\"v1\",code=\"OK\"} 1\n"), "{text}");
        assert!(text.contains("crs_test_requests_total{rpc=\"Predict\",model=\"\",code=\"OK\"} 1\n"), "{text}");
        assert!(text.contains("crs_test_request_duration_seconds_count{rpc=\"Predict\",model=\"v1\"} 1\n"), "{text}");
    }
}
