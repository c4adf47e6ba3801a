//! `crctl monitor`: a version's trends across cycles, one point per cycle,
//! from the trend points in the bucket (`crs_platform::lifecycle::trends`).
//! Like `crctl compare`, it reads the bucket itself: the points outlive the
//! cycles, and reading them should not need train-service up.

use anyhow::Context;
use clap::Args;
use crs_domain::models::ModelVer;
use crs_platform::lifecycle::trends::{self, TrendPoint};
use crs_platform::storage::bucket::Bucket;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The bucket the services share: a folder, file://, s3://bucket/prefix or memory://.
    #[arg(long, env = "BUCKET_URL", default_value = "./bucket")]
    bucket: String,
    /// The model version whose trends to show.
    #[arg(long, env = "MODEL_VER")]
    model_ver: ModelVer,
}

pub async fn run(args: MonitorArgs, json: bool) -> anyhow::Result<()> {
    let bucket = Bucket::open(&args.bucket).context("--bucket")?;
    let points = trends::series(&bucket, args.model_ver).await?;
    if json {
        let value = serde_json::json!({ "model_ver": args.model_ver.name(), "points": points });
        out!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if points.is_empty() {
        out!("no trend points for model {}: no cycle has run (or all are older than trend_keep_days)", args.model_ver);
        return Ok(());
    }
    out!(
        "{:<28}{:<11}{:>9}{:>9}{:>9}{:>9}{:>9}{:>11}{:>10}{:>8}{:>9}{:>10}  decision",
        "cycle",
        "state",
        "rows in",
        "drift",
        "dev PSI",
        "att PSI",
        "unseen",
        "ref l-loss",
        "captured",
        "live",
        "live PSI",
        "live l-l"
    );
    for point in &points {
        out!("{}", row(point));
    }
    Ok(())
}

fn row(point: &TrendPoint) -> String {
    let number =
        |value: Option<f64>, width: usize| value.map_or(format!("{:>width$}", "-"), |v| format!("{v:>width$.4}"));
    let (drift, live) = (point.drift.as_ref(), point.live.as_ref());
    let level = live.map_or("-", |l| l.level.as_str());
    let live_psi = live.map(|l| l.largest_psi());
    format!(
        "{:<28}{:<11}{:>9}{:>9}{}{}{}{}{:>10}{level:>8}{}{}  {}",
        point.cycle_id.as_str(),
        point.state,
        point.ingest.rows,
        drift.map_or("-", |d| if d.drifted { "yes" } else { "no" }),
        number(drift.map(|d| d.device_psi), 9),
        number(drift.map(|d| d.max_attribute_psi), 9),
        number(drift.map(|d| d.unseen_keyword_share), 9),
        number(point.reference.as_ref().map(|r| r.logloss), 11),
        point.captured_rows.map_or("-".to_owned(), |n| n.to_string()),
        number(live_psi, 9),
        number(live.and_then(|l| l.labelled_logloss), 10),
        point.decision
    )
}
