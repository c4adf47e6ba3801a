//! Shadow models (SHADOW_MODELS): under 10,000 requests the primary's answers
//! do not change, every row of every request is recorded for both models once
//! the service stops, and `crctl compare` scores the two on outcomes.
//! Capture (CAPTURE_SAMPLE), which rides the same queue: every served row at
//! 1 (a batch as its keys), a share within binomial noise at 0.1, drops
//! counted when the queue is full.

use std::collections::HashMap;
use std::sync::Arc;

use crs_domain::models::ModelVer;
use crs_platform::predictions::{capture, shadow};
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::EVAL_KEY;
use crs_proto::inference::ModelInferRequest;
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, PredictBatchRequest, PredictBatchResponse, PredictRequest, PredictResponse};
use crs_testkit::{Stack, gunzip, parse_metrics, predict_request, scrape, wait_until_serving};
use tonic::transport::Channel;

const REQUESTS: usize = 100;
const ROWS: usize = 100;
const TASKS: usize = 8;
/// The load of the answers-unchanged test: many small requests, so that the
/// shadow path runs once per request 10,000 times.
const LOAD_REQUESTS: usize = 10_000;
const LOAD_ROWS: usize = 2;

fn v(name: &str) -> ModelVer {
    ModelVer::parse(name).expect("registered version")
}

/// `count` requests of `rows` rows each, cycling through the rows of the
/// evaluation file (so that its outcomes match them).
async fn requests(stack: &Stack, count: usize, rows: usize) -> Vec<PredictRequest> {
    let all = predict_request(&stack.get(EVAL_KEY).await.expect("eval file"));
    (0..count)
        .map(|i| PredictRequest {
            rows: all.rows.iter().cycle().skip(i * 37).take(rows).cloned().collect(),
            ..all.clone()
        })
        .collect()
}

/// Sends every request from `TASKS` concurrent tasks; the answers in request order.
async fn send_all(client: &ServeServiceClient<Channel>, requests: &Arc<Vec<PredictRequest>>) -> Vec<PredictResponse> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (mut client, requests) = (client.clone(), requests.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in (task..requests.len()).step_by(TASKS) {
                    let answer = client.predict(requests[i].clone()).await.expect("predict").into_inner();
                    answers.push((i, answer));
                }
                answers
            })
        })
        .collect();
    let mut answers: Vec<Option<PredictResponse>> = vec![None; requests.len()];
    for task in tasks {
        for (i, answer) in task.await.expect("task") {
            answers[i] = Some(answer);
        }
    }
    answers.into_iter().map(|a| a.expect("every request answered")).collect()
}

