//! Online prediction latency and throughput over loopback gRPC, from a load
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
//!    the shadow scored and dropped meanwhile.
//!
//! The `ModelInfer` load generator speaks plain V2 to any server: `--v2-addr`
//! (default: this serve-service), `--v2-model` and `--v2-version` pick the
//! target, and the inputs are the target's own (its `ModelMetadata`) unless
//! `--v2-input NAME:DATATYPE:WIDTH` flags give them. Values are made up by type
//! (INT64 a row number, BYTES the `--v2-bytes` values in turn, other integers 0
//! and 1 in turn, floats 0.5) and sent as `raw_input_contents`, as
//! `tritonclient` sends them. For example, against a Triton server:
//!
//! ```text
//! cargo run --release -p crs-bench --bin online -- --v2-addr 127.0.0.1:8001 \
//!     --v2-model my_model --v2-input INPUT0:FP32:16
//! ```
//!
//! The services run in this process on their own runtime, the load generator on
//! another; both share the machine's cores, as a client on the same host would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use crs_bench::{connect, pct, request_rows, train, wait_until_serving};
use crs_platform::storage::bucket::Bucket;
use crs_platform::storage::sample_data::SampleSizes;
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crs_proto::inference::{ModelInferRequest, ModelMetadataRequest};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, PredictRequest};
use crs_testkit::{Setup, Stack, parse_metrics, scrape};
use serve_service::ShadowPair;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

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
    /// HTTP/2 connections the throughput callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Worker threads of the services' runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Model version trained and served.
    #[arg(long, default_value = "v1")]
    model_ver: String,
    /// Model version trained and run as the shadow of --model-ver in the shadow measurement.
    #[arg(long, default_value = "v0")]
    shadow_model: String,
    /// Callers in the shadow measurement.
    #[arg(long, default_value_t = 8)]
    shadow_concurrency: usize,
    /// V2 (Open Inference Protocol) server for the ModelInfer measurements; default: this serve-service.
    #[arg(long)]
    v2_addr: Option<String>,
    /// Model name ModelInfer asks for; default: --model-ver.
    #[arg(long)]
    v2_model: Option<String>,
    /// Model version ModelInfer asks for; empty lets the server choose.
    #[arg(long, default_value = "")]
    v2_version: String,
    /// An input, NAME:DATATYPE:WIDTH (WIDTH 1: shape [N], else [N, WIDTH]); repeat for each. Default: the model's metadata.
    #[arg(long = "v2-input", value_parser = parse_input)]
    v2_inputs: Vec<InputSpec>,
    /// Output to request; default: every output.
    #[arg(long)]
    v2_output: Option<String>,
    /// Values of BYTES inputs, used in turn, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["Computer".to_owned(), "Smartphone".to_owned(), "Tablet".to_owned()])]
    v2_bytes: Vec<String>,
}

/// One V2 input: its name, datatype and elements per row.
#[derive(Clone, Debug)]
struct InputSpec {
    name: String,
    datatype: String,
    width: usize,
}

fn parse_input(text: &str) -> Result<InputSpec, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [name, datatype, width] = parts.as_slice() else {
        return Err(format!("{text:?} is not NAME:DATATYPE:WIDTH"));
    };
    let width: usize = width.parse().map_err(|_| format!("{text:?}: WIDTH must be a positive number"))?;
    if width == 0 || element_bytes(datatype).is_none() && *datatype != "BYTES" {
        return Err(format!("{text:?}: unsupported datatype or zero width"));
    }
    Ok(InputSpec { name: (*name).to_owned(), datatype: (*datatype).to_owned(), width })
}

