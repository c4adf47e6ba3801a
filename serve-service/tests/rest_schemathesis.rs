//! `schemathesis` (pinned in `tests/python/schemathesis-requirements.txt`)
//! against the REST API's own OpenAPI document, served at
//! `/v2/openapi.json`, with the bearer token, on a stack of its own whose
//! models it may unload: no answer may be a server error or contradict the
//! document (status, content type, headers, body schema, the token's
//! refusals, 405 with `Allow` for other methods, schema-violating requests
//! refused). One check is left out: `positive_data_acceptance`, because a
//! request can fit the schema and still be wrong (tensor names and shapes
//! that do not match the model, data of another length than the shape), and
//! the API rightly refuses those with 400.
//!
//! schemathesis is found in `target/schemathesis-venv` (where `.ci/run`
//! installs it) or on `PATH`; without it the test is skipped, visibly, except
//! under CI.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crs_platform::service::security::Secret;
use crs_testkit::{Stack, wait_until_serving};

const TOKEN: &str = "schemathesis-token-4f3e2d";

/// The schemathesis command: the CI venv's, else the one on PATH.
fn schemathesis() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/schemathesis");
    let candidates = [venv, PathBuf::from("schemathesis")];
    candidates.into_iter().find(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_against_the_document() {
    let Some(schemathesis) = schemathesis() else {
        assert!(std::env::var_os("CI").is_none(), "CI: schemathesis is not installed (see .ci/run)");
        let _ = writeln!(
            std::io::stderr(),
            "skipped: schemathesis not installed (pip install -r serve-service/tests/python/schemathesis-requirements.txt)"
        );
        return;
    };
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    stack.train("v0").await;
    let mut config = stack.serve_config();
    config.common.security.token.auth_token = Some(Secret::new(TOKEN));
    let (serve, ports) = stack.start_serve_with_http(config).await;
    wait_until_serving(&serve).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let junit = dir.path().join("junit.xml");
    let junit_arg = junit.to_str().expect("UTF-8 temp path").to_owned();
    let schema = format!("http://{}/v2/openapi.json", ports.http);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .current_dir(dir.path())
            .args([
                "run",
                &schema,
                "--report",
                "junit",
                "--report-junit-path",
                &junit_arg,
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--header",
                &format!("Authorization: Bearer {TOKEN}"),
                "--max-examples",
                "40",
                "--seed",
                "18",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--workers",
                "1",
                "--no-color",
            ])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .map(|output| (output, std::fs::read_to_string(&junit).unwrap_or_default()))
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis task");
    let (output, junit) = output;
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis found problems:\n{text}");
    let _ = writeln!(std::io::stderr(), "{text}");
    // It ran every operation of the document (its JUnit report has a test case for each),
    // but the document itself, which it does not call.
    for route in crs_proto::SERVE_REST_ROUTES.iter().filter(|route| route.rpc.is_some()) {
        let operation = format!("name=\"{} {}\"", route.method, route.path);
        assert!(junit.contains(&operation), "{operation} not tested:\n{junit}");
    }
    tokio::time::timeout(Duration::from_secs(60), serve.stop()).await.expect("stops").expect("clean stop");
}
