//! v2 predicts through the block forest exactly what the row-by-row walk of its
//! saved trees gives, bit for bit: on the real data's rows when `CRS_REAL_DATA`
//! names it, on generated rows otherwise. And an artifact written before the
//! forest existed still loads and predicts what it predicted then.

mod common;

use common::{observations, synth_csv};
use crs_domain::data::{DataFile, Observations, prepare};
use crs_domain::evaluation::train_and_evaluate;
use crs_domain::models::{ModelVer, TrainedModel, sha256_hex};
use serde_json::Value;

/// The walk v2 predicted with before the block forest: each tree from its root,
/// right when the f64 value is at least the threshold, leaves summed in tree
/// order onto the base score, then the logistic function.
fn reference(model: &Value, row: &[f32]) -> f64 {
    let mut sum = model["base_score"].as_f64().unwrap();
    for tree in model["trees"].as_array().unwrap() {
        let nodes = tree["nodes"].as_array().unwrap();
        let mut i = 0;
        loop {
            let node = &nodes[i];
            let (left, right) = (node["left"].as_u64().unwrap() as usize, node["right"].as_u64().unwrap() as usize);
            if left == 0 && right == 0 {
                sum += node["value"].as_f64().unwrap();
                break;
            }
            let x = f64::from(row[node["feature"].as_u64().unwrap() as usize]);
            i = if x >= node["threshold"].as_f64().unwrap() { right } else { left };
        }
    }
    1.0 / (1.0 + (-sum).exp())
}

/// The training and prediction rows: the real data's keyword holdout, or generated rows.
fn data() -> (Observations, Observations) {
    match std::env::var_os("CRS_REAL_DATA").filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            let from_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path);
            let path = if path.is_relative() && !path.exists() && from_root.exists() { from_root } else { path };
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("CRS_REAL_DATA={}: {e}", path.display()));
            let data =
                prepare(&DataFile { name: "keyword_conversions.csv.gz".into(), bytes: bytes.into() }, None).unwrap();
            (data.train, data.eval)
        }
        None => {
            println!("CRS_REAL_DATA not set: generated rows");
            (
                observations("train.csv", synth_csv(1, 1500, 30, 3)),
                observations("eval.csv", synth_csv(1501, 600, 30, 3)),
            )
        }
    }
}

/// Every row of `rows` predicted by `model` equals the reference walk, bit for bit.
fn assert_same_as_the_walk(model: &TrainedModel, rows: &Observations) {
    let artifact: Value = serde_json::from_slice(&model.to_artifact()).unwrap();
    let features = model.features.transform(&rows.rows, model.required_attributes()).unwrap();
    let predicted = model.predict(&rows.rows).unwrap();
    assert_eq!(predicted.len(), rows.len());
    for (i, (p, row)) in predicted.iter().zip(features.matrix.rows()).enumerate() {
        let want = reference(&artifact["model"], row.as_slice().unwrap());
        assert_eq!(p.to_bits(), want.to_bits(), "row {i}: {p} vs {want}");
    }
    // Requests of every size take the same path through the blocks.
    for n in [1, 7, 8, 63, 64, 65, 200] {
        let some: Vec<usize> = (0..n.min(rows.len())).collect();
        let part = rows.select(&some);
        assert_eq!(model.predict(&part.rows).unwrap(), predicted[..some.len()].to_vec(), "{n} rows");
    }
}

#[test]
fn v2_predicts_what_the_row_walk_predicts_bit_for_bit() {
    let (train, eval) = data();
    let v2 = ModelVer::parse("v2").unwrap();
    // The defaults; shallow trees of the search's two depths; and trees deeper
    // than the block evaluation takes, which are walked.
    for yaml in [
        None,
        Some("max_depth: [2, 5]\nl2: 5\nmax_trees: 60\nfolds: 3\n"),
        Some("max_depth: 10\nl2: 5\nmax_trees: 15\nfolds: 2\n"),
    ] {
        let params = v2.version().params("params.yaml", yaml).unwrap();
        let run = train_and_evaluate(v2, &params, &train, &eval, |_| {}).unwrap();
        println!("{yaml:?}: {} trees", run.report["trees"]);
        assert_same_as_the_walk(&run.model, &train);
        assert_same_as_the_walk(&run.model, &eval);
    }
}

/// Written by the code before the block forest (commit a616ff0): a v2 model fitted
/// on `synth_csv(1, 1200, 20, 17)` with the small grid of `tests/v2.rs` capped at 60
/// trees, and its predictions of the eval rows below as f64 bits.
const FIXTURE: &str = include_str!("fixtures/v2_artifact.json");
const FIXTURE_PREDICTIONS: &str = include_str!("fixtures/v2_artifact_predictions.txt");

#[test]
fn an_artifact_written_before_the_block_forest_loads_and_predicts_the_same() {
    let v2 = ModelVer::parse("v2").unwrap();
    let bytes = FIXTURE.trim_end().as_bytes();
    let model = TrainedModel::from_artifact(bytes, &sha256_hex(bytes), v2).unwrap();
    assert!(model.to_artifact() == bytes, "the artifact changed on a load and save");
    let eval = observations("eval.csv", synth_csv(1201, 500, 20, 17));
    let predicted = model.predict(&eval.rows).unwrap();
    let then: Vec<f64> =
        FIXTURE_PREDICTIONS.lines().map(|l| f64::from_bits(u64::from_str_radix(l, 16).unwrap())).collect();
    assert_eq!(predicted.len(), then.len());
    for (i, (now, then)) in predicted.iter().zip(&then).enumerate() {
        assert_eq!(now.to_bits(), then.to_bits(), "row {i}: {now} vs {then}");
    }
    assert!(model.memory_bytes() > 0);
}
