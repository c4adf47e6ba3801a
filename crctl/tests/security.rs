//! crctl against a train-service that serves TLS and requires a token: it
//! connects with https when `TLS_CA` is set, sends `AUTH_TOKEN` or
//! `AUTH_TOKEN_FILE` as a bearer token, and never prints the token.

use std::process::{Command, Output};

use crs_platform::service::security::{Secret, ServerSecurity, TokenSettings};
use crs_testkit::{Setup, Stack, fixture_dir};

const TOKEN: &str = "tok-crctl-5e6f7a8b-right";
const WRONG: &str = "tok-crctl-guess-wrong";

/// crctl with `args` and only the environment given: never the developer's.
fn crctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crctl"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run crctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crctl_reaches_a_tls_service_with_tls_ca_and_sends_the_token() {
    let stack = Stack::with(Setup { webhook: None, ..Default::default() }).await;
    let mut config = stack.train_config();
    config.common.security = ServerSecurity {
        token: TokenSettings { auth_token: Some(Secret::new(TOKEN)), auth_token_file: None },
        tls_cert: Some(fixture_dir().join("tls/server.pem")),
        tls_key: Some(fixture_dir().join("tls/server.key")),
    };
    let train = stack.start_train(config).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token file");

    let addr = train.addr.to_string();
    let ca = fixture_dir().join("tls/ca.pem");
    let (ca, token_file) = (ca.to_str().expect("utf8"), token_file.to_str().expect("utf8"));
    let tls = [("TRAIN_ADDR", addr.as_str()), ("TLS_CA", ca)];

    // An open RPC needs TLS but no token.
    let listed = crctl(&["jobs"], &tls);
    assert!(listed.status.success(), "crctl jobs over TLS: {}", String::from_utf8_lossy(&listed.stderr));
    let plain = crctl(&["jobs"], &tls[..1]);
    assert!(!plain.status.success(), "crctl jobs without TLS_CA reached a TLS server");

    // A mutating RPC needs the token, from a file or the variable.
    let ingested = crctl(&["ingest"], &[tls[0], tls[1], ("AUTH_TOKEN_FILE", token_file)]);
    assert!(ingested.status.success(), "crctl ingest with the token: {}", String::from_utf8_lossy(&ingested.stderr));
    let ingested = crctl(&["ingest"], &[tls[0], tls[1], ("AUTH_TOKEN", TOKEN)]);
    assert!(ingested.status.success(), "crctl ingest with AUTH_TOKEN: {}", String::from_utf8_lossy(&ingested.stderr));
    let ingested = crctl(&["--auth-token", TOKEN, "ingest"], &tls);
    assert!(ingested.status.success(), "crctl --auth-token ingest: {}", String::from_utf8_lossy(&ingested.stderr));
    for env in [&tls[..], &[tls[0], tls[1], ("AUTH_TOKEN", WRONG)]] {
        let refused = crctl(&["ingest"], env);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains("Unauthenticated"), "crctl ingest: {stderr}");
        assert!(!stderr.contains(WRONG) && !stderr.contains(TOKEN), "crctl printed a token: {stderr}");
    }
    let both = crctl(&["ingest"], &[tls[0], tls[1], ("AUTH_TOKEN", TOKEN), ("AUTH_TOKEN_FILE", token_file)]);
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success() && stderr.contains("AUTH_TOKEN and AUTH_TOKEN_FILE are both set"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "crctl printed the token: {stderr}");
    train.stop().await.expect("train stops");
}