/// (entity_id, device, cr bits) of every row answered, counted.
fn tally<'a>(
    requests: &[PredictRequest],
    answers: impl Iterator<Item = &'a PredictResponse>,
) -> HashMap<(i64, String, u64), usize> {
    let mut counts = HashMap::new();
    for (request, answer) in requests.iter().zip(answers) {
        assert_eq!(request.rows.len(), answer.cr.len());
        for (row, cr) in request.rows.iter().zip(&answer.cr) {
            *counts.entry((row.entity_id, row.device.clone(), cr.to_bits())).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_changes_no_answer_and_records_every_row_of_both_models() {
    let mut stack = Stack::new().await;
    let v1_run = stack.train("v1").await;
    let v0_run = stack.train("v0").await;
    let requests = Arc::new(requests(&stack, LOAD_REQUESTS, LOAD_ROWS).await);

    // v1 alone: the reference answers.
    let alone = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&alone).await;
    let reference = send_all(&alone.client, &requests).await;
    alone.stop().await.expect("clean stop");

    let mut config = stack.serve_config();
    config.shadow_models = vec!["v0:v1".parse().expect("pair")];
    // Small batches, so that the records span several objects; a queue that holds
    // every request, so that none is dropped however slowly the shadow keeps up.
    config.shadow_flush_rows = 3_000;
    config.shadow_queue = LOAD_REQUESTS as u32;
    let (shadowed, metrics_addr) = stack.start_serve_with_metrics(config).await;
    wait_until_serving(&shadowed).await;
    let answers = send_all(&shadowed.client, &requests).await;
    for (i, (with, without)) in answers.iter().zip(&reference).enumerate() {
        assert_eq!(with, without, "request {i} answered differently with a shadow");
        assert_eq!(with.run_id, v1_run);
    }
    // What v0 itself answers to the same requests (not shadowed: v0 is no primary).
    let mut v0_answers = Vec::new();
    let mut client = shadowed.client.clone();
    for request in requests.iter() {
        let request = PredictRequest { model_ver: "v0".into(), ..request.clone() };
        v0_answers.push(client.predict(request).await.expect("v0").into_inner());
    }
    let (_, _, text) = scrape(metrics_addr).await;
    let metrics = parse_metrics(&text);
    for reason in ["queue_full", "not_loaded", "failed"] {
        let labels = [("model", "v0"), ("reason", reason)];
        assert_eq!(metrics.value("crs_serve_shadow_dropped_rows_total", &labels), 0.0, "{reason}");
    }
    shadowed.stop().await.expect("clean stop");

    // Stopped: everything is written.
    let records = shadow::read_all(&stack.bucket, v("v1")).await.expect("records");
    let recorded = |model: &str, run: &str| {
        let mut counts: HashMap<(i64, String, u64), usize> = HashMap::new();
        for row in records.iter().filter(|r| r.model == model) {
            assert_eq!(row.run, run);
            *counts.entry((row.entity_id, row.device.as_str().to_owned(), row.cr.to_bits())).or_default() += 1;
        }
        counts
    };
    assert_eq!(records.len(), 2 * LOAD_REQUESTS * LOAD_ROWS);
    assert_eq!(recorded("v1", &v1_run), tally(&requests, answers.iter()));
    assert_eq!(recorded("v0", &v0_run), tally(&requests, v0_answers.iter()));
    let objects = stack.bucket.list(&BucketKey::parse("shadow/v1").expect("key")).await.expect("list");
    assert!(objects.len() >= 2, "{} objects", objects.len());

    let outcomes = BucketKey::parse(EVAL_KEY).expect("key");
    let comparison = crctl::compare(&stack.bucket, v("v1"), v("v0"), &outcomes).await.expect("compare");
    assert!(comparison.rows > 0 && comparison.clicks > 0.0, "{comparison:?}");
    let winner = comparison.winner.as_deref().expect("a winner");
    let (best, other) = if winner == "v1" {
        (&comparison.primary, &comparison.shadow)
    } else {
        (&comparison.shadow, &comparison.primary)
    };
    assert_eq!(best.model_ver, winner);
    assert!(best.logloss < other.logloss, "{comparison:?}");
    assert_eq!((comparison.primary.runs.clone(), comparison.shadow.runs.clone()), (vec![v1_run], vec![v0_run]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadowed_batch_records_every_input_row_of_both_models() {
    let mut stack = Stack::new().await;
    let v1_run = stack.train("v1").await;
    let v0_run = stack.train("v0").await;
    let mut config = stack.serve_config();
    config.shadow_models = vec!["v0:v1".parse().expect("pair")];
    let mut serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;

    // The evaluation file is a valid batch input (its outcome columns are ignored).
    let batch = PredictBatchRequest {
        input_key: EVAL_KEY.into(),
        output_key: Some("data/predict/output/eval.csv.gz".into()),
        ..Default::default()
    };
    let done = serve.client.predict_batch(batch).await.expect("batch").into_inner();
    assert_eq!(done.run_id, v1_run);
    serve.stop().await.expect("clean stop");

    let written: HashMap<(i64, String), u64> = gunzip(&stack.get(&done.output_key).await.expect("output"))
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let cr: f64 = fields[2].parse().expect("cr");
            ((fields[0].parse().expect("id"), fields[1].to_owned()), cr.to_bits())
        })
        .collect();
    let records = shadow::read_all(&stack.bucket, v("v1")).await.expect("records");
    for (model, run) in [("v1", &v1_run), ("v0", &v0_run)] {
        let rows: Vec<_> = records.iter().filter(|r| r.model == model).collect();
        assert_eq!(rows.len() as u64, done.rows_read, "{model}: one record per input row");
        assert!(rows.iter().all(|r| &r.run == run), "{model}");
    }
    for row in records.iter().filter(|r| r.model == "v1") {
        let key = (row.entity_id, row.device.as_str().to_owned());
        assert_eq!(
            written.get(&key),
            Some(&row.cr.to_bits()),
            "the recorded primary answer is the batch's for {key:?}"
        );
    }
    let outcomes = BucketKey::parse(EVAL_KEY).expect("key");
    let comparison = crctl::compare(&stack.bucket, v("v1"), v("v0"), &outcomes).await.expect("compare");
    // Keys whose outcomes have no clicks are no observation: counted apart.
    assert_eq!(comparison.rows + comparison.rows_without_outcome, written.len(), "{comparison:?}");
    assert!(comparison.winner.is_some() && comparison.clicks > 0.0, "{comparison:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shadow_queue_drops_and_counts_shadow_rows_and_fails_no_request() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    stack.train("v0").await;
    let requests = Arc::new(requests(&stack, REQUESTS, ROWS).await);
    let mut config = stack.serve_config();
    config.shadow_models = vec!["v0:v1".parse().expect("pair")];
    // One request may wait for the shadow; 8 callers outrun it (about half the
    // requests were dropped in the dev profile).
    config.shadow_queue = 1;
    let (serve, metrics_addr) = stack.start_serve_with_metrics(config).await;
    wait_until_serving(&serve).await;
    let answers = send_all(&serve.client, &requests).await;
    assert_eq!(answers.len(), REQUESTS);
    // Drops are counted when a request is answered: final once all are.
    let (_, _, text) = scrape(metrics_addr).await;
    let dropped =
        parse_metrics(&text).value("crs_serve_shadow_dropped_rows_total", &[("model", "v0"), ("reason", "queue_full")]);
    serve.stop().await.expect("clean stop");

    let records = shadow::read_all(&stack.bucket, v("v1")).await.expect("records");
    let count = |model: &str| records.iter().filter(|r| r.model == model).count() as f64;
    assert_eq!(dropped % ROWS as f64, 0.0, "whole requests are dropped");
    assert_eq!(count("v1"), (REQUESTS * ROWS) as f64 - dropped, "a dropped request is not recorded at all");
    assert_eq!(count("v0"), count("v1"), "every recorded request has both answers");
}

/// `request`'s rows as a typed V2 request to v1, attribute columns in `attributes` order.
fn infer_request(request: &PredictRequest, attributes: &[String]) -> ModelInferRequest {
    ModelInferRequest { id: String::new(), ..crs_testkit::v2::infer_request(request, attributes, false) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_infer_is_shadowed_and_a_shadow_without_a_run_fails_nothing() {
    let mut stack = Stack::new().await;
    let v1_run = stack.train("v1").await;
    stack.train("v0").await;
    let mut config = stack.serve_config();
    // v2 has no run: it never loads, and only its records are missing.
    config.shadow_models = vec!["v0:v1".parse().expect("pair"), "v2:v1".parse().expect("pair")];
    let (mut serve, metrics_addr) = stack.start_serve_with_metrics(config).await;
    wait_until_serving(&serve).await;

    let all = requests(&stack, REQUESTS, ROWS).await;
    let predict = all[0].clone();
    let mut infer = all[1].clone();
    infer.rows.truncate(40);
    let answer = serve.client.predict(predict.clone()).await.expect("predict").into_inner();
    assert_eq!((answer.run_id.as_str(), answer.cr.len()), (v1_run.as_str(), ROWS));
    let info = serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner();
    let mut v2 = GrpcInferenceServiceClient::new(serve.channel());
    let inferred = v2.model_infer(infer_request(&infer, &info.attribute_names)).await.expect("infer").into_inner();
    let rates = &inferred.outputs[0].contents.as_ref().expect("typed output").fp64_contents;
    assert_eq!(rates.len(), 40);
    let shadow_of: Vec<(&str, &str)> =
        info.loaded.iter().map(|m| (m.model_ver.as_str(), m.shadow_of.as_str())).collect();
    assert_eq!(shadow_of, [("v0", "v1"), ("v1", "")]);
    // Scored in the background: wait for v0's rows, then v2's are counted as not loaded.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let metrics = loop {
        let metrics = parse_metrics(&scrape(metrics_addr).await.2);
        if metrics.value("crs_serve_shadow_rows_total", &[("model", "v0")]) == (ROWS + 40) as f64 {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "v0 never scored every row");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let not_loaded = [("model", "v2"), ("reason", "not_loaded")];
    assert_eq!(metrics.value("crs_serve_shadow_dropped_rows_total", &not_loaded), (ROWS + 40) as f64);
    serve.stop().await.expect("clean stop");

    let records = shadow::read_all(&stack.bucket, v("v1")).await.expect("records");
    let count = |model: &str| records.iter().filter(|r| r.model == model).count();
    assert_eq!((count("v1"), count("v0"), count("v2")), (ROWS + 40, ROWS + 40, 0));
    // The ModelInfer rows come back with the answer v1 gave.
    let infer_rows: Vec<u64> = records.iter().filter(|r| r.model == "v1").skip(ROWS).map(|r| r.cr.to_bits()).collect();
    assert_eq!(infer_rows, rates.iter().map(|c| c.to_bits()).collect::<Vec<_>>());
}

/// Every captured row of v1, as (entity_id, device, cr bits) counted, with
/// each row's attributes checked against what the requests sent.
async fn captured_since(
    stack: &Stack,
    since: Option<chrono::DateTime<chrono::Utc>>,
    sent: &[PredictRequest],
    run: &str,
) -> (HashMap<(i64, String, u64), usize>, Vec<String>) {
    let objects = capture::read_since(&stack.bucket, v("v1"), since).await.expect("captures");
    let names = &sent[0].attribute_names;
    let mut inputs: HashMap<(i64, String), &Vec<u32>> = HashMap::new();
    for row in sent.iter().flat_map(|r| &r.rows) {
        inputs.insert((row.entity_id, row.device.clone()), &row.attribute_values);
    }
    let (mut counts, mut ids) = (HashMap::new(), Vec::new());
    for object in &objects {
        let columns: Vec<usize> =
            object.rows.attribute_names().iter().map(|a| names.iter().position(|n| n == a).unwrap()).collect();
        for i in 0..object.len() {
            let (entity, device) = (object.rows.entity_id[i], object.rows.device[i].as_str().to_owned());
            let sent = inputs[&(entity, device.clone())];
            let read: Vec<u32> = columns.iter().map(|&c| sent[c]).collect();
            let kept: Vec<u32> = object.rows.attributes(i).iter().map(|&a| u32::from(a)).collect();
            assert_eq!(kept, read, "row {i} of a capture: the inputs the model read");
            assert_eq!(object.run[i].as_str(), run);
            *counts.entry((entity, device, object.cr[i].to_bits())).or_default() += 1;
            ids.push(object.request_id[i].clone());
        }
    }
    (counts, ids)
}

/// Half the rows by Predict, half by ModelInfer; the answers as Predict answers.
async fn predict_and_infer(
    serve: &crs_testkit::Running<ServeServiceClient<Channel>>,
    requests: &Arc<Vec<PredictRequest>>,
) -> Vec<PredictResponse> {
    let half = requests.len() / 2;
    let predicted = send_all(&serve.client, &Arc::new(requests[..half].to_vec())).await;
    let info = serve.client.clone().get_model(GetModelRequest::default()).await.expect("model").into_inner();
    let mut v2 = GrpcInferenceServiceClient::new(serve.channel());
    let mut answers = predicted;
    for request in &requests[half..] {
        let inferred = v2.model_infer(infer_request(request, &info.attribute_names)).await.expect("infer").into_inner();
        let cr = inferred.outputs[0].contents.as_ref().expect("typed output").fp64_contents.clone();
        answers.push(PredictResponse { cr, model_ver: "v1".into(), run_id: inferred.model_version });
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_records_every_served_row_at_one_and_a_share_at_a_tenth() {
    let mut stack = Stack::new().await;
    let v1_run = stack.train("v1").await;
    let requests = Arc::new(requests(&stack, REQUESTS, ROWS).await);

    let mut config = stack.serve_config();
    config.capture_sample = 1.0;
    config.shadow_queue = REQUESTS as u32;
    config.shadow_flush_rows = 3_000;
    let (serve, metrics_addr) = stack.start_serve_with_metrics(config.clone()).await;
    wait_until_serving(&serve).await;
    let answers = predict_and_infer(&serve, &requests).await;
    let batch = served_batch(&serve).await;
    let metrics = parse_metrics(&scrape(metrics_addr).await.2);
    assert_eq!(
        metrics.value("crs_serve_capture_dropped_rows_total", &[("model", "v1"), ("reason", "queue_full")]),
        0.0
    );
    serve.stop().await.expect("clean stop");
    batch_captured_as_its_keys(&stack, &batch, &v1_run).await;
    let (captured, ids) = captured_since(&stack, None, &requests, &v1_run).await;
    assert_eq!(ids.len(), REQUESTS * ROWS, "every served row is captured once (a batch's rows are not copied)");
    assert_eq!(captured, tally(&requests, answers.iter()), "each with the answer it was given");
    assert!(ids.iter().all(|id| id.len() == 16), "each with its request id");
    let objects = stack.bucket.list(&BucketKey::parse("capture/v1").expect("key")).await.expect("list");
    assert!(objects.len() >= 2, "flushed in several objects: {}", objects.len());

    // A tenth: the share within binomial noise (4 standard deviations).
    let since = chrono::Utc::now();
    config.capture_sample = 0.1;
    let serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;
    let answers = predict_and_infer(&serve, &requests).await;
    serve.stop().await.expect("clean stop");
    let (captured, ids) = captured_since(&stack, Some(since), &requests, &v1_run).await;
    let (n, p) = ((REQUESTS * ROWS) as f64, 0.1);
    let spread = 4.0 * (n * p * (1.0 - p)).sqrt();
    assert!((ids.len() as f64 - n * p).abs() < spread, "{} of {n} rows captured at 0.1", ids.len());
    let served = tally(&requests, answers.iter());
    for (row, count) in &captured {
        assert!(served.get(row).is_some_and(|served| served >= count), "{row:?} was captured but not served so");
    }
}

const BATCH_REQUEST_ID: &str = "batch-7,%a";

/// A batch of the evaluation file, with a request id of its own.
async fn served_batch(serve: &crs_testkit::Running<ServeServiceClient<Channel>>) -> PredictBatchResponse {
    let batch = PredictBatchRequest {
        input_key: EVAL_KEY.into(),
        output_key: Some("data/predict/output/captured.csv.gz".into()),
        ..Default::default()
    };
    let mut request = tonic::Request::new(batch);
    request.metadata_mut().insert("x-request-id", BATCH_REQUEST_ID.parse().expect("ascii"));
    serve.client.clone().predict_batch(request).await.expect("batch").into_inner()
}

/// The batch left one capture object naming its keys, model, run, rows,
/// time and request id, and its input reads back as the rows it served.
async fn batch_captured_as_its_keys(stack: &Stack, batch: &PredictBatchResponse, run: &str) {
    let batches = capture::batches_since(&stack.bucket, v("v1"), None).await.expect("captured batches");
    let [captured] = &batches[..] else { panic!("one captured batch: {batches:?}") };
    assert_eq!(
        (captured.input_key.as_str(), captured.output_key.as_str(), captured.run.as_str(), captured.rows),
        (EVAL_KEY, batch.output_key.as_str(), run, batch.rows_read)
    );
    assert_eq!((captured.model, captured.request_id.as_str(), captured.share), (v("v1"), BATCH_REQUEST_ID, 1.0));
    assert!(chrono::Utc::now() - captured.time < chrono::TimeDelta::minutes(5), "{captured:?}");
    let names: Arc<[String]> = vec!["att1".to_owned(), "att2".to_owned()].into();
    let rows = capture::batch_rows(&stack.bucket, captured, names.clone()).await.expect("read").expect("input kept");
    let served = predict_request(&stack.get(EVAL_KEY).await.expect("eval file"));
    assert_eq!(rows.len() as u64, batch.rows_read);
    for (i, row) in served.rows.iter().enumerate() {
        assert_eq!((rows.entity_id[i], rows.device[i].as_str()), (row.entity_id, row.device.as_str()), "row {i}");
        let first_two: Vec<u32> = rows.attributes(i).iter().map(|&a| u32::from(a)).collect();
        assert_eq!(first_two, row.attribute_values[..2], "row {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_capture_queue_drops_and_counts_rows_and_fails_no_request() {
    let mut stack = Stack::new().await;
    let v1_run = stack.train("v1").await;
    let requests = Arc::new(requests(&stack, REQUESTS, ROWS).await);
    let mut config = stack.serve_config();
    config.capture_sample = 1.0;
    config.shadow_queue = 1;
    config.shadow_flush_rows = 1_000;
    let (serve, metrics_addr) = stack.start_serve_with_metrics(config).await;
    wait_until_serving(&serve).await;
    let answers = send_all(&serve.client, &requests).await;
    assert_eq!(answers.len(), REQUESTS, "no request fails");
    let metrics = parse_metrics(&scrape(metrics_addr).await.2);
    let dropped = metrics.value("crs_serve_capture_dropped_rows_total", &[("model", "v1"), ("reason", "queue_full")]);
    serve.stop().await.expect("clean stop");
    let (_, ids) = captured_since(&stack, None, &requests, &v1_run).await;
    println!("{dropped} of {} rows dropped with a queue of 1", REQUESTS * ROWS);
    assert_eq!(dropped % ROWS as f64, 0.0, "whole requests are dropped");
    assert_eq!(ids.len() as f64, (REQUESTS * ROWS) as f64 - dropped, "what is not dropped is captured");
}
