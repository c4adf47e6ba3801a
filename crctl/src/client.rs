//! Commands that talk to the services over gRPC.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use crs_domain::data::{Attributes, KeywordRows, TableKind, TableReader, keyword_rows};
use crs_platform::security::{AUTHORIZATION, TokenSettings, bearer};
use crs_platform::storage::layout::{PREDICTION_INPUT_KEY, TRAIN_KEY};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{
    DeviceFormat, GetModelRequest, LoadModelRequest, ModelInfo, PredictBatchRequest, PredictRequest, Row,
};
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{
    CancelCycleRequest, CancelTrainingJobRequest, CycleState, Evaluation, JobState, ListModelsRequest,
    ListTrainingJobsRequest, Stage, StartTrainingRequest, WatchTrainingJobRequest,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::render;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Where the services are (the same variables the services listen on), and
/// how to reach them: TLS and the bearer token, as the services are set.
#[derive(Debug, Args)]
pub struct Addresses {
    /// train-service address, host:port.
    #[arg(long, env = "TRAIN_ADDR", default_value = "127.0.0.1:50051", global = true)]
    train_addr: String,
    /// serve-service address, host:port.
    #[arg(long, env = "SERVE_ADDR", default_value = "127.0.0.1:50052", global = true)]
    serve_addr: String,
    /// PEM certificate of the CA that signed the services' TLS certificates; set, crctl connects with https.
    #[arg(long, env = "TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    #[command(flatten)]
    token: TokenSettings,
    /// Print one JSON object instead of text meant for people.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Every call of this crctl run carries one `x-request-id`, so the services'
/// log lines and notices for it can be found (errors print it), and the bearer
/// token when one is set.
#[derive(Clone, Debug)]
pub struct CallMetadata {
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

fn request_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| format!("crctl-{}", crs_platform::request_id::generate()))
}

impl tonic::service::Interceptor for CallMetadata {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let id = tonic::metadata::MetadataValue::from_static(request_id());
        request.metadata_mut().insert(crs_platform::request_id::HEADER, id);
        if let Some(authorization) = &self.authorization {
            request.metadata_mut().insert(AUTHORIZATION, authorization.clone());
        }
        Ok(request)
    }
}

type Client = InterceptedService<Channel, CallMetadata>;

impl Addresses {
    async fn channel(&self, addr: &str) -> anyhow::Result<Channel> {
        let scheme = if self.tls_ca.is_some() { "https" } else { "http" };
        let uri = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
        let mut endpoint = Channel::from_shared(uri.clone())
            .with_context(|| format!("bad address {addr}"))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &self.tls_ca {
            let ca = Certificate::from_pem(crs_platform::security::read_pem("TLS_CA", ca)?);
            endpoint = endpoint.tls_config(ClientTlsConfig::new().ca_certificate(ca)).context("TLS_CA")?;
        }
        endpoint.connect().await.with_context(|| format!("cannot reach {uri}"))
    }

