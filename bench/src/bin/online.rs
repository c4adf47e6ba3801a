//! Online prediction latency and throughput over loopback gRPC, from a load
//! generator of our own.
//!
//! ```text
//! cargo run --release -p crs-bench --bin online
//! ```
//!
//! It trains v1 on generated data through train-service, starts serve-service on
//! 127.0.0.1, then measures, each for `--seconds`:
//! 1. latency of one-row `Predict` calls at concurrency 1, next to the gRPC
//!    health `Check` call (the transport's floor) measured the same way;
//! 2. rows per second of 100-row `Predict` calls at concurrency 32.
//!
//! The services run in this process on their own runtime, the load generator on
//! another; both share the machine's cores, as a client on the same host would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use crs_domain::data::{Attributes, TableKind, TableReader, keyword_rows};
use crs_platform::bucket::{Bucket, BucketKey};
use crs_platform::layout::PREDICTION_INPUT_KEY;
use crs_platform::sample_data::SampleSizes;
use crs_proto::serve::PredictRequest;
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{GetTrainingJobRequest, JobState, StartTrainingRequest};
use crs_testkit::{Setup, Stack};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent callers in the throughput measurement.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Rows per request in the throughput measurement.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// HTTP/2 connections the throughput callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Worker threads of the services' runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let services =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.server_threads).enable_all().build()?;
    // The services run on their own runtime: the stack spawns them on the one it is started from.
    let (stack, trainer, server) = services.block_on(async {
        let stack = Stack::with(Setup { webhook: None, sizes: SampleSizes::default() }).await;
        let train = stack.start_train(stack.train_config()).await;
        let mut serve_config = stack.serve_config();
        serve_config.poll_interval_secs = 0.2;
        let serve = stack.start_serve(serve_config).await;
        (stack, train, serve)
    });
    let (train_addr, serve_addr) = (trainer.addr.to_string(), server.addr.to_string());
    let bucket_url = stack.bucket_url.clone();

    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    client.block_on(async {
        let bucket = Bucket::open(&bucket_url)?;
        train(&train_addr).await?;
        let template = request_rows(&bucket).await?;
        let serve = connect(&serve_addr).await?;
        wait_until_serving(&serve).await?;
        let duration = Duration::from_secs_f64(args.seconds);

        let one_row = PredictRequest { attribute_names: template.attribute_names.clone(), rows: template.rows[..1].to_vec() };
        let health = latencies(duration, || {
            let mut c = HealthClient::new(serve.clone());
            async move { c.check(HealthCheckRequest::default()).await.map(|_| ()) }
        })
        .await?;
        let predict = latencies(duration, || {
            let mut c = ServeServiceClient::new(serve.clone());
            let request = one_row.clone();
            async move { c.predict(request).await.map(|_| ()) }
        })
        .await?;
        println!("latency at concurrency 1 over {:.0} s each (microseconds)", args.seconds);
        println!("{:<26}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}", "call", "calls", "p50", "p90", "p99", "p99.9", "max");
        print_latencies("health Check (floor)", &health);
        print_latencies("Predict, 1 row", &predict);
        println!("Predict p50 / floor p50: {:.2}x, p99 / floor p99: {:.2}x", pct(&predict, 50.0) / pct(&health, 50.0), pct(&predict, 99.0) / pct(&health, 99.0));

        let batch = PredictRequest {
            attribute_names: template.attribute_names.clone(),
            rows: template.rows.iter().cycle().take(args.rows).cloned().collect(),
        };
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            channels.push(connect(&serve_addr).await?);
        }
        let (requests, elapsed, per_call) = throughput(duration, args.concurrency, &channels, &batch).await?;
        let rows = requests * args.rows as u64;
        println!();
        println!(
            "throughput: {} callers, {}-row requests, {} connections, {:.1} s: {requests} requests, {rows} rows, {:.0} rows/s",
            args.concurrency,
            args.rows,
            channels.len(),
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64()
        );
        println!("  per-call latency under load: p50 {:.0} us, p99 {:.0} us", pct(&per_call, 50.0), pct(&per_call, 99.0));
        anyhow::Ok(())
    })?;
    drop((trainer, server, stack));
    drop(services);
    Ok(())
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?)
}

async fn train(addr: &str) -> anyhow::Result<()> {
    let mut client = TrainServiceClient::new(connect(addr).await?);
    let job = client
        .start_training(StartTrainingRequest { model_ver: "v1".into(), ..Default::default() })
        .await?
        .into_inner();
    loop {
        let job = client.get_training_job(GetTrainingJobRequest { job_id: job.job_id.clone() }).await?.into_inner();
        match job.state() {
            JobState::Succeeded => return Ok(()),
            JobState::Failed => bail!("training failed: {}", job.error),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_until_serving(channel: &Channel) -> anyhow::Result<()> {
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..200 {
        if health.check(HealthCheckRequest::default()).await.is_ok_and(|r| r.into_inner().status == 1) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("serve-service never reported SERVING")
}

/// The generated prediction input as request rows.
async fn request_rows(bucket: &Bucket) -> anyhow::Result<PredictRequest> {
    let bytes = bucket.get(&BucketKey::parse(PREDICTION_INPUT_KEY)?).await?;
    let mut reader = TableReader::open(
        PREDICTION_INPUT_KEY,
        std::io::Cursor::new(bytes),
        TableKind::PredictionInput,
        Attributes::All,
    )?;
    let names = reader.attribute_names().clone();
    let chunk = reader.next_chunk()?.context("no rows")?;
    Ok(crctl::predict_request(&keyword_rows(chunk, &names)?))
}

/// Calls one at a time for `duration`; returns each call's latency in microseconds, sorted.
async fn latencies<F, Fut>(duration: Duration, call: F) -> anyhow::Result<Vec<f64>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    // Warm up connections and caches first.
    for _ in 0..200 {
        call().await?;
    }
    let mut out = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        call().await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// `concurrency` callers sending `request` for `duration`; returns the calls
/// made, the time taken and every call's latency in microseconds, sorted.
async fn throughput(
    duration: Duration,
    concurrency: usize,
    channels: &[Channel],
    request: &PredictRequest,
) -> anyhow::Result<(u64, Duration, Vec<f64>)> {
    let request = Arc::new(request.clone());
    let started = Instant::now();
    let mut callers = Vec::new();
    for i in 0..concurrency {
        let mut client = ServeServiceClient::new(channels[i % channels.len()].clone());
        let request = request.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let t = Instant::now();
                let response = client.predict((*request).clone()).await?;
                if response.get_ref().cr.len() != request.rows.len() {
                    bail!("wrong number of rates in the answer");
                }
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await??);
    }
    let elapsed = started.elapsed();
    all.sort_by(f64::total_cmp);
    Ok((all.len() as u64, elapsed, all))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn print_latencies(name: &str, sorted: &[f64]) {
    println!(
        "{name:<26}{:>9}{:>9.0}{:>9.0}{:>9.0}{:>9.0}{:>10.0}",
        sorted.len(),
        pct(sorted, 50.0),
        pct(sorted, 90.0),
        pct(sorted, 99.0),
        pct(sorted, 99.9),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
}
