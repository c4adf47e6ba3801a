//! Ingestion through the bucket: new files become rows once, whatever their
//! names; bad files are rejected whole; everything is in the ledger.

use std::io::Cursor;
use std::time::Duration;

use crs_domain::data::TrainingTable;
use crs_domain::data::synth::{SynthSpec, write_week};
use crs_platform::failpoint::FailPoint;
use crs_platform::lifecycle::ingest::{IngestError, LedgerEntry, Outcome, ingested_data, ledger};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout;

const TTL: Duration = Duration::from_secs(60);

async fn ingest_new(
    bucket: &Bucket,
    incoming: &BucketKey,
    holder: &str,
    ttl: Duration,
) -> Result<Vec<LedgerEntry>, IngestError> {
    crs_platform::lifecycle::ingest::ingest_new(bucket, incoming, holder, ttl, &FailPoint::default()).await
}

fn week(week: i64) -> Vec<u8> {
    let mut csv = Vec::new();
    write_week(&SynthSpec { first_entity: 1, keywords: 40, attributes: 6, seed: 3 }, week, false, &mut csv).unwrap();
    csv
}

fn key(k: &str) -> BucketKey {
    BucketKey::parse(k).unwrap()
}

#[tokio::test]
async fn files_are_ingested_once_and_bad_ones_are_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
    let incoming = key("data/incoming");
    bucket.put(&key("data/incoming/week1.csv"), week(1)).await.unwrap();
    bucket.put(&key("data/incoming/week2.csv"), week(2)).await.unwrap();
    let first = ingest_new(&bucket, &incoming, "test", TTL).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|e| e.outcome == Outcome::Ingested && e.rows.used == e.rows.read && e.rows.used > 0));
    assert_eq!(first[1].weeks, vec![2]);

    // Nothing new: nothing happens.
    assert!(ingest_new(&bucket, &incoming, "test", TTL).await.unwrap().is_empty());

    // A renamed copy, a file repeating rows, and a broken file.
    bucket.put(&key("data/incoming/copy-of-week2.csv"), week(2)).await.unwrap();
    let mut mixed = week(3);
    mixed.extend(week(2).split(|&b| b == b'\n').skip(1).take(5).flat_map(|l| [l, b"\n"].concat()));
    bucket.put(&key("data/incoming/week3.csv"), mixed).await.unwrap();
    let broken = "entity_id,att1,att2,att3,att4,att5,att6,device,week,Clicks,Conversions\n1,0,0,0,0,0,0,Computer,4,3,1\n2,0,0,0,0,0,0,Fridge,4,3,1\n";
    bucket.put(&key("data/incoming/week4.csv"), broken).await.unwrap();
    let second = ingest_new(&bucket, &incoming, "test", TTL).await.unwrap();
    let by_key = |k: &str| second.iter().find(|e| e.key == k).unwrap().clone();
    let copy = by_key("data/incoming/copy-of-week2.csv");
    assert_eq!((copy.outcome, copy.rows.used), (Outcome::SameContent, 0));
    assert!(copy.message.unwrap().contains("data/incoming/week2.csv"));
    let week3 = by_key("data/incoming/week3.csv");
    assert_eq!(week3.outcome, Outcome::Ingested);
    assert_eq!((week3.rows.duplicate, week3.rows.conflict), (5, 0));
    assert_eq!(week3.rows.used, week3.rows.read - 5);
    let week4 = by_key("data/incoming/week4.csv");
    assert_eq!(week4.outcome, Outcome::Rejected);
    assert_eq!(
        week4.message.as_deref(),
        Some(
            "data/incoming/week4.csv: row 2, column 'device': unknown device \"Fridge\" (expected Computer, Smartphone or Tablet)"
        )
    );
    assert!(!dir.path().join(format!("bucket/data/ingested/{:010}.csv.gz", week4.seq)).exists());

    let all = ledger(&bucket).await.unwrap();
    assert_eq!(all.len(), 5);
    let data = ingested_data(&bucket).await.unwrap().expect("ingested rows");
    let mut table = TrainingTable::read(&data.name, Cursor::new(data.bytes.clone())).unwrap();
    assert_eq!(table.weeks().unwrap(), vec![1, 2, 3]);
    let used: u64 = all.iter().map(|e| e.rows.used).sum();
    assert_eq!(table.counts.read, used);
    assert_eq!(table.counts.duplicates_dropped, 0, "no row is ingested twice");
    let week1 = table.observations_of_weeks(|w| w == 1).unwrap();
    assert_eq!(week1.len() as u64, first[0].rows.used - zero_click_rows(&week(1)));
}

fn zero_click_rows(csv: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(csv);
    text.lines().skip(1).filter(|l| l.split(',').rev().nth(1) == Some("0")).count() as u64
}

#[tokio::test]
async fn two_ingestions_at_once_do_not_both_run() {
    let bucket = Bucket::open("memory://").unwrap();
    bucket.put(&key("data/incoming/week1.csv"), week(1)).await.unwrap();
    let incoming = key("data/incoming");
    let (a, b) = tokio::join!(ingest_new(&bucket, &incoming, "a", TTL), ingest_new(&bucket, &incoming, "b", TTL));
    let added: usize = [&a, &b].iter().filter_map(|r| r.as_ref().ok()).map(Vec::len).sum();
    assert_eq!(added, 1, "{a:?} {b:?}");
    assert_eq!(ledger(&bucket).await.unwrap().len(), 1);
}

/// A crash between writing a file's rows and its ledger entry leaves a rows
/// object no entry names: it is not ingested data, and the next ingestion
/// replaces it rather than adding its rows twice.
#[tokio::test]
async fn rows_without_a_ledger_entry_do_not_count_and_are_replaced() {
    let bucket = Bucket::open("memory://").unwrap();
    let incoming = key("data/incoming");
    bucket.put(&key("data/incoming/week1.csv"), week(1)).await.unwrap();
    ingest_new(&bucket, &incoming, "test", TTL).await.unwrap();
    let before = ingested_data(&bucket).await.unwrap().unwrap().bytes;

    // What the crashed ingestion of week 2 left: its rows at the next number.
    let orphan = layout::ingested_rows(2);
    bucket.put(&orphan, bucket.get(&layout::ingested_rows(1)).await.unwrap()).await.unwrap();
    assert_eq!(ingested_data(&bucket).await.unwrap().unwrap().bytes, before, "unreferenced rows are not data");

    bucket.put(&key("data/incoming/week2.csv"), week(2)).await.unwrap();
    let added = ingest_new(&bucket, &incoming, "test", TTL).await.unwrap();
    assert_eq!((added.len(), added[0].seq, added[0].weeks.clone()), (1, 2, vec![2]));
    let data = ingested_data(&bucket).await.unwrap().unwrap();
    let table = TrainingTable::read(&data.name, Cursor::new(data.bytes.clone())).unwrap();
    assert_eq!(table.weeks().unwrap(), vec![1, 2]);
    assert_eq!(table.counts.duplicates_dropped, 0, "week 1 was not added again");
    let used: u64 = ledger(&bucket).await.unwrap().iter().map(|e| e.rows.used).sum();
    assert_eq!(table.counts.read, used);
}
