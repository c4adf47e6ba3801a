//! `online --compare`: serve-service and the pinned MLServer reference side by
//! side, each a child process, with the CPU seconds of each side.
//!
//! 1. train-service (in this process) trains v2 on generated data.
//! 2. The run's artifact and the observations it was fitted on go to
//!    `--work-dir`; `bench/mlserver/mlserver.sh fit` installs MLServer (once)
//!    and fits a lightgbm model of the same size on them.
//! 3. serve-service (the built binary, `MODEL_VER=v2`) and MLServer
//!    (`mlserver.sh serve`) start as child processes on free loopback ports.
//! 4. For each target (serve-service gRPC, and REST with `--serve-http`;
//!    MLServer gRPC, REST JSON and REST binary), `--repeats` rounds of: one-row
//!    latency at 1 caller, and `--rows`-row throughput at each `--concurrency`.
//!    Every measurement reads, before and after, the CPU seconds of the target
//!    server's process tree (MLServer's workers included) and of this process
//!    (the client), from `/proc`.
//!
//! A target that refuses its first request is skipped with its error printed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use crs_bench::load::{Throughput, latencies, throughput, warm_up};
use crs_bench::process::{ChildServer, free_addr, own_cpu_seconds, tree_cpu_seconds};
use crs_bench::v2::{BaseUrl, HttpConnection, Protocol, Target};
use crs_bench::{connect, connect_retrying, pct, train, wait_until_serving, write_observations};
use crs_domain::data::{DataFile, prepare};
use crs_domain::models::ModelVer;
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout::{ModelKey, RunId, TRAIN_KEY};
use crs_platform::storage::sample_data::SampleSizes;
use crs_testkit::{Setup, Stack};
use http::{Method, StatusCode};
use http_body_util::Full;
use tonic::transport::Channel;

use super::{Args, v2_callers};

/// The model name MLServer serves (`bench/mlserver/model-settings.json`).
const MLSERVER_MODEL: &str = "crs-v2";
/// The setting that turns serve-service's REST listener on.
const SERVE_HTTP_SETTING: &str = "SERVE_HTTP_ADDR";

/// A server under test: its process and the V2 targets it offers.
struct Server {
    name: &'static str,
    process: ChildServer,
    targets: Vec<Target>,
}

/// CPU seconds during one measurement.
#[derive(Clone, Copy, Debug)]
struct Cpu {
    server: f64,
    client: f64,
}

/// The one-row latency run of one round.
#[derive(Debug)]
struct Latency {
    calls: usize,
    /// Microseconds.
    p50: f64,
    p99: f64,
    cpu: Cpu,
}

/// One round's figures for one target.
#[derive(Debug)]
struct Round {
    latency: Latency,
    /// Per `--concurrency`: the throughput run and its CPU.
    throughput: Vec<(Throughput, Cpu)>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let serve_bin = match &args.serve_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("serve-service"),
    };
    if !serve_bin.exists() {
        bail!("no serve-service at {}: cargo build --release -p serve-service", serve_bin.display());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mlserver/mlserver.sh");
    std::fs::create_dir_all(&args.work_dir).with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work_dir = args.work_dir.canonicalize()?;

    // train-service runs here on its own runtime; it is idle while anything is measured.
    let services = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (stack, trainer) = services.block_on(async {
        let stack = Stack::with(Setup { webhook: None, sizes: SampleSizes::default() }).await;
        let trainer = stack.start_train(stack.train_config()).await;
        (stack, trainer)
    });
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    client.block_on(async {
        let started = Instant::now();
        let run_id = train(&trainer.addr.to_string(), "v2").await?;
        println!("trained v2 run {run_id} on generated data in {:.1} s", started.elapsed().as_secs_f64());
        export_run(&stack.bucket, &run_id, &work_dir).await?;

        let mut servers = vec![start_serve_service(args, &serve_bin, &stack.bucket_url, &work_dir).await?];
        if !args.no_mlserver {
            let status = Command::new(&script).arg("fit").arg(&work_dir).status()?;
            ensure!(status.success(), "{} fit {} failed: {status}", script.display(), work_dir.display());
            servers.push(start_mlserver(args, &script, &work_dir).await?);
        }
        for server in &mut servers {
            let mut usable = Vec::new();
            for mut target in std::mem::take(&mut server.targets) {
                match target.probe().await {
                    Ok(()) => usable.push(target),
                    Err(error) => {
                        println!(
                            "skipped: {} {}: its first request failed: {error:#}",
                            server.name,
                            target.protocol.label()
                        )
                    }
                }
            }
            server.targets = usable;
        }
        measure(args, &mut servers).await
    })?;
    drop(trainer);
    drop(stack);
    Ok(())
}

