//! `crctl`: the command-line tool of the conversion-rate platform. Offline
//! commands (`gen-data`, `evaluate`) work on files directly.

mod offline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "crctl",
    version,
    about = "Conversion-rate models: data, offline evaluation, and the train/serve services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the default synthetic data (train, eval, prediction input) into the bucket.
    GenData(offline::GenDataArgs),
    /// Train a model version in process and print its metrics next to the baselines'.
    Evaluate(offline::EvaluateArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    crs_core::runtime::init_tracing("warn");
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
            Command::Evaluate(args) => offline::evaluate(args).await,
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
