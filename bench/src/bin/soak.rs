//! Soak: online requests at a steady rate for many minutes while batches run
//! and the served model is swapped, to find failures and growth that short
//! benchmarks miss.
//!
//! ```text
//! cargo build --release -p serve-service -p crs-bench --bin serve-service --bin soak
//! target/release/soak                      # 10 minutes; --minutes 1 for a quick look
//! ```
//!
//! train-service runs in this process on a temporary bucket with generated
//! data; serve-service is the built binary, a child process, so that its
//! resident memory is its own. Two v1 runs are trained, and a warm-up batch and
//! a swap there and back let the first minute start from a running service's
//! memory. Then, for `--minutes`:
//! one-row `Predict` calls at `--rate` a second (open loop: a slow answer does
//! not slow the next call), a `PredictBatch` of the prediction input every
//! `--batch-secs`, and every `--swap-secs` the production alias is moved to the
//! other run (`Promote`, as `crctl promote` does), which serve-service follows
//! by polling. Each minute prints the calls, failures, latency percentiles and
//! serve-service's VmRSS; the end compares the first minute with the last.
//! Exits non-zero if any call, batch or swap failed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use crs_bench::process::{ChildServer, free_addr};
use crs_bench::{connect, connect_retrying, pct, request_rows, status_kb, train, wait_until_serving};
use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_platform::storage::sample_data::SampleSizes;
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, PredictBatchRequest, PredictRequest};
use crs_proto::train::PromoteRequest;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_testkit::{Setup, Stack};
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// Minutes the soak runs.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// One-row Predict calls per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds between PredictBatch calls of the generated prediction input.
    #[arg(long, default_value_t = 60.0)]
    batch_secs: f64,
    /// Seconds between model swaps (the production alias moved to the other run).
    #[arg(long, default_value_t = 30.0)]
    swap_secs: f64,
    /// serve-service's POLL_INTERVAL_SECS: how soon it notices a swap.
    #[arg(long, default_value_t = 1.0)]
    poll_secs: f64,
    /// Seconds a call may take before it counts as failed.
    #[arg(long, default_value_t = 5.0)]
    timeout_secs: f64,
    /// Model version trained, served and swapped.
    #[arg(long, default_value = "v1")]
    model_ver: String,
    /// The serve-service binary; default: the one next to this binary.
    #[arg(long)]
    serve_bin: Option<PathBuf>,
}

/// What happened during one minute.
#[derive(Debug, Default)]
struct Window {
    /// Latencies of the one-row calls that succeeded, in microseconds.
    latencies: Vec<f64>,
    failures: u64,
    batches: u64,
    batch_failures: u64,
    batch_secs: f64,
    swaps: u64,
    swap_failures: u64,
    /// Longest time from Promote until serve-service served the new run.
    swap_secs: f64,
    /// First error of each kind, to print.
    errors: Vec<String>,
}

impl Window {
    fn error(&mut self, what: &str, error: impl std::fmt::Display) {
        if self.errors.len() < 5 {
            self.errors.push(format!("{what}: {error}"));
        }
    }
}

