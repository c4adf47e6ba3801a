//! Model versions, hyperparameters, artifacts, the model store and the metrics,
//! through the public API.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::Utc;
use common::{observations, synth_csv};
use crs_core::data::Observations;
use crs_core::data::synth::true_rate;
use crs_core::evaluation::{TrainingRun, train_and_evaluate};
use crs_core::metrics::{LOGLOSS_EPS, Metrics, score};
use crs_core::models::{ARTIFACT_FORMAT_VERSION, ArtifactError, TrainedModel, known_versions, lookup, sha256_hex};
use crs_core::sample_data::{EVAL_KEY, SampleSizes, TRAIN_KEY, write_sample_data};
use crs_core::storage::{
    ArtifactRecord, Bucket, BucketKey, DataRecord, LoadError, ModelStore, RunId, RunMetadata, RunMetrics,
    ServiceRecord, StorageError,
};
use crs_core::training::{InputKeys, Inputs, default_config_key};
use serde_json::json;

// ---------------------------------------------------------------------------
// Hyperparameters

fn v1_params(yaml: Option<&str>) -> Result<serde_json::Value, String> {
    lookup("v1").unwrap().params("config/v1/params.yaml", yaml).map_err(|e| e.to_string())
}

#[test]
fn registry_lists_v0_and_v1_and_names_unknown_versions() {
    assert_eq!(known_versions(), ["v0", "v1"]);
    let Err(err) = lookup("v9") else { panic!("v9 is not a version") };
    assert_eq!(err.to_string(), "unknown model version \"v9\" (known: v0, v1)");
}

#[test]
fn v1_defaults_are_the_documented_ones() {
    let expected = json!({
        "max_depth": 8, "min_leaf_clicks": 100.0, "shrinkage": 50.0, "trees": 1, "growth": "exact", "seed": 42
    });
    assert_eq!(v1_params(None).unwrap(), expected);
    // An empty or blank file means the defaults too.
    assert_eq!(v1_params(Some("")).unwrap(), expected);
    assert_eq!(v1_params(Some("  \n")).unwrap(), expected);
}

#[test]
fn v1_given_keys_override_the_defaults_and_the_rest_are_filled_in() {
    let params = v1_params(Some("max_depth: 4\ngrowth: balanced\ntrees: 3\n")).unwrap();
    assert_eq!(params["max_depth"], 4);
    assert_eq!(params["growth"], "balanced");
    assert_eq!(params["trees"], 3);
    assert_eq!(params["min_leaf_clicks"], 100.0);
    assert_eq!(params["seed"], 42);
}

#[test]
fn v1_unknown_keys_are_errors_naming_the_key() {
    let err = v1_params(Some("max_depth: 4\nmax_deph: 3\n")).unwrap_err();
    assert!(err.starts_with("config/v1/params.yaml: "), "{err}");
    assert!(err.contains("unknown field `max_deph`"), "{err}");
}

#[test]
fn v1_out_of_range_values_are_errors_naming_the_key() {
    for (yaml, expected) in [
        ("max_depth: 0", "'max_depth' must be between 1 and 30, got 0"),
        ("max_depth: 31", "'max_depth' must be between 1 and 30, got 31"),
        ("min_leaf_clicks: 0.5", "'min_leaf_clicks' must be a number of at least 1, got 0.5"),
        ("min_leaf_clicks: .nan", "'min_leaf_clicks' must be a number of at least 1, got NaN"),
        ("min_leaf_clicks: .inf", "'min_leaf_clicks' must be a number of at least 1, got inf"),
        ("shrinkage: -1", "'shrinkage' must be a number of at least 0, got -1"),
        ("trees: 0", "'trees' must be between 1 and 500, got 0"),
        ("trees: 501", "'trees' must be between 1 and 500, got 501"),
    ] {
        assert_eq!(v1_params(Some(yaml)).unwrap_err(), format!("config/v1/params.yaml: {expected}"), "{yaml}");
    }
}

#[test]
fn v1_badly_typed_values_are_errors_naming_the_key() {
    let err = v1_params(Some("growth: fastest")).unwrap_err();
    assert!(err.contains("unknown variant `fastest`"), "{err}");
    let err = v1_params(Some("max_depth: -2")).unwrap_err();
    assert!(err.contains("max_depth"), "{err}");
    let err = v1_params(Some("trees: many")).unwrap_err();
    assert!(err.contains("trees"), "{err}");
    let err = v1_params(Some("- 1\n- 2")).unwrap_err();
    assert!(err.starts_with("config/v1/params.yaml: "), "{err}");
}

