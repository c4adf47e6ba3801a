//! Self-contained HTML reports: every plot an inline SVG (`charts.rs`), no
//! script, stylesheet or image loaded from anywhere, so a report opens the
//! same offline as online.

use std::fmt::Write as _;

use crs_domain::diagnostics::{CalibrationBin, DeviceResiduals};
use crs_domain::lifecycle::{DriftReport, LiveDriftReport};

use crate::lifecycle::trends::{LiveNumbers, TrendPoint};
use crate::registry::catalog::RunEntry;
use crate::registry::events::RunStage;
use crate::registry::runs::{RunMetadata, StageTiming};
use crate::reports::charts::{bar_chart, line_chart};

/// The versions a report states: the service's and its key dependencies'.
pub fn versions(service: &str, service_version: &str) -> Vec<(String, String)> {
    let mut out = vec![(service.to_owned(), service_version.to_owned())];
    for entry in env!("CRS_KEY_DEPENDENCIES").split(", ").filter(|e| !e.is_empty()) {
        if let Some((name, version)) = entry.split_once(' ') {
            out.push((name.to_owned(), version.to_owned()));
        }
    }
    out
}

/// What a run's report shows besides its metadata.
#[derive(Clone, Debug)]
pub struct RunDiagnostics {
    pub stage: RunStage,
    pub calibration: Vec<CalibrationBin>,
    pub gains: Vec<(f64, f64)>,
    pub residuals: Vec<DeviceResiduals>,
    /// Feature and importance, largest first.
    pub importance: Vec<(String, f64)>,
    pub versions: Vec<(String, String)>,
}

pub fn run_report(run: &RunMetadata, diagnostics: &RunDiagnostics) -> String {
    let mut html = page_start(&format!("Model {} run {}", run.model_ver, run.run_id));
    let _ = write!(
        html,
        "<p>Stage <b>{}</b>; trained by {} from {} ({} evaluation); finished {}.</p>",
        diagnostics.stage,
        escape(&run.job_id),
        escape(&run.train_data.key),
        escape(&run.eval_source),
        run.finished_at.to_rfc3339()
    );
    html.push_str("<h2>Evaluation</h2>");
    let e = &run.metrics.eval;
    let rows =
        [("model", &e.model), ("device baseline", &e.device), ("global baseline", &e.global), ("predict 0", &e.zero)];
    table(
        &mut html,
        &["", "wmae", "wmse", "log-loss", "mae"],
        rows.iter().map(|(name, m)| vec![(*name).to_owned(), f(m.wmae), f(m.wmse), f(m.logloss), f(m.mae)]),
    );
    let _ = write!(html, "<p>{} evaluation rows, {:.0} clicks.</p>", e.rows, e.clicks);

    html.push_str("<h2>Calibration</h2>");
    let predicted: Vec<(f64, f64)> = diagnostics.calibration.iter().map(|b| (b.predicted, b.observed)).collect();
    let top = predicted.iter().map(|p| p.0.max(p.1)).fold(0.01, f64::max) * 1.05;
    html.push_str(&line_chart(
        "observed rate by bin of predicted rate (click-weighted)",
        "predicted",
        "observed",
        (0.0, top),
        (0.0, top),
        &[("bins", predicted), ("perfect", vec![(0.0, 0.0), (top, top)])],
    ));

    html.push_str("<h2>Cumulative gains</h2>");
    html.push_str(&line_chart(
        "share of conversions against share of clicks, best predictions first",
        "share of clicks",
        "share of conversions",
        (0.0, 1.0),
        (0.0, 1.0),
        &[("model", diagnostics.gains.clone()), ("random", vec![(0.0, 0.0), (1.0, 1.0)])],
    ));

    html.push_str("<h2>Residuals by device</h2>");
    let labels: Vec<String> = diagnostics.residuals.iter().map(|r| r.device.to_string()).collect();
    let values: Vec<f64> = diagnostics.residuals.iter().map(|r| r.mean_residual).collect();
    html.push_str(&bar_chart("click-weighted mean residual (observed - predicted)", &labels, &values));
    table(
        &mut html,
        &["device", "clicks", "mean residual", "mean |residual|"],
        diagnostics.residuals.iter().map(|r| {
            vec![r.device.to_string(), format!("{:.0}", r.clicks), f(r.mean_residual), f(r.mean_abs_residual)]
        }),
    );

    html.push_str("<h2>Feature importance</h2>");
    if diagnostics.importance.is_empty() {
        html.push_str("<p>This model version reports no feature importance.</p>");
    } else {
        let top: Vec<&(String, f64)> = diagnostics.importance.iter().take(15).collect();
        let labels: Vec<String> = top.iter().map(|(n, _)| n.clone()).collect();
        let values: Vec<f64> = top.iter().map(|(_, v)| *v).collect();
        html.push_str(&bar_chart("importance (the 15 largest)", &labels, &values));
    }

    html.push_str("<h2>Training data profile</h2>");
    table(
        &mut html,
        &["column", "mean", "median", "std", "missing"],
        run.profile.iter().map(|c| vec![c.column.clone(), f(c.mean), f(c.median), f(c.std), f(c.missing_share)]),
    );

    html.push_str("<h2>Stage timings</h2>");
    timings(&mut html, &run.stage_seconds);
    html.push_str("<h2>Hyperparameters</h2><pre>");
    html.push_str(&escape(&serde_json::to_string_pretty(&run.hyperparameters).unwrap_or_default()));
    html.push_str("</pre><h2>Versions</h2>");
    table(&mut html, &["component", "version"], diagnostics.versions.iter().map(|(n, v)| vec![n.clone(), v.clone()]));
    page_end(html)
}

