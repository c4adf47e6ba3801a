//! The settings every service reads, flattened into each service's own
//! `Config` beside its listen and metrics addresses and its business.

use std::fmt;
use std::time::Duration;

use crs_platform::service::runtime::LogFormat;
use crs_platform::service::security::ServerSecurity;
use crs_platform::storage::bucket::S3Env;

use crate::http::HttpLimits;

/// A service's own wording of a common setting's help, for `mut_arg` in its
/// `#[command(...)]`: what the webhook notices are about, what the grace
/// period waits for. Without a final period, as clap shows doc comments.
pub fn help(text: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
    move |arg| arg.help(text)
}

#[derive(Clone, clap::Args)]
pub struct CommonSettings {
    /// Bucket holding data, config and models: a folder, file://, s3://bucket/prefix (AWS_* variables configure S3) or memory://.
    #[arg(long, env = "BUCKET_URL", default_value = "./bucket")]
    pub bucket_url: String,
    /// Where an s3:// bucket's endpoint, region and credentials come from: the
    /// process's `AWS_*` variables, unless a test gives its own.
    #[arg(skip)]
    pub s3_env: S3Env,
    /// Slack incoming-webhook URL for notices; unset means none. It is a secret and never logged.
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,
    /// Log lines as `text` or as `json` (one object per line, with the request and job ids of the spans).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds the work in flight gets to finish after SIGTERM or Ctrl+C before it is cut off.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Seconds after which an upload staging file in a local bucket (`<key>#<n>`, left by a killed process) is removed at startup; younger ones may be another replica's live upload.
    #[arg(long, env = "STALE_UPLOAD_SECS", default_value_t = crs_platform::storage::staging::DEFAULT_STALE_SECS)]
    pub stale_upload_secs: u64,
    /// The bearer token required on every RPC that changes something, and TLS.
    #[command(flatten)]
    pub security: ServerSecurity,
    /// Connections each HTTP listener (REST API, metrics) holds open at once; further ones wait to be accepted until one closes.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = HttpLimits::DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,
    /// Seconds an HTTP client gets to send a request's headers (and finish the TLS handshake); a connection idle that long is closed.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = HttpLimits::DEFAULT_HEADER_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_secs: u64,
    /// Seconds an HTTP client gets to send a request's whole body once its headers are in; a slower body is refused.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_SECS", default_value_t = HttpLimits::DEFAULT_BODY_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_body_timeout_secs: u64,
    /// Test hook: abort the process at this named step (e.g. cycle:ingest or batch:predicted), as kill -9 would.
    #[arg(long, env = "CRS_FAIL_AT", hide = true)]
    pub fail_at: Option<String>,
}

impl CommonSettings {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How old an upload staging file must be to be removed at startup.
    pub fn stale_upload_age(&self) -> Duration {
        Duration::from_secs(self.stale_upload_secs)
    }

    /// What every HTTP listener of the service holds slow or idle clients to.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.http_max_connections as usize,
            header_read_timeout: Duration::from_secs(self.http_header_timeout_secs),
            body_read_timeout: Duration::from_secs(self.http_body_timeout_secs),
        }
    }
}

// Written by hand so that logging a service's config cannot leak the webhook URL.
impl fmt::Debug for CommonSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonSettings")
            .field("bucket_url", &self.bucket_url)
            .field("s3_env", &self.s3_env)
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "<secret>"))
            .field("log_format", &self.log_format)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("stale_upload_secs", &self.stale_upload_secs)
            .field("security", &self.security)
            .field("http_max_connections", &self.http_max_connections)
            .field("http_header_timeout_secs", &self.http_header_timeout_secs)
            .field("http_body_timeout_secs", &self.http_body_timeout_secs)
            .field("fail_at", &self.fail_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(mut_arg("webhook_url", help("Slack incoming-webhook URL for this service's notices")))]
    struct Service {
        #[command(flatten)]
        common: CommonSettings,
    }

    fn parse(args: &[&str]) -> CommonSettings {
        crs_platform::service::runtime::parse_without_env::<Service>(args).expect("settings").common
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = parse(&[]);
        assert_eq!(settings.bucket_url, "./bucket");
        assert_eq!(settings.webhook_url, None);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.shutdown_grace(), Duration::from_secs(30));
        assert_eq!(settings.stale_upload_age(), Duration::from_secs(3600));
        assert_eq!(settings.http_limits(), HttpLimits::default());
        assert_eq!((settings.security.tls_cert, settings.fail_at), (None, None));
        assert!(HttpLimits::default().max_connections > 1_000, "the issue asks for more than 1,000");
    }

    #[test]
    fn http_limits_are_read_and_zero_is_refused() {
        let settings =
            parse(&["--http-max-connections", "5", "--http-header-timeout-secs", "2", "--http-body-timeout-secs", "3"]);
        let expected = HttpLimits {
            max_connections: 5,
            header_read_timeout: Duration::from_secs(2),
            body_read_timeout: Duration::from_secs(3),
        };
        assert_eq!(settings.http_limits(), expected);
        for flag in ["--http-max-connections", "--http-header-timeout-secs", "--http-body-timeout-secs"] {
            let err = crs_platform::service::runtime::parse_without_env::<Service>(&[flag, "0"]).err();
            assert!(err.is_some_and(|e| e.to_string().contains(&flag[2..])), "{flag} 0 was accepted");
        }
    }

    #[test]
    fn debug_output_hides_the_webhook_url_and_the_token() {
        let settings = parse(&["--webhook-url", "https://hooks.example/T0/B0/xyzzy", "--auth-token", "plugh-token"]);
        assert_eq!(settings.webhook_url.as_deref(), Some("https://hooks.example/T0/B0/xyzzy"));
        let shown = format!("{settings:?}");
        assert!(!shown.contains("xyzzy") && !shown.contains("plugh"), "{shown}");
    }

    #[test]
    fn a_service_words_a_setting_its_own_way() {
        use clap::CommandFactory;
        let command = Service::command();
        let help = |id: &str| {
            let arg = command.get_arguments().find(|arg| arg.get_id() == id).expect("argument");
            arg.get_help().map(ToString::to_string).unwrap_or_default()
        };
        assert_eq!(help("webhook_url"), "Slack incoming-webhook URL for this service's notices");
        assert!(
            help("shutdown_grace_secs").starts_with("Seconds the work in flight"),
            "{}",
            help("shutdown_grace_secs")
        );
    }
}
