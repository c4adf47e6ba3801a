use clap::Parser;
use serve_service::{Config, ServeCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    crs_platform::service::runtime::init_logging("info", config.common.log_format);
    match config.command.take() {
        Some(ServeCommand::Batch(command)) => {
            let response = serve_service::run_batch(config, command, crs_server::startup::shutdown_signal()).await?;
            println!("{}", serde_json::to_string(&response)?);
            Ok(())
        }
        None => {
            let listeners = config.listeners().await?;
            serve_service::run(config, listeners, crs_server::startup::shutdown_signal()).await
        }
    }
}