/// What a cycle found: on the new weeks, and on what production served.
#[derive(Clone, Copy, Debug, Default)]
pub struct CycleChecks<'a> {
    pub drift: Option<&'a DriftReport>,
    pub live: Option<&'a LiveDriftReport>,
}

/// A cycle's report from its record.
pub fn cycle_report(
    title: &str,
    decision: &str,
    record: &serde_json::Value,
    checks: CycleChecks<'_>,
    stage_seconds: &[StageTiming],
    trends: &[TrendPoint],
    versions: &[(String, String)],
) -> String {
    let mut html = page_start(title);
    let _ = write!(html, "<p><b>{}</b></p>", escape(decision));
    trend_charts(&mut html, trends);
    html.push_str("<h2>Drift</h2>");
    match checks.drift {
        None => html.push_str("<p>No drift check: nothing new to score the production run on.</p>"),
        Some(d) => {
            let _ = write!(
                html,
                "<p>{} on weeks {:?}: log-loss {} against {} at promotion{}. Inputs compared with {}.</p>",
                if d.drifted { "Drift" } else { "No drift" },
                d.weeks,
                f(d.logloss),
                d.reference_logloss.map_or("unknown".to_owned(), f),
                d.basis.logloss_on.map_or(String::new(), |on| format!(" (scored on {})", on.as_str())),
                escape(if d.basis.inputs.is_empty() { "what it learnt from" } else { &d.basis.inputs })
            );
            for reason in &d.reasons {
                let _ = write!(html, "<p>{}</p>", escape(reason));
            }
            let mut rows = vec![
                vec!["unseen keyword share".to_owned(), f(d.shift.unseen_keyword_share)],
                vec!["device mix PSI".to_owned(), f(d.shift.device_psi)],
            ];
            rows.extend(d.shift.attribute_psi.iter().take(10).map(|a| vec![format!("{} PSI", a.attribute), f(a.psi)]));
            table(&mut html, &["measure", "value"], rows.into_iter());
        }
    }
    live_section(&mut html, checks.live);
    html.push_str("<h2>Stage timings</h2>");
    timings(&mut html, stage_seconds);
    html.push_str("<h2>Record</h2><pre>");
    html.push_str(&escape(&serde_json::to_string_pretty(record).unwrap_or_default()));
    html.push_str("</pre><h2>Versions</h2>");
    table(&mut html, &["component", "version"], versions.iter().map(|(n, v)| vec![n.clone(), v.clone()]));
    page_end(html)
}

