//! A real train-service on a local port, over a temp-dir bucket with generated
//! data, a real gRPC client and a real webhook receiver.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crs_core::sample_data::{SampleSizes, write_sample_data};
use crs_core::storage::{Bucket, BucketKey, ModelStore, RunId};
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{JobState, StartTrainingRequest, TrainingJob, WatchTrainingJobRequest};
use crs_testkit::{Behaviour, WebhookReceiver};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use train_service::Config;

/// Keep data small: tests run in the debug profile.
pub const SIZES: SampleSizes = SampleSizes { train_keywords: 300, eval_keywords: 100, predict_keywords: 50 };

/// A config key whose v1 hyperparameters make a job take a while (a bagged
/// forest), for tests that need a job to still be running.
pub const SLOW_CONFIG_KEY: &str = "config/v1/slow.yaml";

/// Every test waits at most this long for a job.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

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
    pub addr: SocketAddr,
    pub bucket: Bucket,
    pub webhook: Option<WebhookReceiver>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Self {
        crs_core::runtime::init_tracing("error");
        let dir = tempfile::tempdir().expect("temp dir");
        let bucket_url = dir.path().join("bucket").to_string_lossy().into_owned();
        let bucket = Bucket::open(&bucket_url).expect("open bucket");
        write_sample_data(&bucket, SIZES, 7).await.expect("sample data");
        let slow = format!("trees: {}\nmax_depth: 6\nmin_leaf_clicks: 20\n", setup.slow_trees);
        bucket.put(&key(SLOW_CONFIG_KEY), slow).await.expect("slow config");

        let webhook = match setup.webhook {
            Some(behaviour) => Some(WebhookReceiver::start(behaviour).await),
            None => None,
        };
        let config = Config {
            addr: "127.0.0.1:0".to_owned(),
            bucket_url,
            model_ver: "v1".to_owned(),
            webhook_url: webhook.as_ref().map(WebhookReceiver::url),
            max_concurrent_jobs: setup.max_concurrent_jobs,
            shutdown_grace_secs: setup.shutdown_grace_secs,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, signal) = oneshot::channel::<()>();
        let server = tokio::spawn(train_service::run(config, listener, async {
            let _ = signal.await;
        }));
        TestServer { addr, bucket, webhook, shutdown: Some(shutdown), server: Some(server), dir }
    }

    pub async fn client(&self) -> TrainServiceClient<Channel> {
        TrainServiceClient::new(self.channel().await)
    }

    /// A connection for any of the server's services.
    pub async fn channel(&self) -> Channel {
        let endpoint = Channel::from_shared(format!("http://{}", self.addr)).expect("endpoint");
        endpoint.connect().await.expect("connect")
    }

    pub fn store(&self) -> ModelStore {
        ModelStore::new(self.bucket.clone())
    }

    /// The bucket's folder on disk.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("bucket")
    }

    pub fn webhook(&self) -> &WebhookReceiver {
        self.webhook.as_ref().expect("this server posts to a webhook receiver")
    }

    /// Begins shutdown; `run` keeps going until its jobs are done.
    pub fn trigger_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits for `run` to return, at most `within`.
    pub async fn stopped(&mut self, within: Duration) -> anyhow::Result<()> {
        let server = self.server.take().expect("server still running");
        tokio::time::timeout(within, server).await.expect("run returned in time").expect("server task")
    }

    /// The run folders under model/<model_ver>/.
    pub fn run_dirs(&self, model_ver: &str) -> Vec<String> {
        let dir = self.bucket_dir().join("model").join(model_ver);
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .map(|e| e.expect("dir entry"))
            .filter(|e| e.file_type().expect("file type").is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub async fn latest(&self, model_ver: &str) -> Option<RunId> {
        self.store().latest(model_ver).await.expect("read LATEST")
    }

    /// Starts a job and waits for it to end.
    pub async fn train(&self, request: StartTrainingRequest) -> TrainingJob {
        let mut client = self.client().await;
        let job = client.start_training(request).await.expect("start training").into_inner();
        wait_for_end(&mut client, &job.job_id).await
    }
}

pub fn key(key: &str) -> BucketKey {
    BucketKey::parse(key).expect("test key")
}

/// Every update of a job from now until it ends.
pub async fn watch_to_end(client: &mut TrainServiceClient<Channel>, job_id: &str) -> Vec<TrainingJob> {
    let request = WatchTrainingJobRequest { job_id: job_id.to_owned() };
    let mut stream = client.watch_training_job(request).await.expect("watch").into_inner();
    let mut updates = Vec::new();
    let collect = async {
        while let Some(job) = stream.message().await.expect("watch message") {
            updates.push(job);
        }
    };
    tokio::time::timeout(JOB_TIMEOUT, collect).await.expect("job ended in time");
    updates
}

/// The job's final state.
pub async fn wait_for_end(client: &mut TrainServiceClient<Channel>, job_id: &str) -> TrainingJob {
    let updates = watch_to_end(client, job_id).await;
    let last = updates.last().cloned().expect("watch sends at least the current state");
    assert!(
        matches!(last.state(), JobState::Succeeded | JobState::Failed),
        "the watch stream ended before the job did: {last:?}"
    );
    last
}

/// Waits until the job reaches `stage` (or ends).
pub async fn wait_for_stage(
    client: &mut TrainServiceClient<Channel>,
    job_id: &str,
    stage: crs_proto::train::Stage,
) -> TrainingJob {
    let request = WatchTrainingJobRequest { job_id: job_id.to_owned() };
    let mut stream = client.watch_training_job(request).await.expect("watch").into_inner();
    let wait = async {
        while let Some(job) = stream.message().await.expect("watch message") {
            let ended = matches!(job.state(), JobState::Succeeded | JobState::Failed);
            if job.stage() as i32 >= stage as i32 || ended {
                return job;
            }
        }
        panic!("watch ended without reaching {stage:?}");
    };
    tokio::time::timeout(JOB_TIMEOUT, wait).await.expect("stage reached in time")
}

/// The text of every webhook message received so far.
pub fn webhook_texts(server: &TestServer) -> Vec<String> {
    server.webhook().texts()
}

/// Waits for a webhook message whose text contains every one of `parts`.
pub async fn wait_for_webhook(server: &TestServer, parts: &[&str]) -> String {
    let found = server
        .webhook()
        .wait_for(Duration::from_secs(10), |body| {
            body["text"].as_str().is_some_and(|text| parts.iter().all(|part| text.contains(part)))
        })
        .await;
    match found {
        Some(body) => body["text"].as_str().unwrap_or_default().to_owned(),
        None => panic!("no webhook message containing {parts:?}; got {:?}", webhook_texts(server)),
    }
}
