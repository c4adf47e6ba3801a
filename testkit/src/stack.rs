//! The in-process stack: bucket, services, webhook receiver, clients.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use crs_platform::storage::bucket::{Bucket, BucketKey, S3Env};
use crs_platform::storage::layout::EVAL_KEY;
use crs_platform::storage::sample_data::{SampleSizes, write_sample_data};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{PredictRequest, Row};
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{
    Cycle, CycleState, GetCycleRequest, JobState, PromoteRequest, Stage, StartTrainingRequest, TrainingJob,
    WatchTrainingJobRequest,
};
use crs_server::startup::Listeners;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::s3::{Auth, S3Server};
use crate::webhook::{Behaviour, WebhookReceiver};

/// Small data: tests run in the dev profile.
pub const SIZES: SampleSizes = SampleSizes { train_keywords: 300, eval_keywords: 100, predict_keywords: 200 };

/// Every wait in a test ends after this long.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A service's settings from `args` and its documented defaults, never from
/// the environment.
pub fn parse_config<T: CommandFactory + FromArgMatches>(args: &[&str]) -> T {
    crs_platform::service::runtime::parse_without_env(args).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// The folder of the committed fixtures (`testkit/fixtures`).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[derive(Clone, Debug)]
pub struct Setup {
    /// How the webhook receiver answers; `None`: no receiver, no webhook URL.
    pub webhook: Option<Behaviour>,
    pub sizes: SampleSizes,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { webhook: Some(Behaviour::Accept), sizes: SIZES }
    }
}

/// Where a stack's bucket lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A folder in a temp dir.
    Local,
    /// A prefix in a fresh bucket of a moto S3 server of the stack's own.
    S3,
}

/// A bucket with generated data and a webhook receiver; services are started
/// on it as a test needs them.
#[derive(Debug)]
pub struct Stack {
    pub bucket_url: String,
    pub bucket: Bucket,
    /// The S3 settings of the services on an S3 stack.
    s3_env: S3Env,
    webhooks: Option<WebhookReceiver>,
    /// The train-service [`Stack::train`] uses, started on first use.
    trainer: Option<Running<TrainServiceClient<Channel>>>,
    dir: tempfile::TempDir,
    /// Last, so that the server stops after everything else on it.
    s3: Option<S3Server>,
}

impl Stack {
    pub async fn new() -> Self {
        Self::with(Setup::default()).await
    }

    /// A stack on a local folder.
    pub async fn with(setup: Setup) -> Self {
        Self::on(Backend::Local, setup).await.expect("a local stack always starts")
    }

    /// A stack on `backend`; `None` when S3 tests are skipped (see [`S3Server::start_or_skip`]).
    pub async fn on(backend: Backend, setup: Setup) -> Option<Self> {
        crs_platform::service::runtime::init_tracing("error");
        let dir = tempfile::tempdir().expect("temp dir");
        let (bucket_url, s3_env, s3) = match backend {
            Backend::Local => (dir.path().join("bucket").to_string_lossy().into_owned(), S3Env::default(), None),
            Backend::S3 => {
                let server = S3Server::start_or_skip(Auth::Off).await?;
                let name = server.create_bucket().await;
                (format!("s3://{name}/crs"), server.env(), Some(server))
            }
        };
        let bucket = Bucket::open_with(&bucket_url, &s3_env).expect("bucket");
        write_sample_data(&bucket, setup.sizes, 7).await.expect("sample data");
        let webhooks = match setup.webhook {
            Some(behaviour) => Some(WebhookReceiver::start(behaviour).await),
            None => None,
        };
        Some(Stack { bucket_url, bucket, s3_env, webhooks, trainer: None, dir, s3 })
    }

    /// The S3 server of an S3 stack.
    pub fn s3(&self) -> Option<&S3Server> {
        self.s3.as_ref()
    }

    pub fn webhooks(&self) -> &WebhookReceiver {
        self.webhooks.as_ref().expect("this stack has a webhook receiver")
    }

    /// The bucket's folder on disk, of a local stack.
    pub fn bucket_dir(&self) -> PathBuf {
        assert!(self.s3.is_none(), "an S3 stack's bucket has no folder");
        self.dir.path().join("bucket")
    }

