//! [`TableReader`]: opens a file (gzip or not), cuts it into chunks of whole
//! records, and turns each into a validated frame, by the scanner's shortcut
//! or by polars.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;
use polars::prelude::*;

use super::chunk::{Chunk, keyword_rows};
use super::diagnose::{diagnose, polars_error, read_error, validate};
use super::plain::PlainPlan;
use super::plan::{Attributes, Plan};
use super::read_ahead::ReadAhead;
use super::records::{Boundary, for_each_boundary, last_record_end};
use crate::data::error::{DataError, Problem};
use crate::data::rows::KeywordRows;
use crate::data::schema::{Device, TableKind};

/// Decompressed bytes per chunk. Large enough for polars to parse in parallel,
/// small enough that a chunk's frame stays in the tens of megabytes.
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The longest record (a row, with any quoted line ends) read before a file is
/// refused: memory stays bounded whatever the file holds.
const MAX_RECORD_BYTES: usize = 64 << 20;

pub struct TableReader {
    file: String,
    input: Box<dyn BufRead + Send>,
    is_gzip: bool,
    plan: Plan,
    /// The shortcut past polars for plain prediction input (see `plain`).
    plain: Option<PlainPlan>,
    carry: Vec<u8>,
    next_row: u64,
    chunk_bytes: usize,
    at_eof: bool,
}

impl std::fmt::Debug for TableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReader").field("file", &self.file).field("next_row", &self.next_row).finish()
    }
}

impl TableReader {
    /// Opens `input` (CSV, or gzip CSV recognised by its magic bytes whatever the
    /// file is called) and checks its header against the contract for `kind`.
    /// `file` names the source in every error.
    pub fn open(
        file: &str,
        input: impl Read + Send + 'static,
        kind: TableKind,
        attributes: Attributes,
    ) -> Result<Self, DataError> {
        let unreadable = |e| DataError::new(file, Problem::Unreadable(e));
        let mut raw = BufReader::with_capacity(256 << 10, input);
        let is_gzip = raw.fill_buf().map_err(unreadable)?.starts_with(&GZIP_MAGIC);
        let mut input: Box<dyn BufRead + Send> = if is_gzip {
            Box::new(BufReader::with_capacity(256 << 10, ReadAhead::new(MultiGzDecoder::new(raw)).map_err(unreadable)?))
        } else {
            Box::new(raw)
        };

        let mut line = Vec::new();
        input.read_until(b'\n', &mut line).map_err(|e| read_error(file, is_gzip, e))?;
        let plan = Plan::new(file, &line, kind, &attributes)?;
        let plain = (kind == TableKind::PredictionInput).then(|| PlainPlan::new(&plan.columns, &plan.attribute_names));

        Ok(TableReader {
            file: file.to_owned(),
            input,
            is_gzip,
            plan,
            plain,
            carry: Vec::new(),
            next_row: 1,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            at_eof: false,
        })
    }

    pub fn with_chunk_bytes(mut self, chunk_bytes: usize) -> Self {
        self.chunk_bytes = chunk_bytes.max(1);
        self
    }

    /// The attribute columns each chunk carries, in order.
    pub fn attribute_names(&self) -> &Arc<[String]> {
        &self.plan.attribute_names
    }

    /// Header columns outside the contract; they are not read.
    pub fn ignored_columns(&self) -> &[String] {
        &self.plan.ignored_columns
    }

    /// Data rows returned so far.
    pub fn rows_read(&self) -> u64 {
        self.next_row - 1
    }