/// Bytes per element of a fixed-size V2 datatype.
fn element_bytes(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// One element of made-up data, little-endian, for row `row` and column `column`.
fn element(datatype: &str, row: usize, column: usize, bytes_values: &[String]) -> Vec<u8> {
    let bit = ((row + column) % 2) as u8;
    match datatype {
        "BYTES" => {
            let value = bytes_values[(row + column) % bytes_values.len()].as_bytes();
            [(value.len() as u32).to_le_bytes().as_slice(), value].concat()
        }
        "INT64" | "UINT64" if column == 0 => (row as u64).to_le_bytes().to_vec(),
        "FP32" => 0.5f32.to_le_bytes().to_vec(),
        "FP64" => 0.5f64.to_le_bytes().to_vec(),
        // FP16 / BF16 0.5 share no bit pattern; any small value does for timing.
        other => {
            let mut out = vec![0u8; element_bytes(other).unwrap_or(1)];
            out[0] = bit;
            out
        }
    }
}

/// A raw-tensor ModelInfer request of `rows` rows.
fn infer_request(args: &Args, inputs: &[InputSpec], rows: usize) -> ModelInferRequest {
    let mut request = ModelInferRequest {
        model_name: args.v2_model(),
        model_version: args.v2_version.clone(),
        outputs: args
            .v2_output
            .iter()
            .map(|name| InferRequestedOutputTensor { name: name.clone(), ..Default::default() })
            .collect(),
        ..Default::default()
    };
    for input in inputs {
        let shape = if input.width == 1 { vec![rows as i64] } else { vec![rows as i64, input.width as i64] };
        request.inputs.push(InferInputTensor {
            name: input.name.clone(),
            datatype: input.datatype.clone(),
            shape,
            ..Default::default()
        });
        let raw = (0..rows)
            .flat_map(|row| (0..input.width).map(move |column| (row, column)))
            .flat_map(|(row, column)| element(&input.datatype, row, column, &args.v2_bytes))
            .collect();
        request.raw_input_contents.push(raw);
    }
    request
}

/// The inputs the flags give, or else the model's own from its metadata.
async fn v2_inputs(args: &Args, channel: &Channel) -> anyhow::Result<Vec<InputSpec>> {
    if !args.v2_inputs.is_empty() {
        return Ok(args.v2_inputs.clone());
    }
    let request = ModelMetadataRequest { name: args.v2_model(), version: args.v2_version.clone() };
    let metadata = GrpcInferenceServiceClient::new(channel.clone()).model_metadata(request).await?.into_inner();
    metadata
        .inputs
        .iter()
        .map(|input| {
            let width = match input.shape.as_slice() {
                [_] => 1,
                [_, width] if *width > 0 => *width as usize,
                other => bail!("input {}: shape {other:?} is not [N] or [N, k]; give --v2-input", input.name),
            };
            Ok(InputSpec { name: input.name.clone(), datatype: input.datatype.clone(), width })
        })
        .collect()
}

impl Args {
    fn v2_model(&self) -> String {
        self.v2_model.clone().unwrap_or_else(|| self.model_ver.clone())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let services =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.server_threads).enable_all().build()?;
    // The services run on their own runtime: the stack spawns them on the one it is started from.
    let model_ver = args.model_ver.parse()?;
    let shadow_pair: ShadowPair = format!("{}:{}", args.shadow_model, args.model_ver)
        .parse()
        .map_err(|e| anyhow::anyhow!("--shadow-model: {e}"))?;
    let (stack, trainer, server, (shadowed, shadowed_metrics)) = services.block_on(async {
        let stack = Stack::with(Setup { webhook: None, sizes: SampleSizes::default() }).await;
        let train = stack.start_train(stack.train_config()).await;
        let mut serve_config = stack.serve_config();
        serve_config.poll_interval_secs = 0.2;
        serve_config.model_ver = model_ver;
        let serve = stack.start_serve(serve_config.clone()).await;
        serve_config.shadow_models = vec![shadow_pair];
        let shadowed = stack.start_serve_with_metrics(serve_config).await;
        (stack, train, serve, shadowed)
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
        let v2_addr = args.v2_addr.clone().unwrap_or_else(|| serve_addr.clone());
        let v2 = connect(&v2_addr).await?;
        let inputs = v2_inputs(&args, &v2).await?;
        let one_infer = infer_request(&args, &inputs, 1);
        let infer = latencies(duration, || {
            let mut c = GrpcInferenceServiceClient::new(v2.clone());
            let request = one_infer.clone();
            async move { c.model_infer(request).await.map(|_| ()) }
        })
        .await?;
        println!("latency at concurrency 1 over {:.0} s each (microseconds)", args.seconds);
        println!("{:<26}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}", "call", "calls", "p50", "p90", "p99", "p99.9", "max");
        print_latencies("health Check (floor)", &health);
        print_latencies("Predict, 1 row", &predict);
        print_latencies("ModelInfer, 1 row", &infer);
        println!(
            "Predict p50 / floor p50: {:.2}x, p99 / floor p99: {:.2}x",
            pct(&predict, 50.0) / pct(&health, 50.0),
            pct(&predict, 99.0) / pct(&health, 99.0)
        );
        println!(
            "ModelInfer ({v2_addr}, model {:?}) p50 {:.0} us, p99 {:.0} us",
            args.v2_model(),
            pct(&infer, 50.0),
            pct(&infer, 99.0)
        );

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
        let many = infer_request(&args, &inputs, args.rows);
        println!();
        println!("throughput: {}-row requests, {} connections, {:.1} s each", args.rows, channels.len(), args.seconds);
        println!(
            "{:<12}{:>8}{:>10}{:>12}{:>12}{:>12}{:>12}",
            "call", "callers", "requests", "rows/s", "p50 us", "p99 us", "seconds"
        );
        for &concurrency in &args.concurrency {
            for (name, call, channels) in [
                ("Predict", Call::Predict(batch.clone()), &channels),
                ("ModelInfer", Call::Infer(many.clone()), &v2_channels),
            ] {
                let (requests, elapsed, per_call) = throughput(duration, concurrency, channels, call).await?;
                let rows = requests * args.rows as u64;
                println!(
                    "{name:<12}{concurrency:>8}{requests:>10}{:>12.0}{:>12.0}{:>12.0}{:>12.1}",
                    rows as f64 / elapsed.as_secs_f64(),
                    pct(&per_call, 50.0),
                    pct(&per_call, 99.0),
                    elapsed.as_secs_f64()
                );
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
            let (requests, elapsed, per_call) =
                throughput(duration, concurrency, channels, Call::Predict(batch.clone())).await?;
            let rate = (requests * args.rows as u64) as f64 / elapsed.as_secs_f64();
            rates.push(rate);
            println!(
                "{name:<16}{requests:>10}{rate:>12.0}{:>12.0}{:>12.0}",
                pct(&per_call, 50.0),
                pct(&per_call, 99.0)
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
        anyhow::Ok(())
    })?;
    // Stopped as SIGTERM would: the shadowed server writes its records before the bucket goes.
    services.block_on(async {
        shadowed.stop().await?;
        server.stop().await
    })?;
    drop((trainer, stack));
    drop(services);
    Ok(())
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

/// What the throughput callers send.
#[derive(Clone, Debug)]
enum Call {
    Predict(PredictRequest),
    Infer(ModelInferRequest),
}

/// `concurrency` callers sending `call` for `duration`; returns the calls
/// made, the time taken and every call's latency in microseconds, sorted.
async fn throughput(
    duration: Duration,
    concurrency: usize,
    channels: &[Channel],
    call: Call,
) -> anyhow::Result<(u64, Duration, Vec<f64>)> {
    let call = Arc::new(call);
    let started = Instant::now();
    let mut callers = Vec::new();
    for i in 0..concurrency {
        let channel = channels[i % channels.len()].clone();
        let (mut serve, mut v2) = (ServeServiceClient::new(channel.clone()), GrpcInferenceServiceClient::new(channel));
        let call = call.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let t = Instant::now();
                match &*call {
                    Call::Predict(request) => {
                        let response = serve.predict(request.clone()).await?;
                        if response.get_ref().cr.len() != request.rows.len() {
                            bail!("wrong number of rates in the answer");
                        }
                    }
                    Call::Infer(request) => {
                        let response = v2.model_infer(request.clone()).await?;
                        if response.get_ref().outputs.is_empty() {
                            bail!("no outputs in the ModelInfer answer");
                        }
                    }
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
