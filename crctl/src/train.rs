//! train-service's training jobs: start one (and follow it), list them, cancel
//! one (or a cycle), and list the stored runs of each version.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use crs_platform::storage::layout::TRAIN_KEY;
use crs_proto::train::import_model_request::Part;
use crs_proto::train::{
    CancelCycleRequest, CancelTrainingJobRequest, CycleState, Evaluation, ImportModelHeader, ImportModelRequest,
    JobState, ListModelsRequest, ListTrainingJobsRequest, Stage, StartTrainingRequest, WatchTrainingJobRequest,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{Addresses, status};
use crate::render::{self, print_json};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model version to train; empty means train-service's MODEL_VER.
    #[arg(long, env = "MODEL_VER", default_value = "")]
    model_ver: String,
    /// Bucket key of the training data.
    #[arg(long = "train", default_value = TRAIN_KEY)]
    train_key: String,
    /// Bucket key of the evaluation data; without it, a holdout of the training keywords.
    #[arg(long = "eval")]
    eval_key: Option<String>,
    /// Bucket key of the hyperparameter YAML; without it, config/<model_ver>/params.yaml.
    #[arg(long = "config")]
    config_key: Option<String>,
    /// Label recorded with the run, key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Follow the job to its end with a progress bar; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
    /// A development run: kept as a draft, never gated or promoted, served only when loaded by id.
    #[arg(long)]
    draft: bool,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{text:?} is not key=value"))
}

pub async fn train(args: TrainArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let mut client = addrs.train().await?;
    let job = client
        .start_training(StartTrainingRequest {
            model_ver: args.model_ver,
            train_key: args.train_key,
            eval_key: args.eval_key,
            config_key: args.config_key,
            labels: args.labels.into_iter().collect(),
            draft: args.draft,
        })
        .await
        .map_err(status)?
        .into_inner();
    follow(&mut client, job, args.wait, json).await
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A version declared for imports in the bucket (config/<ver>/model.yaml, framework: xgboost or lightgbm).
    #[arg(long)]
    model_ver: String,
    /// The model file: xgboost's save_model JSON (or UBJSON), or lightgbm's save_model text.
    #[arg(long)]
    file: std::path::PathBuf,
    /// Bucket key of the labelled evaluation data the import is gated on; default data/train/eval.csv.gz.
    #[arg(long = "eval")]
    eval_key: Option<String>,
    /// Label recorded with the run, key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Follow the job to its end; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
    /// Keep the run as a draft: never gated or promoted.
    #[arg(long)]
    draft: bool,
}

/// Bytes per ImportModel chunk: well under gRPC's 4 MiB message default.
const IMPORT_CHUNK: usize = 1 << 20;

/// Streams a model file to train-service's ImportModel and follows the job it starts.
pub async fn import(args: ImportArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let header = ImportModelHeader {
        model_ver: args.model_ver,
        eval_key: args.eval_key,
        labels: args.labels.into_iter().collect(),
        draft: args.draft,
    };
    let mut messages = vec![ImportModelRequest { part: Some(Part::Header(header)) }];
    messages.extend(bytes.chunks(IMPORT_CHUNK).map(|c| ImportModelRequest { part: Some(Part::Chunk(c.to_vec())) }));
    let mut client = addrs.train().await?;
    let job = client.import_model(tokio_stream::iter(messages)).await.map_err(status)?.into_inner();
    follow(&mut client, job, args.wait, json).await
}

/// Prints a queued job, or (with `wait`) follows it to its end.
async fn follow(
    client: &mut crate::client::TrainClient,
    job: crs_proto::train::TrainingJob,
    wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    if !wait {
        return if json {
            print_json(&render::job(&job))
        } else {
            out!("job {} queued: model {} on {}", job.job_id, job.model_ver, job.train_key);
            Ok(())
        };
    }

    let mut updates = client
        .watch_training_job(WatchTrainingJobRequest { job_id: job.job_id.clone() })
        .await
        .map_err(status)?
        .into_inner();
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(100) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last = job;
    while let Some(update) = updates.message().await.map_err(status)? {
        bar.set_position((update.progress * 100.0).round() as u64);
        let search = update.search.as_ref().map_or(String::new(), |s| {
            if s.refitting {
                format!(": refitting grid point {} with {} trees", s.best_point, s.best_trees)
            } else {
                format!(
                    ": search point {}/{}, fold {}/{}, best point {} (log-loss {:.5})",
                    s.point, s.points, s.folds_done, s.folds, s.best_point, s.best_logloss
                )
            }
        });
        bar.set_message(format!("job {} {}{search}", update.job_id, stage_name(update.stage())));
        last = update;
    }
    bar.finish_and_clear();
    if json {
        print_json(&render::job(&last))?;
    }
    match last.state() {
        JobState::Succeeded => {
            if !json {
                out!("job {} succeeded: model {} run {}", last.job_id, last.model_ver, last.run_id);
                if let Some(e) = &last.evaluation {
                    print_evaluation("eval", e);
                }
            }
            Ok(())
        }
        JobState::Failed => bail!("job {} failed: {}", last.job_id, last.error),
        JobState::Cancelled => bail!("job {} cancelled by {}: {}", last.job_id, last.cancelled_by, last.cancel_reason),
        other => bail!("job {} stream ended while {}", last.job_id, other.as_str_name()),
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Unspecified => "queued",
        Stage::LoadingData => "loading data",
        Stage::Preparing => "preparing",
        Stage::Training => "training",
        Stage::Evaluating => "evaluating",
        Stage::Saving => "saving",
    }
}

