//! Shadow records: what a primary model and its shadows answered to the same
//! rows, kept in the bucket as gzip CSV objects that are only ever added
//! (`shadow/<primary>/<date>/<id>.csv.gz`, see `layout.rs`), so that the two
//! can be scored against outcomes later. The objects are record objects
//! (`records.rs`), as captured traffic's are.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use crs_domain::data::Device;
use crs_domain::models::ModelVer;

use super::records;
use crate::error::{Classify, ErrorKind};
use crate::storage::bucket::{Bucket, BucketKey, StorageError};
use crate::storage::layout::{self, RunId};

/// The header of every shadow record object.
pub const HEADER: &str = "time,model,run,entity_id,device,cr";

/// One prediction of one model for one row.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowRow {
    pub time: DateTime<Utc>,
    pub model: ModelVer,
    pub run: RunId,
    pub entity_id: i64,
    pub device: Device,
    pub cr: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{key}: line {line}: {problem}")]
    Format { key: String, line: usize, problem: String },
}

impl Classify for ShadowError {
    fn kind(&self) -> ErrorKind {
        match self {
            ShadowError::Storage(e) => e.kind(),
            ShadowError::Format { .. } => ErrorKind::Internal,
        }
    }
}

/// `rows` as gzip CSV with [`HEADER`].
pub fn encode(rows: &[ShadowRow]) -> Bytes {
    records::gzip_csv(HEADER, rows.len() * 24 + 64, |out| {
        for row in rows {
            writeln!(
                out,
                "{},{},{},{},{},{}",
                row.time.to_rfc3339_opts(SecondsFormat::Micros, true),
                row.model,
                row.run,
                row.entity_id,
                row.device.as_str(),
                row.cr
            )?;
        }
        Ok(())
    })
}

/// Writes `rows` (of `primary` and its shadows) as one new object and returns
/// its key. Never replaces an object: a name taken already gets another.
pub async fn write(bucket: &Bucket, primary: ModelVer, rows: &[ShadowRow]) -> Result<BucketKey, StorageError> {
    write_encoded(bucket, primary, encode(rows)).await
}

/// [`write`] of rows [`encode`]d already (off the async workers, say).
pub async fn write_encoded(bucket: &Bucket, primary: ModelVer, bytes: Bytes) -> Result<BucketKey, StorageError> {
    records::add(bucket, |date, id| layout::shadow_batch(primary, date, id), bytes).await
}

/// One row of a record object as read back; the model stays text, so that
/// records of a version this build no longer knows still read.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRow {
    pub time: String,
    pub model: String,
    pub run: String,
    pub entity_id: i64,
    pub device: Device,
    pub cr: f64,
}

/// Every row recorded for `primary`, object by object in key order.
pub async fn read_all(bucket: &Bucket, primary: ModelVer) -> Result<Vec<RecordedRow>, ShadowError> {
    let mut rows = Vec::new();
    for key in bucket.list(&layout::shadow_prefix(primary)).await? {
        let bytes = bucket.get(&key).await?;
        decode(key.as_str(), &bytes, &mut rows)?;
    }
    Ok(rows)
}

/// Parses one record object (gzip CSV with [`HEADER`]) into `rows`.
pub fn decode(key: &str, bytes: &[u8], rows: &mut Vec<RecordedRow>) -> Result<(), ShadowError> {
    let bad = |line: usize, problem: String| ShadowError::Format { key: key.to_owned(), line, problem };
    let text = records::gunzip_text(bytes).map_err(|problem| bad(0, problem))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad(1, format!("the header is not {HEADER}")));
    }
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let fields: Vec<&str> = line.split(',').collect();
        let [time, model, run, entity_id, device, cr] = fields[..] else {
            return Err(bad(line_no, format!("expected 6 fields, found {}", fields.len())));
        };
        rows.push(RecordedRow {
            time: time.to_owned(),
            model: model.to_owned(),
            run: run.to_owned(),
            entity_id: entity_id.parse().map_err(|_| bad(line_no, format!("entity_id {entity_id:?}")))?,
            device: Device::parse(device).ok_or_else(|| bad(line_no, format!("device {device:?}")))?,
            cr: cr.parse().map_err(|_| bad(line_no, format!("cr {cr:?}")))?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rows_written_in_batches_read_back_whole_and_no_batch_replaces_another() {
        let bucket = Bucket::open("memory://").unwrap();
        let (v0, v1) = (ModelVer::parse("v0").unwrap(), ModelVer::parse("v1").unwrap());
        let run = RunId::parse("20261201T000000000Z-abcdef").unwrap();
        let row = |model, entity_id, cr| ShadowRow {
            time: Utc::now(),
            model,
            run: run.clone(),
            entity_id,
            device: Device::Tablet,
            cr,
        };
        let first = [row(v1, 1, 0.25), row(v0, 1, 0.125)];
        let second = [row(v1, 2, 0.5), row(v0, 2, 1e-7)];
        let (a, b) = (write(&bucket, v1, &first).await.unwrap(), write(&bucket, v1, &second).await.unwrap());
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("shadow/v1/") && a.as_str().ends_with(".csv.gz"), "{a}");
        let rows = read_all(&bucket, v1).await.unwrap();
        let seen: Vec<(&str, i64, f64)> = rows.iter().map(|r| (r.model.as_str(), r.entity_id, r.cr)).collect();
        assert_eq!(seen, [("v1", 1, 0.25), ("v0", 1, 0.125), ("v1", 2, 0.5), ("v0", 2, 1e-7)]);
        assert!(read_all(&bucket, v0).await.unwrap().is_empty());
    }

    #[test]
    fn a_damaged_record_names_the_object_and_line() {
        let bytes = records::gzip_csv(HEADER, 0, |out| writeln!(out, "2026-12-01T00:00:00Z,v1,r,12,Phone,0.1"));
        let err = decode("shadow/v1/x.csv.gz", &bytes, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "shadow/v1/x.csv.gz: line 2: device \"Phone\"");
    }
}
