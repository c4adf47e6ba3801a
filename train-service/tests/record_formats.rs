//! Records written before cycle steps, gate outcomes and gate numbers were
//! types (`tests/fixtures/records/`, written by train-service as it was, on a
//! bucket that ran three cycles, a few jobs, a promotion by hand, a rollback
//! and a cancelled cycle) still read: each is read into its type and written
//! back byte for byte, and a service started on a bucket holding them lists
//! them. (The job records' round trip is a unit test of `jobs/record.rs`, whose
//! record type is private.)

mod common;

use std::path::{Path, PathBuf};

use common::TestServer;
use crs_domain::models::ModelVer;
use crs_platform::registry::events::{Change, Event, EventLog, RunStage};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_proto::train::{
    CycleState as WireCycleState, GetTrainingJobRequest, JobState, ListCyclesRequest, ListModelsRequest, Stage,
};
use train_service::cycles::{CycleRecord, CycleState, CycleStep};
use train_service::gate::GateOutcome;

/// The fixtures of one kind, in name order, with their bytes.
fn fixtures(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records").join(kind);
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("the fixtures").map(|entry| entry.expect("an entry").path()).collect();
    paths.sort();
    paths.into_iter().map(|path| (path.clone(), std::fs::read(&path).expect("a fixture"))).collect()
}

fn name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name")
}

/// Reads `bytes` as a `T` and checks it writes back as they were.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(path: &Path, bytes: &[u8]) -> T {
    let value: T = serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let written = serde_json::to_vec_pretty(&value).expect("records are plain serde data");
    assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(bytes), "{}", path.display());
    value
}

#[test]
fn cycle_records_read_as_types_and_write_back_unchanged() {
    let records: Vec<CycleRecord> = fixtures("cycles").iter().map(|(path, bytes)| round_trip(path, bytes)).collect();
    let seen: Vec<(CycleState, CycleStep)> = records.iter().map(|r| (r.state, r.step)).collect();
    assert_eq!(
        seen,
        [
            (CycleState::Succeeded, CycleStep::Report),
            (CycleState::Succeeded, CycleStep::Report),
            (CycleState::Succeeded, CycleStep::Report),
            (CycleState::Cancelled, CycleStep::Ingest),
        ]
    );
    let promoted: Vec<bool> = records.iter().map(|r| r.gate.as_ref().is_some_and(GateOutcome::promoted)).collect();
    assert_eq!(promoted, [true, true, false, false]);
    // The decision quotes the outcome as it was stored.
    let second = &records[1];
    let gate = second.gate.as_ref().expect("the second cycle trained and gated a run");
    assert_eq!(gate.stage, RunStage::Production);
    assert!(second.decision.ends_with(&format!(": {gate}")), "{}", second.decision);
    assert!(second.drift.is_some(), "the second cycle checked drift");
    let timed: Vec<&str> = second.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(timed, ["ingest", "drift", "train", "batch", "retention"]);
}

#[tokio::test]
async fn history_events_read_as_types_and_write_back_unchanged() {
    let events: Vec<Event> = fixtures("history").iter().map(|(path, bytes)| round_trip(path, bytes)).collect();
    let gated: Vec<Option<f64>> = events.iter().map(|e| e.numbers.as_ref().map(|n| n.logloss)).collect();
    assert_eq!(
        gated,
        [
            Some(0.2178786121860329),
            Some(0.22162173578518912),
            Some(0.22984530332506845),
            None,
            None,
            Some(0.22984530332506845)
        ]
    );
    let second = events[1].numbers.as_ref().expect("a gate's numbers");
    assert_eq!(second.scores.challenger.logloss, second.logloss);
    assert_eq!(second.champion.as_ref().map(ToString::to_string).as_deref(), Some("20261206T212036122Z-856daa"));
    assert_eq!(second.eval_weeks.as_deref(), Some(&[4][..]));
    assert!(matches!(events[4].change, Change::Rollback { .. }));

    // The log replayed from a bucket holding the events, as the services read it.
    let bucket = Bucket::open("memory://").expect("a memory bucket");
    let v1 = ModelVer::parse("v1").expect("v1");
    for (path, bytes) in fixtures("history") {
        let key = BucketKey::parse(&format!("history/v1/{}", name(&path))).expect("a key");
        bucket.put(&key, bytes).await.expect("put");
    }
    let history = EventLog::new(bucket, v1).read().await.expect("the history reads");
    assert_eq!(history.events(), &events[..]);
    assert_eq!(history.production().map(ToString::to_string).as_deref(), Some("20261206T212043835Z-f01e30"));
    assert!(history.auto_promotion_paused(), "a rollback pauses automatic promotion");
    // The drift check's reference is the log-loss production had when the gate
    // promoted it; production came back by a rollback, which has no numbers.
    assert_eq!(history.production_event().and_then(|e| e.numbers.as_ref()).map(|n| n.logloss), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_on_a_bucket_with_the_old_records_lists_them() {
    let server = TestServer::start().await;
    for (kind, folder) in [("jobs", "jobs"), ("cycles", "cycles/v1"), ("history", "history/v1")] {
        for (path, bytes) in fixtures(kind) {
            server.stack.put(&format!("{folder}/{}", name(&path)), bytes).await;
        }
    }
    let mut client = server.client().await;

    let job = client
        .get_training_job(GetTrainingJobRequest { job_id: "job-20261206T212151724Z-12dce0-7".into() })
        .await
        .expect("a recorded job")
        .into_inner();
    assert_eq!(
        (job.state(), job.stage(), job.cancel_reason.as_str()),
        (JobState::Cancelled, Stage::LoadingData, "fixture: cancelled")
    );

    let cycles = client.list_cycles(ListCyclesRequest { model_ver: "v1".into() }).await.expect("cycles").into_inner();
    let listed: Vec<(&str, WireCycleState, &str)> =
        cycles.cycles.iter().map(|c| (c.cycle_id.as_str(), c.state(), c.step.as_str())).collect();
    assert_eq!(
        listed,
        [
            ("20261206T212506065Z-d7e791", WireCycleState::Cancelled, "ingest"),
            ("20261206T212047096Z-692963", WireCycleState::Succeeded, "report"),
            ("20261206T212039711Z-e684af", WireCycleState::Succeeded, "report"),
            ("20261206T212034609Z-8e8392", WireCycleState::Succeeded, "report"),
        ]
    );

    let models = client.list_models(ListModelsRequest { model_ver: "v1".into() }).await.expect("models").into_inner();
    let v1 = models.versions.iter().find(|v| v.model_ver == "v1").expect("v1");
    assert_eq!(v1.production_run_id, "20261206T212043835Z-f01e30", "production as the history has it");
}
