//! train-service on the shared test stack, with the settings these tests vary.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crs_domain::models::ModelVer;
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::bucket::Bucket;
use crs_platform::storage::layout::RunId;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{StartTrainingRequest, TrainingJob};
use crs_testkit::{Behaviour, Running, Stack, WebhookReceiver, train_to_end};
use tonic::transport::Channel;

/// A config key whose v1 hyperparameters make a job take a while (a bagged
/// forest), for tests that need a job to still be running.
pub const SLOW_CONFIG_KEY: &str = "config/v1/slow.yaml";

#[derive(Clone, Debug)]
pub struct Setup {
    pub webhook: Option<Behaviour>,
    pub max_concurrent_jobs: u32,
    pub shutdown_grace_secs: u64,
    /// Trees in the forest of [`SLOW_CONFIG_KEY`].
    pub slow_trees: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { webhook: Some(Behaviour::Accept), max_concurrent_jobs: 2, shutdown_grace_secs: 30, slow_trees: 40 }
    }
}

#[derive(Debug)]
pub struct TestServer {
    pub stack: Stack,
    pub server: Running<TrainServiceClient<Channel>>,
    pub addr: SocketAddr,
    pub bucket: Bucket,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Self {
        let stack = Stack::with(crs_testkit::Setup { webhook: setup.webhook, ..Default::default() }).await;
        let slow = format!("trees: {}\nmax_depth: 6\nmin_leaf_clicks: 20\n", setup.slow_trees);
        stack.put(SLOW_CONFIG_KEY, slow).await;
        let mut config = stack.train_config();
        config.max_concurrent_jobs = setup.max_concurrent_jobs;
        config.common.shutdown_grace_secs = setup.shutdown_grace_secs;
        let server = stack.start_train(config).await;
        let (addr, bucket) = (server.addr, stack.bucket.clone());
        TestServer { stack, server, addr, bucket }
    }

    pub async fn client(&self) -> TrainServiceClient<Channel> {
        TrainServiceClient::new(self.server.channel())
    }

    pub async fn channel(&self) -> Channel {
        self.server.channel()
    }

    pub fn store(&self) -> ModelStore {
        ModelStore::new(self.bucket.clone())
    }

    pub fn bucket_dir(&self) -> PathBuf {
        self.stack.bucket_dir()
    }

    pub fn webhook(&self) -> &WebhookReceiver {
        self.stack.webhooks()
    }

    pub fn trigger_shutdown(&mut self) {
        self.server.trigger_shutdown();
    }

    pub async fn stopped(&mut self, within: Duration) -> anyhow::Result<()> {
        self.server.stopped(within).await
    }

    pub fn run_dirs(&self, model_ver: &str) -> Vec<String> {
        self.stack.run_dirs(model_ver)
    }

    pub async fn latest(&self, model_ver: &str) -> Option<RunId> {
        self.store().latest(ModelVer::parse(model_ver).expect("version")).await.expect("read LATEST")
    }

    /// Starts a job and waits for it to end.
    pub async fn train(&self, request: StartTrainingRequest) -> TrainingJob {
        train_to_end(&mut self.client().await, request).await
    }
}

/// The text of every webhook message received so far.
pub fn webhook_texts(server: &TestServer) -> Vec<String> {
    server.webhook().texts()
}

/// Waits for a webhook message whose text contains every one of `parts`.
pub async fn wait_for_webhook(server: &TestServer, parts: &[&str]) -> String {
    server.webhook().wait_for_text(parts).await
}

/// The real keyword data, when `CRS_REAL_DATA` names it (relative paths from
/// the workspace root too).
pub fn real_data() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("CRS_REAL_DATA").filter(|p| !p.is_empty())?);
    let from_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path);
    Some(if path.is_relative() && !path.exists() && from_root.exists() { from_root } else { path })
}

/// Puts the real keyword data, when `CRS_REAL_DATA` names it, at the stack's
/// training and evaluation keys, split by `fixtures/serve_parity.py` (the
/// evaluation file is the last week of the keywords whose id is divisible by
/// 5, as in crs-domain's parity test); whether it did. Otherwise the stack
/// keeps its generated data.
pub async fn put_real_data_split(stack: &Stack) -> bool {
    let Some(data) = real_data() else { return false };
    let split = tempfile::tempdir().expect("temp dir");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve_parity.py");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg("split")
        .arg(&data)
        .arg(split.path())
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "{} split {} failed: pip install -r analytics/requirements.txt",
        script.display(),
        data.display()
    );
    let keys = [
        ("train.csv.gz", crs_platform::storage::layout::TRAIN_KEY),
        ("eval.csv.gz", crs_platform::storage::layout::EVAL_KEY),
    ];
    for (file, key) in keys {
        stack.put(key, std::fs::read(split.path().join(file)).expect("split file")).await;
    }
    true
}