    fn service_args(&self) -> Vec<String> {
        let mut args = vec!["--bucket-url".to_owned(), self.bucket_url.clone()];
        if let Some(webhooks) = &self.webhooks {
            args.extend(["--webhook-url".to_owned(), webhooks.url()]);
        }
        args
    }

    /// train-service's defaults on this bucket, posting to the receiver.
    pub fn train_config(&self) -> train_service::Config {
        let args = self.service_args();
        let mut config: train_service::Config = parse_config(&args.iter().map(String::as_str).collect::<Vec<_>>());
        config.common.s3_env = self.s3_env.clone();
        config
    }

    /// serve-service's defaults on this bucket, posting to the receiver, polling every 0.1 s.
    pub fn serve_config(&self) -> serve_service::Config {
        let mut args = self.service_args();
        args.extend(["--poll-interval-secs".to_owned(), "0.1".to_owned()]);
        let mut config: serve_service::Config = parse_config(&args.iter().map(String::as_str).collect::<Vec<_>>());
        config.common.s3_env = self.s3_env.clone();
        config
    }

    pub async fn start_train(&self, config: train_service::Config) -> Running<TrainServiceClient<Channel>> {
        Running::start(
            |listener, stop| tokio::spawn(train_service::run(config, Listeners::new(listener), stop)),
            TrainServiceClient::new,
        )
        .await
    }

    pub async fn start_serve(&self, config: serve_service::Config) -> Running<ServeServiceClient<Channel>> {
        Running::start(
            |listener, stop| tokio::spawn(serve_service::run(config, Listeners::new(listener), stop)),
            serve_client,
        )
        .await
    }

    /// serve-service with its metrics endpoint on a port of its own; that port's address.
    pub async fn start_serve_with_metrics(
        &self,
        config: serve_service::Config,
    ) -> (Running<ServeServiceClient<Channel>>, SocketAddr) {
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
        let metrics_addr = metrics.local_addr().expect("metrics addr");
        let running = Running::start(
            |listener, stop| {
                tokio::spawn(serve_service::run(config, Listeners::new(listener).with_metrics(Some(metrics)), stop))
            },
            serve_client,
        )
        .await;
        (running, metrics_addr)
    }

    /// serve-service with its REST API (`SERVE_HTTP_ADDR`) and its metrics
    /// endpoint on ports of their own, bound on 127.0.0.1:0.
    pub async fn start_serve_with_http(
        &self,
        config: serve_service::Config,
    ) -> (Running<ServeServiceClient<Channel>>, HttpPorts) {
        let (metrics, http, ports) = HttpPorts::bind().await;
        let running = Running::start(
            |listener, stop| {
                let listeners = Listeners::new(listener).with_metrics(Some(metrics)).with_http(Some(http));
                tokio::spawn(serve_service::run(config, listeners, stop))
            },
            serve_client,
        )
        .await;
        (running, ports)
    }

    /// train-service with its console (`TRAIN_HTTP_ADDR`) and its metrics
    /// endpoint on ports of their own, bound on 127.0.0.1:0.
    pub async fn start_train_with_http(
        &self,
        config: train_service::Config,
    ) -> (Running<TrainServiceClient<Channel>>, HttpPorts) {
        let (metrics, http, ports) = HttpPorts::bind().await;
        let running = Running::start(
            |listener, stop| {
                let listeners = Listeners::new(listener).with_metrics(Some(metrics)).with_http(Some(http));
                tokio::spawn(train_service::run(config, listeners, stop))
            },
            TrainServiceClient::new,
        )
        .await;
        (running, ports)
    }

    /// train-service with its metrics endpoint on a port of its own; that port's address.
    pub async fn start_train_with_metrics(
        &self,
        config: train_service::Config,
    ) -> (Running<TrainServiceClient<Channel>>, SocketAddr) {
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
        let metrics_addr = metrics.local_addr().expect("metrics addr");
        let running = Running::start(
            |listener, stop| {
                tokio::spawn(train_service::run(config, Listeners::new(listener).with_metrics(Some(metrics)), stop))
            },
            TrainServiceClient::new,
        )
        .await;
        (running, metrics_addr)
    }

