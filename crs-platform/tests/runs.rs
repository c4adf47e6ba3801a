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
use crs_platform::bucket::{Bucket, BucketKey, StorageError};
use crs_platform::inputs::{InputKeys, Inputs};
use crs_platform::layout::{EVAL_KEY, RunId, TRAIN_KEY};
use crs_platform::runs::{ArtifactRecord, DataRecord, LoadError, ModelStore, RunMetadata, RunMetrics, ServiceRecord};
use crs_platform::sample_data::{SampleSizes, write_sample_data};

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

    assert!(store.promote(ver("v1"), &second).await.unwrap());
    // An earlier run, or the same one again, does not move LATEST.
    assert!(!store.promote(ver("v1"), &first).await.unwrap());
    assert!(!store.promote(ver("v1"), &second).await.unwrap());
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
