use anyhow::Context;
use clap::Parser;
use train_service::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    crs_platform::runtime::init_logging("info", config.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&config.addr).await.with_context(|| format!("binding {}", config.addr))?;
        train_service::run(config, listener, crs_platform::runtime::shutdown_signal()).await
    });
    // A job cut off by shutdown may still be computing on a blocking thread; its
    // result is thrown away, so exit without waiting for it.
    runtime.shutdown_background();
    result
}
