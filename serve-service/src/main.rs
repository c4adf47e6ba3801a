use clap::Parser;
use serve_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    crs_platform::runtime::init_logging("info", config.log_format);
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    serve_service::run(config, listener, crs_platform::runtime::shutdown_signal()).await
}
