//! Training and evaluation files: read, cleaned as the contract says, profiled,
//! and aggregated to one observation per (keyword, device).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{DataError, Problem};
use super::rows::{KeywordRows, Observations};
use super::schema::{CLICKS, CONVERSIONS, DEVICE, Device, ENTITY_ID, TableKind, WEEK};
use super::table::{Attributes, TableReader};

/// What reading and cleaning a file did to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RowCounts {
    /// Data rows in the file.
    pub read: u64,
    /// Exact duplicates of an earlier row, dropped.
    pub duplicates_dropped: u64,
    /// Rows with more conversions than clicks; conversions were set to clicks.
    pub conversions_clipped: u64,
    /// Rows with zero clicks, which say nothing about a rate.
    pub zero_clicks_dropped: u64,
    /// Rows that went into the observations.
    pub used: u64,
    /// Observations: distinct (entity_id, device) with clicks.
    pub observations: u64,
}

/// Summary statistics of one numeric column of the cleaned file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub column: String,
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    pub missing_share: f64,
}

/// A training or evaluation file after validation and cleaning.
#[derive(Debug)]
pub struct TrainingTable {
    pub file: String,
    /// Deduplicated, conversions clipped; zero-click rows still in.
    pub frame: DataFrame,
    pub attribute_names: Arc<[String]>,
    pub ignored_columns: Vec<String>,
    pub counts: RowCounts,
}

impl TrainingTable {
    /// Reads and validates a file in the training schema (CSV or gzip CSV).
    pub fn read(file: &str, input: impl Read + Send + 'static) -> Result<Self, DataError> {
        let reader = TableReader::open(file, input, TableKind::Training, Attributes::All)?;
        let (frame, _, reader) = reader.read_all()?;
        let polars_error = |e: PolarsError| DataError::new(file, Problem::Csv { first_row: 1, message: e.to_string() });

        let read = frame.height() as u64;
        let mut frame = frame.unique_stable(None, UniqueKeepStrategy::First, None).map_err(polars_error)?;
        let duplicates_dropped = read - frame.height() as u64;

        let clicks = frame.column(CLICKS).and_then(|c| c.i64().cloned()).map_err(polars_error)?;
        let conversions = frame.column(CONVERSIONS).and_then(|c| c.i64().cloned()).map_err(polars_error)?;
        let mut conversions_clipped = 0u64;
        let clipped: Int64Chunked = conversions
            .into_no_null_iter()
            .zip(clicks.into_no_null_iter())
            .map(|(conv, click)| {
                conversions_clipped += u64::from(conv > click);
                conv.min(click)
            })
            .collect_ca(CONVERSIONS.into());
        if conversions_clipped > 0 {
            frame.with_column(clipped.into_column()).map_err(polars_error)?;
        }

        Ok(TrainingTable {
            file: file.to_owned(),
            frame,
            attribute_names: reader.attribute_names().clone(),
            ignored_columns: reader.ignored_columns().to_vec(),
            counts: RowCounts { read, duplicates_dropped, conversions_clipped, ..RowCounts::default() },
        })
    }

    /// Mean, median, standard deviation and missing share of every numeric
    /// column but the keyword id.
    pub fn profile(&self) -> Vec<ColumnProfile> {
        self.frame
            .columns()
            .iter()
            .filter(|c| c.dtype().is_integer() && c.name() != ENTITY_ID)
            .map(|c| {
                let stat =
                    |s: PolarsResult<Scalar>| s.ok().and_then(|s| s.value().extract::<f64>()).unwrap_or(f64::NAN);
                ColumnProfile {
                    column: c.name().to_string(),
                    mean: stat(c.mean_reduce()),
                    median: stat(c.median_reduce()),
                    std: stat(c.std_reduce(1)),
                    missing_share: c.null_count() as f64 / c.len().max(1) as f64,
                }
            })
            .collect()
    }

    /// One observation per (entity_id, device) in order of first appearance:
    /// clicks and conversions summed over weeks, attributes from the first row.
    /// Rows with zero clicks are left out.
    pub fn observations(&mut self) -> Result<Observations, DataError> {
        self.observations_of_weeks(|_| true)
    }

    /// The weeks in the file, sorted.
    pub fn weeks(&self) -> Result<Vec<i64>, DataError> {
        let file = &self.file;
        let column = self
            .frame
            .column(WEEK)
            .and_then(|c| c.i64())
            .map_err(|e| DataError::new(file, Problem::Csv { first_row: 1, message: e.to_string() }))?;
        let mut weeks: Vec<i64> = column.into_no_null_iter().collect();
        weeks.sort_unstable();
        weeks.dedup();
        Ok(weeks)
    }

    /// Like [`TrainingTable::observations`], from the rows of the weeks `keep` accepts only.
    pub fn observations_of_weeks(&mut self, keep: impl Fn(i64) -> bool) -> Result<Observations, DataError> {
        let file = self.file.clone();
        let polars_error =
            |e: PolarsError| DataError::new(&file, Problem::Csv { first_row: 1, message: e.to_string() });
        let frame = &self.frame;
        let entity = frame.column(ENTITY_ID).and_then(|c| c.i64()).map_err(polars_error)?;
        let device = frame.column(DEVICE).and_then(|c| c.str()).map_err(polars_error)?;
        let clicks = frame.column(CLICKS).and_then(|c| c.i64()).map_err(polars_error)?;
        let conversions = frame.column(CONVERSIONS).and_then(|c| c.i64()).map_err(polars_error)?;
        let week = frame.column(WEEK).and_then(|c| c.i64()).map_err(polars_error)?;
        let attributes = self
            .attribute_names
            .iter()
            .map(|name| {
                let column = frame.column(name).and_then(|c| c.i64())?;
                Ok(column.into_no_null_iter().map(|v| v as u8).collect::<Vec<u8>>())
            })
            .collect::<PolarsResult<Vec<_>>>()
            .map_err(polars_error)?;

        let mut index: HashMap<(i64, Device), usize> = HashMap::new();
        let mut rows = KeywordRows::new(self.attribute_names.clone());
        let (mut sum_clicks, mut sum_conversions) = (Vec::new(), Vec::new());
        let mut counts = self.counts.clone();
        let iter = entity
            .into_no_null_iter()
            .zip(device.iter().map(Option::unwrap_or_default))
            .zip(clicks.into_no_null_iter());
        for (i, ((entity, device), clicks_i)) in iter.enumerate() {
            if !keep(week.get(i).unwrap_or_default()) {
                continue;
            }
            if clicks_i == 0 {
                counts.zero_clicks_dropped += 1;
                continue;
            }
            let device = Device::parse(device).expect("devices were validated when read");
            let slot = *index.entry((entity, device)).or_insert_with(|| {
                rows.push_valid(entity, device, attributes.iter().map(|column| column[i]));
                sum_clicks.push(0.0);
                sum_conversions.push(0.0);
                sum_clicks.len() - 1
            });
            sum_clicks[slot] += clicks_i as f64;
            sum_conversions[slot] += conversions.get(i).unwrap_or(0) as f64;
            counts.used += 1;
        }
        counts.observations = rows.len() as u64;
        self.counts = counts;
        Ok(Observations { rows, clicks: sum_clicks, conversions: sum_conversions })
    }
}
