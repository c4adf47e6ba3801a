//! The header plan: what a file's header says to read, how each column is typed
//! and checked, and what polars is asked for. Decided once per file, before any
//! row is read, so a wrong header fails at once whatever the file's size.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use polars::prelude::*;

use crate::data::error::{DataError, Problem};
use crate::data::schema::{
    ATTRIBUTE_PREFIX, CLICKS, CONVERSIONS, DEVICE, ENTITY_ID, TableKind, WEEK, attribute_name, attribute_number,
};

/// Which attribute columns to read.
#[derive(Clone, Debug)]
pub enum Attributes {
    /// Every `attN` column in the header, which must run from `att1` without gaps.
    All,
    /// Exactly these (the ones a model needs); others are skipped unparsed.
    Only(Arc<[String]>),
}

#[derive(Debug)]
pub(super) struct Column {
    pub name: String,
    pub dtype: DataType,
    pub check: Check,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Check {
    AnyInteger,
    Binary,
    NonNegative,
    Device,
    Ignored,
}

/// What to read of one file, from its header.
#[derive(Debug)]
pub(super) struct Plan {
    /// Every header column, in file order.
    pub columns: Vec<Column>,
    pub schema: SchemaRef,
    /// `schema` with every integer column as Int64: what a chunk the narrow
    /// schema refused is parsed with again, so a value out of the narrow range is
    /// reported by `validate` exactly as it would be had it been parsed wide.
    pub wide_schema: SchemaRef,
    pub projection: Arc<[PlSmallStr]>,
    /// The attribute columns each chunk carries, in order.
    pub attribute_names: Arc<[String]>,
    /// Header columns outside the contract; they are not read.
    pub ignored_columns: Vec<String>,
}

impl Plan {
    /// Matches the header line to the contract for `kind`.
    pub fn new(file: &str, header_line: &[u8], kind: TableKind, attributes: &Attributes) -> Result<Self, DataError> {
        let names = parse_header(header_line);
        if names.iter().all(String::is_empty) {
            return Err(DataError::new(file, Problem::Empty));
        }
        let (columns, attribute_names) = plan_columns(file, &names, kind, attributes)?;

        let schema: Schema = columns.iter().map(|c| Field::new(c.name.as_str().into(), c.dtype.clone())).collect();
        let wide_schema: Schema = columns
            .iter()
            .map(|c| {
                let dtype = if c.dtype.is_integer() { DataType::Int64 } else { c.dtype.clone() };
                Field::new(c.name.as_str().into(), dtype)
            })
            .collect();
        let mut projection: Vec<PlSmallStr> = vec![ENTITY_ID.into(), DEVICE.into()];
        projection.extend(attribute_names.iter().map(|a| PlSmallStr::from(a.as_str())));
        for name in [WEEK, CLICKS, CONVERSIONS] {
            if columns.iter().any(|c| c.name == name && c.check != Check::Ignored) {
                projection.push(name.into());
            }
        }
        let ignored_columns = columns.iter().filter(|c| c.check == Check::Ignored).map(|c| c.name.clone()).collect();
        Ok(Plan {
            columns,
            schema: Arc::new(schema),
            wide_schema: Arc::new(wide_schema),
            projection: projection.into(),
            attribute_names,
            ignored_columns,
        })
    }

    /// Parses `bytes` (whole records, no header) with `schema`, keeping the
    /// projection's columns.
    pub fn parse(&self, bytes: &[u8], schema: &SchemaRef, threads: Option<usize>) -> PolarsResult<DataFrame> {
        CsvReadOptions::default()
            .with_n_threads(threads)
            .with_has_header(false)
            .with_schema(Some(schema.clone()))
            .with_columns(Some(self.projection.clone()))
            .with_raise_if_empty(false)
            .with_rechunk(false)
            .into_reader_with_file_handle(std::io::Cursor::new(bytes))
            .finish()
    }
}

fn parse_header(line: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start_matches('\u{feff}').trim_end_matches(['\n', '\r']);
    text.split(',').map(|name| name.trim().trim_matches('"').to_owned()).collect()
}

/// Matches the header to the contract: every column's type and check, and the
/// attribute columns to read, in order.
fn plan_columns(
    file: &str,
    names: &[String],
    kind: TableKind,
    attributes: &Attributes,
) -> Result<(Vec<Column>, Arc<[String]>), DataError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if let Some(first) = seen.insert(name, i) {
            return Err(DataError {
                file: file.to_owned(),
                row: None,
                column: Some(name.clone()),
                problem: Problem::DuplicateColumn { first: first + 1, second: i + 1 },
            });
        }
    }

    let required: &[&str] = match kind {
        TableKind::Training => &[ENTITY_ID, DEVICE, WEEK, CLICKS, CONVERSIONS],
        TableKind::PredictionInput => &[ENTITY_ID, DEVICE],
    };
    let mut missing: Vec<String> =
        required.iter().filter(|name| !seen.contains_key(**name)).map(|name| name.to_string()).collect();

    let attribute_names: Arc<[String]> = match attributes {
        Attributes::Only(wanted) => {
            missing.extend(wanted.iter().filter(|a| !seen.contains_key(a.as_str())).cloned());
            wanted.clone()
        }
        Attributes::All => {
            let mut numbers: Vec<u32> = names.iter().filter_map(|n| attribute_number(n)).collect();
            numbers.sort_unstable();
            let Some(&max) = numbers.last() else {
                return Err(DataError::new(file, Problem::NoAttributes));
            };
            // Counted from the header, not walked up to `max`: a header naming
            // att20000000 must not make millions of names (found by fuzzing).
            let gaps = max as usize - numbers.len();
            if gaps > 0 {
                const NAMED: usize = 10;
                let mut present = numbers.iter().peekable();
                let named = (1..=max).filter(|n| {
                    while present.next_if(|&&p| p < *n).is_some() {}
                    present.peek() != Some(&n)
                });
                missing.extend(named.take(NAMED).map(attribute_name));
                if gaps > NAMED {
                    missing.push(format!("and {} more", gaps - NAMED));
                }
                return Err(DataError::new(file, Problem::MissingColumns(missing)));
            }
            (1..=max).map(attribute_name).collect()
        }
    };
    if !missing.is_empty() {
        return Err(DataError::new(file, Problem::MissingColumns(missing)));
    }

    let outcomes_checked = kind == TableKind::Training;
    let wanted: HashSet<&str> = attribute_names.iter().map(String::as_str).collect();
    let header = names
        .iter()
        .map(|name| {
            let check = match name.as_str() {
                ENTITY_ID | WEEK => Check::AnyInteger,
                DEVICE => Check::Device,
                CLICKS | CONVERSIONS if outcomes_checked => Check::NonNegative,
                n if n.starts_with(ATTRIBUTE_PREFIX) && wanted.contains(n) => Check::Binary,
                _ => Check::Ignored,
            };
            // Prediction input attributes are parsed as Int32 (the narrowest type
            // polars' CSV reader has without extra features): half the memory
            // traffic of Int64 in the batch's largest cost. Training callers read
            // attributes as Int64, so training files keep it.
            let dtype = match check {
                Check::Device | Check::Ignored => DataType::String,
                Check::Binary if kind == TableKind::PredictionInput => DataType::Int32,
                _ => DataType::Int64,
            };
            Column { name: name.clone(), dtype, check }
        })
        .collect();
    Ok((header, attribute_names))
}
