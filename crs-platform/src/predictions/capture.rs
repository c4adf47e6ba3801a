//! Captured traffic (`CAPTURE_SAMPLE` on serve-service): a sample of the rows
//! a model version served, with the inputs its model read and its answer, kept
//! as record objects under `capture/<ver>/<date>/` (`records.rs`, as shadow
//! records are), so that live inputs and predictions can be compared with
//! what the model learnt from, and answers joined with labels that come later.
//!
//! An object holds rows of one model version that read the same attributes:
//! `time,model,run,request_id,entity_id,device,cr,<attribute>...`. Request ids
//! are printable ASCII; `%` and `,` in them are written `%25` and `%2C`.
//!
//! A batch (`PredictBatch`) is captured as its input key, not as a copy of its
//! rows: its own object (`<id>.batch.csv.gz` beside the rows' objects, kept and
//! deleted with them) of one line
//! `time,model,run,request_id,input_key,output_key,rows,share`. A live check
//! reads the input again ([`batch_rows`]), the `share` of its rows.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use crs_domain::data::{Attributes, DataError, Device, KeywordRows, TableKind, TableReader};
use crs_domain::models::ModelVer;
use crs_domain::rng::unit_hash;
use tokio_util::io::SyncIoBridge;

use super::records;
use crate::error::{Classify, ErrorKind};
use crate::storage::bucket::{Bucket, BucketKey, StorageError};
use crate::storage::layout::{self, RunId};

/// The columns before the attributes in every capture object.
pub const FIXED_COLUMNS: [&str; 7] = ["time", "model", "run", "request_id", "entity_id", "device", "cr"];

/// Captured rows of one model version, each with when, which run and which
/// request answered it; `rows` holds the attributes the model read.
#[derive(Clone, Debug)]
pub struct CapturedRows {
    pub model: ModelVer,
    pub time: Vec<DateTime<Utc>>,
    pub run: Vec<RunId>,
    pub request_id: Vec<String>,
    pub rows: KeywordRows,
    pub cr: Vec<f64>,
}

