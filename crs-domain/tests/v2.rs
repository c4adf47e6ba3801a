//! Model v2 (gradient-boosted trees) through the public API: its
//! hyperparameters and grid, the search on small synthetic data, its report,
//! and artifacts broken by hand.

mod common;

use std::sync::OnceLock;

use common::{observations, synth_csv};
use crs_domain::data::Observations;
use crs_domain::evaluation::{TrainError, TrainingRun, train_and_evaluate, train_and_evaluate_with_progress};
use crs_domain::models::{FitError, ModelVer, Progress, TrainedModel, sha256_hex};
use serde_json::{Value, json};

/// A small grid so the dev-profile tests stay fast: 2 points, 3 folds.
const SMALL: &str = "learning_rate: 0.2\nmax_depth: [2, 3]\nl2: 5\nsubsample: 0.8\nmax_trees: 150\nearly_stopping_rounds: 10\nfolds: 3\n";

fn v2_params(yaml: Option<&str>) -> Result<Value, String> {
    ModelVer::parse("v2").unwrap().version().params("config/v2/params.yaml", yaml).map_err(|e| e.to_string())
}

fn split() -> &'static (Observations, Observations) {
    static SPLIT: OnceLock<(Observations, Observations)> = OnceLock::new();
    SPLIT.get_or_init(|| {
        let train = observations("train.csv", synth_csv(1, 1200, 20, 17));
        let eval = observations("eval.csv", synth_csv(1201, 500, 20, 17));
        (train, eval)
    })
}

/// The small-grid run, with the progress events it sent.
fn run() -> &'static (TrainingRun, Vec<Progress>) {
    static RUN: OnceLock<(TrainingRun, Vec<Progress>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let (train, eval) = split();
        let version = ModelVer::parse("v2").unwrap();
        let params = v2_params(Some(SMALL)).unwrap();
        let mut events = Vec::new();
        let run =
            train_and_evaluate_with_progress(version, &params, train, eval, |_| {}, &mut |p| events.push(p)).unwrap();
        (run, events)
    })
}

// ---------------------------------------------------------------------------
// Hyperparameters

#[test]
fn defaults_are_the_documented_ones() {
    let expected = json!({
        "learning_rate": 0.1, "max_depth": [3, 4], "min_leaf_weight": 1.0, "l2": [5.0, 50.0], "subsample": 0.7,
        "max_trees": 1000, "early_stopping_rounds": 20, "folds": 5, "seed": 42
    });
    assert_eq!(v2_params(None).unwrap(), expected);
    // The committed config is the defaults written out.
    let committed = include_str!("../../bucket/config/v2/params.yaml");
    assert_eq!(v2_params(Some(committed)).unwrap(), expected);
}

#[test]
fn each_key_takes_a_value_or_a_list() {
    let params = v2_params(Some("learning_rate: [0.05, 0.1]\nmax_depth: 3\nl2: [0, 1, 10]\n")).unwrap();
    assert_eq!(params["learning_rate"], json!([0.05, 0.1]));
    assert_eq!(params["max_depth"], json!(3));
    assert_eq!(params["l2"], json!([0.0, 1.0, 10.0]));
    assert_eq!(params["folds"], json!(5));
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let err = v2_params(Some("max_depth: 3\nlearning_rat: 0.1\n")).unwrap_err();
    assert!(err.starts_with("config/v2/params.yaml: "), "{err}");
    assert!(err.contains("unknown field `learning_rat`"), "{err}");
}

