//! Model runs in the bucket, and the path train-service and `crctl evaluate`
//! take from a bucket to a trained model, through the public API.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::OnceLock;

use chrono::Utc;
use crs_domain::data::synth::{SynthSpec, write_training};
use crs_domain::data::{EvalSource, Observations, TrainingTable};
use crs_domain::evaluation::{TrainingRun, train_and_evaluate};
use crs_domain::metrics::Metrics;
use crs_domain::models::{ARTIFACT_FORMAT_VERSION, ArtifactError, ModelVer, sha256_hex};
use crs_platform::lifecycle::inputs::{InputKeys, Inputs};
use crs_platform::lifecycle::retention::{Policy, Swept, sweep};
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::events::{Change, RunStage};
use crs_platform::registry::runs::{
    ArtifactRecord, DataRecord, LoadError, ModelStore, RunMetadata, RunMetrics, ServiceRecord,
};
use crs_platform::storage::bucket::{Bucket, BucketKey, StorageError};
use crs_platform::storage::layout::{self, EVAL_KEY, ModelKey, RunId, TRAIN_KEY};
use crs_platform::storage::sample_data::{SampleSizes, write_sample_data};

fn ver(name: &str) -> ModelVer {
    ModelVer::parse(name).unwrap()
}

fn observations(keywords: usize, first_entity: i64) -> Observations {
    let mut csv = Vec::new();
    write_training(&SynthSpec { first_entity, keywords, attributes: 20, seed: 11 }, &mut csv).unwrap();
    TrainingTable::read("synth.csv", Cursor::new(csv)).unwrap().observations().unwrap()
}

/// Train and eval observations from disjoint synthetic keywords.
fn synth_split() -> &'static (Observations, Observations) {
    static SPLIT: OnceLock<(Observations, Observations)> = OnceLock::new();
    SPLIT.get_or_init(|| (observations(1500, 1), observations(400, 1501)))
}

fn v1_run() -> &'static TrainingRun {
    static RUN: OnceLock<TrainingRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let (train, eval) = synth_split();
        let params = ver("v1").version().params("p.yaml", None).unwrap();
        train_and_evaluate(ver("v1"), &params, train, eval, |_| {}).unwrap()
    })
}

fn assert_beats(model: &Metrics, baseline: &Metrics, name: &str) {
    assert!(model.wmae < baseline.wmae, "wmae {} vs {name} {}", model.wmae, baseline.wmae);
    assert!(model.wmse < baseline.wmse, "wmse {} vs {name} {}", model.wmse, baseline.wmse);
    assert!(model.logloss < baseline.logloss, "logloss {} vs {name} {}", model.logloss, baseline.logloss);
}

/// Equal to within a relative 1e-12: the artifact's JSON does not carry every f64 bit.
fn assert_same_predictions(loaded: &[f64], trained: &[f64]) {
    assert_eq!(loaded.len(), trained.len());
    for (i, (a, b)) in loaded.iter().zip(trained).enumerate() {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "row {i}: loaded {a}, trained {b}");
    }
}

#[tokio::test]
async fn v1_beats_the_device_baseline_on_the_generated_eval_file() {
    // The default data of a bucket, through the path train-service and `crctl evaluate` take.
    let bucket = Bucket::open("memory://").unwrap();
    let sizes = SampleSizes { train_keywords: 2500, eval_keywords: 800, predict_keywords: 10 };
    write_sample_data(&bucket, sizes, 5).await.unwrap();
    let v1 = ver("v1");
    let keys =
        InputKeys::new(v1, BucketKey::parse(TRAIN_KEY).unwrap(), Some(BucketKey::parse(EVAL_KEY).unwrap()), None);
    assert_eq!(keys.config.as_str(), "config/v1/params.yaml");
    let inputs = Inputs::fetch(&bucket, keys).await.unwrap();
    let (params, config) = inputs.params(v1).unwrap();
    assert_eq!(params, v1.version().params("p.yaml", None).unwrap());
    assert_eq!(config.sha256, None, "no params.yaml: the defaults");

    let prepared = inputs.prepare().unwrap();
    let data = &prepared.data;
    assert_eq!(data.eval_source, EvalSource::File);
    assert!(prepared.eval_record.is_some());
    let run = train_and_evaluate(v1, &params, &data.train, &data.eval, |_| {}).unwrap();
    assert_beats(&run.eval.model, &run.eval.device, "device");
    assert_beats(&run.eval.model, &run.eval.global, "global");
    assert_eq!(run.eval.rows, data.eval.len() as u64);
}