    /// Trains `model_ver` on the generated train and eval files through a
    /// train-service of this stack, and returns the run id.
    pub async fn train(&mut self, model_ver: &str) -> String {
        if self.trainer.is_none() {
            self.trainer = Some(self.start_train(self.train_config()).await);
        }
        let client = &mut self.trainer.as_mut().expect("started").client;
        let request =
            StartTrainingRequest { model_ver: model_ver.into(), eval_key: Some(EVAL_KEY.into()), ..Default::default() };
        let job = train_to_end(client, request).await;
        assert_eq!(job.state(), JobState::Succeeded, "training failed: {}", job.error);
        job.run_id
    }

    /// Makes `run_id` the production run of `model_ver`, as `crctl promote` does,
    /// whatever the gate said of it.
    pub async fn promote(&mut self, model_ver: &str, run_id: &str) {
        let client = &mut self.trainer.as_mut().expect("a run was trained first").client;
        let request = PromoteRequest {
            model_ver: model_ver.into(),
            run_id: run_id.into(),
            reason: "test".into(),
            ..Default::default()
        };
        client.promote(request).await.expect("promote");
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.bucket.get_if_exists(&key_of(key)).await.expect("bucket read").map(|b| b.to_vec())
    }

    pub async fn put(&self, key: &str, bytes: impl Into<bytes::Bytes>) {
        self.bucket.put(&key_of(key), bytes).await.expect("bucket write");
    }

    /// Copies the committed fixture runs (`testkit/fixtures/model/...`) into the bucket.
    pub fn install_fixture_runs(&self) {
        copy_dir(&fixture_dir().join("model"), &self.bucket_dir().join("model"));
    }

    /// The run folders under model/<model_ver>/.
    pub fn run_dirs(&self, model_ver: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.bucket_dir().join("model").join(model_ver)) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .map(|e| e.expect("dir entry"))
            .filter(|e| e.file_type().expect("file type").is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// What model/<model_ver>/LATEST says, if it exists.
    pub fn latest(&self, model_ver: &str) -> Option<String> {
        let path = self.bucket_dir().join("model").join(model_ver).join("LATEST");
        std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
    }
}

/// The ports of a service started by [`Stack::start_serve_with_http`] or
/// [`Stack::start_train_with_http`].
#[derive(Clone, Copy, Debug)]
pub struct HttpPorts {
    /// `GET /metrics`.
    pub metrics: SocketAddr,
    /// The HTTP API: serve-service's REST API, train-service's console.
    pub http: SocketAddr,
}

impl HttpPorts {
    /// The metrics and HTTP listeners on 127.0.0.1:0, and their ports.
    async fn bind() -> (TcpListener, TcpListener, HttpPorts) {
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let ports = HttpPorts {
            metrics: metrics.local_addr().expect("metrics addr"),
            http: http.local_addr().expect("HTTP addr"),
        };
        (metrics, http, ports)
    }
}

/// A serve-service client that takes the batches and rows the tests send.
fn serve_client(channel: Channel) -> ServeServiceClient<Channel> {
    ServeServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

/// A bucket key a test spells out.
pub fn key_of(key: &str) -> BucketKey {
    BucketKey::parse(key).expect("test key")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy fixture");
        }
    }
}

