//! The console's pages: HTML rendered on the server from the API's views, so
//! reading works without JavaScript. Action forms are in the page but hidden;
//! `console.js` shows them and sends them to the API with the token.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use crs_platform::registry::events::{Change, Event, RunStage};
use crs_platform::reports::charts::{bar_chart, line_chart};
use crs_platform::reports::pages::escape;
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout;

use super::api::{model_ver, page, run_filter, run_id};
use super::views::{self, CycleSummary, Page, RunFilter, RunSort, RunSummary, Scores};
use super::{Console, Failure};
use crate::cycles::CycleRecord;
use crate::jobs::Job;
use crate::status::ApiError;

type Answer = Result<Response, PageFailure>;
type Params = Query<HashMap<String, String>>;

/// A failure shown as a page, with the API's status.
#[derive(Debug)]
pub(super) struct PageFailure(Failure);

impl<E: Into<ApiError>> From<E> for PageFailure {
    fn from(e: E) -> Self {
        PageFailure(Failure(e.into()))
    }
}

impl IntoResponse for PageFailure {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = format!("<p class=\"error\">{}</p><p><a href=\"/\">Models</a></p>", escape(&self.0.0.to_string()));
        (status, Html(document(&format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")), &body)))
            .into_response()
    }
}

fn html(title: &str, body: &str) -> Answer {
    Ok(Html(document(title, body)).into_response())
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · crs console</title><link rel=\"stylesheet\" href=\"/static/console.css\">\
         <script src=\"/static/console.js\" defer></script></head><body>\
         <nav><a href=\"/\">Models</a> <a href=\"/jobs\">Jobs</a> <a href=\"/ledger\">Ingestion ledger</a>\
         <span id=\"token-box\" hidden><label>Token <input id=\"token\" type=\"password\" autocomplete=\"off\"></label></span>\
         </nav><main><h1>{title}</h1>{body}</main>\
         <p id=\"action-status\" role=\"status\" aria-live=\"polite\"></p></body></html>",
        title = escape(title)
    )
}

fn num(value: f64) -> String {
    format!("{value:.5}")
}

fn when(at: &DateTime<Utc>) -> String {
    format!("<time datetime=\"{0}\">{1}</time>", at.to_rfc3339(), at.format("%Y-%m-%d %H:%M:%S UTC"))
}

fn age(at: &DateTime<Utc>) -> String {
    let seconds = (Utc::now() - *at).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("<span class=\"label\">{}={}</span>", escape(k), escape(v))).collect()
}

fn run_link(model_ver: impl std::fmt::Display, run: impl std::fmt::Display) -> String {
    format!("<a href=\"/models/{model_ver}/runs/{run}\" class=\"run-id\">{run}</a>")
}

fn cycle_link(model_ver: impl std::fmt::Display, cycle: impl std::fmt::Display) -> String {
    format!("<a href=\"/models/{model_ver}/cycles/{cycle}\">{cycle}</a>")
}

fn scores_cells(s: &Scores) -> String {
    format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
        num(s.logloss),
        num(s.wmse),
        num(s.wmae)
    )
}

/// Links to the previous and next page, keeping the other parameters.
fn pager(out: &mut String, base: &str, params: &HashMap<String, String>, page: Page, total: usize) {
    let link = |offset: usize, text: &str| {
        let mut query: Vec<(String, String)> =
            params.iter().filter(|(k, _)| k.as_str() != "offset").map(|(k, v)| (k.clone(), v.clone())).collect();
        query.push(("offset".into(), offset.to_string()));
        query.sort();
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", url(k), url(v))).collect();
        format!("<a href=\"{base}?{}\">{text}</a>", escape(&query.join("&")))
    };
    let last = (page.offset + page.limit).min(total);
    let _ = write!(out, "<p class=\"pager\">{}–{last} of {total} ", if total == 0 { 0 } else { page.offset + 1 });
    if page.offset > 0 {
        out.push_str(&link(page.offset.saturating_sub(page.limit), "‹ newer"));
    }
    if last < total {
        out.push(' ');
        out.push_str(&link(last, "older ›"));
    }
    out.push_str("</p>");
}