/// One finished minute, as printed.
#[derive(Debug)]
struct Row {
    calls: u64,
    failures: u64,
    p50: f64,
    p99: f64,
    max: f64,
    rss_mb: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let serve_bin = match &args.serve_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("serve-service"),
    };
    if !serve_bin.exists() {
        bail!("no serve-service at {}: cargo build --release -p serve-service", serve_bin.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(soak(&args, &serve_bin))
}

async fn soak(args: &Args, serve_bin: &std::path::Path) -> anyhow::Result<()> {
    let stack = Stack::with(Setup { webhook: None, sizes: SampleSizes::default() }).await;
    let trainer = stack.start_train(stack.train_config()).await;
    let train_addr = trainer.addr.to_string();
    let runs = [train(&train_addr, &args.model_ver).await?, train(&train_addr, &args.model_ver).await?];
    let mut promoter = TrainServiceClient::new(connect(&train_addr).await?);
    // A version's first run becomes production by itself; whether the second one did
    // depends on the gate.
    let request = PromoteRequest {
        model_ver: args.model_ver.clone(),
        run_id: runs[0].clone(),
        reason: "soak start".into(),
        ..Default::default()
    };
    match promoter.promote(request).await {
        Err(status) if status.code() != tonic::Code::FailedPrecondition => return Err(status.into()),
        _ => {}
    }

    let serve_addr = free_addr()?;
    let log = std::fs::File::create(stack.bucket_dir().with_file_name("serve-service.log"))?;
    // Only the settings given here: the caller's shell must not change what is measured.
    let mut command = Command::new(serve_bin);
    command
        .env_clear()
        .env("BUCKET_URL", &stack.bucket_url)
        .env("SERVE_ADDR", &serve_addr)
        .env("MODEL_VER", &args.model_ver)
        .env("POLL_INTERVAL_SECS", args.poll_secs.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = ChildServer::spawn("serve-service", command)?;
    let pid = child.pid().to_string();
    let serve = connect_retrying(&serve_addr, Duration::from_secs(30)).await?;
    wait_until_serving(&serve, Duration::from_secs(30)).await?;
    wait_for_run(&serve, &args.model_ver, &runs[0], Duration::from_secs(30)).await?;

    // Warm-up, so that the first minute starts from a running service's memory (a batch's
    // buffers allocated, both runs loaded once) and growth after it is what the soak finds.
    let batch = PredictBatchRequest {
        input_key: PREDICTION_INPUT_KEY.into(),
        model_ver: args.model_ver.clone(),
        ..Default::default()
    };
    let answer = ServeServiceClient::new(serve.clone()).predict_batch(batch.clone()).await.context("warm-up batch")?;
    for run in [&runs[1], &runs[0]] {
        promote(&mut promoter, &args.model_ver, run).await?;
        wait_for_run(&serve, &args.model_ver, run, Duration::from_secs(30)).await?;
    }
    println!(
        "warm-up: a batch of {} rows, swaps to the second run and back; serve-service RSS {:.1} MB",
        answer.get_ref().rows_written,
        status_kb(&pid, "VmRSS")? as f64 / 1024.0
    );

    let template = request_rows(&stack.bucket).await?;
    let one_row = PredictRequest {
        attribute_names: template.attribute_names.clone(),
        rows: template.rows[..1].to_vec(),
        model_ver: args.model_ver.clone(),
        ..Default::default()
    };
    println!(
        "soak: {} min of one-row Predict at {}/s, PredictBatch every {} s, swap every {} s; serve-service pid {pid}",
        args.minutes, args.rate, args.batch_secs, args.swap_secs
    );
    println!(
        "{:>6}{:>9}{:>9}{:>9}{:>9}{:>10}{:>9}{:>10}{:>7}{:>10}{:>9}",
        "minute", "calls", "failed", "p50 us", "p99 us", "max us", "batches", "batch s", "swaps", "swap s", "RSS MB"
    );

    let window = Arc::new(Mutex::new(Window::default()));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.minutes * 60);
    let timeout = Duration::from_secs_f64(args.timeout_secs);

    let load = {
        let (window, serve, period) = (window.clone(), serve.clone(), Duration::from_secs_f64(1.0 / args.rate));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            while Instant::now() < end {
                tick.tick().await;
                let (window, request) = (window.clone(), one_row.clone());
                let mut client = ServeServiceClient::new(serve.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let outcome = match tokio::time::timeout(timeout, client.predict(request)).await {
                        Ok(Ok(answer)) if answer.get_ref().cr.len() == 1 => Ok(()),
                        Ok(Ok(answer)) => Err(format!("{} rates for one row", answer.get_ref().cr.len())),
                        Ok(Err(status)) => Err(status.to_string()),
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    };
                    let micros = t.elapsed().as_secs_f64() * 1e6;
                    let mut window = window.lock().expect("window lock");
                    match outcome {
                        Ok(()) => window.latencies.push(micros),
                        Err(error) => {
                            window.failures += 1;
                            window.error("Predict", error);
                        }
                    }
                });
            }
        })
    };
    let batches = {
        let (window, serve) = (window.clone(), serve.clone());
        let every = Duration::from_secs_f64(args.batch_secs);
        tokio::spawn(async move {
            let mut client = ServeServiceClient::new(serve);
            while Instant::now() + every <= end {
                tokio::time::sleep(every).await;
                let t = Instant::now();
                let outcome = client.predict_batch(batch.clone()).await;
                let mut window = window.lock().expect("window lock");
                window.batches += 1;
                window.batch_secs = window.batch_secs.max(t.elapsed().as_secs_f64());
                if let Err(status) = outcome {
                    window.batch_failures += 1;
                    window.error("PredictBatch", status);
                }
            }
        })
    };
    let swaps = {
        let (window, serve, model_ver, runs) = (window.clone(), serve.clone(), args.model_ver.clone(), runs.clone());
        let every = Duration::from_secs_f64(args.swap_secs);
        tokio::spawn(async move {
            for target in runs.iter().cycle().skip(1) {
                if Instant::now() + every > end {
                    break;
                }
                tokio::time::sleep(every).await;
                let t = Instant::now();
                let outcome = match promote(&mut promoter, &model_ver, target).await {
                    Ok(()) => wait_for_run(&serve, &model_ver, target, Duration::from_secs(30)).await,
                    Err(error) => Err(error),
                };
                let mut window = window.lock().expect("window lock");
                window.swaps += 1;
                window.swap_secs = window.swap_secs.max(t.elapsed().as_secs_f64());
                if let Err(error) = outcome {
                    window.swap_failures += 1;
                    window.error("swap", error);
                }
            }
        })
    };

    let mut tasks = Some((load, batches, swaps));
    let mut rows = Vec::new();
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for minute in 1..=args.minutes {
        tokio::time::sleep_until((started + Duration::from_secs(minute * 60)).into()).await;
        if let Some((load, batches, swaps)) = tasks.take_if(|_| minute == args.minutes) {
            // What was sent near the end is still out; its answers belong to this minute.
            load.await?;
            batches.await?;
            swaps.await?;
            tokio::time::sleep(timeout).await;
        }
        let mut w = std::mem::take(&mut *window.lock().expect("window lock"));
        w.latencies.sort_by(f64::total_cmp);
        let row = Row {
            calls: w.latencies.len() as u64 + w.failures,
            failures: w.failures,
            p50: pct(&w.latencies, 50.0),
            p99: pct(&w.latencies, 99.0),
            max: w.latencies.last().copied().unwrap_or(f64::NAN),
            rss_mb: status_kb(&pid, "VmRSS")? as f64 / 1024.0,
        };
        println!(
            "{minute:>6}{:>9}{:>9}{:>9.0}{:>9.0}{:>10.0}{:>9}{:>10.2}{:>7}{:>10.2}{:>9.1}",
            row.calls,
            row.failures,
            row.p50,
            row.p99,
            row.max,
            w.batches,
            w.batch_secs,
            w.swaps,
            w.swap_secs,
            row.rss_mb
        );
        for error in &w.errors {
            println!("       {error}");
        }
        totals.0 += row.calls;
        totals.1 += row.failures;
        totals.2 += w.batches;
        totals.3 += w.batch_failures;
        totals.4 += w.swaps;
        totals.5 += w.swap_failures;
        rows.push(row);
    }
    let peak_mb = status_kb(&pid, "VmHWM")? as f64 / 1024.0;
    drop(child);

    let (first, last) = (rows.first().context("no minute ran")?, rows.last().context("no minute ran")?);
    let (calls, failed, batches, batch_failures, swaps, swap_failures) = totals;
    println!();
    println!(
        "calls {calls} ({:.1}/s), failed {failed}; batches {batches}, failed {batch_failures}; swaps {swaps}, failed {swap_failures}",
        calls as f64 / (args.minutes * 60) as f64
    );
    println!(
        "p99 first minute {:.0} us, last minute {:.0} us ({:.2}x); p50 {:.0} -> {:.0} us",
        first.p99,
        last.p99,
        last.p99 / first.p99,
        first.p50,
        last.p50
    );
    println!(
        "serve-service RSS first minute {:.1} MB, last minute {:.1} MB ({:.2}x); peak {peak_mb:.1} MB",
        first.rss_mb,
        last.rss_mb,
        last.rss_mb / first.rss_mb
    );
    let failures = failed + batch_failures + swap_failures;
    if failures > 0 {
        bail!("{failures} failures in the soak");
    }
    drop(trainer);
    drop(stack);
    Ok(())
}

async fn promote(client: &mut TrainServiceClient<Channel>, model_ver: &str, run_id: &str) -> anyhow::Result<()> {
    let request = PromoteRequest {
        model_ver: model_ver.into(),
        run_id: run_id.into(),
        reason: "soak swap".into(),
        ..Default::default()
    };
    client.promote(request).await.with_context(|| format!("promoting {run_id}"))?;
    Ok(())
}

/// Waits until serve-service serves `run_id` of `model_ver`.
async fn wait_for_run(channel: &Channel, model_ver: &str, run_id: &str, within: Duration) -> anyhow::Result<()> {
    let mut client = ServeServiceClient::new(channel.clone());
    let started = Instant::now();
    while started.elapsed() < within {
        let request = GetModelRequest { model_ver: model_ver.into(), ..Default::default() };
        if client.get_model(request).await.is_ok_and(|info| info.get_ref().run_id == run_id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("serve-service did not serve run {run_id} within {within:?}")
}
