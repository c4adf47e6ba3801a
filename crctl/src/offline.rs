//! Commands that work on files directly, without the services.

use anyhow::Context;
use clap::Args;
use crs_domain::data::HOLDOUT_FRACTION;
use crs_domain::evaluation::{Evaluation, train_and_evaluate};
use crs_domain::models::{ModelVer, REGISTRY};
use crs_platform::lifecycle::inputs::{InputKeys, Inputs};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout::{INCOMING_PREFIX, TRAIN_KEY};
use crs_platform::storage::sample_data::{SampleSizes, write_sample_data, write_weekly};
use serde_json::json;

#[derive(Debug, Args)]
pub struct GenDataArgs {
    /// Bucket to write into: a folder, file://, s3://bucket/prefix or memory://.
    #[arg(long, env = "BUCKET_URL", default_value = "./bucket")]
    bucket: String,
    /// Keywords in the training file.
    #[arg(long, default_value_t = SampleSizes::default().train_keywords)]
    train_keywords: usize,
    /// Keywords in the evaluation file.
    #[arg(long, default_value_t = SampleSizes::default().eval_keywords)]
    eval_keywords: usize,
    /// Keywords in the prediction-input file.
    #[arg(long, default_value_t = SampleSizes::default().predict_keywords)]
    predict_keywords: usize,
    /// Seed of the generator; the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do nothing when the bucket already has training data.
    #[arg(long)]
    if_missing: bool,
    /// Instead of the default files, write this many weekly training files
    /// (week1.csv.gz, ...) under the incoming prefix, for the lifecycle.
    #[arg(long)]
    weeks: Option<u32>,
    /// With --weeks: the true rate drifts from this week on.
    #[arg(long, requires = "weeks")]
    drift_from: Option<u32>,
    /// With --weeks: where the weekly files go.
    #[arg(long, env = "INCOMING_PREFIX", default_value = INCOMING_PREFIX)]
    incoming_prefix: String,
}

