//! Batches in flight: SIGTERM or Ctrl+C lets them finish within the grace
//! period and cuts them off after it; a client's deadline cancels one; and no
//! more than MAX_CONCURRENT_BATCHES run at once. Whatever stops a batch, nothing
//! is left at or beside its output key.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crs_domain::data::synth::{ATTRIBUTES, SynthSpec, write_prediction_input};
use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::PredictBatchRequest;
use crs_testkit::{Stack, gunzip, parse_metrics, scrape, wait_until, wait_until_serving};
use tonic::Code;

const BIG_INPUT: &str = "data/predict/input/big.csv.gz";
const OUTPUT_FOLDER: &str = "data/predict/output/test";

/// A stack with a v1 run and an input that takes a debug build well over a
/// second to predict; the input's data rows.
async fn stack_with_big_input() -> (Stack, u64) {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let spec = SynthSpec { first_entity: 1_000_000, keywords: 20_000, attributes: ATTRIBUTES, seed: 9 };
    let rows = write_prediction_input(&spec, &mut gzip).expect("generate");
    gzip.flush().expect("flush");
    stack.put(BIG_INPUT, gzip.finish().expect("gzip")).await;
    (stack, rows)
}

fn batch(output: &str) -> PredictBatchRequest {
    PredictBatchRequest {
        input_key: BIG_INPUT.into(),
        output_key: Some(format!("{OUTPUT_FOLDER}/{output}")),
        ..Default::default()
    }
}

/// Every file in the output folder: outputs and upload staging files alike.
fn output_files(stack: &Stack) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(stack.bucket_dir().join(OUTPUT_FOLDER)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("folder entry").path()).collect();
    files.sort();
    files
}

/// How long any awaited step of these tests may take.
const WITHIN: Duration = Duration::from_secs(30);

/// Waits until the output folder holds nothing: no output, no staging file.
async fn wait_until_empty(stack: &Stack, what: &str) {
    wait_until(WITHIN, what, || {
        let empty = output_files(stack).is_empty();
        async move { empty }
    })
    .await;
}

/// Waits until a batch's upload is open: its staging file is in the output folder.
async fn wait_until_uploading(stack: &Stack) {
    wait_until(WITHIN, "a batch's upload to open", || {
        let open = output_files(stack).iter().any(|f| f.to_string_lossy().contains('#'));
        async move { open }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_batch_in_flight_finish() {
    let (stack, rows) = stack_with_big_input().await;
    let serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut client = serve.client.clone();
    let batch = tokio::spawn(async move { client.predict_batch(batch("big.csv.gz")).await });
    wait_until_uploading(&stack).await;
    assert!(!batch.is_finished(), "the batch ended before shutdown began; make the input larger");

    serve.stop().await.expect("the service stops cleanly");
    let response = batch.await.expect("task").expect("the batch in flight completes").into_inner();
    assert_eq!(response.rows_read, rows);
    let output = gunzip(&stack.get(&format!("{OUTPUT_FOLDER}/big.csv.gz")).await.expect("the output is whole"));
    assert_eq!(output.lines().count() as u64, response.rows_written + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_still_running_after_the_grace_period_is_cut_off_and_leaves_nothing() {
    let (stack, _) = stack_with_big_input().await;
    let mut config = stack.serve_config();
    config.common.shutdown_grace_secs = 0;
    let mut serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;
    let mut client = serve.client.clone();
    let batch = tokio::spawn(async move { client.predict_batch(batch("big.csv.gz")).await });
    wait_until_uploading(&stack).await;

    serve.trigger_shutdown();
    serve.stopped(Duration::from_secs(30)).await.expect("the service stops cleanly");
    let refused = batch.await.expect("task").expect_err("the batch was cut off");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("cut off by shutdown"), "{refused:?}");
    wait_until_empty(&stack, "the cut-off upload's abort").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_cancels_the_batch_and_leaves_nothing() {
    let (stack, _) = stack_with_big_input().await;
    let (serve, metrics) = stack.start_serve_with_metrics(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut request = tonic::Request::new(batch("big.csv.gz"));
    request.set_timeout(Duration::from_millis(300));
    let refused = serve.client.clone().predict_batch(request).await.expect_err("the deadline passes first");
    assert!(matches!(refused.code(), Code::Cancelled | Code::DeadlineExceeded), "{refused:?}");

    wait_until(WITHIN, "the batch's count as cancelled", || async move {
        let (_, _, text) = scrape(metrics).await;
        parse_metrics(&text).get("crs_serve_batches_cancelled_total", &[]) == Some(1.0)
    })
    .await;
    wait_until_empty(&stack, "the cancelled upload's abort").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_beyond_max_concurrent_batches_is_refused_with_resource_exhausted() {
    let (stack, _) = stack_with_big_input().await;
    let mut config = stack.serve_config();
    config.max_concurrent_batches = 1;
    let serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;
    let mut client = serve.client.clone();
    let first = tokio::spawn(async move { client.predict_batch(batch("first.csv.gz")).await });
    wait_until_uploading(&stack).await;

    let refused = serve.client.clone().predict_batch(batch("second.csv.gz")).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("MAX_CONCURRENT_BATCHES=1"), "{refused:?}");
    assert!(!first.is_finished(), "the first batch ended before the second was sent; make the input larger");
    first.await.expect("task").expect("the first batch completes");
    // Its place is free again (a small input will do).
    let third = PredictBatchRequest { input_key: PREDICTION_INPUT_KEY.into(), ..batch("third.csv.gz") };
    serve.client.clone().predict_batch(third).await.expect("a batch once the first is done");
}
