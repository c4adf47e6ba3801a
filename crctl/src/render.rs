//! `--json` output of the client commands: one JSON object per command, the
//! wire messages as serde writes them (proto field names, enums by name, times
//! as RFC 3339), keys sorted.

use crs_proto::serve::{ModelInfo, PredictBatchResponse};
use crs_proto::train::{ListModelsResponse, ModelRun, TrainingJob};
use serde::Serialize;
use serde_json::Value;

/// Prints a rendering as the command's whole output.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn value(message: &impl Serialize) -> Value {
    serde_json::to_value(message).expect("wire messages are plain serde data")
}

pub fn job(job: &TrainingJob) -> Value {
    value(job)
}

pub fn jobs(jobs: &[TrainingJob]) -> Value {
    #[derive(Serialize)]
    struct Jobs<'a> {
        jobs: &'a [TrainingJob],
    }
    value(&Jobs { jobs })
}

pub fn models(response: &ListModelsResponse) -> Value {
    #[derive(Serialize)]
    struct Run<'a> {
        #[serde(flatten)]
        run: &'a ModelRun,
        latest: bool,
    }
    #[derive(Serialize)]
    struct Version<'a> {
        model_ver: &'a str,
        latest_run_id: &'a str,
        production_run_id: &'a str,
        runs: Vec<Run<'a>>,
    }
    #[derive(Serialize)]
    struct Versions<'a> {
        versions: Vec<Version<'a>>,
    }
    let versions = response
        .versions
        .iter()
        .map(|v| Version {
            model_ver: &v.model_ver,
            latest_run_id: &v.latest_run_id,
            production_run_id: &v.production_run_id,
            runs: v.runs.iter().map(|run| Run { run, latest: run.run_id == v.latest_run_id }).collect(),
        })
        .collect();
    value(&Versions { versions })
}

pub fn model(info: &ModelInfo) -> Value {
    value(info)
}

/// `(entity_id, device, cr)` per row, with the run that answered.
pub fn predictions(model_ver: &str, run_id: &str, rows: &[(i64, String, f64)]) -> Value {
    #[derive(Serialize)]
    struct Prediction<'a> {
        entity_id: i64,
        device: &'a str,
        cr: f64,
    }
    #[derive(Serialize)]
    struct Predictions<'a> {
        model_ver: &'a str,
        run_id: &'a str,
        predictions: Vec<Prediction<'a>>,
    }
    let predictions = rows.iter().map(|(entity_id, device, cr)| Prediction { entity_id: *entity_id, device, cr: *cr });
    value(&Predictions { model_ver, run_id, predictions: predictions.collect() })
}

pub fn batch(input_key: &str, response: &PredictBatchResponse) -> Value {
    #[derive(Serialize)]
    struct Batch<'a> {
        input_key: &'a str,
        #[serde(flatten)]
        response: &'a PredictBatchResponse,
    }
    value(&Batch { input_key, response })
}

pub fn health(service: &str, addr: &str, status: &str) -> Value {
    #[derive(Serialize)]
    struct Health<'a> {
        service: &'a str,
        addr: &'a str,
        status: &'a str,
    }
    value(&Health { service, addr, status })
}

#[cfg(test)]
mod tests {
    //! Golden files captured from the output before it was derived with serde:
    //! the JSON a script reads must not change.

    use crs_proto::serve::{FeatureImportance, LoadedModel, PredictBatchResponse};
    use crs_proto::train::{Evaluation, JobState, Metrics, ModelVersionRuns, SearchProgress, Stage};
    use prost_types::Timestamp;

    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn metrics(base: f64) -> Option<Metrics> {
        Some(Metrics { wmae: base, wmse: base / 7.0, logloss: 0.2 + base, mae: base * 1.5 })
    }

    fn evaluation(rows: u64) -> Option<Evaluation> {
        Some(Evaluation {
            rows,
            clicks: rows * 46,
            model: metrics(0.0353),
            zero: metrics(0.0491),
            global: metrics(0.0354),
            device: None,
        })
    }

    fn succeeded() -> TrainingJob {
        TrainingJob {
            job_id: "job-20261201T210556681Z-1".into(),
            model_ver: "v1".into(),
            state: JobState::Succeeded.into(),
            stage: Stage::Saving.into(),
            progress: 1.0,
            train_key: "data/train/train.csv.gz".into(),
            eval_key: Some("data/train/eval.csv.gz".into()),
            config_key: "config/v1/params.yaml".into(),
            labels: [("source".to_owned(), "fixture".to_owned()), ("a".to_owned(), "b=c".to_owned())].into(),
            created_at: at(1_796_160_356, 681_449_857),
            started_at: at(1_796_160_356, 681_600_000),
            finished_at: at(1_796_160_357, 0),
            run_id: "20261201T210556681Z-9626e2".into(),
            error: String::new(),
            evaluation: evaluation(201),
            search: Some(SearchProgress {
                point: 4,
                points: 4,
                folds_done: 5,
                folds: 5,
                best_point: 3,
                best_logloss: 0.2103,
                best_trees: 173,
                refitting: true,
            }),
            cancelled_by: String::new(),
            cancel_reason: String::new(),
            imported: None,
        }
    }

