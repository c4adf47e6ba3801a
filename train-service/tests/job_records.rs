//! Jobs recorded in the bucket: every replica on it lists and reads them, as
//! does a process started later, and an unfinished job whose process died is
//! shown failed rather than running forever.

mod common;

use std::time::Duration;

use common::TestServer;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{
    CancelTrainingJobRequest, GetTrainingJobRequest, JobState, ListTrainingJobsRequest, RunCycleRequest,
    StartTrainingRequest, TrainingJob,
};
use tonic::Code;
use tonic::transport::Channel;

async fn list(client: &mut TrainServiceClient<Channel>) -> Vec<TrainingJob> {
    client.list_training_jobs(ListTrainingJobsRequest {}).await.expect("list").into_inner().jobs
}

/// Waits until `client` lists `job_id` as ended, and returns it.
async fn listed_ended(client: &mut TrainServiceClient<Channel>, job_id: &str) -> TrainingJob {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = list(client).await;
        if let Some(job) = jobs.iter().find(|j| j.job_id == job_id && j.state() != JobState::Running) {
            return job.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{job_id} not listed as ended: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_by_every_replica_and_after_a_restart() {
    let mut first = TestServer::start().await;
    let job = first.train(StartTrainingRequest::default()).await;
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);

    // Another replica on the same bucket lists and reads it, but cannot cancel it.
    let second = first.stack.start_train(first.stack.train_config()).await;
    let mut other = TrainServiceClient::new(second.channel());
    let seen = listed_ended(&mut other, &job.job_id).await;
    assert_eq!((seen.state(), &seen.run_id, &seen.evaluation), (JobState::Succeeded, &job.run_id, &job.evaluation));
    let got = other.get_training_job(GetTrainingJobRequest { job_id: job.job_id.clone() }).await.expect("get");
    assert_eq!(got.into_inner().run_id, job.run_id);
    let request = CancelTrainingJobRequest { job_id: job.job_id.clone(), by: "t".into(), reason: "r".into() };
    let refused = other.cancel_training_job(request).await.expect_err("an ended job");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // After the first process stops, a new one still lists the job.
    first.trigger_shutdown();
    first.stopped(Duration::from_secs(30)).await.expect("stops");
    let third = first.stack.start_train(first.stack.train_config()).await;
    let mut later = TrainServiceClient::new(third.channel());
    assert_eq!(listed_ended(&mut later, &job.job_id).await.run_id, job.run_id);

    // A record of a running job whose process stopped writing it an hour ago.
    let key = format!("jobs/{}.json", job.job_id);
    let mut record: serde_json::Value = serde_json::from_slice(&first.stack.get(&key).await.expect("record")).unwrap();
    record["job"]["id"] = "job-of-a-dead-process".into();
    record["job"]["state"] = "running".into();
    record["replica"] = "a replica that died".into();
    record["updated_at"] = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339().into();
    first.stack.put("jobs/job-of-a-dead-process.json", serde_json::to_vec(&record).unwrap()).await;
    let dead = listed_ended(&mut later, "job-of-a-dead-process").await;
    assert_eq!(dead.state(), JobState::Failed, "{dead:?}");
    assert!(dead.error.starts_with("abandoned: a replica that died stopped updating it"), "{dead:?}");
    let jobs = list(&mut later).await;
    assert_eq!(jobs.iter().filter(|j| j.job_id == job.job_id).count(), 1, "listed once: {jobs:#?}");

    // A cycle's retention deletes the records of jobs that ended more than keep_days ago.
    let mut old = record.clone();
    old["job"]["id"] = "job-of-last-year".into();
    old["job"]["state"] = "succeeded".into();
    let year_ago = (chrono::Utc::now() - chrono::Duration::days(365)).to_rfc3339();
    old["job"]["created_at"] = year_ago.clone().into();
    old["job"]["finished_at"] = year_ago.into();
    first.stack.put("jobs/job-of-last-year.json", serde_json::to_vec(&old).unwrap()).await;
    let cycle = later.run_cycle(RunCycleRequest { model_ver: "v1".into() }).await.expect("cycle").into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        let key = format!("cycles/v1/{}.json", cycle.cycle_id);
        let record: serde_json::Value =
            serde_json::from_slice(&first.stack.get(&key).await.expect("cycle record")).unwrap();
        if record["state"] != "running" {
            break record;
        }
        assert!(tokio::time::Instant::now() < deadline, "the cycle did not end: {record:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The dead process's record is over an hour old but within keep_days: kept, like the recent ones.
    assert_eq!(record["retention"]["jobs"], 1, "{record:#}");
    assert!(first.stack.get("jobs/job-of-last-year.json").await.is_none());
    let ids: Vec<String> = list(&mut later).await.into_iter().map(|j| j.job_id).collect();
    assert!(ids.contains(&job.job_id) && ids.contains(&"job-of-a-dead-process".to_owned()), "{ids:?}");
}
