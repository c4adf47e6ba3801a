//! Writing the HTML reports of runs and cycles, and the index beside them.
//! Reports are best effort: a run or a cycle that did its work is never
//! failed by its report.

use crs_domain::data::Observations;
use crs_domain::diagnostics::{calibration, cumulative_gains, residuals_by_device};
use crs_domain::lifecycle::LiveDriftReport;
use crs_domain::models::{ModelVer, TrainedModel};
use crs_platform::failpoint::FailStep;
use crs_platform::lifecycle::trends::{self, TrendPoint};
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::events::RunStage;
use crs_platform::registry::runs::{RunMetadata, StageTiming};
use crs_platform::reports::pages::{self, CycleChecks, CycleEntry, RunDiagnostics};
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::{self, RunId};

use crate::config::SERVICE_NAME;

fn versions() -> Vec<(String, String)> {
    pages::versions(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
}

/// The run's report, then the version's index.
pub async fn run(
    catalog: &Catalog,
    metadata: &RunMetadata,
    model: &TrainedModel,
    eval: &Observations,
    stage: RunStage,
) {
    let predicted = match model.predict(&eval.rows) {
        Ok(predicted) => predicted,
        Err(e) => {
            return tracing::warn!(run_id = %metadata.run_id, error = %e, "no report: cannot predict the evaluation rows");
        }
    };
    let diagnostics = RunDiagnostics {
        stage,
        calibration: calibration(&predicted, eval, 10),
        gains: cumulative_gains(&predicted, eval, 20),
        residuals: residuals_by_device(&predicted, eval),
        importance: model.importance(),
        versions: versions(),
    };
    let html = pages::run_report(metadata, &diagnostics);
    put(catalog, &layout::run_report(metadata.model_ver, &metadata.run_id), html).await;
    index(catalog, metadata.model_ver).await;
}

/// What a cycle's report shows.
#[derive(Debug)]
pub struct CycleSummary<'a> {
    pub model_ver: ModelVer,
    pub cycle_id: &'a RunId,
    pub decision: &'a str,
    /// The whole record, shown as it is stored.
    pub record: serde_json::Value,
    pub checks: CycleChecks<'a>,
    pub timings: &'a [StageTiming],
}

/// The cycle's report and the version's index; returns the report's key.
pub async fn cycle(catalog: &Catalog, cycle: CycleSummary<'_>) -> Option<BucketKey> {
    let key = layout::cycle_report(cycle.model_ver, cycle.cycle_id);
    let title = format!("Model {} cycle {}", cycle.model_ver, cycle.cycle_id);
    let trends = trend_series(catalog, cycle.model_ver).await;
    let html =
        pages::cycle_report(&title, cycle.decision, &cycle.record, cycle.checks, cycle.timings, &trends, &versions());
    let written = put(catalog, &key, html).await;
    catalog.fail_point().check(FailStep::CycleReportWritten);
    index(catalog, cycle.model_ver).await;
    written.then_some(key)
}

async fn index(catalog: &Catalog, model_ver: ModelVer) {
    let runs = match catalog.runs(model_ver).await {
        Ok(list) => list.runs,
        Err(e) => return tracing::warn!(error = %e, "no report index: cannot list the runs"),
    };
    let mut cycles = Vec::new();
    let bucket = catalog.bucket();
    if let Ok(keys) = bucket.list(&layout::cycles(model_ver)).await {
        // A record that cannot be read is left out of the list, not the whole list.
        for bytes in bucket.get_each_if_exists(&keys).await.into_iter().filter_map(|read| read.ok().flatten()) {
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            let field = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
            // Records are read loosely here: one in an older form still lists.
            let live = serde_json::from_value::<LiveDriftReport>(record["live"].clone()).ok();
            cycles.push(CycleEntry {
                cycle_id: field("cycle_id"),
                decision: field("decision"),
                live: live.as_ref().map(Into::into),
            });
        }
    }
    cycles.reverse();
    let trends = trend_series(catalog, model_ver).await;
    put(catalog, &layout::report_index(model_ver), pages::index(model_ver.name(), &runs, &cycles, &trends)).await;
}

/// How many of the newest trend points the charts plot: a year of daily
/// cycles. `crctl monitor` reads them all.
pub(crate) const CHARTED_TREND_POINTS: usize = 366;

/// The version's newest [`CHARTED_TREND_POINTS`] trend points, or none
/// (logged) when they cannot be read.
pub(crate) async fn trend_series(catalog: &Catalog, model_ver: ModelVer) -> Vec<TrendPoint> {
    trends::newest(catalog.bucket(), model_ver, CHARTED_TREND_POINTS)
        .await
        .inspect_err(|e| tracing::warn!(%model_ver, error = %e, "reports without trends: cannot read them"))
        .unwrap_or_default()
}

async fn put(catalog: &Catalog, key: &BucketKey, html: String) -> bool {
    match catalog.bucket().put(key, html).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%key, error = %e, "could not write a report");
            false
        }
    }
}
