//! Online prediction latency and throughput over loopback, from a load
//! generator of our own.
//!
//! ```text
//! cargo run --release -p crs-bench --bin online
//! ```
//!
//! It trains v1 on generated data through train-service, starts serve-service on
//! 127.0.0.1, then measures, each for `--seconds`:
//! 1. latency of one-row `Predict` calls and of one-row Open Inference Protocol
//!    `ModelInfer` calls at concurrency 1, next to the gRPC health `Check` call
//!    (the transport's floor) measured the same way;
//! 2. rows per second of 100-row `Predict` and `ModelInfer` calls at each
//!    `--concurrency` (8 and 32);
//! 3. the cost of a shadow: rows per second of 100-row `Predict` calls at
//!    concurrency 8 against a serve-service with `--model-ver` alone and one
//!    with `SHADOW_MODELS=<--shadow-model>:<--model-ver>`, and how many rows
//!    the shadow scored and dropped meanwhile;
//! 4. the cost of capture: rows per second of `--rows`-row `Predict` and
//!    `ModelInfer` calls at `--shadow-concurrency` against serve-services with
//!    `CAPTURE_SAMPLE` 0, 0.1 and 1 (the median of `--capture-repeats` rounds,
//!    the levels in turn), and the share of the sampled rows dropped; then the
//!    same calls paced (open loop, [`crs_bench::load::paced`]) at half the
//!    saturated rate of capture off just measured, with the rows dropped there.
//!
//! The `ModelInfer` load generator ([`crs_bench::v2`]) speaks plain V2 to any
//! server: `--v2-addr` (gRPC; default: this serve-service) and `--v2-http`
//! (REST, JSON and binary tensors; no default), `--v2-model` and `--v2-version`
//! pick the target, and the inputs are the target's own (its metadata) unless
//! `--v2-input NAME:DATATYPE:WIDTH` flags give them. For example, against a
//! Triton server:
//!
//! ```text
//! cargo run --release -p crs-bench --bin online -- --v2-addr 127.0.0.1:8001 \
//!     --v2-http http://127.0.0.1:8000 --v2-model my_model --v2-input INPUT0:FP32:16
//! ```
//!
//! The services run in this process on their own runtime, the load generator on
//! another; both share the machine's cores, as a client on the same host would.
//!
//! `--compare` is another run: serve-service and the pinned MLServer reference
//! (`bench/mlserver/`) side by side, each a child process whose CPU time is
//! measured (see `compare.rs`).

#[path = "online/compare.rs"]
mod compare;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use crs_bench::load::{Caller, latencies, paced, throughput, warm_up};
use crs_bench::v2::{InputSpec, Protocol, Target};
use crs_bench::{connect, pct, request_rows, train, wait_until_serving};
use crs_platform::storage::bucket::Bucket;
use crs_platform::storage::sample_data::SampleSizes;
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, PredictRequest};
use crs_testkit::{Setup, Stack, parse_metrics, scrape};
use serve_service::ShadowPair;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The `CAPTURE_SAMPLE`s measured beside capture off.
const CAPTURE_SHARES: [f64; 2] = [0.1, 1.0];

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent callers in the throughput measurements, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32])]
    concurrency: Vec<usize>,
    /// Rows per request in the throughput measurement.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// HTTP/2 connections the gRPC throughput callers share (REST callers have a connection each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Worker threads of the services' runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Model version trained and served (--compare: always v2, the version MLServer's model mirrors).
    #[arg(long, default_value = "v1")]
    model_ver: String,
    /// Model version trained and run as the shadow of --model-ver in the shadow measurement.
    #[arg(long, default_value = "v0")]
    shadow_model: String,
    /// Callers in the shadow and capture measurements (the capture's paced load has four times as many).
    #[arg(long, default_value_t = 8)]
    shadow_concurrency: usize,
    /// Rounds of the capture measurement (each level in turn per round); its table gives the medians.
    #[arg(long, default_value_t = 3)]
    capture_repeats: usize,
    /// V2 (Open Inference Protocol) gRPC server for the ModelInfer measurements; default: this serve-service.
    #[arg(long)]
    v2_addr: Option<String>,
    /// V2 REST server (http://host:port) measured with JSON and with binary tensors beside the gRPC ModelInfer rows; default: none.
    #[arg(long)]
    v2_http: Option<String>,
    /// Model name ModelInfer asks for; default: --model-ver.
    #[arg(long)]
    v2_model: Option<String>,
    /// Model version ModelInfer asks for; empty lets the server choose.
    #[arg(long, default_value = "")]
    v2_version: String,
    /// An input, NAME:DATATYPE:WIDTH (WIDTH 1: shape [N], else [N, WIDTH]); repeat for each. Default: the model's metadata.
    #[arg(long = "v2-input")]
    v2_inputs: Vec<InputSpec>,
    /// Output to request; default: every output.
    #[arg(long)]
    v2_output: Option<String>,
    /// Values of BYTES inputs, used in turn, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["Computer".to_owned(), "Smartphone".to_owned(), "Tablet".to_owned()])]
    v2_bytes: Vec<String>,
    /// Instead of the measurements above: serve-service (v2, a child process) and the MLServer reference side by side, with each side's CPU seconds.
    #[arg(long)]
    compare: bool,
    /// --compare: rounds of every measurement; the tables give each figure's median.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// --compare: the serve-service binary; default: the one next to this binary.
    #[arg(long)]
    serve_bin: Option<PathBuf>,
    /// --compare: also start serve-service's REST listener (SERVE_HTTP_ADDR) and measure it; skipped, with a message, if the binary has no such setting.
    #[arg(long)]
    serve_http: bool,
    /// --compare: leave MLServer out (serve-service's rows only).
    #[arg(long)]
    no_mlserver: bool,
    /// --compare: folder for the exported v2 run, the MLServer model and both servers' logs.
    #[arg(long, default_value = "target/bench-online")]
    work_dir: PathBuf,
}

