//! Helpers shared by the contract tests: small handmade CSVs, synthetic data and
//! the training path `crctl evaluate` takes.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{Cursor, Write};

use crs_domain::data::synth::{SynthSpec, write_training};
use crs_domain::data::{DataError, Observations, TrainingTable};
use flate2::Compression;
use flate2::write::GzEncoder;

/// The training-schema header with three attributes.
pub const HEADER: &str = "entity_id,att1,att2,att3,device,week,Clicks,Conversions";

/// A training file: [`HEADER`] then `rows`, each line ended by a newline.
pub fn csv(rows: &[&str]) -> String {
    csv_with(HEADER, rows)
}

pub fn csv_with(header: &str, rows: &[&str]) -> String {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

pub fn read(file: &str, text: &str) -> Result<TrainingTable, DataError> {
    TrainingTable::read(file, Cursor::new(text.as_bytes().to_vec()))
}

/// The message of the error reading `text` gives; panics if it reads.
pub fn read_error(file: &str, text: &str) -> String {
    match read(file, text) {
        Ok(table) => panic!("expected {file} to be refused, it read {} rows:\n{text}", table.counts.read),
        Err(e) => e.to_string(),
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("in-memory write");
    encoder.finish().expect("in-memory write")
}

/// Synthetic training-schema CSV for keywords `first_entity..first_entity + keywords`.
pub fn synth_csv(first_entity: i64, keywords: usize, attributes: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_training(&SynthSpec { first_entity, keywords, attributes, seed }, &mut out).expect("in-memory write");
    out
}

pub fn observations(file: &str, bytes: Vec<u8>) -> Observations {
    let mut table = TrainingTable::read(file, Cursor::new(bytes)).expect("valid data");
    table.observations().expect("observations")
}