/// Percent-encodes a query component.
fn url(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn models(State(console): State<Console>) -> Answer {
    let body = views::models(&console).await?;
    let mut out = String::new();
    if body.models.is_empty() {
        let _ = write!(
            out,
            "<p>No model version has runs in this bucket yet. Train one with <code>crctl train</code> \
             (model {} unless it names another).</p>",
            console.default_model_ver
        );
    }
    out.push_str(
        "<table id=\"models\"><thead><tr><th>version</th><th>production</th><th>log-loss</th><th>wmse</th><th>wmae</th>\
         <th>since</th><th>promoted by</th><th>why</th><th>latest</th><th>waiting for a person</th><th>last cycle</th>\
         <th>drift</th><th>runs</th></tr></thead><tbody>",
    );
    for m in &body.models {
        let ver = m.model_ver;
        let _ = write!(out, "<tr data-model=\"{ver}\"><td><a href=\"/models/{ver}\">{ver}</a></td>");
        match &m.production {
            Some(p) => {
                let _ = write!(
                    out,
                    "<td class=\"production\">{}</td>{}<td>{}</td><td>{}</td><td>{}</td>",
                    run_link(ver, &p.run.run_id),
                    scores_cells(&p.run.eval),
                    p.since.map(|at| format!("{} ago", age(&at))).unwrap_or_default(),
                    escape(p.by.as_deref().unwrap_or("")),
                    escape(p.reason.as_deref().unwrap_or(""))
                );
            }
            None => out.push_str("<td colspan=\"7\">no production run</td>"),
        }
        let latest = m.latest.as_ref().map(|r| run_link(ver, &r.run_id)).unwrap_or_default();
        let candidates: Vec<String> = m.candidates.iter().map(|r| run_link(ver, &r.run_id)).collect();
        let (cycle, drift) = match &m.last_cycle {
            Some(c) => (format!("{} {}", cycle_link(ver, &c.cycle_id), c.state.as_str()), drift_verdict(c)),
            None => ("none".to_owned(), String::new()),
        };
        let _ = write!(
            out,
            "<td>{latest}</td><td>{}</td><td>{cycle}</td><td>{drift}</td><td class=\"num\">{}</td></tr>",
            candidates.join(" "),
            m.runs
        );
    }
    out.push_str("</tbody></table>");
    html("Models", &out)
}

fn drift_verdict(c: &CycleSummary) -> String {
    match c.drifted {
        Some(true) => format!("<span class=\"drift\">drift</span>: {}", escape(&c.drift_reasons.join("; "))),
        Some(false) => "no drift".to_owned(),
        None => "not checked".to_owned(),
    }
}

pub(super) async fn version(State(console): State<Console>, Path(ver): Path<String>, Query(params): Params) -> Answer {
    let model_ver = model_ver(&console, &ver).await?;
    let (filter, page_of_runs) = (run_filter(&params)?, page(&params)?);
    // One listing for the table and the chart: it is most of the page's cost.
    let list = console.catalog.runs(model_ver).await?;
    let runs = views::runs_of(&list, &filter, page_of_runs);
    let chart = views::chart_of(&console, &list).await?;
    let history = views::history(&console, model_ver).await?;
    let cycle_page = Page { offset: 0, limit: 20 };
    let cycles = views::cycles(&console, model_ver, cycle_page).await?;
    let mut out = String::new();
    let production = runs.production.as_ref().map(|r| run_link(model_ver, r)).unwrap_or_else(|| "none".into());
    let _ = write!(out, "<p>Production: <strong id=\"production\">{production}</strong>");
    if let Some(latest) = &runs.latest {
        let _ = write!(out, " · latest: {}", run_link(model_ver, latest));
    }
    out.push_str("</p>");
    let _ = write!(
        out,
        "<section class=\"actions\" hidden><form data-action=\"rollback\" data-model=\"{model_ver}\">\
         <label>Who <input name=\"by\" required></label> <label>Why <input name=\"reason\" required></label> \
         <button type=\"submit\">Roll back production</button></form>\
         <form data-action=\"cycle\" data-model=\"{model_ver}\"><label>Who <input name=\"by\"></label> \
         <button type=\"submit\">Start a cycle</button></form></section>"
    );

    out.push_str("<h2>Metrics across runs</h2>");
    chart_svg(&mut out, &chart);

    // The same charts as the report index: points that outlive the cycles' retention.
    let trends = crate::reports::trend_series(&console.catalog, model_ver).await;
    let _ = write!(
        out,
        "<h2 id=\"trends\">Trends across cycles</h2><p class=\"note\">The newest {} cycles with a trend point \
         (at most {}), oldest first.</p>",
        trends.len(),
        crate::reports::CHARTED_TREND_POINTS
    );
    crs_platform::reports::pages::trend_charts(&mut out, &trends);

    out.push_str("<h2>Runs</h2>");
    filter_form(&mut out, &filter, &params);
    let sort_link = |sort: RunSort, text: &str| {
        let desc = filter.sort == sort && !filter.descending;
        let mut query = vec![format!("sort={}", sort.name()), format!("order={}", if desc { "desc" } else { "asc" })];
        if let Some(stage) = filter.stage {
            query.push(format!("stage={stage}"));
        }
        if let Some(label) = params.get("label").filter(|l| !l.is_empty()) {
            query.push(format!("label={}", url(label)));
        }
        let arrow = match (filter.sort == sort, filter.descending) {
            (true, true) => " ↓",
            (true, false) => " ↑",
            _ => "",
        };
        format!("<a href=\"?{}\">{text}{arrow}</a>", escape(&query.join("&")))
    };
    let _ = write!(
        out,
        "<table id=\"runs\"><thead><tr><th>{}</th><th>{}</th><th>aliases</th><th>{}</th><th>{}</th><th>{}</th>\
         <th>global log-loss</th><th>device log-loss</th><th>job</th><th>labels</th><th></th></tr></thead><tbody>",
        sort_link(RunSort::Created, "run (created)"),
        sort_link(RunSort::Stage, "stage"),
        sort_link(RunSort::Logloss, "log-loss"),
        sort_link(RunSort::Wmse, "wmse"),
        sort_link(RunSort::Wmae, "wmae"),
    );
    for r in &runs.runs {
        run_row(&mut out, model_ver, r);
    }
    out.push_str("</tbody></table>");
    pager(&mut out, &format!("/models/{model_ver}"), &params, page_of_runs, runs.total);

    out.push_str("<h2>Production history</h2><ol id=\"history\" class=\"timeline\">");
    for event in &history.events {
        history_item(&mut out, model_ver, event);
    }
    out.push_str("</ol>");

    out.push_str("<h2>Cycles</h2>");
    cycles_table(&mut out, model_ver, &cycles.cycles);
    if cycles.total > cycles.cycles.len() {
        let _ = write!(out, "<p>The newest {} of {} cycles.</p>", cycles.cycles.len(), cycles.total);
    }
    html(&format!("Model {model_ver}"), &out)
}

fn chart_svg(out: &mut String, chart: &views::ChartBody) {
    let _ = write!(
        out,
        "<p class=\"{}\" id=\"chart-note\">{}</p>",
        if chart.comparable { "note" } else { "note warning" },
        escape(&chart.note)
    );
    if chart.points.is_empty() {
        return;
    }
    let series = |pick: fn(&Scores) -> f64| -> Vec<(f64, f64)> {
        chart.points.iter().enumerate().map(|(i, p)| (i as f64, pick(&p.scores))).collect()
    };
    let logloss = series(|s| s.logloss);
    let (low, high) = logloss.iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let pad = ((high - low) * 0.1).max(1e-4);
    let caption = if chart.comparable {
        "log-loss on the reference set, oldest run first"
    } else {
        "log-loss on each run's own rows (not comparable)"
    };
    out.push_str("<figure id=\"chart\">");
    out.push_str(&line_chart(
        caption,
        "run",
        "log-loss",
        (0.0, (logloss.len().max(2) - 1) as f64),
        (low - pad, high + pad),
        &[("log-loss", logloss)],
    ));
    let _ = write!(
        out,
        "<figcaption>{} run(s): {} … {}</figcaption></figure>",
        chart.points.len(),
        chart.points.first().map(|p| p.run_id.to_string()).unwrap_or_default(),
        chart.points.last().map(|p| p.run_id.to_string()).unwrap_or_default()
    );
}

fn filter_form(out: &mut String, filter: &RunFilter, params: &HashMap<String, String>) {
    out.push_str(
        "<form method=\"get\" class=\"filter\"><label>Stage <select name=\"stage\"><option value=\"\">any</option>",
    );
    for stage in [RunStage::Draft, RunStage::Candidate, RunStage::Production, RunStage::Archived, RunStage::Rejected] {
        let selected = if filter.stage == Some(stage) { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{stage}</option>");
    }
    let label = params.get("label").map(String::as_str).unwrap_or("");
    let _ = write!(
        out,
        "</select></label> <label>Label <input name=\"label\" placeholder=\"key or key=value\" value=\"{}\"></label> \
         <input type=\"hidden\" name=\"sort\" value=\"{}\"><input type=\"hidden\" name=\"order\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>",
        escape(label),
        filter.sort.name(),
        if filter.descending { "desc" } else { "asc" }
    );
}

fn run_row(out: &mut String, model_ver: crs_domain::models::ModelVer, r: &RunSummary) {
    let promote = if r.stage == RunStage::Production {
        String::new()
    } else {
        format!(
            "<form data-action=\"promote\" data-model=\"{model_ver}\" data-run=\"{}\" class=\"inline\" hidden>\
             <input name=\"by\" placeholder=\"who\" required> <input name=\"reason\" placeholder=\"why\" required> \
             <button type=\"submit\">Promote</button></form>",
            r.run_id
        )
    };
    let _ = write!(
        out,
        "<tr data-run=\"{id}\" data-stage=\"{stage}\"><td>{link}<br><small>{created}</small></td><td class=\"stage {stage}\">{stage}</td>\
         <td>{aliases}</td>{scores}<td class=\"num\">{global}</td><td class=\"num\">{device}</td><td>{job}</td><td>{labels}</td><td>{promote}</td></tr>",
        id = r.run_id,
        link = run_link(model_ver, &r.run_id),
        created = when(&r.created_at),
        stage = r.stage,
        aliases = r.aliases.join(", "),
        scores = scores_cells(&r.eval),
        global = num(r.baselines.global.logloss),
        device = num(r.baselines.device.logloss),
        job = escape(&r.job_id),
        labels = labels(&r.labels),
    );
}

fn history_item(out: &mut String, model_ver: crs_domain::models::ModelVer, event: &Event) {
    let what = match &event.change {
        Change::Promote { run_id, previous } => format!(
            "production → {}{}",
            run_link(model_ver, run_id),
            previous.as_ref().map(|p| format!(" (was {})", run_link(model_ver, p))).unwrap_or_default()
        ),
        Change::Rollback { run_id, demoted } => {
            format!("rolled back to {} (from {})", run_link(model_ver, run_id), run_link(model_ver, demoted))
        }
        Change::Stage { run_id, stage } => format!("{} is {stage}", run_link(model_ver, run_id)),
    };
    let numbers = event
        .numbers
        .as_ref()
        .map(|n| {
            format!(
                "<br><small>log-loss {} · margin {}{}</small>",
                num(n.logloss),
                num(n.margin),
                n.champion.as_ref().map(|c| format!(" · champion {c}")).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let _ = write!(
        out,
        "<li data-seq=\"{}\">{} <strong>{what}</strong> by <em>{}</em>: {}{numbers}</li>",
        event.seq,
        when(&event.at),
        escape(&event.by),
        escape(&event.reason)
    );
}

fn cycles_table(out: &mut String, model_ver: crs_domain::models::ModelVer, cycles: &[CycleSummary]) {
    out.push_str(
        "<table id=\"cycles\"><thead><tr><th>cycle</th><th>state</th><th>by</th><th>run</th><th>drift</th><th>decision</th></tr></thead><tbody>",
    );
    for c in cycles {
        let _ = write!(
            out,
            "<tr data-cycle=\"{id}\"><td>{link}</td><td>{state}</td><td>{by}</td><td>{run}</td><td>{drift}</td><td>{decision}</td></tr>",
            id = c.cycle_id,
            link = cycle_link(model_ver, &c.cycle_id),
            state = c.state.as_str(),
            by = escape(&c.by),
            run = c.run_id.as_ref().map(|r| run_link(model_ver, r)).unwrap_or_default(),
            drift = drift_verdict(c),
            decision = escape(c.error.as_deref().unwrap_or(&c.decision)),
        );
    }
    out.push_str("</tbody></table>");
}

pub(super) async fn run(State(console): State<Console>, Path((ver, run)): Path<(String, String)>) -> Answer {
    let (model_ver, run) = (model_ver(&console, &ver).await?, run_id(&run)?);
    let body = views::run(&console, model_ver, &run).await?;
    let (s, m) = (&body.summary, &body.metadata);
    let mut out = String::new();
    let _ = write!(
        out,
        "<p>Stage <strong id=\"stage\" class=\"stage {stage}\">{stage}</strong>{aliases} · job {job} · trained {finished}</p>",
        stage = s.stage,
        aliases = if s.aliases.is_empty() { String::new() } else { format!(" · aliases {}", s.aliases.join(", ")) },
        job = escape(&s.job_id),
        finished = when(&s.finished_at),
    );
    if let Some(report) = &body.report_key {
        let _ = write!(
            out,
            "<p><a href=\"/models/{model_ver}/runs/{run}/report\">Its report</a> <small>({})</small></p>",
            escape(report)
        );
    }
    out.push_str("<h2>Scores</h2><table id=\"scores\"><thead><tr><th></th><th>log-loss</th><th>wmse</th><th>wmae</th></tr></thead><tbody>");
    let _ = write!(out, "<tr><th>model</th>{}</tr>", scores_cells(&s.eval));
    for (name, scores) in
        [("zero", &s.baselines.zero), ("global", &s.baselines.global), ("device", &s.baselines.device)]
    {
        let _ = write!(out, "<tr><th>{name} baseline</th>{}</tr>", scores_cells(scores));
    }
    if let Some(reference) = &body.reference {
        let _ = write!(out, "<tr><th>model on the reference set</th>{}</tr>", scores_cells(&reference.scores));
    }
    out.push_str("</tbody></table>");

    out.push_str("<h2>Lineage</h2><table id=\"lineage\"><thead><tr><th>input</th><th>key</th><th>sha256</th><th>bytes</th></tr></thead><tbody>");
    let inputs = [
        ("config", Some(&m.config)),
        ("training data", Some(&m.train_data)),
        ("evaluation data", m.eval_data.as_ref()),
    ];
    for (name, record) in inputs {
        let Some(record) = record else { continue };
        let _ = write!(
            out,
            "<tr><th>{name}</th><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td></tr>",
            escape(&record.key),
            escape(record.sha256.as_deref().unwrap_or("")),
            record.size_bytes.map(|b| b.to_string()).unwrap_or_default()
        );
    }
    let _ = write!(
        out,
        "</tbody></table><p>Evaluated on: {}. Built by {} {}. Labels: {}</p><h3>Parameters</h3><pre>{}</pre>",
        escape(&m.eval_source),
        escape(&m.service.name),
        escape(&m.service.version),
        labels(&m.labels),
        escape(&serde_json::to_string_pretty(&m.hyperparameters).unwrap_or_default())
    );

    out.push_str("<h2>Job</h2>");
    if !m.stage_seconds.is_empty() {
        let names: Vec<String> = m.stage_seconds.iter().map(|t| t.stage.clone()).collect();
        let seconds: Vec<f64> = m.stage_seconds.iter().map(|t| t.seconds).collect();
        out.push_str(&bar_chart("seconds per stage", &names, &seconds));
        out.push_str("<table id=\"timings\"><thead><tr><th>stage</th><th>seconds</th></tr></thead><tbody>");
        for t in &m.stage_seconds {
            let _ = write!(out, "<tr><td>{}</td><td class=\"num\">{:.3}</td></tr>", escape(&t.stage), t.seconds);
        }
        out.push_str("</tbody></table>");
    }
    match &body.job {
        Some(job) => job_log(&mut out, job),
        None => out.push_str("<p>The job's record is no longer kept.</p>"),
    }

    out.push_str("<h2>Feature importance</h2>");
    if m.feature_importance.is_empty() {
        out.push_str("<p>This model version records no feature importance.</p>");
    } else {
        out.push_str("<table id=\"importance\"><thead><tr><th>feature</th><th>importance</th></tr></thead><tbody>");
        for f in &m.feature_importance {
            let _ = write!(out, "<tr><td>{}</td><td class=\"num\">{}</td></tr>", escape(&f.feature), num(f.importance));
        }
        out.push_str("</tbody></table>");
    }
    html(&format!("Model {model_ver} run {run}"), &out)
}

/// A job's record as a log of what happened to it.
fn job_log(out: &mut String, job: &Job) {
    let mut lines = vec![format!("{} queued by {}", job.created_at.to_rfc3339(), job.by)];
    if let Some(at) = job.started_at {
        lines.push(format!("{} started", at.to_rfc3339()));
    }
    if let Some(phase) = job.phase {
        lines.push(format!("last stage reached: {phase:?}"));
    }
    if let Some(at) = job.finished_at {
        lines.push(format!("{} ended {}", at.to_rfc3339(), job.state.as_str()));
    }
    if let Some(error) = &job.error {
        lines.push(format!("error: {error}"));
    }
    if let Some(c) = &job.cancelled {
        lines.push(format!("cancelled by {}: {}", c.by, c.reason));
    }
    if let Some(gate) = &job.gate {
        lines.push(format!("gate: {}", serde_json::to_string(gate).unwrap_or_default()));
    }
    let _ = write!(out, "<pre id=\"job-log\">{}</pre>", escape(&lines.join("\n")));
}

/// The stored HTML report itself, as the bucket has it.
async fn report(console: &Console, key: BucketKey) -> Answer {
    let bytes = console.catalog.bucket().get_if_exists(&key).await?;
    let Some(bytes) = bytes else {
        return Err(ApiError::MissingObject { what: "report", key: key.to_string() }.into());
    };
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], bytes).into_response())
}

pub(super) async fn run_report(State(console): State<Console>, Path((ver, run)): Path<(String, String)>) -> Answer {
    report(&console, layout::run_report(model_ver(&console, &ver).await?, &run_id(&run)?)).await
}

pub(super) async fn cycle_report(State(console): State<Console>, Path((ver, cycle)): Path<(String, String)>) -> Answer {
    report(&console, layout::cycle_report(model_ver(&console, &ver).await?, &run_id(&cycle)?)).await
}

pub(super) async fn cycle(State(console): State<Console>, Path((ver, cycle)): Path<(String, String)>) -> Answer {
    let (model_ver, cycle) = (model_ver(&console, &ver).await?, run_id(&cycle)?);
    let c: CycleRecord = console.cycles.get(model_ver, &cycle).await?;
    let mut out = String::new();
    let _ = write!(
        out,
        "<p>State <strong id=\"cycle-state\">{}</strong> (step {}) · started by {} {}{}</p><p id=\"decision\">{}</p>",
        c.state.as_str(),
        c.step,
        escape(&c.by),
        when(&c.started_at),
        c.finished_at.map(|at| format!(" · ended {}", when(&at))).unwrap_or_default(),
        escape(&c.decision)
    );
    if let Some(error) = &c.error {
        let _ = write!(out, "<p class=\"error\">{}</p>", escape(error));
    }
    if let Some(run) = &c.run_id {
        let _ = write!(out, "<p>Trained {}</p>", run_link(model_ver, run));
    }
    if let Some(run) = &c.production_run_id {
        let _ = write!(out, "<p>Production when it ended: {}</p>", run_link(model_ver, run));
    }
    if c.report_key.is_some() {
        let _ = write!(out, "<p><a href=\"/models/{model_ver}/cycles/{cycle}/report\">Its report</a></p>");
    }
    out.push_str("<h2>Ingested</h2>");
    ledger_table(&mut out, &c.ingested);
    if let Some(d) = &c.drift {
        let _ = write!(
            out,
            "<h2>Drift</h2><p id=\"drift\">{}: weeks {:?}, log-loss {} against {} at promotion{}</p><pre>{}</pre>",
            if d.drifted { "drift" } else { "no drift" },
            d.weeks,
            num(d.logloss),
            d.reference_logloss.map(num).unwrap_or_else(|| "none".into()),
            if d.reasons.is_empty() { String::new() } else { format!(" ({})", escape(&d.reasons.join("; "))) },
            escape(&serde_json::to_string_pretty(&d.shift).unwrap_or_default())
        );
    }
    if let Some(gate) = &c.gate {
        let _ =
            write!(out, "<h2>Gate</h2><pre>{}</pre>", escape(&serde_json::to_string_pretty(gate).unwrap_or_default()));
    }
    if !c.timings.is_empty() {
        out.push_str(
            "<h2>Steps</h2><table id=\"timings\"><thead><tr><th>step</th><th>seconds</th></tr></thead><tbody>",
        );
        for t in &c.timings {
            let _ = write!(out, "<tr><td>{}</td><td class=\"num\">{:.3}</td></tr>", escape(&t.stage), t.seconds);
        }
        out.push_str("</tbody></table>");
    }
    html(&format!("Model {model_ver} cycle {cycle}"), &out)
}

pub(super) async fn jobs(State(console): State<Console>, Query(params): Params) -> Answer {
    let page = page(&params)?;
    let body = views::jobs(&console, page).await?;
    let mut out = String::new();
    for (title, id, jobs, live) in [
        ("Queued", "queued", &body.queued, true),
        ("Running", "running", &body.running, true),
        ("Ended", "ended", &body.ended, false),
    ] {
        let _ = write!(out, "<h2>{title}</h2>");
        jobs_table(&mut out, id, jobs, live);
    }
    pager(&mut out, "/jobs", &params, page, body.ended_total);
    html("Jobs", &out)
}

fn jobs_table(out: &mut String, id: &str, jobs: &[Job], live: bool) {
    let _ = write!(
        out,
        "<table id=\"jobs-{id}\"{}><thead><tr><th>job</th><th>model</th><th>state</th><th>stage</th><th>progress</th>\
         <th>by</th><th>created</th><th>run</th><th>error</th><th></th></tr></thead><tbody>",
        if live { " data-live" } else { "" }
    );
    for job in jobs {
        let cancel = if job.state.is_terminal() {
            String::new()
        } else {
            format!(
                "<form data-action=\"cancel\" data-job=\"{}\" class=\"inline\" hidden><input name=\"by\" placeholder=\"who\" required> \
                 <input name=\"reason\" placeholder=\"why\" required> <button type=\"submit\">Cancel</button></form>",
                escape(&job.id)
            )
        };
        let _ = write!(
            out,
            "<tr data-job=\"{id}\"><td>{id}</td><td>{ver}</td><td class=\"state\">{state}</td><td class=\"phase\">{phase}</td>\
             <td><progress max=\"1\" value=\"{progress}\">{percent:.0}%</progress></td><td>{by}</td><td>{created}</td><td>{run}</td><td>{error}</td><td>{cancel}</td></tr>",
            id = escape(&job.id),
            ver = job.model_ver,
            state = job.state.as_str(),
            phase = job.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
            progress = job.progress,
            percent = job.progress * 100.0,
            by = escape(&job.by),
            created = when(&job.created_at),
            run = job.run_id.as_ref().map(|r| run_link(job.model_ver, r)).unwrap_or_default(),
            error = escape(job.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>");
}

pub(super) async fn ledger(State(console): State<Console>, Query(params): Params) -> Answer {
    let page = page(&params)?;
    let body = views::ledger(&console.catalog, page).await?;
    let mut out = String::new();
    ledger_table(&mut out, &body.entries);
    pager(&mut out, "/ledger", &params, page, body.total);
    html("Ingestion ledger", &out)
}

fn ledger_table(out: &mut String, entries: &[crs_platform::lifecycle::ingest::LedgerEntry]) {
    out.push_str(
        "<table id=\"ledger\"><thead><tr><th>#</th><th>file</th><th>outcome</th><th>read</th><th>used</th><th>duplicate</th>\
         <th>conflict</th><th>weeks</th><th>at</th><th>row</th><th>column</th><th>message</th></tr></thead><tbody>",
    );
    for e in entries {
        // Entries from before rejections had fields show their text only.
        let (row, column, message) = match &e.rejection {
            Some(r) => (
                r.row.map(|r| r.to_string()).unwrap_or_default(),
                r.column.clone().unwrap_or_default(),
                r.problem.clone(),
            ),
            None => (String::new(), String::new(), e.message.clone().unwrap_or_default()),
        };
        let outcome =
            serde_json::to_value(e.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let _ = write!(
            out,
            "<tr data-seq=\"{seq}\" class=\"{outcome}\"><td>{seq}</td><td>{key}</td><td>{outcome}</td><td class=\"num\">{read}</td>\
             <td class=\"num\">{used}</td><td class=\"num\">{dup}</td><td class=\"num\">{conflict}</td><td>{weeks:?}</td><td>{at}</td>\
             <td class=\"num row\">{row}</td><td class=\"column\">{column}</td><td class=\"message\">{message}</td></tr>",
            seq = e.seq,
            key = escape(&e.key),
            read = e.rows.read,
            used = e.rows.used,
            dup = e.rows.duplicate,
            conflict = e.rows.conflict,
            weeks = e.weeks,
            at = when(&e.at),
            row = row,
            column = escape(&column),
            message = escape(&message),
        );
    }
    out.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_encoded() {
        assert_eq!(url("team=a b&c"), "team%3Da%20b%26c");
        assert_eq!(url("v1.x_~"), "v1.x_~");
    }

    #[test]
    fn data_in_a_page_is_escaped() {
        let page = document("<script>", "");
        assert!(page.contains("<h1>&lt;script&gt;</h1>"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
    }
}