impl Args {
    fn v2_model(&self) -> String {
        self.v2_model.clone().unwrap_or_else(|| self.model_ver.clone())
    }

    /// The V2 target of `protocol` at `address`, with the --v2-* settings.
    fn v2_target(&self, protocol: Protocol, address: &str) -> Target {
        Target {
            protocol,
            address: address.to_owned(),
            model: self.v2_model(),
            version: self.v2_version.clone(),
            output: self.v2_output.clone(),
            inputs: self.v2_inputs.clone(),
            bytes_values: self.v2_bytes.clone(),
        }
    }
}

/// gRPC health checks: the transport's floor.
struct HealthCaller(HealthClient<Channel>);

impl Caller for HealthCaller {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.0.check(HealthCheckRequest::default()).await?;
        Ok(())
    }
}

/// `Predict` calls of the project's own API.
struct PredictCaller {
    client: ServeServiceClient<Channel>,
    request: PredictRequest,
}

impl Caller for PredictCaller {
    async fn call(&mut self) -> anyhow::Result<()> {
        let answer = self.client.predict(self.request.clone()).await?;
        if answer.get_ref().cr.len() != self.request.rows.len() {
            bail!("wrong number of rates in the answer");
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.compare {
        return compare::run(&args);
    }
    let services =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.server_threads).enable_all().build()?;
    // The services run on their own runtime: the stack spawns them on the one it is started from.
    let model_ver = args.model_ver.parse()?;
    let shadow_pair: ShadowPair = format!("{}:{}", args.shadow_model, args.model_ver)
        .parse()
        .map_err(|e| anyhow::anyhow!("--shadow-model: {e}"))?;
    let (stack, trainer, server, (shadowed, shadowed_metrics), capturing) = services.block_on(async {
        let stack = Stack::with(Setup { webhook: None, sizes: SampleSizes::default() }).await;
        let train = stack.start_train(stack.train_config()).await;
        let mut serve_config = stack.serve_config();
        serve_config.poll_interval_secs = 0.2;
        serve_config.model_ver = model_ver;
        let serve = stack.start_serve(serve_config.clone()).await;
        let mut capturing = Vec::new();
        for share in CAPTURE_SHARES {
            let mut config = serve_config.clone();
            config.capture_sample = share;
            capturing.push((share, stack.start_serve_with_metrics(config).await));
        }
        serve_config.shadow_models = vec![shadow_pair];
        let shadowed = stack.start_serve_with_metrics(serve_config).await;
        (stack, train, serve, shadowed, capturing)
    });
    let (train_addr, serve_addr) = (trainer.addr.to_string(), server.addr.to_string());
    let shadowed_addr = shadowed.addr.to_string();
    let bucket_url = stack.bucket_url.clone();

    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    client.block_on(async {
        let bucket = Bucket::open(&bucket_url)?;
        train(&train_addr, &args.model_ver).await?;
        train(&train_addr, &args.shadow_model).await?;
        let template = request_rows(&bucket).await?;
        let serve = connect(&serve_addr).await?;
        wait_until_serving(&serve, Duration::from_secs(10)).await?;
        let duration = Duration::from_secs_f64(args.seconds);

        let one_row = PredictRequest {
            attribute_names: template.attribute_names.clone(),
            rows: template.rows[..1].to_vec(),
            ..Default::default()
        };
        let mut health = HealthCaller(HealthClient::new(serve.clone()));
        warm_up(&mut health).await?;
        let health = latencies(duration, &mut health).await?;
        let mut predict = PredictCaller { client: ServeServiceClient::new(serve.clone()), request: one_row };
        warm_up(&mut predict).await?;
        let predict = latencies(duration, &mut predict).await?;

        let v2_addr = args.v2_addr.clone().unwrap_or_else(|| serve_addr.clone());
        let mut v2_targets = vec![("ModelInfer", args.v2_target(Protocol::Grpc, &v2_addr))];
        if let Some(url) = &args.v2_http {
            v2_targets.push(("REST JSON infer", args.v2_target(Protocol::RestJson, url)));
            v2_targets.push(("REST binary infer", args.v2_target(Protocol::RestBinary, url)));
        }
        let mut usable = Vec::new();
        for (name, mut target) in v2_targets {
            match target.probe().await {
                Ok(()) => usable.push((name, target)),
                Err(error) => println!("skipped: {name} at {}: its first request failed: {error:#}", target.address),
            }
        }
        let v2_targets = usable;
        let mut v2_latencies = Vec::new();
        for (_, target) in &v2_targets {
            let mut caller = target.caller(1, None).await?;
            warm_up(&mut caller).await?;
            v2_latencies.push(latencies(duration, &mut caller).await?);
        }
        println!("latency at concurrency 1 over {:.0} s each (microseconds)", args.seconds);
        println!("{:<26}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}", "call", "calls", "p50", "p90", "p99", "p99.9", "max");
        print_latencies("health Check (floor)", &health);
        print_latencies("Predict, 1 row", &predict);
        for ((name, _), sorted) in v2_targets.iter().zip(&v2_latencies) {
            print_latencies(&format!("{name}, 1 row"), sorted);
        }
        println!(
            "Predict p50 / floor p50: {:.2}x, p99 / floor p99: {:.2}x",
            pct(&predict, 50.0) / pct(&health, 50.0),
            pct(&predict, 99.0) / pct(&health, 99.0)
        );
        for ((name, target), sorted) in v2_targets.iter().zip(&v2_latencies) {
            println!(
                "{name} ({}, model {:?}) p50 {:.0} us, p99 {:.0} us",
                target.address,
                target.model,
                pct(sorted, 50.0),
                pct(sorted, 99.0)
            );
        }

        let batch = PredictRequest {
            attribute_names: template.attribute_names.clone(),
            rows: template.rows.iter().cycle().take(args.rows).cloned().collect(),
            ..Default::default()
        };
        let mut channels = Vec::new();
        let mut v2_channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            channels.push(connect(&serve_addr).await?);
            v2_channels.push(connect(&v2_addr).await?);
        }
        println!();
        println!(
            "throughput: {}-row requests, {} gRPC connections (REST: one per caller), {:.1} s each",
            args.rows,
            channels.len(),
            args.seconds
        );
        println!(
            "{:<20}{:>8}{:>10}{:>12}{:>12}{:>12}{:>12}",
            "call", "callers", "requests", "rows/s", "p50 us", "p99 us", "seconds"
        );
        for &concurrency in &args.concurrency {
            let callers = (0..concurrency)
                .map(|i| PredictCaller {
                    client: ServeServiceClient::new(channels[i % channels.len()].clone()),
                    request: batch.clone(),
                })
                .collect();
            print_throughput("Predict", concurrency, args.rows, &throughput(duration, callers).await?);
            for (name, target) in &v2_targets {
                let callers = v2_callers(target, args.rows, concurrency, &v2_channels).await?;
                print_throughput(name, concurrency, args.rows, &throughput(duration, callers).await?);
            }
        }

        // The same load against the primary alone and against it with a shadow.
        let shadow_channels = {
            let mut shadow_channels = Vec::new();
            for _ in 0..args.connections.max(1) {
                shadow_channels.push(connect(&shadowed_addr).await?);
            }
            shadow_channels
        };
        wait_until_serving(&shadow_channels[0], Duration::from_secs(10)).await?;
        wait_for_model(&shadow_channels[0], &args.shadow_model).await?;
        let concurrency = args.shadow_concurrency;
        println!();
        println!(
            "shadow cost: {}-row Predict at concurrency {concurrency}, {:.1} s each; shadow {} of {}",
            args.rows, args.seconds, args.shadow_model, args.model_ver
        );
        println!("{:<16}{:>10}{:>12}{:>12}{:>12}", "server", "requests", "rows/s", "p50 us", "p99 us");
        let mut rates = Vec::new();
        for (name, channels) in [("alone", &channels), ("with shadow", &shadow_channels)] {
            let callers = (0..concurrency)
                .map(|i| PredictCaller {
                    client: ServeServiceClient::new(channels[i % channels.len()].clone()),
                    request: batch.clone(),
                })
                .collect();
            let measured = throughput(duration, callers).await?;
            let rate = measured.per_second(args.rows);
            rates.push(rate);
            println!(
                "{name:<16}{:>10}{rate:>12.0}{:>12.0}{:>12.0}",
                measured.requests,
                pct(&measured.latencies, 50.0),
                pct(&measured.latencies, 99.0)
            );
        }
        println!("throughput with the shadow: {:.1}% of alone", 100.0 * rates[1] / rates[0]);
        let (_, _, text) = scrape(shadowed_metrics).await;
        let metrics = parse_metrics(&text);
        let shadow_label = [("model", args.shadow_model.as_str())];
        let dropped: f64 = ["queue_full", "not_loaded", "failed", "unwritten"]
            .iter()
            .map(|reason| {
                let labels = [("model", args.shadow_model.as_str()), ("reason", *reason)];
                metrics.value("crs_serve_shadow_dropped_rows_total", &labels)
            })
            .sum();
        println!(
            "shadow rows scored {:.0}, dropped {dropped:.0} (crs_serve_shadow_*_rows_total)",
            metrics.value("crs_serve_shadow_rows_total", &shadow_label)
        );

        // The same load against the servers that capture a share of the rows.
        let mut levels = vec![CaptureLevel { share: 0.0, addr: serve_addr.clone(), metrics: None }];
        levels.extend(capturing.iter().map(|(share, (running, metrics))| CaptureLevel {
            share: *share,
            addr: running.addr.to_string(),
            metrics: Some(*metrics),
        }));
        capture_cost(&args, &levels, &batch).await?;
        anyhow::Ok(())
    })?;
    // Stopped as SIGTERM would: the shadowed server writes its records before the bucket goes.
    services.block_on(async {
        for (_, (running, _)) in capturing {
            running.stop().await?;
        }
        shadowed.stop().await?;
        server.stop().await
    })?;
    drop((trainer, stack));
    drop(services);
    Ok(())
}

