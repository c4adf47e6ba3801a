use clap::Parser;
use serve_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    crs_platform::service::runtime::init_logging("info", config.common.log_format);
    let listeners = config.listeners().await?;
    serve_service::run(config, listeners, crs_server::startup::shutdown_signal()).await
}
