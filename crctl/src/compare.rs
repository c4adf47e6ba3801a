//! `crctl compare`: a primary model and its shadow, scored side by side on
//! outcomes, from the predictions serve-service recorded in the bucket. It
//! reads the bucket itself rather than asking serve-service: the records are
//! the bucket's, and a comparison should not need the service up nor load it.

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;

use anyhow::Context;
use clap::Args;
use crs_domain::data::{Device, Observations, TrainingTable};
use crs_domain::metrics::{Metrics, score};
use crs_domain::models::ModelVer;
use crs_platform::predictions::shadow::{self, RecordedRow};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The bucket serve-service records into: a folder, file://, s3://bucket/prefix or memory://.
    #[arg(long, env = "BUCKET_URL", default_value = "./bucket")]
    bucket: String,
    /// The primary model version (the one whose answers were served).
    #[arg(long)]
    primary: ModelVer,
    /// The shadow model version (SHADOW_MODELS shadow:primary).
    #[arg(long)]
    shadow: ModelVer,
    /// Bucket key of the outcomes: a labelled file in the training schema (CSV or gzip CSV).
    #[arg(long)]
    outcomes: String,
}

/// One side of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub model_ver: String,
    /// The runs whose predictions were scored.
    pub runs: Vec<String>,
    pub logloss: f64,
    pub wmse: f64,
    pub wmae: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub primary: Side,
    pub shadow: Side,
    /// Keyword × device rows both models predicted and the outcomes have clicks for.
    pub rows: usize,
    pub clicks: f64,
    /// Rows both predicted that the outcomes do not have.
    pub rows_without_outcome: usize,
    /// The lower click-weighted log-loss; `None` on a tie.
    pub winner: Option<String>,
}

/// Scores `primary` and `shadow` on the outcomes at `outcomes`: each model's
/// last recorded prediction of each (entity_id, device) they both predicted.
pub async fn compare(
    bucket: &Bucket,
    primary: ModelVer,
    shadow: ModelVer,
    outcomes: &BucketKey,
) -> anyhow::Result<Comparison> {
    let records = shadow::read_all(bucket, primary).await.context("reading the shadow records")?;
    let bytes = bucket.get(outcomes).await.with_context(|| format!("reading the outcomes {outcomes}"))?;
    let name = outcomes.to_string();
    let observations = tokio::task::spawn_blocking(move || -> anyhow::Result<Observations> {
        Ok(TrainingTable::read(&name, Cursor::new(bytes))?.observations()?)
    })
    .await??;
    join_and_score(&records, primary, shadow, &observations).with_context(|| format!("comparing with {outcomes}"))
}

fn join_and_score(
    records: &[RecordedRow],
    primary: ModelVer,
    shadow: ModelVer,
    outcomes: &Observations,
) -> anyhow::Result<Comparison> {
    type Key = (i64, Device);
    let mut last: [HashMap<Key, f64>; 2] = [HashMap::new(), HashMap::new()];
    let mut runs: [BTreeSet<&str>; 2] = [BTreeSet::new(), BTreeSet::new()];
    for row in records {
        let side = if row.model == primary.name() {
            0
        } else if row.model == shadow.name() {
            1
        } else {
            continue;
        };
        last[side].insert((row.entity_id, row.device), row.cr);
        runs[side].insert(&row.run);
    }
    if last[1].is_empty() {
        anyhow::bail!(
            "no predictions of shadow {shadow} recorded for primary {primary} (is SHADOW_MODELS={shadow}:{primary} set?)"
        );
    }
    let outcome_of: HashMap<Key, usize> =
        (0..outcomes.len()).map(|i| ((outcomes.rows.entity_id[i], outcomes.rows.device[i]), i)).collect();
    let (mut predicted, mut clicks, mut conversions) = ([Vec::new(), Vec::new()], Vec::new(), Vec::new());
    let mut without_outcome = 0;
    // Sorted, so that the sums come out the same on every run.
    let mut both: Vec<(&Key, &f64)> = last[0].iter().filter(|(key, _)| last[1].contains_key(key)).collect();
    both.sort_by_key(|(key, _)| (key.0, key.1.index()));
    for (key, &primary_cr) in both {
        let Some(&i) = outcome_of.get(key) else {
            without_outcome += 1;
            continue;
        };
        predicted[0].push(primary_cr);
        predicted[1].push(last[1][key]);
        clicks.push(outcomes.clicks[i]);
        conversions.push(outcomes.conversions[i]);
    }
    if clicks.is_empty() {
        anyhow::bail!("none of the rows both {primary} and {shadow} predicted has an outcome with clicks");
    }
    let side = |s: usize, model: ModelVer| {
        let Metrics { logloss, wmse, wmae, .. } = score(&predicted[s], &clicks, &conversions);
        Side {
            model_ver: model.to_string(),
            runs: runs[s].iter().map(|r| r.to_string()).collect(),
            logloss,
            wmse,
            wmae,
        }
    };
    let (primary, shadow) = (side(0, primary), side(1, shadow));
    let winner = match primary.logloss.total_cmp(&shadow.logloss) {
        std::cmp::Ordering::Less => Some(primary.model_ver.clone()),
        std::cmp::Ordering::Greater => Some(shadow.model_ver.clone()),
        std::cmp::Ordering::Equal => None,
    };
    Ok(Comparison {
        primary,
        shadow,
        rows: clicks.len(),
        clicks: clicks.iter().sum(),
        rows_without_outcome: without_outcome,
        winner,
    })
}

