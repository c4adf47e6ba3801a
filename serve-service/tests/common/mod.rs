//! A real stack for serve-service tests: a temp-dir bucket with generated data,
//! train-service and serve-service on 127.0.0.1:0, a real webhook receiver.

#![allow(dead_code)]

use std::io::Read;
use std::time::Duration;

use crs_core::sample_data::{SampleSizes, write_sample_data};
use crs_core::storage::{Bucket, BucketKey};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{PredictRequest, Row};
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{GetTrainingJobRequest, JobState, StartTrainingRequest};
use crs_testkit::{Behaviour, WebhookReceiver};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const SIZES: SampleSizes = SampleSizes { train_keywords: 300, eval_keywords: 100, predict_keywords: 200 };

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub bucket_url: String,
    pub bucket: Bucket,
    pub webhooks: WebhookReceiver,
    train: Option<Server<TrainServiceClient<Channel>>>,
}

/// A running service: its client, and how to stop it.
pub struct Server<C> {
    pub client: C,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl<C> Server<C> {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("service stops in time")?
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }
}

async fn connect(listener: &TcpListener) -> Channel {
    let addr = listener.local_addr().expect("local addr");
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy()
}

impl Stack {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bucket_url = dir.path().join("bucket").to_string_lossy().into_owned();
        let bucket = Bucket::open(&bucket_url).expect("bucket");
        write_sample_data(&bucket, SIZES, 7).await.expect("sample data");
        let webhooks = WebhookReceiver::start(Behaviour::Accept).await;
        Stack { dir, bucket_url, bucket, webhooks, train: None }
    }

    /// Trains `model_ver` through train-service and returns the run id.
    pub async fn train(&mut self, model_ver: &str) -> String {
        if self.train.is_none() {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let channel = connect(&listener).await;
            let config = <train_service::Config as clap::Parser>::try_parse_from([
                "train-service",
                "--bucket-url",
                &self.bucket_url,
            ])
            .expect("train-service config");
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(train_service::run(config, listener, async {
                let _ = stopped.await;
            }));
            self.train =
                Some(Server { client: TrainServiceClient::new(channel.clone()), channel, stop: Some(stop), task });
        }
        let client = &mut self.train.as_mut().expect("started").client;
        let job = client
            .start_training(StartTrainingRequest {
                model_ver: model_ver.into(),
                eval_key: Some(crs_core::sample_data::EVAL_KEY.into()),
                ..Default::default()
            })
            .await
            .expect("start training")
            .into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let job = client
                .get_training_job(GetTrainingJobRequest { job_id: job.job_id.clone() })
                .await
                .expect("get job")
                .into_inner();
            match job.state() {
                JobState::Succeeded => return job.run_id,
                JobState::Failed => panic!("training failed: {}", job.error),
                _ if tokio::time::Instant::now() > deadline => panic!("training did not finish in time"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub fn serve_config(&self) -> serve_service::Config {
        let mut config = serve_service::Config::with_bucket(&self.bucket_url);
        config.webhook_url = Some(self.webhooks.url());
        config.poll_interval_secs = 0.1;
        config
    }

    pub async fn serve(&self, config: serve_service::Config) -> Server<ServeServiceClient<Channel>> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let channel = connect(&listener).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_service::run(config, listener, async {
            let _ = stopped.await;
        }));
        Server { client: ServeServiceClient::new(channel.clone()), channel, stop: Some(stop), task }
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.bucket.get_if_exists(&BucketKey::parse(key).expect("key")).await.expect("bucket read").map(|b| b.to_vec())
    }

    pub async fn put(&self, key: &str, bytes: impl Into<bytes::Bytes>) {
        self.bucket.put(&BucketKey::parse(key).expect("key"), bytes).await.expect("bucket write");
    }
}

pub async fn serving_status(health: &mut HealthClient<Channel>) -> ServingStatus {
    match health.check(HealthCheckRequest { service: String::new() }).await {
        Ok(response) => response.into_inner().status(),
        Err(_) => ServingStatus::Unknown,
    }
}

pub async fn wait_until_serving(server: &Server<ServeServiceClient<Channel>>) {
    let mut health = server.health();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while serving_status(&mut health).await != ServingStatus::Serving {
        assert!(tokio::time::Instant::now() < deadline, "serve-service never reported SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    PredictRequest { attribute_names: attributes.iter().map(|&i| header[i].to_owned()).collect(), rows }
}
