//! Cancelling training jobs: a running one stops at once and keeps nothing of
//! its run, a queued one never starts, and both say who cancelled them and why.

mod common;

use common::{SLOW_CONFIG_KEY, Setup, TestServer, wait_for_webhook};
use crs_proto::train::{CancelTrainingJobRequest, JobState, ListTrainingJobsRequest, Stage, StartTrainingRequest};
use crs_testkit::{wait_for_end, wait_for_stage};
use tonic::Code;

fn cancel(job_id: &str, reason: &str) -> CancelTrainingJobRequest {
    CancelTrainingJobRequest { job_id: job_id.to_owned(), by: "the test".to_owned(), reason: reason.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_keeps_no_run_and_says_who_and_why() {
    // A forest big enough to still be training when the cancel arrives.
    let setup = Setup { max_concurrent_jobs: 1, slow_trees: 200, ..Setup::default() };
    let server = TestServer::start_with(setup).await;
    let mut client = server.client().await;
    let slow = StartTrainingRequest { config_key: Some(SLOW_CONFIG_KEY.to_owned()), ..Default::default() };
    let running = client.start_training(slow).await.expect("start").into_inner();
    let queued = client.start_training(StartTrainingRequest::default()).await.expect("start").into_inner();
    let training = wait_for_stage(&mut client, &running.job_id, Stage::Training).await;
    assert_eq!(training.state(), JobState::Running, "{training:?}");

    // Queued: it never starts.
    let job = client.cancel_training_job(cancel(&queued.job_id, "not needed")).await.expect("cancel").into_inner();
    assert_eq!(job.state(), JobState::Cancelled, "{job:?}");
    assert_eq!((job.cancelled_by.as_str(), job.cancel_reason.as_str()), ("the test", "not needed"));
    assert!(job.started_at.is_none() && job.run_id.is_empty() && job.error.is_empty(), "{job:?}");

    // Running: it stops while its fit goes on in the background, and nothing is written.
    let job = client.cancel_training_job(cancel(&running.job_id, "wrong data")).await.expect("cancel").into_inner();
    assert_eq!(job.state(), JobState::Cancelled, "{job:?}");
    assert_eq!(job.cancel_reason, "wrong data");
    assert!(job.finished_at.is_some() && !job.run_id.is_empty(), "{job:?}");
    let ended = wait_for_end(&mut client, &running.job_id).await;
    assert_eq!(ended.state(), JobState::Cancelled, "the watch stream ends with the cancel: {ended:?}");
    wait_for_webhook(&server, &[&format!("Training job {} cancelled by the test: wrong data", running.job_id)]).await;

    // A later job runs, and only its run is in the bucket; the cancelled one's never appears.
    let next = server.train(StartTrainingRequest::default()).await;
    assert_eq!(next.state(), JobState::Succeeded, "{}", next.error);
    assert_eq!(server.run_dirs("v1"), vec![next.run_id.clone()]);
    assert_eq!(server.latest("v1").await.map(|r| r.to_string()), Some(next.run_id));

    let again = client.cancel_training_job(cancel(&running.job_id, "twice")).await.expect_err("already ended");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("has already ended: cancelled"), "{again:?}");
    let unknown = client.cancel_training_job(cancel("job-nope", "x")).await.expect_err("unknown job");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let listed = client.list_training_jobs(ListTrainingJobsRequest {}).await.expect("list").into_inner().jobs;
    let states: Vec<JobState> = listed.iter().map(|j| j.state()).collect();
    assert_eq!(states, vec![JobState::Succeeded, JobState::Cancelled, JobState::Cancelled]);
}