impl CapturedRows {
    pub fn new(model: ModelVer, attribute_names: Arc<[String]>) -> Self {
        CapturedRows {
            model,
            time: Vec::new(),
            run: Vec::new(),
            request_id: Vec::new(),
            rows: KeywordRows::new(attribute_names),
            cr: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.cr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cr.is_empty()
    }

    /// Appends `rows` (with the same attribute names) answered with `cr` by
    /// `run` at `time` for request `request_id`.
    pub fn extend(&mut self, time: DateTime<Utc>, run: &RunId, request_id: &str, rows: &KeywordRows, cr: &[f64]) {
        debug_assert_eq!(rows.attribute_names(), self.rows.attribute_names());
        self.rows.append(rows);
        self.time.extend(std::iter::repeat_n(time, rows.len()));
        self.run.extend(std::iter::repeat_n(run.clone(), rows.len()));
        self.request_id.extend(std::iter::repeat_n(request_id.to_owned(), rows.len()));
        self.cr.extend_from_slice(cr);
    }
}

impl CapturedRows {
    /// Appends `other`, of the same model version and attributes.
    pub fn append(&mut self, mut other: CapturedRows) {
        self.rows.append(&other.rows);
        self.time.append(&mut other.time);
        self.run.append(&mut other.run);
        self.request_id.append(&mut other.request_id);
        self.cr.append(&mut other.cr);
    }
}

/// A batch a model version served with capture on, kept as its keys.
#[derive(Clone, Debug, PartialEq)]
pub struct CapturedBatch {
    pub time: DateTime<Utc>,
    pub model: ModelVer,
    pub run: RunId,
    pub request_id: String,
    pub input_key: String,
    pub output_key: String,
    /// Data rows the batch read.
    pub rows: u64,
    /// `CAPTURE_SAMPLE` when it was served: the share of its rows a live
    /// check reads, so that a batch weighs as the same rows served online.
    pub share: f64,
}

/// The columns of a batch's capture object.
pub const BATCH_COLUMNS: [&str; 8] = ["time", "model", "run", "request_id", "input_key", "output_key", "rows", "share"];

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{key}: line {line}: {problem}")]
    Format { key: String, line: usize, problem: String },
    /// The input of a captured batch cannot be read again.
    #[error(transparent)]
    Input(#[from] DataError),
    #[error("reading {key} stopped: {problem}")]
    Reading { key: String, problem: String },
}

impl Classify for CaptureError {
    fn kind(&self) -> ErrorKind {
        match self {
            CaptureError::Storage(e) => e.kind(),
            CaptureError::Format { .. } | CaptureError::Input(_) | CaptureError::Reading { .. } => ErrorKind::Internal,
        }
    }
}

/// A request id or key as one CSV field.
fn field(text: &str) -> String {
    text.replace('%', "%25").replace(',', "%2C")
}

fn unfield(text: &str) -> String {
    text.replace("%2C", ",").replace("%25", "%")
}

fn header(attribute_names: &[String]) -> String {
    let mut columns: Vec<&str> = FIXED_COLUMNS.to_vec();
    columns.extend(attribute_names.iter().map(String::as_str));
    columns.join(",")
}

/// `captured` as gzip CSV. Lines are formatted into a buffer handed to the
/// encoder a block at a time: a write per field (a model may read hundreds of
/// attributes) would cost more than the compression.
pub fn encode(captured: &CapturedRows) -> Bytes {
    const BLOCK: usize = 64 * 1024;
    let names = captured.rows.attribute_names();
    let capacity = captured.len() * (48 + 2 * names.len()) + 64;
    records::gzip_csv(&header(names), capacity, |out| {
        let mut lines = Vec::with_capacity(BLOCK + 4096);
        // A request's rows share its time: formatted once for them.
        let mut time: Option<(DateTime<Utc>, String)> = None;
        for i in 0..captured.len() {
            let at = captured.time[i];
            if time.as_ref().is_none_or(|(t, _)| *t != at) {
                time = Some((at, at.to_rfc3339_opts(SecondsFormat::Micros, true)));
            }
            let stamp = time.as_ref().map_or("", |(_, text)| text.as_str());
            write!(
                lines,
                "{stamp},{},{},{},{},{},{}",
                captured.model,
                captured.run[i],
                field(&captured.request_id[i]),
                captured.rows.entity_id[i],
                captured.rows.device[i].as_str(),
                captured.cr[i]
            )?;
            for &value in captured.rows.attributes(i) {
                match value {
                    0..=9 => lines.extend_from_slice(&[b',', b'0' + value]),
                    _ => write!(lines, ",{value}")?,
                }
            }
            lines.push(b'\n');
            if lines.len() >= BLOCK {
                out.write_all(&lines)?;
                lines.clear();
            }
        }
        out.write_all(&lines)
    })
}

/// Writes rows [`encode`]d already as one new object and returns its key.
pub async fn write_encoded(bucket: &Bucket, model: ModelVer, bytes: Bytes) -> Result<BucketKey, StorageError> {
    records::add(bucket, |date, id| layout::capture_batch(model, date, id), bytes).await
}

/// Parses one capture object.
pub fn decode(key: &str, model: ModelVer, bytes: &[u8]) -> Result<CapturedRows, CaptureError> {
    let bad = |line: usize, problem: String| CaptureError::Format { key: key.to_owned(), line, problem };
    let text = records::gunzip_text(bytes).map_err(|problem| bad(0, problem))?;
    let mut lines = text.lines();
    let columns: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    if columns.len() < FIXED_COLUMNS.len() || columns[..FIXED_COLUMNS.len()] != FIXED_COLUMNS {
        return Err(bad(1, format!("the header does not start with {}", FIXED_COLUMNS.join(","))));
    }
    let names: Arc<[String]> = columns[FIXED_COLUMNS.len()..].iter().map(|c| (*c).to_owned()).collect();
    let width = names.len();
    let mut captured = CapturedRows::new(model, names);
    let mut values = Vec::with_capacity(width);
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let fields: Vec<&str> = line.split(',').collect();
        let [time, _model, run, id, entity_id, device, cr, attributes @ ..] = &fields[..] else {
            return Err(bad(
                line_no,
                format!("expected {} fields, found {}", FIXED_COLUMNS.len() + width, fields.len()),
            ));
        };
        if attributes.len() != width {
            return Err(bad(
                line_no,
                format!("expected {} fields, found {}", FIXED_COLUMNS.len() + width, fields.len()),
            ));
        }
        let time = DateTime::parse_from_rfc3339(time).map_err(|_| bad(line_no, format!("time {time:?}")))?;
        let run = RunId::parse(run).map_err(|_| bad(line_no, format!("run {run:?}")))?;
        let entity_id: i64 = entity_id.parse().map_err(|_| bad(line_no, format!("entity_id {entity_id:?}")))?;
        let cr: f64 = cr.parse().map_err(|_| bad(line_no, format!("cr {cr:?}")))?;
        values.clear();
        for value in attributes {
            values.push(value.parse::<u32>().map_err(|_| bad(line_no, format!("attribute value {value:?}")))?);
        }
        Device::parse(device).ok_or_else(|| bad(line_no, format!("device {device:?}")))?;
        captured.rows.push_checked(entity_id, device, &values).map_err(|e| bad(line_no, e.to_string()))?;
        captured.time.push(time.with_timezone(&Utc));
        captured.run.push(run);
        captured.request_id.push(unfield(id));
        captured.cr.push(cr);
    }
    Ok(captured)
}

