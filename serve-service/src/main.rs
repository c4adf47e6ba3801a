use clap::Parser;
use serve_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crs_platform::runtime::init_tracing("info");
    let config = Config::parse();
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    serve_service::run(config, listener, crs_platform::runtime::shutdown_signal()).await
}
