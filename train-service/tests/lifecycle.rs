//! The lifecycle end to end, with both services on the shared stack: weekly
//! files arrive, cycles ingest them, check drift, retrain, gate and promote,
//! and serve-service follows the production alias without a failed request.

use std::time::Duration;

use crs_domain::data::synth::{SynthSpec, write_week};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, PredictBatchRequest, PredictRequest};
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{
    Cycle, CycleState, JobState, ListCyclesRequest, ListModelsRequest, ModelVersionRuns, RollbackRequest,
    RunCycleRequest, StartTrainingRequest,
};
use crs_testkit::{Backend, Running, Setup, Stack, predict_request, train_to_end, wait_for_cycle, wait_until_serving};
use tonic::transport::Channel;

const SPEC: SynthSpec = SynthSpec { first_entity: 1, keywords: 400, attributes: 20, seed: 9 };

/// Drift only triggers a retrain; after a drift the challenger learns from the newest week only.
const LIFECYCLE: &str = "retrain: drift\ntrain_weeks: 1\nholdout_weeks: 1\n";

fn week(week: i64, drifted: bool) -> Vec<u8> {
    let mut csv = Vec::new();
    write_week(&SPEC, week, drifted, &mut csv).expect("in-memory write");
    csv
}

async fn cycle(client: &mut TrainServiceClient<Channel>) -> Cycle {
    let started = client.run_cycle(RunCycleRequest { model_ver: "v1".into() }).await.expect("run cycle").into_inner();
    let cycle = wait_for_cycle(client, started, Duration::from_secs(120)).await;
    assert_eq!(cycle.state(), CycleState::Succeeded, "{cycle:?}");
    println!("cycle {}: {}", cycle.cycle_id, cycle.decision);
    cycle
}

async fn runs(client: &mut TrainServiceClient<Channel>) -> ModelVersionRuns {
    let request = ListModelsRequest { model_ver: "v1".into() };
    client.list_models(request).await.expect("list").into_inner().versions.remove(0)
}

