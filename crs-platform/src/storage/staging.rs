//! Upload staging files that a killed process leaves in a local bucket.
//!
//! object_store's local backend writes every upload, plain or multipart, to a
//! staging file `<key>#<n>` beside its destination and renames it into place
//! when the upload completes; a process killed in between leaves that file
//! behind (invisible to listings, but on disk). A live upload of another
//! replica looks the same, so only files untouched for longer than a threshold
//! are removed. On S3 a bucket lifecycle rule aborts stale multipart uploads
//! instead (docs/containers-and-s3.md, "Stale multipart uploads").

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::storage::bucket::Bucket;

/// Staging files untouched for this long are a dead process's: an hour.
pub const DEFAULT_STALE_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
#[error("cleaning upload staging files: {path}: {source}")]
pub struct StagingError {
    path: String,
    #[source]
    source: io::Error,
}

/// Removes the staging files under a local bucket's folder that have not been
/// written to for more than `older_than`; returns them. Buckets that are not
/// local have none.
pub fn remove_stale(bucket: &Bucket, older_than: Duration) -> Result<Vec<PathBuf>, StagingError> {
    let mut removed = Vec::new();
    if let Some(dir) = bucket.local_dir() {
        let now = SystemTime::now();
        walk(dir, &mut |path, modified| {
            if is_staging_file(path) && now.duration_since(modified).unwrap_or_default() > older_than {
                // Gone already: its upload completed or was aborted meanwhile.
                match std::fs::remove_file(path) {
                    Ok(()) => removed.push(path.to_owned()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
    }
    Ok(removed)
}

/// [`remove_stale`] at a service's startup: what it removes is logged, and a
/// failure is only a warning, since the leftovers harm nothing but disk space.
pub fn clean_at_startup(bucket: &Bucket, older_than: Duration) {
    match remove_stale(bucket, older_than) {
        Ok(removed) => {
            for path in &removed {
                tracing::info!(path = %path.display(), "removed a stale upload staging file");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not remove stale upload staging files"),
    }
}

/// `<name>#<digits>`, the local backend's staging name (any other `#` is part of a key).
fn is_staging_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.rsplit_once('#').is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

/// Calls `visit` with every regular file under `dir` and its modification time.
/// Symbolic links are not followed.
fn walk(dir: &Path, visit: &mut impl FnMut(&Path, SystemTime) -> io::Result<()>) -> Result<(), StagingError> {
    let error = |path: &Path| {
        let path = path.display().to_string();
        move |source| StagingError { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Removed while we walk (a run deleted by retention, say).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(error(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(error(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(error(&path))?;
        if file_type.is_dir() {
            walk(&path, visit)?;
        } else if file_type.is_file() {
            let modified = match entry.metadata().and_then(|m| m.modified()) {
                Ok(modified) => modified,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(error(&path)(e)),
            };
            visit(&path, modified).map_err(error(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    fn file(path: &Path, age: Duration) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = File::create(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn only_staging_files_older_than_the_threshold_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let stale = dir.path().join("data/predict/output/a.csv.gz#1");
        let live = dir.path().join("data/predict/output/b.csv.gz#2");
        let old_object = dir.path().join("model/v1/LATEST");
        let hash_in_key = dir.path().join("data/predict/output/c#v2.csv");
        file(&stale, 2 * hour);
        file(&live, Duration::ZERO);
        file(&old_object, 2 * hour);
        file(&hash_in_key, 2 * hour);

        let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
        assert_eq!(remove_stale(&bucket, hour).unwrap(), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.exists() && old_object.exists() && hash_in_key.exists());
        assert_eq!(remove_stale(&Bucket::open("memory://").unwrap(), Duration::ZERO).unwrap(), Vec::<PathBuf>::new());
    }
}
