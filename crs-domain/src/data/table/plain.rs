//! The shortcut past polars for plain prediction input (see `data::scan`): how
//! the scanner's cells map to the header's columns, and the model rows it reads.

use std::sync::Arc;

use super::plan::{Check, Column};
use crate::data::rows::KeywordRows;
use crate::data::scan::{Cell, Scanned, Scanner};
use crate::data::schema::ENTITY_ID;

/// The scanner for one prediction-input header.
#[derive(Debug)]
pub(super) struct PlainPlan {
    scanner: Scanner,
    attribute_names: Arc<[String]>,
}

impl PlainPlan {
    pub(super) fn new(header: &[Column], attribute_names: &Arc<[String]>) -> Self {
        let cells = header
            .iter()
            .map(|column| match column.check {
                Check::Ignored => Cell::Skip,
                Check::Device => Cell::Device,
                Check::Binary => Cell::Binary(
                    attribute_names.iter().position(|a| *a == column.name).expect("read attributes are in the header"),
                ),
                Check::AnyInteger | Check::NonNegative if column.name == ENTITY_ID => Cell::EntityId,
                Check::AnyInteger | Check::NonNegative => Cell::Integer,
            })
            .collect();
        PlainPlan { scanner: Scanner::new(cells, attribute_names.len()), attribute_names: attribute_names.clone() }
    }

    /// `bytes` (whole records) read by the scanner into model rows, or `None`
    /// when the scanner gives up or the chunk has no rows: the polars path then
    /// reads it.
    pub(super) fn read(&self, bytes: &[u8]) -> Option<KeywordRows> {
        let Scanned { entity_ids, devices, attributes } = self.scanner.scan(bytes)?;
        Some(KeywordRows::from_valid_parts(entity_ids, devices, self.attribute_names.clone(), attributes))
    }
}