    fn queued() -> TrainingJob {
        TrainingJob {
            job_id: "job-20261201T210600000Z-3".into(),
            model_ver: "v0".into(),
            state: JobState::Failed.into(),
            stage: Stage::Training.into(),
            progress: 0.3,
            train_key: "data/train/train.csv.gz".into(),
            eval_key: None,
            config_key: "config/v0/params.yaml".into(),
            created_at: at(1_796_160_360, 5),
            error: "data/train/train.csv.gz: row 3, column 'Clicks': must not be negative, found -5".into(),
            ..Default::default()
        }
    }

    fn run(run_id: &str, seconds: i64) -> ModelRun {
        ModelRun {
            model_ver: "v1".into(),
            run_id: run_id.into(),
            job_id: format!("job-{run_id}"),
            created_at: at(seconds, 123_000_000),
            train: evaluation(1000),
            eval: evaluation(200),
            artifact_sha256: "ae30c92c8d9ab50ffa258e1a0b643d27764842e48698aafe9eb55434824a65e1".into(),
            labels: [("k".to_owned(), "v".to_owned())].into(),
            stage: "production".into(),
            aliases: vec!["production".into()],
            trained_at: at(seconds, 456_000_000),
            stage_by: "crctl train".into(),
            stage_reason: "first production run".into(),
            stage_at: at(seconds + 1, 0),
        }
    }

    fn rendered() -> Vec<(&'static str, Value)> {
        let models_response = ListModelsResponse {
            versions: vec![
                ModelVersionRuns {
                    model_ver: "v1".into(),
                    latest_run_id: "20261201T210559296Z-022c62".into(),
                    production_run_id: "20261201T210556681Z-9626e2".into(),
                    runs: vec![
                        run("20261201T210556681Z-9626e2", 1_796_160_356),
                        run("20261201T210559296Z-022c62", 1_796_160_359),
                    ],
                },
                ModelVersionRuns { model_ver: "v0".into(), ..Default::default() },
            ],
        };
        let info = ModelInfo {
            model_ver: "v1".into(),
            run_id: "20261201T210556681Z-9626e2".into(),
            selection: "latest".into(),
            loaded_at: at(1_796_160_357, 60_043_426),
            trained_at: None,
            job_id: "job-20261201T210556681Z-1".into(),
            artifact_sha256: "ae30".into(),
            attribute_names: vec!["att1".into(), "att14".into()],
            eval_wmae: 0.03531031839248789,
            eval_baseline_wmae: 0.03338403909888491,
            importance: vec![FeatureImportance { feature: "att1".into(), importance: 0.0123 }],
            memory_bytes: 48_213,
            loaded: vec![
                LoadedModel {
                    model_ver: "v0".into(),
                    run_id: "20261201T210556880Z-ebae9d".into(),
                    selection: "production".into(),
                    loaded_at: at(1_796_160_357, 0),
                    memory_bytes: 1_204,
                    shadow_of: "v1".into(),
                },
                LoadedModel {
                    model_ver: "v1".into(),
                    run_id: "20261201T210556681Z-9626e2".into(),
                    selection: "latest".into(),
                    loaded_at: at(1_796_160_357, 60_043_426),
                    memory_bytes: 48_213,
                    shadow_of: String::new(),
                },
            ],
        };
        let batch_response = PredictBatchResponse {
            output_key: "data/predict/output/v1/20261201T210556681Z-9626e2/prediction_output.csv.gz".into(),
            rows_read: 104,
            rows_written: 103,
            seconds: 0.011145004,
            model_ver: "v1".into(),
            run_id: "20261201T210556681Z-9626e2".into(),
            ..PredictBatchResponse::default()
        };
        let rows = vec![(401, "Computer".to_owned(), 0.08678681985722583), (402, "Tablet".to_owned(), 0.0)];
        vec![
            ("train", job(&succeeded())),
            ("jobs", jobs(&[succeeded(), queued()])),
            ("models", models(&models_response)),
            ("model", model(&info)),
            ("predict", predictions("v1", "20261201T210556681Z-9626e2", &rows)),
            ("predict_batch", batch("data/predict/input/prediction_input.csv.gz", &batch_response)),
            ("health", health("serve", "127.0.0.1:50052", "SERVING")),
        ]
    }

    #[test]
    fn json_output_matches_the_golden_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        for (command, value) in rendered() {
            let text = serde_json::to_string_pretty(&value).expect("json") + "\n";
            let path = dir.join(format!("{command}.json"));
            let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(text, golden, "crctl {command} --json changed; golden file {}", path.display());
        }
    }
}
