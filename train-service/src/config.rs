//! The service's settings: command-line flags, each with an environment variable
//! as fallback, which is how a container sets them.

use clap::Parser;
use crs_domain::models::ModelVer;
use crs_server::settings::{CommonSettings, help};
use crs_server::startup::{Listeners, ServerError, bind, bind_optional};

/// Recorded in every run's metadata and report, and in webhooks, as the service that wrote them.
pub const SERVICE_NAME: &str = "train-service";

#[derive(Clone, Debug, Parser)]
#[command(name = "train-service", version, about = "gRPC training jobs for conversion-rate models")]
#[command(
    mut_arg(
        "webhook_url",
        help("Slack incoming-webhook URL for job notices; unset means no notices. It is a secret and never logged")
    ),
    mut_arg(
        "shutdown_grace_secs",
        help("Seconds running jobs get to finish after SIGTERM or Ctrl+C before they are cut off")
    )
)]
pub struct Config {
    /// Address to listen on, host:port.
    #[arg(long, env = "TRAIN_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Model version trained when a request names none (v0, v1, ...).
    #[arg(long, env = "MODEL_VER", default_value = "v1")]
    pub model_ver: ModelVer,
    /// Jobs that train at the same time; further jobs wait in a queue.
    #[arg(long, env = "MAX_CONCURRENT_JOBS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_jobs: u32,
    /// Address (host:port) of the Prometheus endpoint, `GET /metrics`; unset means no metrics endpoint.
    #[arg(long, env = "TRAIN_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Address (host:port) of the model registry console and its JSON API under /api/v1/ (HTTP, TLS with TLS_CERT/TLS_KEY); unset means no console.
    #[arg(long, env = "TRAIN_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Bucket prefix where new raw files arrive for ingestion.
    #[arg(long, env = "INCOMING_PREFIX", default_value = crs_platform::storage::layout::INCOMING_PREFIX)]
    pub incoming_prefix: String,
    /// Seconds between scheduled cycles of the versions that have a config/<ver>/lifecycle.yaml; unset means none.
    #[arg(long, env = "CYCLE_INTERVAL_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub cycle_interval_secs: Option<u64>,
    /// Seconds a cycle's lease lasts without renewal: how long a killed replica's cycle blocks the next one.
    #[arg(long, env = "CYCLE_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..))]
    pub cycle_lease_secs: u64,
    /// Most bytes a model file given to ImportModel (crctl import) may have.
    /// The file is streamed in chunks, each under gRPC's 4 MiB message default.
    #[arg(long, env = "MAX_IMPORT_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_import_bytes: u64,
    /// The bucket, webhooks, logs, shutdown and security: the settings every service reads.
    #[command(flatten)]
    pub common: CommonSettings,
    /// Without a command, serve; with one, do that once and exit.
    #[command(subcommand)]
    pub command: Option<OnceCommand>,
}

impl Config {
    /// The gRPC listener on TRAIN_ADDR, and the metrics endpoint's on
    /// TRAIN_METRICS_ADDR and the console's on TRAIN_HTTP_ADDR, each if set.
    pub async fn listeners(&self) -> Result<Listeners, ServerError> {
        let metrics = bind_optional("TRAIN_METRICS_ADDR", self.metrics_addr.as_deref()).await?;
        let http = bind_optional("TRAIN_HTTP_ADDR", self.http_addr.as_deref()).await?;
        Ok(Listeners::new(bind("TRAIN_ADDR", &self.addr).await?).with_metrics(metrics).with_http(http))
    }
}

/// What train-service does once, instead of serving.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum OnceCommand {
    /// Run one training job of MODEL_VER against the bucket (saved, gated and notified as the service does), print how it ended and exit: 0 when it succeeded (promoted, held as a candidate, or a draft), 3 when the gate rejected its run, 1 when it failed. Settings come from the environment or go before `job`.
    Job(JobArgs),
    /// Run one lifecycle cycle of MODEL_VER (ingest, drift, retrain, gate, batch, retention, report) and exit: 0 when it ran to its end, whatever it decided; 1 when it failed or another cycle of the version is running.
    Cycle,
}

#[derive(Clone, Debug, clap::Args)]
pub struct JobArgs {
    /// Bucket key of the training data.
    #[arg(long = "train", default_value = crs_platform::storage::layout::TRAIN_KEY)]
    pub train_key: String,
    /// Bucket key of the evaluation data; without it, a holdout of the training keywords.
    #[arg(long = "eval")]
    pub eval_key: Option<String>,
    /// Bucket key of the hyperparameter YAML; without it, config/<model_ver>/params.yaml.
    #[arg(long = "config")]
    pub config_key: Option<String>,
    /// Label recorded with the run, key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A development run: kept as a draft, never gated or promoted.
    #[arg(long)]
    pub draft: bool,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{text:?} is not key=value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        crs_platform::service::runtime::parse_without_env(args)
    }

    #[test]
    fn debug_output_hides_the_webhook_url() {
        let config = parse(&["--webhook-url", "https://hooks.example/T0/B0/xyzzy"]).unwrap();
        assert_eq!(config.common.webhook_url.as_deref(), Some("https://hooks.example/T0/B0/xyzzy"));
        assert!(!format!("{config:?}").contains("xyzzy"), "{config:?}");
    }

    #[test]
    fn an_unknown_default_model_version_is_refused_at_startup() {
        let err = parse(&["--model-ver", "v7"]).unwrap_err().to_string();
        assert!(err.contains("--model-ver") && err.contains("unknown model version \"v7\""), "{err}");
    }

    #[test]
    fn at_least_one_job_must_be_allowed_to_run() {
        assert!(parse(&["--max-concurrent-jobs", "0"]).is_err());
    }
}