/// Writes the capture object of a batch and returns its key.
pub async fn write_batch(bucket: &Bucket, batch: &CapturedBatch) -> Result<BucketKey, StorageError> {
    let bytes = records::gzip_csv(&BATCH_COLUMNS.join(","), 256, |out| {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            batch.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            batch.model,
            batch.run,
            field(&batch.request_id),
            field(&batch.input_key),
            field(&batch.output_key),
            batch.rows,
            batch.share
        )
    });
    records::add(bucket, |date, id| layout::captured_batch(batch.model, date, id), bytes).await
}

/// Parses a batch's capture object.
pub fn decode_batch(key: &str, model: ModelVer, bytes: &[u8]) -> Result<CapturedBatch, CaptureError> {
    let bad = |line: usize, problem: String| CaptureError::Format { key: key.to_owned(), line, problem };
    let text = records::gunzip_text(bytes).map_err(|problem| bad(0, problem))?;
    let mut lines = text.lines();
    if lines.next() != Some(BATCH_COLUMNS.join(",").as_str()) {
        return Err(bad(1, format!("the header is not {}", BATCH_COLUMNS.join(","))));
    }
    let line = lines.next().unwrap_or_default();
    let fields: Vec<&str> = line.split(',').collect();
    let [time, _model, run, id, input, output, rows, share] = &fields[..] else {
        return Err(bad(2, format!("expected {} fields, found {}", BATCH_COLUMNS.len(), fields.len())));
    };
    Ok(CapturedBatch {
        time: DateTime::parse_from_rfc3339(time).map_err(|_| bad(2, format!("time {time:?}")))?.with_timezone(&Utc),
        model,
        run: RunId::parse(run).map_err(|_| bad(2, format!("run {run:?}")))?,
        request_id: unfield(id),
        input_key: unfield(input),
        output_key: unfield(output),
        rows: rows.parse().map_err(|_| bad(2, format!("rows {rows:?}")))?,
        share: share.parse().map_err(|_| bad(2, format!("share {share:?}")))?,
    })
}