/// The live check (`live` in the record): what production served since it
/// was promoted, against what it learnt from, each number beside the
/// thresholds it was judged by.
fn live_section(html: &mut String, live: Option<&LiveDriftReport>) {
    html.push_str("<h2 id=\"live\">Live traffic</h2>");
    let Some(live) = live else {
        return html.push_str("<p>No live check: nothing production served was captured (CAPTURE_SAMPLE).</p>");
    };
    let judged = live.thresholds.as_ref().map(|t| live.rows >= t.min_live_rows);
    let _ = write!(
        html,
        "<p>Live level <b>{}</b> on {} captured rows, compared with {}{}.</p>",
        live.level.as_str(),
        live.rows,
        escape(&live.basis),
        match (judged, &live.thresholds) {
            (Some(false), Some(t)) =>
                format!(" (fewer than min_live_rows {}: the shift is reported, not judged)", t.min_live_rows),
            _ => String::new(),
        }
    );
    for reason in &live.reasons {
        let _ = write!(html, "<p>{}</p>", escape(reason));
    }
    let unknown = || "-".to_owned();
    let (watch, limit) = live.thresholds.as_ref().map_or((unknown(), unknown()), |t| (f(t.watch_psi), f(t.max_psi)));
    let psi_row = |name: String, value: f64| vec![escape(&name), f(value), watch.clone(), limit.clone()];
    let mut rows = vec![
        psi_row("device mix PSI".to_owned(), live.shift.device_psi),
        psi_row("predicted rate PSI".to_owned(), live.prediction_psi),
    ];
    rows.extend(live.shift.attribute_psi.iter().take(10).map(|a| psi_row(format!("{} PSI", a.attribute), a.psi)));
    rows.push(vec![
        "unseen keyword share".to_owned(),
        f(live.shift.unseen_keyword_share),
        unknown(),
        live.thresholds.as_ref().map_or_else(unknown, |t| f(t.max_unseen_keyword_share)),
    ]);
    table(html, &["measure", "live", "watch from", "drift above"], rows.into_iter());
    table(
        html,
        &["device", "learnt from", "live"],
        live.shift.device_mix.iter().map(|d| vec![d.device.to_string(), f(d.reference), f(d.new)]),
    );
    match &live.labelled {
        None => html.push_str("<p>No late labels: no labelled row ingested since the promotion was captured.</p>"),
        Some(l) => {
            let limit = live.thresholds.as_ref().map(|t| t.max_logloss_increase);
            let _ = write!(
                html,
                "<p>Late labels: {} labelled rows ({:.0} clicks) of weeks {:?} joined with production's captured \
                 answers: log-loss {} against {} at promotion{}; calibration {} (predicted over observed \
                 conversions).</p>",
                l.rows,
                l.clicks,
                l.weeks,
                f(l.logloss),
                l.reference_logloss.map_or("unknown".to_owned(), f),
                limit.map_or(String::new(), |m| format!(" (drift above an increase of {m})")),
                f(l.calibration)
            );
        }
    }
}

/// The version's trends across cycles (see `crate::lifecycle::trends`):
/// production's log-loss on the reference set (points on the file as it is
/// now only: a changed file starts a new series), and the input shift found.
pub fn trend_charts(html: &mut String, trends: &[TrendPoint]) {
    let newest = trends.iter().rev().find_map(|p| p.reference.as_ref()).map(|r| r.sha256.clone());
    let on_reference: Vec<(f64, f64, f64)> = trends
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.reference.as_ref().filter(|r| Some(&r.sha256) == newest.as_ref()).map(|r| (i, r)))
        .map(|(i, r)| (i as f64, r.logloss, r.device_baseline_logloss))
        .collect();
    let x = (0.0, (trends.len().max(2) - 1) as f64);
    if !on_reference.is_empty() {
        let (low, high) =
            on_reference.iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1).min(p.2), h.max(p.1).max(p.2)));
        let pad = ((high - low) * 0.1).max(1e-4);
        let production = on_reference.iter().map(|p| (p.0, p.1)).collect();
        let baseline = on_reference.iter().map(|p| (p.0, p.2)).collect();
        html.push_str(&line_chart(
            "production's log-loss on the reference set, per cycle (oldest first)",
            "cycle",
            "log-loss",
            x,
            (low - pad, high + pad),
            &[("production", production), ("device baseline", baseline)],
        ));
    }
    let drift: Vec<(f64, f64, f64)> = trends
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.drift.as_ref().map(|d| (i as f64, d.device_psi, d.max_attribute_psi)))
        .collect();
    if !drift.is_empty() {
        let high = drift.iter().fold(0.0_f64, |h, p| h.max(p.1).max(p.2)).max(0.3);
        html.push_str(&line_chart(
            "input shift found by each cycle's drift check",
            "cycle",
            "PSI",
            x,
            (0.0, high * 1.1),
            &[
                ("device mix PSI", drift.iter().map(|p| (p.0, p.1)).collect()),
                ("largest attribute PSI", drift.iter().map(|p| (p.0, p.2)).collect()),
            ],
        ));
    }
    let live: Vec<(f64, &LiveNumbers)> =
        trends.iter().enumerate().filter_map(|(i, p)| p.live.as_ref().map(|l| (i as f64, l))).collect();
    if !live.is_empty() {
        let high = live.iter().fold(0.0_f64, |h, (_, l)| h.max(l.largest_psi())).max(0.3);
        let series = |psi: fn(&LiveNumbers) -> f64| live.iter().map(|(i, l)| (*i, psi(l))).collect();
        html.push_str(&line_chart(
            "shift of what production served, found by each cycle's live check",
            "cycle",
            "PSI",
            x,
            (0.0, high * 1.1),
            &[
                ("device mix PSI", series(|l| l.device_psi)),
                ("largest attribute PSI", series(|l| l.max_attribute_psi)),
                ("predicted rate PSI", series(|l| l.prediction_psi)),
            ],
        ));
    }
}

