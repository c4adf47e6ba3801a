//! What the console shows, read from the bucket by the functions the gRPC
//! methods use, as the JSON API's bodies; the pages render the same values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crs_domain::evaluation::Evaluation;
use crs_domain::metrics::Metrics;
use crs_domain::models::ModelVer;
use crs_platform::lifecycle::ingest::{self, LedgerEntry};
use crs_platform::registry::catalog::{Catalog, RunEntry, RunList};
use crs_platform::registry::events::{Event, RunStage};
use crs_platform::registry::runs::{RunMetadata, StageTiming};
use crs_platform::storage::layout::{self, RunId};
use serde::Serialize;

use super::Console;
use crate::cycles::{CycleRecord, CycleState};
use crate::jobs::{Job, JobState};
use crate::reference::reference_set;
use crate::status::ApiError;

/// Rows on a page when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 50;
/// The most rows one page holds.
pub const MAX_PAGE: usize = 500;

/// Which rows of a list a request wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// From the `offset` and `limit` query parameters as sent.
    pub fn parse(offset: Option<&str>, limit: Option<&str>) -> Result<Page, ApiError> {
        let number = |name: &str, text: Option<&str>, default: usize| match text {
            None | Some("") => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .map_err(|_| ApiError::BadRequest(format!("{name} must be a whole number, not {text:?}"))),
        };
        let offset = number("offset", offset, 0)?;
        let limit = number("limit", limit, DEFAULT_PAGE)?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!("limit must be from 1 to {MAX_PAGE}, not {limit}")));
        }
        Ok(Page { offset, limit })
    }
}

/// The scores a table shows for one evaluation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Scores {
    pub logloss: f64,
    pub wmse: f64,
    pub wmae: f64,
}

impl From<&Metrics> for Scores {
    fn from(m: &Metrics) -> Self {
        Scores { logloss: m.logloss, wmse: m.wmse, wmae: m.wmae }
    }
}

/// The baselines' scores beside the model's.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BaselineScores {
    pub zero: Scores,
    pub global: Scores,
    pub device: Scores,
}

impl From<&Evaluation> for BaselineScores {
    fn from(e: &Evaluation) -> Self {
        BaselineScores { zero: (&e.zero).into(), global: (&e.global).into(), device: (&e.device).into() }
    }
}

/// One run as the tables list it.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub stage: RunStage,
    pub aliases: Vec<&'static str>,
    /// Scores on its own evaluation rows.
    pub eval: Scores,
    pub baselines: BaselineScores,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub job_id: String,
    pub labels: BTreeMap<String, String>,
    /// Who or what set its stage, and why.
    pub stage_by: Option<String>,
    pub stage_reason: Option<String>,
}

impl From<&RunEntry> for RunSummary {
    fn from(entry: &RunEntry) -> Self {
        let m = &entry.metadata;
        RunSummary {
            run_id: m.run_id.clone(),
            stage: entry.stage,
            aliases: entry.aliases.clone(),
            eval: (&m.metrics.eval.model).into(),
            baselines: (&m.metrics.eval).into(),
            created_at: m.created_at,
            finished_at: m.finished_at,
            job_id: m.job_id.clone(),
            labels: m.labels.clone(),
            stage_by: entry.stage_event.as_ref().map(|e| e.by.clone()),
            stage_reason: entry.stage_event.as_ref().map(|e| e.reason.clone()),
        }
    }
}

/// The production run and the change that made it so.
#[derive(Clone, Debug, Serialize)]
pub struct Production {
    pub run: RunSummary,
    pub since: Option<DateTime<Utc>>,
    pub by: Option<String>,
    pub reason: Option<String>,
}

/// A cycle in one line.
#[derive(Clone, Debug, Serialize)]
pub struct CycleSummary {
    pub cycle_id: RunId,
    pub state: CycleState,
    pub by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub decision: String,
    pub run_id: Option<RunId>,
    /// Whether its drift check found drift; absent when it checked none.
    pub drifted: Option<bool>,
    pub drift_reasons: Vec<String>,
    pub error: Option<String>,
}

impl From<&CycleRecord> for CycleSummary {
    fn from(c: &CycleRecord) -> Self {
        CycleSummary {
            cycle_id: c.cycle_id.clone(),
            state: c.state,
            by: c.by.clone(),
            started_at: c.started_at,
            finished_at: c.finished_at,
            decision: c.decision.clone(),
            run_id: c.run_id.clone(),
            drifted: c.drift.as_ref().map(|d| d.drifted),
            drift_reasons: c.drift.as_ref().map(|d| d.reasons.clone()).unwrap_or_default(),
            error: c.error.clone(),
        }
    }
}

