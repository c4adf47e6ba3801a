//! Retention: what a model version keeps as cycles add runs, reports and
//! records, so that a cycle every few minutes does not fill the bucket.
//!
//! Always kept: every run `production` has ever pointed at (a rollback may
//! need it), the run `LATEST` names, and candidates and drafts (a person
//! decides about those). Archived and rejected runs beyond the newest
//! `keep_runs` are deleted with their reports, in the delete order of
//! `layout.rs`. Cycle records and cycle reports older than `keep_for` go too,
//! except the record of a cycle still running, and so do run folders without
//! metadata (left by a crash while a run was written) older than `keep_for`.
//! Captured traffic has its own age limit, `keep_captures_for`, by whole UTC
//! days (the date folder it was written in), and trend points theirs,
//! `keep_trends_for`, so that trends outlive the cycles they summarise.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use crs_domain::models::ModelVer;
use serde::{Deserialize, Serialize};

use crate::registry::catalog::{Catalog, CatalogError};
use crate::registry::events::RunStage;
use crate::storage::bucket::BucketKey;
use crate::storage::layout::{self, RunId};

/// How much of a version's past to keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Archived and rejected runs kept, newest first.
    pub keep_runs: usize,
    /// How long cycle records and reports are kept.
    pub keep_for: chrono::Duration,
    /// How long captured traffic (`capture/<ver>/`) is kept.
    pub keep_captures_for: chrono::Duration,
    /// How long trend points (`trends/<ver>/`) are kept.
    pub keep_trends_for: chrono::Duration,
}

/// What one sweep deleted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Swept {
    pub runs: Vec<RunId>,
    pub cycles: Vec<RunId>,
    /// Cycle reports deleted (those of the deleted records, and any left without one).
    pub reports: usize,
    /// Folders of runs never completed (no metadata) deleted.
    #[serde(default)]
    pub incomplete: Vec<RunId>,
    /// Records of ended training jobs of the version deleted (train-service sweeps those).
    #[serde(default)]
    pub jobs: usize,
    /// Objects of captured traffic deleted (not written when none, so that records from
    /// before it read and write back unchanged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub captures: usize,
    /// Trend points deleted (not written when none, so that records from
    /// before it read and write back unchanged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trends: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// Deletes what `policy` does not keep of `model_ver`, as of `now`. A crash
/// part way leaves nothing a reader can trip on, and the next sweep finishes.
pub async fn sweep(
    catalog: &Catalog,
    model_ver: ModelVer,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Swept, CatalogError> {
    let mut swept = Swept::default();
    let store = catalog.store();
    let bucket = catalog.bucket();

    let list = catalog.runs(model_ver).await?;
    let history = catalog.history(model_ver).await?;
    let kept: BTreeSet<&RunId> =
        history.alias_history().into_iter().chain(list.latest.iter()).chain(list.production.iter()).collect();
    let expendable: Vec<&RunId> = list
        .runs
        .iter()
        .filter(|r| matches!(r.stage, RunStage::Archived | RunStage::Rejected))
        .map(|r| &r.metadata.run_id)
        .filter(|run| !kept.contains(run))
        .collect();
    // Listings are oldest first: the excess is at the front.
    let excess = expendable.len().saturating_sub(policy.keep_runs);
    for run in &expendable[..excess] {
        store.delete_run(model_ver, run).await?;
        bucket.delete(&layout::run_report(model_ver, run)).await?;
        tracing::info!(%model_ver, run_id = %run, "retention: deleted a run");
        swept.runs.push((*run).clone());
    }

    // Kept "forever" when the age reaches back before the calendar does.
    let cutoff = now.checked_sub_signed(policy.keep_for);
    let listed: BTreeSet<&RunId> = list.runs.iter().map(|r| &r.metadata.run_id).collect();
    for folder in bucket.list_folders(&layout::ModelKey::new(model_ver).prefix()).await? {
        let Ok(run) = RunId::parse(&folder) else { continue };
        // Recent ones may be runs being written now.
        let stale = run.time().zip(cutoff).is_some_and(|(time, cutoff)| time < cutoff);
        let keys = layout::ModelKey::new(model_ver).run(&run);
        if listed.contains(&run) || kept.contains(&run) || !stale || bucket.exists(&keys.metadata()).await? {
            continue;
        }
        // A local folder outlives its objects; only one with objects left is swept.
        if bucket.list(&keys.prefix()).await?.is_empty() {
            continue;
        }
        store.delete_run(model_ver, &run).await?;
        tracing::info!(%model_ver, run_id = %run, "retention: deleted a run that was never completed");
        swept.incomplete.push(run);
    }
    let old = |key: &BucketKey| {
        layout::id_of(key).filter(|id| id.time().zip(cutoff).is_some_and(|(time, cutoff)| time < cutoff))
    };
    let mut running = BTreeSet::new();
    for key in bucket.list(&layout::cycles(model_ver)).await? {
        let Some(id) = old(&key) else { continue };
        let still_running = match bucket.get_if_exists(&key).await? {
            Some(bytes) => {
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|record| record["state"] == "running")
            }
            None => false,
        };
        if still_running {
            running.insert(id);
            continue;
        }
        bucket.delete(&key).await?;
        swept.cycles.push(id);
    }
    // Requests to cancel cycles long over.
    for key in bucket.list(&layout::cycle_cancels(model_ver)).await? {
        if old(&key).is_some_and(|id| !running.contains(&id)) {
            bucket.delete(&key).await?;
        }
    }
    for key in bucket.list(&layout::cycle_reports(model_ver)).await? {
        if old(&key).is_some_and(|id| !running.contains(&id)) {
            bucket.delete(&key).await?;
            swept.reports += 1;
        }
    }
    if !swept.cycles.is_empty() || swept.reports > 0 {
        tracing::info!(%model_ver, cycles = swept.cycles.len(), reports = swept.reports, "retention: deleted old cycles");
    }
    if let Some(cutoff) = now.checked_sub_signed(policy.keep_captures_for) {
        for key in bucket.list(&layout::capture_prefix(model_ver)).await? {
            if layout::record_date(&key).is_some_and(|date| date < cutoff.date_naive()) {
                bucket.delete(&key).await?;
                swept.captures += 1;
            }
        }
        if swept.captures > 0 {
            tracing::info!(%model_ver, objects = swept.captures, "retention: deleted old captured traffic");
        }
    }
    let trends_cutoff = now.checked_sub_signed(policy.keep_trends_for);
    for key in bucket.list(&layout::trends(model_ver)).await? {
        let old = layout::id_of(&key).and_then(|id| id.time()).zip(trends_cutoff).is_some_and(|(t, cutoff)| t < cutoff);
        if old {
            bucket.delete(&key).await?;
            swept.trends += 1;
        }
    }
    Ok(swept)
}
