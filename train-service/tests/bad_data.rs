//! Bad data and bad config: the job fails with a reason that names the problem,
//! leaves no run behind, leaves LATEST alone and posts a failure notice.

mod common;

use common::{TestServer, wait_for_webhook};
use crs_proto::train::{JobState, StartTrainingRequest};
use crs_testkit::key_of as key;

const HEADER: &str = "entity_id,att1,att2,att3,device,week,Clicks,Conversions";

/// A small training file: the header, then these data rows (row 1 first).
fn csv(header: &str, rows: &[&str]) -> String {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

/// Trains on `train` (written to `data/train/bad.csv`) and checks the job fails
/// cleanly with a reason containing every one of `expected`.
async fn assert_job_fails(server: &TestServer, request: StartTrainingRequest, expected: &[&str]) {
    let runs_before = server.run_dirs("v1");
    let latest_before = server.latest("v1").await;
    let job = server.train(request).await;
    assert_eq!(job.state(), JobState::Failed, "{job:?}");
    for part in expected {
        assert!(job.error.contains(part), "reason {:?} does not contain {part:?}", job.error);
    }
    assert!(job.finished_at.is_some());
    assert!(job.evaluation.is_none());
    assert_eq!(server.run_dirs("v1"), runs_before, "a failed job leaves no run directory");
    assert_eq!(server.latest("v1").await, latest_before, "a failed job does not move LATEST");
    let notice = wait_for_webhook(server, &["failed", &job.job_id]).await;
    assert!(notice.contains(&job.error), "the notice gives the reason: {notice}");
}

async fn fails_on_train_file(contents: &str, expected: &[&str]) {
    let server = TestServer::start().await;
    server.bucket.put(&key("data/train/bad.csv"), contents.to_owned()).await.expect("write bad file");
    let request = StartTrainingRequest { train_key: "data/train/bad.csv".into(), ..Default::default() };
    assert_job_fails(&server, request, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_column() {
    let contents = csv("entity_id,att1,att2,att3,device,week,Clicks", &["1,0,1,0,Computer,1,10"]);
    fails_on_train_file(&contents, &["data/train/bad.csv", "missing required column", "Conversions"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_numeric_value() {
    let contents = csv(HEADER, &["1,0,1,0,Computer,1,10,1", "2,1,0,1,Tablet,1,lots,2"]);
    fails_on_train_file(&contents, &["data/train/bad.csv", "row 2", "column 'Clicks'", "expected an integer"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_outside_zero_and_one() {
    let contents = csv(HEADER, &["1,0,1,0,Computer,1,10,1", "1,0,1,0,Smartphone,1,5,0", "2,1,2,1,Tablet,1,8,2"]);
    fails_on_train_file(&contents, &["data/train/bad.csv", "row 3", "column 'att2'", "expected 0 or 1, found 2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device() {
    let contents = csv(HEADER, &["1,0,1,0,Computer,1,10,1", "2,1,0,1,Phablet,1,8,2"]);
    fails_on_train_file(&contents, &["data/train/bad.csv", "row 2", "column 'device'", "unknown device \"Phablet\""])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_clicks() {
    let contents = csv(HEADER, &["1,0,1,0,Computer,1,-3,0", "2,1,0,1,Tablet,1,8,2"]);
    fails_on_train_file(&contents, &["data/train/bad.csv", "row 1", "column 'Clicks'", "must not be negative"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file() {
    fails_on_train_file("", &["data/train/bad.csv", "the file is empty"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_without_rows() {
    fails_on_train_file(&csv(HEADER, &[]), &["data/train/bad.csv", "no data rows"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_evaluation_file() {
    let server = TestServer::start().await;
    let contents = csv(HEADER, &["9001,0,1,0,Computer,1,10,1", "9002,1,0,1,Tablet,x,8,2"]);
    server.bucket.put(&key("data/eval/bad.csv"), contents).await.expect("write bad file");
    let request = StartTrainingRequest { eval_key: Some("data/eval/bad.csv".into()), ..Default::default() };
    assert_job_fails(&server, request, &["data/eval/bad.csv", "row 2", "column 'week'"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hyperparameter_in_an_explicit_config() {
    let server = TestServer::start().await;
    // A run already exists: LATEST must stay on it.
    let earlier = server.train(StartTrainingRequest::default()).await;
    assert_eq!(earlier.state(), JobState::Succeeded, "job failed: {}", earlier.error);
    server.bucket.put(&key("config/v1/typo.yaml"), "max_dept: 4\n").await.expect("write config");
    let request = StartTrainingRequest { config_key: Some("config/v1/typo.yaml".into()), ..Default::default() };
    assert_job_fails(&server, request, &["config/v1/typo.yaml", "unknown field `max_dept`"]).await;
    assert_eq!(server.latest("v1").await.map(|r| r.to_string()), Some(earlier.run_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_hyperparameter_in_the_default_config() {
    let server = TestServer::start().await;
    // The default config is optional, but once it exists it must be valid.
    server.bucket.put(&key("config/v1/params.yaml"), "max_depth: 0\n").await.expect("write config");
    assert_job_fails(
        &server,
        StartTrainingRequest::default(),
        &["config/v1/params.yaml", "'max_depth' must be between 1 and 30"],
    )
    .await;
}
