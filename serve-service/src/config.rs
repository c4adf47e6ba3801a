//! serve-service settings: flags, each with an environment variable fallback.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use crs_domain::models::{DeclareError, ModelVer};
use crs_platform::predictions::batch::DeviceColumn;
use crs_platform::predictions::shards::ShardArgs;
use crs_platform::registry::versions::{self, VersionError};
use crs_platform::storage::bucket::Bucket;
use crs_platform::storage::layout::{DEFAULT_OUTPUT_PREFIX, OutputPrefix};
use crs_server::settings::{CommonSettings, help};
use crs_server::startup::{Listeners, ServerError, bind, bind_optional};

use crate::model::Selection;

/// In webhooks and logs, the service that wrote them.
pub const SERVICE_NAME: &str = "serve-service";

#[derive(Clone, Debug, Parser)]
#[command(
    name = "serve-service",
    version,
    about = "Serves a trained conversion-rate model over gRPC: online and batch predictions"
)]
#[command(
    mut_arg(
        "webhook_url",
        help("Slack incoming-webhook URL for batch and model notices; unset means no posts. Never logged")
    ),
    mut_arg("shutdown_grace_secs", help("Seconds in-flight requests get to finish after SIGTERM or Ctrl+C"))
)]
pub struct Config {
    /// Address to listen on, host:port.
    #[arg(long, env = "SERVE_ADDR", default_value = "127.0.0.1:50052")]
    pub addr: String,
    /// Model version to serve: one this build trains (v0, v1, ...) or one the bucket declares for imports (config/<ver>/model.yaml).
    #[arg(long, env = "MODEL_VER", default_value = "v1")]
    pub model_ver: VersionName,
    /// Run to serve: `production` (follow the version's production alias), `latest` (follow model/<MODEL_VER>/LATEST) or a run id.
    #[arg(long, env = "MODEL_RUN", default_value = "production")]
    pub model_run: Selection,
    /// Model versions served at once (comma-separated; built in or declared for imports in the bucket), each following its production alias; MODEL_VER is always among them and keeps MODEL_RUN.
    #[arg(long, env = "SERVE_MODELS", value_delimiter = ',')]
    pub serve_models: Vec<VersionName>,
    /// Most model versions held at once, configured or loaded on request; a load beyond it is refused.
    #[arg(long, env = "MAX_LOADED_MODELS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_loaded_models: u32,
    /// Shadow pairs `shadow:primary` (comma-separated): the shadow also scores every request to the primary, off the request path, and both predictions are recorded in the bucket under shadow/<primary>/.
    #[arg(long, env = "SHADOW_MODELS", value_delimiter = ',', value_parser = parse_shadow_pair)]
    pub shadow_models: Vec<ShadowPair>,
    /// Share of served rows (online Predict and V2 ModelInfer) recorded with the inputs the model read and its answer under capture/<ver>/<date>/ in the bucket, off the request path: 0 (off) to 1.
    #[arg(long, env = "CAPTURE_SAMPLE", default_value_t = 0.0, value_parser = parse_share)]
    pub capture_sample: f64,
    /// Requests waiting to be scored by their shadows or captured; when it is full their shadow and capture rows are dropped (and counted), never the request.
    #[arg(long, env = "SHADOW_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub shadow_queue: u32,
    /// Recorded shadow (or captured) rows buffered before they are written to the bucket as one object.
    #[arg(long, env = "SHADOW_FLUSH_ROWS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub shadow_flush_rows: u32,
    /// Seconds between writes of recorded shadow and captured rows (also written at shutdown).
    #[arg(long, env = "SHADOW_FLUSH_SECS", default_value_t = 10.0, value_parser = parse_poll_interval)]
    pub shadow_flush_secs: f64,
    /// Seconds between checks of the bucket for a new LATEST run (or a first model).
    #[arg(long, env = "POLL_INTERVAL_SECS", default_value_t = 5.0, value_parser = parse_poll_interval)]
    pub poll_interval_secs: f64,
    /// Most rows one Predict request may carry.
    #[arg(long, env = "MAX_PREDICT_ROWS", default_value_t = 10_000)]
    pub max_predict_rows: usize,
    /// Largest gRPC request or response message, and largest REST request body, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// Bucket folder batch outputs must be written under; outside model/, config/, data/train/, data/predict/input/.
    #[arg(long, env = "OUTPUT_PREFIX", default_value = DEFAULT_OUTPUT_PREFIX, value_parser = parse_output_prefix)]
    pub output_prefix: OutputPrefix,
    /// Batch output device column unless a request says: `name` (Computer, ...) or `code` (0 Computer, 1 Smartphone, 2 Tablet).
    #[arg(long, env = "OUTPUT_DEVICE", default_value = "name", value_parser = parse_device_column)]
    pub output_device: DeviceColumn,
    /// Address (host:port) of the Prometheus endpoint, `GET /metrics`; unset means no metrics endpoint.
    #[arg(long, env = "SERVE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Address (host:port) of the Open Inference Protocol's HTTP/REST API (`/v2/...`, TLS as the gRPC port); unset means no REST API.
    #[arg(long, env = "SERVE_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Batch predictions running at once; one beyond it is refused at once with RESOURCE_EXHAUSTED, to be retried later.
    #[arg(long, env = "MAX_CONCURRENT_BATCHES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_batches: u32,
    /// Most memory the loaded models may take together, in MiB (fractions allowed), as each model counts its trees' node arrays; a LoadModel beyond it is refused.
    #[arg(long, env = "MAX_MODEL_MEMORY_MB", default_value_t = 2048.0, value_parser = parse_memory_mb)]
    pub max_model_memory_mb: f64,
    /// The bucket, webhooks, logs, shutdown and security: the settings every service reads.
    #[command(flatten)]
    pub common: CommonSettings,
    /// Without a command, serve; with one, do that once and exit.
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
}

