//! `crctl compare` on shadow records in a bucket, without the services.

use std::process::Command;

use chrono::Utc;
use crs_domain::data::Device;
use crs_domain::models::ModelVer;
use crs_platform::predictions::shadow::{self, ShadowRow};
use crs_platform::storage::layout::{EVAL_KEY, RunId};
use crs_testkit::{Stack, predict_request};

fn crctl(stack: &Stack, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crctl"))
        // Nothing from the developer's shell (TLS_CA, AUTH_TOKEN, ...).
        .env_clear()
        .arg("compare")
        .args(args)
        .env("BUCKET_URL", &stack.bucket_url)
        .output()
        .expect("run crctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_names_the_model_closer_to_the_outcomes_and_its_clicks() {
    let stack = Stack::new().await;
    let (v1, v0) = (ModelVer::parse("v1").unwrap(), ModelVer::parse("v0").unwrap());
    let run = RunId::parse("20261201T000000000Z-abcdef").unwrap();
    // The evaluation file's keywords, predicted 0.05 by v1 and 0.6 by v0: its rates are a few percent.
    let request = predict_request(&stack.get(EVAL_KEY).await.expect("eval file"));
    let mut rows = Vec::new();
    for row in &request.rows {
        for (model, cr) in [(v1, 0.05), (v0, 0.6)] {
            let device = Device::parse(&row.device).expect("device");
            rows.push(ShadowRow { time: Utc::now(), model, run: run.clone(), entity_id: row.entity_id, device, cr });
        }
    }
    shadow::write(&stack.bucket, v1, &rows).await.expect("records");

    let output = crctl(&stack, &["--primary", "v1", "--shadow", "v0", "--outcomes", EVAL_KEY, "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json output");
    assert_eq!(result["winner"], "v1", "{result:#}");
    assert!(result["clicks"].as_f64().expect("clicks") > 0.0, "{result:#}");
    assert!(result["primary"]["logloss"].as_f64() < result["shadow"]["logloss"].as_f64(), "{result:#}");
    assert_eq!(result["primary"]["runs"][0], run.as_str());

    let output = crctl(&stack, &["--primary", "v1", "--shadow", "v0", "--outcomes", EVAL_KEY]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("winner on click-weighted log-loss: v1"), "{text}");
    let clicks = result["clicks"].as_f64().expect("clicks");
    assert!(text.contains(&format!("over {clicks} clicks")), "{text}");

    // A shadow nobody recorded is an error that says so.
    let output = crctl(&stack, &["--primary", "v1", "--shadow", "v2", "--outcomes", EVAL_KEY]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no predictions of shadow v2"), "{stderr}");
}