/// A cycle as the index lists it.
#[derive(Clone, Debug)]
pub struct CycleEntry {
    pub cycle_id: String,
    pub decision: String,
    /// Its live check, when anything was captured.
    pub live: Option<LiveNumbers>,
}

/// Every run with its stage, the trend of the headline metric, and the
/// version's trends across cycles.
pub fn index(model_ver: &str, runs: &[RunEntry], cycles: &[CycleEntry], trends: &[TrendPoint]) -> String {
    let mut html = page_start(&format!("Model {model_ver}: runs and cycles"));
    trend_charts(&mut html, trends);
    let trend: Vec<(f64, f64)> =
        runs.iter().enumerate().map(|(i, r)| (i as f64, r.metadata.metrics.eval.model.logloss)).collect();
    if !trend.is_empty() {
        let (low, high) = trend.iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
        let pad = ((high - low) * 0.1).max(1e-4);
        html.push_str(&line_chart(
            "evaluation log-loss of each run, oldest first",
            "run",
            "log-loss",
            (0.0, (trend.len().max(2) - 1) as f64),
            (low - pad, high + pad),
            &[("runs", trend)],
        ));
    }
    table(
        &mut html,
        &["run", "stage", "aliases", "eval log-loss", "eval wmae", "trained"],
        runs.iter().rev().map(|r| {
            let m = &r.metadata.metrics.eval.model;
            vec![
                format!("<a href=\"runs/{0}.html\">{0}</a>", r.metadata.run_id),
                r.stage.to_string(),
                r.aliases.join(", "),
                f(m.logloss),
                f(m.wmae),
                r.metadata.finished_at.to_rfc3339(),
            ]
        }),
    );
    html.push_str("<h2>Cycles</h2>");
    table(
        &mut html,
        &["cycle", "live", "largest live PSI", "captured rows", "decision"],
        cycles.iter().map(|c| {
            let live = |cell: fn(&LiveNumbers) -> String| c.live.as_ref().map_or("-".to_owned(), cell);
            vec![
                format!("<a href=\"cycles/{0}.html\">{0}</a>", escape(&c.cycle_id)),
                live(|l| l.level.as_str().to_owned()),
                live(|l| f(l.largest_psi())),
                live(|l| l.rows.to_string()),
                escape(&c.decision),
            ]
        }),
    );
    page_end(html)
}

fn timings(html: &mut String, stages: &[StageTiming]) {
    let labels: Vec<String> = stages.iter().map(|s| s.stage.clone()).collect();
    let values: Vec<f64> = stages.iter().map(|s| s.seconds).collect();
    if !values.is_empty() {
        html.push_str(&bar_chart("seconds per stage", &labels, &values));
    }
}

fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:64em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}pre{{background:#f6f6f6;padding:1em}}\
         </style></head><body><h1>{0}</h1>",
        escape(title)
    )
}

fn page_end(mut html: String) -> String {
    html.push_str("</body></html>\n");
    html
}

/// Cells are trusted HTML (links); callers escape text that comes from data.
fn table(html: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    html.push_str("<table><tr>");
    for h in header {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

fn f(value: f64) -> String {
    format!("{value:.5}")
}

/// `text` with the characters HTML gives a meaning escaped, for text and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
