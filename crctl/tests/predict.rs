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
