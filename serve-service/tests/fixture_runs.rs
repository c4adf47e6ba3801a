//! Runs written by earlier releases (committed under `testkit/fixtures`) still
//! load and serve, with the same predictions: rollback may point at them.

use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::{LoadModelRequest, PredictBatchRequest};
use crs_testkit::{Stack, fixture_dir, gunzip, predict_request, wait_until_serving};

const V1_RUN: &str = "20261201T210556681Z-9626e2";
const V0_RUN: &str = "20261201T210556880Z-ebae9d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_runs_load_serve_and_predict_as_when_they_were_written() {
    let stack = Stack::new().await;
    stack.install_fixture_runs();
    let input = std::fs::read(fixture_dir().join("prediction_input.csv.gz")).expect("fixture input");
    stack.put(PREDICTION_INPUT_KEY, input.clone()).await;

    let mut config = stack.serve_config();
    config.model_run = V1_RUN.parse().expect("run id");
    let mut serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;

    let response = serve
        .client
        .predict_batch(PredictBatchRequest {
            input_key: PREDICTION_INPUT_KEY.into(),
            output_key: None,
            ..Default::default()
        })
        .await
        .expect("batch with the fixture run")
        .into_inner();
    assert_eq!(response.run_id, V1_RUN);
    let output = gunzip(&stack.get(&response.output_key).await.expect("output"));
    let expected = std::fs::read_to_string(fixture_dir().join("v1_expected_output.csv")).expect("expected output");
    assert_eq!(output, expected, "the fixture run's predictions changed");

    let online = serve.client.predict(predict_request(&input)).await.expect("online").into_inner();
    let batch_rates: Vec<f64> =
        expected.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(online.cr, batch_rates, "online and batch agree on the fixture run");

    let request = LoadModelRequest { model_ver: "v0".into(), run: V0_RUN.into() };
    let info = serve.client.load_model(request).await.expect("load the v0 fixture").into_inner();
    assert_eq!((info.model_ver.as_str(), info.run_id.as_str()), ("v0", V0_RUN));
    serve.stop().await.expect("clean stop");
}
