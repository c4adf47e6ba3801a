//! Errors of the data contract. Each one says which file, and where it can, which
//! data row (1 is the first line after the header) and which column.

use std::fmt;

use super::schema::Device;

#[derive(Debug)]
pub struct DataError {
    pub file: String,
    pub row: Option<u64>,
    pub column: Option<String>,
    pub problem: Problem,
}

impl DataError {
    pub fn new(file: &str, problem: Problem) -> Self {
        DataError { file: file.to_owned(), row: None, column: None, problem }
    }

    pub fn at(file: &str, row: u64, column: &str, problem: Problem) -> Self {
        DataError { file: file.to_owned(), row: Some(row), column: Some(column.to_owned()), problem }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        match (&self.row, &self.column) {
            (Some(row), Some(column)) => write!(f, ": row {row}, column '{column}'")?,
            (Some(row), None) => write!(f, ": row {row}")?,
            (None, Some(column)) => write!(f, ": column '{column}'")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            Problem::Unreadable(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("the file is empty")]
    Empty,
    #[error("the file has a header but no data rows")]
    NoRows,
    #[error("missing required column(s): {}", .0.join(", "))]
    MissingColumns(Vec<String>),
    #[error("no attribute columns (att1, att2, ...)")]
    NoAttributes,
    #[error("column appears twice in the header (positions {first} and {second})")]
    DuplicateColumn { first: usize, second: usize },
    #[error("value is missing")]
    MissingValue,
    #[error("expected an integer, found {}", Shown(.0))]
    NotAnInteger(String),
    #[error("expected 0 or 1, found {0}")]
    NotBinary(i64),
    #[error("unknown device {} (expected {expected})", Shown(.0), expected = Device::expected_names())]
    UnknownDevice(String),
    #[error("value is not valid UTF-8 text")]
    NotUtf8,
    #[error("must not be negative, found {0}")]
    Negative(i64),
    #[error("has {found} fields but the header has {expected}")]
    RaggedRow { found: usize, expected: usize },
    #[error("a quoted field is never closed")]
    UnclosedQuote,
    #[error("is longer than {} MiB (an unclosed quote?)", .limit >> 20)]
    RecordTooLong { limit: usize },
    #[error("invalid CSV at or after row {first_row}: {}", Cut(.message))]
    Csv { first_row: u64, message: String },
    #[error("has attribute columns {found}, but the ingested data has {expected}")]
    OtherAttributes { found: String, expected: String },
    #[error("has {found} week(s); holding out the newest needs at least {needed}")]
    TooFewWeeks { found: usize, needed: usize },
    #[error("the gzip data ends early: the file is truncated")]
    GzipTruncated,
    #[error("the gzip data is corrupt ({0})")]
    GzipCorrupt(String),
    #[error("could not be read: {0}")]
    Unreadable(#[source] std::io::Error),
}

/// A value from a file as an error shows it: quoted, and cut short, because a
/// field can be megabytes long and the message goes into gRPC statuses, job
/// records and webhooks.
struct Shown<'a>(&'a str);

/// Text quoting a file (a CSV parser's message), cut short like [`Shown`].
struct Cut<'a>(&'a str);

/// `text` cut to `chars`, and its full length in bytes when it was cut.
fn cut(text: &str, chars: usize) -> (&str, Option<usize>) {
    match text.char_indices().nth(chars) {
        None => (text, None),
        Some((end, _)) => (&text[..end], Some(text.len())),
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match cut(self.0, 40) {
            (text, None) => write!(f, "{text:?}"),
            (text, Some(bytes)) => write!(f, "{text:?}... ({bytes} bytes)"),
        }
    }
}

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match cut(self.0, 300) {
            (text, None) => write!(f, "{text}"),
            (text, Some(bytes)) => write!(f, "{text}... ({bytes} bytes)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_file_row_and_column() {
        let e = DataError::at("data/train.csv", 17, "Clicks", Problem::Negative(-3));
        assert_eq!(e.to_string(), "data/train.csv: row 17, column 'Clicks': must not be negative, found -3");
        let e = DataError::new("in.csv", Problem::MissingColumns(vec!["week".into(), "Clicks".into()]));
        assert_eq!(e.to_string(), "in.csv: missing required column(s): week, Clicks");
    }

    #[test]
    fn long_values_are_cut_short() {
        let e = DataError::at("in.csv", 2, "device", Problem::UnknownDevice("x".repeat(10 << 20)));
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "in.csv: row 2, column 'device': unknown device \"{}\"... (10485760 bytes)",
                "x".repeat(40)
            )),
            "{text}"
        );
        assert!(text.len() < 200, "{}", text.len());
        let e = DataError::at("in.csv", 2, "week", Problem::NotAnInteger("abc".into()));
        assert_eq!(e.to_string(), "in.csv: row 2, column 'week': expected an integer, found \"abc\"");
    }
}