fn metadata(run: &TrainingRun, run_id: &RunId) -> RunMetadata {
    let now = Utc::now();
    let record = |key: &str| DataRecord { key: key.to_owned(), sha256: None, size_bytes: None, rows: None };
    RunMetadata {
        model_ver: run.model.model_ver,
        run_id: run_id.clone(),
        job_id: format!("job-{run_id}"),
        state: "succeeded".to_owned(),
        created_at: now,
        started_at: now,
        finished_at: now,
        labels: BTreeMap::from([("test".to_owned(), "models.rs".to_owned())]),
        hyperparameters: run.model.params.clone(),
        config: record("config/v1/params.yaml"),
        train_data: record("data/train/train.csv.gz"),
        eval_data: None,
        eval_source: "holdout".to_owned(),
        profile: Vec::new(),
        features: run.model.features.feature_names(),
        metrics: RunMetrics { train: run.train.clone(), eval: run.eval.clone() },
        stage_seconds: Vec::new(),
        artifact: ArtifactRecord { file: String::new(), sha256: String::new(), size_bytes: 0, format_version: 0 },
        service: ServiceRecord { name: "crs-platform tests".to_owned(), version: "0".to_owned() },
        stage: None,
        weeks: None,
        fit_report: serde_json::Value::Null,
        feature_importance: Vec::new(),
        imported: None,
    }
}

#[tokio::test]
async fn model_store_saves_loads_and_only_moves_latest_forward() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(Bucket::open(&dir.path().to_string_lossy()).unwrap());
    let run = v1_run();
    let (first, second) = (RunId::generate(Utc::now()), RunId::generate(Utc::now()));
    assert!(first < second);

    let mut second_meta = metadata(run, &second);
    let mut first_meta = metadata(run, &first);
    // Saved out of order: the later run first.
    store.save_run(&run.model, &mut second_meta).await.unwrap();
    store.save_run(&run.model, &mut first_meta).await.unwrap();
    assert_eq!(second_meta.artifact.format_version, ARTIFACT_FORMAT_VERSION);
    assert_eq!(second_meta.artifact.sha256, sha256_hex(&run.model.to_artifact()));
    assert!(dir.path().join(format!("model/v1/{second}/model.json")).is_file());
    let runs: Vec<RunId> = store.runs(ver("v1")).await.unwrap().into_iter().map(|m| m.run_id).collect();
    assert_eq!(runs, vec![first.clone(), second.clone()]);

    assert_eq!(store.latest(ver("v1")).await.unwrap(), None);
    let err = store.load_latest(ver("v1")).await.unwrap_err();
    assert_eq!(err.to_string(), "model v1 has no LATEST run yet");

    assert!(store.advance_latest(ver("v1"), &second).await.unwrap());
    // An earlier run, or the same one again, does not move LATEST.
    assert!(!store.advance_latest(ver("v1"), &first).await.unwrap());
    assert!(!store.advance_latest(ver("v1"), &second).await.unwrap());
    assert_eq!(store.latest(ver("v1")).await.unwrap(), Some(second.clone()));
    let latest = std::fs::read_to_string(dir.path().join("model/v1/LATEST")).unwrap();
    assert_eq!(latest.trim(), second.as_str());

    let loaded = store.load_latest(ver("v1")).await.unwrap();
    assert_eq!(loaded.metadata.run_id, second);
    assert_eq!(loaded.metadata.artifact, second_meta.artifact);
    assert_eq!(loaded.metadata.hyperparameters, second_meta.hyperparameters);
    let rows = &synth_split().1.rows;
    assert_same_predictions(&loaded.model.predict(rows).unwrap(), &run.model.predict(rows).unwrap());
    assert_eq!(store.versions().await.unwrap(), vec![ver("v1")]);
}