/// A serve-service capturing `share` of the rows it serves.
struct CaptureLevel {
    share: f64,
    addr: String,
    /// Its metrics listener (none for the server that does not capture).
    metrics: Option<std::net::SocketAddr>,
}

impl CaptureLevel {
    /// Captured rows it has dropped so far, for any reason.
    async fn dropped(&self, model_ver: &str) -> f64 {
        let Some(addr) = self.metrics else { return 0.0 };
        let metrics = parse_metrics(&scrape(addr).await.2);
        ["queue_full", "unwritten", "failed"]
            .iter()
            .map(|reason| {
                metrics.value("crs_serve_capture_dropped_rows_total", &[("model", model_ver), ("reason", reason)])
            })
            .sum()
    }
}

/// Closed-loop load of `request`'s rows by `call` against `level` from
/// `concurrency` callers, or paced at `per_second` requests (open loop);
/// with the captured rows dropped meanwhile.
async fn capture_load(
    args: &Args,
    call: &str,
    level: &CaptureLevel,
    request: &PredictRequest,
    concurrency: usize,
    per_second: Option<f64>,
) -> anyhow::Result<(crs_bench::load::Throughput, f64)> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(connect(&level.addr).await?);
    }
    wait_until_serving(&channels[0], Duration::from_secs(10)).await?;
    let duration = Duration::from_secs_f64(args.seconds);
    let before = level.dropped(&args.model_ver).await;
    let measured = if call == "Predict" {
        let callers: Vec<PredictCaller> = (0..concurrency)
            .map(|i| PredictCaller {
                client: ServeServiceClient::new(channels[i % channels.len()].clone()),
                request: request.clone(),
            })
            .collect();
        match per_second {
            None => throughput(duration, callers).await?,
            Some(rate) => paced(duration, rate, callers).await?,
        }
    } else {
        let mut target = args.v2_target(Protocol::Grpc, &level.addr);
        target.probe().await?;
        let callers = v2_callers(&target, request.rows.len(), concurrency, &channels).await?;
        match per_second {
            None => throughput(duration, callers).await?,
            Some(rate) => paced(duration, rate, callers).await?,
        }
    };
    Ok((measured, level.dropped(&args.model_ver).await - before))
}