/// Waits until serve-service answers with `run`, at most a few poll intervals.
async fn serving(serve: &mut ServeServiceClient<Channel>, run: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while serve.get_model(GetModelRequest::default()).await.map(|m| m.into_inner().run_id).ok().as_deref() != Some(run)
    {
        assert!(tokio::time::Instant::now() < deadline, "serve-service did not follow production to {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_drift_retrain_promote_and_roll_back() {
    ingest_drift_retrain_promote_and_roll_back_on(Backend::Local).await;
}

/// The same on S3: leases, history events and LATEST through conditional writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_drift_retrain_promote_and_roll_back_on_s3() {
    ingest_drift_retrain_promote_and_roll_back_on(Backend::S3).await;
}

async fn ingest_drift_retrain_promote_and_roll_back_on(backend: Backend) {
    let Some(stack) = Stack::on(backend, Setup::default()).await else { return };
    stack.put("config/v1/lifecycle.yaml", LIFECYCLE).await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();

    // Weeks 1-4: the first cycle trains the first production run.
    for w in 1..=4 {
        stack.put(&format!("data/incoming/week{w}.csv"), week(w, false)).await;
    }
    let first = cycle(&mut client).await;
    assert_eq!(first.run_id, first.production_run_id, "the first run becomes production: {first:?}");
    let champion = first.run_id.clone();
    for key in [first.report_key.clone(), format!("reports/v1/runs/{champion}.html"), "reports/v1/index.html".into()] {
        let html = String::from_utf8(stack.get(&key).await.unwrap_or_else(|| panic!("{key} written"))).unwrap();
        assert_self_contained(&key, &html);
    }

    let serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut serve_client = serve.client.clone();
    serving(&mut serve_client, &champion).await;
    let mut request: PredictRequest = predict_request(&week(4, false));
    request.rows.truncate(20);

    // Requests keep flowing through everything that follows; none may fail.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let looping = tokio::spawn({
        let mut client = serve.client.clone();
        let request = request.clone();
        async move {
            let (mut answered, mut failures) = (0u64, Vec::new());
            while !*stopped.borrow_and_update() {
                match client.predict(request.clone()).await {
                    Ok(_) => answered += 1,
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (answered, failures)
        }
    });

    // Week 5, same distribution: ingested, no drift, no retrain.
    stack.put("data/incoming/week5.csv", week(5, false)).await;
    let steady = cycle(&mut client).await;
    assert!(steady.decision.contains("no drift"), "{steady:?}");
    assert_eq!((steady.run_id.as_str(), steady.production_run_id.as_str()), ("", champion.as_str()));
    let record: serde_json::Value = serde_json::from_slice(&stack.get(&steady.record_key).await.unwrap()).unwrap();
    assert_eq!(record["drift"]["drifted"], false, "{record:#}");
    assert_eq!(
        record["retention"]["runs"],
        serde_json::json!([]),
        "a cycle sweeps, and keeps every run here: {record:#}"
    );
    assert!(record["drift"]["logloss"].as_f64().is_some() && record["drift"]["reference_logloss"].as_f64().is_some());

    // Weeks 6 and 7 drifted: drift found, a challenger trained on week 6 and
    // judged on week 7 beats the champion and is promoted.
    stack.put("data/incoming/week6.csv", week(6, true)).await;
    stack.put("data/incoming/week7.csv", week(7, true)).await;
    let drifted = cycle(&mut client).await;
    let record: serde_json::Value = serde_json::from_slice(&stack.get(&drifted.record_key).await.unwrap()).unwrap();
    assert_eq!(record["drift"]["drifted"], true, "{record:#}");
    assert!(!drifted.run_id.is_empty() && drifted.production_run_id == drifted.run_id, "{drifted:?}");
    let challenger = drifted.run_id.clone();
    serving(&mut serve_client, &challenger).await;

    // The same week-6 file under another name adds nothing; a malformed file
    // is rejected with its row and column, and nothing else changes.
    stack.put("data/incoming/again/week6-copy.csv", week(6, true)).await;
    let broken = String::from_utf8(week(8, false)).unwrap().replacen("Computer", "Fridge", 1);
    stack.put("data/incoming/week8-broken.csv", broken).await;
    let runs_before = runs(&mut client).await;
    let quiet = cycle(&mut client).await;
    let record: serde_json::Value = serde_json::from_slice(&stack.get(&quiet.record_key).await.unwrap()).unwrap();
    let ingested = record["ingested"].as_array().expect("ingested files");
    let copy = ingested.iter().find(|e| e["key"] == "data/incoming/again/week6-copy.csv").expect("copy in ledger");
    assert_eq!((copy["outcome"].as_str(), copy["rows"]["used"].as_u64()), (Some("same_content"), Some(0)));
    let bad = ingested.iter().find(|e| e["key"] == "data/incoming/week8-broken.csv").expect("bad file in ledger");
    assert_eq!(bad["outcome"], "rejected");
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.contains("data/incoming/week8-broken.csv: row ") && message.contains("column 'device'"),
        "{message}"
    );
    // Nothing new, and the decision and the webhook name the rejected file.
    assert!(quiet.decision.starts_with("no new data: rejected data/incoming/week8-broken.csv: row "), "{quiet:?}");
    let body = cycle_webhook(&stack, &quiet).await;
    assert!(field(&body, "Rejected files").contains("week8-broken.csv: row "), "{body:#}");
    let runs_after = runs(&mut client).await;
    assert_eq!(runs_after.runs.len(), runs_before.runs.len());
    assert_eq!(runs_after.production_run_id, challenger);

    // Rollback: production goes back to the champion, serve-service follows.
    let rolled =
        client.rollback(RollbackRequest { model_ver: "v1".into(), reason: "test".into(), ..Default::default() }).await;
    let rolled = rolled.expect("rollback").into_inner();
    assert_eq!(rolled.production_run_id, champion);
    let stage = |runs: &ModelVersionRuns, id: &str| runs.runs.iter().find(|r| r.run_id == id).unwrap().stage.clone();
    assert_eq!(stage(&rolled, &challenger), "archived");
    assert_eq!(stage(&rolled, &champion), "production");
    serving(&mut serve_client, &champion).await;

    stop.send(true).expect("stop the loop");
    let (answered, failures) = looping.await.expect("request loop");
    assert!(failures.is_empty(), "requests failed while production moved: {failures:?}");
    assert!(answered > 20, "only {answered} requests answered");
}

