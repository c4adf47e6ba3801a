//! Ingestion: new raw files under the incoming prefix become ingested rows,
//! each file recorded in the ledger (`data/ledger/<seq>.json`) whatever
//! happened to it.
//!
//! One ingestion at a time per bucket (the `ingest` lease). A file is known by
//! its key, size and etag; a file with the content of one already ingested (the
//! same file again, or a renamed copy) adds nothing. A file's new rows are
//! written (`data/ingested/<seq>.csv.gz`, gzip CSV in the training schema)
//! before its ledger entry, which is created last with create-if-absent, so a
//! crash leaves at most an unreferenced rows object and never a half-ingested
//! file. Ingested rows are kept as gzip CSV in the training schema because
//! training then reads them with the one reader and data contract it already
//! has; they were validated once on the way in, and gzip level 1 keeps reads
//! fast.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use crs_domain::data::{DataError, DataFile, IngestCounts, SeenRows, ingest};
use crs_domain::models::sha256_hex;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::failpoint::{FailPoint, FailStep};
use crate::lifecycle::lease::{Lease, LeaseError};
use crate::storage::bucket::{Bucket, BucketKey, StorageError};
use crate::storage::layout::{self, sequence_number};

const LEASE: &str = "ingest";

/// What became of one incoming file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its new rows were added (possibly none, if all were duplicates).
    Ingested,
    /// The same bytes as a file already ingested; nothing added.
    SameContent,
    /// It broke the data contract; nothing added. `message` says where.
    Rejected,
}

/// One ledger entry: one incoming file as it was when seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub etag: Option<String>,
    pub rows: IngestCounts,
    /// Weeks of the rows read.
    pub weeks: Vec<i64>,
    pub at: DateTime<Utc>,
    pub outcome: Outcome,
    /// Why it was rejected, or which file had the same content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where a rejected file broke the contract, as fields (entries written
    /// before this existed have only `message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
}

/// Where a rejected file broke the data contract and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The data row (1 is the first line after the header), when one is to blame.
    pub row: Option<u64>,
    pub column: Option<String>,
    /// What was wrong, without the file, row and column.
    pub problem: String,
}

impl From<&DataError> for Rejection {
    fn from(e: &DataError) -> Self {
        Rejection { row: e.row, column: e.column.clone(), problem: e.problem.to_string() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("{key}: not a ledger entry: {message}")]
    Malformed { key: String, message: String },
    #[error("{key}: the ingested rows cannot be read: {message}")]
    Rows { key: String, message: String },
}

impl Classify for IngestError {
    fn kind(&self) -> ErrorKind {
        match self {
            IngestError::Storage(e) => e.kind(),
            IngestError::Lease(e) => e.kind(),
            IngestError::Malformed { .. } | IngestError::Rows { .. } => ErrorKind::Internal,
        }
    }
}

/// Every ledger entry, oldest first.
pub async fn ledger(bucket: &Bucket) -> Result<Vec<LedgerEntry>, IngestError> {
    let mut entries = Vec::new();
    for key in bucket.list(&layout::ledger()).await? {
        if sequence_number(&key).is_none() {
            continue;
        }
        let bytes = bucket.get(&key).await?;
        let entry: LedgerEntry = serde_json::from_slice(&bytes)
            .map_err(|e| IngestError::Malformed { key: key.to_string(), message: e.to_string() })?;
        entries.push(entry);
    }
    entries.sort_by_key(|e| e.seq);
    Ok(entries)
}

/// All ingested rows as one training-schema CSV file, or `None` before anything was ingested.
pub async fn ingested_data(bucket: &Bucket) -> Result<Option<DataFile>, IngestError> {
    let entries = ledger(bucket).await?;
    let mut csv: Vec<u8> = Vec::new();
    for entry in entries.iter().filter(|e| e.outcome == Outcome::Ingested && e.rows.used > 0) {
        let text = read_rows(bucket, &layout::ingested_rows(entry.seq)).await?;
        // Every rows object starts with the same header: keep the first only.
        let body = if csv.is_empty() { &text[..] } else { text.splitn(2, |&b| b == b'\n').nth(1).unwrap_or_default() };
        csv.extend_from_slice(body);
    }
    Ok((!csv.is_empty()).then(|| DataFile { name: layout::INGESTED_NAME.to_owned(), bytes: csv.into() }))
}

async fn read_rows(bucket: &Bucket, key: &BucketKey) -> Result<Vec<u8>, IngestError> {
    let bytes = bucket.get(key).await?;
    let mut text = Vec::new();
    MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut text)
        .map_err(|e| IngestError::Rows { key: key.to_string(), message: e.to_string() })?;
    Ok(text)
}

