use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use train_service::Config;

fn main() -> anyhow::Result<ExitCode> {
    let mut config = Config::parse();
    crs_platform::service::runtime::init_logging("info", config.common.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        match config.command.take() {
            Some(command) => {
                let outcome = train_service::run_once(config, command, crs_server::startup::shutdown_signal()).await?;
                println!("{outcome}");
                Ok(ExitCode::from(outcome.exit_code()))
            }
            None => {
                let listeners = config.listeners().await?;
                train_service::run(config, listeners, crs_server::startup::shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    // A job cut off by shutdown may still be computing on a blocking thread; its
    // result is thrown away, so exit without waiting for it.
    runtime.shutdown_background();
    result
}
