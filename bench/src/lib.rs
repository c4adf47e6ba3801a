//! What more than one benchmark needs: connecting, training through
//! train-service, waiting for serve-service, request rows from the generated
//! prediction input, observations written as CSV, percentiles and a process's
//! memory; the load generator's loop ([`load`]), its V2 client ([`v2`]), and
//! child servers and CPU time ([`process`]).

pub mod load;
pub mod process;
pub mod v2;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crs_domain::data::{Attributes, Observations, TableKind, TableReader};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::PredictRequest;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{GetTrainingJobRequest, JobState, StartTrainingRequest};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?)
}

/// Trains `model_ver` on the bucket's default files and returns the new run's id.
pub async fn train(addr: &str, model_ver: &str) -> anyhow::Result<String> {
    let mut client = TrainServiceClient::new(connect(addr).await?);
    let job = client
        .start_training(StartTrainingRequest { model_ver: model_ver.into(), ..Default::default() })
        .await?
        .into_inner();
    loop {
        let job = client.get_training_job(GetTrainingJobRequest { job_id: job.job_id.clone() }).await?.into_inner();
        match job.state() {
            JobState::Succeeded => return Ok(job.run_id),
            JobState::Failed => bail!("training failed: {}", job.error),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Connects once a server just started listens, trying for up to `within`.
pub async fn connect_retrying(addr: &str, within: Duration) -> anyhow::Result<Channel> {
    let started = Instant::now();
    loop {
        match connect(addr).await {
            Ok(channel) => return Ok(channel),
            Err(error) if started.elapsed() > within => return Err(error.context(format!("connecting to {addr}"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits up to `within` for serve-service's health check to say SERVING.
pub async fn wait_until_serving(channel: &Channel, within: Duration) -> anyhow::Result<()> {
    let mut health = HealthClient::new(channel.clone());
    let started = Instant::now();
    while started.elapsed() < within {
        if health.check(HealthCheckRequest::default()).await.is_ok_and(|r| r.into_inner().status == 1) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("serve-service did not report SERVING within {within:?}")
}

/// The generated prediction input's first chunk as request rows.
pub async fn request_rows(bucket: &Bucket) -> anyhow::Result<PredictRequest> {
    let bytes = bucket.get(&BucketKey::parse(PREDICTION_INPUT_KEY)?).await?;
    let mut reader = TableReader::open(
        PREDICTION_INPUT_KEY,
        std::io::Cursor::new(bytes),
        TableKind::PredictionInput,
        Attributes::All,
    )?;
    let rows = reader.next_rows()?.context("no rows")?;
    Ok(crctl::predict_request(&rows))
}

/// One CSV line per observation: `entity_id,device,att1..attN,clicks,conversions`.
pub fn write_observations(path: &Path, observations: &Observations) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let rows = &observations.rows;
    write!(out, "entity_id,device")?;
    for name in rows.attribute_names() {
        write!(out, ",{name}")?;
    }
    writeln!(out, ",clicks,conversions")?;
    for i in 0..observations.len() {
        write!(out, "{},{}", rows.entity_id[i], rows.device[i])?;
        for value in rows.attributes(i) {
            write!(out, ",{value}")?;
        }
        writeln!(out, ",{},{}", observations.clicks[i], observations.conversions[i])?;
    }
    out.flush()
}

/// The benches' imported model: `imported_xgb.py` fits xgboost (300 trees of
/// depth 6, `binary:logistic`) on `train` with `threads` threads and saves it
/// with xgboost's own `save_model`. Returns the saved file's bytes and the
/// fit's wall seconds, Python's start included.
pub fn fit_imported_xgb(python: &str, threads: usize, train: &Observations) -> anyhow::Result<(Vec<u8>, f64)> {
    let dir = tempfile::tempdir()?;
    let (train_csv, model) = (dir.path().join("train.csv"), dir.path().join("model.json"));
    write_observations(&train_csv, train)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("imported_xgb.py");
    let started = Instant::now();
    let status = std::process::Command::new(python)
        .arg(&script)
        .arg(&train_csv)
        .arg(&model)
        .arg(threads.to_string())
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(status.success(), "{} failed", script.display());
    let seconds = started.elapsed().as_secs_f64();
    Ok((std::fs::read(&model)?, seconds))
}

/// The `p`th percentile (0 to 100) of sorted values, nearest rank; NaN when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A kB field of `/proc/<pid>/status` (`pid` may be `self`), such as `VmRSS` or `VmHWM`.
pub fn status_kb(pid: &str, field: &str) -> anyhow::Result<u64> {
    kb_field(&format!("/proc/{pid}/status"), field)
}

/// A `Name: value kB` field of a `/proc` file such as `/proc/meminfo`.
pub fn kb_field(path: &str, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .with_context(|| format!("no {field} in {path}"))?;
    Ok(line.split_whitespace().next().context("empty value")?.parse()?)
}
