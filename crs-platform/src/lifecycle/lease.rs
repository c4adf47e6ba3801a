//! Leases shared through the bucket: at most one holder at a time across every
//! process on the bucket, with an expiry so that a holder killed mid-work
//! blocks the others only until its lease runs out.
//!
//! A lease is a log of numbered records (`leases/<name>/<seq>.json`), each
//! written with create-if-absent: taking, renewing and releasing all write the
//! next number, and the highest record says who holds the lease until when.
//! Two processes racing for the next number cannot both win, so a holder that
//! fails to renew knows at once that it has lost the lease.
//!
//! Releasing deletes the records below the release, so that a lease taken
//! every few minutes does not fill its folder. A holder frozen for longer than
//! its ttl could then write a number that was deleted; renewing therefore also
//! checks that what it wrote is the newest record, and finds out it lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};
use crate::storage::bucket::{Bucket, StorageError};
use crate::storage::layout::{lease_prefix, lease_record, sequence_number};

/// The newest record of a lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub seq: u64,
    /// What holds it, e.g. a cycle id; shown to whoever is refused.
    pub holder: String,
    pub expires_at: DateTime<Utc>,
    /// Given back before expiry.
    pub released: bool,
}

impl LeaseRecord {
    fn is_held(&self, now: DateTime<Utc>) -> bool {
        !self.released && self.expires_at > now
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("lease {name} is held by {holder} until {expires_at}")]
    Busy { name: String, holder: String, expires_at: DateTime<Utc> },
    #[error("lease {name} was lost: someone else wrote record {seq}")]
    Lost { name: String, seq: u64 },
    #[error("{key}: not a lease record: {message}")]
    Malformed { key: String, message: String },
}

impl Classify for LeaseError {
    fn kind(&self) -> ErrorKind {
        match self {
            LeaseError::Storage(e) => e.kind(),
            LeaseError::Busy { .. } | LeaseError::Lost { .. } => ErrorKind::Conflict,
            LeaseError::Malformed { .. } => ErrorKind::Internal,
        }
    }
}

/// A lease this process holds. Renew it well within `ttl`; release it when done.
#[derive(Debug)]
pub struct Lease {
    bucket: Bucket,
    name: String,
    holder: String,
    ttl: Duration,
    seq: u64,
}