#[tokio::test]
async fn model_store_refuses_a_run_whose_artifact_was_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(Bucket::open(&dir.path().to_string_lossy()).unwrap());
    let run = v1_run();
    let id = RunId::generate(Utc::now());
    store.save_run(&run.model, &mut metadata(run, &id)).await.unwrap();
    assert!(store.load(ver("v1"), &id).await.is_ok());

    let path = dir.path().join(format!("model/v1/{id}/model.json"));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = store.load(ver("v1"), &id).await.unwrap_err();
    assert!(matches!(err, LoadError::Artifact { source: ArtifactError::Checksum { .. }, .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("model/v1/{id}/model.json: checksum mismatch: expected sha256 ")),
        "{message}"
    );
}

#[tokio::test]
async fn model_store_reports_missing_runs_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(Bucket::open(&dir.path().to_string_lossy()).unwrap());
    let id = RunId::parse("20260101T000000000Z-abcdef").unwrap();
    let err = store.load(ver("v1"), &id).await.unwrap_err();
    assert!(matches!(err, LoadError::Storage(StorageError::NotFound { .. })), "{err:?}");
    assert_eq!(err.to_string(), format!("model/v1/{id}/metadata.json: not found in the bucket"));
}

/// Saves `count` runs of v1, oldest first, with their stage as written.
async fn save_runs(store: &ModelStore, count: usize, stage: Option<RunStage>) -> Vec<RunId> {
    let run = v1_run();
    let mut ids = Vec::new();
    for _ in 0..count {
        let id = RunId::generate(Utc::now());
        let mut meta = metadata(run, &id);
        meta.stage = stage;
        store.save_run(&run.model, &mut meta).await.unwrap();
        ids.push(id);
    }
    ids
}

fn ids(runs: &[RunMetadata]) -> Vec<RunId> {
    runs.iter().map(|m| m.run_id.clone()).collect()
}

