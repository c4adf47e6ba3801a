//! The real keyword data (only when `CRS_REAL_DATA` names it): read through the
//! data contract and scored the way `crctl evaluate --train <file>` scores it.

use crs_domain::data::{DataFile, EvalSource, HOLDOUT_FRACTION, PreparedData, prepare};
use crs_domain::evaluation::train_and_evaluate;
use crs_domain::metrics::Metrics;
use crs_domain::models::ModelVer;

/// The real data's bytes, or `None` (after saying so) when `CRS_REAL_DATA` is unset.
fn real_data() -> Option<Vec<u8>> {
    let Some(path) = std::env::var_os("CRS_REAL_DATA").filter(|p| !p.is_empty()) else {
        println!("skipped: CRS_REAL_DATA not set");
        return None;
    };
    // Tests run in crs-domain/; a relative path may also be given from the repository root.
    let path = std::path::PathBuf::from(path);
    let from_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path);
    let path = if path.is_relative() && !path.exists() && from_root.exists() { from_root } else { path };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("CRS_REAL_DATA={}: {e}", path.display()));
    Some(bytes)
}

/// The real data as `crctl evaluate --train <file>` prepares it: a keyword holdout.
fn prepared(bytes: Vec<u8>) -> PreparedData {
    prepare(&DataFile { name: "keyword_conversions.csv.gz".into(), bytes: bytes.into() }, None).unwrap()
}

#[test]
fn real_data_meets_the_contract() {
    let Some(bytes) = real_data() else { return };
    let data = prepared(bytes);
    let counts = data.train_counts.clone();
    // Described in shared/data/README.md: 44,771 rows, 16,208 keywords, some
    // rows with more conversions than clicks.
    assert_eq!(counts.read, 44_771);
    assert!(counts.conversions_clipped > 0, "{counts:?}");
    assert_eq!(counts.used + counts.zero_clicks_dropped + counts.duplicates_dropped, counts.read, "{counts:?}");
    assert_eq!(data.train.rows.attribute_names().len(), 160);
    let mut keywords: Vec<i64> = data.train.rows.entity_id.iter().chain(&data.eval.rows.entity_id).copied().collect();
    keywords.sort_unstable();
    keywords.dedup();
    assert!(keywords.len() <= 16_208, "{} keywords", keywords.len());
    assert_eq!((data.train.len() + data.eval.len()) as u64, counts.observations);
    let share = data.eval.len() as f64 / counts.observations as f64;
    assert!((share - HOLDOUT_FRACTION).abs() < 0.03, "holdout share {share}");
}

#[test]
fn v1_beats_every_baseline_on_the_real_holdout() {
    let Some(bytes) = real_data() else { return };
    let v1 = ModelVer::parse("v1").unwrap();
    let params = v1.version().params("config/v1/params.yaml", None).unwrap();
    let data = prepared(bytes);
    assert_eq!(data.eval_source, EvalSource::Holdout);
    let run = train_and_evaluate(v1, &params, &data.train, &data.eval, |_| {}).unwrap();
    let e = &run.eval;
    println!("eval rows {}, clicks {}", e.rows, e.clicks);
    for (name, m) in [("v1", &e.model), ("device", &e.device), ("global", &e.global), ("zero", &e.zero)] {
        println!("{name:<8} wmae {:.6} wmse {:.6} logloss {:.5}", m.wmae, m.wmse, m.logloss);
    }
    let beats = |baseline: &Metrics, name: &str| {
        let m = &e.model;
        assert!(m.wmae < baseline.wmae, "wmae: v1 {} vs {name} {}", m.wmae, baseline.wmae);
        assert!(m.wmse < baseline.wmse, "wmse: v1 {} vs {name} {}", m.wmse, baseline.wmse);
        assert!(m.logloss < baseline.logloss, "logloss: v1 {} vs {name} {}", m.logloss, baseline.logloss);
    };
    beats(&e.zero, "zero");
    beats(&e.global, "global");
    beats(&e.device, "device");
}

#[test]
fn v2_beats_v1_and_the_device_baseline_on_the_real_holdout() {
    let Some(bytes) = real_data() else { return };
    let data = prepared(bytes);
    let run = |name: &str| {
        let model_ver = ModelVer::parse(name).unwrap();
        let params = model_ver.version().params("params.yaml", None).unwrap();
        let started = std::time::Instant::now();
        let run = train_and_evaluate(model_ver, &params, &data.train, &data.eval, |_| {}).unwrap();
        println!("{name}: trained and scored in {:.1} s", started.elapsed().as_secs_f64());
        run
    };
    let (v1, v2) = (run("v1"), run("v2"));
    println!("v2 search: {}", v2.report["chosen"]);
    let e = &v2.eval;
    for (name, m) in [("v2", &e.model), ("v1", &v1.eval.model), ("device", &e.device)] {
        println!("{name:<8} wmae {:.6} wmse {:.6} logloss {:.5}", m.wmae, m.wmse, m.logloss);
    }
    for (name, other) in [("v1", &v1.eval.model), ("device", &e.device)] {
        assert!(e.model.logloss < other.logloss, "logloss: v2 {} vs {name} {}", e.model.logloss, other.logloss);
        assert!(e.model.wmse < other.wmse, "wmse: v2 {} vs {name} {}", e.model.wmse, other.wmse);
    }
}
