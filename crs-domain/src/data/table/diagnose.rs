//! Which row and column a chunk breaks the contract at, so that every error
//! names them: the checks on each chunk polars parsed, and, when polars refused
//! a chunk, a second reading that finds the cell (or line) to blame.

use std::sync::Arc;

use polars::prelude::*;

use super::plan::{Check, Plan};
use super::records::split_records;
use crate::data::error::{DataError, Problem};
use crate::data::schema::Device;

/// Checks every cell against its column's domain and returns the parsed
/// devices. The error is the first offending row; within it, the first column.
pub(super) fn validate(file: &str, plan: &Plan, frame: &DataFrame, first_row: u64) -> Result<Vec<Device>, DataError> {
    let mut devices = Vec::with_capacity(frame.height());
    let mut worst: Option<(usize, usize, Problem)> = None;
    for (position, column) in plan.columns.iter().enumerate() {
        if column.check == Check::Ignored {
            continue;
        }
        let Ok(values) = frame.column(&column.name) else { continue };
        let found = match column.check {
            Check::Device => first_bad_device(values, &mut devices),
            check => first_bad_integer(values, check),
        };
        if let Some((row, problem)) = found
            && worst.as_ref().is_none_or(|(r, p, _)| (row, position) < (*r, *p))
        {
            worst = Some((row, position, problem));
        }
    }
    match worst {
        None => Ok(devices),
        Some((row, position, problem)) => {
            Err(DataError::at(file, first_row + row as u64, &plan.columns[position].name, problem))
        }
    }
}

/// polars refused a chunk: find the first cell (or line) that explains why.
pub(super) fn diagnose(file: &str, plan: &Plan, bytes: &[u8], first_row: u64, error: PolarsError) -> DataError {
    if plan.wide_schema != plan.schema
        && let Ok(wide) = plan.parse(bytes, &plan.wide_schema, Some(1))
        && let Err(e) = validate(file, plan, &wide, first_row)
    {
        return e;
    }
    let text_schema: Schema =
        plan.columns.iter().map(|c| Field::new(c.name.as_str().into(), DataType::String)).collect();
    if let Ok(text) = plan.parse(bytes, &Arc::new(text_schema), Some(1)) {
        let integer_columns = plan.columns.iter().filter(|c| c.dtype.is_integer());
        let first_bad = integer_columns
            .filter_map(|c| {
                let values = text.column(&c.name).ok()?.str().ok()?;
                let (row, value) = values
                    .iter()
                    .enumerate()
                    .find_map(|(i, v)| v.filter(|v| v.parse::<i64>().is_err()).map(|v| (i, v)))?;
                Some((row, c.name.as_str(), value.to_owned()))
            })
            .min_by_key(|(row, _, _)| *row);
        if let Some((row, column, value)) = first_bad {
            return DataError::at(file, first_row + row as u64, column, Problem::NotAnInteger(value));
        }
    }
    let expected = plan.columns.len();
    for (i, fields) in split_records(bytes).into_iter().enumerate() {
        let row = first_row + i as u64;
        if fields.len() > expected {
            let mut e = DataError::new(file, Problem::RaggedRow { found: fields.len(), expected });
            e.row = Some(row);
            return e;
        }
        if let Some(column) = fields.iter().position(|field| std::str::from_utf8(field).is_err()) {
            return DataError::at(file, row, &plan.columns[column].name, Problem::NotUtf8);
        }
    }
    polars_error(file, first_row, error)
}

/// A polars error no check explains, with the first row of the chunk it came from.
pub(super) fn polars_error(file: &str, first_row: u64, error: PolarsError) -> DataError {
    DataError::new(file, Problem::Csv { first_row, message: error.to_string() })
}

/// A read failed: inside gzip data, the data is at fault (a truncated or
/// corrupt file); otherwise the storage under it is.
pub(super) fn read_error(file: &str, is_gzip: bool, e: std::io::Error) -> DataError {
    use std::io::ErrorKind;
    let problem = match e.kind() {
        ErrorKind::UnexpectedEof if is_gzip => Problem::GzipTruncated,
        ErrorKind::InvalidInput | ErrorKind::InvalidData if is_gzip => Problem::GzipCorrupt(e.to_string()),
        _ => Problem::Unreadable(e),
    };
    DataError::new(file, problem)
}

fn first_bad_integer(values: &Column, check: Check) -> Option<(usize, Problem)> {
    match values.dtype() {
        DataType::Int32 => first_bad_value(values.i32().ok()?, check),
        _ => first_bad_value(values.i64().ok()?, check),
    }
}

fn first_bad_value<T>(values: &ChunkedArray<T>, check: Check) -> Option<(usize, Problem)>
where
    T: PolarsIntegerType,
    T::Native: Into<i64>,
{
    let missing = (values.null_count() > 0)
        .then(|| values.iter().position(|v| v.is_none()).map(|i| (i, Problem::MissingValue)))
        .flatten();
    // The common case, no nulls, runs as a tight loop over the values.
    // Null slots hold arbitrary values: a hit there is not a bad value (the null is reported).
    let bad = match check {
        Check::Binary => values.into_no_null_iter().position(|v| Into::<i64>::into(v) as u64 > 1),
        Check::NonNegative => values.into_no_null_iter().position(|v| Into::<i64>::into(v) < 0),
        _ => None,
    }
    .and_then(|i| values.get(i).map(|v| (i, Into::<i64>::into(v))))
    .map(|(i, v)| (i, if check == Check::Binary { Problem::NotBinary(v) } else { Problem::Negative(v) }));
    match (missing, bad) {
        (Some(m), Some(b)) => Some(if m.0 < b.0 { m } else { b }),
        (m, b) => m.or(b),
    }
}

fn first_bad_device(values: &Column, devices: &mut Vec<Device>) -> Option<(usize, Problem)> {
    let Ok(values) = values.str() else {
        return Some((0, Problem::MissingValue));
    };
    for (i, v) in values.iter().enumerate() {
        match v.map(|name| (name, Device::parse(name))) {
            None => return Some((i, Problem::MissingValue)),
            Some((name, None)) => return Some((i, Problem::UnknownDevice(name.to_owned()))),
            Some((_, Some(device))) => devices.push(device),
        }
    }
    None
}