/// The newest record of lease `name`, if it was ever taken.
pub async fn current(bucket: &Bucket, name: &str) -> Result<Option<LeaseRecord>, LeaseError> {
    let mut pruned = 0;
    loop {
        let keys = bucket.list(&lease_prefix(name)).await?;
        let Some(key) = keys.into_iter().filter(|k| sequence_number(k).is_some()).max_by_key(sequence_number) else {
            return Ok(None);
        };
        let bytes = match bucket.get(&key).await {
            Ok(bytes) => bytes,
            // A release between our listing and our read pruned the record we
            // picked, after writing a newer one: list again to find that one.
            Err(StorageError::NotFound { .. }) if pruned < MAX_PRUNED_READS => {
                pruned += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        return serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LeaseError::Malformed { key: key.to_string(), message: e.to_string() });
    }
}

/// How many times [`current`] lists again after a release pruned the record it
/// picked; each retry needs another whole take-and-release in between.
const MAX_PRUNED_READS: usize = 16;

impl Lease {
    /// Takes lease `name` for `holder` unless someone holds it now.
    pub async fn acquire(bucket: &Bucket, name: &str, holder: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        let now = Utc::now();
        let newest = current(bucket, name).await?;
        if let Some(record) = newest.as_ref().filter(|r| r.is_held(now)) {
            return Err(LeaseError::Busy {
                name: name.to_owned(),
                holder: record.holder.clone(),
                expires_at: record.expires_at,
            });
        }
        let seq = newest.map_or(1, |r| r.seq + 1);
        let lease = Lease { bucket: bucket.clone(), name: name.to_owned(), holder: holder.to_owned(), ttl, seq };
        match lease.write(seq, false).await {
            Ok(()) => Ok(lease),
            // Someone took it between our read and our write.
            Err(LeaseError::Lost { .. }) => match current(bucket, name).await? {
                Some(record) => Err(LeaseError::Busy {
                    name: name.to_owned(),
                    holder: record.holder,
                    expires_at: record.expires_at,
                }),
                None => Err(LeaseError::Lost { name: name.to_owned(), seq }),
            },
            Err(e) => Err(e),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Extends the lease by its ttl from now; [`LeaseError::Lost`] if it expired
    /// and someone else took it meanwhile.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        let seq = self.seq + 1;
        self.write(seq, false).await?;
        self.seq = seq;
        match current(&self.bucket, &self.name).await? {
            Some(newest) if newest.seq == seq => Ok(()),
            newest => Err(LeaseError::Lost { name: self.name.clone(), seq: newest.map_or(seq, |r| r.seq) }),
        }
    }

    /// Gives the lease back, so the next holder need not wait for the expiry.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.write(self.seq + 1, true).await?;
        self.seq += 1;
        for key in self.bucket.list(&lease_prefix(&self.name)).await? {
            if sequence_number(&key).is_some_and(|seq| seq < self.seq) {
                self.bucket.delete(&key).await?;
            }
        }
        Ok(())
    }

    async fn write(&self, seq: u64, released: bool) -> Result<(), LeaseError> {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let record = LeaseRecord { seq, holder: self.holder.clone(), expires_at: Utc::now() + ttl, released };
        let bytes = serde_json::to_vec(&record).expect("lease records are plain serde data");
        match self.bucket.create(&lease_record(&self.name, seq), bytes).await {
            Ok(()) => Ok(()),
            Err(StorageError::AlreadyExists { .. }) => Err(LeaseError::Lost { name: self.name.clone(), seq }),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_holder_at_a_time_until_release() {
        let bucket = Bucket::open("memory://").unwrap();
        let mut first = Lease::acquire(&bucket, "cycle-v1", "cycle a", TTL).await.unwrap();
        let busy = Lease::acquire(&bucket, "cycle-v1", "cycle b", TTL).await.unwrap_err();
        assert!(matches!(&busy, LeaseError::Busy { holder, .. } if holder == "cycle a"), "{busy}");
        first.renew().await.unwrap();
        assert!(Lease::acquire(&bucket, "cycle-v2", "cycle c", TTL).await.is_ok(), "leases are independent");
        first.release().await.unwrap();
        let second = Lease::acquire(&bucket, "cycle-v1", "cycle b", TTL).await.unwrap();
        assert_eq!(current(&bucket, "cycle-v1").await.unwrap().unwrap().holder, second.holder());
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_old_holder_finds_out() {
        let bucket = Bucket::open("memory://").unwrap();
        let mut stale = Lease::acquire(&bucket, "cycle-v1", "killed", Duration::ZERO).await.unwrap();
        let taken = Lease::acquire(&bucket, "cycle-v1", "next", TTL).await.unwrap();
        assert_eq!(taken.holder(), "next");
        let err = stale.renew().await.unwrap_err();
        assert!(matches!(err, LeaseError::Lost { .. }), "{err}");
    }

    #[tokio::test]
    async fn release_keeps_only_the_newest_record_and_a_stale_holder_still_finds_out() {
        let bucket = Bucket::open("memory://").unwrap();
        for holder in ["a", "b", "c"] {
            let mut lease = Lease::acquire(&bucket, "cycle-v1", holder, TTL).await.unwrap();
            lease.renew().await.unwrap();
            lease.release().await.unwrap();
        }
        let keys = bucket.list(&lease_prefix("cycle-v1")).await.unwrap();
        assert_eq!(keys, vec![lease_record("cycle-v1", 9)]);

        // A holder frozen past its ttl, whose next number was pruned away.
        let mut frozen = Lease::acquire(&bucket, "cycle-v1", "frozen", Duration::ZERO).await.unwrap();
        let mut next = Lease::acquire(&bucket, "cycle-v1", "next", TTL).await.unwrap();
        next.renew().await.unwrap();
        next.release().await.unwrap();
        assert_eq!(frozen.seq, 10);
        assert!(!bucket.exists(&lease_record("cycle-v1", 11)).await.unwrap(), "pruned");
        let err = frozen.renew().await.unwrap_err();
        assert!(matches!(err, LeaseError::Lost { seq: 13, .. }), "{err}");
        let newest = current(&bucket, "cycle-v1").await.unwrap().unwrap();
        assert_eq!((newest.seq, newest.holder.as_str(), newest.released), (13, "next", true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reading_the_lease_while_others_take_and_release_it_never_fails() {
        // Files, on several threads: the reads and the releases really interleave.
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open(dir.path().to_str().unwrap()).unwrap();
        let churn = {
            let bucket = bucket.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    let lease = Lease::acquire(&bucket, "cycle-v1", &format!("cycle {i}"), TTL).await.unwrap();
                    lease.release().await.unwrap();
                }
            })
        };
        let readers = (0..3).map(|_| {
            let bucket = bucket.clone();
            let done = churn.abort_handle();
            tokio::spawn(async move {
                let mut reads = 0;
                while !done.is_finished() {
                    current(&bucket, "cycle-v1").await.unwrap();
                    reads += 1;
                }
                reads
            })
        });
        let reads: Vec<usize> = futures::future::try_join_all(readers).await.unwrap();
        churn.await.unwrap();
        assert!(reads.iter().all(|&n| n > 10), "the reads ran alongside the releases: {reads:?}");
    }

    #[tokio::test]
    async fn of_many_racers_exactly_one_takes_the_lease() {
        let bucket = Bucket::open("memory://").unwrap();
        let racers = (0..8).map(|i| {
            let bucket = bucket.clone();
            tokio::spawn(async move { Lease::acquire(&bucket, "ingest", &format!("racer {i}"), TTL).await })
        });
        let results = futures::future::join_all(racers).await;
        let winners = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(winners, 1);
        assert!(results.iter().all(|r| matches!(r, Ok(Ok(_) | Err(LeaseError::Busy { .. })))), "{results:?}");
    }
}