/// A service running in this process: its client, and how to stop it.
#[derive(Debug)]
pub struct Running<C> {
    pub addr: SocketAddr,
    pub client: C,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

type StopSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl<C> Running<C> {
    async fn start(
        spawn: impl FnOnce(TcpListener, StopSignal) -> JoinHandle<anyhow::Result<()>>,
        client: impl FnOnce(Channel) -> C,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(
            listener,
            Box::pin(async {
                let _ = stopped.await;
            }),
        );
        Running { addr, client: client(channel.clone()), channel, stop: Some(stop), task: Some(task) }
    }

    /// A connection for any of the server's services.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// Begins shutdown, as SIGTERM would; `run` goes on until it has drained.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `run` to return, at most `within`.
    pub async fn stopped(&mut self, within: Duration) -> anyhow::Result<()> {
        let task = self.task.take().expect("service still running");
        tokio::time::timeout(within, task).await.expect("run returned in time").expect("service task")
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.trigger_shutdown();
        self.stopped(Duration::from_secs(30)).await
    }
}

/// Starts a job and returns its final state.
pub async fn train_to_end(client: &mut TrainServiceClient<Channel>, request: StartTrainingRequest) -> TrainingJob {
    let job = client.start_training(request).await.expect("start training").into_inner();
    wait_for_end(client, &job.job_id).await
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
    tokio::time::timeout(TIMEOUT, collect).await.expect("job ended in time");
    updates
}

/// The job's final state.
pub async fn wait_for_end(client: &mut TrainServiceClient<Channel>, job_id: &str) -> TrainingJob {
    let updates = watch_to_end(client, job_id).await;
    let last = updates.last().cloned().expect("watch sends at least the current state");
    assert!(
        matches!(last.state(), JobState::Succeeded | JobState::Failed | JobState::Cancelled),
        "the watch stream ended before the job did: {last:?}"
    );
    last
}

/// Polls `cycle` until it is no longer running, for at most `within`; its final state.
pub async fn wait_for_cycle(client: &mut TrainServiceClient<Channel>, mut cycle: Cycle, within: Duration) -> Cycle {
    let deadline = tokio::time::Instant::now() + within;
    while cycle.state() == CycleState::Running {
        assert!(tokio::time::Instant::now() < deadline, "cycle did not end: {cycle:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = GetCycleRequest { model_ver: cycle.model_ver.clone(), cycle_id: cycle.cycle_id.clone() };
        cycle = client.get_cycle(request).await.expect("get cycle").into_inner();
    }
    cycle
}

/// Waits until the job reaches `stage` (or ends).
pub async fn wait_for_stage(client: &mut TrainServiceClient<Channel>, job_id: &str, stage: Stage) -> TrainingJob {
    let request = WatchTrainingJobRequest { job_id: job_id.to_owned() };
    let mut stream = client.watch_training_job(request).await.expect("watch").into_inner();
    let wait = async {
        while let Some(job) = stream.message().await.expect("watch message") {
            let ended = matches!(job.state(), JobState::Succeeded | JobState::Failed | JobState::Cancelled);
            if job.stage() as i32 >= stage as i32 || ended {
                return job;
            }
        }
        panic!("watch ended without reaching {stage:?}");
    };
    tokio::time::timeout(TIMEOUT, wait).await.expect("stage reached in time")
}

pub async fn serving_status(health: &mut HealthClient<Channel>) -> ServingStatus {
    match health.check(HealthCheckRequest { service: String::new() }).await {
        Ok(response) => response.into_inner().status(),
        Err(_) => ServingStatus::Unknown,
    }
}

pub async fn wait_until_serving<C>(server: &Running<C>) {
    wait_until_status(server, ServingStatus::Serving).await;
}

/// Waits until the service's health reports `status`.
pub async fn wait_until_status<C>(server: &Running<C>, status: ServingStatus) {
    let health = server.health();
    crate::wait_until(TIMEOUT, &format!("health {status:?}"), || {
        let mut health = health.clone();
        async move { serving_status(&mut health).await == status }
    })
    .await;
}

pub fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut text).expect("gzip output");
    text
}

/// A CSV file (possibly gzip) in the prediction-input schema as a Predict request.
pub fn predict_request(csv: &[u8]) -> PredictRequest {
    let text =
        if csv.starts_with(&[0x1f, 0x8b]) { gunzip(csv) } else { String::from_utf8(csv.to_vec()).expect("utf8") };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let position = |name: &str| header.iter().position(|h| *h == name).expect("column");
    let attributes: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("att")).collect();
    let (entity, device) = (position("entity_id"), position("device"));
    let rows = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            Row {
                entity_id: fields[entity].parse().expect("entity id"),
                device: fields[device].to_owned(),
                attribute_values: attributes.iter().map(|&i| fields[i].parse().expect("0/1")).collect(),
            }
        })
        .collect();
    PredictRequest {
        attribute_names: attributes.iter().map(|&i| header[i].to_owned()).collect(),
        rows,
        ..Default::default()
    }
}
