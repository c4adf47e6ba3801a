//! A developer's shell must not change a test: the stack's configs come from
//! the documented defaults, whatever `MODEL_VER` and friends say.

use std::process::Command;

use clap::Parser;
use crs_testkit::{Stack, parse_config};

const PROBE: &str = "CRS_TESTKIT_ENV_PROBE";

#[tokio::test]
async fn settings_in_the_environment_do_not_reach_the_stack() {
    if std::env::var_os(PROBE).is_some() {
        // In the child, with hostile settings in its environment.
        let plain = serve_service::Config::try_parse_from(["serve-service"]).expect("the binary's parse");
        assert_eq!(plain.model_ver.name(), "v0", "the probe's environment is set");
        let stack = Stack::new().await;
        let serve = stack.serve_config();
        assert_eq!((serve.model_ver.name(), serve.model_run.describe()), ("v1", "production".to_owned()));
        assert_eq!(serve.common.bucket_url, stack.bucket_url);
        assert_eq!(serve.max_predict_rows, 10_000);
        let train = stack.train_config();
        assert_eq!((train.model_ver.name(), train.max_concurrent_jobs), ("v1", 2));
        assert!(serve.common.security.token.auth_token.is_none() && train.common.security.tls_cert.is_none());
        let defaults: train_service::Config = parse_config(&[]);
        assert_eq!(defaults.addr, "127.0.0.1:50051");
        return;
    }
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "settings_in_the_environment_do_not_reach_the_stack", "--nocapture"])
        .env(PROBE, "1")
        .env("MODEL_VER", "v0")
        .env("MODEL_RUN", "20200101T000000000Z-000000")
        .env("MAX_PREDICT_ROWS", "3")
        .env("MAX_CONCURRENT_JOBS", "7")
        .env("TRAIN_ADDR", "127.0.0.1:1")
        .env("BUCKET_URL", "memory://")
        .env("AUTH_TOKEN", "from-the-shell")
        .env("TLS_CERT", "shell.pem")
        .status()
        .expect("run the probe");
    assert!(status.success(), "the stack's configs followed the environment");
}