/// Every plot an inline SVG, and nothing loaded from anywhere.
fn assert_self_contained(key: &str, html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{key}");
    assert!(html.matches("<svg").count() >= 1, "{key} has no inline plot");
    for loads in ["<script", "<link", "<img", "<iframe", "src=", "url(", "@import"] {
        assert!(!html.contains(loads), "{key} loads something: {loads}");
    }
    // The SVG namespace is a name, not a download; nothing else may point outside.
    let outside = html.replace("http://www.w3.org/2000/svg", "").replace("http://www.w3.org/1999/xlink", "");
    assert!(!outside.contains("http://") && !outside.contains("https://"), "{key} links outside");
}

/// The webhook a cycle posted when it ended, with its text and fields checked.
async fn cycle_webhook(stack: &Stack, cycle: &Cycle) -> serde_json::Value {
    let head = format!("Cycle {} of model v1: {}", cycle.cycle_id, cycle.decision);
    let body = stack.webhooks().wait_for(Duration::from_secs(10), |b| b["text"] == head.as_str()).await;
    let body = body.unwrap_or_else(|| panic!("no webhook {head:?}; got {:?}", stack.webhooks().texts()));
    let production = if cycle.production_run_id.is_empty() { "none" } else { &cycle.production_run_id };
    assert_eq!(field(&body, "Production"), production, "{body:#}");
    assert!(field(&body, "Ingested files").parse::<usize>().is_ok(), "{body:#}");
    body
}

/// The value of a webhook's field named `title` ("" if absent).
fn field(body: &serde_json::Value, title: &str) -> String {
    let fields = body["attachments"][0]["fields"].as_array().cloned().unwrap_or_default();
    fields.iter().find(|f| f["title"] == title).and_then(|f| f["value"].as_str()).unwrap_or_default().to_owned()
}

async fn record(stack: &Stack, cycle: &Cycle) -> serde_json::Value {
    serde_json::from_slice(&stack.get(&cycle.record_key).await.expect("cycle record")).expect("record JSON")
}

/// One weekly file in an empty bucket: the first cycle holds out keywords (as
/// `crctl train` does), says so, and promotes; a file that is only rejected is
/// named; the next week is judged by week, and its drift check says that
/// production's score at promotion was on held-out keywords.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_cycle_promotes_from_one_week() {
    let stack = Stack::new().await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();

    stack.put("data/incoming/week1.csv", week(1, false)).await;
    let first = cycle(&mut client).await;
    assert!(!first.run_id.is_empty() && first.run_id == first.production_run_id, "{first:?}");
    assert!(first.decision.starts_with("first run from 1 week(s), fewer than holdout_weeks + 1 = 2"), "{first:?}");
    assert!(first.decision.contains("production: first production run"), "{first:?}");
    let stored = record(&stack, &first).await;
    assert_eq!(stored["split"], "keywords", "{stored:#}");
    assert!(stored["gate"].as_str().unwrap().starts_with("production: first production run"), "{stored:#}");
    let index = String::from_utf8(stack.get("reports/v1/index.html").await.expect("index")).unwrap();
    assert!(index.contains("first run from 1 week(s)"), "the index shows the cycle's decision");
    let report = String::from_utf8(stack.get(&first.report_key).await.expect("report")).unwrap();
    assert!(report.contains("first run from 1 week(s)"), "the report says how the run was judged");
    cycle_webhook(&stack, &first).await;

    let broken = String::from_utf8(week(2, false)).unwrap().replacen("Computer", "Fridge", 1);
    stack.put("data/incoming/week2-broken.csv", broken).await;
    let rejected = cycle(&mut client).await;
    assert!(
        rejected.decision.starts_with("no new data: rejected data/incoming/week2-broken.csv: row "),
        "{rejected:?}"
    );
    assert!(rejected.decision.contains("column 'device'"), "{rejected:?}");
    let body = cycle_webhook(&stack, &rejected).await;
    assert!(field(&body, "Rejected files").starts_with("rejected data/incoming/week2-broken.csv: row "), "{body:#}");

    stack.put("data/incoming/week2.csv", week(2, false)).await;
    let second = cycle(&mut client).await;
    let stored = record(&stack, &second).await;
    assert_eq!(stored["split"], "weeks", "{stored:#}");
    assert_eq!(stored["drift"]["weeks"], serde_json::json!([2]), "{stored:#}");
    assert_eq!(stored["drift"]["basis"]["logloss_on"], "holdout", "{stored:#}");
    let inputs = stored["drift"]["basis"]["inputs"].as_str().unwrap();
    assert_eq!(inputs, "weeks [1] of the ingested rows, which it was trained on");
    let shift = &stored["drift"]["shift"];
    assert!(shift["device_psi"].as_f64().unwrap() < 0.1, "{stored:#}");
    assert!(shift["unseen_keyword_share"].as_f64().unwrap() < 0.1, "{stored:#}");
}

