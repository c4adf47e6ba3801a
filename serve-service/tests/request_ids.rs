//! Request ids tie things together: a caller's `x-request-id` (or a made-up
//! one) is echoed back, is in every log line written while the request runs
//! and in the webhooks it causes; a training job's lines carry its job id and
//! the id of the request that started it.

use std::time::Duration;

use crs_platform::storage::layout::{EVAL_KEY, PREDICTION_INPUT_KEY};
use crs_proto::serve::{PredictBatchRequest, PredictRequest};
use crs_proto::train::StartTrainingRequest;
use crs_testkit::{CapturedLogs, Stack, capture_logs, predict_request, wait_for_end, wait_until_serving};

fn with_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().expect("ascii id"));
    request
}

/// The log lines whose message is `message`.
fn lines_saying(logs: &CapturedLogs, message: &str) -> Vec<serde_json::Value> {
    logs.lines().into_iter().filter(|line| line["fields"]["message"] == message).collect()
}

/// The value of `field` in the spans a JSON log line was written in.
fn span_field(line: &serde_json::Value, field: &str) -> Option<String> {
    line["spans"].as_array()?.iter().find_map(|span| span[field].as_str().map(str::to_owned))
}

async fn wait_for_line(logs: &CapturedLogs, message: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(line) = lines_saying(logs, message).pop() {
            return line;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing logged {message:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_job_ids_are_in_log_lines_answers_and_webhooks() {
    let logs = capture_logs();
    let stack = Stack::new().await;
    let mut train = stack.start_train(stack.train_config()).await;

    // A job: its lines carry the job id and the id of the request that started it.
    let start = StartTrainingRequest { model_ver: "v1".into(), eval_key: Some(EVAL_KEY.into()), ..Default::default() };
    let response = train.client.start_training(with_id(start, "train-req-1")).await.expect("start");
    assert_eq!(response.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("train-req-1"));
    let job_id = response.into_inner().job_id;
    wait_for_end(&mut train.client, &job_id).await;
    for message in ["job queued", "job started", "job succeeded"] {
        let line = wait_for_line(&logs, message).await;
        assert_eq!(span_field(&line, "request_id").as_deref(), Some("train-req-1"), "{message}: {line}");
        if message != "job queued" {
            assert_eq!(span_field(&line, "job_id").as_deref(), Some(job_id.as_str()), "{message}: {line}");
        }
    }
    let notice = stack
        .webhooks()
        .wait_for(Duration::from_secs(10), |body| {
            body.to_string().contains(&format!("{job_id} succeeded")) && body.to_string().contains("train-req-1")
        })
        .await;
    assert!(notice.is_some(), "the job's webhook does not name the request: {:?}", stack.webhooks().texts());

    // A batch: the request's lines and its webhook carry the caller's id.
    let mut serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let batch = PredictBatchRequest { input_key: PREDICTION_INPUT_KEY.into(), ..Default::default() };
    let answer = serve.client.predict_batch(with_id(batch, "batch-req-7")).await.expect("batch");
    assert_eq!(answer.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("batch-req-7"));
    let line = wait_for_line(&logs, "batch done").await;
    assert_eq!(span_field(&line, "request_id").as_deref(), Some("batch-req-7"), "{line}");
    assert_eq!(span_field(&line, "rpc").as_deref(), Some("/crs.serve.v1.ServeService/PredictBatch"), "{line}");
    let notice = stack
        .webhooks()
        .wait_for(Duration::from_secs(10), |body| {
            body.to_string().contains("batch prediction") && body.to_string().contains("batch-req-7")
        })
        .await;
    assert!(notice.is_some(), "the batch's webhook does not name the request: {:?}", stack.webhooks().texts());

    // Without an id (or with one that cannot be logged as it is) the service makes one up.
    let mut rows: PredictRequest = predict_request(&stack.get(PREDICTION_INPUT_KEY).await.expect("input"));
    rows.rows.truncate(2);
    for request in [tonic::Request::new(rows.clone()), with_id(rows.clone(), &"x".repeat(200))] {
        let answer = serve.client.predict(request).await.expect("predict");
        let id = answer.metadata().get("x-request-id").and_then(|v| v.to_str().ok()).expect("an id").to_owned();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    // Every line written inside a request span names its request.
    for line in logs.lines() {
        let in_request = line["spans"].as_array().is_some_and(|spans| spans.iter().any(|s| s["name"] == "request"));
        if in_request {
            assert!(span_field(&line, "request_id").is_some_and(|id| !id.is_empty()), "{line}");
        }
    }
    serve.stop().await.expect("clean stop");
    train.stop().await.expect("clean stop");
}
