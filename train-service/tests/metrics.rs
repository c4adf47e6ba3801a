//! train-service's Prometheus endpoint: requests by RPC and code, jobs and
//! cycles by outcome, stage timings of succeeded jobs, step timings of cycles.

use std::time::Duration;

use crs_platform::storage::layout::EVAL_KEY;
use crs_proto::train::{CycleState, JobState, RunCycleRequest, StartTrainingRequest};
use crs_testkit::{Metrics, Stack, parse_metrics, scrape, train_to_end, wait_for_cycle};

async fn metrics(addr: std::net::SocketAddr) -> Metrics {
    let (status, content_type, body) = scrape(addr).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    parse_metrics(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stages_and_requests_are_counted() {
    let stack = Stack::new().await;
    let (mut train, addr) = stack.start_train_with_metrics(stack.train_config()).await;
    let before = metrics(addr).await;
    assert_eq!(before.types.get("crs_train_jobs_running").map(String::as_str), Some("gauge"));
    assert_eq!(before.get("crs_train_jobs_running", &[]), Some(0.0));

    let good = StartTrainingRequest { model_ver: "v1".into(), eval_key: Some(EVAL_KEY.into()), ..Default::default() };
    assert_eq!(train_to_end(&mut train.client, good).await.state(), JobState::Succeeded);
    stack.put("data/train/bad.csv", "entity_id,att1,device,week,Clicks,Conversions\n1,0,Computer,1,-5,0\n").await;
    let bad_data = StartTrainingRequest { train_key: "data/train/bad.csv".into(), ..Default::default() };
    assert_eq!(train_to_end(&mut train.client, bad_data).await.state(), JobState::Failed);
    let bad = StartTrainingRequest { model_ver: "v9".into(), ..Default::default() };
    train.client.start_training(bad).await.expect_err("unknown version");
    // A cycle with nothing new to ingest: it ingests nothing, trains nothing and succeeds.
    let request = RunCycleRequest { model_ver: "v1".into() };
    let started = train.client.run_cycle(request).await.expect("cycle").into_inner();
    let cycle = wait_for_cycle(&mut train.client, started, Duration::from_secs(60)).await;
    assert_eq!(cycle.state(), CycleState::Succeeded, "{cycle:?}");

    let after = metrics(addr).await;
    assert_eq!(after.types.get("crs_train_jobs").map(String::as_str), Some("counter"));
    assert_eq!(after.types.get("crs_train_stage_duration_seconds").map(String::as_str), Some("histogram"));
    let value = |name: &str, labels: &[(&str, &str)]| after.value(name, labels);
    assert_eq!(value("crs_train_jobs_total", &[("model", "v1"), ("outcome", "succeeded")]), 1.0);
    assert_eq!(value("crs_train_jobs_total", &[("model", "v1"), ("outcome", "failed")]), 1.0);
    assert_eq!(value("crs_train_jobs_running", &[]), 0.0);
    assert_eq!(value("crs_train_requests_total", &[("rpc", "StartTraining"), ("code", "OK")]), 2.0);
    let refused = [("rpc", "StartTraining"), ("code", "InvalidArgument")];
    assert_eq!(value("crs_train_requests_total", &refused), 1.0);
    assert_eq!(value("crs_train_request_errors_total", &refused), 1.0);
    assert_eq!(value("crs_train_request_duration_seconds_count", &[("rpc", "StartTraining")]), 3.0);
    assert_eq!(after.types.get("crs_train_cycles").map(String::as_str), Some("counter"));
    assert_eq!(value("crs_train_cycles_total", &[("model", "v1"), ("outcome", "succeeded")]), 1.0);
    let ingest = [("model", "v1"), ("step", "ingest")];
    assert_eq!(value("crs_train_cycle_step_duration_seconds_count", &ingest), 1.0);
    for stage in ["loading_data", "training", "evaluating"] {
        let labels = [("model", "v1"), ("stage", stage)];
        assert_eq!(value("crs_train_stage_duration_seconds_count", &labels), 1.0, "{stage}");
        assert!(value("crs_train_stage_duration_seconds_sum", &labels) > 0.0, "{stage}");
    }
    train.stop().await.expect("clean stop");
}
