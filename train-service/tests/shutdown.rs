//! Graceful shutdown: running jobs finish within the grace period or are cut off,
//! queued jobs never start, and finished runs stay intact.

mod common;

use std::time::Duration;

use common::{SLOW_CONFIG_KEY, Setup, TestServer, wait_for_webhook};
use crs_proto::train::{JobState, Stage, StartTrainingRequest};
use crs_testkit::{wait_for_end, wait_for_stage, watch_to_end};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn slow() -> StartTrainingRequest {
    StartTrainingRequest { config_key: Some(SLOW_CONFIG_KEY.to_owned()), ..Default::default() }
}

async fn health(server: &TestServer) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let response = client.check(HealthCheckRequest { service: String::new() }).await.expect("health check");
    response.into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_running_job_finish_fails_queued_ones_and_returns() {
    let setup = Setup { max_concurrent_jobs: 1, shutdown_grace_secs: 60, ..Setup::default() };
    let mut server = TestServer::start_with(setup).await;
    let mut client = server.client().await;
    let earlier = server.train(StartTrainingRequest::default()).await;
    assert_eq!(earlier.state(), JobState::Succeeded, "job failed: {}", earlier.error);

    let running = client.start_training(slow()).await.expect("start").into_inner();
    let queued = client.start_training(StartTrainingRequest::default()).await.expect("start").into_inner();
    wait_for_stage(&mut client, &running.job_id, Stage::Training).await;
    let watch_running = tokio::spawn({
        let mut client = server.client().await;
        let job_id = running.job_id.clone();
        async move { watch_to_end(&mut client, &job_id).await }
    });
    let watch_queued = tokio::spawn({
        let mut client = server.client().await;
        let job_id = queued.job_id.clone();
        async move { watch_to_end(&mut client, &job_id).await }
    });

    let shutdown_began = std::time::SystemTime::now();
    server.trigger_shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(&server).await != ServingStatus::NotServing {
        assert!(tokio::time::Instant::now() < deadline, "health still SERVING after shutdown began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = client.start_training(StartTrainingRequest::default()).await.expect_err("refused during shutdown");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("shutting down"), "{refused:?}");

    server.stopped(Duration::from_secs(60)).await.expect("run returns cleanly");

    let running = watch_running.await.expect("watch task").pop().expect("updates");
    assert_eq!(running.state(), JobState::Succeeded, "job failed: {}", running.error);
    let finished = running.finished_at.expect("finished_at");
    let finished = std::time::UNIX_EPOCH + Duration::new(finished.seconds as u64, finished.nanos as u32);
    assert!(finished > shutdown_began, "the job was still running when shutdown began");
    let queued = watch_queued.await.expect("watch task").pop().expect("updates");
    assert_eq!(queued.state(), JobState::Failed);
    assert!(queued.error.contains("shutdown") && queued.error.contains("before it started"), "{}", queued.error);
    assert!(queued.run_id.is_empty(), "a job that never started has no run");

    // Both finished runs are intact and LATEST is on the later one.
    let store = server.store();
    for run_id in [&earlier.run_id, &running.run_id] {
        let run = crs_platform::storage::layout::RunId::parse(run_id).expect("run id");
        store
            .load(crs_domain::models::ModelVer::parse("v1").unwrap(), &run)
            .await
            .expect("the run loads and its checksum verifies");
    }
    let mut runs = vec![earlier.run_id.clone(), running.run_id.clone()];
    runs.sort();
    assert_eq!(server.run_dirs("v1"), runs);
    assert_eq!(server.latest("v1").await.map(|r| r.to_string()), Some(running.run_id.clone()));
    wait_for_webhook(&server, &["failed", &queued.job_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_after_the_grace_period_is_cut_off_and_leaves_latest_alone() {
    let setup = Setup { shutdown_grace_secs: 0, ..Setup::default() };
    let mut server = TestServer::start_with(setup).await;
    let mut client = server.client().await;
    let earlier = server.train(StartTrainingRequest::default()).await;
    assert_eq!(earlier.state(), JobState::Succeeded, "job failed: {}", earlier.error);

    let job = client.start_training(slow()).await.expect("start").into_inner();
    wait_for_stage(&mut client, &job.job_id, Stage::Training).await;
    let watch = tokio::spawn({
        let mut client = server.client().await;
        let job_id = job.job_id.clone();
        async move { wait_for_end(&mut client, &job_id).await }
    });
    server.trigger_shutdown();
    server.stopped(Duration::from_secs(30)).await.expect("run returns cleanly");

    let job = watch.await.expect("watch task");
    assert_eq!(job.state(), JobState::Failed);
    assert!(job.error.contains("cut off by shutdown"), "{}", job.error);
    assert_eq!(job.stage(), Stage::Training, "it was cut off where it was");
    assert_eq!(server.run_dirs("v1"), vec![earlier.run_id.clone()], "the cut-off job left no run");
    assert_eq!(server.latest("v1").await.map(|r| r.to_string()), Some(earlier.run_id.clone()));
    wait_for_webhook(&server, &["failed", &job.job_id, "cut off"]).await;
}