/// Writes the run's artifact and the observations it was fitted on (the same
/// preparation of the same file as train-service's) for the MLServer model.
async fn export_run(bucket: &Bucket, run_id: &str, dir: &Path) -> anyhow::Result<()> {
    let run = ModelKey::new(ModelVer::parse("v2")?).run(&RunId::parse(run_id)?);
    let artifact = bucket.get(&run.artifact()).await?;
    std::fs::write(dir.join("model.json"), &artifact)?;
    let bytes = bucket.get(&BucketKey::parse(TRAIN_KEY)?).await?;
    let data =
        tokio::task::spawn_blocking(move || prepare(&DataFile { name: TRAIN_KEY.to_owned(), bytes }, None)).await??;
    write_observations(&dir.join("train.csv"), &data.train)?;
    println!(
        "wrote {} (the run's artifact) and train.csv ({} observations)",
        dir.join("model.json").display(),
        data.train.len()
    );
    Ok(())
}

/// Whether the serve-service binary has a REST listener setting.
fn knows_http_setting(serve_bin: &Path) -> anyhow::Result<bool> {
    let help = Command::new(serve_bin).arg("--help").env_clear().output()?;
    Ok(String::from_utf8_lossy(&help.stdout).contains(SERVE_HTTP_SETTING))
}

async fn start_serve_service(args: &Args, serve_bin: &Path, bucket_url: &str, dir: &Path) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let http_addr = match args.serve_http {
        false => None,
        true if knows_http_setting(serve_bin)? => Some(free_addr()?),
        true => {
            println!(
                "skipped: serve-service REST: {} has no {SERVE_HTTP_SETTING} setting (no REST listener in this build)",
                serve_bin.display()
            );
            None
        }
    };
    let log = std::fs::File::create(dir.join("serve-service.log"))?;
    let mut command = Command::new(serve_bin);
    // Only the settings given here: the caller's shell must not change what is measured.
    command
        .env_clear()
        .env("BUCKET_URL", bucket_url)
        .env("SERVE_ADDR", &addr)
        .env("MODEL_VER", "v2")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(http_addr) = &http_addr {
        command.env(SERVE_HTTP_SETTING, http_addr);
    }
    let mut process = ChildServer::spawn("serve-service", command)?;
    let channel = connect_retrying(&addr, Duration::from_secs(30)).await?;
    wait_until_serving(&channel, Duration::from_secs(30)).await?;
    let target = |protocol, address: &str| Target {
        protocol,
        address: address.to_owned(),
        model: "v2".into(),
        version: String::new(),
        output: None,
        inputs: Vec::new(),
        bytes_values: args.v2_bytes.clone(),
    };
    let mut targets = vec![target(Protocol::Grpc, &addr)];
    if let Some(http_addr) = &http_addr {
        let url = format!("http://{http_addr}");
        wait_until_ready(&url, "/v2/health/ready", &mut process, Duration::from_secs(30)).await?;
        targets.push(target(Protocol::RestJson, &url));
        targets.push(target(Protocol::RestBinary, &url));
    }
    println!(
        "serve-service pid {} serving v2 on {addr}{}",
        process.pid(),
        match &http_addr {
            Some(http) => format!(" and http://{http}"),
            None => String::new(),
        }
    );
    Ok(Server { name: "serve-service", process, targets })
}

