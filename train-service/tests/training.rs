//! Training through the gRPC API: the run it writes, the updates a watcher sees,
//! concurrent jobs, and webhooks that misbehave.

mod common;

use std::collections::HashMap;

use common::{SLOW_CONFIG_KEY, Setup, TestServer, wait_for_webhook};
use crs_domain::models::{ModelVer, sha256_hex};
use crs_platform::storage::layout::RunId;
use crs_platform::storage::layout::TRAIN_KEY;
use crs_proto::train::{
    GetTrainingJobRequest, JobState, ListModelsRequest, ListTrainingJobsRequest, Stage, StartTrainingRequest,
};
use crs_testkit::{Behaviour, key_of as key, wait_for_end, watch_to_end};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trains_v1_and_writes_a_complete_run() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let labels = HashMap::from([("owner".to_owned(), "tests".to_owned())]);
    let request = StartTrainingRequest { labels: labels.clone(), ..Default::default() };
    let queued = client.start_training(request).await.expect("start").into_inner();
    assert_eq!(queued.state(), JobState::Queued);
    assert_eq!(queued.model_ver, "v1");
    assert_eq!(queued.train_key, TRAIN_KEY);
    assert_eq!(queued.eval_key, None);
    assert_eq!(queued.config_key, "config/v1/params.yaml");
    assert_eq!(queued.labels, labels);
    assert!(queued.created_at.is_some());

    let done = wait_for_end(&mut client, &queued.job_id).await;
    assert_eq!(done.state(), JobState::Succeeded, "job failed: {}", done.error);
    assert_eq!(done.stage(), Stage::Saving);
    assert_eq!(done.progress, 1.0);
    assert!(done.error.is_empty());
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    let evaluation = done.evaluation.expect("a succeeded job has its evaluation");
    assert!(evaluation.rows > 0 && evaluation.clicks > 0);
    let model = evaluation.model.expect("model metrics");
    assert!(model.wmae.is_finite() && model.logloss.is_finite());

    // The files of the run, and LATEST pointing at it.
    let run_id = done.run_id.clone();
    let run_dir = server.bucket_dir().join("model/v1").join(&run_id);
    let artifact = std::fs::read(run_dir.join("model.json")).expect("model.json");
    let sidecar = std::fs::read_to_string(run_dir.join("model.json.sha256")).expect("model.json.sha256");
    assert!(run_dir.join("metadata.json").is_file());
    let latest = std::fs::read_to_string(server.bucket_dir().join("model/v1/LATEST")).expect("LATEST");
    assert_eq!(latest.trim(), run_id);

    // The metadata is the run's record, and its checksums match the files.
    let metadata = server
        .store()
        .metadata(ModelVer::parse("v1").unwrap(), &RunId::parse(&run_id).expect("run id"))
        .await
        .expect("metadata");
    assert_eq!(sha256_hex(&artifact), metadata.artifact.sha256);
    assert_eq!(sidecar.split_whitespace().next(), Some(metadata.artifact.sha256.as_str()));
    assert_eq!(metadata.artifact.file, "model.json");
    assert_eq!(metadata.artifact.size_bytes, artifact.len() as u64);
    let train_file = std::fs::read(server.bucket_dir().join(TRAIN_KEY)).expect("train file");
    assert_eq!(metadata.train_data.sha256.as_deref(), Some(sha256_hex(&train_file).as_str()));
    assert_eq!(metadata.train_data.size_bytes, Some(train_file.len() as u64));
    assert!(metadata.train_data.rows.as_ref().is_some_and(|rows| rows.read > 0 && rows.observations > 0));
    assert_eq!(metadata.model_ver.name(), "v1");
    assert_eq!(metadata.run_id.as_str(), run_id);
    assert_eq!(metadata.job_id, queued.job_id);
    assert_eq!(metadata.state, "succeeded");
    assert!(metadata.created_at <= metadata.started_at && metadata.started_at <= metadata.finished_at);
    assert_eq!(metadata.labels.get("owner").map(String::as_str), Some("tests"));
    assert_eq!(metadata.hyperparameters["max_depth"], 8, "defaults, as no config file exists");
    assert_eq!(metadata.config.key, "config/v1/params.yaml");
    assert_eq!(metadata.config.sha256, None);
    assert_eq!(metadata.eval_source, "holdout");
    assert_eq!(metadata.eval_data, None);
    assert!(!metadata.profile.is_empty());
    assert!(metadata.features.first().is_some_and(|f| f.starts_with("device=")), "{:?}", metadata.features);
    assert_eq!(metadata.metrics.eval.rows, evaluation.rows);
    let stages: Vec<&str> = metadata.stage_seconds.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["loading_data", "preparing", "training", "evaluating"]);
    assert_eq!(metadata.service.name, "train-service");
    server
        .store()
        .load(ModelVer::parse("v1").unwrap(), &metadata.run_id)
        .await
        .expect("the run loads and its checksum verifies");

    // Webhooks: started and succeeded, both naming the run.
    wait_for_webhook(&server, &["started", &run_id]).await;
    let success = server
        .webhook()
        .wait_for(std::time::Duration::from_secs(10), |body| {
            body["text"].as_str().is_some_and(|t| t.contains("succeeded") && t.contains(&run_id))
        })
        .await
        .expect("success message");
    let fields = success["attachments"][0]["fields"].to_string();
    for field in ["Eval wMAE (model)", "Eval wMAE (device baseline)", "Eval log-loss (model)"] {
        assert!(fields.contains(field), "{field} missing from {fields}");
    }

    // The same job and run through the read methods.
    let got = client.get_training_job(GetTrainingJobRequest { job_id: queued.job_id.clone() }).await.expect("get");
    assert_eq!(got.into_inner(), done);
    let listed = client.list_training_jobs(ListTrainingJobsRequest {}).await.expect("list jobs").into_inner();
    assert_eq!(listed.jobs, vec![done.clone()]);
    let models = client.list_models(ListModelsRequest::default()).await.expect("list models").into_inner();
    assert_eq!(models.versions.len(), 1);
    let v1 = &models.versions[0];
    assert_eq!((v1.model_ver.as_str(), v1.latest_run_id.as_str()), ("v1", run_id.as_str()));
    assert_eq!(v1.runs.len(), 1);
    assert_eq!(v1.runs[0].run_id, run_id);
    assert_eq!(v1.runs[0].job_id, queued.job_id);
    assert_eq!(v1.runs[0].artifact_sha256, metadata.artifact.sha256);
    assert_eq!(v1.runs[0].labels, labels);
    // metadata.json holds the metrics as JSON, which may round the last bit of a float.
    let stored = v1.runs[0].eval.expect("stored eval metrics");
    assert_eq!(stored.rows, evaluation.rows);
    assert!((stored.model.expect("model metrics").wmae - model.wmae).abs() < 1e-12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_job_from_queued_through_every_stage_to_succeeded() {
    // One job at a time, and a slow job ahead, so the watched job is still queued
    // when the watch starts.
    let server = TestServer::start_with(Setup { max_concurrent_jobs: 1, ..Setup::default() }).await;
    let mut client = server.client().await;
    let ahead = StartTrainingRequest { config_key: Some(SLOW_CONFIG_KEY.to_owned()), ..Default::default() };
    let ahead = client.start_training(ahead).await.expect("start").into_inner();
    let job = client.start_training(StartTrainingRequest::default()).await.expect("start").into_inner();
    assert_eq!(job.state(), JobState::Queued);

    let updates = watch_to_end(&mut client, &job.job_id).await;
    assert_eq!(updates[0].state(), JobState::Queued, "the stream starts with the current state");
    let last = updates.last().expect("updates");
    assert_eq!(last.state(), JobState::Succeeded, "job failed: {}", last.error);
    let mut stages: Vec<Stage> = updates.iter().filter(|u| u.state() == JobState::Running).map(|u| u.stage()).collect();
    stages.dedup();
    assert_eq!(stages, [Stage::LoadingData, Stage::Preparing, Stage::Training, Stage::Evaluating, Stage::Saving]);
    assert!(updates.windows(2).all(|w| w[0].progress <= w[1].progress), "progress only grows");
    assert!(updates.iter().all(|u| u.job_id == job.job_id));

    // Watching an ended job gives its final state and ends.
    let again = watch_to_end(&mut client, &job.job_id).await;
    assert_eq!(again, vec![last.clone()]);
    assert_eq!(wait_for_end(&mut client, &ahead.job_id).await.state(), JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_at_once_write_two_runs_and_latest_ends_on_the_later() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let request = StartTrainingRequest { config_key: Some(SLOW_CONFIG_KEY.to_owned()), ..Default::default() };
    let first = client.start_training(request.clone()).await.expect("start").into_inner();
    let second = client.start_training(request).await.expect("start").into_inner();
    let (first, second) =
        tokio::join!(async { wait_for_end(&mut server.client().await, &first.job_id).await }, async {
            wait_for_end(&mut server.client().await, &second.job_id).await
        },);
    for job in [&first, &second] {
        assert_eq!(job.state(), JobState::Succeeded, "job failed: {}", job.error);
    }
    let seconds = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos)).expect("timestamp");
    assert!(seconds(&second.started_at) < seconds(&first.finished_at), "both jobs ran at the same time");

    assert_ne!(first.run_id, second.run_id);
    let later = first.run_id.clone().max(second.run_id.clone());
    assert_eq!(server.latest("v1").await.map(|r| r.to_string()), Some(later.clone()));
    let mut runs = vec![first.run_id.clone(), second.run_id.clone()];
    runs.sort();
    assert_eq!(server.run_dirs("v1"), runs);

    let listed = client.list_training_jobs(ListTrainingJobsRequest {}).await.expect("list").into_inner();
    let ids: Vec<&str> = listed.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, [second.job_id.as_str(), first.job_id.as_str()], "newest first");
    let request = ListModelsRequest { model_ver: "v1".to_owned() };
    let models = client.list_models(request).await.expect("list models").into_inner();
    let stored: Vec<&str> = models.versions[0].runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(stored, runs, "oldest first");
    assert_eq!(models.versions[0].latest_run_id, later);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_webhook_does_not_fail_the_job() {
    let server = TestServer::start_with(Setup { webhook: Some(Behaviour::Fail(500)), ..Setup::default() }).await;
    let job = server.train(StartTrainingRequest::default()).await;
    assert_eq!(job.state(), JobState::Succeeded, "job failed: {}", job.error);
    // The notice was tried (and retried) against the failing receiver.
    wait_for_webhook(&server, &["succeeded", &job.run_id]).await;

    server.webhook().set_behaviour(Behaviour::Hang);
    let job = server.train(StartTrainingRequest::default()).await;
    assert_eq!(job.state(), JobState::Succeeded, "job failed: {}", job.error);
    wait_for_webhook(&server, &["started", &job.run_id]).await;
    assert_eq!(server.latest("v1").await.map(|r| r.to_string()), Some(job.run_id.clone()));
    assert!(server.bucket.exists(&key(&format!("model/v1/{}/metadata.json", job.run_id))).await.expect("exists"));
}
