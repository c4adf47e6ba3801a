//! A training run's data files, validated and aggregated into the observations
//! a model is fitted and scored on.

use std::io::Cursor;

use bytes::Bytes;

use super::error::{DataError, Problem};
use super::rows::Observations;
use super::training::{ColumnProfile, RowCounts, TrainingTable};

/// Without an evaluation file, this share of the keywords is held out.
pub const HOLDOUT_FRACTION: f64 = 0.2;
/// Fixed so that the same data always gives the same holdout.
pub const HOLDOUT_SEED: u64 = 20_190_101;

/// A data file as read: the name errors cite, and its bytes (CSV or gzip CSV).
#[derive(Clone, Debug)]
pub struct DataFile {
    pub name: String,
    pub bytes: Bytes,
}

/// Where the evaluation rows came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSource {
    /// An evaluation file of its own.
    File,
    /// [`HOLDOUT_FRACTION`] of the training keywords.
    Holdout,
    /// The newest weeks, which the model never trained on.
    NewestWeeks,
}

impl EvalSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EvalSource::File => "file",
            EvalSource::Holdout => "holdout",
            EvalSource::NewestWeeks => "newest_weeks",
        }
    }

    /// The source named by [`EvalSource::as_str`], as run records store it.
    pub fn parse(name: &str) -> Option<EvalSource> {
        [EvalSource::File, EvalSource::Holdout, EvalSource::NewestWeeks].into_iter().find(|s| s.as_str() == name)
    }
}

/// Observations ready for [`crate::evaluation::train_and_evaluate`], with the
/// row counts of each file and a profile of the training data.
#[derive(Debug)]
pub struct PreparedData {
    pub train: Observations,
    pub eval: Observations,
    pub eval_source: EvalSource,
    pub train_counts: RowCounts,
    /// Counts of the evaluation file, when there is one.
    pub eval_counts: Option<RowCounts>,
    pub profile: Vec<ColumnProfile>,
    /// The weeks of the rows trained on and of the rows evaluated on.
    pub train_weeks: Vec<i64>,
    pub eval_weeks: Vec<i64>,
}

/// Validates and aggregates the files: CPU work, to be run off an async runtime.
/// Without an evaluation file, a fixed share of the training keywords is held out.
pub fn prepare(train: &DataFile, eval: Option<&DataFile>) -> Result<PreparedData, DataError> {
    let mut train_table = TrainingTable::read(&train.name, Cursor::new(train.bytes.clone()))?;
    let profile = train_table.profile();
    let all_train = train_table.observations()?;
    let train_weeks = train_table.weeks()?;
    let train_counts = train_table.counts;
    match eval {
        Some(file) => {
            let mut eval_table = TrainingTable::read(&file.name, Cursor::new(file.bytes.clone()))?;
            let eval = eval_table.observations()?;
            Ok(PreparedData {
                train: all_train,
                eval,
                eval_source: EvalSource::File,
                train_counts,
                eval_counts: Some(eval_table.counts.clone()),
                profile,
                train_weeks,
                eval_weeks: eval_table.weeks()?,
            })
        }
        None => {
            let (train, eval) = all_train.split_by_entity(HOLDOUT_FRACTION, HOLDOUT_SEED);
            Ok(PreparedData {
                train,
                eval,
                eval_source: EvalSource::Holdout,
                train_counts,
                eval_counts: None,
                profile,
                eval_weeks: train_weeks.clone(),
                train_weeks,
            })
        }
    }
}

/// Observations split by time: the newest `holdout_weeks` weeks to judge on,
/// and before them at most `train_weeks` weeks (0: all) to train on.
#[derive(Debug)]
pub struct WeekSplitData {
    pub data: PreparedData,
    pub train_weeks: Vec<i64>,
    pub eval_weeks: Vec<i64>,
}

pub fn prepare_by_week(file: &DataFile, holdout_weeks: usize, train_weeks: usize) -> Result<WeekSplitData, DataError> {
    let mut table = TrainingTable::read(&file.name, Cursor::new(file.bytes.clone()))?;
    let weeks = table.weeks()?;
    if weeks.len() <= holdout_weeks {
        return Err(DataError::new(&file.name, Problem::TooFewWeeks { found: weeks.len(), needed: holdout_weeks + 1 }));
    }
    let (train, eval) = weeks.split_at(weeks.len() - holdout_weeks);
    let train = &train[train.len().saturating_sub(if train_weeks == 0 { train.len() } else { train_weeks })..];
    let profile = table.profile();
    let train_observations = table.observations_of_weeks(|w| train.contains(&w))?;
    let eval_observations = table.observations_of_weeks(|w| eval.contains(&w))?;
    Ok(WeekSplitData {
        data: PreparedData {
            train: train_observations,
            eval: eval_observations,
            eval_source: EvalSource::NewestWeeks,
            train_counts: table.counts.clone(),
            eval_counts: None,
            profile,
            train_weeks: train.to_vec(),
            eval_weeks: eval.to_vec(),
        },
        train_weeks: train.to_vec(),
        eval_weeks: eval.to_vec(),
    })
}
