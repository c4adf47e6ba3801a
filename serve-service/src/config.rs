//! serve-service settings: flags, each with an environment variable fallback.

use std::time::Duration;

use clap::Parser;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "serve-service",
    version,
    about = "Serves a trained conversion-rate model over gRPC: online and batch predictions"
)]
pub struct Config {
    /// Address to listen on, host:port.
    #[arg(long, env = "SERVE_ADDR", default_value = "127.0.0.1:50052")]
    pub addr: String,
    /// The bucket: a folder, file://..., s3://bucket/prefix (AWS_* variables configure S3) or memory://.
    #[arg(long, env = "BUCKET_URL", default_value = "./bucket")]
    pub bucket_url: String,
    /// Model version to serve (v0, v1, ...).
    #[arg(long, env = "MODEL_VER", default_value = "v1")]
    pub model_ver: String,
    /// Run to serve: a run id, or `latest` to follow model/<MODEL_VER>/LATEST.
    #[arg(long, env = "MODEL_RUN", default_value = "latest")]
    pub model_run: String,
    /// Slack incoming-webhook URL for batch and model notices; unset means no posts. Never logged.
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,
    /// Seconds between checks of the bucket for a new LATEST run (or a first model).
    #[arg(long, env = "POLL_INTERVAL_SECS", default_value_t = 5.0)]
    pub poll_interval_secs: f64,
    /// Most rows one Predict request may carry.
    #[arg(long, env = "MAX_PREDICT_ROWS", default_value_t = 10_000)]
    pub max_predict_rows: usize,
    /// Largest gRPC request or response message, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl+C.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// Defaults for everything, with this bucket (for tests and embedding).
    pub fn with_bucket(bucket_url: &str) -> Self {
        Config::parse_from(["serve-service", "--bucket-url", bucket_url])
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_secs.max(0.01))
    }
}
