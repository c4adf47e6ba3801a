//! The one-shot mode a Kubernetes Job runs (`train-service job`, `train-service
//! cycle`): one job or one cycle against the bucket, saved and gated as the
//! service does, its webhooks posted before it returns, and an outcome that
//! becomes the exit code.

use std::time::Duration;

use crs_domain::models::ModelVer;
use crs_platform::lifecycle::lease::Lease;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::layout;
use crs_testkit::{Stack, key_of as key};
use train_service::config::{JobArgs, OnceCommand};
use train_service::once::{EXIT_REJECTED, OnceError, OnceOutcome};

fn job(train: &str) -> OnceCommand {
    OnceCommand::Job(JobArgs {
        train_key: train.to_owned(),
        eval_key: Some(layout::EVAL_KEY.to_owned()),
        config_key: None,
        labels: vec![("trigger".to_owned(), "test".to_owned())],
        draft: false,
    })
}

async fn once(stack: &Stack, command: OnceCommand) -> anyhow::Result<OnceOutcome> {
    train_service::run_once(stack.train_config(), command, std::future::pending()).await
}

async fn production(stack: &Stack) -> Option<String> {
    let catalog = Catalog::new(ModelStore::new(stack.bucket.clone()));
    catalog.production(ModelVer::parse("v1").unwrap()).await.unwrap().map(|run| run.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_trains_gates_and_notifies_then_a_run_the_gate_rejects_exits_3() {
    let stack = Stack::new().await;
    let outcome = once(&stack, job(layout::TRAIN_KEY)).await.expect("the job succeeds");
    let OnceOutcome::Trained(first) = &outcome else { panic!("{outcome:?}") };
    assert_eq!(outcome.exit_code(), 0);
    let run = first.run_id.as_ref().expect("a run").to_string();
    assert!(first.gate.as_ref().is_some_and(|gate| gate.promoted()), "{:?}", first.gate);
    assert_eq!(production(&stack).await.as_deref(), Some(run.as_str()), "the gate promoted the first run");
    assert_eq!(first.by, "train-service job");
    assert!(outcome.to_string().contains(&format!("run {run}; gate: production: first production run")), "{outcome}");
    // Both notices were posted before run_once returned.
    let texts = stack.webhooks().texts();
    assert!(texts.iter().any(|t| t.contains("started") && t.contains(&first.id)), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("succeeded") && t.contains(&run)), "{texts:?}");

    // A margin no run can beat: the next run is kept, rejected, and production stays.
    stack.bucket.put(&layout::lifecycle_key(ModelVer::parse("v1").unwrap()), "margin: 1.0\n").await.unwrap();
    let outcome = once(&stack, job(layout::TRAIN_KEY)).await.expect("the job itself succeeds");
    let OnceOutcome::Rejected(second) = &outcome else { panic!("{outcome:?}") };
    assert_eq!(outcome.exit_code(), EXIT_REJECTED);
    assert!(outcome.to_string().contains("gate: rejected: log-loss"), "{outcome}");
    assert!(outcome.to_string().contains("does not beat the champion's"), "{outcome}");
    let second_run = second.run_id.as_ref().expect("a run").to_string();
    assert_ne!(second_run, run);
    assert_eq!(production(&stack).await.as_deref(), Some(run.as_str()), "a rejected run is not promoted");
    assert!(stack.bucket.exists(&key(&format!("model/v1/{second_run}/metadata.json"))).await.unwrap(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_fails_naming_the_file_row_and_column_and_leaves_no_run() {
    let stack = Stack::new().await;
    let header = "entity_id,att1,att2,att3,device,week,Clicks,Conversions";
    let bad = format!("{header}\n1,0,1,0,Computer,1,10,1\n2,1,0,1,Tablet,1,lots,2\n");
    stack.bucket.put(&key("data/train/bad.csv"), bad).await.unwrap();
    let err = once(&stack, job("data/train/bad.csv")).await.unwrap_err();
    let message = format!("{err:#}");
    for part in ["failed", "data/train/bad.csv", "row 2", "column 'Clicks'"] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert!(matches!(err.downcast_ref::<OnceError>(), Some(OnceError::Job { state: "failed", .. })), "{err:?}");
    assert!(stack.bucket.list(&key("model/v1")).await.unwrap_or_default().is_empty(), "a failed job left a run");
    let texts = stack.webhooks().texts();
    assert!(texts.iter().any(|t| t.contains("failed") && t.contains("row 2")), "{texts:?}");

    // Inputs that do not exist are refused before a job starts.
    let err = once(&stack, job("data/train/missing.csv")).await.unwrap_err();
    assert!(format!("{err:#}").contains("data/train/missing.csv"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_runs_to_its_end_and_none_starts_while_another_holds_the_lease() {
    let stack = Stack::new().await;
    let outcome = once(&stack, OnceCommand::Cycle).await.expect("the cycle runs");
    let OnceOutcome::Cycled(record) = &outcome else { panic!("{outcome:?}") };
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(record.by, "train-service cycle");
    assert!(
        outcome.to_string().starts_with(&format!("cycle {} of model v1 succeeded: ", record.cycle_id)),
        "{outcome}"
    );
    let texts = stack.webhooks().texts();
    assert!(texts.iter().any(|t| t.contains(record.cycle_id.as_str())), "the cycle's notice: {texts:?}");

    // Another process's cycle holds the lease: this one does not start, and says which runs.
    let holder = "20261201T000000000Z-abcdef";
    let _lease = Lease::acquire(&stack.bucket, "cycle-v1", holder, Duration::from_secs(60)).await.unwrap();
    let err = once(&stack, OnceCommand::Cycle).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<OnceError>(), Some(OnceError::CycleBusy { .. })), "{err:?}");
    assert!(err.to_string().contains(holder), "{err}");
}