#[test]
fn out_of_range_values_and_empty_grids_are_errors_naming_the_key() {
    for (yaml, expected) in [
        ("learning_rate: 0", "'learning_rate' must be above 0 and at most 1, got 0"),
        ("learning_rate: [0.1, 1.5]", "'learning_rate' must be above 0 and at most 1, got 1.5"),
        ("learning_rate: []", "'learning_rate' must be a value or a non-empty list of values, got []"),
        ("max_depth: 0", "'max_depth' must be between 1 and 12, got 0"),
        ("max_depth: [3, 13]", "'max_depth' must be between 1 and 12, got 13"),
        ("max_depth: []", "'max_depth' must be a value or a non-empty list of values, got []"),
        ("min_leaf_weight: -1", "'min_leaf_weight' must be a number of at least 0, got -1"),
        ("min_leaf_weight: .inf", "'min_leaf_weight' must be a number of at least 0, got inf"),
        ("l2: .nan", "'l2' must be a number of at least 0, got NaN"),
        ("l2: []", "'l2' must be a value or a non-empty list of values, got []"),
        ("subsample: 0", "'subsample' must be above 0 and at most 1, got 0"),
        ("subsample: [1, 1.2]", "'subsample' must be above 0 and at most 1, got 1.2"),
        ("max_trees: 0", "'max_trees' must be between 1 and 5000, got 0"),
        ("early_stopping_rounds: 0", "'early_stopping_rounds' must be between 1 and 1000, got 0"),
        ("folds: 1", "'folds' must be between 2 and 20, got 1"),
        ("folds: 21", "'folds' must be between 2 and 20, got 21"),
    ] {
        assert_eq!(v2_params(Some(yaml)).unwrap_err(), format!("config/v2/params.yaml: {expected}"), "{yaml}");
    }
}

#[test]
fn badly_typed_values_are_errors() {
    for yaml in ["max_depth: deep", "learning_rate: [fast]", "folds: [3, 5]"] {
        let err = v2_params(Some(yaml)).unwrap_err();
        assert!(err.starts_with("config/v2/params.yaml: "), "{yaml}: {err}");
    }
}

// ---------------------------------------------------------------------------
// The search and the fit

#[test]
fn v2_beats_the_baselines_and_v1_on_synthetic_data() {
    let (run, _) = run();
    let e = &run.eval;
    for (name, baseline) in [("device", &e.device), ("global", &e.global)] {
        assert!(e.model.logloss < baseline.logloss, "logloss {} vs {name} {}", e.model.logloss, baseline.logloss);
        assert!(e.model.wmse < baseline.wmse, "wmse {} vs {name} {}", e.model.wmse, baseline.wmse);
    }
    let (train, eval) = split();
    let v1 = ModelVer::parse("v1").unwrap();
    let v1_run = train_and_evaluate(v1, &v1.version().params("p.yaml", None).unwrap(), train, eval, |_| {}).unwrap();
    assert!(
        e.model.logloss < v1_run.eval.model.logloss,
        "logloss v2 {} vs v1 {}",
        e.model.logloss,
        v1_run.eval.model.logloss
    );
    let predicted = run.model.predict(&eval.rows).unwrap();
    assert!(predicted.iter().all(|p| *p > 0.0 && *p < 1.0));
}

