//! serve-service settings: flags, each with an environment variable fallback.

use std::time::Duration;

use clap::Parser;

#[derive(Clone, Parser)]
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

// Written by hand so that logging the config cannot leak the webhook URL.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("bucket_url", &self.bucket_url)
            .field("model_ver", &self.model_ver)
            .field("model_run", &self.model_run)
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "<secret>"))
            .field("poll_interval_secs", &self.poll_interval_secs)
            .field("max_predict_rows", &self.max_predict_rows)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation_and_debug_hides_the_webhook() {
        let config =
            Config::try_parse_from(["serve-service", "--webhook-url", "https://hooks.example/T000/B000/XXXX"]).unwrap();
        assert_eq!(config.addr, "127.0.0.1:50052");
        assert_eq!((config.model_ver.as_str(), config.model_run.as_str()), ("v1", "latest"));
        assert_eq!(config.poll_interval(), Duration::from_secs(5));
        assert_eq!((config.max_predict_rows, config.max_message_bytes), (10_000, 16 << 20));
        assert!(!format!("{config:?}").contains("hooks.example"), "{config:?}");
    }
}
