//! `crctl`: the command-line tool of the conversion-rate platform. Offline
//! commands (`gen-data`, `evaluate`) work on files directly; the others are the
//! gRPC client of train-service and serve-service.

/// `println!` that ends the process quietly when stdout is closed, as in
/// `crctl models | head`, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("cannot write to stdout: {e}");
        }
    }};
}

mod client;
mod compare;
mod health;
mod lifecycle;
mod monitor;
mod offline;
mod render;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
pub use compare::{Comparison, Side, compare};
pub use serve::predict_request;

#[derive(Debug, Parser)]
#[command(
    name = "crctl",
    version,
    about = "Conversion-rate models: data, offline evaluation, and the train/serve services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    addresses: client::Addresses,
    /// Print one JSON object instead of text meant for people.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the default synthetic data (train, eval, prediction input) into the bucket.
    GenData(offline::GenDataArgs),
    /// Train a model version in process and print its metrics next to the baselines'.
    Evaluate(offline::EvaluateArgs),
    /// List the model versions: those this build trains, and those the bucket declares for imports, with their framework.
    Versions(offline::VersionsArgs),
    /// Import a model file saved by xgboost or lightgbm as a run of a version declared for imports; gated like a trained run.
    Import(train::ImportArgs),
    /// Start a training job on train-service (with --wait, follow it to the end).
    Train(train::TrainArgs),
    /// List train-service's jobs.
    Jobs,
    /// Cancel a queued or running training job, or a running cycle (--cycle); nothing of the run is kept.
    Cancel(train::CancelArgs),
    /// List the stored runs of each model version, and which one LATEST points at.
    Models(train::ModelsArgs),
    /// Show what serve-service has loaded: one model version (default: the service's), and every version it holds.
    Model(serve::ModelArgs),
    /// Make serve-service load a model version at a run (or latest).
    LoadModel(serve::LoadModelArgs),
    /// Predict the rows of a local CSV file online, printing entity_id,device,cr.
    Predict(serve::PredictArgs),
    /// Batch-predict a file in the bucket into a gzip CSV in the bucket.
    PredictBatch(serve::PredictBatchArgs),
    /// Exit 0 only when the service reports SERVING (for container health checks).
    Health(health::HealthArgs),
    /// Ingest the new files under the incoming prefix into the ledger.
    Ingest,
    /// Run a lifecycle cycle now (with --wait, exit 0 once it completes, whatever it decided).
    Cycle(lifecycle::CycleArgs),
    /// List a version's cycles.
    Cycles(lifecycle::VersionArgs),
    /// Point the production alias at a run.
    Promote(lifecycle::PromoteArgs),
    /// Move production back to the previous production run, and pause automatic promotion.
    Rollback(lifecycle::RollbackArgs),
    /// A version's runs with their stages and aliases.
    Runs(lifecycle::VersionArgs),
    /// The production run's metrics on a labelled file in the bucket.
    Score(lifecycle::ScoreArgs),
    /// The bucket key of a run's or a cycle's report (default: the production run's).
    Report(lifecycle::ReportArgs),
    /// Score a primary model and its shadow side by side on outcomes, from the predictions recorded in the bucket.
    Compare(compare::CompareArgs),
    /// A version's trends across cycles (ingested rows, drift, production's log-loss on the reference set, captured rows), from the bucket.
    Monitor(monitor::MonitorArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    crs_platform::service::runtime::init_tracing("warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::GenData(args) => offline::gen_data(args).await,
            Command::Evaluate(args) => offline::evaluate(args, cli.json).await,
            Command::Versions(args) => offline::versions(args, cli.json).await,
            Command::Import(args) => train::import(args, &cli.addresses, cli.json).await,
            Command::Train(args) => train::train(args, &cli.addresses, cli.json).await,
            Command::Jobs => train::jobs(&cli.addresses, cli.json).await,
            Command::Cancel(args) => train::cancel(args, &cli.addresses, cli.json).await,
            Command::Models(args) => train::models(args, &cli.addresses, cli.json).await,
            Command::Model(args) => serve::model(args, &cli.addresses, cli.json).await,
            Command::LoadModel(args) => serve::load_model(args, &cli.addresses, cli.json).await,
            Command::Predict(args) => serve::predict(args, &cli.addresses, cli.json).await,
            Command::PredictBatch(args) => serve::predict_batch(args, &cli.addresses, cli.json).await,
            Command::Health(args) => health::health(args, &cli.addresses, cli.json).await,
            Command::Ingest => lifecycle::ingest(&cli.addresses, cli.json).await,
            Command::Cycle(args) => lifecycle::cycle(args, &cli.addresses, cli.json).await,
            Command::Cycles(args) => lifecycle::cycles(args, &cli.addresses, cli.json).await,
            Command::Promote(args) => lifecycle::promote(args, &cli.addresses, cli.json).await,
            Command::Rollback(args) => lifecycle::rollback(args, &cli.addresses, cli.json).await,
            Command::Runs(args) => lifecycle::runs(args, &cli.addresses, cli.json).await,
            Command::Score(args) => lifecycle::score(args, &cli.addresses, cli.json).await,
            Command::Report(args) => lifecycle::report(args, &cli.addresses, cli.json).await,
            Command::Compare(args) => compare::run(args, cli.json).await,
            Command::Monitor(args) => monitor::run(args, cli.json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
