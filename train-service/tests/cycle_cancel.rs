//! Cancelling a cycle while it trains: its job is cancelled, nothing of the
//! run is kept, production does not move, and the next cycle runs.

use std::time::Duration;

use crs_domain::data::synth::{SynthSpec, write_week};
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{
    CancelCycleRequest, Cycle, CycleState, GetCycleRequest, JobState, ListTrainingJobsRequest, RunCycleRequest, Stage,
};
use crs_testkit::Stack;
use tonic::Code;
use tonic::transport::Channel;

const SPEC: SynthSpec = SynthSpec { first_entity: 1, keywords: 400, attributes: 20, seed: 9 };

fn week(week: i64) -> Vec<u8> {
    let mut csv = Vec::new();
    write_week(&SPEC, week, false, &mut csv).expect("in-memory write");
    csv
}

async fn wait_for_cycle(client: &mut TrainServiceClient<Channel>, cycle_id: &str) -> Cycle {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let request = GetCycleRequest { model_ver: "v1".into(), cycle_id: cycle_id.to_owned() };
        let cycle = client.get_cycle(request).await.expect("get cycle").into_inner();
        if cycle.state() != CycleState::Running {
            return cycle;
        }
        assert!(tokio::time::Instant::now() < deadline, "cycle did not end: {cycle:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_cancelled_while_training_keeps_nothing_and_the_next_one_runs() {
    let stack = Stack::new().await;
    // A forest slow enough to still be training when the cancel arrives.
    stack.put("config/v1/params.yaml", "trees: 300\nmax_depth: 6\nmin_leaf_clicks: 20\n").await;
    for w in 1..=3 {
        stack.put(&format!("data/incoming/week{w}.csv"), week(w)).await;
    }
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    let cycle = client.run_cycle(RunCycleRequest { model_ver: "v1".into() }).await.expect("cycle").into_inner();

    // Its job, once it trains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        let jobs = client.list_training_jobs(ListTrainingJobsRequest {}).await.expect("jobs").into_inner().jobs;
        if let Some(job) = jobs.into_iter().find(|j| j.labels.get("cycle") == Some(&cycle.cycle_id)) {
            if job.stage() == Stage::Training {
                break job;
            }
            assert_eq!(job.state(), JobState::Running, "the job ended before the cancel: {job:?}");
        }
        assert!(tokio::time::Instant::now() < deadline, "the cycle's job never trained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let request = |reason: &str| CancelCycleRequest {
        model_ver: "v1".into(),
        cycle_id: cycle.cycle_id.clone(),
        by: "the test".into(),
        reason: reason.into(),
    };
    let cancelled = client.cancel_cycle(request("wrong week")).await.expect("cancel").into_inner();
    assert_eq!(cancelled.state(), CycleState::Cancelled, "{cancelled:?}");
    assert_eq!((cancelled.cancelled_by.as_str(), cancelled.cancel_reason.as_str()), ("the test", "wrong week"));
    assert_eq!(cancelled.decision, "cancelled at train by the test: wrong week");
    assert!(cancelled.finished_at.is_some() && cancelled.production_run_id.is_empty(), "{cancelled:?}");
    let jobs = client.list_training_jobs(ListTrainingJobsRequest {}).await.expect("jobs").into_inner().jobs;
    let job = jobs.iter().find(|j| j.job_id == job.job_id).expect("the cycle's job");
    assert_eq!((job.state(), job.cancelled_by.as_str()), (JobState::Cancelled, "the test"), "{job:?}");
    assert!(stack.run_dirs("v1").is_empty(), "a run of the cancelled cycle was kept");

    let again = client.cancel_cycle(request("twice")).await.expect_err("already ended");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    // The lease is free and the rows are still new: the next cycle trains and promotes.
    stack.put("config/v1/params.yaml", "trees: 1\n").await;
    let next = client.run_cycle(RunCycleRequest { model_ver: "v1".into() }).await.expect("cycle").into_inner();
    assert_ne!(next.cycle_id, cycle.cycle_id);
    let next = wait_for_cycle(&mut client, &next.cycle_id).await;
    assert_eq!(next.state(), CycleState::Succeeded, "{next:?}");
    assert!(!next.run_id.is_empty() && next.production_run_id == next.run_id, "{next:?}");
}
