//! What serve-service counts and times, for Prometheus (`SERVE_METRICS_ADDR`).
//!
//! | metric | labels |
//! |---|---|
//! | `crs_serve_requests_total` | `rpc`, `model`, `code` |
//! | `crs_serve_request_errors_total` | `rpc`, `model`, `code` (every code but OK) |
//! | `crs_serve_request_duration_seconds` (histogram) | `rpc`, `model` |
//! | `crs_serve_batch_rows` (histogram, rows written per batch) | `model` |
//! | `crs_serve_batch_duration_seconds` (histogram) | `model` |
//! | `crs_serve_batches_cancelled_total` (the client's deadline passed or it went away) | |
//! | `crs_serve_model_loaded` (gauge, 1 for the run being served) | `model`, `run_id` |
//! | `crs_serve_model_loads_total` | `model` |
//! | `crs_serve_model_refusals_total` | `model` |
//! | `crs_serve_model_swaps_total` (a load that replaced a served run) | `model` |
//! | `crs_serve_model_unloads_total` | `model` |
//! | `crs_serve_model_polls_total` (the poller's rounds over every version's alias) | |
//! | `crs_serve_shadow_rows_total` (rows a shadow scored and recorded) | `model` (the shadow) |
//! | `crs_serve_shadow_dropped_rows_total` (rows a shadow did not score or record) | `model` (the shadow), `reason` |
//! | `crs_serve_http_requests_total` (REST API, `SERVE_HTTP_ADDR`) | `route`, `method`, `status` |
//! | `crs_serve_http_request_duration_seconds` (histogram) | `route`, `method` |
//! | `crs_serve_capture_rows_total` (served rows sampled and written under capture/) | `model` |
//! | `crs_serve_capture_dropped_rows_total` (sampled rows not written) | `model`, `reason` |
//!
//! `model` is a registered model version or empty (the request named none, or
//! an unknown one), so the label set stays small whatever clients send.

use crs_domain::models::ModelVer;
use crs_server::metrics::{CallMetrics, ModelSubject, seconds_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The prefix of every serve-service metric.
pub const PREFIX: &str = "crs_serve";

/// One request being timed, labelled with the model it is about.
pub type Call<'a> = crs_server::metrics::Call<'a, ModelSubject>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    model: &'static str,
    run_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    model: &'static str,
    reason: &'static str,
}

/// Why rows of a request went without their shadow's prediction, or sampled
/// rows were not captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordDrop {
    /// The queue to the recorder was full (it scores or writes slower than requests come).
    QueueFull,
    /// The shadow had no run loaded.
    NotLoaded,
    /// The shadow could not score the rows (e.g. it needs attributes the request lacks).
    Failed,
    /// Scored, but the bucket refused the records for too long.
    Unwritten,
}

impl RecordDrop {
    fn label(self) -> &'static str {
        match self {
            RecordDrop::QueueFull => "queue_full",
            RecordDrop::NotLoaded => "not_loaded",
            RecordDrop::Failed => "failed",
            RecordDrop::Unwritten => "unwritten",
        }
    }
}

fn rows_histogram() -> Histogram {
    // 1 row to about 16M rows, by factors of 4.
    Histogram::new(exponential_buckets(1.0, 4.0, 13))
}

#[derive(Debug)]
pub struct ServeMetrics {
    calls: CallMetrics<ModelSubject>,
    batch_rows: Family<ModelLabels, Histogram, fn() -> Histogram>,
    batch_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    batches_cancelled: Counter,
    loaded: Family<RunLabels, Gauge>,
    loads: Family<ModelLabels, Counter>,
    refusals: Family<ModelLabels, Counter>,
    swaps: Family<ModelLabels, Counter>,
    unloads: Family<ModelLabels, Counter>,
    polls: Counter,
    shadow_rows: Family<ModelLabels, Counter>,
    shadow_dropped: Family<DropLabels, Counter>,
    capture_rows: Family<ModelLabels, Counter>,
    capture_dropped: Family<DropLabels, Counter>,
}

