//! The CSV/gzip reader on arbitrary bytes, as training (whole file) and as a
//! batch (small chunks) read it: it may refuse them, never panic or hang.

#![no_main]

use std::io::Cursor;

use crs_domain::data::{Attributes, TableKind, TableReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let kind = if mode & 1 == 0 { TableKind::Training } else { TableKind::PredictionInput };
    let chunk_bytes = 1 + usize::from(mode >> 1) * 16;
    let Ok(reader) = TableReader::open("fuzz.csv", Cursor::new(bytes.to_vec()), kind, Attributes::All) else { return };
    let mut reader = reader.with_chunk_bytes(chunk_bytes);
    while let Ok(Some(_)) = reader.next_chunk() {}
});