/// Production trained by `crctl train` on a file: the first cycle compares
/// the new weeks with that file, not with ingested weeks it never had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_against_a_run_trained_on_a_file_reads_that_file() {
    let stack = Stack::new().await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    stack.put("data/manual/week1.csv", week(1, false)).await;
    let request = StartTrainingRequest { train_key: "data/manual/week1.csv".into(), ..Default::default() };
    let job = train_to_end(&mut client, request).await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");

    stack.put("data/incoming/week2.csv", week(2, false)).await;
    let next = cycle(&mut client).await;
    assert_eq!(
        next.decision,
        "kept production: 1 week(s) ingested, and a challenger needs holdout_weeks + 1 = 2 to be judged against it"
    );
    let stored = record(&stack, &next).await;
    let drift = &stored["drift"];
    assert_eq!(drift["basis"]["inputs"], "the file it was trained on, data/manual/week1.csv", "{stored:#}");
    // Against an empty reference, as before, every keyword was unseen and the PSI near 8.
    assert!(drift["shift"]["unseen_keyword_share"].as_f64().unwrap() < 0.1, "{stored:#}");
    assert!(drift["shift"]["device_psi"].as_f64().unwrap() < 0.1, "{stored:#}");
}

/// `CYCLE_INTERVAL_SECS`: cycles of the versions with a lifecycle.yaml start
/// on their own, one after the other; other versions get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_cycles_start_on_their_own() {
    let stack = Stack::new().await;
    stack.put("config/v1/lifecycle.yaml", LIFECYCLE).await;
    let mut config = stack.train_config();
    config.cycle_interval_secs = Some(1);
    let train = stack.start_train(config).await;
    let mut client = train.client.clone();
    let list = |model_ver: &str| ListCyclesRequest { model_ver: model_ver.into() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let cycles = client.list_cycles(list("v1")).await.expect("list cycles").into_inner().cycles;
        let ended: Vec<Cycle> = cycles.into_iter().filter(|c| c.state() == CycleState::Succeeded).collect();
        if ended.len() >= 2 {
            break ended;
        }
        assert!(tokio::time::Instant::now() < deadline, "fewer than two scheduled cycles in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for cycle in &ended[..2] {
        assert_eq!(record(&stack, cycle).await["by"], "schedule");
        assert_eq!(cycle.decision, "nothing ingested yet: no run to train", "{cycle:?}");
    }
    assert_ne!(ended[0].cycle_id, ended[1].cycle_id);
    let v2 = client.list_cycles(list("v2")).await.expect("list cycles").into_inner().cycles;
    assert!(v2.is_empty(), "a version without lifecycle.yaml has no scheduled cycles: {v2:?}");
}

/// `crctl train --draft`: the run is never gated, and production and the
/// served model stay where they were though LATEST names the draft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_never_gated_nor_served_by_default() {
    let stack = Stack::new().await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    let request = |draft| StartTrainingRequest { model_ver: "v1".into(), draft, ..Default::default() };
    let production = train_to_end(&mut client, request(false)).await;
    assert_eq!(production.state(), JobState::Succeeded, "{production:?}");
    assert_eq!(runs(&mut client).await.production_run_id, production.run_id, "the first run is gated into production");
    let draft = train_to_end(&mut client, request(true)).await;
    assert_eq!(draft.state(), JobState::Succeeded, "{draft:?}");

    let job: serde_json::Value =
        serde_json::from_slice(&stack.get(&format!("jobs/{}.json", draft.job_id)).await.expect("job record")).unwrap();
    assert!(job["gate"].is_null(), "a draft is not gated: {job:#}");
    let text = format!("Training job {} succeeded", draft.job_id);
    let body =
        stack.webhooks().wait_for(Duration::from_secs(10), |b| b["text"].as_str().unwrap_or("").starts_with(&text));
    assert_eq!(field(&body.await.expect("the draft's webhook"), "Gate"), "not gated: a draft");
    assert_eq!(stack.latest("v1").as_deref(), Some(draft.run_id.as_str()), "LATEST names the draft");
    let listed = runs(&mut client).await;
    assert_eq!(listed.production_run_id, production.run_id);
    let stage = listed.runs.iter().find(|r| r.run_id == draft.run_id).expect("draft listed").stage.clone();
    assert_eq!(stage, "draft");

    let serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut serve_client = serve.client.clone();
    serving(&mut serve_client, &production.run_id).await;
}