#[test]
fn v0_takes_no_hyperparameters() {
    let v0 = lookup("v0").unwrap();
    assert_eq!(v0.params("p.yaml", None).unwrap(), json!({}));
    assert_eq!(v0.params("p.yaml", Some("")).unwrap(), json!({}));
    let err = v0.params("p.yaml", Some("max_depth: 3")).unwrap_err().to_string();
    assert!(err.starts_with("p.yaml: unknown field `max_depth`"), "{err}");
}

// ---------------------------------------------------------------------------
// Training on synthetic data with a known rate function

/// Train and eval observations from disjoint synthetic keywords (20 attributes).
fn synth_split() -> &'static (Observations, Observations) {
    static SPLIT: OnceLock<(Observations, Observations)> = OnceLock::new();
    SPLIT.get_or_init(|| {
        let train = observations("train.csv", synth_csv(1, 2500, 20, 11));
        let eval = observations("eval.csv", synth_csv(2501, 800, 20, 11));
        (train, eval)
    })
}

fn train(version: &str, yaml: Option<&str>) -> TrainingRun {
    let (train, eval) = synth_split();
    let version = lookup(version).unwrap();
    let params = version.params("p.yaml", yaml).unwrap();
    train_and_evaluate(version, &params, train, eval, |_| {}).unwrap()
}

fn v1_run() -> &'static TrainingRun {
    static RUN: OnceLock<TrainingRun> = OnceLock::new();
    RUN.get_or_init(|| train("v1", None))
}

fn assert_beats(model: &Metrics, baseline: &Metrics, name: &str) {
    assert!(model.wmae < baseline.wmae, "wmae {} vs {name} {}", model.wmae, baseline.wmae);
    assert!(model.wmse < baseline.wmse, "wmse {} vs {name} {}", model.wmse, baseline.wmse);
    assert!(model.logloss < baseline.logloss, "logloss {} vs {name} {}", model.logloss, baseline.logloss);
}

#[tokio::test]
async fn v1_beats_the_device_baseline_on_the_generated_eval_file() {
    // The default data of a bucket, through the path train-service and `crctl evaluate` take.
    let bucket = Bucket::open("memory://").unwrap();
    let sizes = SampleSizes { train_keywords: 2500, eval_keywords: 800, predict_keywords: 10 };
    write_sample_data(&bucket, sizes, 5).await.unwrap();
    let keys = InputKeys {
        train: BucketKey::parse(TRAIN_KEY).unwrap(),
        eval: Some(BucketKey::parse(EVAL_KEY).unwrap()),
        config: default_config_key("v1").unwrap(),
        config_required: false,
    };
    let inputs = Inputs::fetch(&bucket, keys).await.unwrap();
    let version = lookup("v1").unwrap();
    let (params, config) = inputs.params(version).unwrap();
    assert_eq!(params, v1_params(None).unwrap());
    assert_eq!(config.sha256, None, "no params.yaml: the defaults");

    let data = inputs.prepare().unwrap();
    assert_eq!(data.eval_source(), "file");
    let run = train_and_evaluate(version, &params, &data.train, &data.eval, |_| {}).unwrap();
    assert_beats(&run.eval.model, &run.eval.device, "device");
    assert_beats(&run.eval.model, &run.eval.global, "global");
    assert_eq!(run.eval.rows, data.eval.len() as u64);
}

