//! Record objects: rows a server recorded off its request path (shadow
//! predictions, captured traffic), kept in the bucket as gzip CSV objects that
//! are only ever added, one per flush, under a dated folder of their area
//! (`shadow/<ver>/<date>/<id>.csv.gz`, `capture/<ver>/<date>/<id>.csv.gz`).
//! An object is written whole with create-if-absent or not at all, so a
//! process killed mid-write leaves no partial object.

use std::io::{Read, Write};

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::storage::bucket::{Bucket, BucketKey, StorageError};
use crate::storage::layout::RunId;

/// `header`, then whatever `rows` writes, as gzip CSV.
pub fn gzip_csv(header: &str, capacity: usize, rows: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Bytes {
    let mut gzip = GzEncoder::new(Vec::with_capacity(capacity), Compression::fast());
    writeln!(gzip, "{header}").expect("writing to memory cannot fail");
    rows(&mut gzip).expect("writing to memory cannot fail");
    Bytes::from(gzip.finish().expect("writing to memory cannot fail"))
}

/// The text of a gzip CSV object; the error says why it is not one.
pub fn gunzip_text(bytes: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    MultiGzDecoder::new(bytes).read_to_string(&mut text).map_err(|e| format!("not gzip text: {e}"))?;
    Ok(text)
}

/// Writes `bytes` as a new object at `key_of(today, fresh id)` and returns its
/// key. Never replaces an object: a name taken already gets another.
pub async fn add(
    bucket: &Bucket,
    key_of: impl Fn(NaiveDate, &RunId) -> BucketKey,
    bytes: Bytes,
) -> Result<BucketKey, StorageError> {
    loop {
        let now = Utc::now();
        let key = key_of(now.date_naive(), &RunId::generate(now));
        match bucket.create(&key, bytes.clone()).await {
            Ok(()) => return Ok(key),
            Err(StorageError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}
