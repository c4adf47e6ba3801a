//! `crctl health`: the gRPC health check of either service, for container
//! health checks. It sends no token: health is open on both services.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::{Addresses, ServiceName, status};
use crate::render::{self, print_json};

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Which service to ask.
    #[arg(long, value_enum)]
    service: ServiceName,
}

/// Exit code 0 only when the service reports SERVING, for container health checks.
pub async fn health(args: HealthArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let addr = addrs.addr(args.service);
    let mut client = HealthClient::new(addrs.channel(addr).await?);
    let answer =
        tokio::time::timeout(Duration::from_secs(5), client.check(HealthCheckRequest { service: String::new() }))
            .await
            .context("no health answer within 5 s")?
            .map_err(status)?
            .into_inner();
    let serving = answer.status();
    if json {
        print_json(&render::health(&format!("{:?}", args.service).to_lowercase(), addr, serving.as_str_name()))?;
    } else {
        out!("{addr}: {}", serving.as_str_name());
    }
    if serving != ServingStatus::Serving {
        bail!("{addr} is not serving");
    }
    Ok(())
}
