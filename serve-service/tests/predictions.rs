//! Online and batch predictions from a run trained by train-service, and
//! reloads, on a local folder and on S3 (moto): the same scenarios on each.

use std::collections::HashSet;
use std::time::Duration;

use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::{GetModelRequest, PredictBatchRequest};
use crs_testkit::{Backend, Setup, Stack, gunzip, predict_request, wait_until, wait_until_serving};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_output_matches_online_predictions() {
    batch_output_matches_online_predictions_on(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_output_matches_online_predictions_on_s3() {
    batch_output_matches_online_predictions_on(Backend::S3).await;
}

async fn batch_output_matches_online_predictions_on(backend: Backend) {
    let Some(mut stack) = Stack::on(backend, Setup::default()).await else { return };
    let run_id = stack.train("v1").await;
    let mut serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;

    let model = serve.client.get_model(GetModelRequest::default()).await.expect("get model").into_inner();
    assert_eq!(
        (model.model_ver.as_str(), model.run_id.as_str(), model.selection.as_str()),
        ("v1", run_id.as_str(), "production")
    );

    let response = serve
        .client
        .predict_batch(PredictBatchRequest {
            input_key: PREDICTION_INPUT_KEY.into(),
            output_key: None,
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner();
    let expected_key = format!("data/predict/output/v1/{run_id}/prediction_output.csv.gz");
    assert_eq!(response.output_key, expected_key);
    assert_eq!(response.run_id, run_id);

    let input = stack.get(PREDICTION_INPUT_KEY).await.expect("input exists");
    let request = predict_request(&input);
    let output = gunzip(&stack.get(&expected_key).await.expect("output exists"));
    let mut lines = output.lines();
    assert_eq!(lines.next(), Some("entity_id,device,cr"));
    let written: Vec<(i64, String, f64)> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 3, "{line}");
            (fields[0].parse().expect("id"), fields[1].to_owned(), fields[2].parse().expect("cr"))
        })
        .collect();
    let keys: HashSet<(i64, &str)> = request.rows.iter().map(|r| (r.entity_id, r.device.as_str())).collect();
    assert_eq!(written.len(), keys.len(), "one line per (entity_id, device)");
    assert_eq!(response.rows_written, keys.len() as u64);
    assert_eq!(response.rows_read, request.rows.len() as u64);
    assert!(written.iter().all(|(_, d, _)| ["Computer", "Smartphone", "Tablet"].contains(&d.as_str())));
    assert!(written.iter().all(|(_, _, cr)| (0.0..=1.0).contains(cr)));

    let online = serve.client.predict(request.clone()).await.expect("predict").into_inner();
    assert_eq!(online.run_id, run_id);
    for ((row, cr), (entity, device, batch_cr)) in request.rows.iter().zip(&online.cr).zip(&written) {
        assert_eq!((row.entity_id, row.device.as_str()), (*entity, device.as_str()));
        assert_eq!(cr, batch_cr, "online and batch disagree for {entity} {device}");
    }
    let distinct: HashSet<u64> = online.cr.iter().map(|c| c.to_bits()).collect();
    assert!(distinct.len() > 1, "a trained tree gives different rates to different keywords");

    let notice = stack
        .webhooks()
        .wait_for(Duration::from_secs(5), |b| {
            b["text"].as_str().is_some_and(|t| t.starts_with("batch prediction") && t.contains("succeeded"))
        })
        .await
        .expect("batch success webhook");
    assert!(notice.to_string().contains(&expected_key), "{notice}");
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_follows_latest_without_failing_requests() {
    serving_follows_latest_without_failing_requests_on(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_follows_latest_without_failing_requests_on_s3() {
    serving_follows_latest_without_failing_requests_on(Backend::S3).await;
}

async fn serving_follows_latest_without_failing_requests_on(backend: Backend) {
    let Some(mut stack) = Stack::on(backend, Setup::default()).await else { return };
    let first = stack.train("v1").await;
    // A retrain on the same data is no better, so only LATEST moves to it.
    let mut config = stack.serve_config();
    config.model_run = "latest".parse().expect("selection");
    let serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;

    let input = stack.get(PREDICTION_INPUT_KEY).await.expect("input exists");
    let mut request = predict_request(&input);
    request.rows.truncate(20);
    let mut client = serve.client.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // The runs that answered so far, shared: the switch is over once the new one has.
    let runs = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let answering = runs.clone();
    let looping = tokio::spawn(async move {
        let (mut answered, mut failures) = (0, Vec::new());
        while !*stop_rx.borrow_and_update() {
            match client.predict(request.clone()).await {
                Ok(r) => {
                    answered += 1;
                    answering.lock().expect("runs").insert(r.into_inner().run_id);
                }
                Err(status) => failures.push(status),
            }
        }
        (answered, failures)
    });

    let second = stack.train("v1").await;
    assert!(second > first);
    wait_until(Duration::from_secs(20), "answers from the new run", || {
        let switched = runs.lock().expect("runs").contains(&second);
        async move { switched }
    })
    .await;
    stop_tx.send(true).expect("stop loop");
    let (answered, failures) = looping.await.expect("loop");
    let runs = runs.lock().expect("runs").clone();
    assert!(failures.is_empty(), "requests failed during the switch: {failures:?}");
    assert!(answered > 10, "only {answered} requests answered");
    assert_eq!(runs, HashSet::from([first, second]));
    serve.stop().await.expect("clean stop");
}