#[test]
fn v1_is_closer_to_the_true_rate_than_the_device_baseline() {
    let run = v1_run();
    let (_, eval) = synth_split();
    let predicted = run.model.predict(&eval.rows).unwrap();
    let device = lookup("v0").unwrap();
    let v0 = train_and_evaluate(device, &json!({}), &synth_split().0, eval, |_| {}).unwrap();
    let baseline = v0.model.predict(&eval.rows).unwrap();
    let error_to_truth = |p: &[f64]| {
        let mut total = 0.0;
        let mut clicks = 0.0;
        for (i, &p) in p.iter().enumerate() {
            let truth = true_rate(eval.rows.attributes(i), eval.rows.device[i]);
            total += eval.clicks[i] * (p - truth).abs();
            clicks += eval.clicks[i];
        }
        total / clicks
    };
    let (model, device) = (error_to_truth(&predicted), error_to_truth(&baseline));
    assert!(model < 0.6 * device, "click-weighted error to the true rate: v1 {model}, device {device}");
    assert!(predicted.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn v1_variants_beat_the_device_baseline_too() {
    for yaml in ["growth: balanced", "trees: 5\nseed: 3", "max_depth: 3\nshrinkage: 0"] {
        let run = train("v1", Some(yaml));
        assert_beats(&run.eval.model, &run.eval.device, &format!("device ({yaml})"));
    }
}

#[test]
fn v0_is_the_device_baseline() {
    let run = train("v0", None);
    assert_eq!(run.eval.model, run.eval.device);
    assert_eq!(run.train.model, run.train.device);
}

#[test]
fn empty_training_or_eval_rows_are_refused() {
    let (train, eval) = synth_split();
    let v1 = lookup("v1").unwrap();
    let params = v1.params("p.yaml", None).unwrap();
    let empty = train.select(&[]);
    let err = train_and_evaluate(v1, &params, &empty, eval, |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "no training rows with clicks");
    let err = train_and_evaluate(v1, &params, train, &empty, |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "no evaluation rows with clicks");
}

#[test]
fn metrics_match_their_definitions() {
    // Rates 0.1 (10 clicks) and 0.5 (2 clicks), predicted 0.2 and 0.5.
    let m = score(&[0.2, 0.5], &[10.0, 2.0], &[1.0, 1.0]);
    assert!((m.wmae - (10.0 * 0.1) / 12.0).abs() < 1e-12, "{m:?}");
    assert!((m.wmse - (10.0 * 0.01) / 12.0).abs() < 1e-12, "{m:?}");
    let loss = -(0.2f64.ln() + 9.0 * 0.8f64.ln() + 0.5f64.ln() + 0.5f64.ln()) / 12.0;
    assert!((m.logloss - loss).abs() < 1e-12, "{m:?}");
    assert!((m.mae - 0.05).abs() < 1e-12, "{m:?}");
    // Predicting 0 where conversions happened: clipped, finite, large.
    let zero = score(&[0.0], &[4.0], &[1.0]);
    assert!((zero.logloss - (-LOGLOSS_EPS.ln() / 4.0)).abs() < 1e-6, "{zero:?}");
}

// ---------------------------------------------------------------------------
// Artifacts

/// Equal to within a relative 1e-12: the artifact's JSON does not carry every
/// f64 bit (see `artifact_round_trip_is_bit_exact`).
fn assert_same_predictions(loaded: &[f64], trained: &[f64]) {
    assert_eq!(loaded.len(), trained.len());
    for (i, (a, b)) in loaded.iter().zip(trained).enumerate() {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "row {i}: loaded {a}, trained {b}");
    }
}

#[test]
fn artifact_round_trip_predicts_the_same() {
    let run = v1_run();
    let bytes = run.model.to_artifact();
    let loaded = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), "v1").unwrap();
    let rows = &synth_split().1.rows;
    assert_same_predictions(&loaded.predict(rows).unwrap(), &run.model.predict(rows).unwrap());
    assert_eq!(loaded.features, run.model.features);
    assert_eq!(loaded.params, run.model.params);
    // Upper-case hex and surrounding whitespace in the checksum are accepted.
    let sha = format!(" {}\n", sha256_hex(&bytes).to_uppercase());
    assert!(TrainedModel::from_artifact(&bytes, &sha, "v1").is_ok());
}

#[test]
fn artifact_round_trip_is_bit_exact() {
    let run = v1_run();
    let bytes = run.model.to_artifact();
    let loaded = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), "v1").unwrap();
    // Saving the loaded model again gives the same bytes, and the same predictions.
    assert!(loaded.to_artifact() == bytes, "the artifact changed on a load and save");
    let rows = &synth_split().1.rows;
    assert_eq!(loaded.predict(rows).unwrap(), run.model.predict(rows).unwrap());
}

#[test]
fn artifact_with_a_flipped_byte_fails_the_checksum() {
    let bytes = v1_run().model.to_artifact();
    let sha = sha256_hex(&bytes);
    let mut corrupted = bytes.clone();
    corrupted[bytes.len() / 2] ^= 0x01;
    let err = TrainedModel::from_artifact(&corrupted, &sha, "v1").unwrap_err();
    assert!(matches!(err, ArtifactError::Checksum { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("checksum mismatch: expected sha256 {sha}, the artifact has {}", sha256_hex(&corrupted))
    );
}

#[test]
fn artifact_of_another_format_version_is_refused() {
    let bytes = v1_run().model.to_artifact();
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["format_version"], ARTIFACT_FORMAT_VERSION);
    value["format_version"] = json!(ARTIFACT_FORMAT_VERSION + 1);
    let newer = serde_json::to_vec(&value).unwrap();
    let err = TrainedModel::from_artifact(&newer, &sha256_hex(&newer), "v1").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "artifact format version {} is not supported (this build reads version {ARTIFACT_FORMAT_VERSION})",
            ARTIFACT_FORMAT_VERSION + 1
        )
    );
    value.as_object_mut().unwrap().remove("format_version");
    let unversioned = serde_json::to_vec(&value).unwrap();
    let err = TrainedModel::from_artifact(&unversioned, &sha256_hex(&unversioned), "v1").unwrap_err();
    assert!(err.to_string().starts_with("artifact format version 0 is not supported"), "{err}");
}

