//! Imported models on the real keyword data (only when `CRS_REAL_DATA` names
//! it): xgboost and lightgbm models of several depths and tree counts, fitted
//! by the pinned libraries (`analytics/requirements.txt`) in
//! `fixtures/imported/parity.py`, converted into the forest, predict every
//! evaluation row as the library's own `predict` does, within 1e-6.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use crs_domain::data::KeywordRows;
use crs_domain::models::Predictor;
use crs_domain::models::imported::{Framework, import};

fn real_data() -> Option<PathBuf> {
    let Some(path) = std::env::var_os("CRS_REAL_DATA").filter(|p| !p.is_empty()) else {
        println!("skipped: CRS_REAL_DATA not set");
        return None;
    };
    let path = PathBuf::from(path);
    let from_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path);
    Some(if path.is_relative() && !path.exists() && from_root.exists() { from_root } else { path })
}

/// `eval.csv`: the rows, and per model file the library's predictions.
fn read_eval(path: &Path) -> (KeywordRows, Vec<(String, Vec<f64>)>) {
    let text = std::fs::read_to_string(path).unwrap();
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
        for (&column, (_, predictions)) in models.iter().zip(&mut by_model) {
            predictions.push(fields[column].parse().unwrap());
        }
    }
    (rows, by_model)
}

#[test]
fn real_data_models_predict_what_their_library_predicts_on_every_evaluation_row() {
    let Some(data) = real_data() else { return };
    let out = std::env::temp_dir().join(format!("crs-import-parity-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imported/parity.py");
    let started = Instant::now();
    let status = Command::new("python3").arg(&script).arg(&data).arg(&out).status().expect("python3 runs");
    assert!(status.success(), "{} failed: pip install -r analytics/requirements.txt", script.display());
    println!("fitted by the libraries in {:.1} s", started.elapsed().as_secs_f64());
    let (rows, by_model) = read_eval(&out.join("eval.csv"));
    assert!(rows.len() > 3000, "{} evaluation rows", rows.len());
    assert_eq!(by_model.len(), 9);
    for (file, want) in &by_model {
        let framework = if file.starts_with("xgb") { Framework::Xgboost } else { Framework::Lightgbm };
        let conversion = import(framework, &std::fs::read(out.join(file)).unwrap()).unwrap();
        let features = conversion.features.transform(&rows, conversion.features.attributes()).unwrap();
        let got = conversion.model.predict(&features);
        // Regression objectives: the platform predicts a rate, the library's margin clipped to [0, 1].
        let regression = file.contains("_sq_") || file.contains("_reg_");
        let mut worst = 0.0f64;
        for (row, (got, want)) in got.iter().zip(want).enumerate() {
            let want = if regression { want.clamp(0.0, 1.0) } else { *want };
            let error = (got - want).abs();
            assert!(error <= 1e-6, "{file} row {row}: platform {got}, library {want}");
            worst = worst.max(error);
        }
        let source = &conversion.model.data().source;
        println!(
            "{file}: {} trees, depth {}, {} rows, largest difference {worst:e}",
            source.trees,
            source.max_depth,
            got.len()
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
