//! What [`TableReader`](super::TableReader) hands out, and the model input rows
//! a chunk becomes: the one conversion both online and batch prediction use.

use std::sync::Arc;

use polars::prelude::*;

use crate::data::rows::KeywordRows;
use crate::data::schema::{Device, ENTITY_ID};

/// One validated chunk: typed columns `entity_id`, `device`, the attributes in
/// [`TableReader::attribute_names`](super::TableReader::attribute_names) order,
/// then `week`, `Clicks`, `Conversions` where the file kind has them. Attributes
/// are Int64 in training files and Int32 in prediction input.
#[derive(Debug)]
pub struct Chunk {
    pub frame: DataFrame,
    /// Data row number of the frame's first row (1 is the line after the header).
    pub first_row: u64,
    pub devices: Vec<Device>,
}

impl Chunk {
    pub fn entity_ids(&self) -> PolarsResult<&Int64Chunked> {
        self.frame.column(ENTITY_ID)?.i64()
    }

    /// The attribute columns in `attribute_names` order as Int32 (validated
    /// values are 0 or 1 whatever their parsed type), each in one piece so that
    /// [`Int32Chunked::cont_slice`] succeeds.
    fn attribute_columns(&self, attribute_names: &[String]) -> PolarsResult<Vec<Int32Chunked>> {
        attribute_names
            .iter()
            .map(|name| Ok(self.frame.column(name)?.cast(&DataType::Int32)?.i32()?.rechunk().into_owned()))
            .collect()
    }
}

/// Builds model input rows from a validated chunk.
pub fn keyword_rows(chunk: Chunk, attribute_names: &Arc<[String]>) -> PolarsResult<KeywordRows> {
    let entity_id = chunk.entity_ids()?;
    let width = attribute_names.len();
    let height = chunk.frame.height();
    let columns = chunk.attribute_columns(attribute_names)?;
    let slices = columns.iter().map(|c| c.cont_slice()).collect::<PolarsResult<Vec<&[i32]>>>()?;
    // Written row by row, reading every column in step: sequential on both sides.
    let mut values = Vec::with_capacity(height * width);
    for i in 0..height {
        values.extend(slices.iter().map(|column| column[i] as u8));
    }
    Ok(KeywordRows::from_valid_parts(
        entity_id.into_no_null_iter().collect(),
        chunk.devices,
        attribute_names.clone(),
        values,
    ))
}
