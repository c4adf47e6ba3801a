//! Reads CSV or gzip CSV in the raw schema, chunk by chunk, into validated polars
//! frames. Memory is bounded by the chunk size, whatever the file size.
//!
//! polars parses each chunk with a typed schema (the fast path). When it refuses a
//! chunk, the chunk is read again as text to say which row and column are wrong.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Read};
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;
use polars::prelude::*;

use super::error::{DataError, Problem};
use super::rows::KeywordRows;
use super::scan::{Cell, Scanned, scan_plain};
use super::schema::{
    ATTRIBUTE_PREFIX, CLICKS, CONVERSIONS, DEVICE, Device, ENTITY_ID, TableKind, WEEK, attribute_name, attribute_number,
};

/// Decompressed bytes per chunk. Large enough for polars to parse in parallel,
/// small enough that a chunk's frame stays in the tens of megabytes.
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The longest record (a row, with any quoted line ends) read before a file is
/// refused: memory stays bounded whatever the file holds.
const MAX_RECORD_BYTES: usize = 64 << 20;

/// Which attribute columns to read.
#[derive(Clone, Debug)]
pub enum Attributes {
    /// Every `attN` column in the header, which must run from `att1` without gaps.
    All,
    /// Exactly these (the ones a model needs); others are skipped unparsed.
    Only(Arc<[String]>),
}

/// One validated chunk: typed columns `entity_id`, `device`, the attributes in
/// [`TableReader::attribute_names`] order, then `week`, `Clicks`, `Conversions`
/// where the file kind has them. Attributes are Int64 in training files and Int32
/// in prediction input (see [`keyword_rows`]).
#[derive(Debug)]
pub struct Chunk {
    pub frame: DataFrame,
    /// Data row number of the frame's first row (1 is the line after the header).
    pub first_row: u64,
    pub devices: Vec<Device>,
}

#[derive(Debug)]
struct Column {
    name: String,
    dtype: DataType,
    check: Check,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Check {
    AnyInteger,
    Binary,
    NonNegative,
    Device,
    Ignored,
}

pub struct TableReader {
    file: String,
    input: Box<dyn BufRead + Send>,
    is_gzip: bool,
    header: Vec<Column>,
    schema: SchemaRef,
    /// `schema` with every integer column as Int64: what a chunk the narrow
    /// schema refused is parsed with again, so a value out of the narrow range is
    /// reported by `validate` exactly as it would be had it been parsed wide.
    wide_schema: SchemaRef,
    projection: Arc<[PlSmallStr]>,
    attribute_names: Arc<[String]>,
    ignored_columns: Vec<String>,
    /// The shortcut past polars for plain prediction input (see `scan`).
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
        let names = parse_header(&line);
        if names.iter().all(String::is_empty) {
            return Err(DataError::new(file, Problem::Empty));
        }
        let (header, attribute_names) = plan_columns(file, &names, kind, &attributes)?;

        let schema: Schema = header.iter().map(|c| Field::new(c.name.as_str().into(), c.dtype.clone())).collect();
        let wide_schema: Schema = header
            .iter()
            .map(|c| {
                let dtype = if c.dtype.is_integer() { DataType::Int64 } else { c.dtype.clone() };
                Field::new(c.name.as_str().into(), dtype)
            })
            .collect();
        let mut projection: Vec<PlSmallStr> = vec![ENTITY_ID.into(), DEVICE.into()];
        projection.extend(attribute_names.iter().map(|a| PlSmallStr::from(a.as_str())));
        for name in [WEEK, CLICKS, CONVERSIONS] {
            if header.iter().any(|c| c.name == name && c.check != Check::Ignored) {
                projection.push(name.into());
            }
        }
        let ignored_columns = header.iter().filter(|c| c.check == Check::Ignored).map(|c| c.name.clone()).collect();
        let plain = (kind == TableKind::PredictionInput).then(|| PlainPlan::new(&header, &attribute_names));

