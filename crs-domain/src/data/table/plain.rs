//! The shortcut past polars for plain prediction input (see `data::scan`): how
//! the scanner's slots map to the header's columns, and the frame polars would
//! have parsed, built from what the scanner read.

use polars::prelude::*;

use super::plan::{Check, Column};
use crate::data::scan::{Cell, Scanned, scan_plain};
use crate::data::schema::{DEVICE, Device};

/// How the scanner's slots map to a prediction-input chunk's columns.
#[derive(Debug)]
pub(super) struct PlainPlan {
    cells: Vec<Cell>,
    /// Name of each integer slot (`entity_id`, and `week` when present).
    integer_names: Vec<String>,
}

impl PlainPlan {
    pub(super) fn new(header: &[Column], attribute_names: &[String]) -> Self {
        let mut integer_names = Vec::new();
        let cells = header
            .iter()
            .map(|column| match column.check {
                Check::Ignored => Cell::Skip,
                Check::Device => Cell::Device,
                Check::Binary => Cell::Binary(
                    attribute_names.iter().position(|a| *a == column.name).expect("read attributes are in the header"),
                ),
                Check::AnyInteger | Check::NonNegative => {
                    integer_names.push(column.name.clone());
                    Cell::Integer(integer_names.len() - 1)
                }
            })
            .collect();
        PlainPlan { cells, integer_names }
    }

    /// `bytes` (whole records) read by the scanner into the frame polars would
    /// have parsed, or `None` when the scanner gives up or the chunk is empty:
    /// the polars path then reads it.
    pub(super) fn read(&self, bytes: &[u8], projection: &[PlSmallStr]) -> Option<(DataFrame, Vec<Device>)> {
        self.frame(scan_plain(bytes, &self.cells)?, projection)
    }

    /// The frame polars would have parsed (same columns, names and types), or
    /// `None` for an empty chunk, which the polars path handles.
    fn frame(&self, scanned: Scanned, projection: &[PlSmallStr]) -> Option<(DataFrame, Vec<Device>)> {
        if scanned.devices.is_empty() {
            return None;
        }
        let Scanned { integers, binaries, devices } = scanned;
        let mut integers: Vec<Option<Vec<i64>>> = integers.into_iter().map(Some).collect();
        let mut binaries: Vec<Option<Vec<i32>>> = binaries.into_iter().map(Some).collect();
        let mut attribute_slot = 0;
        let columns = projection
            .iter()
            .map(|name| {
                if name.as_str() == DEVICE {
                    let names: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
                    return Some(polars::prelude::Column::new(name.clone(), names));
                }
                if let Some(slot) = self.integer_names.iter().position(|n| n == name.as_str()) {
                    return Some(Int64Chunked::from_vec(name.clone(), integers[slot].take()?).into_column());
                }
                // Attributes come in the projection in slot order.
                let values = binaries.get_mut(attribute_slot)?.take()?;
                attribute_slot += 1;
                Some(Int32Chunked::from_vec(name.clone(), values).into_column())
            })
            .collect::<Option<Vec<_>>>()?;
        let frame = DataFrame::new_infer_height(columns).ok()?;
        Some((frame, devices))
    }
}
