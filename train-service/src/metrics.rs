//! What train-service counts and times, for Prometheus (`TRAIN_METRICS_ADDR`).
//!
//! | metric | labels |
//! |---|---|
//! | `crs_train_requests_total` | `rpc`, `code` |
//! | `crs_train_request_errors_total` | `rpc`, `code` (every code but OK) |
//! | `crs_train_request_duration_seconds` (histogram; for `WatchTrainingJob`, until the stream opens) | `rpc` |
//! | `crs_train_jobs_total` (jobs ended) | `model`, `outcome` (`succeeded`, `failed`) |
//! | `crs_train_jobs_running` (gauge) | |
//! | `crs_train_stage_duration_seconds` (histogram, stages of succeeded jobs) | `model`, `stage` |
//! | `crs_train_cycles_total` (lifecycle cycles ended) | `model`, `outcome` (`succeeded`, `failed`, `cancelled`) |
//! | `crs_train_cycle_step_duration_seconds` (histogram, steps of ended cycles) | `model`, `step` |

use std::time::Instant;

use crs_domain::models::ModelVer;
use crs_platform::metrics::seconds_buckets;
use crs_platform::registry::runs::StageTiming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic::{Code, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    model: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    model: &'static str,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    model: &'static str,
    step: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(seconds_buckets())
}

#[derive(Debug)]
pub struct TrainMetrics {
    requests: Family<CallLabels, Counter>,
    errors: Family<CallLabels, Counter>,
    latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
    jobs: Family<JobLabels, Counter>,
    running: Gauge,
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    cycles: Family<JobLabels, Counter>,
    cycle_steps: Family<StepLabels, Histogram, fn() -> Histogram>,
}

impl TrainMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = TrainMetrics {
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(seconds_histogram),
            jobs: Family::default(),
            running: Gauge::default(),
            stages: Family::new_with_constructor(seconds_histogram),
            cycles: Family::default(),
            cycle_steps: Family::new_with_constructor(seconds_histogram),
        };
        let r = registry.sub_registry_with_prefix("crs_train");
        r.register("requests", "gRPC requests answered, by RPC and status code", metrics.requests.clone());
        r.register("request_errors", "gRPC requests answered with a code other than OK", metrics.errors.clone());
        r.register_with_unit(
            "request_duration",
            "Time to answer a gRPC request",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        r.register("jobs", "Training jobs ended, by model version and outcome", metrics.jobs.clone());
        r.register("jobs_running", "Training jobs running now", metrics.running.clone());
        r.register_with_unit(
            "stage_duration",
            "Time each stage of a succeeded job took",
            Unit::Seconds,
            metrics.stages.clone(),
        );
        r.register("cycles", "Lifecycle cycles ended, by model version and outcome", metrics.cycles.clone());
        r.register_with_unit(
            "cycle_step_duration",
            "Time each step of an ended lifecycle cycle took",
            Unit::Seconds,
            metrics.cycle_steps.clone(),
        );
        metrics
    }

    /// Starts timing one request of `rpc`.
    pub fn call(&self, rpc: &'static str) -> Call<'_> {
        Call { metrics: self, rpc, started: Instant::now() }
    }

    pub fn job_started(&self) {
        self.running.inc();
    }

    /// A job that ran ended; `stages` are its timings when it succeeded.
    pub fn job_ended(&self, model_ver: ModelVer, succeeded: bool, ran: bool, stages: &[StageTiming]) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.jobs.get_or_create(&JobLabels { model: model_ver.name(), outcome }).inc();
        if ran {
            self.running.dec();
        }
        for timing in stages {
            let labels = StageLabels { model: model_ver.name(), stage: timing.stage.clone() };
            self.stages.get_or_create(&labels).observe(timing.seconds);
        }
    }
}

impl TrainMetrics {
    /// A cycle ended as `outcome` after the steps timed in `steps`.
    pub fn cycle_ended(&self, model_ver: ModelVer, outcome: &'static str, steps: &[StageTiming]) {
        self.cycles.get_or_create(&JobLabels { model: model_ver.name(), outcome }).inc();
        for timing in steps {
            let labels = StepLabels { model: model_ver.name(), step: timing.stage.clone() };
            self.cycle_steps.get_or_create(&labels).observe(timing.seconds);
        }
    }
}

/// One request being timed; [`Call::finish`] records it.
#[derive(Debug)]
pub struct Call<'a> {
    metrics: &'a TrainMetrics,
    rpc: &'static str,
    started: Instant,
}

impl Call<'_> {
    pub fn finish<T>(self, result: Result<T, Status>) -> Result<T, Status> {
        let code = crs_proto::code_name(result.as_ref().err().map_or(Code::Ok, Status::code));
        let labels = CallLabels { rpc: self.rpc, code };
        self.metrics.requests.get_or_create(&labels).inc();
        if result.is_err() {
            self.metrics.errors.get_or_create(&labels).inc();
        }
        self.metrics.latency.get_or_create(&RpcLabels { rpc: self.rpc }).observe(self.started.elapsed().as_secs_f64());
        result
    }
}