/// What serve-service does once, instead of serving.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum ServeCommand {
    /// Batch-predict a file, or every file under a prefix (or one shard of them), with MODEL_VER at MODEL_RUN, print the result as JSON and exit (non-zero on failure): no listeners, for a Kubernetes Job. Settings come from the environment or go before `batch`.
    Batch(BatchCommand),
}

#[derive(Clone, Debug, clap::Args)]
pub struct BatchCommand {
    /// Bucket key of the input file, or a prefix ending in '/' for every .csv and .csv.gz file under it (each written under <OUTPUT_PREFIX>/<model_ver>/<run_id>/).
    #[arg(long)]
    pub input: String,
    /// Bucket key of a single file's output, under OUTPUT_PREFIX; default <OUTPUT_PREFIX>/<model_ver>/<run_id>/prediction_output.csv.gz.
    #[arg(long)]
    pub output: Option<String>,
    /// Replace --output if it already exists (otherwise such a batch is refused).
    #[arg(long)]
    pub overwrite: bool,
    /// Which of a prefix's files this process predicts.
    #[command(flatten)]
    pub shard: ShardArgs,
}

/// Longest poll interval accepted: a day. Longer is a typo, and `inf` or a
/// huge number cannot be a `Duration`.
const MAX_POLL_INTERVAL_SECS: f64 = 86_400.0;

fn parse_poll_interval(text: &str) -> Result<f64, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if (0.01..=MAX_POLL_INTERVAL_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("must be between 0.01 and {MAX_POLL_INTERVAL_SECS} seconds, got {text}"))
    }
}

fn parse_memory_mb(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(mb) if mb.is_finite() && mb > 0.0 => Ok(mb),
        _ => Err(format!("must be a positive number of MiB, got {text:?}")),
    }
}

fn parse_output_prefix(text: &str) -> Result<OutputPrefix, String> {
    OutputPrefix::parse(text).map_err(|e| e.to_string())
}

fn parse_device_column(text: &str) -> Result<DeviceColumn, String> {
    DeviceColumn::parse(text).ok_or_else(|| format!("must be `name` or `code`, got {text:?}"))
}

/// A model version as a setting names it: one this build trains, or a name a
/// bucket may declare for imports. Only its form is checked when the settings
/// are parsed; [`Config::resolve_models`] resolves it against the bucket at
/// start-up, where a name neither built in nor declared is refused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionName(String);

impl VersionName {
    pub fn name(&self) -> &str {
        &self.0
    }

    async fn resolve(&self, setting: &'static str, bucket: &Bucket) -> Result<ModelVer, ModelSettingsError> {
        versions::resolve(bucket, &self.0).await.map_err(|source| ModelSettingsError::Version { setting, source })
    }
}

impl std::str::FromStr for VersionName {
    type Err = DeclareError;

