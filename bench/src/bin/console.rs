//! How long the console's pages take for a version with many runs and
//! cycles, from a local-folder bucket: the issue asks for pages of a version
//! with 1,000 runs and 1,000 cycles under 200 ms.
//!
//! Fills a fresh bucket with `--runs` copies of the committed fixture run's
//! metadata (each its own run id; listings read only metadata) and `--cycles`
//! cycle records, serves the console on 127.0.0.1:0 and times each page and
//! API call `--requests` times, one at a time, after one warm-up call.
//!
//! `cargo run --release -p crs-bench --bin console`

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use clap::Parser;
use crs_domain::models::ModelVer;
use crs_platform::notify::webhook::Notifier;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::events::Change;
use crs_platform::registry::runs::{ModelStore, RunMetadata};
use crs_platform::service::security::{AuthLayer, Secret};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout::{self, ModelKey, RunId};
use crs_server::http::{HttpLimits, HttpServer};
use train_service::console::{self, Console, ConsoleRule};
use train_service::cycles::{CycleRecord, CycleState, CycleStep, Cycles};
use train_service::jobs::Jobs;
use train_service::metrics::TrainMetrics;

#[derive(Debug, Parser)]
struct Args {
    /// Runs of model v1 in the bucket.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Cycle records of model v1 in the bucket.
    #[arg(long, default_value_t = 1000)]
    cycles: usize,
    /// Timed requests per page.
    #[arg(long, default_value_t = 30)]
    requests: usize,
    /// After timing, keep serving this many seconds (for schemathesis, `.ci/run`), with the
    /// bearer token in CONSOLE_TOKEN if set.
    #[arg(long, default_value_t = 0)]
    serve_secs: u64,
}

/// A run id `n` seconds after a fixed start, in the layout's form.
fn run_id(n: usize) -> RunId {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(n as i64);
    RunId::parse(&format!("{}-{n:06x}", at.format("%Y%m%dT%H%M%S%3fZ"))).expect("run id")
}

async fn fill(bucket: &Bucket, runs: usize, cycles: usize) -> anyhow::Result<()> {
    let model_ver = ModelVer::parse("v1")?;
    let fixture = crs_testkit::fixture_dir().join("model/v1/20261201T210556681Z-9626e2/metadata.json");
    let template: RunMetadata = serde_json::from_slice(&std::fs::read(fixture)?)?;
    for n in 0..runs {
        let mut metadata = template.clone();
        metadata.run_id = run_id(n);
        metadata.job_id = format!("job-{n}");
        metadata.metrics.eval.model.logloss += (n % 97) as f64 * 1e-4;
        bucket.put(&ModelKey::new(model_ver).run(&metadata.run_id).metadata(), serde_json::to_vec(&metadata)?).await?;
    }
    let catalog = Catalog::new(ModelStore::new(bucket.clone()));
    // A production alias and some history, as a version that has lived has.
    for (seq, n) in (1..=20).zip((0..runs).step_by((runs / 20).max(1))) {
        let change = Change::Promote { run_id: run_id(n), previous: None };
        catalog.log(model_ver).append(seq, "bench", "bench", change, None).await?;
    }
    for n in 0..cycles {
        let id = run_id(n);
        let mut record = CycleRecord::new(id.clone(), model_ver, "schedule");
        record.state = CycleState::Succeeded;
        record.step = CycleStep::Report;
        record.finished_at = Some(Utc::now());
        record.decision = "no new data: nothing to do".into();
        record.production_run_id = Some(run_id(0));
        bucket.put(&layout::cycle_record(model_ver, &id), serde_json::to_vec(&record)?).await?;
    }
    // The first listing writes the run index, as the service's first read would.
    catalog.runs(model_ver).await?;
    Ok(())
}

fn console_on(bucket: &Bucket) -> Console {
    let catalog = Catalog::new(ModelStore::new(bucket.clone()));
    let metrics = std::sync::Arc::new(TrainMetrics::new(&mut prometheus_client::registry::Registry::default()));
    let jobs = Jobs::new(catalog.clone(), Notifier::disabled(), 2, metrics.clone());
    let incoming = BucketKey::parse(layout::INCOMING_PREFIX).expect("key");
    let cycles =
        Cycles::new(catalog.clone(), jobs.clone(), Notifier::disabled(), incoming, Duration::from_secs(60), metrics);
    Console::new(catalog, jobs, cycles, ModelVer::parse("v1").expect("v1"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let bucket = Bucket::open(dir.path().join("bucket").to_str().expect("utf-8 path"))?;
    let filling = Instant::now();
    fill(&bucket, args.runs, args.cycles).await?;
    println!(
        "bucket: {} runs, {} cycles of v1, written in {:.1} s",
        args.runs,
        args.cycles,
        filling.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let token = std::env::var("CONSOLE_TOKEN").ok().filter(|t| !t.is_empty()).map(Secret::new);
    let app = console::router(console_on(&bucket)).layer(AuthLayer::new(token, ConsoleRule));
    let server = HttpServer::start(listener, app, None, HttpLimits::default())?;
    let base = format!("http://{}", server.local_addr());
    let client = reqwest::Client::new();
    let middle = run_id(args.runs / 2);
    let pages = [
        "/".to_owned(),
        "/models/v1".to_owned(),
        "/models/v1?stage=archived&sort=logloss&order=asc&offset=500".to_owned(),
        format!("/models/v1/runs/{middle}"),
        "/api/v1/models".to_owned(),
        "/api/v1/models/v1/runs?limit=50".to_owned(),
        "/api/v1/models/v1/cycles?offset=900&limit=50".to_owned(),
        "/api/v1/models/v1/history".to_owned(),
        "/api/v1/models/v1/chart".to_owned(),
    ];
    println!("{:<60} {:>9} {:>9} {:>9} {:>9}", "page", "p50 ms", "p95 ms", "max ms", "KiB");
    for page in &pages {
        let url = format!("{base}{page}");
        let warm = client.get(&url).send().await?;
        anyhow::ensure!(warm.status().is_success(), "{page}: {}", warm.status());
        let size = warm.bytes().await?.len();
        let mut times = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            let start = Instant::now();
            let response = client.get(&url).send().await?;
            anyhow::ensure!(response.status().is_success(), "{page}: {}", response.status());
            response.bytes().await?;
            times.push(start.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        println!(
            "{page:<60} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            ms(times[times.len() / 2]),
            ms(p95),
            ms(*times.last().expect("timed")),
            size as f64 / 1024.0
        );
    }
    if args.serve_secs > 0 {
        println!("serving on {base} for {} s", args.serve_secs);
        tokio::time::sleep(Duration::from_secs(args.serve_secs)).await;
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
