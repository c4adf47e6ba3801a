//! New raw files added to what has been ingested: validated whole by the data
//! contract, then only rows not seen before are kept, one per
//! `(entity_id, device, week)`.
//!
//! A row whose key was seen before with the same values is a duplicate; with
//! other values it is a conflict, and the first one seen stays. What is kept is
//! written back as CSV in the training schema, so that training reads ingested
//! data with the same reader and contract as any training file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Cursor;
use std::sync::Arc;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{DataError, Problem};
use super::prepare::DataFile;
use super::schema::{CLICKS, CONVERSIONS, DEVICE, Device, ENTITY_ID, TableKind, WEEK};
use super::table::{Attributes, TableReader};

/// What ingesting one file did with its rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestCounts {
    /// Data rows in the file.
    pub read: u64,
    /// Rows whose key and values were already ingested (or came earlier in the file).
    pub duplicate: u64,
    /// Rows whose key was already ingested with other values: the first stays.
    pub conflict: u64,
    /// Rows added.
    pub used: u64,
}

/// The rows already ingested, by key, with a fingerprint of their values.
#[derive(Clone, Debug, Default)]
pub struct SeenRows {
    rows: HashMap<(i64, Device, i64), u64>,
    /// The attribute columns of everything ingested; every file must have the same.
    attribute_names: Option<Arc<[String]>>,
}

impl SeenRows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn attribute_names(&self) -> Option<&Arc<[String]>> {
        self.attribute_names.as_ref()
    }
}

/// The rows of one file that were new.
#[derive(Clone, Debug)]
pub struct NewRows {
    /// CSV in the training schema (header included), only the rows kept.
    pub csv: Vec<u8>,
    pub counts: IngestCounts,
    /// Weeks of the rows read, sorted.
    pub weeks: Vec<i64>,
}

/// Validates `file` whole and returns the rows not in `seen`, adding them to
/// it. A file that breaks the contract changes nothing and is refused with the
/// data contract's message (file, row, column).
pub fn ingest(file: &DataFile, seen: &mut SeenRows) -> Result<NewRows, DataError> {
    let reader = TableReader::open(&file.name, Cursor::new(file.bytes.clone()), TableKind::Training, Attributes::All)?;
    let names = reader.attribute_names().clone();
    if let Some(known) = &seen.attribute_names
        && **known != *names
    {
        let problem = Problem::OtherAttributes { found: describe(&names), expected: describe(known) };
        return Err(DataError::new(&file.name, problem));
    }
    let (frame, devices, _) = reader.read_all()?;
    let polars_error =
        |e: PolarsError| DataError::new(&file.name, Problem::Csv { first_row: 1, message: e.to_string() });
    let int = |name: &str| frame.column(name).and_then(|c| c.i64().cloned()).map_err(polars_error);
    let (entity, week, clicks, conversions) = (int(ENTITY_ID)?, int(WEEK)?, int(CLICKS)?, int(CONVERSIONS)?);
    let attributes = names.iter().map(|name| int(name)).collect::<Result<Vec<_>, _>>()?;

    // Decide first, add after: a file is taken whole or not at all.
    let mut additions: HashMap<(i64, Device, i64), u64> = HashMap::new();
    let mut kept = Vec::new();
    let mut counts = IngestCounts { read: frame.height() as u64, ..IngestCounts::default() };
    let mut weeks = Vec::new();
    for (i, &device) in devices.iter().enumerate() {
        let value = |column: &Int64Chunked| column.get(i).unwrap_or_default();
        let key = (value(&entity), device, value(&week));
        let mut hasher = DefaultHasher::new();
        (value(&clicks), value(&conversions)).hash(&mut hasher);
        for column in &attributes {
            value(column).hash(&mut hasher);
        }
        let fingerprint = hasher.finish();
        weeks.push(key.2);
        match seen.rows.get(&key).or_else(|| additions.get(&key)) {
            Some(&earlier) if earlier == fingerprint => counts.duplicate += 1,
            Some(_) => counts.conflict += 1,
            None => {
                additions.insert(key, fingerprint);
                kept.push(i);
            }
        }
    }
    counts.used = kept.len() as u64;
    weeks.sort_unstable();
    weeks.dedup();

    let mut csv = String::with_capacity(kept.len() * (names.len() * 2 + 40));
    csv.push_str(ENTITY_ID);
    for name in names.iter() {
        let _ = write!(csv, ",{name}");
    }
    let _ = writeln!(csv, ",{DEVICE},{WEEK},{CLICKS},{CONVERSIONS}");
    for &i in &kept {
        let value = |column: &Int64Chunked| column.get(i).unwrap_or_default();
        let _ = write!(csv, "{}", value(&entity));
        for column in &attributes {
            let _ = write!(csv, ",{}", value(column));
        }
        let _ = writeln!(csv, ",{},{},{},{}", devices[i], value(&week), value(&clicks), value(&conversions));
    }
    seen.rows.extend(additions);
    seen.attribute_names.get_or_insert(names);
    Ok(NewRows { csv: csv.into_bytes(), counts, weeks })
}

fn describe(names: &[String]) -> String {
    match (names.first(), names.last()) {
        (Some(first), Some(last)) => format!("{first}..{last} ({})", names.len()),
        _ => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "entity_id,att1,att2,device,week,Clicks,Conversions";

    fn file(name: &str, rows: &[&str]) -> DataFile {
        let text = format!("{HEADER}\n{}\n", rows.join("\n"));
        DataFile { name: name.into(), bytes: text.into_bytes().into() }
    }

    #[test]
    fn only_new_keys_are_kept_and_duplicates_and_conflicts_are_counted() {
        let mut seen = SeenRows::default();
        let first = ingest(&file("w1.csv", &["1,0,1,Computer,1,10,1", "1,0,1,Tablet,1,5,0"]), &mut seen).unwrap();
        assert_eq!(first.counts, IngestCounts { read: 2, duplicate: 0, conflict: 0, used: 2 });
        assert_eq!(first.weeks, vec![1]);

        let rows = ["1,0,1,Computer,1,10,1", "1,0,1,Tablet,1,6,0", "1,0,1,Computer,2,7,2", "1,0,1,Computer,2,7,2"];
        let second = ingest(&file("w2.csv", &rows), &mut seen).unwrap();
        assert_eq!(second.counts, IngestCounts { read: 4, duplicate: 2, conflict: 1, used: 1 });
        assert_eq!(second.weeks, vec![1, 2]);
        let text = String::from_utf8(second.csv).unwrap();
        assert_eq!(text, format!("{HEADER}\n1,0,1,Computer,2,7,2\n"));
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_bad_file_is_refused_whole_and_changes_nothing() {
        let mut seen = SeenRows::default();
        ingest(&file("w1.csv", &["1,0,1,Computer,1,10,1"]), &mut seen).unwrap();
        let err = ingest(&file("bad.csv", &["2,0,1,Computer,2,10,1", "3,0,7,Tablet,2,5,0"]), &mut seen).unwrap_err();
        assert!(err.to_string().starts_with("bad.csv: row 2, column 'att2'"), "{err}");
        assert_eq!(seen.len(), 1, "nothing of the bad file was added");
        let other = DataFile {
            name: "wide.csv".into(),
            bytes: "entity_id,att1,device,week,Clicks,Conversions\n4,1,Computer,2,3,0\n".into(),
        };
        let err = ingest(&other, &mut seen).unwrap_err();
        assert!(err.to_string().contains("att1..att1 (1), but the ingested data has att1..att2 (2)"), "{err}");
    }
}
