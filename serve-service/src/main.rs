use clap::Parser;
use serve_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crs_core::runtime::init_tracing("info");
    let config = Config::parse();
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    serve_service::run(config, listener, crs_core::runtime::shutdown_signal()).await
}