#[tokio::test]
async fn runs_are_listed_from_the_index_which_heals_when_missing_stale_or_broken() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
    let store = ModelStore::new(bucket.clone());
    let saved = save_runs(&store, 3, None).await;
    let index_key = ModelKey::new(ver("v1")).index();
    let index: serde_json::Value = serde_json::from_slice(&bucket.get(&index_key).await.unwrap()).unwrap();
    assert_eq!(index["runs"].as_array().map(Vec::len), Some(3), "saving a run updates the index");

    // The listing takes the index's copy and does not read the run's metadata.
    let mut tampered = index.clone();
    tampered["runs"][0]["labels"]["test"] = "from the index".into();
    bucket.put(&index_key, serde_json::to_vec(&tampered).unwrap()).await.unwrap();
    let runs = store.runs(ver("v1")).await.unwrap();
    assert_eq!((ids(&runs), runs[0].labels["test"].as_str()), (saved.clone(), "from the index"));
    // The store keeps the index it parsed, and parses it again as soon as the object
    // changes, whoever wrote it: a cached listing is never older than the bucket.
    tampered["runs"][0]["labels"]["test"] = "rewritten by another replica".into();
    bucket.put(&index_key, serde_json::to_vec(&tampered).unwrap()).await.unwrap();
    let runs = store.runs(ver("v1")).await.unwrap();
    assert_eq!(runs[0].labels["test"], "rewritten by another replica");
    assert_eq!(store.runs(ver("v1")).await.unwrap()[0].labels["test"], "rewritten by another replica");

    // Missing, stale (a run short, a run too many) or unreadable: rebuilt from the metadata.
    bucket.delete(&index_key).await.unwrap();
    assert_eq!(ids(&store.runs(ver("v1")).await.unwrap()), saved);
    assert!(bucket.exists(&index_key).await.unwrap(), "a missing index is written back");
    let mut stale = index.clone();
    stale["runs"].as_array_mut().unwrap().remove(1);
    let mut gone = index["runs"][0].clone();
    gone["run_id"] = "20200101T000000000Z-000000".into();
    stale["runs"].as_array_mut().unwrap().push(gone);
    bucket.put(&index_key, serde_json::to_vec(&stale).unwrap()).await.unwrap();
    assert_eq!(ids(&store.runs(ver("v1")).await.unwrap()), saved);
    let healed: serde_json::Value = serde_json::from_slice(&bucket.get(&index_key).await.unwrap()).unwrap();
    let healed: Vec<&str> = healed["runs"].as_array().unwrap().iter().map(|m| m["run_id"].as_str().unwrap()).collect();
    assert_eq!(healed, saved.iter().map(RunId::as_str).collect::<Vec<_>>());
    bucket.put(&index_key, "{not json").await.unwrap();
    assert_eq!(ids(&store.runs(ver("v1")).await.unwrap()), saved);

    // A folder without metadata (a run being written, or a crash) is no run.
    let partial = ModelKey::new(ver("v1")).run(&RunId::generate(Utc::now())).artifact();
    bucket.put(&partial, "{}").await.unwrap();
    assert_eq!(ids(&store.runs(ver("v1")).await.unwrap()), saved);

    // A deleted run leaves the index before its metadata goes.
    store.delete_run(ver("v1"), &saved[1]).await.unwrap();
    assert!(bucket.list(&ModelKey::new(ver("v1")).run(&saved[1]).prefix()).await.unwrap().is_empty());
    let index: serde_json::Value = serde_json::from_slice(&bucket.get(&index_key).await.unwrap()).unwrap();
    assert_eq!(index["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(ids(&store.runs(ver("v1")).await.unwrap()), vec![saved[0].clone(), saved[2].clone()]);
}

#[tokio::test]
async fn retention_keeps_the_production_history_latest_candidates_and_the_newest_archived_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
    let catalog = Catalog::new(ModelStore::new(bucket.clone()));
    let store = catalog.store();
    let v1 = ver("v1");
    // r0 and r1 were production in turn; r2..r5 rejected; r6 a candidate; r7 a pre-stages run LATEST names.
    let mut runs = save_runs(store, 7, Some(RunStage::Candidate)).await;
    runs.extend(save_runs(store, 1, None).await);
    assert!(store.advance_latest(v1, &runs[7]).await.unwrap());
    let log = catalog.log(v1);
    log.append(1, "cycle a", "first", Change::Promote { run_id: runs[0].clone(), previous: None }, None).await.unwrap();
    let second = Change::Promote { run_id: runs[1].clone(), previous: Some(runs[0].clone()) };
    log.append(2, "cycle b", "better", second, None).await.unwrap();
    for (seq, run) in (3..).zip(&runs[2..6]) {
        let rejected = Change::Stage { run_id: run.clone(), stage: RunStage::Rejected };
        log.append(seq, "cycle c", "worse", rejected, None).await.unwrap();
    }
    for run in &runs {
        bucket.put(&layout::run_report(v1, run), "<!DOCTYPE html>").await.unwrap();
    }

    // Old and new cycle records and reports, against a fixed clock.
    let now = "2026-03-01T00:00:00Z".parse().unwrap();
    let cycle = |id: &str| RunId::parse(id).unwrap();
    let (old_done, old_running, recent) =
        (cycle("20260101T000000000Z-aaaaaa"), cycle("20260102T000000000Z-bbbbbb"), cycle("20260220T000000000Z-cccccc"));
    let orphan_report = cycle("20260103T000000000Z-dddddd");
    for (id, state) in [(&old_done, "succeeded"), (&old_running, "running"), (&recent, "failed")] {
        let record = serde_json::json!({ "cycle_id": id, "state": state });
        bucket.put(&layout::cycle_record(v1, id), serde_json::to_vec(&record).unwrap()).await.unwrap();
    }
    for id in [&old_done, &old_running, &recent, &orphan_report] {
        bucket.put(&layout::cycle_report(v1, id), "<!DOCTYPE html>").await.unwrap();
    }
    for id in [&old_done, &recent] {
        bucket.put(&layout::cycle_cancel(v1, id), "{}").await.unwrap();
    }

    // Folders without metadata, as a crash while writing a run leaves them: an old one and a recent one.
    let (old_partial, new_partial) = (cycle("20260104T000000000Z-eeeeee"), RunId::generate(Utc::now()));
    for run in [&old_partial, &new_partial] {
        bucket.put(&ModelKey::new(v1).run(run).artifact(), "{}").await.unwrap();
    }

    // Captured traffic by its own age limit, in whole days.
    let captured = |date: chrono::NaiveDate| layout::capture_batch(v1, date, &RunId::generate(now));
    let (old_day, last_day) =
        ((now - chrono::Duration::days(8)).date_naive(), (now - chrono::Duration::days(7)).date_naive());
    let (old_capture, kept_capture) = (captured(old_day), captured(last_day));
    for key in [&old_capture, &kept_capture] {
        bucket.put(key, "x").await.unwrap();
    }

    // Trend points outlive the cycles: kept for their own year.
    let (old_trend, kept_trend) = (cycle("20250101T000000000Z-eeeeee"), cycle("20260104T000000000Z-eeeeee"));
    for id in [&old_trend, &kept_trend] {
        bucket.put(&layout::trend_point(v1, id), "{}").await.unwrap();
    }

    let policy = Policy {
        keep_runs: 2,
        keep_for: chrono::Duration::days(30),
        keep_captures_for: chrono::Duration::days(7),
        keep_trends_for: chrono::Duration::days(365),
    };
    let swept = sweep(&catalog, v1, &policy, now).await.unwrap();
    // Of the rejected runs r2..r5 the newest two stay; r7 is archived but LATEST names it.
    assert_eq!(swept.runs, runs[2..4].to_vec());
    assert_eq!((swept.cycles.clone(), swept.reports), (vec![old_done.clone()], 2));
    assert_eq!(swept.incomplete, vec![old_partial.clone()]);
    assert_eq!((swept.captures, swept.trends), (1, 1));
    assert!(bucket.exists(&layout::trend_point(v1, &kept_trend)).await.unwrap(), "older than the cycles it outlives");
    assert!(!bucket.exists(&old_capture).await.unwrap() && bucket.exists(&kept_capture).await.unwrap());
    assert!(!bucket.exists(&ModelKey::new(v1).run(&old_partial).artifact()).await.unwrap());
    assert!(bucket.exists(&ModelKey::new(v1).run(&new_partial).artifact()).await.unwrap(), "may be being written");
    for run in &runs[2..4] {
        assert!(bucket.list(&ModelKey::new(v1).run(run).prefix()).await.unwrap().is_empty(), "{run}");
        assert!(!bucket.exists(&layout::run_report(v1, run)).await.unwrap(), "{run}");
    }
    let kept: Vec<RunId> = catalog.runs(v1).await.unwrap().runs.into_iter().map(|r| r.metadata.run_id).collect();
    let expected: Vec<RunId> = [0, 1, 4, 5, 6, 7].iter().map(|&i| runs[i].clone()).collect();
    assert_eq!(kept, expected);
    for run in &expected {
        store.load(v1, run).await.unwrap_or_else(|e| panic!("{run}: {e}"));
        assert!(bucket.exists(&layout::run_report(v1, run)).await.unwrap(), "{run}");
    }
    assert!(!bucket.exists(&layout::cycle_record(v1, &old_done)).await.unwrap());
    for id in [&old_running, &recent] {
        assert!(bucket.exists(&layout::cycle_record(v1, id)).await.unwrap(), "{id}");
        assert!(bucket.exists(&layout::cycle_report(v1, id)).await.unwrap(), "{id}");
    }
    assert!(!bucket.exists(&layout::cycle_report(v1, &orphan_report)).await.unwrap());
    assert!(!bucket.exists(&layout::cycle_cancel(v1, &old_done)).await.unwrap());
    assert!(bucket.exists(&layout::cycle_cancel(v1, &recent)).await.unwrap());

    // A second sweep finds nothing more to do.
    assert_eq!(sweep(&catalog, v1, &policy, now).await.unwrap(), Swept::default());
}
