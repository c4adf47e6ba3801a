//! The service's settings: command-line flags, each with an environment variable
//! as fallback, which is how a container sets them.

use std::fmt;
use std::time::Duration;

use clap::Parser;
use crs_domain::models::ModelVer;
use crs_platform::runtime::LogFormat;
use crs_platform::storage::bucket::S3Env;

/// Recorded in every run's metadata and report, and in webhooks, as the service that wrote them.
pub const SERVICE_NAME: &str = "train-service";

#[derive(Clone, Parser)]
#[command(name = "train-service", version, about = "gRPC training jobs for conversion-rate models")]
pub struct Config {
    /// Address to listen on, host:port.
    #[arg(long, env = "TRAIN_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Bucket holding data, config and models: a folder, file://, s3://bucket/prefix or memory://.
    #[arg(long, env = "BUCKET_URL", default_value = "./bucket")]
    pub bucket_url: String,
    /// Where an s3:// bucket's endpoint, region and credentials come from: the
    /// process's `AWS_*` variables, unless a test gives its own.
    #[arg(skip)]
    pub s3_env: S3Env,
    /// Model version trained when a request names none (v0, v1, ...).
    #[arg(long, env = "MODEL_VER", default_value = "v1")]
    pub model_ver: ModelVer,
    /// Slack incoming-webhook URL for job notices; unset means no notices. It is a secret and never logged.
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,
    /// Jobs that train at the same time; further jobs wait in a queue.
    #[arg(long, env = "MAX_CONCURRENT_JOBS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_jobs: u32,
    /// Address (host:port) of the Prometheus endpoint, `GET /metrics`; unset means no metrics endpoint.
    #[arg(long, env = "TRAIN_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Log lines as `text` or as `json` (one object per line, with the request and job ids of the spans).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds running jobs get to finish after SIGTERM or Ctrl+C before they are cut off.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Bucket prefix where new raw files arrive for ingestion.
    #[arg(long, env = "INCOMING_PREFIX", default_value = crs_platform::storage::layout::INCOMING_PREFIX)]
    pub incoming_prefix: String,
    /// Seconds between scheduled cycles of the versions that have a config/<ver>/lifecycle.yaml; unset means none.
    #[arg(long, env = "CYCLE_INTERVAL_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub cycle_interval_secs: Option<u64>,
    /// Seconds a cycle's lease lasts without renewal: how long a killed replica's cycle blocks the next one.
    #[arg(long, env = "CYCLE_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..))]
    pub cycle_lease_secs: u64,
    /// The bearer token required on every RPC that changes something, and TLS.
    #[command(flatten)]
    pub security: crs_platform::security::ServerSecurity,
    /// Seconds after which an upload staging file in a local bucket (`<key>#<n>`, left by a killed process) is removed at startup; younger ones may be another replica's live upload.
    #[arg(long, env = "STALE_UPLOAD_SECS", default_value_t = crs_platform::storage::staging::DEFAULT_STALE_SECS)]
    pub stale_upload_secs: u64,
    /// Test hook: abort the process at this named step (e.g. cycle:ingest), as kill -9 would.
    #[arg(long, env = "CRS_FAIL_AT", hide = true)]
    pub fail_at: Option<String>,
}

impl Config {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

// Written by hand so that logging the config cannot leak the webhook URL.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("bucket_url", &self.bucket_url)
            .field("s3_env", &self.s3_env)
            .field("model_ver", &self.model_ver)
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "<secret>"))
            .field("max_concurrent_jobs", &self.max_concurrent_jobs)
            .field("metrics_addr", &self.metrics_addr)
            .field("log_format", &self.log_format)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("incoming_prefix", &self.incoming_prefix)
            .field("cycle_interval_secs", &self.cycle_interval_secs)
            .field("cycle_lease_secs", &self.cycle_lease_secs)
            .field("security", &self.security)
            .field("stale_upload_secs", &self.stale_upload_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        crs_platform::runtime::parse_without_env(args)
    }

    #[test]
    fn debug_output_hides_the_webhook_url() {
        let config = parse(&["--webhook-url", "https://hooks.example/T0/B0/xyzzy"]).unwrap();
        assert_eq!(config.webhook_url.as_deref(), Some("https://hooks.example/T0/B0/xyzzy"));
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
