//! Bad requests, bad files and bad runs: each answered with the right code and
//! a message naming the problem, and nothing half-written left behind.

use std::time::Duration;

use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::{GetModelRequest, LoadModelRequest, PredictBatchRequest, PredictRequest, Row};
use crs_testkit::{Stack, predict_request, serving_status, wait_until_serving, wait_until_status};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("request must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(needle), "{:?} does not mention {needle:?}", status.message());
}

async fn sample_request(stack: &Stack) -> PredictRequest {
    let mut request = predict_request(&stack.get(PREDICTION_INPUT_KEY).await.expect("input"));
    request.rows.truncate(5);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_it_starts_not_serving_and_refuses_predictions() {
    let stack = Stack::new().await;
    let mut serve = stack.start_serve(stack.serve_config()).await;
    // The first look for a model ends before the service answers anything.
    wait_until_status(&serve, ServingStatus::NotServing).await;
    let request = sample_request(&stack).await;
    assert_status(serve.client.predict(request).await, Code::FailedPrecondition, "no model loaded");
    assert_status(
        serve
            .client
            .predict_batch(PredictBatchRequest {
                input_key: PREDICTION_INPUT_KEY.into(),
                output_key: None,
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "no model loaded",
    );
    assert_status(
        serve.client.get_model(GetModelRequest::default()).await,
        Code::FailedPrecondition,
        "production run of model v1",
    );
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_predict_requests_name_the_row_and_field() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let mut serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let good = sample_request(&stack).await;

    let mut request = good.clone();
    request.rows[2].device = "Phone".into();
    assert_status(
        serve.client.predict(request).await,
        Code::InvalidArgument,
        "rows[2].device: unknown device \"Phone\"",
    );

    let mut request = good.clone();
    request.rows[1].attribute_values[4] = 7;
    assert_status(
        serve.client.predict(request).await,
        Code::InvalidArgument,
        "rows[1].attribute_values: attribute 'att5' must be 0 or 1, found 7",
    );

    let mut request = good.clone();
    request.rows[3].attribute_values.pop();
    assert_status(serve.client.predict(request).await, Code::InvalidArgument, "rows[3].attribute_values: has 159");

    let model = serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner();
    let needed = model.attribute_names.first().expect("the model uses attributes").clone();
    let mut request = good.clone();
    let position = request.attribute_names.iter().position(|n| *n == needed).expect("in input");
    request.attribute_names.remove(position);
    for row in &mut request.rows {
        row.attribute_values.remove(position);
    }
    assert_status(serve.client.predict(request).await, Code::InvalidArgument, &needed);

    let mut request = good.clone();
    request.attribute_names[1] = request.attribute_names[0].clone();
    assert_status(serve.client.predict(request).await, Code::InvalidArgument, "appears twice");

    let row = Row { entity_id: 1, device: "Tablet".into(), attribute_values: good.rows[0].attribute_values.clone() };
    let request =
        PredictRequest { attribute_names: good.attribute_names.clone(), rows: vec![row; 10_001], ..Default::default() };
    assert_status(serve.client.predict(request).await, Code::InvalidArgument, "the limit is 10000");

    let empty = PredictRequest { attribute_names: good.attribute_names.clone(), rows: vec![], ..Default::default() };
    assert!(serve.client.predict(empty).await.expect("empty request").into_inner().cr.is_empty());
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_and_leave_no_output() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let mut serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let batch = |input: &str, output: &str| PredictBatchRequest {
        input_key: input.into(),
        output_key: Some(output.into()),
        ..Default::default()
    };

    assert_status(
        serve.client.predict_batch(batch("data/predict/input/nothing.csv", "data/predict/output/test/a.csv.gz")).await,
        Code::NotFound,
        "data/predict/input/nothing.csv",
    );
    assert_status(
        serve.client.predict_batch(batch("../etc/passwd", "data/predict/output/test/a.csv.gz")).await,
        Code::InvalidArgument,
        "unsafe key",
    );
    assert_status(
        serve.client.predict_batch(batch(PREDICTION_INPUT_KEY, "/abs/out.csv")).await,
        Code::InvalidArgument,
        "unsafe key",
    );

    // A bad device deep in the file.
    let input = crs_testkit::gunzip(&stack.get(PREDICTION_INPUT_KEY).await.expect("input"));
    let mut lines: Vec<String> = input.lines().map(str::to_owned).collect();
    let last = lines.len() - 1;
    lines[last] = lines[last].replace("Computer", "Fridge").replace("Smartphone", "Fridge").replace("Tablet", "Fridge");
    stack.put("data/predict/input/bad.csv", lines.join("\n")).await;
    assert_status(
        serve.client.predict_batch(batch("data/predict/input/bad.csv", "data/predict/output/test/bad.csv.gz")).await,
        Code::InvalidArgument,
        &format!("data/predict/input/bad.csv: row {last}, column 'device': unknown device \"Fridge\""),
    );
    assert!(stack.get("data/predict/output/test/bad.csv.gz").await.is_none(), "a failed batch left an output object");
    assert!(
        stack.bucket.list(&BucketKey::parse("data/predict/output/test").expect("key")).await.expect("list").is_empty()
    );

    // A file without an attribute the model needs.
    let model = serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner();
    let needed = &model.attribute_names[0];
    let header = lines[0].split(',').collect::<Vec<_>>();
    let drop_at = header.iter().position(|h| h == needed).expect("column");
    let without: Vec<String> = lines
        .iter()
        .take(20)
        .map(|l| l.split(',').enumerate().filter(|(i, _)| *i != drop_at).map(|(_, f)| f).collect::<Vec<_>>().join(","))
        .collect();
    stack.put("data/predict/input/narrow.csv", without.join("\n")).await;
    assert_status(
        serve
            .client
            .predict_batch(batch("data/predict/input/narrow.csv", "data/predict/output/test/narrow.csv.gz"))
            .await,
        Code::InvalidArgument,
        &format!("missing required column(s): {needed}"),
    );
    assert!(stack.get("data/predict/output/test/narrow.csv.gz").await.is_none());

    let notice = stack
        .webhooks()
        .wait_for(Duration::from_secs(5), |b| b["text"].as_str().is_some_and(|t| t.contains("bad.csv failed")))
        .await
        .expect("batch failure webhook");
    assert!(notice.to_string().contains("Fridge"), "{notice}");
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_run_is_refused_and_the_old_one_keeps_serving() {
    let mut stack = Stack::new().await;
    let good = stack.train("v1").await;
    // Follows LATEST, which the test points at a corrupted copy of the run.
    let mut config = stack.serve_config();
    config.model_run = "latest".parse().expect("selection");
    let mut serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;

    let bad = format!("{}-corrupt", good);
    for file in ["model.json", "model.json.sha256", "metadata.json"] {
        let mut bytes = stack.get(&format!("model/v1/{good}/{file}")).await.expect("run file");
        if file == "model.json" {
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
        }
        stack.put(&format!("model/v1/{bad}/{file}"), bytes).await;
    }
    stack.put("model/v1/LATEST", format!("{bad}\n")).await;

    let notice = stack
        .webhooks()
        .wait_for(Duration::from_secs(10), |b| b["text"].as_str().is_some_and(|t| t.contains("refused")))
        .await
        .expect("refusal webhook");
    // The notice is sent once the run was refused: the good run stayed.
    assert!(notice.to_string().contains("checksum mismatch"), "{notice}");
    let model = serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner();
    assert_eq!(model.run_id, good);
    let mut health = serve.health();
    assert_eq!(serving_status(&mut health).await, ServingStatus::Serving);
    let request = sample_request(&stack).await;
    assert_eq!(serve.client.predict(request).await.expect("still predicting").into_inner().run_id, good);

    // Asking for it explicitly is refused the same way.
    assert_status(
        serve.client.load_model(LoadModelRequest { model_ver: "v1".into(), run: bad.clone() }).await,
        Code::FailedPrecondition,
        "checksum mismatch",
    );
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_model_loads_versions_beside_the_default_and_refuses_unknown_ones() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let v0 = stack.train("v0").await;
    let mut serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;

    assert_status(
        serve.client.load_model(LoadModelRequest { model_ver: "v9".into(), run: "latest".into() }).await,
        Code::InvalidArgument,
        "unknown model version \"v9\" (known: v0, v1",
    );
    assert_status(
        serve
            .client
            .load_model(LoadModelRequest { model_ver: "v1".into(), run: "20200101T000000000Z-000000".into() })
            .await,
        Code::NotFound,
        "20200101T000000000Z-000000",
    );
    assert_status(
        serve.client.load_model(LoadModelRequest { model_ver: "v1".into(), run: "../../x".into() }).await,
        Code::InvalidArgument,
        "not a run id",
    );
    let info = serve
        .client
        .load_model(LoadModelRequest { model_ver: "v0".into(), run: v0.clone() })
        .await
        .expect("load v0")
        .into_inner();
    assert_eq!(
        (info.model_ver.as_str(), info.run_id.as_str(), info.selection.as_str()),
        ("v0", v0.as_str(), v0.as_str())
    );
    // v0 loads beside the default version, which requests that name none still get.
    let request = sample_request(&stack).await;
    let answer = serve.client.predict(request.clone()).await.expect("predict with the default").into_inner();
    assert_eq!(answer.model_ver, "v1");
    let request = PredictRequest { model_ver: "v0".into(), ..request };
    let answer = serve.client.predict(request).await.expect("predict with v0").into_inner();
    assert_eq!((answer.model_ver.as_str(), answer.run_id.as_str()), ("v0", v0.as_str()));
    serve.stop().await.expect("clean stop");
}
