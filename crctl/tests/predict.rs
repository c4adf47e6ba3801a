//! `crctl predict` against a real serve-service: requests stay within the
//! server's row limit whatever the length of the rows.

use std::process::Command;

use crs_testkit::{Stack, wait_until_serving};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_never_sends_more_rows_than_batch_rows() {
    let mut stack = Stack::new().await;
    stack.train("v0").await;
    let mut config = stack.serve_config();
    config.model_ver = "v0".parse().expect("v0");
    config.max_predict_rows = 100;
    let serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;

    // v0 reads no attributes, so its input rows can be a few bytes each.
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("rows.csv");
    let devices = ["Computer", "Smartphone", "Tablet"];
    let rows: String = (0..2000).map(|i| format!("{},0,{}\n", 1_000 + i / 3, devices[i % 3])).collect();
    std::fs::write(&input, format!("entity_id,att1,device\n{rows}")).expect("write input");

    let output = Command::new(env!("CARGO_BIN_EXE_crctl"))
        // Nothing from the developer's shell (TLS_CA, AUTH_TOKEN, ...).
        .env_clear()
        .args(["predict", "--json", "--batch-rows", "100", "--input"])
        .arg(&input)
        .env("SERVE_ADDR", serve.addr.to_string())
        .output()
        .expect("run crctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "crctl predict failed: {stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json output");
    assert_eq!(answer["model_ver"], "v0");
    assert_eq!(answer["predictions"].as_array().expect("predictions").len(), 2000);
    serve.stop().await.expect("clean stop");
}

/// `crctl predict-batch` over a prefix, split in two: by `--shard`, and by the
/// index an Indexed Job gives its pod. The summary comes with the last shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_batch_splits_a_prefix_between_shards() {
    let mut stack = Stack::new().await;
    let run = stack.train("v1").await;
    let serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let input = stack
        .bucket
        .get(&crs_testkit::key_of(crs_platform::storage::layout::PREDICTION_INPUT_KEY))
        .await
        .expect("input");
    for name in ["a.csv.gz", "b.csv.gz", "c.csv.gz"] {
        stack
            .bucket
            .put(&crs_testkit::key_of(&format!("data/predict/input/many/{name}")), input.clone())
            .await
            .expect("write");
    }
    let crctl = |args: &[&str], env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_crctl"))
            .env_clear()
            .args(["predict-batch", "--input", "data/predict/input/many/"])
            .args(args)
            .envs(env.iter().copied())
            .env("SERVE_ADDR", serve.addr.to_string())
            .output()
            .expect("run crctl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "crctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        stdout
    };
    let first = crctl(&["--shard", "0/2"], &[]);
    let folder = format!("data/predict/output/v1/{run}/many");
    assert!(first.contains(&format!("data/predict/input/many/a.csv.gz -> {folder}/a.csv.gz")), "{first}");
    assert!(first.contains(&format!("data/predict/input/many/c.csv.gz -> {folder}/c.csv.gz")), "{first}");
    assert!(first.contains("shard 0/2 of data/predict/input/many/: 2 of 3 files (2 predicted, 0 skipped)"), "{first}");
    assert!(first.contains("summary: not yet"), "{first}");
    let second = crctl(&["--shards", "2", "--json"], &[("JOB_COMPLETION_INDEX", "1")]);
    let answer: serde_json::Value = serde_json::from_str(&second).expect("json output");
    assert_eq!(answer["files"][0]["input_key"], "data/predict/input/many/b.csv.gz", "{second}");
    assert_eq!(answer["summary_key"], format!("{folder}/_SUMMARY.json"), "{second}");
    let again = crctl(&["--shard", "0/2"], &[]);
    assert!(again.contains("(0 predicted, 2 skipped)"), "{again}");
    serve.stop().await.expect("clean stop");
}
