//! Requests refused at once with the right status, and the standard services.

mod common;

use common::TestServer;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{
    GetTrainingJobRequest, ListModelsRequest, ListTrainingJobsRequest, StartTrainingRequest, WatchTrainingJobRequest,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn refused(client: &mut TrainServiceClient<Channel>, request: StartTrainingRequest) -> tonic::Status {
    client.start_training(request.clone()).await.expect_err(&format!("{request:?} is refused"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_start_requests_are_refused_at_once_and_queue_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let status = refused(&mut client, StartTrainingRequest { model_ver: "v9".into(), ..Default::default() }).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("unknown model version \"v9\""), "{status:?}");
    assert!(status.message().contains("v0, v1, v2"), "lists the known versions: {status:?}");

    let unsafe_keys = [
        StartTrainingRequest { train_key: "../etc/passwd".into(), ..Default::default() },
        StartTrainingRequest { train_key: "/etc/passwd".into(), ..Default::default() },
        StartTrainingRequest { eval_key: Some("data/../../x.csv".into()), ..Default::default() },
        StartTrainingRequest { config_key: Some("config//params.yaml".into()), ..Default::default() },
    ];
    for request in unsafe_keys {
        let status = refused(&mut client, request).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("unsafe key"), "{status:?}");
    }

    let missing = [
        (StartTrainingRequest { train_key: "data/train/nope.csv".into(), ..Default::default() }, "data/train/nope.csv"),
        (
            StartTrainingRequest { eval_key: Some("data/eval/nope.csv".into()), ..Default::default() },
            "data/eval/nope.csv",
        ),
        (
            StartTrainingRequest { config_key: Some("config/v1/nope.yaml".into()), ..Default::default() },
            "config/v1/nope.yaml",
        ),
    ];
    for (request, key) in missing {
        let status = refused(&mut client, request).await;
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains(key), "names the key: {status:?}");
    }

    let jobs = client.list_training_jobs(ListTrainingJobsRequest {}).await.expect("list").into_inner();
    assert!(jobs.jobs.is_empty(), "refused requests queue no job: {jobs:?}");
    assert!(server.run_dirs("v1").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_jobs_and_versions_are_reported() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let status = client.get_training_job(GetTrainingJobRequest { job_id: "job-nope".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("job-nope"), "{status:?}");
    let status = client.watch_training_job(WatchTrainingJobRequest { job_id: "job-nope".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let status = client.list_models(ListModelsRequest { model_ver: "../v1".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let models = client.list_models(ListModelsRequest { model_ver: "v0".into() }).await.expect("list").into_inner();
    assert_eq!(models.versions.len(), 1);
    assert_eq!(models.versions[0].model_ver, "v0");
    assert!(models.versions[0].runs.is_empty() && models.versions[0].latest_run_id.is_empty());
    let models = client.list_models(ListModelsRequest::default()).await.expect("list").into_inner();
    assert!(models.versions.is_empty(), "nothing trained yet: {models:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_and_reflection_lists_the_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "crs.train.v1.TrainService"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.expect("check");
        assert_eq!(response.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }

    let (v1, v1alpha) = crs_testkit::reflected_services(server.channel().await).await;
    let expected = [
        "crs.train.v1.TrainService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    assert_eq!(v1, expected);
    assert_eq!(v1alpha, expected);
}