/// Ingests every file under `incoming` the ledger does not have yet, and
/// returns their new ledger entries (empty when there was nothing new).
pub async fn ingest_new(
    bucket: &Bucket,
    incoming: &BucketKey,
    holder: &str,
    ttl: Duration,
    fail: &FailPoint,
) -> Result<Vec<LedgerEntry>, IngestError> {
    let lease = Lease::acquire(bucket, LEASE, holder, ttl).await?;
    let result = ingest_under_lease(bucket, incoming, fail).await;
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "could not release the ingest lease; it expires by itself");
    }
    result
}

async fn ingest_under_lease(
    bucket: &Bucket,
    incoming: &BucketKey,
    fail: &FailPoint,
) -> Result<Vec<LedgerEntry>, IngestError> {
    let mut entries = ledger(bucket).await?;
    let mut seen = SeenRows::default();
    for entry in entries.iter().filter(|e| e.outcome == Outcome::Ingested && e.rows.used > 0) {
        let text = read_rows(bucket, &layout::ingested_rows(entry.seq)).await?;
        let file = DataFile { name: layout::ingested_rows(entry.seq).to_string(), bytes: text.into() };
        ingest(&file, &mut seen).map_err(|e| IngestError::Rows { key: file.name.clone(), message: e.to_string() })?;
    }
    let mut added = Vec::new();
    for object in bucket.list_objects(incoming).await? {
        let known = entries.iter().any(|e| {
            e.key == object.key.as_str() && e.size == object.size && (e.etag == object.etag || e.etag.is_none())
        });
        if known {
            continue;
        }
        let bytes = bucket.get(&object.key).await?;
        let sha256 = sha256_hex(&bytes);
        let seq = entries.last().map_or(1, |e| e.seq + 1);
        let mut entry = LedgerEntry {
            seq,
            key: object.key.to_string(),
            size: object.size,
            sha256: sha256.clone(),
            etag: object.etag.clone(),
            rows: IngestCounts::default(),
            weeks: Vec::new(),
            at: Utc::now(),
            outcome: Outcome::Ingested,
            message: None,
            rejection: None,
        };
        if let Some(same) = entries.iter().find(|e| e.sha256 == sha256 && e.outcome == Outcome::Ingested) {
            entry.outcome = Outcome::SameContent;
            entry.message = Some(format!("the same content as {}, ingested as entry {}", same.key, same.seq));
        } else {
            // Checked on a copy: a rejected file must leave `seen` as it was.
            let mut after = seen.clone();
            let file = DataFile { name: object.key.to_string(), bytes: bytes.clone() };
            let (result, after) = tokio::task::spawn_blocking(move || (ingest(&file, &mut after), after))
                .await
                .map_err(|e| IngestError::Rows { key: object.key.to_string(), message: e.to_string() })?;
            match result {
                Ok(new_rows) => {
                    entry.rows = new_rows.counts;
                    entry.weeks = new_rows.weeks;
                    if entry.rows.used > 0 {
                        bucket.put(&layout::ingested_rows(seq), gzip(&new_rows.csv)).await?;
                        fail.check(FailStep::IngestRowsWritten);
                    }
                    seen = after;
                }
                Err(e) => {
                    entry.outcome = Outcome::Rejected;
                    entry.message = Some(e.to_string());
                    entry.rejection = Some(Rejection::from(&e));
                }
            }
        }
        let bytes = serde_json::to_vec_pretty(&entry).expect("ledger entries are plain serde data");
        bucket.create(&layout::ledger_entry(seq), bytes).await?;
        tracing::info!(key = %entry.key, outcome = ?entry.outcome, rows_used = entry.rows.used, "ingested");
        entries.push(entry.clone());
        added.push(entry);
    }
    Ok(added)
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    encoder.write_all(bytes).expect("in-memory write");
    encoder.finish().expect("in-memory write").into()
}
