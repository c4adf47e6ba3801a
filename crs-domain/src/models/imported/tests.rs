use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::data::{Device, KeywordRows};
use crate::models::{ModelVer, TrainedModel};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imported").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn framework_of(name: &str) -> Framework {
    if name.contains("xgb") { Framework::Xgboost } else { Framework::Lightgbm }
}

/// `predictions.csv`: every row of 5 attributes and 3 devices, and each
/// fixture model's own prediction of it.
struct Expected {
    rows: KeywordRows,
    by_model: Vec<(String, Vec<f64>)>,
}

fn expected() -> Expected {
    let text = String::from_utf8(fixture("predictions.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let attributes: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("att")).collect();
    let models: Vec<usize> = (0..header.len()).filter(|&i| header[i].contains('.')).collect();
    let names: Arc<[String]> = attributes.iter().map(|&i| header[i].to_owned()).collect();
    let mut rows = KeywordRows::new(names);
    let mut by_model: Vec<(String, Vec<f64>)> = models.iter().map(|&i| (header[i].to_owned(), Vec::new())).collect();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let values: Vec<u32> = attributes.iter().map(|&i| fields[i].parse().unwrap()).collect();
        rows.push_checked(fields[0].parse().unwrap(), fields[1], &values).unwrap();
        for (column, (_, predictions)) in models.iter().zip(&mut by_model) {
            predictions.push(fields[*column].parse().unwrap());
        }
    }
    Expected { rows, by_model }
}

fn predict(conversion: &Conversion, rows: &KeywordRows) -> Vec<f64> {
    let features = conversion.features.transform(rows, conversion.features.attributes()).unwrap();
    conversion.model.predict(&features)
}

#[test]
fn every_fixture_predicts_what_its_library_predicts() {
    let expected = expected();
    assert_eq!(expected.by_model.len(), 7);
    for (file, want) in &expected.by_model {
        let conversion = import(framework_of(file), &fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = predict(&conversion, &expected.rows);
        for (row, (got, want)) in got.iter().zip(want).enumerate() {
            if file == "lgb_binary.txt" {
                // sigmoid 0.7 is multiplied into each leaf rather than the sum: the last bits may differ.
                assert!((got - want).abs() <= 1e-15, "{file} row {row}: {got} vs {want}");
            } else {
                // xgboost's float32 output and lightgbm's f64 one, bit for bit.
                assert_eq!(got.to_bits(), want.to_bits(), "{file} row {row}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn ubjson_and_json_of_one_model_convert_to_the_same_trees() {
    let json = import(Framework::Xgboost, &fixture("xgb_logistic.json")).unwrap();
    let ubj = import(Framework::Xgboost, &fixture("xgb_logistic.ubj")).unwrap();
    assert_eq!(ubj.model.data().trees, json.model.data().trees);
    assert_eq!(ubj.model.data().base_score, json.model.data().base_score);
    assert_eq!(
        (json.model.data().source.encoding.as_str(), ubj.model.data().source.encoding.as_str()),
        ("json", "ubjson")
    );
    assert_eq!(json.model.data().source.format, "3.2.0");
    assert_eq!(json.features.feature_names(), ubj.features.feature_names());
}

#[test]
fn each_refusal_names_what_it_refuses() {
    let edit = |file: &str, from: &str, to: &str| {
        let text = String::from_utf8(fixture(file)).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        text.replacen(from, to, 1).into_bytes()
    };
    let names = "the platform matches features by name (att<k>, device, device=Computer, ...); fit it on a DataFrame with those columns, or give feature_names";
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("xgboost: no names", fixture("refused_xgb_no_names.json"), format!("the model has no feature names: {names}")),
        ("lightgbm: default names", fixture("refused_lgb_default_names.txt"), format!("the model has no feature names: {names}")),
        (
            "xgboost: a name outside the contract",
            fixture("refused_xgb_unknown_name.json"),
            "feature 1 'clicks' maps to nothing in the data contract (the features are att<k>, device as the code 0 Computer, 1 Smartphone, 2 Tablet, and device=Computer, device=Smartphone, device=Tablet)".to_owned(),
        ),
        (
            "lightgbm: a name outside the contract",
            edit("lgb_cross_entropy.txt", "feature_names=device att1", "feature_names=device Att1"),
            "feature 1 'Att1' maps to nothing in the data contract (the features are att<k>, device as the code 0 Computer, 1 Smartphone, 2 Tablet, and device=Computer, device=Smartphone, device=Tablet)".to_owned(),
        ),
        (
            "xgboost: categorical",
            fixture("refused_xgb_categorical.json"),
            "feature 1 'device' is categorical: categorical features are not supported (give categories as the data contract's 0/1 attributes or the device code)".to_owned(),
        ),
        (
            "lightgbm: categorical",
            fixture("refused_lgb_categorical.txt"),
            "tree 0 node 1 is a categorical split: categorical splits are not supported (give categories as the data contract's 0/1 attributes or the device code)".to_owned(),
        ),
        (
            "xgboost: linear",
            fixture("refused_xgb_linear.json"),
            "the booster is gblinear: only tree boosters (gbtree) are supported".to_owned(),
        ),
        (
            "lightgbm: linear trees",
            fixture("refused_lgb_linear.txt"),
            "tree 0 is a linear tree (linear_tree): linear trees are not supported, only trees with constant leaves".to_owned(),
        ),
        (
            "xgboost: multi-class",
            fixture("refused_xgb_multiclass.json"),
            "objective multi:softprob is a multi-class objective: multi-class models are not supported, the platform predicts one rate per row".to_owned(),
        ),
        (
            "lightgbm: multi-class",
            fixture("refused_lgb_multiclass.txt"),
            "objective multiclass num_class:3 is a multi-class objective: multi-class models are not supported, the platform predicts one rate per row".to_owned(),
        ),
        (
            "xgboost: ranking",
            fixture("refused_xgb_ranking.json"),
            "objective rank:pairwise is a ranking objective: ranking models are not supported, the platform predicts a rate per row".to_owned(),
        ),
        (
            "lightgbm: ranking",
            fixture("refused_lgb_ranking.txt"),
            "objective lambdarank is a ranking objective: ranking models are not supported, the platform predicts a rate per row".to_owned(),
        ),
        (
            "xgboost: NaN threshold",
            fixture("refused_xgb_nan_threshold.json"),
            "tree 1 node 0: threshold NaN is not a finite number".to_owned(),
        ),
        (
            "xgboost: infinite threshold",
            edit("refused_xgb_nan_threshold.json", "NaN", "-Infinity"),
            "tree 1 node 0: threshold -inf is not a finite number".to_owned(),
        ),
        (
            "lightgbm: NaN threshold",
            edit("lgb_cross_entropy.txt", "threshold=1.0000000180025095e-35", "threshold=nan"),
            "tree 0 node 0: threshold NaN is not a finite number".to_owned(),
        ),
        (
            "lightgbm: infinite threshold",
            edit("lgb_cross_entropy.txt", "threshold=1.0000000180025095e-35", "threshold=inf"),
            "tree 0 node 0: threshold inf is not a finite number".to_owned(),
        ),
        (
            "xgboost: unknown format version",
            edit("xgb_logistic.json", "\"version\":[3,2,0]", "\"version\":[4,0,0]"),
            "xgboost model format version 4.0.0 is not supported (this build reads xgboost 2.x and 3.x JSON or UBJSON)".to_owned(),
        ),
        (
            "lightgbm: unknown format version",
            edit("lgb_cross_entropy.txt", "version=v4", "version=v3"),
            "lightgbm model format version v3 is not supported (this build reads v4, written by lightgbm 4.x)".to_owned(),
        ),
        (
            "lightgbm: unsupported objective",
            fixture("refused_lgb_unsupported_objective.txt"),
            "lightgbm objective huber is not supported (supported: binary, cross_entropy, regression)".to_owned(),
        ),
        (
            "xgboost: unsupported objective",
            edit("xgb_logistic.json", "\"name\":\"binary:logistic\"", "\"name\":\"reg:gamma\""),
            "xgboost objective reg:gamma is not supported (supported: binary:logistic, reg:logistic, reg:squarederror)".to_owned(),
        ),
        (
            "lightgbm: random forest mode",
            edit("lgb_cross_entropy.txt", "objective=cross_entropy\n", "objective=cross_entropy\naverage_output\n"),
            "the model averages its trees (random forest mode, average_output): not supported".to_owned(),
        ),
        (
            "xgboost: not JSON",
            b"tree\nversion=v4\n".to_vec(),
            "not a xgboost model file: JSON: expected ident at line 1 column 3".to_owned(),
        ),
        ("lightgbm: not its text", fixture("xgb_logistic.json"), "not a lightgbm model file: the first line is not \"tree\"".to_owned()),
    ];
    for (case, bytes, expected) in cases {
        let framework = if case.starts_with("xgboost") { Framework::Xgboost } else { Framework::Lightgbm };
        match import(framework, &bytes) {
            Ok(_) => panic!("{case}: imported"),
            Err(e) => assert_eq!(e.to_string(), expected, "{case}"),
        }
    }
}

#[test]
fn xgboost_2_files_keep_base_score_unbracketed() {
    let text = String::from_utf8(fixture("xgb_logistic.json")).unwrap();
    let start = text.find("\"base_score\":\"[").unwrap() + "\"base_score\":\"".len();
    let end = start + text[start..].find(']').unwrap() + 1;
    let bare = &text[start + 1..end - 1];
    let v2 = text.replacen(&text[start..end], bare, 1).replacen("\"version\":[3,2,0]", "\"version\":[2,1,4]", 1);
    let (three, two) =
        (import(Framework::Xgboost, text.as_bytes()).unwrap(), import(Framework::Xgboost, v2.as_bytes()).unwrap());
    assert_eq!(two.model.data().base_score, three.model.data().base_score);
    assert_eq!(two.model.data().source.format, "2.1.4");
}

/// lightgbm's `x <= t` goes left; the forest's `x >= t'` goes right with
/// `t' = t.next_up()`. For a double x, `x > t` exactly when `x >= next_up(t)`
/// (no double lies between t and its successor), so both send every input the
/// same way; f32 inputs are doubles exactly. Checked on the thresholds lightgbm
/// writes between 0/1 values and device codes, and on awkward ones.
#[test]
fn lightgbm_thresholds_become_the_next_double_and_decide_every_input_alike() {
    let thresholds = [1.0000000180025095e-35, 0.5, 1.5, 1.0, 2.0, 0.0, -0.0, -1e-35, 0.1, 1e300, f64::MIN_POSITIVE];
    let mut inputs: Vec<f32> = vec![0.0, -0.0, 1.0, 2.0, 0.5, 1.5, 0.1, f32::MIN_POSITIVE, 1e-35, 1e-36];
    let mut rng = crate::rng::SplitMix64::new(11);
    inputs.extend((0..2000).map(|_| f32::from_bits(rng.next_u64() as u32)).filter(|x| x.is_finite()));
    for &t in &thresholds {
        let tree = SourceTree {
            nodes: vec![
                SourceNode::Split { feature: 0, rule: Rule::LeftAtMost(t), left: 1, right: 2, gain: 0.0 },
                SourceNode::Leaf { value: -1.0 },
                SourceNode::Leaf { value: 1.0 },
            ],
        };
        let converted = emit(0, &tree).unwrap();
        let settings = Settings { width: 1, base_score: 0.0, precision: Precision::F64, link: Link::Identity };
        let forest = Forest::new(&[converted], settings).unwrap();
        let rows = ndarray::Array2::from_shape_vec((inputs.len(), 1), inputs.clone()).unwrap();
        for (x, margin) in inputs.iter().zip(forest.margins(rows.view())) {
            let lightgbm = if f64::from(*x) <= t { -1.0 } else { 1.0 };
            assert_eq!(margin, lightgbm, "x {x:e}, threshold {t:e}");
        }
    }
}

/// A zero-as-missing split sends 0 its default way and every other input by
/// its threshold: checked for inputs 0, 1, 2, 3 against lightgbm's rule, for
/// every kind of threshold and both defaults.
#[test]
fn zero_as_missing_splits_convert_exactly_for_integer_inputs() {
    for threshold in [-0.5, 1.0000000180025095e-35, 0.5, 1.0, 1.5, 2.5] {
        for default_left in [true, false] {
            let tree = SourceTree {
                nodes: vec![
                    SourceNode::Split {
                        feature: 0,
                        rule: Rule::ZeroDefault { threshold, default_left },
                        left: 1,
                        right: 2,
                        gain: 0.0,
                    },
                    SourceNode::Split { feature: 1, rule: Rule::LeftAtMost(0.5), left: 3, right: 4, gain: 0.0 },
                    SourceNode::Leaf { value: 10.0 },
                    SourceNode::Leaf { value: -1.0 },
                    SourceNode::Leaf { value: -2.0 },
                ],
            };
            let converted = emit(0, &tree).unwrap();
            let settings = Settings { width: 2, base_score: 0.0, precision: Precision::F64, link: Link::Identity };
            let forest = Forest::new(&[converted], settings).unwrap();
            for x in 0..4 {
                for other in 0..2 {
                    let left = if x == 0 { default_left } else { f64::from(x) <= threshold };
                    let want = if !left {
                        10.0
                    } else if other == 0 {
                        -1.0
                    } else {
                        -2.0
                    };
                    let rows = ndarray::arr2(&[[x as f32, other as f32]]);
                    let got = forest.margins(rows.view())[0];
                    assert_eq!(got, want, "x {x}, other {other}, threshold {threshold}, default left {default_left}");
                }
            }
        }
    }
}

#[test]
fn an_imported_model_saves_and_loads_as_a_run_of_a_declared_version() {
    let conversion = import(Framework::Lightgbm, &fixture("lgb_zero_as_missing.txt")).unwrap();
    let version = ModelVer::declare("imported-test-lgb").unwrap();
    let expected_rows = expected().rows;
    let before = predict(&conversion, &expected_rows);
    let source = serde_json::to_value(&conversion.model.data().source).unwrap();
    let model = TrainedModel::new(version, conversion.features, source, fitted(conversion.model));
    let bytes = model.to_artifact();
    let loaded = TrainedModel::from_artifact(&bytes, &crate::models::sha256_hex(&bytes), version).unwrap();
    assert_eq!(loaded.predict(&expected_rows).unwrap(), before);
    assert_eq!(loaded.report()["framework"], "lightgbm");
    assert!(loaded.required_attributes().iter().all(|a| a.starts_with("att")));
    assert!(!loaded.importance().is_empty());
    // The artifact checks apply: a tree edited to point outside itself is refused.
    let text = String::from_utf8(bytes).unwrap();
    let broken = text.replacen("\"left\":1,", "\"left\":99,", 1);
    let err = TrainedModel::from_artifact(broken.as_bytes(), &crate::models::sha256_hex(broken.as_bytes()), version)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tree 0 node 0: child 99 is out of range"), "{err}");
    // Imported versions have no hyperparameters and no fit.
    let err = version.version().params("config/imported-test-lgb/params.yaml", None).unwrap_err().to_string();
    assert!(err.contains("is imported, not trained here"), "{err}");
}

#[test]
fn device_columns_come_from_the_rows_device() {
    let conversion = import(Framework::Xgboost, &fixture("xgb_logistic.json")).unwrap();
    assert_eq!(
        conversion.features.feature_names(),
        ["att1", "device=Computer", "att2", "device", "att3", "att4", "device=Tablet", "att5"]
    );
    let names: Arc<[String]> = ["att1", "att2", "att3", "att4", "att5"].iter().map(|s| s.to_string()).collect();
    let mut rows = KeywordRows::new(names);
    rows.push_checked(1, Device::Tablet.as_str(), &[1, 0, 1, 0, 1]).unwrap();
    let features = conversion.features.transform(&rows, conversion.features.attributes()).unwrap();
    assert_eq!(features.matrix.row(0).to_vec(), vec![1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 1.0, 1.0]);
}