    /// The next chunk of validated rows, or `None` at the end of the file. A
    /// file with a header and no rows is an error.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, DataError> {
        loop {
            let Some(bytes) = self.next_chunk_bytes()? else { return self.at_end() };
            if let Some(chunk) = self.parse(&bytes)? {
                return Ok(Some(chunk));
            }
        }
    }

    /// The next chunk of prediction input as model rows (the attributes in
    /// [`Self::attribute_names`] order), or `None` at the end of the file: what
    /// [`Self::next_chunk`] and [`keyword_rows`] give, read straight from the
    /// text when the chunk is plain (see `data::scan`), through polars otherwise.
    pub fn next_rows(&mut self) -> Result<Option<KeywordRows>, DataError> {
        loop {
            let Some(bytes) = self.next_chunk_bytes()? else { return self.at_end() };
            if let Some(rows) = self.plain.as_ref().and_then(|plain| plain.read(&bytes)) {
                self.next_row += rows.len() as u64;
                return Ok(Some(rows));
            }
            let first_row = self.next_row;
            if let Some(chunk) = self.parse(&bytes)? {
                return keyword_rows(chunk, &self.plan.attribute_names)
                    .map(Some)
                    .map_err(|e| polars_error(&self.file, first_row, e));
            }
        }
    }

    /// The end of the input: a file with a header and no rows is an error.
    fn at_end<T>(&self) -> Result<Option<T>, DataError> {
        if self.next_row == 1 { Err(DataError::new(&self.file, Problem::NoRows)) } else { Ok(None) }
    }

    /// `bytes` (whole records) parsed by polars and validated, or `None` when
    /// they hold no rows.
    fn parse(&mut self, bytes: &[u8]) -> Result<Option<Chunk>, DataError> {
        let first_row = self.next_row;
        let plan = &self.plan;
        // polars splits a chunk among threads by guessing where lines end, and a
        // very long line (a field of megabytes) can defeat the guess: one thread
        // then reads the chunk whole before anything is called wrong.
        let parsed = plan.parse(bytes, &plan.schema, None).or_else(|_| plan.parse(bytes, &plan.schema, Some(1)));
        let frame = match parsed {
            Ok(frame) => frame,
            Err(error) => return Err(diagnose(&self.file, plan, bytes, first_row, error)),
        };
        if frame.height() == 0 {
            return Ok(None);
        }
        let devices = validate(&self.file, plan, &frame, first_row)?;
        self.next_row += frame.height() as u64;
        Ok(Some(Chunk { frame, first_row, devices }))
    }

    /// Reads every remaining chunk into one frame (for files that fit in memory).
    pub fn read_all(mut self) -> Result<(DataFrame, Vec<Device>, TableReader), DataError> {
        let mut frame: Option<DataFrame> = None;
        let mut devices = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            devices.extend(chunk.devices);
            match frame.as_mut() {
                None => frame = Some(chunk.frame),
                Some(all) => {
                    all.vstack_mut_owned(chunk.frame).map_err(|e| polars_error(&self.file, chunk.first_row, e))?;
                }
            }
        }
        let mut frame = frame.ok_or_else(|| DataError::new(&self.file, Problem::NoRows))?;
        frame.rechunk_mut();
        Ok((frame, devices, self))
    }

    /// Whole records up to about `chunk_bytes`, or `None` once the input is used up.
    fn next_chunk_bytes(&mut self) -> Result<Option<Vec<u8>>, DataError> {
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            if !self.at_eof && buf.len() < self.chunk_bytes {
                let want = (self.chunk_bytes - buf.len()) as u64;
                let got = (&mut self.input)
                    .take(want)
                    .read_to_end(&mut buf)
                    .map_err(|e| read_error(&self.file, self.is_gzip, e))?;
                self.at_eof = got == 0;
                if !self.at_eof {
                    continue;
                }
            }
            if self.at_eof {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                // polars would read the rest of the file into that one field.
                if buf.contains(&b'"')
                    && let Some(opened) = for_each_boundary(&buf, |_, _| {})
                {
                    let mut rows_before = 0;
                    for_each_boundary(&buf[..opened], |_, boundary| {
                        rows_before += u64::from(boundary == Boundary::Record)
                    });
                    let mut e = DataError::new(&self.file, Problem::UnclosedQuote);
                    e.row = Some(self.next_row + rows_before);
                    return Err(e);
                }
                return Ok(Some(buf));
            }
            // A full buffer: cut after its last whole record; a record longer
            // than the buffer makes it grow until the record ends.
            match last_record_end(&buf) {
                Some(end) => {
                    self.carry = buf.split_off(end);
                    return Ok(Some(buf));
                }
                // An unclosed quote would otherwise make the rest of the file one record.
                None if buf.len() >= MAX_RECORD_BYTES => {
                    let problem = Problem::RecordTooLong { limit: MAX_RECORD_BYTES };
                    let mut e = DataError::new(&self.file, problem);
                    e.row = Some(self.next_row);
                    return Err(e);
                }
                None => self.chunk_bytes *= 2,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::data::synth::{SynthSpec, write_prediction_input};

    /// Every chunk of `input` read as model rows with the scanner and, separately, with polars alone.
    fn both_ways(input: &[u8], attributes: &[&str]) -> [Vec<KeywordRows>; 2] {
        let wanted: Arc<[String]> = attributes.iter().map(|a| a.to_string()).collect();
        [true, false].map(|shortcut| {
            let mut reader = TableReader::open(
                "input.csv",
                Cursor::new(input.to_vec()),
                TableKind::PredictionInput,
                Attributes::Only(wanted.clone()),
            )
            .unwrap()
            .with_chunk_bytes(700);
            if !shortcut {
                reader.plain = None;
            }
            let rows: Vec<KeywordRows> = std::iter::from_fn(|| reader.next_rows().unwrap()).collect();
            assert_eq!(reader.rows_read(), rows.iter().map(|r| r.len() as u64).sum::<u64>());
            rows
        })
    }

    fn assert_same(input: &[u8], attributes: &[&str]) {
        let [scanned, parsed] = both_ways(input, attributes);
        assert_eq!(scanned.len(), parsed.len());
        for (scanned, parsed) in scanned.iter().zip(&parsed) {
            assert_eq!(scanned.entity_id, parsed.entity_id);
            assert_eq!(scanned.device, parsed.device);
            assert_eq!(scanned.attribute_names(), parsed.attribute_names());
            assert_eq!(scanned.attribute_names(), attributes);
            for row in 0..parsed.len() {
                assert_eq!(scanned.attributes(row), parsed.attributes(row), "row {row}");
            }
        }
    }

    #[test]
    fn the_scanner_reads_what_polars_reads() {
        let mut generated = Vec::new();
        let spec = SynthSpec { first_entity: 1, keywords: 40, attributes: 9, seed: 5 };
        write_prediction_input(&spec, &mut generated).unwrap();
        assert_same(&generated, &["att2", "att9", "att1"]);

        let odd = "entity_id,att1,note,device,att2,week\n\
                   007,1,free text; with: punctuation,Tablet,0,-0\n\
                   -9223372036854775808,0,,Computer,1,12\n\
                   9223372036854775807,1,x,Smartphone,1,13";
        assert_same(odd.as_bytes(), &["att2", "att1"]);

        // One-byte columns in a run, some of them holding longer text in places.
        let header =
            format!("entity_id,{},device,week\n", (1..=12).map(|i| format!("att{i}")).collect::<Vec<_>>().join(","));
        let rows = "1,0,1,1,0,0,1,0,1,1,1,0,0,Tablet,3\n\
                    2,1,0,0,1,1,0,1,0,0,0,1,1,Computer,3\n\
                    3,1,0,xyz,1,1,0,1,,0,0,1,1,Smartphone,3\n";
        assert_same(format!("{header}{rows}").as_bytes(), &["att12", "att1", "att5", "att2"]);
    }

    #[test]
    fn model_rows_keep_the_row_numbers_of_errors() {
        let text = "entity_id,att1,att2,device\n1,0,1,Computer\n2,1,0,Tablet\n3,1,2,Tablet\n";
        let wanted: Arc<[String]> = vec!["att2".to_owned()].into();
        let mut reader = TableReader::open(
            "p.csv",
            Cursor::new(text.as_bytes().to_vec()),
            TableKind::PredictionInput,
            Attributes::Only(wanted),
        )
        .unwrap()
        .with_chunk_bytes(20);
        let first = reader.next_rows().unwrap().unwrap();
        assert_eq!((first.entity_id.as_slice(), first.attributes(0)), (&[1][..], &[1][..]));
        let mut rows_before_the_error = 1;
        let err = loop {
            match reader.next_rows() {
                Ok(Some(rows)) => rows_before_the_error += rows.len(),
                Ok(None) => panic!("the bad row was accepted"),
                Err(e) => break e,
            }
        };
        assert_eq!(rows_before_the_error, 2);
        assert_eq!(err.to_string(), "p.csv: row 3, column 'att2': expected 0 or 1, found 2");
    }
}