/// Section 4: throughput at each capture level, `--capture-repeats` rounds
/// of the levels in turn (medians), then each level paced at half the
/// median saturated rate of capture off, with the share of the sampled rows
/// dropped.
async fn capture_cost(args: &Args, levels: &[CaptureLevel], request: &PredictRequest) -> anyhow::Result<()> {
    let (concurrency, rows) = (args.shadow_concurrency, request.rows.len());
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        pct(&values, 50.0)
    };
    let dropped_share = |dropped: f64, sampled: f64| if sampled > 0.0 { 100.0 * dropped / sampled } else { 0.0 };
    println!();
    println!(
        "capture cost: {rows}-row requests at concurrency {concurrency}, {:.1} s each, {} rounds of the levels in turn (medians)",
        args.seconds, args.capture_repeats
    );
    println!(
        "{:<12}{:>9}{:>12}{:>10}{:>12}{:>12}{:>16}",
        "call", "capture", "rows/s", "of 0", "p50 us", "p99 us", "sampled dropped"
    );
    for call in ["Predict", "ModelInfer"] {
        let mut rates = vec![Vec::new(); levels.len()];
        let mut p50s = vec![Vec::new(); levels.len()];
        let mut p99s = vec![Vec::new(); levels.len()];
        let mut drops = vec![(0.0, 0.0); levels.len()];
        for _ in 0..args.capture_repeats.max(1) {
            for (i, level) in levels.iter().enumerate() {
                let (measured, dropped) = capture_load(args, call, level, request, concurrency, None).await?;
                rates[i].push(measured.per_second(rows));
                p50s[i].push(pct(&measured.latencies, 50.0));
                p99s[i].push(pct(&measured.latencies, 99.0));
                drops[i].0 += dropped;
                drops[i].1 += (measured.requests * rows as u64) as f64 * level.share;
            }
        }
        let off = median(rates[0].clone());
        for (i, level) in levels.iter().enumerate() {
            let rate = median(rates[i].clone());
            println!(
                "{call:<12}{:>9}{rate:>12.0}{:>9.1}%{:>12.0}{:>12.0}{:>15.3}%",
                level.share,
                100.0 * rate / off,
                median(p50s[i].clone()),
                median(p99s[i].clone()),
                dropped_share(drops[i].0, drops[i].1)
            );
        }
        // Open loop at half the saturated rate: enough callers that one is always free.
        let target = off / 2.0;
        println!(
            "{call} paced at {target:.0} rows/s (half of capture off's saturated rate), {} callers:",
            4 * concurrency
        );
        for level in levels {
            let per_second = target / rows as f64;
            let (measured, dropped) =
                capture_load(args, call, level, request, 4 * concurrency, Some(per_second)).await?;
            let sampled = (measured.requests * rows as u64) as f64 * level.share;
            println!(
                "{:<12}{:>9}{:>12.0}{:>10}{:>12.0}{:>12.0}{:>15.3}%  ({dropped:.0} of {sampled:.0} sampled rows dropped)",
                "  paced",
                level.share,
                measured.per_second(rows),
                "",
                pct(&measured.latencies, 50.0),
                pct(&measured.latencies, 99.0),
                dropped_share(dropped, sampled)
            );
        }
    }
    Ok(())
}

