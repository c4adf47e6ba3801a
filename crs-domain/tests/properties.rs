//! Property tests of the two parsers that read what users and storage hand us:
//! the CSV/gzip reader and the artifact loader. Case counts stay small so the
//! dev-profile CI run stays short; `fuzz/` runs the same entry points for longer.

mod common;

use std::io::Cursor;
use std::sync::OnceLock;

use common::{gzip, observations, synth_csv};
use crs_domain::data::{Attributes, DataError, Device, TableKind, TableReader};
use crs_domain::evaluation::train_and_evaluate;
use crs_domain::models::{ModelVer, TrainedModel, sha256_hex};
use polars::prelude::*;
use proptest::prelude::*;
use serde_json::Value;

const TRAINING_HEADER: &str = "entity_id,att1,att2,device,week,Clicks,Conversions\n";

/// Reads every chunk of `bytes`, `chunk_bytes` at a time: the rows read, or the error.
fn read_all(bytes: Vec<u8>, kind: TableKind, chunk_bytes: usize) -> Result<Vec<DataFrame>, DataError> {
    let mut reader =
        TableReader::open("p.csv", Cursor::new(bytes), kind, Attributes::All)?.with_chunk_bytes(chunk_bytes);
    let mut frames = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        frames.push(chunk.frame);
    }
    Ok(frames)
}

/// Bytes that look like the start of a training file more often than chance.
fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let cell = prop_oneof![
        Just(b"0".to_vec()),
        Just(b"1".to_vec()),
        Just(b"-7".to_vec()),
        Just(b"Tablet".to_vec()),
        Just(b"\"a,\nb\"".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xff".to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    let separator = prop_oneof![Just(b",".to_vec()), Just(b"\n".to_vec()), Just(b"\r\n".to_vec())];
    prop::collection::vec((cell, separator), 0..40).prop_map(|cells| {
        let mut bytes = TRAINING_HEADER.as_bytes().to_vec();
        for (cell, separator) in cells {
            bytes.extend(cell);
            bytes.extend(separator);
        }
        bytes
    })
}

#[derive(Clone, Debug)]
struct Row {
    entity_id: i64,
    attributes: [i64; 2],
    device: Device,
    week: i64,
    clicks: i64,
    conversions: i64,
}

fn row() -> impl Strategy<Value = Row> {
    (any::<i64>(), [0..=1i64, 0..=1i64], 0..3usize, -5..60i64, 0..1_000_000i64, 0..1_000_000i64).prop_map(
        |(entity_id, attributes, device, week, clicks, conversions)| Row {
            entity_id,
            attributes,
            device: Device::ALL[device],
            week,
            clicks,
            conversions,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600), chunk in 1..300usize) {
        for kind in [TableKind::Training, TableKind::PredictionInput] {
            let _ = read_all(bytes.clone(), kind, chunk);
            let _ = read_all(gzip(&bytes), kind, chunk);
            // Gzip cut anywhere, or with a byte changed.
            let zipped = gzip(&bytes);
            let _ = read_all(zipped[..chunk.min(zipped.len())].to_vec(), kind, chunk);
            let mut changed = zipped.clone();
            let at = chunk % changed.len();
            changed[at] ^= 0x41;
            let _ = read_all(changed, kind, chunk);
        }
    }

    #[test]
    fn the_reader_never_panics_on_csv_like_bytes(bytes in csv_like(), chunk in 1..300usize) {
        let _ = read_all(bytes.clone(), TableKind::Training, chunk);
        let _ = read_all(gzip(&bytes), TableKind::Training, chunk);
    }

    #[test]
    fn valid_rows_read_back_as_written(
        rows in prop::collection::vec(row(), 1..40),
        crlf in any::<bool>(),
        zipped in any::<bool>(),
        chunk in 1..2000usize,
    ) {
        let line_end = if crlf { "\r\n" } else { "\n" };
        let mut text = TRAINING_HEADER.replace('\n', line_end);
        for r in &rows {
            let [a1, a2] = r.attributes;
            let device = r.device.as_str();
            text.push_str(&format!("{},{a1},{a2},{device},{},{},{}{line_end}", r.entity_id, r.week, r.clicks, r.conversions));
        }
        let bytes = if zipped { gzip(text.as_bytes()) } else { text.into_bytes() };
        let frames = read_all(bytes, TableKind::Training, chunk).expect("valid rows");
        let mut read = Vec::new();
        for frame in frames {
            let int = |name: &str| frame.column(name).unwrap().i64().unwrap().into_no_null_iter().collect::<Vec<_>>();
            let devices: Vec<String> = frame.column("device").unwrap().str().unwrap().into_no_null_iter().map(str::to_owned).collect();
            let (e, a1, a2, w, c, v) = (int("entity_id"), int("att1"), int("att2"), int("week"), int("Clicks"), int("Conversions"));
            for i in 0..frame.height() {
                read.push((e[i], [a1[i], a2[i]], devices[i].clone(), w[i], c[i], v[i]));
            }
        }
        let written: Vec<_> = rows
            .iter()
            .map(|r| (r.entity_id, r.attributes, r.device.as_str().to_owned(), r.week, r.clicks, r.conversions))
            .collect();
        prop_assert_eq!(read, written);
    }
}

/// A small fitted model of `version` as its artifact bytes.
fn artifact(version: &str) -> &'static [u8] {
    static V1: OnceLock<Vec<u8>> = OnceLock::new();
    static V2: OnceLock<Vec<u8>> = OnceLock::new();
    let (cell, yaml) = match version {
        "v1" => (&V1, "max_depth: 4\nmin_leaf_clicks: 20\n"),
        _ => (&V2, "max_depth: 2\nmax_trees: 8\nfolds: 2\nl2: 5\nearly_stopping_rounds: 2\n"),
    };
    cell.get_or_init(|| {
        let train = observations("train.csv", synth_csv(1, 150, 6, 1));
        let eval = observations("eval.csv", synth_csv(1000, 50, 6, 2));
        let model_ver = ModelVer::parse(version).unwrap();
        let params = model_ver.version().params("p.yaml", Some(yaml)).unwrap();
        train_and_evaluate(model_ver, &params, &train, &eval, |_| {}).unwrap().model.to_artifact()
    })
}