/// serve-service capturing every row, once it serves `production`.
async fn capturing(
    stack: &Stack,
    production: &str,
) -> (Running<ServeServiceClient<Channel>>, ServeServiceClient<Channel>) {
    let mut config = stack.serve_config();
    config.capture_sample = 1.0;
    let serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;
    let mut client = serve.client.clone();
    serving(&mut client, production).await;
    (serve, client)
}

/// Sends `requests` to a capturing serve-service and stops it (which writes
/// what it captured).
async fn serve_and_stop(stack: &Stack, production: &str, requests: &[PredictRequest]) {
    let (serve, mut client) = capturing(stack, production).await;
    for request in requests {
        client.predict(request.clone()).await.expect("predict");
    }
    serve.stop().await.expect("clean stop");
}

/// Runs a batch of `input` on a capturing serve-service and stops it.
async fn serve_batch_and_stop(stack: &Stack, production: &str, input: &str) {
    let (serve, mut client) = capturing(stack, production).await;
    let batch = PredictBatchRequest { input_key: input.into(), ..Default::default() };
    client.predict_batch(batch).await.expect("batch");
    serve.stop().await.expect("clean stop");
}

/// Live traffic (`CAPTURE_SAMPLE`): week 2's keywords served as they are, then
/// labelled, then served with every device a tablet and every attribute
/// flipped. The unshifted traffic is no drift and its answers joined with the
/// late labels score as production scored directly on them; the shifted
/// traffic is drift, with its PSI in the record, and the alert is posted
/// once across two cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_drift_is_found_alerted_once_and_late_labels_score_as_directly() {
    let stack = Stack::new().await;
    // Production stays (no retrain), and only live traffic can drift.
    let rules = "retrain: schedule\nschedule_hours: 100000\ndrift:\n  max_logloss_increase: 1\n";
    stack.put("config/v1/lifecycle.yaml", rules).await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    stack.put("data/incoming/week1.csv", week(1, false)).await;
    let production = cycle(&mut client).await.production_run_id;

    let served = predict_request(&week(2, false));
    serve_and_stop(&stack, &production, std::slice::from_ref(&served)).await;
    stack.put("data/incoming/week2.csv", week(2, false)).await;
    let labelled = cycle(&mut client).await;
    let stored = record(&stack, &labelled).await;
    let live = &stored["live"];
    assert_eq!(live["rows"].as_u64(), Some(served.rows.len() as u64), "{stored:#}");
    assert_ne!(live["level"], "drift", "the same traffic unshifted: {stored:#}");
    assert!(live["shift"]["device_psi"].as_f64().unwrap() < 0.1, "{stored:#}");
    let (direct, joined) = (&stored["drift"], &live["labelled"]);
    assert_eq!(joined["weeks"], serde_json::json!([2]));
    let (direct, joined) = (direct["logloss"].as_f64().unwrap(), joined["logloss"].as_f64().unwrap());
    assert!((direct - joined).abs() < 1e-12, "joined {joined}, scored directly {direct}");

    let mut shifted = served.clone();
    for row in &mut shifted.rows {
        row.device = "Tablet".into();
        row.attribute_values.iter_mut().for_each(|v| *v = 1 - *v);
    }
    serve_and_stop(&stack, &production, &[shifted]).await;
    let alerts = || stack.webhooks().texts().into_iter().filter(|t| t.starts_with("Model v1 entered drift")).count();
    assert_eq!(alerts(), 0, "{:?}", stack.webhooks().texts());
    let found = cycle(&mut client).await;
    let stored = record(&stack, &found).await;
    let live = &stored["live"];
    assert_eq!(live["level"], "drift", "{stored:#}");
    assert!(live["shift"]["device_psi"].as_f64().unwrap() > 0.25, "{stored:#}");
    assert!(live["reasons"][0].as_str().unwrap().starts_with("live device mix PSI "), "{stored:#}");
    let alert = stack.webhooks().wait_for_text(&["Model v1 entered drift: live device mix PSI"]).await;
    println!("{alert}");
    live_section_shows(&stack, &found, live).await;
    // A batch is captured as its input key; the live check reads its rows again.
    stack.put("data/predict/input/week2.csv", week(2, false)).await;
    serve_batch_and_stop(&stack, &production, "data/predict/input/week2.csv").await;
    let again = cycle(&mut client).await;
    cycle_webhook(&stack, &again).await;
    let stored_again = record(&stack, &again).await;
    assert_eq!(stored_again["live"]["level"], "drift");
    let with_batch = live["rows"].as_u64().unwrap() + served.rows.len() as u64;
    assert_eq!(stored_again["live"]["rows"].as_u64(), Some(with_batch), "the batch's rows count as captured");
    assert_eq!(alerts(), 1, "once per change of state: {:?}", stack.webhooks().texts());
    assert_eq!(again.production_run_id, production);
}

