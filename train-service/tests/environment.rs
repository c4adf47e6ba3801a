//! No test reads the developer's shell: the project's settings set in the
//! environment of a test process change nothing, because tests build every
//! config from explicit arguments and the documented defaults.

use std::process::Command;

use crs_proto::serve::GetModelRequest;
use crs_proto::train::{JobState, StartTrainingRequest};
use crs_testkit::{Stack, train_to_end, wait_until_serving};

/// Settings a developer's shell may hold, each of which would change or break
/// the test below if a config read it.
const SHELL: &[(&str, &str)] = &[
    ("MODEL_VER", "v2"),
    ("BUCKET_URL", "/nonexistent/crs-bucket"),
    ("WEBHOOK_URL", "not a url"),
    ("SERVE_MODELS", "v0"),
    ("MODEL_RUN", "no-such-run"),
    ("POLL_INTERVAL_SECS", "not a number"),
    ("MAX_CONCURRENT_JOBS", "0"),
];

/// Trains with the server's default version and serves it: v1 on the stack's
/// own bucket, whatever the environment says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defaults_are_the_documented_ones() {
    let stack = Stack::new().await;
    let mut train = stack.start_train(stack.train_config()).await;
    let job = train_to_end(&mut train.client, StartTrainingRequest::default()).await;
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);
    assert_eq!(job.model_ver, "v1");
    assert_eq!(stack.run_dirs("v1"), std::slice::from_ref(&job.run_id), "the run is in the stack's bucket");
    let mut serve = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let model = serve.client.get_model(GetModelRequest::default()).await.expect("a model").into_inner();
    assert_eq!((model.model_ver.as_str(), model.run_id.as_str()), ("v1", job.run_id.as_str()));
    serve.stop().await.expect("clean stop");
    train.stop().await.expect("clean stop");
}

/// Runs the test above again in a child process of this test binary, with
/// [`SHELL`] set as a developer's shell would have it.
#[test]
fn settings_in_the_shell_do_not_change_a_test() {
    let output = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "the_defaults_are_the_documented_ones", "--test-threads", "1"])
        .envs(SHELL.iter().copied())
        .output()
        .expect("run the test binary");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && text.contains("1 passed"), "with {SHELL:?} set:\n{text}");
}
