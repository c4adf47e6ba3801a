//! The lifecycle end to end, with both services on the shared stack: weekly
//! files arrive, cycles ingest them, check drift, retrain, gate and promote,
//! and serve-service follows the production alias without a failed request.

use std::time::Duration;

use crs_domain::data::synth::{SynthSpec, write_week};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, PredictRequest};
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{Cycle, CycleState, ListModelsRequest, ModelVersionRuns, RollbackRequest, RunCycleRequest};
use crs_testkit::{Backend, Setup, Stack, predict_request, wait_for_cycle, wait_until_serving};
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
    assert_eq!(quiet.decision, "no new data: nothing to do", "{quiet:?}");
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
