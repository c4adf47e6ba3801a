//! Stock clients, unmodified, against the services: Triton's
//! `tritonclient[grpc]` over the Open Inference Protocol (answers equal to
//! `Predict` for the same rows) and `grpcio-reflection`'s v1alpha client
//! (tests/python/stock_clients.py); `tritonclient[http]` against the REST API
//! (tests/python/stock_http_client.py); and `curl` in a shell script
//! (tests/scripts/rest_curl.sh). Skipped, visibly, without those programs,
//! except under CI (`CI` set), where a missing one fails the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crs_platform::service::security::Secret;
use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, PredictRequest};
use crs_testkit::{HttpPorts, Running, Stack, predict_request, wait_until_serving};
use tonic::transport::Channel;

const PACKAGES: &str = "tritonclient[grpc] grpcio-reflection numpy";
const HTTP_PACKAGES: &str = "tritonclient[http] numpy";

/// Whether `program` runs `args` successfully: the probe for a client.
fn runs(program: &str, args: &[&str]) -> bool {
    let probe = Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    probe.is_ok_and(|status| status.success())
}

/// Whether python3 can import what the script needs.
fn python_has_the_clients() -> bool {
    runs(
        "python3",
        &["-c", "import numpy, grpc, tritonclient.grpc, grpc_reflection.v1alpha.proto_reflection_descriptor_database"],
    )
}

/// Whether a client is there to test; if not, a skip message, or a failure under CI.
fn available(present: bool, what: &str, install: &str) -> bool {
    if present {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI: {what} is not installed ({install})");
    // Straight to stderr, past the test harness's capture, so the skip shows in a passing run.
    let _ = writeln!(std::io::stderr(), "skipped: {what} not installed ({install})");
    false
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

/// Runs `program` on the test script `script` (under tests/) to its end, at
/// most `within`; its exit status and output.
fn run_script(program: &str, script: &str, args: &[&str], within: Duration) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let mut child = Command::new(program)
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
    if !available(python_has_the_clients(), &format!("python {PACKAGES}"), &format!("pip install {PACKAGES}")) {
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
            "python3",
            "python/stock_clients.py",
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

/// The bearer token of the REST tests: loads and unloads need it.
const TOKEN: &str = "stock-rest-token-8a7b6c";

/// A stack with a v1 run and serve-service with its REST API and the token;
/// the cases file (1 and 1,000 rows with Predict's answers) in `dir`.
async fn rest_stack(dir: &Path) -> (Stack, Running<ServeServiceClient<Channel>>, HttpPorts, PathBuf) {
    let mut stack = Stack::new().await;
    let run_id = stack.train("v1").await;
    let mut config = stack.serve_config();
    config.common.security.token.auth_token = Some(Secret::new(TOKEN));
    let (mut serve, ports) = stack.start_serve_with_http(config).await;
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
    let cases_path = dir.join("cases.json");
    std::fs::write(&cases_path, spec.to_string()).expect("write cases");
    (stack, serve, ports, cases_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_works_unmodified_with_binary_and_json_tensors() {
    let probe = runs("python3", &["-c", "import numpy, tritonclient.http"]);
    if !available(probe, &format!("python {HTTP_PACKAGES}"), &format!("pip install {HTTP_PACKAGES}")) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (_stack, serve, ports, cases) = rest_stack(dir.path()).await;
    let url = ports.http.to_string();
    let cases = cases.to_str().expect("UTF-8 temp path").to_owned();
    let (ok, output) = tokio::task::spawn_blocking(move || {
        let args = ["--url", &url, "--token", TOKEN, "--cases", &cases];
        run_script("python3", "python/stock_http_client.py", &args, Duration::from_secs(180))
    })
    .await
    .expect("script task");
    assert!(ok, "tritonclient.http failed:\n{output}");
    assert!(output.contains("all tritonclient.http checks passed"), "{output}");
    let _ = writeln!(std::io::stderr(), "{output}");
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_in_a_shell_script_gets_what_the_documentation_says() {
    if !available(runs("curl", &["--version"]), "curl", "apt-get install curl") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (_stack, serve, ports, _) = rest_stack(dir.path()).await;
    let base = format!("http://{}", ports.http);
    let (ok, output) = tokio::task::spawn_blocking(move || {
        run_script("bash", "scripts/rest_curl.sh", &[&base, TOKEN], Duration::from_secs(120))
    })
    .await
    .expect("script task");
    assert!(ok, "the curl script failed:\n{output}");
    assert!(output.contains("all curl checks passed"), "{output}");
    let _ = writeln!(std::io::stderr(), "{output}");
    serve.stop().await.expect("clean stop");
}