/// One version on the models page.
#[derive(Clone, Debug, Serialize)]
pub struct ModelOverview {
    pub model_ver: ModelVer,
    pub runs: usize,
    pub production: Option<Production>,
    pub latest: Option<RunSummary>,
    /// Candidates waiting for a person to promote them.
    pub candidates: Vec<RunSummary>,
    pub last_cycle: Option<CycleSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelsBody {
    pub models: Vec<ModelOverview>,
}

pub async fn models(console: &Console) -> Result<ModelsBody, ApiError> {
    // Versions another replica declared since this one started are listed too.
    crs_platform::registry::versions::declare_all(console.catalog.bucket()).await;
    let mut models = Vec::new();
    for model_ver in console.catalog.store().versions().await? {
        let list = console.catalog.runs(model_ver).await?;
        let history = console.catalog.history(model_ver).await?;
        let production = production_of(&list, history.production_event());
        let latest = list.runs.iter().find(|r| Some(&r.metadata.run_id) == list.latest.as_ref());
        let candidates = list.runs.iter().rev().filter(|r| r.stage == RunStage::Candidate).map(RunSummary::from);
        let (_, last) = console.cycles.page(model_ver, 0, 1).await?;
        models.push(ModelOverview {
            model_ver,
            runs: list.runs.len(),
            production,
            latest: latest.map(RunSummary::from),
            candidates: candidates.collect(),
            last_cycle: last.first().map(CycleSummary::from),
        });
    }
    Ok(ModelsBody { models })
}

fn production_of(list: &RunList, event: Option<&Event>) -> Option<Production> {
    let run = list.runs.iter().find(|r| Some(&r.metadata.run_id) == list.production.as_ref())?;
    Some(Production {
        run: run.into(),
        since: event.map(|e| e.at),
        by: event.map(|e| e.by.clone()),
        reason: event.map(|e| e.reason.clone()),
    })
}

/// How a runs table is cut and ordered.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub stage: Option<RunStage>,
    /// `key` (any value) or `key=value`.
    pub label: Option<(String, Option<String>)>,
    pub sort: RunSort,
    pub descending: bool,
}

/// The columns a runs table sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunSort {
    #[default]
    Created,
    Logloss,
    Wmse,
    Wmae,
    Stage,
}

impl RunSort {
    pub const ALL: [RunSort; 5] = [RunSort::Created, RunSort::Logloss, RunSort::Wmse, RunSort::Wmae, RunSort::Stage];

    pub fn name(self) -> &'static str {
        match self {
            RunSort::Created => "created",
            RunSort::Logloss => "logloss",
            RunSort::Wmse => "wmse",
            RunSort::Wmae => "wmae",
            RunSort::Stage => "stage",
        }
    }
}

impl RunFilter {
    /// From the `stage`, `label`, `sort` and `order` query parameters as sent.
    pub fn parse(
        stage: Option<&str>,
        label: Option<&str>,
        sort: Option<&str>,
        order: Option<&str>,
    ) -> Result<RunFilter, ApiError> {
        let stage = match stage.filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some(name.parse::<RunStage>().map_err(|e| ApiError::BadRequest(format!("stage: {e}")))?),
        };
        let label = label.filter(|l| !l.is_empty()).map(|l| match l.split_once('=') {
            Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
            None => (l.to_owned(), None),
        });
        let sort = match sort.filter(|s| !s.is_empty()) {
            None => RunSort::default(),
            Some(name) => RunSort::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
                ApiError::BadRequest(format!("sort must be one of created, logloss, wmse, wmae, stage, not {name:?}"))
            })?,
        };
        let descending = match order.filter(|o| !o.is_empty()) {
            // Newest first unless asked otherwise; scores best (lowest) first.
            None => sort == RunSort::Created,
            Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(ApiError::BadRequest(format!("order must be asc or desc, not {other:?}"))),
        };
        Ok(RunFilter { stage, label, sort, descending })
    }

    fn keeps(&self, entry: &RunEntry) -> bool {
        let stage = self.stage.is_none_or(|stage| entry.stage == stage);
        let label = self.label.as_ref().is_none_or(|(key, value)| match (entry.metadata.labels.get(key), value) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        });
        stage && label
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RunsBody {
    pub model_ver: ModelVer,
    pub production: Option<RunId>,
    pub latest: Option<RunId>,
    /// Runs that pass the filter, over all pages.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub runs: Vec<RunSummary>,
}

pub async fn runs(
    console: &Console,
    model_ver: ModelVer,
    filter: &RunFilter,
    page: Page,
) -> Result<RunsBody, ApiError> {
    Ok(runs_of(&console.catalog.runs(model_ver).await?, filter, page))
}

