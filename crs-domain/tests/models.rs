//! Model versions, hyperparameters, artifacts and the metrics, through the
//! public API.

mod common;

use std::sync::OnceLock;

use common::{observations, synth_csv};
use crs_domain::data::Observations;
use crs_domain::data::synth::true_rate;
use crs_domain::evaluation::{TrainingRun, train_and_evaluate};
use crs_domain::metrics::{LOGLOSS_EPS, Metrics, score};
use crs_domain::models::{ARTIFACT_FORMAT_VERSION, ArtifactError, ModelVer, TrainedModel, known_versions, sha256_hex};
use serde_json::json;

fn ver(name: &str) -> ModelVer {
    ModelVer::parse(name).unwrap()
}

// ---------------------------------------------------------------------------
// Hyperparameters

fn v1_params(yaml: Option<&str>) -> Result<serde_json::Value, String> {
    ver("v1").version().params("config/v1/params.yaml", yaml).map_err(|e| e.to_string())
}

#[test]
fn registry_lists_every_version_and_names_unknown_versions() {
    assert_eq!(known_versions(), ["v0", "v1", "v2"]);
    let Err(err) = ModelVer::parse("v9") else { panic!("v9 is not a version") };
    assert_eq!(err.to_string(), "unknown model version \"v9\" (known: v0, v1, v2)");
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
    let v0 = ver("v0").version();
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
    let model_ver = ver(version);
    let params = model_ver.version().params("p.yaml", yaml).unwrap();
    train_and_evaluate(model_ver, &params, train, eval, |_| {}).unwrap()
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

#[test]
fn v1_is_closer_to_the_true_rate_than_the_device_baseline() {
    let run = v1_run();
    let (_, eval) = synth_split();
    let predicted = run.model.predict(&eval.rows).unwrap();
    let v0 = train_and_evaluate(ver("v0"), &json!({}), &synth_split().0, eval, |_| {}).unwrap();
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
    let v1 = ver("v1");
    let params = v1.version().params("p.yaml", None).unwrap();
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
    let loaded = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ver("v1")).unwrap();
    let rows = &synth_split().1.rows;
    assert_same_predictions(&loaded.predict(rows).unwrap(), &run.model.predict(rows).unwrap());
    assert_eq!(loaded.features, run.model.features);
    assert_eq!(loaded.params, run.model.params);
    // Upper-case hex and surrounding whitespace in the checksum are accepted.
    let sha = format!(" {}\n", sha256_hex(&bytes).to_uppercase());
    assert!(TrainedModel::from_artifact(&bytes, &sha, ver("v1")).is_ok());
}

#[test]
fn memory_is_counted_from_the_trees_and_survives_the_artifact_round_trip() {
    let one = v1_run();
    let bytes = one.model.to_artifact();
    let loaded = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ver("v1")).unwrap();
    assert_eq!(loaded.memory_bytes(), one.model.memory_bytes());
    let three = train("v1", Some("trees: 3\nseed: 3"));
    assert!(three.model.memory_bytes() > one.model.memory_bytes(), "three trees hold more than one");
    let table = train("v0", None);
    assert!(table.model.memory_bytes() < one.model.memory_bytes(), "a per-device table holds less than a tree");
}

#[test]
fn artifact_round_trip_is_bit_exact() {
    let run = v1_run();
    let bytes = run.model.to_artifact();
    let loaded = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ver("v1")).unwrap();
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
    let err = TrainedModel::from_artifact(&corrupted, &sha, ver("v1")).unwrap_err();
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
    let err = TrainedModel::from_artifact(&newer, &sha256_hex(&newer), ver("v1")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "artifact format version {} is not supported (this build reads version {ARTIFACT_FORMAT_VERSION})",
            ARTIFACT_FORMAT_VERSION + 1
        )
    );
    value.as_object_mut().unwrap().remove("format_version");
    let unversioned = serde_json::to_vec(&value).unwrap();
    let err = TrainedModel::from_artifact(&unversioned, &sha256_hex(&unversioned), ver("v1")).unwrap_err();
    assert!(err.to_string().starts_with("artifact format version 0 is not supported"), "{err}");
}

#[test]
fn artifact_of_another_model_version_or_not_an_artifact_is_refused() {
    let bytes = v1_run().model.to_artifact();
    let err = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ver("v0")).unwrap_err();
    assert_eq!(err.to_string(), "artifact is for model version \"v1\", expected \"v0\"");
    let junk = b"{\"format_version\": 1}".to_vec();
    let err = TrainedModel::from_artifact(&junk, &sha256_hex(&junk), ver("v1")).unwrap_err();
    assert!(err.to_string().starts_with("not a model artifact: "), "{err}");
    let junk = b"not json".to_vec();
    let err = TrainedModel::from_artifact(&junk, &sha256_hex(&junk), ver("v1")).unwrap_err();
    assert!(err.to_string().starts_with("not a model artifact: "), "{err}");
}