#[test]
fn the_search_is_reported_point_by_point_and_fold_by_fold() {
    let (run, events) = run();
    // 2 points × 3 folds, then one event per point, then the refit.
    let folds = events.iter().filter(|e| matches!(e, Progress::Fold { .. })).count();
    let points = events.iter().filter(|e| matches!(e, Progress::Point { .. })).count();
    assert_eq!((folds, points, events.len()), (6, 2, 9), "{events:?}");
    // Folds run side by side, so they may finish in any order within a point.
    assert!(matches!(events[0], Progress::Fold { point: 1, points: 2, folds: 3, .. }), "{:?}", events[0]);
    assert!(matches!(events[3], Progress::Point { point: 1, points: 2, .. }), "{:?}", events[3]);
    let Some(Progress::Refit { point, trees }) = events.last().cloned() else { panic!("{events:?}") };

    let report = &run.report;
    let search = &report["search"];
    assert_eq!(search["folds"], 3);
    assert_eq!(search["points"].as_array().unwrap().len(), 2);
    assert_eq!(search["chosen"].as_u64().unwrap() as usize, point - 1);
    let chosen = &search["points"][point - 1];
    assert_eq!(chosen["trees"].as_u64().unwrap() as usize, trees);
    assert_eq!(report["trees"].as_u64().unwrap() as usize, trees);
    assert_eq!(report["chosen"], chosen["values"]);
    assert!(trees <= 150, "the cap holds: {trees}");
    for p in search["points"].as_array().unwrap() {
        assert_eq!(p["folds"].as_array().unwrap().len(), 3);
        let mean = p["folds"].as_array().unwrap().iter().map(|f| f["logloss"].as_f64().unwrap()).sum::<f64>() / 3.0;
        assert!((mean - p["mean_logloss"].as_f64().unwrap()).abs() < 1e-9, "{p}");
    }
    // The lowest mean wins.
    let best = search["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["mean_logloss"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(chosen["mean_logloss"].as_f64().unwrap(), best);
}

#[test]
fn importance_names_the_features_that_drive_the_rate() {
    let (run, _) = run();
    let importance = run.model.importance();
    // The synthetic rate depends on the device and att1, att3, att7 and att12.
    let top: Vec<&str> = importance.iter().take(6).map(|(name, _)| name.as_str()).collect();
    for feature in ["att1", "att3"] {
        assert!(top.contains(&feature), "{feature} not among the top features {top:?}");
    }
    let gains: Vec<f64> = importance.iter().map(|(_, gain)| *gain).collect();
    assert!(gains.iter().all(|g| *g > 0.0), "{gains:?}");
    assert!(gains.windows(2).all(|w| w[0] >= w[1]), "largest first: {gains:?}");
}

#[test]
fn a_fixed_seed_gives_the_same_model_and_another_seed_other_folds() {
    let (train, eval) = split();
    let version = ModelVer::parse("v2").unwrap();
    let params = v2_params(Some(SMALL)).unwrap();
    let again = train_and_evaluate(version, &params, train, eval, |_| {}).unwrap();
    assert!(again.model.to_artifact() == run().0.model.to_artifact(), "same data and seed, different artifact");
    let other = v2_params(Some(&format!("{SMALL}seed: 7\n"))).unwrap();
    let other = train_and_evaluate(version, &other, train, eval, |_| {}).unwrap();
    assert_ne!(other.report["search"], run().0.report["search"]);
}

#[test]
fn more_folds_than_keywords_is_a_clear_fit_error() {
    let (train, eval) = split();
    // Three keywords' rows, five folds.
    let few: Vec<usize> = (0..train.len()).filter(|&i| train.rows.entity_id[i] <= 3).collect();
    let version = ModelVer::parse("v2").unwrap();
    let params = v2_params(Some("folds: 5")).unwrap();
    let err = train_and_evaluate(version, &params, &train.select(&few), eval, |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::Fit(FitError::Search(_))), "{err:?}");
    assert_eq!(err.to_string(), "hyperparameter search: 5 folds need at least 5 keywords, the training rows have 3");
}

// ---------------------------------------------------------------------------
// Artifacts

fn artifact() -> Value {
    serde_json::from_slice(&run().0.model.to_artifact()).unwrap()
}

fn load(value: &Value) -> Result<TrainedModel, String> {
    let bytes = serde_json::to_vec(value).unwrap();
    TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ModelVer::parse("v2").unwrap()).map_err(|e| e.to_string())
}

#[test]
fn artifact_round_trip_predicts_the_same_and_is_bit_exact() {
    let (run, _) = run();
    let bytes = run.model.to_artifact();
    let loaded = TrainedModel::from_artifact(&bytes, &sha256_hex(&bytes), ModelVer::parse("v2").unwrap()).unwrap();
    assert!(loaded.to_artifact() == bytes, "the artifact changed on a load and save");
    let rows = &split().1.rows;
    assert_eq!(loaded.predict(rows).unwrap(), run.model.predict(rows).unwrap());
    assert_eq!(loaded.report(), run.report);
    // Prediction inputs need only the attributes the trees split on.
    assert!(loaded.required_attributes().iter().any(|a| a == "att1"));
    assert!(loaded.required_attributes().iter().all(|a| loaded.features.attributes().contains(a)));
}