fn load(version: &str, bytes: &[u8]) -> Result<TrainedModel, String> {
    TrainedModel::from_artifact(bytes, &sha256_hex(bytes), ModelVer::parse(version).unwrap()).map_err(|e| e.to_string())
}

/// Every path (object keys and array indices) to a number inside `value`.
fn number_paths(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Number(_) => out.push(path.clone()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                number_paths(item, path, out);
                path.pop();
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                path.push(key.clone());
                number_paths(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, step| match v {
        Value::Array(items) => &mut items[step.parse::<usize>().unwrap()],
        other => &mut other[step.as_str()],
    })
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(0.5)),
        Just(serde_json::json!("1")),
        Just(serde_json::json!([])),
        any::<i32>().prop_map(|n| serde_json::json!(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_artifact_loader_never_panics_on_changed_bytes(
        v2 in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    ) {
        let version = if v2 { "v2" } else { "v1" };
        let mut bytes = artifact(version).to_vec();
        for (index, byte, how) in edits {
            let i = index.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        let _ = load(version, &bytes);
    }

    #[test]
    fn the_artifact_loader_never_panics_on_changed_numbers(
        v2 in any::<bool>(),
        which in any::<prop::sample::Index>(),
        value in replacement(),
    ) {
        let version = if v2 { "v2" } else { "v1" };
        let mut artifact: Value = serde_json::from_slice(artifact(version)).unwrap();
        let mut paths = Vec::new();
        number_paths(&artifact, &mut Vec::new(), &mut paths);
        *at(&mut artifact, which.get(paths.as_slice()).as_slice()) = value;
        let _ = load(version, &serde_json::to_vec(&artifact).unwrap());
    }

    /// A child index out of range or pointing back, a feature beyond the
    /// model's width, or no trees at all: each is refused, never served.
    #[test]
    fn structurally_bad_artifacts_are_refused(
        v2 in any::<bool>(),
        which in any::<prop::sample::Index>(),
        damage in 0..4u8,
    ) {
        let version = if v2 { "v2" } else { "v1" };
        let mut artifact: Value = serde_json::from_slice(artifact(version)).unwrap();
        let mut paths = Vec::new();
        number_paths(&artifact["model"], &mut vec!["model".to_owned()], &mut paths);
        // Only the fields of splits: a v2 leaf (both children 0) reads neither its
        // feature nor its children.
        let is_split = |path: &Vec<String>| {
            let node = path[..path.len() - 1].iter().fold(&artifact, |v, step| match v {
                Value::Array(items) => &items[step.parse::<usize>().unwrap()],
                other => &other[step.as_str()],
            });
            node["left"] != serde_json::json!(0) || node["right"] != serde_json::json!(0)
        };
        let named = |names: &[&str]| -> Vec<Vec<String>> {
            paths.iter().filter(|p| names.contains(&p.last().unwrap().as_str()) && is_split(p)).cloned().collect()
        };
        let (targets, value) = match damage {
            0 => (named(&["left", "right"]), serde_json::json!(1_000_000)),
            // Pointing back at the root makes a cycle.
            1 => (named(&["left", "right"]), serde_json::json!(0)),
            2 => (named(&["feature"]), serde_json::json!(1_000_000)),
            _ => (Vec::new(), Value::Null),
        };
        if damage == 3 {
            artifact["model"]["trees"] = serde_json::json!([]);
        } else {
            prop_assume!(!targets.is_empty());
            *at(&mut artifact, which.get(targets.as_slice()).as_slice()) = value;
        }
        let loaded = load(version, &serde_json::to_vec(&artifact).unwrap());
        prop_assert!(loaded.is_err(), "{version}: damage {damage} was accepted");
    }
}

#[test]
fn the_unchanged_artifacts_load() {
    for version in ["v1", "v2"] {
        load(version, artifact(version)).unwrap_or_else(|e| panic!("{version}: {e}"));
    }
}