/// The capture objects of `model` from the UTC date of `since` on (all of
/// them for `None`), in key order.
async fn keys_since(
    bucket: &Bucket,
    model: ModelVer,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<BucketKey>, StorageError> {
    let first_day: Option<NaiveDate> = since.map(|t| t.date_naive());
    let mut keys = bucket.list(&layout::capture_prefix(model)).await?;
    keys.retain(|key| first_day.is_none_or(|day| layout::record_date(key).is_none_or(|date| date >= day)));
    Ok(keys)
}

/// Every batch captured for `model` at or after `since` (all for `None`), oldest first.
pub async fn batches_since(
    bucket: &Bucket,
    model: ModelVer,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<CapturedBatch>, CaptureError> {
    let mut batches = Vec::new();
    for key in keys_since(bucket, model, since).await?.into_iter().filter(layout::is_captured_batch) {
        let Some(bytes) = bucket.get_if_exists(&key).await? else { continue };
        let batch = decode_batch(key.as_str(), model, &bytes)?;
        if since.is_none_or(|since| batch.time >= since) {
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// The `share` of the rows of a captured batch's input (drawn by row, the
/// same rows every time), with the attributes `names`; `None` when the input
/// is gone (a batch's input need not be kept).
pub async fn batch_rows(
    bucket: &Bucket,
    batch: &CapturedBatch,
    names: Arc<[String]>,
) -> Result<Option<KeywordRows>, CaptureError> {
    let key = BucketKey::parse(&batch.input_key).map_err(StorageError::from)?;
    let download = match bucket.reader(&key).await {
        Ok(download) => download,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (share, seed) = (batch.share, batch.time.timestamp_micros() as u64);
    let name = batch.input_key.clone();
    let reading = tokio::task::spawn_blocking(move || -> Result<KeywordRows, CaptureError> {
        let attributes = Attributes::Only(names.clone());
        let mut reader = TableReader::open(&name, SyncIoBridge::new(download), TableKind::PredictionInput, attributes)?;
        let (mut sampled, mut first) = (KeywordRows::new(names.clone()), 0_u64);
        while let Some(rows) = reader.next_rows()? {
            let picked: Vec<usize> =
                (0..rows.len()).filter(|&i| share >= 1.0 || unit_hash(first + i as u64, seed) < share).collect();
            first += rows.len() as u64;
            let Some(picked) = rows.project(Some(&picked), names.clone()) else {
                return Err(CaptureError::Reading { key: name, problem: "the model's attributes are missing".into() });
            };
            sampled.append(&picked);
        }
        Ok(sampled)
    });
    let key = batch.input_key.clone();
    let rows = reading.await.map_err(|e| CaptureError::Reading { key, problem: e.to_string() })??;
    Ok(Some(rows))
}

/// Every object of rows captured for `model` on or after the UTC date of
/// `since` (all of them for `None`), in key order, each with only its rows at
/// or after `since`. Batches are left out: [`batches_since`] reads them.
pub async fn read_since(
    bucket: &Bucket,
    model: ModelVer,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<CapturedRows>, CaptureError> {
    let keys: Vec<BucketKey> =
        keys_since(bucket, model, since).await?.into_iter().filter(|key| !layout::is_captured_batch(key)).collect();
    let mut objects = Vec::new();
    for (key, bytes) in keys.iter().zip(bucket.get_each_if_exists(&keys).await) {
        let Some(bytes) = bytes? else { continue };
        let captured = decode(key.as_str(), model, &bytes)?;
        let captured = match since {
            Some(since) => {
                let keep: Vec<usize> = (0..captured.len()).filter(|&i| captured.time[i] >= since).collect();
                select(&captured, &keep)
            }
            None => captured,
        };
        if !captured.is_empty() {
            objects.push(captured);
        }
    }
    Ok(objects)
}

/// The rows of `captured` at `indices`, in that order.
pub fn select(captured: &CapturedRows, indices: &[usize]) -> CapturedRows {
    CapturedRows {
        model: captured.model,
        time: indices.iter().map(|&i| captured.time[i]).collect(),
        run: indices.iter().map(|&i| captured.run[i].clone()).collect(),
        request_id: indices.iter().map(|&i| captured.request_id[i].clone()).collect(),
        rows: captured.rows.select(indices),
        cr: indices.iter().map(|&i| captured.cr[i]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captured_rows_read_back_as_written_and_by_time() {
        let bucket = Bucket::open("memory://").unwrap();
        let v1 = ModelVer::parse("v1").unwrap();
        let run = RunId::parse("20261201T000000000Z-abcdef").unwrap();
        let names: Arc<[String]> = vec!["att1".to_owned(), "att7".to_owned()].into();
        let mut rows = KeywordRows::new(names.clone());
        rows.push_checked(11, "Tablet", &[0, 1]).unwrap();
        rows.push_checked(12, "Computer", &[1, 1]).unwrap();
        let (before, after) = (Utc::now() - chrono::Duration::hours(1), Utc::now());
        let mut captured = CapturedRows::new(v1, names);
        captured.extend(before, &run, "old", &rows, &[0.25, 0.5]);
        captured.extend(after, &run, "a,b%c", &rows, &[1e-7, 0.125]);
        let key = write_encoded(&bucket, v1, encode(&captured)).await.unwrap();
        assert!(key.as_str().starts_with("capture/v1/") && key.as_str().ends_with(".csv.gz"), "{key}");

        let all = read_since(&bucket, v1, None).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].cr, vec![0.25, 0.5, 1e-7, 0.125]);
        assert_eq!(all[0].request_id, ["old", "old", "a,b%c", "a,b%c"]);
        assert_eq!(all[0].rows.attributes(1), &[1, 1]);
        assert_eq!(all[0].rows.attribute_names(), ["att1", "att7"]);
        // Times are kept to the microsecond: a bound between the two requests.
        let recent = read_since(&bucket, v1, Some(before + chrono::Duration::minutes(1))).await.unwrap();
        assert_eq!((recent[0].rows.entity_id.clone(), recent[0].cr.clone()), (vec![11, 12], vec![1e-7, 0.125]));
    }

    #[test]
    fn a_damaged_capture_names_the_object_and_line() {
        let header = header(&["att1".to_owned()]);
        let bytes = records::gzip_csv(&header, 0, |out| {
            writeln!(out, "2026-12-01T00:00:00Z,v1,20261201T000000000Z-abcdef,r,12,Tablet,0.1,2")
        });
        let err = decode("capture/v1/x.csv.gz", ModelVer::parse("v1").unwrap(), &bytes).unwrap_err();
        assert_eq!(err.to_string(), "capture/v1/x.csv.gz: line 2: attribute 'att1' must be 0 or 1, found 2");
    }
}
