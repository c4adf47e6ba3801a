//! The bucket: one `object_store` location holding config, data and models.
//! Keys are checked before anything touches storage, and every write is whole
//! or nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig, UpdateVersion,
    WriteMultipart,
};
use tokio::io::AsyncRead;

use crate::error::{Classify, ErrorKind};

/// A checked, relative key inside the bucket, e.g. `data/train/train.csv.gz`.
/// Stored records hold it as a string, checked again when read back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BucketKey(Path);

impl TryFrom<String> for BucketKey {
    type Error = KeyError;

    fn try_from(key: String) -> Result<Self, KeyError> {
        BucketKey::parse(&key)
    }
}

impl From<BucketKey> for String {
    fn from(key: BucketKey) -> String {
        key.0.into()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("unsafe key {0:?}: it is empty")]
    Empty(String),
    #[error("unsafe key {0:?}: keys are relative to the bucket, not absolute")]
    Absolute(String),
    #[error("unsafe key {0:?}: '.' and '..' segments are not allowed")]
    DotSegment(String),
    #[error("unsafe key {0:?}: empty path segment")]
    EmptySegment(String),
    #[error("unsafe key {0:?}: control characters are not allowed")]
    ControlCharacter(String),
    #[error("unsafe key {0:?}: {1}")]
    Invalid(String, String),
}

impl BucketKey {
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let owned = || key.to_owned();
        if key.is_empty() {
            return Err(KeyError::Empty(owned()));
        }
        if key.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter(owned()));
        }
        if key.starts_with('/') || key.starts_with('\\') || key.contains(":\\") {
            return Err(KeyError::Absolute(owned()));
        }
        for segment in key.split(['/', '\\']) {
            match segment {
                "" => return Err(KeyError::EmptySegment(owned())),
                "." | ".." => return Err(KeyError::DotSegment(owned())),
                _ => {}
            }
        }
        Path::parse(key).map(BucketKey).map_err(|e| KeyError::Invalid(owned(), e.to_string()))
    }

    /// `self/segment`; `segment` is one checked path segment.
    pub fn join(&self, segment: &str) -> Result<Self, KeyError> {
        BucketKey::parse(&format!("{}/{segment}", self.0))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{key}: not found in the bucket")]
    NotFound { key: String },
    #[error("bucket {bucket}: {key}: {source}")]
    Backend {
        bucket: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("bucket {bucket}: {key}: access refused, check the bucket's credentials: {source}")]
    Denied {
        bucket: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{key}: already exists in the bucket")]
    AlreadyExists { key: String },
    #[error("{key}: changed in the bucket since it was read")]
    Conflict { key: String },
    #[error("bucket {url:?}: {message}")]
    Config { url: String, message: String },
}

impl Classify for KeyError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl Classify for StorageError {
    fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Key(e) => e.kind(),
            StorageError::NotFound { .. } => ErrorKind::NotFound,
            StorageError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            StorageError::Conflict { .. } => ErrorKind::Conflict,
            // Usually an object store that is down or throttling: worth a retry.
            StorageError::Backend { .. } => ErrorKind::Unavailable,
            // A bucket URL or credentials the operator must fix.
            StorageError::Config { .. } | StorageError::Denied { .. } => ErrorKind::Internal,
        }
    }
}

impl StorageError {
    fn from_store(bucket: &str, key: &str, source: object_store::Error) -> Self {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound { key },
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists { key },
            object_store::Error::Precondition { .. } => StorageError::Conflict { key },
            source @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }) => {
                StorageError::Denied { bucket, key, source: Box::new(source) }
            }
            source if is_refused_generic(&source) => StorageError::Denied { bucket, key, source: Box::new(source) },
            source => StorageError::Backend { bucket, key, source: Box::new(source) },
        }
    }
}

/// object_store types a refused get or put as `PermissionDenied`, but a
/// refused listing only as a generic error whose message carries the status;
/// `refused_or_missing_credentials_fail_within_seconds_naming_the_bucket`
/// notices if that message changes.
fn is_refused_generic(error: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = error else { return false };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(error) = next {
        let message = error.to_string();
        if message.contains("403 Forbidden") || message.contains("401 Unauthorized") {
            return true;
        }
        next = error.source();
    }
    false
}

/// Where an `s3://` bucket's endpoint, region and credentials come from.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum S3Env {
    /// The process's `AWS_*` variables: how the services and crctl run.
    #[default]
    Process,
    /// These `AWS_*` variables and none of the process's: tests, whose results
    /// must not depend on the shell that runs them.
    Explicit(Vec<(String, String)>),
}