pub(crate) fn print_evaluation(name: &str, e: &Evaluation) {
    out!("{name}: {} rows, {} clicks", e.rows, e.clicks);
    out!("  {:<18}{:>10}{:>10}{:>10}{:>10}", "", "wmae", "wmse", "logloss", "mae");
    for (label, m) in [
        ("model", &e.model),
        ("baseline: device", &e.device),
        ("baseline: global", &e.global),
        ("baseline: zero", &e.zero),
    ] {
        if let Some(m) = m {
            out!("  {label:<18}{:>10.5}{:>10.5}{:>10.4}{:>10.5}", m.wmae, m.wmse, m.logloss, m.mae);
        }
    }
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job to cancel.
    #[arg(required_unless_present = "cycle", conflicts_with = "cycle")]
    job_id: Option<String>,
    /// Cancel this cycle instead (of --model-ver), on whichever replica runs it.
    #[arg(long)]
    cycle: Option<String>,
    /// The cycle's model version; empty means train-service's default.
    #[arg(long, env = "MODEL_VER", default_value = "", requires = "cycle")]
    model_ver: String,
    /// Why it is cancelled, recorded with the job.
    #[arg(long, default_value = "")]
    reason: String,
    /// Who cancels it, recorded with the job.
    #[arg(long, default_value = "crctl cancel")]
    by: String,
}

/// Exits non-zero unless the job or cycle ended cancelled (it may have finished first).
pub async fn cancel(args: CancelArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    if let Some(cycle_id) = args.cycle {
        let request = CancelCycleRequest { model_ver: args.model_ver, cycle_id, by: args.by, reason: args.reason };
        let cycle = addrs.train().await?.cancel_cycle(request).await.map_err(status)?.into_inner();
        if json {
            print_json(&render::value(&cycle))?;
        }
        return match cycle.state() {
            CycleState::Cancelled => {
                if !json {
                    out!("cycle {} {}", cycle.cycle_id, cycle.decision);
                }
                Ok(())
            }
            other => bail!("cycle {} was not cancelled: it is {}", cycle.cycle_id, other.as_str_name()),
        };
    }
    let job_id = args.job_id.unwrap_or_default();
    let request = CancelTrainingJobRequest { job_id, by: args.by, reason: args.reason };
    let job = addrs.train().await?.cancel_training_job(request).await.map_err(status)?.into_inner();
    if json {
        print_json(&render::job(&job))?;
    }
    match job.state() {
        JobState::Cancelled => {
            if !json {
                out!("job {} cancelled by {}: {}", job.job_id, job.cancelled_by, job.cancel_reason);
            }
            Ok(())
        }
        other => bail!("job {} was not cancelled: it is {}", job.job_id, other.as_str_name()),
    }
}

pub async fn jobs(addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let jobs =
        addrs.train().await?.list_training_jobs(ListTrainingJobsRequest {}).await.map_err(status)?.into_inner().jobs;
    if json {
        return print_json(&render::jobs(&jobs));
    }
    out!("{:<22}{:<6}{:<11}{:<14}{:<28}ERROR", "JOB", "MODEL", "STATE", "STAGE", "RUN");
    for job in &jobs {
        out!(
            "{:<22}{:<6}{:<11}{:<14}{:<28}{}",
            job.job_id,
            job.model_ver,
            job.state().as_str_name().trim_start_matches("JOB_STATE_"),
            stage_name(job.stage()),
            job.run_id,
            job.error
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Only this model version.
    #[arg(long, default_value = "")]
    model_ver: String,
}

pub async fn models(args: ModelsArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let response = addrs
        .train()
        .await?
        .list_models(ListModelsRequest { model_ver: args.model_ver })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        return print_json(&render::models(&response));
    }
    let versions = response.versions;
    for v in &versions {
        out!("model {} (LATEST: {})", v.model_ver, if v.latest_run_id.is_empty() { "none" } else { &v.latest_run_id });
        out!("  {:<30}{:>10}{:>12}{:>10}", "RUN", "eval wmae", "device wmae", "logloss");
        for r in &v.runs {
            let model = r.eval.as_ref().and_then(|e| e.model);
            let device = r.eval.as_ref().and_then(|e| e.device);
            let marker = if r.run_id == v.latest_run_id { " <- LATEST" } else { "" };
            out!(
                "  {:<30}{:>10.5}{:>12.5}{:>10.4}{marker}",
                r.run_id,
                model.map_or(f64::NAN, |m| m.wmae),
                device.map_or(f64::NAN, |m| m.wmae),
                model.map_or(f64::NAN, |m| m.logloss),
            );
        }
    }
    Ok(())
}