pub async fn gen_data(args: GenDataArgs) -> anyhow::Result<()> {
    let bucket = Bucket::open(&args.bucket)?;
    if let Some(weeks) = args.weeks {
        let prefix = BucketKey::parse(&args.incoming_prefix)?;
        let keywords = args.train_keywords;
        for file in write_weekly(&bucket, &prefix, keywords, weeks, args.drift_from, args.seed).await? {
            out!("wrote {} ({} rows, {} bytes)", file.key, file.rows, file.bytes);
        }
        return Ok(());
    }
    let train_key = BucketKey::parse(TRAIN_KEY)?;
    if args.if_missing && bucket.exists(&train_key).await? {
        out!("{train_key} exists in {}; not generating data", args.bucket);
        return Ok(());
    }
    let sizes = SampleSizes {
        train_keywords: args.train_keywords,
        eval_keywords: args.eval_keywords,
        predict_keywords: args.predict_keywords,
    };
    for file in write_sample_data(&bucket, sizes, args.seed).await? {
        out!("wrote {} ({} rows, {} bytes)", file.key, file.rows, file.bytes);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Training data: a local path or a bucket URL (s3://bucket/key, file://...).
    #[arg(long)]
    train: String,
    /// Evaluation data; without it, 20% of the training keywords are held out.
    #[arg(long)]
    eval: Option<String>,
    /// Model version to train.
    #[arg(long, env = "MODEL_VER", default_value = "v1")]
    model_ver: ModelVer,
    /// Hyperparameter YAML; without it, the version's defaults.
    #[arg(long)]
    config: Option<String>,
}

async fn fetch(location: &str) -> anyhow::Result<(BucketKey, bytes::Bytes)> {
    let (bucket, key) = Bucket::open_file(location)?;
    let bytes = bucket.get(&key).await.with_context(|| format!("reading {location}"))?;
    Ok((key, bytes))
}

pub async fn evaluate(args: EvaluateArgs, json: bool) -> anyhow::Result<()> {
    let model_ver = args.model_ver;
    let (train_key, train) = fetch(&args.train).await?;
    let (eval_key, eval) = match &args.eval {
        Some(location) => fetch(location).await.map(|(k, b)| (Some(k), Some(b)))?,
        None => (None, None),
    };
    let (config_key, config) = match &args.config {
        Some(location) => fetch(location).await.map(|(k, b)| (Some(k), Some(b)))?,
        None => (None, None),
    };
    let inputs = Inputs { keys: InputKeys::new(model_ver, train_key, eval_key, config_key), train, eval, config };
    let (params, _) = inputs.params(model_ver)?;
    let run = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let prepared = inputs.prepare()?;
        let data = &prepared.data;
        let run = train_and_evaluate(model_ver, &params, &data.train, &data.eval, |_| {})?;
        Ok((prepared, run, params))
    })
    .await??;
    let (prepared, run, params) = run;
    let version = model_ver.version();

    let metrics = |e: &Evaluation| json!({"model": e.model, "zero": e.zero, "global": e.global, "device": e.device});
    if json {
        let report = json!({
            "model_ver": version.name(),
            "params": params,
            "eval_source": prepared.data.eval_source.as_str(),
            "rows": {
                "train": run.train.rows,
                "eval": run.eval.rows,
                "train_file": prepared.train_record.rows,
                "eval_file": prepared.eval_record.as_ref().and_then(|r| r.rows.clone()),
            },
            "metrics": metrics(&run.eval),
            "train_metrics": metrics(&run.train),
            "seconds": run.seconds.iter().map(|(stage, s)| (format!("{stage:?}").to_lowercase(), *s)).collect::<std::collections::BTreeMap<_, _>>(),
            // What the version records about its fit (v2: its search).
            "fit_report": run.report,
            "feature_importance": run.model.importance(),
        });
        out!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }

    let counts = prepared.data.train_counts;
    out!("model {} ({})", version.name(), version.summary());
    out!("params {params}");
    out!(
        "train {}: {} rows read, {} duplicates dropped, {} conversions clipped, {} zero-click rows dropped, {} observations",
        args.train,
        counts.read,
        counts.duplicates_dropped,
        counts.conversions_clipped,
        counts.zero_clicks_dropped,
        counts.observations
    );
    match &args.eval {
        Some(path) => out!("eval  {path}: {} observations", run.eval.rows),
        None => out!(
            "eval  holdout of {:.0}% of the training keywords: {} observations ({} left to train on)",
            HOLDOUT_FRACTION * 100.0,
            run.eval.rows,
            run.train.rows
        ),
    }
    out!();
    out!("{:<18}{:>10}{:>10}{:>10}{:>10}", "eval rows", "wmae", "wmse", "logloss", "mae");
    let e = &run.eval;
    for (name, m) in
        [("model", e.model), ("baseline: device", e.device), ("baseline: global", e.global), ("baseline: zero", e.zero)]
    {
        out!("{name:<18}{:>10.5}{:>10.5}{:>10.4}{:>10.5}", m.wmae, m.wmse, m.logloss, m.mae);
    }
    out!();
    if let Some(chosen) = run.report.get("chosen") {
        out!("search chose {chosen}, {} trees", run.report["trees"]);
    }
    let importance = run.model.importance();
    if !importance.is_empty() {
        out!("feature importance, top {}:", importance.len().min(10));
        for (feature, value) in importance.iter().take(10) {
            out!("  {feature:<20}{value:>12.6}");
        }
        out!();
    }
    for (stage, seconds) in &run.seconds {
        out!("{stage:?}: {seconds:.2} s");
    }
    Ok(())
}

/// Prints the registered model versions.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The bucket whose config/<ver>/model.yaml declare imported versions: a folder, file://, s3://bucket/prefix or memory://.
    #[arg(long, env = "BUCKET_URL", default_value = "./bucket")]
    bucket: String,
}

/// The versions this build trains, then those the bucket declares for
/// imports (with their framework, or why a declaration declares nothing).
pub async fn versions(args: VersionsArgs, json: bool) -> anyhow::Result<()> {
    let bucket = Bucket::open(&args.bucket).with_context(|| format!("bucket {}", args.bucket))?;
    let declared = crs_platform::registry::versions::declared(&bucket).await?;
    let mut rows: Vec<serde_json::Value> =
        REGISTRY.iter().map(|v| json!({"name": v.name(), "framework": "built-in", "summary": v.summary()})).collect();
    for d in &declared {
        rows.push(match &d.version {
            Ok((_, declaration)) => json!({"name": d.name, "framework": declaration.framework.as_str(),
                "summary": "imported: model files trained elsewhere, converted into the platform's forest"}),
            Err(e) => json!({"name": d.name, "framework": "invalid", "summary": e.to_string()}),
        });
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&json!({ "versions": rows }))?);
    } else {
        for row in &rows {
            out!(
                "{}\t{}\t{}",
                row["name"].as_str().unwrap_or(""),
                row["framework"].as_str().unwrap_or(""),
                row["summary"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}