#[test]
fn the_artifact_stores_plain_node_arrays() {
    let model = &artifact()["model"];
    let width = artifact()["features"]["devices"].as_array().unwrap().len()
        + artifact()["features"]["attributes"].as_array().unwrap().len();
    assert_eq!(model["n_features"].as_u64().unwrap() as usize, width);
    assert!(model["base_score"].as_f64().unwrap().is_finite());
    let trees = model["trees"].as_array().unwrap();
    assert_eq!(trees.len() as u64, run().0.report["trees"].as_u64().unwrap());
    let node = &trees[0]["nodes"][0];
    for key in ["feature", "threshold", "left", "right", "value"] {
        assert!(node.get(key).is_some(), "{key} missing from {node}");
    }
}

/// A change to an artifact's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

/// The load error of the artifact after `edit`; panics if it loads.
fn broken(edit: impl Fn(&mut Value)) -> String {
    let mut value = artifact();
    edit(&mut value);
    match load(&value) {
        Ok(_) => panic!("a broken artifact loaded"),
        Err(e) => e,
    }
}

#[test]
fn hand_broken_artifacts_are_refused_with_a_reason() {
    let trees = |v: &mut Value| v["model"]["trees"].as_array_mut().unwrap().clone();
    // A tree whose root's left child (node 1) is a split too.
    let deep = {
        let mut v = artifact();
        trees(&mut v).iter().position(|t| t["nodes"][1]["left"] != 0).expect("a tree with two levels of splits")
    };
    let cases: Vec<(&str, Edit)> = vec![
        (
            "tree 0 node 0: child 100000 is out of range",
            Box::new(|v| v["model"]["trees"][0]["nodes"][0]["left"] = json!(100_000)),
        ),
        // A child pointing back at the root: a cycle.
        (
            "tree 0 node 0: child 0 is out of range (children come after their parent",
            Box::new(|v| v["model"]["trees"][0]["nodes"][0]["right"] = json!(0)),
        ),
        (
            "tree 0 node 0: both children are node",
            Box::new(|v| {
                let left = v["model"]["trees"][0]["nodes"][0]["left"].clone();
                v["model"]["trees"][0]["nodes"][0]["right"] = left;
            }),
        ),
        // Node 1 taking the root's right child as its own: reached twice.
        (
            "is reached from 2 splits, not one",
            Box::new(move |v| {
                let shared = v["model"]["trees"][deep]["nodes"][0]["right"].clone();
                v["model"]["trees"][deep]["nodes"][1]["right"] = shared;
            }),
        ),
        // JSON has no NaN: a NaN leaf is saved as null, which is refused.
        (
            "invalid type: null, expected f64",
            Box::new(|v| {
                let nodes = v["model"]["trees"][0]["nodes"].as_array_mut().unwrap();
                let leaf = nodes.iter().position(|n| n["left"] == 0).unwrap();
                nodes[leaf]["value"] = Value::Null;
            }),
        ),
        ("feature 10000 is out of range", Box::new(|v| v["model"]["trees"][0]["nodes"][0]["feature"] = json!(10_000))),
        ("the model has no trees", Box::new(|v| v["model"]["trees"] = json!([]))),
        ("tree 0 has no nodes", Box::new(|v| v["model"]["trees"][0]["nodes"] = json!([]))),
        // A model whose width differs from its pipeline's.
        (
            "the model was trained on",
            Box::new(|v| {
                v["features"]["attributes"].as_array_mut().unwrap().pop();
            }),
        ),
        ("unknown field `depth`", Box::new(|v| v["model"]["trees"][0]["nodes"][0]["depth"] = json!(1))),
    ];
    for (expected, edit) in cases {
        let err = broken(edit);
        assert!(err.starts_with("invalid model: "), "{expected}: {err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
}