        Ok(TableReader {
            file: file.to_owned(),
            input,
            is_gzip,
            header,
            schema: Arc::new(schema),
            wide_schema: Arc::new(wide_schema),
            projection: projection.into(),
            attribute_names,
            ignored_columns,
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
        &self.attribute_names
    }

    /// Header columns outside the contract; they are not read.
    pub fn ignored_columns(&self) -> &[String] {
        &self.ignored_columns
    }

    /// Data rows returned so far.
    pub fn rows_read(&self) -> u64 {
        self.next_row - 1
    }

    /// The next chunk of validated rows, or `None` at the end of the file. A
    /// file with a header and no rows is an error.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, DataError> {
        let Some(bytes) = self.next_chunk_bytes()? else {
            return if self.next_row == 1 { Err(DataError::new(&self.file, Problem::NoRows)) } else { Ok(None) };
        };
        let first_row = self.next_row;
        let scanned =
            self.plain.as_ref().and_then(|plan| plan.frame(scan_plain(&bytes, &plan.cells)?, &self.projection));
        let (frame, devices) = match scanned {
            Some(plain) => plain,
            None => {
                // polars splits a chunk among threads by guessing where lines end, and a
                // very long line (a field of megabytes) can defeat the guess: one thread
                // then reads the chunk whole before anything is called wrong.
                let parsed =
                    self.parse(&bytes, &self.schema, None).or_else(|_| self.parse(&bytes, &self.schema, Some(1)));
                let frame = match parsed {
                    Ok(frame) => frame,
                    Err(error) => return Err(self.diagnose(&bytes, first_row, error)),
                };
                if frame.height() == 0 {
                    return self.next_chunk();
                }
                let devices = self.validate(&frame, first_row)?;
                (frame, devices)
            }
        };
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
                    all.vstack_mut_owned(chunk.frame).map_err(|e| self.polars_error(chunk.first_row, e))?;
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
                    && let Some(opened) = scan(&buf, |_, _| {})
                {
                    let mut rows_before = 0;
                    scan(&buf[..opened], |_, boundary| rows_before += u64::from(boundary == Boundary::Record));
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

    fn parse(&self, bytes: &[u8], schema: &SchemaRef, threads: Option<usize>) -> PolarsResult<DataFrame> {
        CsvReadOptions::default()
            .with_n_threads(threads)
            .with_has_header(false)
            .with_schema(Some(schema.clone()))
            .with_columns(Some(self.projection.clone()))
            .with_raise_if_empty(false)
            .with_rechunk(false)
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
    }

    /// polars refused a chunk: find the first cell (or line) that explains why.
    fn diagnose(&self, bytes: &[u8], first_row: u64, error: PolarsError) -> DataError {
        if self.wide_schema != self.schema
            && let Ok(wide) = self.parse(bytes, &self.wide_schema, Some(1))
            && let Err(e) = self.validate(&wide, first_row)
        {
            return e;
        }
        let text_schema: Schema =
            self.header.iter().map(|c| Field::new(c.name.as_str().into(), DataType::String)).collect();
        if let Ok(text) = self.parse(bytes, &Arc::new(text_schema), Some(1)) {
            let integer_columns = self.header.iter().filter(|c| c.dtype.is_integer());
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
                return DataError::at(&self.file, first_row + row as u64, column, Problem::NotAnInteger(value));
            }
        }
        let expected = self.header.len();
        for (i, fields) in records(bytes).into_iter().enumerate() {
            let row = first_row + i as u64;
            if fields.len() > expected {
                let mut e = DataError::new(&self.file, Problem::RaggedRow { found: fields.len(), expected });
                e.row = Some(row);
                return e;
            }
            if let Some(column) = fields.iter().position(|field| std::str::from_utf8(field).is_err()) {
                return DataError::at(&self.file, row, &self.header[column].name, Problem::NotUtf8);
            }
        }
        self.polars_error(first_row, error)
    }

    fn polars_error(&self, first_row: u64, error: PolarsError) -> DataError {
        DataError::new(&self.file, Problem::Csv { first_row, message: error.to_string() })
    }

    /// Checks every cell against its column's domain and returns the parsed
    /// devices. The error is the first offending row; within it, the first column.
    fn validate(&self, frame: &DataFrame, first_row: u64) -> Result<Vec<Device>, DataError> {
        let mut devices = Vec::with_capacity(frame.height());
        let mut worst: Option<(usize, usize, Problem)> = None;
        for (position, column) in self.header.iter().enumerate() {
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
                Err(DataError::at(&self.file, first_row + row as u64, &self.header[position].name, problem))
            }
        }
    }
}

fn first_bad_integer(values: &polars::prelude::Column, check: Check) -> Option<(usize, Problem)> {
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

fn first_bad_device(values: &polars::prelude::Column, devices: &mut Vec<Device>) -> Option<(usize, Problem)> {
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

/// A read failed: inside gzip data, the data is at fault (a truncated or
/// corrupt file); otherwise the storage under it is.
fn read_error(file: &str, is_gzip: bool, e: std::io::Error) -> DataError {
    use std::io::ErrorKind;
    let problem = match e.kind() {
        ErrorKind::UnexpectedEof if is_gzip => Problem::GzipTruncated,
        ErrorKind::InvalidInput | ErrorKind::InvalidData if is_gzip => Problem::GzipCorrupt(e.to_string()),
        _ => Problem::Unreadable(e),
    };
    DataError::new(file, problem)
}

/// Where the last whole record of `buf` ends: after its last line end outside
/// a quoted field, since a quoted field may hold line ends.
fn last_record_end(buf: &[u8]) -> Option<usize> {
    // Most files quote nothing: one backwards scan.
    if !buf.contains(&b'"') {
        return buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
    }
    let mut end = None;
    scan(buf, |at, boundary| {
        if boundary == Boundary::Record {
            end = Some(at + 1);
        }
    });
    end
}

/// CSV text as records of raw fields, split as polars splits them. For diagnosis only.
fn records(bytes: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut start = 0;
    scan(bytes, |at, boundary| {
        let field = &bytes[start..at];
        start = at + 1;
        match boundary {
            Boundary::Field => fields.push(field),
            Boundary::Record => {
                fields.push(field.strip_suffix(b"\r").unwrap_or(field));
                records.push(std::mem::take(&mut fields));
            }
        }
    });
    if start < bytes.len() {
        fields.push(&bytes[start..]);
        records.push(fields);
    }
    records
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Boundary {
    Field,
    Record,
}

/// Calls `on` at each separator and line end outside quotes, as polars' reader
/// splits: every `"` opens or closes a quoted field. Returns where the quoted
/// field still open at the end began, if one is.
fn scan(bytes: &[u8], mut on: impl FnMut(usize, Boundary)) -> Option<usize> {
    let mut opened = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => opened = if opened.is_some() { None } else { Some(i) },
            b',' if opened.is_none() => on(i, Boundary::Field),
            b'\n' if opened.is_none() => on(i, Boundary::Record),
            _ => {}
        }
    }
    opened
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
    let wanted: std::collections::HashSet<&str> = attribute_names.iter().map(String::as_str).collect();
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

/// How the scanner's slots map to a prediction-input chunk's columns.
#[derive(Debug)]
struct PlainPlan {
    cells: Vec<Cell>,
    /// Name of each integer slot (`entity_id`, and `week` when present).
    integer_names: Vec<String>,
}

impl PlainPlan {
    fn new(header: &[Column], attribute_names: &[String]) -> Self {
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

/// Reads `inner` on a thread of its own, a few blocks ahead of the caller, so
/// that decompressing overlaps parsing. The thread ends when the reader is dropped.
struct ReadAhead {
    blocks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    block: Vec<u8>,
    position: usize,
}

impl ReadAhead {
    const BLOCK_BYTES: usize = 1 << 20;
    const BLOCKS_AHEAD: usize = 4;

    fn new(mut inner: impl Read + Send + 'static) -> std::io::Result<Self> {
        let (tx, blocks) = std::sync::mpsc::sync_channel(Self::BLOCKS_AHEAD);
        let reading = move || {
            loop {
                let mut block = Vec::with_capacity(Self::BLOCK_BYTES);
                match (&mut inner).take(Self::BLOCK_BYTES as u64).read_to_end(&mut block) {
                    // The end of the input: the channel closes.
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.send(Ok(block)).is_err() {
                            return; // the reader was dropped
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        };
        std::thread::Builder::new().name("crs-read-ahead".into()).spawn(reading)?;
        Ok(ReadAhead { blocks, block: Vec::new(), position: 0 })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position == self.block.len() {
            match self.blocks.recv() {
                Ok(block) => (self.block, self.position) = (block?, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.position);
        buf[..n].copy_from_slice(&self.block[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

impl Chunk {
    pub fn entity_ids(&self) -> PolarsResult<&Int64Chunked> {
        self.frame.column(ENTITY_ID)?.i64()
    }

    /// A prediction input chunk's attribute columns in `attribute_names` order,
    /// each in one piece so that [`Int32Chunked::cont_slice`] succeeds.
    pub fn attribute_columns(&self, attribute_names: &[String]) -> PolarsResult<Vec<Int32Chunked>> {
        attribute_names.iter().map(|name| self.frame.column(name)?.i32().map(|c| c.rechunk().into_owned())).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{SynthSpec, write_prediction_input};

    /// Every chunk of `input` read with the scanner and, separately, with polars alone.
    fn both_ways(input: &[u8], attributes: &[&str]) -> [Vec<(DataFrame, Vec<Device>)>; 2] {
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
            std::iter::from_fn(|| reader.next_chunk().unwrap()).map(|c| (c.frame, c.devices)).collect()
        })
    }

    fn assert_same(input: &[u8], attributes: &[&str]) {
        let [scanned, parsed] = both_ways(input, attributes);
        assert_eq!(scanned.len(), parsed.len());
        for ((scanned, scanned_devices), (parsed, parsed_devices)) in scanned.iter().zip(&parsed) {
            assert_eq!(scanned_devices, parsed_devices);
            assert_eq!(scanned.height(), parsed.height());
            for column in parsed.columns() {
                assert_eq!(scanned.column(column.name()).unwrap(), column, "{}", column.name());
            }
            assert_eq!(scanned.width(), parsed.width());
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
    }
}