    fn from_str(text: &str) -> Result<Self, DeclareError> {
        let name = text.trim();
        if ModelVer::parse(name).is_err() {
            ModelVer::declare_check(name)?;
        }
        Ok(VersionName(name.to_owned()))
    }
}

impl From<ModelVer> for VersionName {
    fn from(version: ModelVer) -> Self {
        VersionName(version.name().to_owned())
    }
}

impl std::fmt::Display for VersionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shadow model version and the primary whose requests it also scores: as
/// SHADOW_MODELS names them, then resolved ([`ServedModels::shadows`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowPair<V = VersionName> {
    pub shadow: V,
    pub primary: V,
}

impl std::str::FromStr for ShadowPair {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_shadow_pair(text)
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("expected a share from 0 to 1, got {text:?}")),
    }
}

fn parse_shadow_pair(text: &str) -> Result<ShadowPair, String> {
    let Some((shadow, primary)) = text.trim().split_once(':') else {
        return Err(format!("expected shadow:primary (e.g. v2:v1), got {text:?}"));
    };
    let version = |name: &str| name.parse::<VersionName>().map_err(|e| e.to_string());
    let pair = ShadowPair { shadow: version(shadow)?, primary: version(primary)? };
    if pair.shadow == pair.primary {
        return Err(format!("{text:?}: a model version cannot shadow itself"));
    }
    Ok(pair)
}

/// The model settings, every name resolved against the bucket.
#[derive(Clone, Debug)]
pub struct ServedModels {
    /// MODEL_VER.
    pub default: ModelVer,
    /// Every version served from the start besides MODEL_VER: SERVE_MODELS and
    /// both sides of each shadow pair, in version order, each once.
    pub others: Vec<ModelVer>,
    pub shadows: Vec<ShadowPair<ModelVer>>,
}

/// Why the model settings cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelSettingsError {
    #[error("{setting}: {source}")]
    Version { setting: &'static str, source: VersionError },
    #[error(transparent)]
    TooMany(#[from] TooManyConfigured),
}

/// Why the model settings cannot be served together.
#[derive(Debug, thiserror::Error)]
#[error(
    "SERVE_MODELS, MODEL_VER and SHADOW_MODELS name {} model versions ({}) but MAX_LOADED_MODELS is {max}",
    versions.len(),
    versions.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
)]
pub struct TooManyConfigured {
    versions: Vec<ModelVer>,
    max: u32,
}

