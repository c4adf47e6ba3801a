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

/// The prefix of every family train-service registers, its console's HTTP families included.
pub const PREFIX: &str = "crs_train";
use crs_domain::models::ModelVer;
use crs_platform::registry::runs::StageTiming;
use crs_server::metrics::{Call, CallMetrics, NoSubject, seconds_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

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

#[derive(Debug)]
pub struct TrainMetrics {
    calls: CallMetrics<NoSubject>,
    jobs: Family<JobLabels, Counter>,
    running: Gauge,
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    cycles: Family<JobLabels, Counter>,
    cycle_steps: Family<StepLabels, Histogram, fn() -> Histogram>,
}

impl TrainMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix(PREFIX);
        let metrics = TrainMetrics {
            calls: CallMetrics::new(r),
            jobs: Family::default(),
            running: Gauge::default(),
            stages: Family::new_with_constructor(seconds_histogram),
            cycles: Family::default(),
            cycle_steps: Family::new_with_constructor(seconds_histogram),
        };
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
    pub fn call(&self, rpc: &'static str) -> Call<'_, NoSubject> {
        self.calls.call(rpc)
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