impl fmt::Debug for S3Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Env::Process => f.write_str("Process"),
            // Names only: the values include the secret key.
            S3Env::Explicit(vars) => {
                f.debug_tuple("Explicit").field(&vars.iter().map(|(k, _)| k).collect::<Vec<_>>()).finish()
            }
        }
    }
}

/// How long an S3 request may take and how often it is retried. object_store's
/// defaults retry for up to three minutes, which turns a wrong endpoint or
/// missing credentials into what looks like a hang; these fail within seconds
/// and still ride out a brief blip.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Reads in flight at once in [`Bucket::get_each_if_exists`].
pub const READ_CONCURRENCY: usize = 16;

/// An S3 client for `bucket` with `env`'s settings over our timeouts and retries.
fn s3_store(bucket: &str, env: &S3Env) -> Result<AmazonS3, object_store::Error> {
    let vars: Vec<(String, String)> = match env {
        // As `AmazonS3Builder::from_env` reads them.
        S3Env::Process => std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect(),
        S3Env::Explicit(vars) => vars.clone(),
    };
    let retry = RetryConfig {
        backoff: BackoffConfig { max_backoff: MAX_BACKOFF, ..BackoffConfig::default() },
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    };
    // Our options first, so that `AWS_ALLOW_HTTP` and the like still apply on top.
    let mut builder = AmazonS3Builder::new()
        .with_client_options(ClientOptions::new().with_timeout(REQUEST_TIMEOUT).with_connect_timeout(CONNECT_TIMEOUT))
        .with_retry(retry);
    for (key, value) in vars {
        if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    builder.with_bucket_name(bucket).build()
}

/// An object as read, with the version a compare-and-swap write checks; see
/// [`Bucket::replace`].
#[derive(Clone, Debug)]
pub struct Versioned {
    pub bytes: Bytes,
    version: UpdateVersion,
}

/// Where config, data and models live: a local folder, S3 (or an S3-compatible
/// service), or memory.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// The folder, for a local bucket.
    local_dir: Option<std::path::PathBuf>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("url", &self.url).finish()
    }
}