/// [`runs`] of a listing already read.
pub fn runs_of(list: &RunList, filter: &RunFilter, page: Page) -> RunsBody {
    let model_ver = list.model_ver;
    let mut kept: Vec<&RunEntry> = list.runs.iter().filter(|r| filter.keeps(r)).collect();
    let key = |r: &RunEntry| -> f64 {
        let m = &r.metadata.metrics.eval.model;
        match filter.sort {
            RunSort::Created | RunSort::Stage => 0.0,
            RunSort::Logloss => m.logloss,
            RunSort::Wmse => m.wmse,
            RunSort::Wmae => m.wmae,
        }
    };
    kept.sort_by(|a, b| match filter.sort {
        RunSort::Created => a.metadata.run_id.cmp(&b.metadata.run_id),
        RunSort::Stage => a.stage.cmp(&b.stage).then_with(|| a.metadata.run_id.cmp(&b.metadata.run_id)),
        _ => key(a).total_cmp(&key(b)),
    });
    if filter.descending {
        kept.reverse();
    }
    let total = kept.len();
    let runs = kept.into_iter().skip(page.offset).take(page.limit).map(RunSummary::from).collect();
    RunsBody {
        model_ver,
        production: list.production.clone(),
        latest: list.latest.clone(),
        total,
        offset: page.offset,
        limit: page.limit,
        runs,
    }
}

/// Everything known about one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunBody {
    pub summary: RunSummary,
    /// The stored metadata: lineage (input keys with sha256 and size),
    /// parameters, build, stage timings, feature importance.
    pub metadata: RunMetadata,
    /// Its score on the version's reference set, when it has one.
    pub reference: Option<ReferencePoint>,
    /// Where its HTML report is, when it has one.
    pub report_key: Option<String>,
    /// Its job's record, while the bucket keeps it.
    pub job: Option<Job>,
}