    fn metadata(&self) -> anyhow::Result<CallMetadata> {
        let authorization = match self.token.token()? {
            Some(token) => {
                let mut value = tonic::metadata::AsciiMetadataValue::try_from(bearer(&token))
                    .context("AUTH_TOKEN is not a valid header value")?;
                // Kept out of any debug output of the request.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(CallMetadata { authorization })
    }

    pub(crate) async fn train(&self) -> anyhow::Result<TrainServiceClient<Client>> {
        Ok(TrainServiceClient::with_interceptor(self.channel(&self.train_addr).await?, self.metadata()?))
    }

    async fn serve(&self) -> anyhow::Result<ServeServiceClient<Client>> {
        Ok(ServeServiceClient::with_interceptor(self.channel(&self.serve_addr).await?, self.metadata()?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
}

/// A gRPC error as the user should read it: the code, then the server's
/// message, then the request id to look for in the service's logs.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {} (request id {})", e.code(), e.message(), request_id())
}

pub(crate) fn print_json(value: &Value) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model version to train; empty means train-service's MODEL_VER.
    #[arg(long, env = "MODEL_VER", default_value = "")]
    model_ver: String,
    /// Bucket key of the training data.
    #[arg(long = "train", default_value = TRAIN_KEY)]
    train_key: String,
    /// Bucket key of the evaluation data; without it, a holdout of the training keywords.
    #[arg(long = "eval")]
    eval_key: Option<String>,
    /// Bucket key of the hyperparameter YAML; without it, config/<model_ver>/params.yaml.
    #[arg(long = "config")]
    config_key: Option<String>,
    /// Label recorded with the run, key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Follow the job to its end with a progress bar; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
    /// A development run: kept as a draft, never gated or promoted, served only when loaded by id.
    #[arg(long)]
    draft: bool,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{text:?} is not key=value"))
}

pub async fn train(args: TrainArgs, addrs: &Addresses) -> anyhow::Result<()> {
    let mut client = addrs.train().await?;
    let job = client
        .start_training(StartTrainingRequest {
            model_ver: args.model_ver,
            train_key: args.train_key,
            eval_key: args.eval_key,
            config_key: args.config_key,
            labels: args.labels.into_iter().collect(),
            draft: args.draft,
        })
        .await
        .map_err(status)?
        .into_inner();
    if !args.wait {
        return if addrs.json {
            print_json(&render::job(&job))
        } else {
            out!("job {} queued: model {} on {}", job.job_id, job.model_ver, job.train_key);
            Ok(())
        };
    }

    let mut updates = client
        .watch_training_job(WatchTrainingJobRequest { job_id: job.job_id.clone() })
        .await
        .map_err(status)?
        .into_inner();
    let bar = if addrs.json { ProgressBar::hidden() } else { ProgressBar::new(100) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last = job;
    while let Some(update) = updates.message().await.map_err(status)? {
        bar.set_position((update.progress * 100.0).round() as u64);
        let search = update.search.as_ref().map_or(String::new(), |s| {
            if s.refitting {
                format!(": refitting grid point {} with {} trees", s.best_point, s.best_trees)
            } else {
                format!(
                    ": search point {}/{}, fold {}/{}, best point {} (log-loss {:.5})",
                    s.point, s.points, s.folds_done, s.folds, s.best_point, s.best_logloss
                )
            }
        });
        bar.set_message(format!("job {} {}{search}", update.job_id, stage_name(update.stage())));
        last = update;
    }
    bar.finish_and_clear();
    if addrs.json {
        print_json(&render::job(&last))?;
    }
    match last.state() {
        JobState::Succeeded => {
            if !addrs.json {
                out!("job {} succeeded: model {} run {}", last.job_id, last.model_ver, last.run_id);
                if let Some(e) = &last.evaluation {
                    print_evaluation("eval", e);
                }
            }
            Ok(())
        }
        JobState::Failed => bail!("job {} failed: {}", last.job_id, last.error),
        JobState::Cancelled => bail!("job {} cancelled by {}: {}", last.job_id, last.cancelled_by, last.cancel_reason),
        other => bail!("job {} stream ended while {}", last.job_id, other.as_str_name()),
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Unspecified => "queued",
        Stage::LoadingData => "loading data",
        Stage::Preparing => "preparing",
        Stage::Training => "training",
        Stage::Evaluating => "evaluating",
        Stage::Saving => "saving",
    }
}

pub(crate) fn print_evaluation(name: &str, e: &Evaluation) {
    out!("{name}: {} rows, {} clicks", e.rows, e.clicks);
    out!("  {:<18}{:>10}{:>10}{:>10}{:>10}", "", "wmae", "wmse", "logloss", "mae");
    for (label, m) in [
        ("model", &e.model),
        ("baseline: device", &e.device),
        ("baseline: global", &e.global),
        ("baseline: zero", &e.zero),
    ] {
        if let Some(m) = m {
            out!("  {label:<18}{:>10.5}{:>10.5}{:>10.4}{:>10.5}", m.wmae, m.wmse, m.logloss, m.mae);
        }
    }
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job to cancel.
    #[arg(required_unless_present = "cycle", conflicts_with = "cycle")]
    job_id: Option<String>,
    /// Cancel this cycle instead (of --model-ver), on whichever replica runs it.
    #[arg(long)]
    cycle: Option<String>,
    /// The cycle's model version; empty means train-service's default.
    #[arg(long, env = "MODEL_VER", default_value = "", requires = "cycle")]
    model_ver: String,
    /// Why it is cancelled, recorded with the job.
    #[arg(long, default_value = "")]
    reason: String,
    /// Who cancels it, recorded with the job.
    #[arg(long, default_value = "crctl cancel")]
    by: String,
}

/// Exits non-zero unless the job or cycle ended cancelled (it may have finished first).
pub async fn cancel(args: CancelArgs, addrs: &Addresses) -> anyhow::Result<()> {
    if let Some(cycle_id) = args.cycle {
        let request = CancelCycleRequest { model_ver: args.model_ver, cycle_id, by: args.by, reason: args.reason };
        let cycle = addrs.train().await?.cancel_cycle(request).await.map_err(status)?.into_inner();
        if addrs.json {
            print_json(&render::value(&cycle))?;
        }
        return match cycle.state() {
            CycleState::Cancelled => {
                if !addrs.json {
                    out!("cycle {} {}", cycle.cycle_id, cycle.decision);
                }
                Ok(())
            }
            other => bail!("cycle {} was not cancelled: it is {}", cycle.cycle_id, other.as_str_name()),
        };
    }
    let job_id = args.job_id.unwrap_or_default();
    let request = CancelTrainingJobRequest { job_id, by: args.by, reason: args.reason };
    let job = addrs.train().await?.cancel_training_job(request).await.map_err(status)?.into_inner();
    if addrs.json {
        print_json(&render::job(&job))?;
    }
    match job.state() {
        JobState::Cancelled => {
            if !addrs.json {
                out!("job {} cancelled by {}: {}", job.job_id, job.cancelled_by, job.cancel_reason);
            }
            Ok(())
        }
        other => bail!("job {} was not cancelled: it is {}", job.job_id, other.as_str_name()),
    }
}

pub async fn jobs(addrs: &Addresses) -> anyhow::Result<()> {
    let jobs =
        addrs.train().await?.list_training_jobs(ListTrainingJobsRequest {}).await.map_err(status)?.into_inner().jobs;
    if addrs.json {
        return print_json(&render::jobs(&jobs));
    }
    out!("{:<22}{:<6}{:<11}{:<14}{:<28}ERROR", "JOB", "MODEL", "STATE", "STAGE", "RUN");
    for job in &jobs {
        out!(
            "{:<22}{:<6}{:<11}{:<14}{:<28}{}",
            job.job_id,
            job.model_ver,
            job.state().as_str_name().trim_start_matches("JOB_STATE_"),
            stage_name(job.stage()),
            job.run_id,
            job.error
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Only this model version.
    #[arg(long, default_value = "")]
    model_ver: String,
}

pub async fn models(args: ModelsArgs, addrs: &Addresses) -> anyhow::Result<()> {
    let response = addrs
        .train()
        .await?
        .list_models(ListModelsRequest { model_ver: args.model_ver })
        .await
        .map_err(status)?
        .into_inner();
    if addrs.json {
        return print_json(&render::models(&response));
    }
    let versions = response.versions;
    for v in &versions {
        out!("model {} (LATEST: {})", v.model_ver, if v.latest_run_id.is_empty() { "none" } else { &v.latest_run_id });
        out!("  {:<30}{:>10}{:>12}{:>10}", "RUN", "eval wmae", "device wmae", "logloss");
        for r in &v.runs {
            let model = r.eval.as_ref().and_then(|e| e.model);
            let device = r.eval.as_ref().and_then(|e| e.device);
            let marker = if r.run_id == v.latest_run_id { " <- LATEST" } else { "" };
            out!(
                "  {:<30}{:>10.5}{:>12.5}{:>10.4}{marker}",
                r.run_id,
                model.map_or(f64::NAN, |m| m.wmae),
                device.map_or(f64::NAN, |m| m.wmae),
                model.map_or(f64::NAN, |m| m.logloss),
            );
        }
    }
    Ok(())
}

fn print_model(info: &ModelInfo, addrs: &Addresses) -> anyhow::Result<()> {
    if addrs.json {
        return print_json(&render::model(info));
    }
    out!("serving model {} run {} (selection: {})", info.model_ver, info.run_id, info.selection);
    out!("  trained by job {}, artifact sha256 {}", info.job_id, info.artifact_sha256);
    out!("  eval wmae {:.5} (device baseline {:.5})", info.eval_wmae, info.eval_baseline_wmae);
    out!("  needs {} attribute columns", info.attribute_names.len());
    if !info.importance.is_empty() {
        out!("  feature importance, top {}:", info.importance.len().min(10));
        for f in info.importance.iter().take(10) {
            out!("    {:<20}{:>12.6}", f.feature, f.importance);
        }
    }
    if !info.loaded.is_empty() {
        out!("loaded models:");
        for m in &info.loaded {
            let shadow = if m.shadow_of.is_empty() { String::new() } else { format!(", shadow of {}", m.shadow_of) };
            out!(
                "  {:<4} run {} (selection: {}), ~{:.1} MiB{shadow}",
                m.model_ver,
                m.run_id,
                m.selection,
                m.memory_bytes as f64 / f64::from(1 << 20)
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model version to describe; default: the service's MODEL_VER.
    #[arg(long, default_value = "")]
    model_ver: String,
}

pub async fn model(args: ModelArgs, addrs: &Addresses) -> anyhow::Result<()> {
    let request = GetModelRequest { model_ver: args.model_ver, ..Default::default() };
    let info = addrs.serve().await?.get_model(request).await.map_err(status)?.into_inner();
    print_model(&info, addrs)
}

#[derive(Debug, Args)]
pub struct LoadModelArgs {
    /// Model version to serve.
    #[arg(long)]
    model_ver: String,
    /// A run id, or latest to follow model/<model_ver>/LATEST.
    #[arg(long, default_value = "latest")]
    run: String,
}

pub async fn load_model(args: LoadModelArgs, addrs: &Addresses) -> anyhow::Result<()> {
    let info = addrs
        .serve()
        .await?
        .load_model(LoadModelRequest { model_ver: args.model_ver, run: args.run })
        .await
        .map_err(status)?
        .into_inner();
    print_model(&info, addrs)
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Local CSV or gzip CSV in the prediction-input schema.
    #[arg(long)]
    input: String,
    /// Most rows per request; keep it at or under serve-service's MAX_PREDICT_ROWS.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    batch_rows: u32,
}

pub async fn predict(args: PredictArgs, addrs: &Addresses) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.input).with_context(|| format!("cannot open {}", args.input))?;
    let mut reader = TableReader::open(&args.input, file, TableKind::PredictionInput, Attributes::All)?;
    let names = reader.attribute_names().clone();
    let mut client = addrs.serve().await?;
    let mut out = Vec::new();
    let mut answered_by = None;
    while let Some(chunk) = reader.next_chunk()? {
        for request in predict_requests(&keyword_rows(chunk, &names)?, args.batch_rows as usize) {
            let response = client.predict(request.clone()).await.map_err(status)?.into_inner();
            answered_by = Some((response.model_ver, response.run_id));
            out.extend(request.rows.into_iter().zip(response.cr).map(|(row, cr)| (row.entity_id, row.device, cr)));
        }
    }
    let (model_ver, run_id) = answered_by.unwrap_or_default();
    if addrs.json {
        return print_json(&render::predictions(&model_ver, &run_id, &out));
    }
    out!("entity_id,device,cr");
    for (entity, device, cr) in &out {
        out!("{entity},{device},{cr}");
    }
    eprintln!("{} rows predicted by model {model_ver} run {run_id}", out.len());
    Ok(())
}

/// Keyword rows as `Predict` requests of at most `max_rows` rows each (the
/// server refuses requests over its `MAX_PREDICT_ROWS`).
fn predict_requests(rows: &KeywordRows, max_rows: usize) -> impl Iterator<Item = PredictRequest> + '_ {
    let indices: Vec<usize> = (0..rows.len()).collect();
    let pieces: Vec<Vec<usize>> = indices.chunks(max_rows.max(1)).map(<[usize]>::to_vec).collect();
    pieces.into_iter().map(|piece| predict_request(&rows.select(&piece)))
}

/// Keyword rows as a `Predict` request.
pub fn predict_request(rows: &KeywordRows) -> PredictRequest {
    PredictRequest {
        attribute_names: rows.attribute_names().to_vec(),
        rows: (0..rows.len())
            .map(|i| Row {
                entity_id: rows.entity_id[i],
                device: rows.device[i].as_str().to_owned(),
                attribute_values: rows.attributes(i).iter().map(|&v| u32::from(v)).collect(),
            })
            .collect(),
        ..Default::default()
    }
}

#[derive(Debug, Args)]
pub struct PredictBatchArgs {
    /// Bucket key of the input file.
    #[arg(long, default_value = PREDICTION_INPUT_KEY)]
    input: String,
    /// Bucket key of the output, under the service's output prefix; default data/predict/output/<model_ver>/<run_id>/prediction_output.csv.gz.
    #[arg(long)]
    output: Option<String>,
    /// Replace --output if it already exists (otherwise such a batch is refused).
    #[arg(long)]
    overwrite: bool,
    /// Output device column: `name` (Computer, ...) or `code` (0 Computer, 1 Smartphone, 2 Tablet); default: the service's OUTPUT_DEVICE.
    #[arg(long, value_parser = ["name", "code"])]
    device_format: Option<String>,
    /// Model version to predict with; default: the service's MODEL_VER.
    #[arg(long, default_value = "")]
    model_ver: String,
}

pub async fn predict_batch(args: PredictBatchArgs, addrs: &Addresses) -> anyhow::Result<()> {
    let response = addrs
        .serve()
        .await?
        .predict_batch(PredictBatchRequest {
            input_key: args.input.clone(),
            output_key: args.output,
            overwrite: args.overwrite,
            device_format: match args.device_format.as_deref() {
                Some("name") => DeviceFormat::Name,
                Some("code") => DeviceFormat::Code,
                _ => DeviceFormat::Unspecified,
            } as i32,
            model_ver: args.model_ver,
            run_id: String::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if addrs.json {
        return print_json(&render::batch(&args.input, &response));
    }
    out!(
        "wrote {} ({} rows from {} input rows) with model {} run {} in {:.2} s",
        response.output_key,
        response.rows_written,
        response.rows_read,
        response.model_ver,
        response.run_id,
        response.seconds
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ServiceName {
    Train,
    Serve,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Which service to ask.
    #[arg(long, value_enum)]
    service: ServiceName,
}

/// Exit code 0 only when the service reports SERVING, for container health checks.
pub async fn health(args: HealthArgs, addrs: &Addresses) -> anyhow::Result<()> {
    let addr = match args.service {
        ServiceName::Train => &addrs.train_addr,
        ServiceName::Serve => &addrs.serve_addr,
    };
    let mut client = HealthClient::new(addrs.channel(addr).await?);
    let answer =
        tokio::time::timeout(Duration::from_secs(5), client.check(HealthCheckRequest { service: String::new() }))
            .await
            .context("no health answer within 5 s")?
            .map_err(status)?
            .into_inner();
    let serving = answer.status();
    if addrs.json {
        print_json(&render::health(&format!("{:?}", args.service).to_lowercase(), addr, serving.as_str_name()))?;
    } else {
        out!("{addr}: {}", serving.as_str_name());
    }
    if serving != ServingStatus::Serving {
        bail!("{addr} is not serving");
    }
    Ok(())
}
