//! `crctl import` and `crctl versions`, the binary against a real
//! train-service and bucket: model files saved by the pinned xgboost and
//! lightgbm (the committed fixtures of `crs-domain/tests/fixtures/imported/`,
//! written by its `make_fixtures.py`) imported gated, as drafts and on another
//! evaluation file; a refused file's message and exit code; and the versions
//! the bucket declares listed with their framework.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crs_proto::train::ListModelsRequest;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_testkit::Stack;
use tonic::transport::Channel;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crs-domain/tests/fixtures/imported").join(name)
}

/// crctl with `args` and only the environment given: never the developer's.
fn crctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crctl")).env_clear().envs(env.iter().copied()).args(args).output().expect("crctl")
}

fn stdout_of(output: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed: {stderr}");
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

/// The stage of each run of `model_ver`, by run id.
async fn stages(client: &mut TrainServiceClient<Channel>, model_ver: &str) -> Vec<(String, String)> {
    let request = ListModelsRequest { model_ver: model_ver.into() };
    let versions = client.list_models(request).await.expect("list").into_inner().versions;
    versions.into_iter().flat_map(|v| v.runs).map(|r| (r.run_id, r.stage)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_streams_a_file_gates_or_drafts_it_and_says_why_a_file_is_refused() {
    let stack = Stack::new().await;
    stack.put("config/xgb-cli/model.yaml", "framework: xgboost\n").await;
    stack.put("config/lgb-cli/model.yaml", "framework: lightgbm\n").await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    let addr = train.addr.to_string();
    let env = [("TRAIN_ADDR", addr.as_str())];
    let path = |name: &str| fixture(name).to_str().expect("UTF-8 path").to_owned();

    // Gated: the job is followed to its end and the evaluation printed.
    let xgb = path("xgb_logistic.json");
    let output = crctl(&["import", "--model-ver", "xgb-cli", "--file", &xgb, "--wait"], &env);
    let text = stdout_of(&output, "crctl import");
    let run_id = text
        .lines()
        .find_map(|line| line.strip_prefix("job ")?.split_once(" succeeded: model xgb-cli run ").map(|(_, run)| run))
        .unwrap_or_else(|| panic!("no succeeded line: {text}"))
        .to_owned();
    assert!(text.contains("\neval: ") && text.contains("baseline: device"), "{text}");
    let runs = stages(&mut client, "xgb-cli").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].0, run_id);
    assert!(["production", "rejected"].contains(&runs[0].1.as_str()), "gated: {runs:?}");
    let folder = format!("model/xgb-cli/{run_id}");
    assert_eq!(
        stack.get(&format!("{folder}/imported.json")).await.expect("the file is kept"),
        std::fs::read(&xgb).unwrap()
    );

    // A draft, on another evaluation file, as JSON: never gated.
    let eval = stack.get("data/train/eval.csv.gz").await.expect("eval file");
    stack.put("data/train/eval_cli.csv.gz", eval).await;
    let lgb = path("lgb_cross_entropy.txt");
    let args = [
        "--json",
        "import",
        "--model-ver",
        "lgb-cli",
        "--file",
        &lgb,
        "--draft",
        "--eval",
        "data/train/eval_cli.csv.gz",
    ];
    let output = crctl(&[&args[..], &["--wait", "--label", "by=crctl"]].concat(), &env);
    let job: serde_json::Value = serde_json::from_str(&stdout_of(&output, "crctl import --draft")).expect("JSON");
    assert_eq!(
        (job["state"].as_str(), job["model_ver"].as_str()),
        (Some("JOB_STATE_SUCCEEDED"), Some("lgb-cli")),
        "{job:#}"
    );
    assert_eq!(job["imported"]["framework"], "lightgbm", "{job:#}");
    let run_id = job["run_id"].as_str().expect("run id").to_owned();
    assert_eq!(stages(&mut client, "lgb-cli").await, [(run_id.clone(), "draft".to_owned())]);
    let metadata = stack.get(&format!("model/lgb-cli/{run_id}/metadata.json")).await.expect("metadata");
    let metadata: serde_json::Value = serde_json::from_slice(&metadata).expect("JSON");
    assert_eq!(metadata["eval_data"]["key"], "data/train/eval_cli.csv.gz", "{metadata:#}");

    // Without --wait: the queued job, at once.
    let output = crctl(&["import", "--model-ver", "xgb-cli", "--file", &xgb, "--draft"], &env);
    let text = stdout_of(&output, "crctl import (queued)");
    assert!(text.starts_with("job ") && text.contains(" queued: model xgb-cli"), "{text}");

    // Refused files: the service's reason on stderr, exit code 1, no run written.
    let before = stack.run_dirs("lgb-cli").len();
    for (model_ver, file, reason) in [
        (
            "lgb-cli",
            path("refused_lgb_linear.txt"),
            "InvalidArgument: tree 0 is a linear tree (linear_tree): linear trees are not supported, only trees with constant leaves",
        ),
        ("lgb-cli", xgb.clone(), "InvalidArgument: not a lightgbm model file: the first line is not \"tree\""),
        ("lgb-none", lgb.clone(), "InvalidArgument: unknown model version \"lgb-none\""),
    ] {
        let output = crctl(&["import", "--model-ver", model_ver, "--file", &file, "--wait"], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{file}: {stderr}");
        assert!(stderr.starts_with(&format!("error: {reason}")), "{file}: {stderr}");
        assert!(output.stdout.is_empty(), "{file}: {}", String::from_utf8_lossy(&output.stdout));
    }
    assert_eq!(stack.run_dirs("lgb-cli").len(), before, "a refused file left a run");
    let output = crctl(&["import", "--model-ver", "lgb-cli", "--file", "no-such-model.txt"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: cannot read no-such-model.txt: "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_lists_the_built_in_ones_then_the_buckets_declarations_with_their_framework() {
    let stack = Stack::new().await;
    stack.put("config/xgb-cli/model.yaml", "framework: xgboost\n").await;
    stack.put("config/lgb-cli/model.yaml", "framework: lightgbm\n").await;
    stack.put("config/bad-cli/model.yaml", "framework: sklearn\n").await;
    let bucket = stack.bucket_dir();
    let env = [("BUCKET_URL", bucket.to_str().expect("UTF-8 path"))];

    let text = stdout_of(&crctl(&["versions"], &env), "crctl versions");
    let rows: Vec<Vec<&str>> = text.lines().map(|line| line.split('\t').collect()).collect();
    let names_and_frameworks: Vec<(&str, &str)> = rows.iter().map(|row| (row[0], row[1])).collect();
    assert_eq!(
        names_and_frameworks,
        [
            ("v0", "built-in"),
            ("v1", "built-in"),
            ("v2", "built-in"),
            ("bad-cli", "invalid"),
            ("lgb-cli", "lightgbm"),
            ("xgb-cli", "xgboost")
        ],
        "{text}"
    );
    assert!(rows[3][2].starts_with("config/bad-cli/model.yaml: framework: unknown variant `sklearn`"), "{text}");
    assert!(rows.iter().all(|row| row.len() == 3 && !row[2].is_empty()), "{text}");

    let listed: serde_json::Value =
        serde_json::from_str(&stdout_of(&crctl(&["versions", "--json"], &env), "crctl versions --json")).expect("JSON");
    let versions = listed["versions"].as_array().expect("versions");
    let frameworks: Vec<(&str, &str)> =
        versions.iter().map(|v| (v["name"].as_str().unwrap(), v["framework"].as_str().unwrap())).collect();
    assert_eq!(frameworks, names_and_frameworks);
    assert!(versions.iter().all(|v| v["summary"].as_str().is_some_and(|s| !s.is_empty())), "{listed:#}");
}
