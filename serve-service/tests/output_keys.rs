//! Batch outputs land only under the output prefix: the default key may be
//! rewritten, an explicit key that exists only with `overwrite`, and a key in a
//! protected area or outside the prefix is refused with nothing written.

use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::{DeviceFormat, PredictBatchRequest};
use crs_testkit::{Stack, gunzip, wait_until_serving};
use tonic::Code;

fn batch(output: Option<&str>) -> PredictBatchRequest {
    PredictBatchRequest {
        input_key: PREDICTION_INPUT_KEY.into(),
        output_key: output.map(str::to_owned),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_keys_and_keys_outside_the_prefix_are_refused_and_left_alone() {
    let mut stack = Stack::new().await;
    let run_id = stack.train("v1").await;
    let mut serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;

    let protected = [
        "model/v1/LATEST".to_owned(),
        format!("model/v1/{run_id}/model.json"),
        format!("model/v1/{run_id}/metadata.json"),
        "config/v1/params.yaml".to_owned(),
        "data/train/train.csv.gz".to_owned(),
        "data/train/eval.csv.gz".to_owned(),
        PREDICTION_INPUT_KEY.to_owned(),
    ];
    for key in &protected {
        let before = stack.get(key).await;
        for overwrite in [false, true] {
            let request = PredictBatchRequest { overwrite, ..batch(Some(key)) };
            let status = serve.client.predict_batch(request).await.expect_err(key);
            assert_eq!(status.code(), Code::InvalidArgument, "{key}: {status:?}");
            assert!(status.message().contains(key) && status.message().contains("never batch outputs"), "{status:?}");
        }
        assert_eq!(stack.get(key).await, before, "{key} was touched");
    }
    for key in ["out/a.csv.gz", "data/predict/outputs/a.csv.gz", "a.csv.gz"] {
        let status = serve.client.predict_batch(batch(Some(key))).await.expect_err(key);
        assert_eq!(status.code(), Code::InvalidArgument, "{key}: {status:?}");
        assert!(status.message().contains("only be written under data/predict/output/"), "{status:?}");
        assert!(stack.get(key).await.is_none(), "{key} was written");
    }
    assert_eq!(stack.latest("v1").as_deref(), Some(run_id.as_str()), "LATEST moved");

    // The default key may be rewritten.
    let first = serve.client.predict_batch(batch(None)).await.expect("default output").into_inner();
    let again = serve.client.predict_batch(batch(None)).await.expect("default output again").into_inner();
    assert_eq!(first.output_key, again.output_key);
    assert_eq!(first.output_key, format!("data/predict/output/v1/{run_id}/prediction_output.csv.gz"));

    // An explicit key: written once, then only with overwrite.
    let mine = "data/predict/output/exports/mine.csv.gz";
    serve.client.predict_batch(batch(Some(mine))).await.expect("a new explicit key");
    let written = stack.get(mine).await.expect("written");
    stack.put(mine, b"keep me".to_vec()).await;
    let status = serve.client.predict_batch(batch(Some(mine))).await.expect_err("exists");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("already exists; set overwrite"), "{status:?}");
    assert_eq!(stack.get(mine).await.as_deref(), Some(&b"keep me"[..]), "refused, yet written");
    let request = PredictBatchRequest { overwrite: true, ..batch(Some(mine)) };
    serve.client.predict_batch(request).await.expect("overwrite");
    assert_eq!(stack.get(mine).await, Some(written));
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_prefix_and_device_codes() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let mut config = stack.serve_config();
    config.output_prefix = crs_platform::storage::layout::OutputPrefix::parse("exports/").expect("prefix");
    config.output_device = crs_platform::predictions::batch::DeviceColumn::Code;
    let mut serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;

    let response = serve.client.predict_batch(batch(None)).await.expect("default output").into_inner();
    assert!(response.output_key.starts_with("exports/v1/"), "{}", response.output_key);
    let status = serve.client.predict_batch(batch(Some("data/predict/output/a.csv.gz"))).await.expect_err("outside");
    assert!(status.message().contains("only be written under exports/"), "{status:?}");

    // OUTPUT_DEVICE=code by default here; a request may ask for names back.
    let codes = gunzip(&stack.get(&response.output_key).await.expect("output"));
    let request =
        PredictBatchRequest { device_format: DeviceFormat::Name as i32, ..batch(Some("exports/names.csv.gz")) };
    serve.client.predict_batch(request).await.expect("names");
    let names = gunzip(&stack.get("exports/names.csv.gz").await.expect("output"));
    assert_eq!(codes.lines().count(), names.lines().count());
    for (code, name) in codes.lines().skip(1).zip(names.lines().skip(1)) {
        let (c, n): (Vec<&str>, Vec<&str>) = (code.split(',').collect(), name.split(',').collect());
        let expected = ["Computer", "Smartphone", "Tablet"][c[1].parse::<usize>().expect("a device code")];
        assert_eq!((c[0], expected, c[2]), (n[0], n[1], n[2]));
    }
    serve.stop().await.expect("clean stop");
}