#[test]
fn artifact_of_another_model_version_or_not_an_artifact_is_refused() {
    let bytes = v1_run().model.to_artifact();
    let err = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), "v0").unwrap_err();
    assert_eq!(err.to_string(), "artifact is for model version \"v1\", expected \"v0\"");
    let junk = b"{\"format_version\": 1}".to_vec();
    let err = TrainedModel::from_artifact(&junk, &sha256_hex(&junk), "v1").unwrap_err();
    assert!(err.to_string().starts_with("not a model artifact: "), "{err}");
    let junk = b"not json".to_vec();
    let err = TrainedModel::from_artifact(&junk, &sha256_hex(&junk), "v1").unwrap_err();
    assert!(err.to_string().starts_with("not a model artifact: "), "{err}");
}

// ---------------------------------------------------------------------------
// The model store

fn metadata(run: &TrainingRun, run_id: &RunId) -> RunMetadata {
    let now = Utc::now();
    let record = |key: &str| DataRecord { key: key.to_owned(), sha256: None, size_bytes: None, rows: None };
    RunMetadata {
        model_ver: run.model.model_ver.clone(),
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
        service: ServiceRecord { name: "crs-core tests".to_owned(), version: "0".to_owned() },
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
    let runs: Vec<RunId> = store.runs("v1").await.unwrap().into_iter().map(|m| m.run_id).collect();
    assert_eq!(runs, vec![first.clone(), second.clone()]);

    assert_eq!(store.latest("v1").await.unwrap(), None);
    let err = store.load_latest("v1").await.unwrap_err();
    assert_eq!(err.to_string(), "model v1 has no LATEST run yet");

    assert!(store.promote("v1", &second).await.unwrap());
    // An earlier run, or the same one again, does not move LATEST.
    assert!(!store.promote("v1", &first).await.unwrap());
    assert!(!store.promote("v1", &second).await.unwrap());
    assert_eq!(store.latest("v1").await.unwrap(), Some(second.clone()));
    let latest = std::fs::read_to_string(dir.path().join("model/v1/LATEST")).unwrap();
    assert_eq!(latest.trim(), second.as_str());

    let loaded = store.load_latest("v1").await.unwrap();
    assert_eq!(loaded.metadata.run_id, second);
    assert_eq!(loaded.metadata.artifact, second_meta.artifact);
    assert_eq!(loaded.metadata.hyperparameters, second_meta.hyperparameters);
    let rows = &synth_split().1.rows;
    assert_same_predictions(&loaded.model.predict(rows).unwrap(), &run.model.predict(rows).unwrap());
    assert_eq!(store.versions().await.unwrap(), vec!["v1"]);
}

#[tokio::test]
async fn model_store_refuses_a_run_whose_artifact_was_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(Bucket::open(&dir.path().to_string_lossy()).unwrap());
    let run = v1_run();
    let id = RunId::generate(Utc::now());
    store.save_run(&run.model, &mut metadata(run, &id)).await.unwrap();
    assert!(store.load("v1", &id).await.is_ok());

    let path = dir.path().join(format!("model/v1/{id}/model.json"));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = store.load("v1", &id).await.unwrap_err();
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
    let err = store.load("v1", &id).await.unwrap_err();
    assert!(matches!(err, LoadError::Storage(StorageError::NotFound { .. })), "{err:?}");
    assert_eq!(err.to_string(), format!("model/v1/{id}/metadata.json: not found in the bucket"));
}

#[test]
fn a_config_of_only_comments_means_the_defaults() {
    for name in ["v0", "v1"] {
        let version = lookup(name).unwrap();
        let defaults = version.params("params.yaml", None).unwrap();
        assert_eq!(version.params("params.yaml", Some("# nothing set\n\n")).unwrap(), defaults);
        assert_eq!(version.params("params.yaml", Some("")).unwrap(), defaults);
    }
}

#[test]
fn the_committed_configs_are_valid() {
    for name in ["v0", "v1"] {
        let path = format!("{}/../bucket/config/{name}/params.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let params = lookup(name).unwrap().params(&path, Some(&text)).unwrap();
        assert_eq!(params, lookup(name).unwrap().params(&path, None).unwrap(), "{path} should spell out the defaults");
    }
}