/// `concurrency` callers of `target`: gRPC ones share `channels` (to the
/// target's address) in turn, REST ones get a connection each.
async fn v2_callers(
    target: &Target,
    rows: usize,
    concurrency: usize,
    channels: &[Channel],
) -> anyhow::Result<Vec<crs_bench::v2::V2Caller>> {
    let mut callers = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let channel = (target.protocol == Protocol::Grpc).then(|| &channels[i % channels.len()]);
        callers.push(target.caller(rows, channel).await?);
    }
    Ok(callers)
}

/// Waits until serve-service lists `model_ver` among its loaded models.
async fn wait_for_model(channel: &Channel, model_ver: &str) -> anyhow::Result<()> {
    let mut client = ServeServiceClient::new(channel.clone());
    for _ in 0..600 {
        let info = client.get_model(GetModelRequest::default()).await?.into_inner();
        if info.loaded.iter().any(|m| m.model_ver == model_ver) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("serve-service never loaded {model_ver}")
}

fn print_throughput(name: &str, concurrency: usize, rows: usize, measured: &crs_bench::load::Throughput) {
    println!(
        "{name:<20}{concurrency:>8}{:>10}{:>12.0}{:>12.0}{:>12.0}{:>12.1}",
        measured.requests,
        measured.per_second(rows),
        pct(&measured.latencies, 50.0),
        pct(&measured.latencies, 99.0),
        measured.elapsed.as_secs_f64()
    );
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
