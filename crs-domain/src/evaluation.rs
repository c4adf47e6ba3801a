//! Training a model version and scoring it against the baselines on the same rows.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::Observations;
use crate::features::{FeatureError, FeaturePipeline};
use crate::metrics::{Metrics, score};
use crate::models::imported::{self, Framework, ImportError};
use crate::models::v0::DeviceRates;
use crate::models::{FitError, ModelVer, Progress, TrainedModel, TrainingSet};

/// The model and the baselines scored on the same rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub rows: u64,
    pub clicks: f64,
    pub model: Metrics,
    /// Predicts 0.
    pub zero: Metrics,
    /// The training rate over all clicks.
    pub global: Metrics,
    /// The training rate per device (model v0).
    pub device: Metrics,
}

/// The baselines every model is compared with, fitted on the training rows.
#[derive(Clone, Debug)]
pub struct Baselines {
    pub device: DeviceRates,
}

impl Baselines {
    pub fn fit(train: &Observations) -> Self {
        Baselines { device: DeviceRates::fit(&train.rows.device, &train.clicks, &train.conversions) }
    }

    pub fn evaluate(&self, model: &TrainedModel, rows: &Observations) -> Result<Evaluation, FeatureError> {
        let predicted = model.predict(&rows.rows)?;
        let scored = |p: &[f64]| score(p, &rows.clicks, &rows.conversions);
        let device: Vec<f64> = rows.rows.device.iter().map(|&d| self.device.rate(d)).collect();
        Ok(Evaluation {
            rows: rows.len() as u64,
            clicks: rows.total_clicks(),
            model: scored(&predicted),
            zero: scored(&vec![0.0; rows.len()]),
            global: scored(&vec![self.device.global; rows.len()]),
            device: scored(&device),
        })
    }
}

/// What a training run does, in order, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingPhase {
    Preparing,
    Training,
    Evaluating,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("evaluation data: {0}")]
    Features(#[from] FeatureError),
    #[error("no training rows with clicks")]
    NoTrainingRows,
    #[error("no evaluation rows with clicks")]
    NoEvaluationRows,
}

#[derive(Debug)]
pub struct TrainingRun {
    pub model: TrainedModel,
    pub train: Evaluation,
    pub eval: Evaluation,
    /// Seconds spent in each phase.
    pub seconds: Vec<(TrainingPhase, f64)>,
    /// What the version records about its fit ([`TrainedModel::report`]), for
    /// the run's metadata; `Null` for versions with nothing to add.
    pub report: serde_json::Value,
}

/// Fits the feature pipeline and the model on `train`, then scores model and
/// baselines on both sets. `on_phase` hears each phase as it starts.
pub fn train_and_evaluate(
    model_ver: ModelVer,
    params: &serde_json::Value,
    train: &Observations,
    eval: &Observations,
    on_phase: impl FnMut(TrainingPhase),
) -> Result<TrainingRun, TrainError> {
    train_and_evaluate_with_progress(model_ver, params, train, eval, on_phase, &mut |_| {})
}

/// [`train_and_evaluate`], also passing the fit's [`Progress`] to `on_progress`
/// as it happens (during [`TrainingPhase::Training`]).
pub fn train_and_evaluate_with_progress(
    model_ver: ModelVer,
    params: &serde_json::Value,
    train: &Observations,
    eval: &Observations,
    mut on_phase: impl FnMut(TrainingPhase),
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TrainingRun, TrainError> {
    if train.is_empty() {
        return Err(TrainError::NoTrainingRows);
    }
    if eval.is_empty() {
        return Err(TrainError::NoEvaluationRows);
    }
    let mut seconds = Vec::new();
    let mut timed = |phase: TrainingPhase, started: Instant| seconds.push((phase, started.elapsed().as_secs_f64()));

    on_phase(TrainingPhase::Preparing);
    let started = Instant::now();
    let features = FeaturePipeline::fit(&train.rows);
    let set = TrainingSet {
        features: features.transform(&train.rows, features.attributes())?,
        clicks: train.clicks.clone(),
        conversions: train.conversions.clone(),
        groups: train.rows.entity_id.clone(),
    };
    timed(TrainingPhase::Preparing, started);

    on_phase(TrainingPhase::Training);
    let started = Instant::now();
    let fitted = model_ver.version().fit(params, &set, on_progress)?;
    let model = TrainedModel::new(model_ver, features, params.clone(), fitted);
    let report = model.report();
    timed(TrainingPhase::Training, started);

    on_phase(TrainingPhase::Evaluating);
    let started = Instant::now();
    let baselines = Baselines::fit(train);
    let train_eval = baselines.evaluate(&model, train)?;
    let eval_eval = baselines.evaluate(&model, eval)?;
    timed(TrainingPhase::Evaluating, started);

    Ok(TrainingRun { model, train: train_eval, eval: eval_eval, seconds, report })
}

#[derive(Debug, thiserror::Error)]
pub enum ImportRunError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("evaluation data: {0}")]
    Features(#[from] FeatureError),
    #[error("no training rows with clicks")]
    NoTrainingRows,
    #[error("no evaluation rows with clicks")]
    NoEvaluationRows,
}

/// An imported model file as a run of `model_ver`: converted into the forest
/// (`Preparing`), then scored with the baselines as a trained run is
/// (`Evaluating`). The platform does not know what the model was trained on:
/// `train` is the pipeline's training data, which fits the baselines and on
/// which the model is scored for comparison only.
pub fn import_and_evaluate(
    model_ver: ModelVer,
    framework: Framework,
    file: &[u8],
    train: &Observations,
    eval: &Observations,
    mut on_phase: impl FnMut(TrainingPhase),
) -> Result<TrainingRun, ImportRunError> {
    if train.is_empty() {
        return Err(ImportRunError::NoTrainingRows);
    }
    if eval.is_empty() {
        return Err(ImportRunError::NoEvaluationRows);
    }
    let mut seconds = Vec::new();
    on_phase(TrainingPhase::Preparing);
    let started = Instant::now();
    let conversion = imported::import(framework, file)?;
    let source = serde_json::to_value(&conversion.model.data().source).expect("the source record is plain serde data");
    let model = TrainedModel::new(model_ver, conversion.features, source, imported::fitted(conversion.model));
    let report = model.report();
    seconds.push((TrainingPhase::Preparing, started.elapsed().as_secs_f64()));

    on_phase(TrainingPhase::Evaluating);
    let started = Instant::now();
    let baselines = Baselines::fit(train);
    let train_eval = baselines.evaluate(&model, train)?;
    let eval_eval = baselines.evaluate(&model, eval)?;
    seconds.push((TrainingPhase::Evaluating, started.elapsed().as_secs_f64()));
    Ok(TrainingRun { model, train: train_eval, eval: eval_eval, seconds, report })
}
