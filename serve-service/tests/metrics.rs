//! The Prometheus endpoint: well-formed OpenMetrics text whose counters and
//! histograms move as requests, batches, loads, unloads and swaps happen.

use std::time::Duration;

use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::inference::{
    ModelInferRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerLiveRequest,
};
use crs_proto::serve::PredictBatchRequest;
use crs_testkit::{Metrics, Stack, parse_metrics, predict_request, scrape, wait_until_serving};

async fn metrics(addr: std::net::SocketAddr) -> Metrics {
    let (status, content_type, body) = scrape(addr).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    parse_metrics(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_follow_the_requests() {
    let mut stack = Stack::new().await;
    let first_run = stack.train("v1").await;
    let (mut serve, addr) = stack.start_serve_with_metrics(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut v2 = GrpcInferenceServiceClient::new(serve.channel());

    // A family shows once it has a series: the load has happened, no request yet.
    let before = metrics(addr).await;
    assert_eq!(before.types.get("crs_serve_model_loads").map(String::as_str), Some("counter"));
    assert_eq!(before.types.get("crs_serve_model_loaded").map(String::as_str), Some("gauge"));
    assert_eq!(before.get("crs_serve_model_loaded", &[("model", "v1"), ("run_id", &first_run)]), Some(1.0));
    assert_eq!(before.value("crs_serve_model_loads_total", &[("model", "v1")]), 1.0);

    let mut rows = predict_request(&stack.get(PREDICTION_INPUT_KEY).await.expect("input"));
    rows.rows.truncate(3);
    for _ in 0..3 {
        serve.client.predict(rows.clone()).await.expect("predict");
    }
    let mut bad = rows.clone();
    bad.rows[0].device = "Phone".into();
    serve.client.predict(bad).await.expect_err("bad device");
    v2.server_live(ServerLiveRequest {}).await.expect("live");
    let unknown = ModelInferRequest { model_name: "v9".into(), ..Default::default() };
    v2.model_infer(unknown).await.expect_err("unknown model");
    let batch = PredictBatchRequest { input_key: PREDICTION_INPUT_KEY.into(), ..Default::default() };
    let done = serve.client.predict_batch(batch).await.expect("batch").into_inner();

    let after = metrics(addr).await;
    assert_eq!(after.types.get("crs_serve_requests").map(String::as_str), Some("counter"));
    assert_eq!(after.types.get("crs_serve_request_duration_seconds").map(String::as_str), Some("histogram"));
    let delta = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    let ok = [("rpc", "Predict"), ("model", "v1"), ("code", "OK")];
    assert_eq!(delta("crs_serve_requests_total", &ok), 3.0);
    let invalid = [("rpc", "Predict"), ("model", "v1"), ("code", "InvalidArgument")];
    assert_eq!(delta("crs_serve_requests_total", &invalid), 1.0);
    assert_eq!(delta("crs_serve_request_errors_total", &invalid), 1.0);
    assert_eq!(delta("crs_serve_request_errors_total", &ok), 0.0);
    let unknown = [("rpc", "ModelInfer"), ("model", ""), ("code", "NotFound")];
    assert_eq!(delta("crs_serve_requests_total", &unknown), 1.0, "an unknown model name is not a label value");
    let live = [("rpc", "ServerLive"), ("model", ""), ("code", "OK")];
    assert_eq!(delta("crs_serve_requests_total", &live), 1.0);
    let timed = [("rpc", "Predict"), ("model", "v1")];
    assert_eq!(delta("crs_serve_request_duration_seconds_count", &timed), 4.0);
    assert!(after.value("crs_serve_request_duration_seconds_sum", &timed) > 0.0);
    let inf = [("rpc", "Predict"), ("model", "v1"), ("le", "+Inf")];
    assert_eq!(delta("crs_serve_request_duration_seconds_bucket", &inf), 4.0);
    assert_eq!(delta("crs_serve_batch_rows_count", &[("model", "v1")]), 1.0);
    assert_eq!(delta("crs_serve_batch_rows_sum", &[("model", "v1")]), done.rows_written as f64);
    assert_eq!(delta("crs_serve_batch_duration_seconds_count", &[("model", "v1")]), 1.0);

    // Unload and load: the gauge goes and comes back; a new production run is a swap.
    let unload = RepositoryModelUnloadRequest { model_name: "v1".into(), ..Default::default() };
    v2.repository_model_unload(unload).await.expect("unload");
    let unloaded = metrics(addr).await;
    assert_eq!(unloaded.value("crs_serve_model_unloads_total", &[("model", "v1")]), 1.0);
    assert!(unloaded.series("crs_serve_model_loaded").is_empty(), "{:?}", unloaded.series("crs_serve_model_loaded"));
    let load = RepositoryModelLoadRequest { model_name: "v1".into(), ..Default::default() };
    v2.repository_model_load(load).await.expect("load");
    let loaded = metrics(addr).await;
    assert_eq!(loaded.value("crs_serve_model_loads_total", &[("model", "v1")]), 2.0);
    assert_eq!(loaded.value("crs_serve_model_swaps_total", &[("model", "v1")]), 0.0, "nothing was being served");

    // The same data again does not beat the champion by the gate's margin: promoted by hand.
    let second_run = stack.train("v1").await;
    stack.promote("v1", &second_run).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let swapped = loop {
        let now = metrics(addr).await;
        if now.value("crs_serve_model_swaps_total", &[("model", "v1")]) == 1.0 {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new run was never swapped in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(swapped.get("crs_serve_model_loaded", &[("model", "v1"), ("run_id", &second_run)]), Some(1.0));
    assert_eq!(swapped.get("crs_serve_model_loaded", &[("model", "v1"), ("run_id", &first_run)]), None);
    serve.stop().await.expect("clean stop");
}
