//! SIGTERM or Ctrl+C: no new work, but requests in flight finish.

use std::io::Write;
use std::time::Duration;

use crs_domain::data::synth::{ATTRIBUTES, SynthSpec, write_prediction_input};
use crs_proto::serve::PredictBatchRequest;
use crs_testkit::{Stack, gunzip, wait_until, wait_until_serving};

const BIG_INPUT: &str = "data/predict/input/big.csv.gz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_batch_in_flight_finish() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let spec = SynthSpec { first_entity: 1_000_000, keywords: 20_000, attributes: ATTRIBUTES, seed: 9 };
    let rows = write_prediction_input(&spec, &mut gzip).expect("generate");
    gzip.flush().expect("flush");
    stack.put(BIG_INPUT, gzip.finish().expect("gzip")).await;

    let serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut client = serve.client.clone();
    let batch = tokio::spawn(async move {
        client
            .predict_batch(PredictBatchRequest {
                input_key: BIG_INPUT.into(),
                output_key: Some("data/predict/output/test/big.csv.gz".into()),
                ..Default::default()
            })
            .await
    });
    // The batch's upload exists once its request is being handled.
    let output_dir = stack.bucket_dir().join("data/predict/output/test");
    wait_until(Duration::from_secs(30), "the batch's upload", || {
        let started = std::fs::read_dir(&output_dir).is_ok_and(|mut entries| entries.next().is_some());
        async move { started }
    })
    .await;
    assert!(!batch.is_finished(), "the batch ended before shutdown began; make the input larger");

    serve.stop().await.expect("the service stops cleanly");
    let response = batch.await.expect("task").expect("the batch in flight completes").into_inner();
    assert_eq!(response.rows_read, rows);
    let output = gunzip(&stack.get("data/predict/output/test/big.csv.gz").await.expect("the output is whole"));
    assert_eq!(output.lines().count() as u64, response.rows_written + 1);
}
