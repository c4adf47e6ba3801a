//! Stock Python clients, unmodified, against the services: Triton's
//! `tritonclient[grpc]` over the Open Inference Protocol (answers equal to
//! `Predict` for the same rows) and `grpcio-reflection`'s v1alpha client
//! (tests/python/stock_clients.py). Skipped, visibly, without those packages.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::{GetModelRequest, PredictRequest};
use crs_testkit::{Stack, predict_request, wait_until_serving};

const PACKAGES: &str = "tritonclient[grpc] grpcio-reflection numpy";

/// Whether python3 can import what the script needs.
fn python_has_the_clients() -> bool {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import numpy, grpc, tritonclient.grpc, grpc_reflection.v1alpha.proto_reflection_descriptor_database",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    probe.is_ok_and(|status| status.success())
}

/// One case for the script: the rows in the model's attribute order, and what Predict answered.
fn case(request: &PredictRequest, attributes: &[String], cr: &[f64]) -> serde_json::Value {
    let columns: Vec<usize> = attributes
        .iter()
        .map(|name| request.attribute_names.iter().position(|n| n == name).expect("the input has every attribute"))
        .collect();
    serde_json::json!({
        "entity_id": request.rows.iter().map(|r| r.entity_id).collect::<Vec<_>>(),
        "device": request.rows.iter().map(|r| r.device.as_str()).collect::<Vec<_>>(),
        "attributes": request.rows.iter().map(|r| columns.iter().map(|&c| r.attribute_values[c]).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "cr": cr,
    })
}

/// Runs the script to its end, at most `within`; its exit status and output.
fn run_script(args: &[&str], within: Duration) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/stock_clients.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
        // Keep the source tree clean of bytecode caches.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let deadline = Instant::now() + within;
    while child.try_wait().expect("wait for python3").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("python3 output");
    let text = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_and_grpcio_reflection_work_unmodified() {
    if !python_has_the_clients() {
        // Straight to stderr, past the test harness's capture, so the skip shows in a passing run.
        let _ = writeln!(std::io::stderr(), "skipped: python {PACKAGES} not installed (pip install {PACKAGES})");
        return;
    }
    let mut stack = Stack::new().await;
    let run_id = stack.train("v1").await;
    let mut serve = stack.start_serve(stack.serve_config()).await;
    let train = stack.start_train(stack.train_config()).await;
    wait_until_serving(&serve).await;

    let attributes =
        serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner().attribute_names;
    let input = predict_request(&stack.get(PREDICTION_INPUT_KEY).await.expect("input"));
    let mut cases = Vec::new();
    for count in [1, 1_000] {
        let mut request = input.clone();
        request.rows = input.rows.iter().cycle().take(count).cloned().collect();
        let cr = serve.client.predict(request.clone()).await.expect("predict").into_inner().cr;
        cases.push(case(&request, &attributes, &cr));
    }
    let spec = serde_json::json!({ "model": "v1", "run_id": run_id, "attributes": attributes, "cases": cases });
    let dir = tempfile::tempdir().expect("temp dir");
    let cases_path = dir.path().join("cases.json");
    std::fs::write(&cases_path, spec.to_string()).expect("write cases");

    let (serve_addr, train_addr) = (serve.addr.to_string(), train.addr.to_string());
    let cases_arg = cases_path.to_str().expect("UTF-8 temp path").to_owned();
    let (ok, output) = tokio::task::spawn_blocking(move || {
        run_script(
            &["--serve-addr", &serve_addr, "--train-addr", &train_addr, "--cases", &cases_arg],
            Duration::from_secs(180),
        )
    })
    .await
    .expect("script task");
    assert!(ok, "the stock Python clients failed:\n{output}");
    assert!(output.contains("all stock-client checks passed"), "{output}");
    let _ = writeln!(std::io::stderr(), "{output}");

    serve.stop().await.expect("clean stop");
    train.stop().await.expect("clean stop");
}