#[test]
fn a_config_of_only_comments_means_the_defaults() {
    for name in ["v0", "v1"] {
        let version = ver(name).version();
        let defaults = version.params("params.yaml", None).unwrap();
        assert_eq!(version.params("params.yaml", Some("# nothing set\n\n")).unwrap(), defaults);
        assert_eq!(version.params("params.yaml", Some("")).unwrap(), defaults);
    }
}

#[test]
fn the_committed_configs_are_valid() {
    for name in ["v0", "v1", "v2"] {
        let path = format!("{}/../bucket/config/{name}/params.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let params = ver(name).version().params(&path, Some(&text)).unwrap();
        assert_eq!(params, ver(name).version().params(&path, None).unwrap(), "{path} should spell out the defaults");
    }
}

// ---------------------------------------------------------------------------
// Structurally broken artifacts: refused with a message, never a panic or a hang

/// The v1 artifact with `edit` applied to its model, and what loading it says.
fn load_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<TrainedModel, ArtifactError> {
    let mut artifact: serde_json::Value = serde_json::from_slice(&v1_run().model.to_artifact()).unwrap();
    edit(&mut artifact["model"]);
    let bytes = serde_json::to_vec(&artifact).unwrap();
    TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ver("v1"))
}

/// The index of the first node of tree 0 that splits.
fn first_split(model: &serde_json::Value) -> usize {
    let nodes = model["trees"][0]["nodes"].as_array().unwrap();
    nodes.iter().position(|n| n.get("split").is_some()).expect("the tree splits")
}

/// A name, an edit of the model that breaks it, and what the refusal must say.
type BrokenCase = (&'static str, Box<dyn FnOnce(&mut serde_json::Value)>, &'static str);

#[test]
fn hand_broken_v1_artifacts_are_refused_with_the_reason() {
    let cases: Vec<BrokenCase> = vec![
        (
            "child out of range",
            Box::new(|m| {
                let i = first_split(m);
                m["trees"][0]["nodes"][i]["split"]["left"] = json!(1_000_000);
            }),
            "must come after its parent and before",
        ),
        (
            "child pointing back at its ancestor",
            Box::new(|m| {
                let i = first_split(m);
                m["trees"][0]["nodes"][i]["split"]["right"] = json!(0);
            }),
            "must come after its parent",
        ),
        (
            "two parents",
            Box::new(|m| {
                let i = first_split(m);
                let left = m["trees"][0]["nodes"][i]["split"]["left"].clone();
                m["trees"][0]["nodes"][i]["split"]["right"] = left;
            }),
            "has two parents",
        ),
        ("rate above 1", Box::new(|m| m["trees"][0]["nodes"][0]["rate"] = json!(1.5)), "rate 1.5 is not in [0, 1]"),
        (
            "feature outside the matrix",
            Box::new(|m| {
                let i = first_split(m);
                m["trees"][0]["nodes"][i]["split"]["feature"] = json!(10_000);
            }),
            "splits on column 10000",
        ),
        ("no nodes", Box::new(|m| m["trees"][0]["nodes"] = json!([])), "the tree has no nodes"),
        ("empty forest", Box::new(|m| m["trees"] = json!([])), "the forest has no trees"),
        ("not a forest", Box::new(|m| *m = json!({"leaves": 3})), "not a v1 model"),
    ];
    for (name, edit, expected) in cases {
        let err = load_edited(edit).expect_err(name);
        assert!(matches!(err, ArtifactError::Invalid(_)), "{name}: {err:?}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
    }
}

#[test]
fn a_non_finite_number_is_refused() {
    // JSON has no NaN or infinity; a number too large for an f64 is the nearest a file can get.
    let mut artifact = String::from_utf8(v1_run().model.to_artifact()).unwrap();
    let at = artifact.find("\"rate\":").unwrap() + "\"rate\":".len();
    let end = at + artifact[at..].find([',', '}']).unwrap();
    artifact.replace_range(at..end, "1e999");
    let bytes = artifact.into_bytes();
    let err = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ver("v1")).unwrap_err();
    assert!(matches!(err, ArtifactError::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("number out of range"), "{err}");
}

#[test]
fn a_v0_artifact_with_a_rate_outside_zero_and_one_is_refused() {
    let (train, eval) = synth_split();
    let run = train_and_evaluate(ver("v0"), &json!({}), train, eval, |_| {}).unwrap();
    let mut artifact: serde_json::Value = serde_json::from_slice(&run.model.to_artifact()).unwrap();
    artifact["model"]["global"] = json!(-0.1);
    let bytes = serde_json::to_vec(&artifact).unwrap();
    let err = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ver("v0")).unwrap_err();
    assert!(err.to_string().contains("global rate -0.1 is not in [0, 1]"), "{err}");
}