impl ServeMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix(PREFIX);
        let metrics = ServeMetrics {
            calls: CallMetrics::new(r),
            batch_rows: Family::new_with_constructor(rows_histogram),
            batch_seconds: Family::new_with_constructor(seconds_histogram),
            batches_cancelled: Counter::default(),
            loaded: Family::default(),
            loads: Family::default(),
            refusals: Family::default(),
            swaps: Family::default(),
            unloads: Family::default(),
            polls: Counter::default(),
            shadow_rows: Family::default(),
            shadow_dropped: Family::default(),
            capture_rows: Family::default(),
            capture_dropped: Family::default(),
        };
        r.register("batch_rows", "Output rows written per successful batch", metrics.batch_rows.clone());
        r.register_with_unit(
            "batch_duration",
            "Time a successful batch took",
            Unit::Seconds,
            metrics.batch_seconds.clone(),
        );
        r.register(
            "batches_cancelled",
            "Batches stopped before they ended because the request was cancelled (deadline passed, client gone)",
            metrics.batches_cancelled.clone(),
        );
        r.register("model_loaded", "1 for the model run being served", metrics.loaded.clone());
        r.register("model_loads", "Model runs loaded and swapped in", metrics.loads.clone());
        r.register("model_refusals", "Model runs refused (checksum, format or load failed)", metrics.refusals.clone());
        r.register("model_swaps", "Loads that replaced a run being served", metrics.swaps.clone());
        r.register("model_unloads", "Models unloaded on request", metrics.unloads.clone());
        r.register("model_polls", "Rounds of the poller over every version's production alias", metrics.polls.clone());
        r.register("shadow_rows", "Rows a shadow model scored and recorded", metrics.shadow_rows.clone());
        r.register(
            "shadow_dropped_rows",
            "Rows of requests to a primary that its shadow did not score or record, by reason",
            metrics.shadow_dropped.clone(),
        );
        r.register("capture_rows", "Served rows sampled and written under capture/", metrics.capture_rows.clone());
        r.register(
            "capture_dropped_rows",
            "Served rows sampled for capture but not written, by reason",
            metrics.capture_dropped.clone(),
        );
        metrics
    }

    /// Starts timing one request of `rpc`.
    pub fn call(&self, rpc: &'static str) -> Call<'_> {
        self.calls.call(rpc)
    }

    pub fn batch_done(&self, model_ver: ModelVer, rows: u64, seconds: f64) {
        let labels = ModelLabels { model: model_ver.name() };
        self.batch_rows.get_or_create(&labels).observe(rows as f64);
        self.batch_seconds.get_or_create(&labels).observe(seconds);
    }

    /// One round of the poller ended: every slot has seen its alias since the round began.
    pub fn polled(&self) {
        self.polls.inc();
    }

    /// A batch whose request was cancelled before it ended.
    pub fn batch_cancelled(&self) {
        self.batches_cancelled.inc();
    }

    /// A run swapped in, in place of `previous` if one was served.
    pub fn swapped_in(&self, model_ver: ModelVer, run_id: &str, previous: Option<(ModelVer, &str)>) {
        let labels = ModelLabels { model: model_ver.name() };
        self.loads.get_or_create(&labels).inc();
        if let Some((ver, run)) = previous {
            self.swaps.get_or_create(&labels).inc();
            self.loaded.remove(&RunLabels { model: ver.name(), run_id: run.to_owned() });
        }
        self.loaded.get_or_create(&RunLabels { model: model_ver.name(), run_id: run_id.to_owned() }).set(1);
    }

    pub fn refused(&self, model_ver: ModelVer) {
        self.refusals.get_or_create(&ModelLabels { model: model_ver.name() }).inc();
    }

    pub fn shadow_scored(&self, shadow: ModelVer, rows: usize) {
        self.shadow_rows.get_or_create(&ModelLabels { model: shadow.name() }).inc_by(rows as u64);
    }

    pub fn shadow_dropped(&self, shadow: ModelVer, reason: RecordDrop, rows: usize) {
        let labels = DropLabels { model: shadow.name(), reason: reason.label() };
        self.shadow_dropped.get_or_create(&labels).inc_by(rows as u64);
    }

    pub fn captured(&self, model_ver: ModelVer, rows: usize) {
        self.capture_rows.get_or_create(&ModelLabels { model: model_ver.name() }).inc_by(rows as u64);
    }

    pub fn capture_dropped(&self, model_ver: ModelVer, reason: RecordDrop, rows: usize) {
        let labels = DropLabels { model: model_ver.name(), reason: reason.label() };
        self.capture_dropped.get_or_create(&labels).inc_by(rows as u64);
    }

    pub fn unloaded(&self, model_ver: ModelVer, run_id: &str) {
        self.unloads.get_or_create(&ModelLabels { model: model_ver.name() }).inc();
        self.loaded.remove(&RunLabels { model: model_ver.name(), run_id: run_id.to_owned() });
    }
}
