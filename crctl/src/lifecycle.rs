//! The lifecycle commands: ingestion, cycles, promotion and rollback, runs,
//! scores and reports. Each takes `--model-ver` and `--json`.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use crs_proto::train::{
    CycleState, GetCycleRequest, GetReportRequest, IngestRequest, ListCyclesRequest, ListModelsRequest,
    ModelVersionRuns, PromoteRequest, RollbackRequest, RunCycleRequest, ScoreRequest,
};

use crate::client::{Addresses, status};
use crate::render::{self, print_json};
use crate::train::print_evaluation;

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Model version; empty means train-service's default.
    #[arg(long, env = "MODEL_VER", default_value = "")]
    model_ver: String,
}

pub async fn ingest(addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let response = addrs.train().await?.ingest(IngestRequest {}).await.map_err(status)?.into_inner();
    if json {
        return print_json(&render::value(&response));
    }
    if response.entries.is_empty() {
        out!("nothing new to ingest");
    }
    for e in &response.entries {
        out!(
            "{:<40} {:<12} read {:>6} used {:>6} duplicate {:>5} conflict {:>5} weeks {:?} {}",
            e.key,
            e.outcome,
            e.rows_read,
            e.rows_used,
            e.rows_duplicate,
            e.rows_conflict,
            e.weeks,
            e.message
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CycleArgs {
    #[command(flatten)]
    version: VersionArgs,
    /// Wait for the cycle to end; exit non-zero only if it failed.
    #[arg(long)]
    wait: bool,
}

pub async fn cycle(args: CycleArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let mut client = addrs.train().await?;
    let model_ver = args.version.model_ver;
    let mut cycle =
        client.run_cycle(RunCycleRequest { model_ver: model_ver.clone() }).await.map_err(status)?.into_inner();
    while args.wait && cycle.state() == CycleState::Running {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let request = GetCycleRequest { model_ver: cycle.model_ver.clone(), cycle_id: cycle.cycle_id.clone() };
        cycle = client.get_cycle(request).await.map_err(status)?.into_inner();
    }
    if json {
        print_json(&render::value(&cycle))?;
    } else {
        out!("cycle {} of model {}: {} ({})", cycle.cycle_id, cycle.model_ver, cycle.state().as_str_name(), cycle.step);
        if !cycle.decision.is_empty() {
            out!("  {}", cycle.decision);
        }
        if !cycle.report_key.is_empty() {
            out!("  report: {}", cycle.report_key);
        }
    }
    if cycle.state() == CycleState::Cancelled {
        bail!("cycle {} cancelled by {}: {}", cycle.cycle_id, cycle.cancelled_by, cycle.cancel_reason);
    }
    if cycle.state() == CycleState::Failed {
        bail!("cycle {} failed: {}", cycle.cycle_id, cycle.error);
    }
    Ok(())
}

pub async fn cycles(args: VersionArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let request = ListCyclesRequest { model_ver: args.model_ver };
    let response = addrs.train().await?.list_cycles(request).await.map_err(status)?.into_inner();
    if json {
        return print_json(&render::value(&response));
    }
    for c in &response.cycles {
        out!("{:<28}{:<22}{:<10}{}", c.cycle_id, c.state().as_str_name(), c.step, c.decision);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    version: VersionArgs,
    /// The run to make production.
    #[arg(long)]
    run: String,
    /// Why, recorded with the change.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    by: ByArgs,
}

/// Who acts, recorded in the version's history.
#[derive(Debug, Args)]
pub struct ByArgs {
    /// Who is acting, recorded with the change; unset means the login name (USER, or LOGNAME).
    #[arg(long)]
    by: Option<String>,
}

impl ByArgs {
    fn name(self) -> String {
        self.by
            .or_else(|| ["USER", "LOGNAME"].iter().find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty())))
            .unwrap_or_default()
    }
}

pub async fn promote(args: PromoteArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let request =
        PromoteRequest { model_ver: args.version.model_ver, run_id: args.run, reason: args.reason, by: args.by.name() };
    let runs = addrs.train().await?.promote(request).await.map_err(status)?.into_inner();
    print_runs(&runs, json)
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    version: VersionArgs,
    /// Why, recorded with the change.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    by: ByArgs,
}

pub async fn rollback(args: RollbackArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let request = RollbackRequest { model_ver: args.version.model_ver, reason: args.reason, by: args.by.name() };
    let runs = addrs.train().await?.rollback(request).await.map_err(status)?.into_inner();
    print_runs(&runs, json)
}

pub async fn runs(args: VersionArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let mut client = addrs.train().await?;
    let response =
        client.list_models(ListModelsRequest { model_ver: args.model_ver.clone() }).await.map_err(status)?.into_inner();
    let Some(runs) = response.versions.into_iter().next() else { bail!("no runs stored for model {}", args.model_ver) };
    print_runs(&runs, json)
}

fn print_runs(runs: &ModelVersionRuns, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&render::value(runs));
    }
    let or_none = |id: &str| if id.is_empty() { "none".to_owned() } else { id.to_owned() };
    out!(
        "model {} (production: {}, latest: {})",
        runs.model_ver,
        or_none(&runs.production_run_id),
        or_none(&runs.latest_run_id)
    );
    out!("  {:<30}{:<12}{:>10}{:>10}  {}", "RUN", "STAGE", "logloss", "wmae", "WHY");
    for r in &runs.runs {
        let model = r.eval.as_ref().and_then(|e| e.model);
        out!(
            "  {:<30}{:<12}{:>10.5}{:>10.5}  {}{}",
            r.run_id,
            r.stage,
            model.map_or(f64::NAN, |m| m.logloss),
            model.map_or(f64::NAN, |m| m.wmae),
            r.stage_reason,
            if r.aliases.is_empty() { String::new() } else { format!(" <- {}", r.aliases.join(", ")) }
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    version: VersionArgs,
    /// Bucket key of a labelled file in the training schema.
    #[arg(long = "data")]
    data_key: String,
}

pub async fn score(args: ScoreArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let request = ScoreRequest { model_ver: args.version.model_ver, data_key: args.data_key.clone() };
    let response = addrs.train().await?.score(request).await.map_err(status)?.into_inner();
    if json {
        return print_json(&render::value(&response));
    }
    out!("model {} run {} on {}", response.model_ver, response.run_id, args.data_key);
    if let Some(e) = &response.evaluation {
        print_evaluation("score", e);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    version: VersionArgs,
    /// A run's report.
    #[arg(long, conflicts_with = "cycle")]
    run: Option<String>,
    /// A cycle's report.
    #[arg(long)]
    cycle: Option<String>,
}

pub async fn report(args: ReportArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let request = GetReportRequest {
        model_ver: args.version.model_ver,
        run_id: args.run.unwrap_or_default(),
        cycle_id: args.cycle.unwrap_or_default(),
    };
    let response = addrs.train().await?.get_report(request).await.map_err(status)?.into_inner();
    if json {
        return print_json(&render::value(&response));
    }
    out!("{}", response.report_key);
    Ok(())
}