async fn start_mlserver(args: &Args, script: &Path, dir: &Path) -> anyhow::Result<Server> {
    let (http, grpc, metrics) = (free_addr()?, free_addr()?, free_addr()?);
    let port = |addr: &str| addr.rsplit(':').next().unwrap_or_default().to_owned();
    let log = std::fs::File::create(dir.join("mlserver.log"))?;
    let mut command = Command::new(script);
    command
        .arg("serve")
        .arg(dir.join("model"))
        .env("MLSERVER_HTTP_PORT", port(&http))
        .env("MLSERVER_GRPC_PORT", port(&grpc))
        .env("MLSERVER_METRICS_PORT", port(&metrics))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut process = ChildServer::spawn("MLServer", command)?;
    let url = format!("http://{http}");
    let ready = format!("/v2/models/{MLSERVER_MODEL}/ready");
    wait_until_ready(&url, &ready, &mut process, Duration::from_secs(180))
        .await
        .with_context(|| format!("MLServer did not start; see {}", dir.join("mlserver.log").display()))?;
    let target = |protocol, address: &str| Target {
        protocol,
        address: address.to_owned(),
        model: MLSERVER_MODEL.into(),
        version: String::new(),
        output: None,
        inputs: Vec::new(),
        bytes_values: args.v2_bytes.clone(),
    };
    println!("MLServer pid {} serving {MLSERVER_MODEL} on {url} and {grpc} (gRPC)", process.pid());
    let targets =
        vec![target(Protocol::Grpc, &grpc), target(Protocol::RestJson, &url), target(Protocol::RestBinary, &url)];
    Ok(Server { name: "MLServer", process, targets })
}