/// The cycle report's live section and the index's row of `cycle` show the
/// numbers of its record's `live`, beside the thresholds they were judged by.
async fn live_section_shows(stack: &Stack, cycle: &Cycle, live: &serde_json::Value) {
    let report = String::from_utf8(stack.get(&cycle.report_key).await.expect("the cycle's report")).unwrap();
    let section = report.split("<h2 id=\"live\">Live traffic</h2>").nth(1).expect("a live section");
    let section = section.split("<h2>").next().unwrap();
    let number = |value: &serde_json::Value| format!("{:.5}", value.as_f64().unwrap());
    let rows = live["rows"].as_u64().unwrap();
    let opening =
        format!("<p>Live level <b>drift</b> on {rows} captured rows, compared with weeks [1] of the ingested rows");
    assert!(section.starts_with(&opening), "{section}");
    let cells = |measure: &str, value: String, watch: &str, limit: &str| {
        format!("<tr><td>{measure}</td><td>{value}</td><td>{watch}</td><td>{limit}</td></tr>")
    };
    let shift = &live["shift"];
    let mix = shift["device_mix"].as_array().unwrap();
    let tablet = mix.iter().find(|d| d["device"] == "Tablet").expect("a tablet share");
    let expected = [
        cells("device mix PSI", number(&shift["device_psi"]), "0.10000", "0.25000"),
        cells("predicted rate PSI", number(&live["prediction_psi"]), "0.10000", "0.25000"),
        cells(
            &format!("{} PSI", shift["attribute_psi"][0]["attribute"].as_str().unwrap()),
            number(&shift["attribute_psi"][0]["psi"]),
            "0.10000",
            "0.25000",
        ),
        cells("unseen keyword share", number(&shift["unseen_keyword_share"]), "-", "0.50000"),
        format!("<tr><td>Tablet</td><td>{}</td><td>{}</td></tr>", number(&tablet["reference"]), number(&tablet["new"])),
    ];
    for row in expected {
        assert!(section.contains(&row), "{row} is not in {section}");
    }
    let reason = live["reasons"][0].as_str().unwrap();
    assert!(section.contains(&format!("<p>{reason}</p>")), "{section}");
    let labelled = &live["labelled"];
    let late = format!(
        "<p>Late labels: {} labelled rows ({:.0} clicks) of weeks [2] joined with production's captured answers: \
         log-loss {} against {} at promotion (drift above an increase of 1); calibration {}",
        labelled["rows"],
        labelled["clicks"].as_f64().unwrap(),
        number(&labelled["logloss"]),
        number(&labelled["reference_logloss"]),
        number(&labelled["calibration"])
    );
    assert!(section.contains(&late), "{late} is not in {section}");
    let index = String::from_utf8(stack.get("reports/v1/index.html").await.expect("the index")).unwrap();
    let largest = [&shift["device_psi"], &live["prediction_psi"], &shift["attribute_psi"][0]["psi"]]
        .map(|v| v.as_f64().unwrap())
        .into_iter()
        .fold(0.0, f64::max);
    let row = format!("{0}</a></td><td>drift</td><td>{largest:.5}</td><td>{rows}</td>", cycle.cycle_id);
    assert!(index.contains(&row), "{row} is not in {index}");
    assert!(index.contains("shift of what production served"), "the live chart: {index}");
}
