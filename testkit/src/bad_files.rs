//! The corpus of broken input files: each case one way a real file goes wrong,
//! built from a valid file, with what training and a batch must do with it.
//! `train-service/tests/bad_files.rs` drives every case through both services;
//! the "Bad input files" table of docs/failure-behaviour.md lists them.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// What a service must do with a case's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Refused: the message names the file and contains every one of these parts.
    Refused(&'static [&'static str]),
    /// Accepted, with the same result as the valid file it was made from.
    Accepted,
}

/// One broken file.
#[derive(Clone, Copy, Debug)]
pub struct BadFile {
    pub name: &'static str,
    pub build: fn(&ValidFile) -> Vec<u8>,
    pub training: Expect,
    pub batch: Expect,
}

/// A valid CSV file as its header and data rows, without line ends.
#[derive(Clone, Debug)]
pub struct ValidFile {
    pub header: String,
    pub rows: Vec<String>,
}

/// Bytes of the field [`BadFile`] `huge_field` puts in a row.
pub const HUGE_FIELD_BYTES: usize = 10 << 20;

/// Refusals of the two services' data contract are the same for both kinds of file.
const NOT_UTF8: &[&str] = &["row 2, column 'device': value is not valid UTF-8 text"];
const HUGE: &[&str] = &["row 2, column 'device': unknown device \"AAAA", "... (10485760 bytes)"];
const EXTRA_FIELD: &[&str] = &["row 2: has ", " fields but the header has "];
const TRUNCATED: &[&str] = &["the gzip data ends early: the file is truncated"];
const CORRUPT: &[&str] = &["the gzip data is corrupt"];
const EMPTY: &[&str] = &["the file is empty"];
const NO_ROWS: &[&str] = &["the file has a header but no data rows"];
const UNCLOSED: &[&str] = &["row 2: a quoted field is never closed"];

/// Every case, in the order docs/failure-behaviour.md lists them.
pub const BAD_FILES: &[BadFile] = &[
    BadFile {
        name: "truncated_gzip",
        build: truncated_gzip,
        training: Expect::Refused(TRUNCATED),
        batch: Expect::Refused(TRUNCATED),
    },
    BadFile {
        name: "corrupt_gzip_body",
        build: corrupt_gzip,
        training: Expect::Refused(CORRUPT),
        batch: Expect::Refused(CORRUPT),
    },
    BadFile {
        name: "gzip_of_empty_file",
        build: |_| gzip(b""),
        training: Expect::Refused(EMPTY),
        batch: Expect::Refused(EMPTY),
    },
    BadFile {
        name: "non_utf8_byte",
        build: non_utf8,
        training: Expect::Refused(NOT_UTF8),
        batch: Expect::Refused(NOT_UTF8),
    },
    BadFile {
        name: "field_of_10_mb",
        build: huge_field,
        training: Expect::Refused(HUGE),
        batch: Expect::Refused(HUGE),
    },
    BadFile { name: "crlf_line_ends", build: |f| f.csv("\r\n"), training: Expect::Accepted, batch: Expect::Accepted },
    BadFile {
        name: "header_only",
        build: header_only,
        training: Expect::Refused(NO_ROWS),
        batch: Expect::Refused(NO_ROWS),
    },
    BadFile { name: "byte_order_mark", build: bom, training: Expect::Accepted, batch: Expect::Accepted },
    BadFile {
        name: "quoted_field_with_comma_and_newline",
        build: quoted_field,
        training: Expect::Accepted,
        batch: Expect::Accepted,
    },
    BadFile {
        name: "quote_never_closed",
        build: |f| f.with_device_of_row_2(b"Tab\"let"),
        training: Expect::Refused(UNCLOSED),
        batch: Expect::Refused(UNCLOSED),
    },
    BadFile {
        name: "more_fields_than_header",
        build: extra_field,
        training: Expect::Refused(EXTRA_FIELD),
        batch: Expect::Refused(EXTRA_FIELD),
    },
    BadFile {
        name: "zero_bytes",
        build: |_| Vec::new(),
        training: Expect::Refused(EMPTY),
        batch: Expect::Refused(EMPTY),
    },
];

impl ValidFile {
    /// The header and the first `rows` data rows of CSV text.
    pub fn first_rows(text: &str, rows: usize) -> Self {
        let mut lines = text.lines().map(str::to_owned);
        let header = lines.next().expect("a header");
        ValidFile { header, rows: lines.take(rows).collect() }
    }

    /// The file with `line_end` after every line.
    pub fn csv(&self, line_end: &str) -> Vec<u8> {
        let mut text = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            text.push_str(line);
            text.push_str(line_end);
        }
        text.into_bytes()
    }

    fn device_position(&self) -> usize {
        self.header.split(',').position(|c| c == "device").expect("a device column")
    }

    /// The file with the device of data row 2 (1 is the first) replaced by `device`.
    fn with_device_of_row_2(&self, device: &[u8]) -> Vec<u8> {
        let position = self.device_position();
        let mut out = Vec::new();
        for (i, line) in std::iter::once(&self.header).chain(&self.rows).enumerate() {
            for (j, field) in line.split(',').enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(if i == 2 && j == position { device } else { field.as_bytes() });
            }
            out.push(b'\n');
        }
        out
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn truncated_gzip(file: &ValidFile) -> Vec<u8> {
    let mut bytes = gzip(&file.csv("\n"));
    bytes.truncate(bytes.len() / 2);
    bytes
}

/// The header stays readable; bytes in the middle of the deflate stream do not.
fn corrupt_gzip(file: &ValidFile) -> Vec<u8> {
    let mut bytes = gzip(&file.csv("\n"));
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0x5a;
    }
    bytes
}

fn non_utf8(file: &ValidFile) -> Vec<u8> {
    file.with_device_of_row_2(b"Comp\xffuter")
}

fn huge_field(file: &ValidFile) -> Vec<u8> {
    file.with_device_of_row_2(&vec![b'A'; HUGE_FIELD_BYTES])
}

fn header_only(file: &ValidFile) -> Vec<u8> {
    ValidFile { header: file.header.clone(), rows: Vec::new() }.csv("\n")
}

fn bom(file: &ValidFile) -> Vec<u8> {
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend(file.csv("\n"));
    bytes
}

/// An extra column (ignored by the contract) whose values are quoted and hold a
/// comma and a line end.
fn quoted_field(file: &ValidFile) -> Vec<u8> {
    let rows = file.rows.iter().enumerate().map(|(i, row)| format!("{row},\"note {i}, first line\nsecond line\""));
    ValidFile { header: format!("{},note", file.header), rows: rows.collect() }.csv("\n")
}

fn extra_field(file: &ValidFile) -> Vec<u8> {
    let mut rows = file.rows.clone();
    rows[1].push_str(",1");
    ValidFile { header: file.header.clone(), rows }.csv("\n")
}