pub async fn run(console: &Console, model_ver: ModelVer, run: &RunId) -> Result<RunBody, ApiError> {
    let list = console.catalog.runs(model_ver).await?;
    let Some(entry) = list.runs.iter().find(|r| &r.metadata.run_id == run) else {
        return Err(ApiError::UnknownRun { model_ver: model_ver.to_string(), run_id: run.to_string() });
    };
    let reference = match reference_set(&console.catalog, model_ver).await {
        Ok(Some(set)) => console.catalog.references().kept(model_ver, &set).await.ok().and_then(|kept| {
            kept.get(run).map(|score| ReferencePoint { run_id: run.clone(), scores: (&score.evaluation.model).into() })
        }),
        _ => None,
    };
    let report = layout::run_report(model_ver, run);
    let report_key = console.catalog.bucket().exists(&report).await?.then(|| report.to_string());
    let job = match console.jobs.get(&entry.metadata.job_id).await {
        Ok(job) => Some(job),
        Err(ApiError::UnknownJob(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(RunBody { summary: entry.into(), metadata: entry.metadata.clone(), reference, report_key, job })
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryBody {
    pub model_ver: ModelVer,
    pub production: Option<RunId>,
    /// Newest first.
    pub events: Vec<Event>,
}

pub async fn history(console: &Console, model_ver: ModelVer) -> Result<HistoryBody, ApiError> {
    let history = console.catalog.history(model_ver).await?;
    let production = history.production().cloned();
    Ok(HistoryBody { model_ver, production, events: history.events().iter().rev().cloned().collect() })
}

#[derive(Clone, Debug, Serialize)]
pub struct CyclesBody {
    pub model_ver: ModelVer,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// Newest first.
    pub cycles: Vec<CycleSummary>,
}

pub async fn cycles(console: &Console, model_ver: ModelVer, page: Page) -> Result<CyclesBody, ApiError> {
    let (total, records) = console.cycles.page(model_ver, page.offset, page.limit).await?;
    let cycles = records.iter().map(CycleSummary::from).collect();
    Ok(CyclesBody { model_ver, total, offset: page.offset, limit: page.limit, cycles })
}

/// One point of the version's chart.
#[derive(Clone, Debug, Serialize)]
pub struct ReferencePoint {
    pub run_id: RunId,
    pub scores: Scores,
}

/// The metrics across runs, on one footing when the version has a reference set.
#[derive(Clone, Debug, Serialize)]
pub struct ChartBody {
    pub model_ver: ModelVer,
    /// `reference_key` of the version's `lifecycle.yaml`, when it names one.
    pub reference_key: Option<String>,
    /// Whether the points were scored on the same rows and so compare.
    pub comparable: bool,
    /// What the points are, in words.
    pub note: String,
    /// Oldest run first.
    pub points: Vec<ReferencePoint>,
}

/// The newest runs a chart plots: enough to see a trend, few enough to draw fast.
pub const CHART_RUNS: usize = 200;

pub async fn chart(console: &Console, model_ver: ModelVer) -> Result<ChartBody, ApiError> {
    chart_of(console, &console.catalog.runs(model_ver).await?).await
}

/// [`chart`] of a listing already read.
pub async fn chart_of(console: &Console, list: &RunList) -> Result<ChartBody, ApiError> {
    let model_ver = list.model_ver;
    let newest = &list.runs[list.runs.len().saturating_sub(CHART_RUNS)..];
    let Some(set) =
        reference_set(&console.catalog, model_ver).await.map_err(|e| ApiError::Precondition(e.to_string()))?
    else {
        let points = newest
            .iter()
            .map(|r| ReferencePoint {
                run_id: r.metadata.run_id.clone(),
                scores: (&r.metadata.metrics.eval.model).into(),
            })
            .collect();
        return Ok(ChartBody {
            model_ver,
            reference_key: None,
            comparable: false,
            note: format!(
                "each run scored on its own evaluation rows: the points do not compare. Set reference_key in \
                 config/{model_ver}/lifecycle.yaml to score every run on one labelled file"
            ),
            points,
        });
    };
    let kept =
        console.catalog.references().kept(model_ver, &set).await.map_err(|e| ApiError::Precondition(e.to_string()))?;
    let points: Vec<ReferencePoint> = newest
        .iter()
        .filter_map(|r| {
            let score = kept.get(&r.metadata.run_id)?;
            Some(ReferencePoint { run_id: r.metadata.run_id.clone(), scores: (&score.evaluation.model).into() })
        })
        .collect();
    let missing = newest.len() - points.len();
    let mut note = format!(
        "every run scored on the reference set {} (sha256 {})",
        set.key,
        &set.sha256[..12.min(set.sha256.len())]
    );
    if missing > 0 {
        note.push_str(&format!("; {missing} run(s) not scored on it yet (the next cycle scores them)"));
    }
    Ok(ChartBody { model_ver, reference_key: Some(set.key.to_string()), comparable: true, note, points })
}

/// The production run's summary statistics and diagnostics.
#[derive(Clone, Debug, Serialize)]
pub struct ProductionBody {
    pub model_ver: ModelVer,
    pub production: Production,
    /// Per input column: mean, median, std, missing share, of its training data.
    pub profile: Vec<crs_domain::data::ColumnProfile>,
    pub stage_seconds: Vec<StageTiming>,
    /// The service and key dependencies that built it.
    pub service: crs_platform::registry::runs::ServiceRecord,
    /// The newest cycle's drift check, if one checked.
    pub drift: Option<crs_domain::lifecycle::DriftReport>,
    pub drift_cycle: Option<RunId>,
    pub evaluation: Evaluation,
}

pub async fn production(console: &Console, model_ver: ModelVer) -> Result<ProductionBody, ApiError> {
    let list = console.catalog.runs(model_ver).await?;
    let history = console.catalog.history(model_ver).await?;
    let production = production_of(&list, history.production_event())
        .ok_or_else(|| ApiError::Precondition(format!("model {model_ver} has no production run")))?;
    let entry = list.runs.iter().find(|r| r.metadata.run_id == production.run.run_id).expect("found above");
    // The newest cycle that checked drift, looking back a page at most.
    let (_, recent) = console.cycles.page(model_ver, 0, DEFAULT_PAGE).await?;
    let checked = recent.iter().find(|c| c.drift.is_some());
    let m = &entry.metadata;
    Ok(ProductionBody {
        model_ver,
        profile: m.profile.clone(),
        stage_seconds: m.stage_seconds.clone(),
        service: m.service.clone(),
        drift: checked.and_then(|c| c.drift.clone()),
        drift_cycle: checked.map(|c| c.cycle_id.clone()),
        evaluation: m.metrics.eval.clone(),
        production,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct JobsBody {
    pub queued: Vec<Job>,
    pub running: Vec<Job>,
    /// Newest first, at most a page.
    pub ended: Vec<Job>,
    pub ended_total: usize,
    pub offset: usize,
    pub limit: usize,
}

pub async fn jobs(console: &Console, page: Page) -> Result<JobsBody, ApiError> {
    let mut all = console.jobs.list().await?;
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
    let (mut queued, mut running, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for job in all {
        match job.state {
            JobState::Queued => queued.push(job),
            JobState::Running => running.push(job),
            _ => ended.push(job),
        }
    }
    let ended_total = ended.len();
    let ended = ended.into_iter().skip(page.offset).take(page.limit).collect();
    Ok(JobsBody { queued, running, ended, ended_total, offset: page.offset, limit: page.limit })
}

#[derive(Clone, Debug, Serialize)]
pub struct LedgerBody {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// Newest first.
    pub entries: Vec<LedgerEntry>,
}

pub async fn ledger(catalog: &Catalog, page: Page) -> Result<LedgerBody, ApiError> {
    let mut entries = ingest::ledger(catalog.bucket()).await?;
    entries.reverse();
    let total = entries.len();
    let entries = entries.into_iter().skip(page.offset).take(page.limit).collect();
    Ok(LedgerBody { total, offset: page.offset, limit: page.limit, entries })
}