impl Bucket {
    /// Opens a bucket from `BUCKET_URL`: a plain path or `file://` URL (a local
    /// folder, created if missing), `s3://bucket[/prefix]` (endpoint, region and
    /// credentials from the usual `AWS_*` variables), or `memory://` (tests).
    pub fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, &S3Env::Process)
    }

    /// [`Bucket::open`], with an `s3://` bucket's settings taken from `env`.
    pub fn open_with(url: &str, env: &S3Env) -> Result<Self, StorageError> {
        let config = |message: String| StorageError::Config { url: url.to_owned(), message };
        let mut local = None;
        let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(config("no bucket name".into()));
            }
            let s3 = s3_store(bucket, env).map_err(|e| config(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                let prefix = BucketKey::parse(prefix)?;
                Arc::new(PrefixStore::new(s3, prefix.0))
            }
        } else if url == "memory://" {
            Arc::new(InMemory::new())
        } else if url.contains("://") && !url.starts_with("file://") {
            return Err(config("unsupported scheme (use a path, file://, s3:// or memory://)".into()));
        } else {
            let dir = local_dir(url);
            std::fs::create_dir_all(dir).map_err(|e| config(e.to_string()))?;
            local = Some(std::path::PathBuf::from(dir));
            Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(|e| config(e.to_string()))?)
        };
        Ok(Bucket { store, url: url.to_owned(), local_dir: local })
    }

    /// A bucket and key for one file given as a path or URL, e.g.
    /// `../data/train.csv.gz` or `s3://bucket/data/train.csv.gz`.
    pub fn open_file(location: &str) -> Result<(Bucket, BucketKey), StorageError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok((Bucket::open(&format!("s3://{bucket}"))?, BucketKey::parse(key)?));
        }
        let path = std::path::Path::new(location.strip_prefix("file://").unwrap_or(location));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        Ok((Bucket::open(&dir.to_string_lossy())?, BucketKey::parse(name)?))
    }

    /// The URL the bucket was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(&self, key: &BucketKey, source: object_store::Error) -> StorageError {
        StorageError::from_store(&self.url, key.as_str(), source)
    }

    /// One listing of the bucket's top level, so that a wrong endpoint, a
    /// missing bucket or refused credentials fail a service at startup, naming
    /// the bucket, rather than its first request.
    pub async fn check_access(&self) -> Result<(), StorageError> {
        match self.store.list_with_delimiter(None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(StorageError::from_store(&self.url, "listing the bucket", e)),
        }
    }

    /// The folder of a local bucket; `None` for S3 and memory.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    pub async fn get(&self, key: &BucketKey) -> Result<Bytes, StorageError> {
        let result = self.store.get(&key.0).await.map_err(|e| self.error(key, e))?;
        result.bytes().await.map_err(|e| self.error(key, e))
    }

    /// Streams an object, for files too large to hold in memory.
    pub async fn reader(&self, key: &BucketKey) -> Result<impl AsyncRead + Send + Unpin + 'static, StorageError> {
        let result = self.store.get(&key.0).await.map_err(|e| self.error(key, e))?;
        let (owned, url) = (key.clone(), self.url.clone());
        let stream = result
            .into_stream()
            .map_err(move |e| std::io::Error::other(StorageError::from_store(&url, owned.as_str(), e)));
        Ok(tokio_util::io::StreamReader::new(stream))
    }

    /// The sha256 of an object as lowercase hex, read as a stream: objects
    /// larger than memory are hashed in constant space.
    pub async fn sha256(&self, key: &BucketKey) -> Result<String, StorageError> {
        use sha2::Digest;
        let result = self.store.get(&key.0).await.map_err(|e| self.error(key, e))?;
        let mut stream = result.into_stream();
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.error(key, e))? {
            hasher.update(chunk);
        }
        Ok(crs_domain::models::hex_digest(&hasher.finalize()))
    }

    /// Starts a multipart upload to `key` in parts of `part_bytes`. Nothing is
    /// visible at `key` until [`Upload::finish`]; an aborted or dropped upload
    /// leaves no object.
    pub async fn upload(&self, key: &BucketKey, part_bytes: usize) -> Result<Upload, StorageError> {
        let upload = self.store.put_multipart(&key.0).await.map_err(|e| self.error(key, e))?;
        Ok(Upload {
            bucket: self.url.clone(),
            key: key.clone(),
            writer: Some(WriteMultipart::new_with_chunk_size(upload, part_bytes)),
        })
    }

    /// Like [`Bucket::get`], with a missing object as `None`.
    pub async fn get_if_exists(&self, key: &BucketKey) -> Result<Option<Bytes>, StorageError> {
        match self.get(key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Bucket::get_if_exists`] of each of `keys`, in their order, with up to
    /// [`READ_CONCURRENCY`] reads in flight: reading a folder of small objects
    /// one after another on S3 costs a round trip each. Each read keeps its own
    /// outcome, so a caller can skip an object it cannot read or stop at it.
    pub async fn get_each_if_exists(&self, keys: &[BucketKey]) -> Vec<Result<Option<Bytes>, StorageError>> {
        // Owned keys and bucket: futures borrowing them are not `Send` for every
        // lifetime, which callers spawned on the runtime need.
        let reads = keys.iter().cloned().map(|key| {
            let bucket = self.clone();
            async move { bucket.get_if_exists(&key).await }
        });
        futures::stream::iter(reads).buffered(READ_CONCURRENCY).collect().await
    }

    /// An object's size and etag, without its bytes.
    pub async fn head(&self, key: &BucketKey) -> Result<ObjectInfo, StorageError> {
        let meta = self.store.head(&key.0).await.map_err(|e| self.error(key, e))?;
        Ok(ObjectInfo { key: key.clone(), size: meta.size, etag: meta.e_tag })
    }

    pub async fn exists(&self, key: &BucketKey) -> Result<bool, StorageError> {
        match self.store.head(&key.0).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Writes a whole object; readers see the old object or the new one, never a part.
    pub async fn put(&self, key: &BucketKey, bytes: impl Into<Bytes>) -> Result<(), StorageError> {
        let payload = PutPayload::from_bytes(bytes.into());
        self.store.put(&key.0, payload).await.map_err(|e| self.error(key, e))?;
        Ok(())
    }

    /// Writes a whole object only if nothing is at `key` yet; otherwise
    /// [`StorageError::AlreadyExists`]. Of two writers racing for one key, exactly
    /// one succeeds, on a local folder, in memory and on S3 alike: the basis of the
    /// sequence-numbered logs and leases that several replicas share.
    pub async fn create(&self, key: &BucketKey, bytes: impl Into<Bytes>) -> Result<(), StorageError> {
        let payload = PutPayload::from_bytes(bytes.into());
        self.store.put_opts(&key.0, payload, PutMode::Create.into()).await.map_err(|e| self.error(key, e))?;
        Ok(())
    }

    /// Like [`Bucket::get_if_exists`], with the version [`Bucket::replace`] checks.
    pub async fn get_versioned(&self, key: &BucketKey) -> Result<Option<Versioned>, StorageError> {
        let result = match self.store.get(&key.0).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(key, e)),
        };
        let version = UpdateVersion { e_tag: result.meta.e_tag.clone(), version: result.meta.version.clone() };
        let bytes = result.bytes().await.map_err(|e| self.error(key, e))?;
        Ok(Some(Versioned { bytes, version }))
    }

    /// Writes `bytes` at `key` only if it is still as `read` (`None`: still
    /// absent); otherwise [`StorageError::Conflict`]. Of two writers that read
    /// the same version, exactly one succeeds, on S3 and in memory. A local
    /// folder has no compare-and-swap, so there the write is unconditional once
    /// the object exists: one host's folder, whose writers order themselves.
    pub async fn replace(
        &self,
        key: &BucketKey,
        bytes: impl Into<Bytes>,
        read: Option<&Versioned>,
    ) -> Result<(), StorageError> {
        let bytes = bytes.into();
        let Some(read) = read else {
            return match self.create(key, bytes).await {
                Err(StorageError::AlreadyExists { key }) => Err(StorageError::Conflict { key }),
                other => other,
            };
        };
        let mode = PutMode::Update(read.version.clone());
        match self.store.put_opts(&key.0, PutPayload::from_bytes(bytes.clone()), mode.into()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotImplemented { .. }) => self.put(key, bytes).await,
            Err(e) => Err(self.error(key, e)),
        }
    }

    pub async fn delete(&self, key: &BucketKey) -> Result<(), StorageError> {
        match self.store.delete(&key.0).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// The names of the "folders" directly under `prefix`.
    pub async fn list_folders(&self, prefix: &BucketKey) -> Result<Vec<String>, StorageError> {
        let listing = self.store.list_with_delimiter(Some(&prefix.0)).await.map_err(|e| self.error(prefix, e))?;
        let mut names: Vec<String> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
        names.sort();
        Ok(names)
    }

    /// Every object under `prefix`, at any depth, with its size and etag, sorted by key.
    pub async fn list_objects(&self, prefix: &BucketKey) -> Result<Vec<ObjectInfo>, StorageError> {
        let metas: Vec<_> = self.store.list(Some(&prefix.0)).try_collect().await.map_err(|e| self.error(prefix, e))?;
        let mut objects: Vec<ObjectInfo> =
            metas.into_iter().map(|m| ObjectInfo { key: BucketKey(m.location), size: m.size, etag: m.e_tag }).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Every key under `prefix`, at any depth.
    pub async fn list(&self, prefix: &BucketKey) -> Result<Vec<BucketKey>, StorageError> {
        let metas: Vec<_> = self.store.list(Some(&prefix.0)).try_collect().await.map_err(|e| self.error(prefix, e))?;
        let mut keys: Vec<BucketKey> = metas.into_iter().map(|m| BucketKey(m.location)).collect();
        keys.sort();
        Ok(keys)
    }
}

/// An object as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: BucketKey,
    pub size: u64,
    pub etag: Option<String>,
}

/// A multipart upload in progress; see [`Bucket::upload`]. Dropped before
/// [`Upload::finish`] or [`Upload::abort`] (its request was cancelled), it
/// aborts itself in the background: S3 would otherwise keep the parts.
pub struct Upload {
    bucket: String,
    key: BucketKey,
    /// `None` once finished or aborted.
    writer: Option<WriteMultipart>,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload").field("key", &self.key).finish()
    }
}

impl Upload {
    fn writer(&mut self) -> &mut WriteMultipart {
        self.writer.as_mut().expect("an upload is used only until it is finished or aborted")
    }

    /// Waits until fewer than `parts` parts are being uploaded.
    pub async fn wait_for_capacity(&mut self, parts: usize) -> Result<(), StorageError> {
        let (bucket, key) = (self.bucket.clone(), self.key.clone());
        self.writer().wait_for_capacity(parts).await.map_err(|e| StorageError::from_store(&bucket, key.as_str(), e))
    }

    /// Buffers `bytes`, starting a part upload whenever a part is full.
    pub fn put(&mut self, bytes: Bytes) {
        self.writer().put(bytes);
    }

    /// Uploads the rest and completes the object, which then appears whole.
    pub async fn finish(mut self) -> Result<(), StorageError> {
        let writer = self.writer.take().expect("not finished or aborted yet");
        writer.finish().await.map(drop).map_err(|e| StorageError::from_store(&self.bucket, self.key.as_str(), e))
    }

    /// Abandons the upload; nothing appears at the key.
    pub async fn abort(mut self) {
        let writer = self.writer.take().expect("not finished or aborted yet");
        abort(&self.bucket, &self.key, writer).await;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else { return };
        tracing::warn!(bucket = %self.bucket, key = %self.key, "upload abandoned before it completed; aborting it");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(abort(self.bucket.clone(), self.key.clone(), writer))),
            // No runtime to abort on: a local staging file is left to the startup
            // cleanup (`staging.rs`), S3 parts to the bucket's lifecycle rule.
            Err(_) => drop(writer),
        }
    }
}

async fn abort(bucket: impl fmt::Display, key: impl fmt::Display, writer: WriteMultipart) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(bucket = %bucket, key = %key, error = %e, "could not abort a multipart upload");
    }
}

/// The folder a local bucket URL names: a path or `file://` URL, `.` if empty.
fn local_dir(url: &str) -> &str {
    let dir = url.strip_prefix("file://").unwrap_or(url);
    if dir.is_empty() { "." } else { dir }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_keys_are_refused_with_a_reason() {
        for (key, reason) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("data/../../etc", "'..'"),
            ("./data", "'.'"),
            ("data//train.csv", "empty path segment"),
            ("data/train.csv/", "empty path segment"),
            ("data/tr\u{7}ain.csv", "control characters"),
            ("data/train\n.csv", "control characters"),
        ] {
            let err = BucketKey::parse(key).unwrap_err().to_string();
            assert!(err.contains(reason), "{key:?}: {err}");
            assert!(err.starts_with("unsafe key"), "{key:?}: {err}");
        }
        assert_eq!(BucketKey::parse("data/train/train.csv.gz").unwrap().as_str(), "data/train/train.csv.gz");
    }

    #[tokio::test]
    async fn many_reads_come_back_in_the_order_asked_with_missing_ones_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
        let keys: Vec<BucketKey> = (0..50).map(|i| BucketKey::parse(&format!("points/{i:03}.json")).unwrap()).collect();
        for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 7 != 3) {
            bucket.put(key, Bytes::from(i.to_string())).await.unwrap();
        }
        let read: Vec<Option<Bytes>> =
            bucket.get_each_if_exists(&keys).await.into_iter().collect::<Result<_, _>>().unwrap();
        let expected: Vec<Option<Bytes>> = (0..50).map(|i| (i % 7 != 3).then(|| Bytes::from(i.to_string()))).collect();
        assert_eq!(read, expected);
    }

    #[tokio::test]
    async fn local_bucket_round_trips_and_reports_missing_objects() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open(&dir.path().join("bucket").to_string_lossy()).unwrap();
        let key = BucketKey::parse("model/v1/LATEST").unwrap();
        assert!(!bucket.exists(&key).await.unwrap());
        assert!(matches!(bucket.get(&key).await, Err(StorageError::NotFound { .. })));
        bucket.put(&key, Bytes::from_static(b"run-1")).await.unwrap();
        assert_eq!(bucket.get(&key).await.unwrap(), Bytes::from_static(b"run-1"));
        assert!(dir.path().join("bucket/model/v1/LATEST").is_file());
        assert_eq!(bucket.list_folders(&BucketKey::parse("model").unwrap()).await.unwrap(), vec!["v1"]);
    }

    #[tokio::test]
    async fn create_writes_once_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["memory://", &dir.path().to_string_lossy()] {
            let bucket = Bucket::open(url).unwrap();
            let key = BucketKey::parse("log/00000001.json").unwrap();
            let racers = (0..8).map(|i| {
                let bucket = bucket.clone();
                let key = key.clone();
                tokio::spawn(async move { bucket.create(&key, format!("writer {i}")).await })
            });
            let results = futures::future::join_all(racers).await;
            let won = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
            let lost = results.iter().filter(|r| matches!(r, Ok(Err(StorageError::AlreadyExists { .. })))).count();
            assert_eq!((won, lost), (1, 7), "{url}");
        }
    }

    #[test]
    fn open_file_splits_a_path_into_folder_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.csv.gz");
        let (bucket, key) = Bucket::open_file(&path.to_string_lossy()).unwrap();
        assert_eq!(key.as_str(), "train.csv.gz");
        assert_eq!(bucket.url(), dir.path().to_string_lossy());
        assert!(Bucket::open("ftp://example").is_err());
    }
}