/// Polls `GET {url}{path}` until it answers 200.
async fn wait_until_ready(url: &str, path: &str, process: &mut ChildServer, within: Duration) -> anyhow::Result<()> {
    let base = BaseUrl::parse(url)?;
    let started = Instant::now();
    loop {
        process.check_running()?;
        if let Ok(mut connection) = HttpConnection::open(&base.authority).await {
            let request = base.request(Method::GET, &format!("{}{path}", base.prefix), Full::default())?;
            if connection.send(request).await.is_ok_and(|answer| answer.status == StatusCode::OK) {
                return Ok(());
            }
        }
        if started.elapsed() > within {
            bail!("GET {url}{path} did not answer 200 within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `work` and returns what it gave with the CPU seconds the server's
/// process tree and this process spent meanwhile.
async fn with_cpu<T>(server_pid: u32, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, Cpu)> {
    let (server, client) = (tree_cpu_seconds(server_pid)?, own_cpu_seconds()?);
    let out = work.await?;
    let cpu = Cpu { server: tree_cpu_seconds(server_pid)? - server, client: own_cpu_seconds()? - client };
    Ok((out, cpu))
}

async fn measure(args: &Args, servers: &mut [Server]) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(args.seconds);
    println!();
    print_machine();
    println!(
        "{} round(s); each: one-row latency at 1 caller, then {}-row requests at {:?} callers, {} s per measurement",
        args.repeats, args.rows, args.concurrency, args.seconds
    );
    println!("load average before: {}", load_average());
    let mut rounds: Vec<Vec<Vec<Round>>> =
        servers.iter().map(|server| server.targets.iter().map(|_| Vec::new()).collect()).collect();
    for round in 1..=args.repeats {
        for (s, server) in servers.iter_mut().enumerate() {
            for (t, target) in server.targets.iter().enumerate() {
                server.process.check_running()?;
                let pid = server.process.pid();
                let label = format!("{} {}", server.name, target.protocol.label());
                let mut caller = target.caller(1, None).await?;
                warm_up(&mut caller).await?;
                let (sorted, cpu) = with_cpu(pid, latencies(duration, &mut caller)).await?;
                drop(caller);
                let latency = Latency { calls: sorted.len(), p50: pct(&sorted, 50.0), p99: pct(&sorted, 99.0), cpu };
                println!(
                    "round {round} {label:<26} 1 row, 1 caller: p50 {:.0} us, p99 {:.0} us; CPU server {:.2} s, client {:.2} s",
                    latency.p50, latency.p99, cpu.server, cpu.client
                );
                let channels = grpc_channels(target, args.connections).await?;
                let mut runs = Vec::new();
                for &concurrency in &args.concurrency {
                    let callers = v2_callers(target, args.rows, concurrency, &channels).await?;
                    let (measured, cpu) = with_cpu(pid, throughput(duration, callers)).await?;
                    println!(
                        "round {round} {label:<26} {} rows, {concurrency} callers: {:.0} rows/s; CPU server {:.2} s, client {:.2} s",
                        args.rows,
                        measured.per_second(args.rows),
                        cpu.server,
                        cpu.client
                    );
                    runs.push((measured, cpu));
                }
                rounds[s][t].push(Round { latency, throughput: runs });
            }
        }
    }
    println!("load average after: {}", load_average());
    report(args, servers, &rounds);
    Ok(())
}

/// The HTTP/2 connections gRPC throughput callers share; none for REST.
async fn grpc_channels(target: &Target, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    if target.protocol == Protocol::Grpc {
        for _ in 0..connections.max(1) {
            channels.push(connect(&target.address).await?);
        }
    }
    Ok(channels)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn report(args: &Args, servers: &[Server], rounds: &[Vec<Vec<Round>>]) {
    let seconds = args.seconds;
    println!();
    println!(
        "medians of {} round(s); CPU seconds over each {seconds} s measurement (server: its whole process tree)",
        args.repeats
    );
    println!();
    println!("one-row latency, 1 caller");
    println!(
        "{:<28}{:>9}{:>9}{:>9}{:>13}{:>13}{:>16}",
        "target", "calls", "p50 us", "p99 us", "server CPU s", "client CPU s", "server us/call"
    );
    for (server, per_target) in servers.iter().zip(rounds) {
        for (target, runs) in server.targets.iter().zip(per_target) {
            let m = |f: &dyn Fn(&Round) -> f64| median(runs.iter().map(f).collect());
            let calls = m(&|r| r.latency.calls as f64);
            let server_cpu = m(&|r| r.latency.cpu.server);
            println!(
                "{:<28}{calls:>9.0}{:>9.0}{:>9.0}{server_cpu:>13.2}{:>13.2}{:>16.0}",
                format!("{} {}", server.name, target.protocol.label()),
                m(&|r| r.latency.p50),
                m(&|r| r.latency.p99),
                m(&|r| r.latency.cpu.client),
                m(&|r| r.latency.cpu.server * 1e6 / r.latency.calls as f64)
            );
        }
    }
    println!();
    println!("{}-row requests", args.rows);
    println!(
        "{:<28}{:>8}{:>11}{:>9}{:>9}{:>13}{:>13}{:>15}",
        "target", "callers", "rows/s", "p50 us", "p99 us", "server CPU s", "client CPU s", "server us/req"
    );
    // rows/s of every target at each concurrency, for the ratios below.
    let mut rates: Vec<(String, usize, f64, f64)> = Vec::new();
    for (c, &concurrency) in args.concurrency.iter().enumerate() {
        for (server, per_target) in servers.iter().zip(rounds) {
            for (target, runs) in server.targets.iter().zip(per_target) {
                let m =
                    |f: &dyn Fn(&(Throughput, Cpu)) -> f64| median(runs.iter().map(|r| f(&r.throughput[c])).collect());
                let label = format!("{} {}", server.name, target.protocol.label());
                let rate = m(&|(t, _)| t.per_second(args.rows));
                let per_request = m(&|(t, cpu)| cpu.server * 1e6 / t.requests as f64);
                println!(
                    "{label:<28}{concurrency:>8}{rate:>11.0}{:>9.0}{:>9.0}{:>13.2}{:>13.2}{per_request:>15.0}",
                    m(&|(t, _)| pct(&t.latencies, 50.0)),
                    m(&|(t, _)| pct(&t.latencies, 99.0)),
                    m(&|(_, cpu)| cpu.server),
                    m(&|(_, cpu)| cpu.client),
                );
                rates.push((label, concurrency, rate, per_request));
            }
        }
    }
    let ours: Vec<_> = rates.iter().filter(|(label, ..)| label.starts_with("serve-service")).collect();
    let theirs: Vec<_> = rates.iter().filter(|(label, ..)| label.starts_with("MLServer")).collect();
    if !ours.is_empty() && !theirs.is_empty() {
        println!();
        println!(
            "ratios at the same callers: rows/s (serve-service / MLServer), server CPU per request (MLServer / serve-service)"
        );
        for (our_label, concurrency, our_rate, our_cpu) in &ours {
            for (their_label, _, their_rate, their_cpu) in theirs.iter().filter(|t| t.1 == *concurrency) {
                println!(
                    "{our_label} vs {their_label}, {concurrency} callers: {:.1}x rows/s, {:.1}x less CPU per request",
                    our_rate / their_rate,
                    their_cpu / our_cpu
                );
            }
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// The CPU model, core count and memory, as `lscpu` and `free` would name them.
fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory_gb =
        crs_bench::kb_field("/proc/meminfo", "MemTotal").map(|kb| kb as f64 / 1048576.0).unwrap_or(f64::NAN);
    println!("machine: {model}, {cores} cores, {memory_gb:.0} GiB");
}