impl Config {
    /// The gRPC listener on SERVE_ADDR, and the metrics endpoint's on
    /// SERVE_METRICS_ADDR and the REST API's on SERVE_HTTP_ADDR, if set.
    pub async fn listeners(&self) -> Result<Listeners, ServerError> {
        let metrics = bind_optional("SERVE_METRICS_ADDR", self.metrics_addr.as_deref()).await?;
        let http = bind_optional("SERVE_HTTP_ADDR", self.http_addr.as_deref()).await?;
        Ok(Listeners::new(bind("SERVE_ADDR", &self.addr).await?).with_metrics(metrics).with_http(http))
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_secs.clamp(0.01, MAX_POLL_INTERVAL_SECS))
    }

    /// MAX_MODEL_MEMORY_MB in bytes.
    pub fn max_model_memory_bytes(&self) -> u64 {
        (self.max_model_memory_mb * f64::from(1 << 20)) as u64
    }

    pub fn shadow_flush_interval(&self) -> Duration {
        Duration::from_secs_f64(self.shadow_flush_secs.clamp(0.01, MAX_POLL_INTERVAL_SECS))
    }

    /// MODEL_VER, resolved against `bucket`: built in, or declared there for imports.
    pub async fn resolve_model_ver(&self, bucket: &Bucket) -> Result<ModelVer, ModelSettingsError> {
        self.model_ver.resolve("MODEL_VER", bucket).await
    }

    /// MODEL_VER, SERVE_MODELS and SHADOW_MODELS resolved against `bucket`
    /// (the one place a configured name meets the bucket's declarations), and
    /// no more of them than MAX_LOADED_MODELS.
    pub async fn resolve_models(&self, bucket: &Bucket) -> Result<ServedModels, ModelSettingsError> {
        let default = self.resolve_model_ver(bucket).await?;
        let mut versions = BTreeSet::from([default]);
        for name in &self.serve_models {
            versions.insert(name.resolve("SERVE_MODELS", bucket).await?);
        }
        let mut shadows = Vec::with_capacity(self.shadow_models.len());
        for pair in &self.shadow_models {
            let shadow = pair.shadow.resolve("SHADOW_MODELS", bucket).await?;
            let primary = pair.primary.resolve("SHADOW_MODELS", bucket).await?;
            versions.extend([shadow, primary]);
            shadows.push(ShadowPair { shadow, primary });
        }
        if versions.len() > self.max_loaded_models as usize {
            return Err(
                TooManyConfigured { versions: versions.into_iter().collect(), max: self.max_loaded_models }.into()
            );
        }
        versions.remove(&default);
        Ok(ServedModels { default, others: versions.into_iter().collect(), shadows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        crs_platform::service::runtime::parse_without_env(args)
    }

    #[test]
    fn defaults_match_the_documentation_and_debug_hides_the_webhook() {
        let config = parse(&["--webhook-url", "https://hooks.example/T000/B000/XXXX"]).unwrap();
        assert_eq!(config.addr, "127.0.0.1:50052");
        assert_eq!((config.model_ver.name(), &config.model_run), ("v1", &Selection::Production));
        assert_eq!(config.poll_interval(), Duration::from_secs(5));
        assert_eq!((config.max_predict_rows, config.max_message_bytes), (10_000, 16 << 20));
        assert!(!format!("{config:?}").contains("hooks.example"), "{config:?}");
        assert_eq!((config.output_prefix.as_str(), config.output_device), ("data/predict/output", DeviceColumn::Name));
        assert_eq!((config.metrics_addr.as_deref(), config.http_addr.as_deref()), (None, None));
        assert_eq!((config.max_concurrent_batches, config.max_model_memory_bytes()), (2, 2048 << 20));
        assert_eq!((config.common.stale_upload_secs, config.common.fail_at), (3600, None));
    }

    #[test]
    fn limits_that_are_not_positive_are_refused_at_startup() {
        for (flag, bad) in
            [("--max-concurrent-batches", "0"), ("--max-model-memory-mb", "0"), ("--max-model-memory-mb", "inf")]
        {
            let err = parse(&[flag, bad]).unwrap_err().to_string();
            assert!(err.contains(&flag[2..]), "{flag} {bad}: {err}");
        }
        assert_eq!(parse(&["--max-model-memory-mb", "0.5"]).unwrap().max_model_memory_bytes(), 1 << 19);
    }

    #[test]
    fn output_prefixes_in_protected_areas_and_unknown_device_forms_are_refused_at_startup() {
        for bad in ["model", "config/", "data/train/x", "../out"] {
            let err = parse(&["--output-prefix", bad]).unwrap_err().to_string();
            assert!(err.contains("output-prefix"), "{bad}: {err}");
        }
        assert_eq!(parse(&["--output-prefix", "exports/"]).unwrap().output_prefix.as_str(), "exports");
        assert_eq!(parse(&["--output-device", "code"]).unwrap().output_device, DeviceColumn::Code);
        assert!(parse(&["--output-device", "number"]).is_err());
    }

    #[test]
    fn poll_intervals_that_are_not_a_sane_duration_are_refused_at_startup() {
        for bad in ["inf", "NaN", "-1", "0", "1e300", "86401", "soon"] {
            let err = parse(&[&format!("--poll-interval-secs={bad}")]).unwrap_err().to_string();
            assert!(err.contains("poll-interval-secs"), "{bad}: {err}");
        }
        let config = parse(&["--poll-interval-secs", "0.25"]).unwrap();
        assert_eq!(config.poll_interval(), Duration::from_millis(250));
    }

    fn names(versions: &[ModelVer]) -> Vec<&'static str> {
        versions.iter().map(|v| v.name()).collect()
    }

    #[tokio::test]
    async fn serve_models_default_to_model_ver_alone_and_add_to_it() {
        let bucket = Bucket::open("memory://").unwrap();
        let config = parse(&[]).unwrap();
        assert!(config.serve_models.is_empty() && config.shadow_models.is_empty());
        let models = config.resolve_models(&bucket).await.unwrap();
        assert_eq!((models.default.name(), models.others), ("v1", Vec::<ModelVer>::new()));
        assert_eq!(config.max_loaded_models, 4);

        let config = parse(&["--model-ver", "v1", "--serve-models", "v0,v1"]).unwrap();
        assert_eq!(names(&config.resolve_models(&bucket).await.unwrap().others), ["v0"]);
        let config = parse(&["--serve-models", "v2", "--shadow-models", "v0:v1"]).unwrap();
        assert_eq!(names(&config.resolve_models(&bucket).await.unwrap().others), ["v0", "v2"]);
    }

    #[tokio::test]
    async fn versions_the_bucket_declares_are_served_and_unknown_ones_refused_naming_the_setting() {
        let bucket = Bucket::open("memory://").unwrap();
        let declaration = crs_platform::storage::layout::declaration_key_of("config-test-xgb").unwrap();
        bucket.put(&declaration, "framework: xgboost\n").await.unwrap();
        let config = parse(&["--serve-models", "config-test-xgb,v0", "--shadow-models", "config-test-xgb:v1"]).unwrap();
        let models = config.resolve_models(&bucket).await.unwrap();
        assert_eq!(names(&models.others), ["config-test-xgb", "v0"]);
        assert!(models.others[0].is_imported());
        assert_eq!(names(&[models.shadows[0].shadow, models.shadows[0].primary]), ["config-test-xgb", "v1"]);
        let config = parse(&["--model-ver", "config-test-xgb"]).unwrap();
        assert_eq!(config.resolve_model_ver(&bucket).await.unwrap().name(), "config-test-xgb");

        for (flag, value, setting) in [
            ("--model-ver", "config-test-none", "MODEL_VER"),
            ("--serve-models", "v0,config-test-none", "SERVE_MODELS"),
            ("--shadow-models", "config-test-none:v1", "SHADOW_MODELS"),
        ] {
            let err = parse(&[flag, value]).unwrap().resolve_models(&bucket).await.unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "{setting}: unknown model version \"config-test-none\" (known: {}); declared for imports in the bucket: config-test-xgb",
                    crs_domain::models::known_versions().join(", ")
                )
            );
        }
    }

    #[test]
    fn unsafe_version_names_and_bad_shadow_pairs_are_refused_naming_the_setting() {
        let err = parse(&["--serve-models", "v0,../v7"]).unwrap_err().to_string();
        assert!(err.contains("--serve-models") && err.contains("\"../v7\" is not a model version name"), "{err}");
        for (bad, needle) in [
            ("v0", "expected shadow:primary"),
            ("v0:a/b", "\"a/b\" is not a model version name"),
            ("v1:v1", "cannot shadow itself"),
            ("v0-v1", "expected shadow:primary"),
        ] {
            let err = parse(&["--shadow-models", bad]).unwrap_err().to_string();
            assert!(err.contains("--shadow-models") && err.contains(needle), "{bad}: {err}");
        }
        let config = parse(&["--shadow-models", "v0:v1,v2:v1"]).unwrap();
        let v = |name: &str| name.parse::<VersionName>().unwrap();
        assert_eq!(
            config.shadow_models,
            [ShadowPair { shadow: v("v0"), primary: v("v1") }, ShadowPair { shadow: v("v2"), primary: v("v1") }]
        );
    }

    #[tokio::test]
    async fn more_configured_versions_than_max_loaded_models_is_a_startup_error() {
        let bucket = Bucket::open("memory://").unwrap();
        let config = parse(&["--serve-models", "v0,v2", "--max-loaded-models", "2"]).unwrap();
        let err = config.resolve_models(&bucket).await.unwrap_err().to_string();
        assert!(err.contains("MAX_LOADED_MODELS is 2") && err.contains("v0, v1, v2"), "{err}");
        assert!(parse(&["--max-loaded-models", "0"]).unwrap_err().to_string().contains("max-loaded-models"));
    }

    #[tokio::test]
    async fn unknown_model_versions_and_unsafe_runs_are_refused_at_startup() {
        let bucket = Bucket::open("memory://").unwrap();
        let err = parse(&["--model-ver", "v7"]).unwrap().resolve_model_ver(&bucket).await.unwrap_err().to_string();
        assert!(err.starts_with("MODEL_VER: unknown model version \"v7\""), "{err}");
        let err = parse(&["--model-ver", "../v7"]).unwrap_err().to_string();
        assert!(err.contains("not a model version name"), "{err}");
        let err = parse(&["--model-run", "../x"]).unwrap_err().to_string();
        assert!(err.contains("not a run id"), "{err}");
    }
}