pub async fn run(args: CompareArgs, json: bool) -> anyhow::Result<()> {
    let bucket = Bucket::open(&args.bucket).context("--bucket")?;
    let outcomes = BucketKey::parse(&args.outcomes).context("--outcomes")?;
    let result = compare(&bucket, args.primary, args.shadow, &outcomes).await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    out!(
        "{} keyword x device rows with outcomes in {} ({} clicks); {} more predicted without an outcome",
        result.rows,
        args.outcomes,
        result.clicks,
        result.rows_without_outcome
    );
    out!("{:<18}{:>10}{:>12}{:>10}  runs", "", "logloss", "wmse", "wmae");
    for (role, side) in [("primary", &result.primary), ("shadow", &result.shadow)] {
        let label = format!("{role} {}", side.model_ver);
        out!("{label:<18}{:>10.5}{:>12.7}{:>10.5}  {}", side.logloss, side.wmse, side.wmae, side.runs.join(" "));
    }
    match &result.winner {
        Some(winner) => out!(
            "winner on click-weighted log-loss: {winner} ({:.5} vs {:.5}, over {} clicks)",
            result.primary.logloss.min(result.shadow.logloss),
            result.primary.logloss.max(result.shadow.logloss),
            result.clicks
        ),
        None => out!("no winner: equal click-weighted log-loss over {} clicks", result.clicks),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crs_domain::data::KeywordRows;

    use super::*;

    fn recorded(model: &str, entity_id: i64, cr: f64) -> RecordedRow {
        RecordedRow {
            time: "2026-12-01T00:00:00Z".into(),
            model: model.into(),
            run: format!("{model}-run"),
            entity_id,
            device: Device::Computer,
            cr,
        }
    }

    #[test]
    fn the_model_closer_to_the_outcomes_wins_on_the_rows_both_predicted() {
        let v = |name| ModelVer::parse(name).unwrap();
        let mut rows = KeywordRows::new(Arc::from(Vec::<String>::new()));
        for entity in [1, 2, 3] {
            rows.push_checked(entity, "Computer", &[]).unwrap();
        }
        // Rates 0.1, 0.5 and 0.2 over 10, 2 and 5 clicks.
        let outcomes = Observations { rows, clicks: vec![10.0, 2.0, 5.0], conversions: vec![1.0, 1.0, 1.0] };
        let records = [
            recorded("v1", 1, 0.9),
            recorded("v0", 1, 0.1),
            // Only the last prediction of a row counts.
            recorded("v1", 1, 0.3),
            recorded("v1", 2, 0.5),
            recorded("v0", 2, 0.5),
            // Without the shadow's: not compared.
            recorded("v1", 3, 0.2),
            // Without an outcome: counted apart.
            recorded("v1", 4, 0.2),
            recorded("v0", 4, 0.2),
        ];
        let result = join_and_score(&records, v("v1"), v("v0"), &outcomes).unwrap();
        assert_eq!((result.rows, result.clicks, result.rows_without_outcome), (2, 12.0, 1));
        assert_eq!(result.winner.as_deref(), Some("v0"));
        assert!(result.shadow.logloss < result.primary.logloss);
        assert!((result.primary.wmae - 10.0 * 0.2 / 12.0).abs() < 1e-12, "{}", result.primary.wmae);
        assert_eq!(result.shadow.wmae, 0.0);
        assert_eq!(result.primary.runs, ["v1-run"]);

        let err = join_and_score(&records[..1], v("v1"), v("v0"), &outcomes).unwrap_err().to_string();
        assert!(err.contains("no predictions of shadow v0"), "{err}");
    }
}
