//! Trend points: one small record per cycle per version
//! (`trends/<ver>/<cycle_id>.json`), kept by their own retention (a year by
//! default) long after the cycle's record and report are gone, and read back
//! as a time series by [`series`]: the one function `crctl monitor`, the
//! cycle reports, the report index and the console chart from.
//!
//! Scores in a point are on the version's fixed reference set
//! (`reference_key`), so that points of different cycles compare; a cycle
//! without one records none rather than a score on rows that move.

use chrono::{DateTime, Utc};
use crs_domain::lifecycle::{DriftLevel, DriftReport, LiveDriftReport};
use crs_domain::models::ModelVer;
use serde::{Deserialize, Serialize};

use crate::registry::runs::StageTiming;
use crate::storage::bucket::{Bucket, BucketKey, StorageError};
use crate::storage::layout::{self, RunId};

/// What one cycle saw and decided, in numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    pub cycle_id: RunId,
    pub model_ver: ModelVer,
    /// When the cycle ended.
    pub at: DateTime<Utc>,
    /// `succeeded`, `failed`, `cancelled`.
    pub state: String,
    pub decision: String,
    pub production_run_id: Option<RunId>,
    /// The run the cycle trained, if any.
    pub trained_run_id: Option<RunId>,
    pub ingest: IngestCounts,
    pub drift: Option<DriftNumbers>,
    /// What production served since its promotion, when any of it was captured.
    #[serde(default)]
    pub live: Option<LiveNumbers>,
    /// Whether the version was in drift after the cycle (on new weeks or live
    /// traffic): alerts go out when this changes from one point to the next.
    #[serde(default)]
    pub in_drift: bool,
    /// Production's score on the reference set when the cycle ended.
    pub reference: Option<ReferencePoint>,
    /// Rows serve-service captured for the version since the previous point.
    pub captured_rows: Option<u64>,
    pub timings: Vec<StageTiming>,
}

/// The files and rows one cycle ingested.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestCounts {
    pub files: usize,
    pub rejected_files: usize,
    /// New rows added.
    pub rows: u64,
}

/// The headline numbers of a drift check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftNumbers {
    pub drifted: bool,
    pub weeks: Vec<i64>,
    pub logloss: f64,
    pub reference_logloss: Option<f64>,
    pub device_psi: f64,
    pub max_attribute_psi: f64,
    pub unseen_keyword_share: f64,
}

impl From<&DriftReport> for DriftNumbers {
    fn from(report: &DriftReport) -> Self {
        DriftNumbers {
            drifted: report.drifted,
            weeks: report.weeks.clone(),
            logloss: report.logloss,
            reference_logloss: report.reference_logloss,
            device_psi: report.shift.device_psi,
            max_attribute_psi: report.shift.max_attribute_psi(),
            unseen_keyword_share: report.shift.unseen_keyword_share,
        }
    }
}

/// The headline numbers of a live check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveNumbers {
    pub rows: usize,
    pub level: DriftLevel,
    pub device_psi: f64,
    pub max_attribute_psi: f64,
    pub prediction_psi: f64,
    pub unseen_keyword_share: f64,
    /// Click-weighted log-loss of the captured answers on labels that came later.
    pub labelled_logloss: Option<f64>,
    pub calibration: Option<f64>,
}

impl LiveNumbers {
    /// The largest of its PSIs: device mix, attributes, predicted rates.
    pub fn largest_psi(&self) -> f64 {
        self.device_psi.max(self.max_attribute_psi).max(self.prediction_psi)
    }
}

impl From<&LiveDriftReport> for LiveNumbers {
    fn from(report: &LiveDriftReport) -> Self {
        LiveNumbers {
            rows: report.rows,
            level: report.level,
            device_psi: report.shift.device_psi,
            max_attribute_psi: report.shift.max_attribute_psi(),
            prediction_psi: report.prediction_psi,
            unseen_keyword_share: report.shift.unseen_keyword_share,
            labelled_logloss: report.labelled.as_ref().map(|l| l.logloss),
            calibration: report.labelled.as_ref().map(|l| l.calibration),
        }
    }
}

/// A run's click-weighted log-loss on the reference file (named by its hash:
/// points on another file do not compare).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferencePoint {
    pub key: String,
    pub sha256: String,
    pub run_id: RunId,
    pub logloss: f64,
    pub device_baseline_logloss: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrendError {
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl TrendPoint {
    pub fn key(&self) -> BucketKey {
        layout::trend_point(self.model_ver, &self.cycle_id)
    }

    /// Only the cycle's lease holder writes its point, so a plain write suffices.
    pub async fn save(&self, bucket: &Bucket) -> Result<(), StorageError> {
        bucket.put(&self.key(), serde_json::to_vec_pretty(self).expect("trend points are plain serde data")).await
    }
}

/// Every kept trend point of `model_ver`, oldest first. A point that cannot be
/// read is skipped (and logged): one bad object must not hide the series.
pub async fn series(bucket: &Bucket, model_ver: ModelVer) -> Result<Vec<TrendPoint>, TrendError> {
    newest(bucket, model_ver, usize::MAX).await
}

/// The newest `count` trend points of `model_ver`, oldest first: a year of
/// hourly cycles keeps thousands, and a chart or the previous point needs
/// only the last few. Only those points are read.
pub async fn newest(bucket: &Bucket, model_ver: ModelVer, count: usize) -> Result<Vec<TrendPoint>, TrendError> {
    let mut keys: Vec<BucketKey> =
        bucket.list(&layout::trends(model_ver)).await?.into_iter().filter(|key| layout::id_of(key).is_some()).collect();
    // A point's key is its cycle id, which starts with the cycle's start time.
    keys.sort();
    let keys = &keys[keys.len().saturating_sub(count)..];
    let mut points = Vec::new();
    for (key, bytes) in keys.iter().zip(bucket.get_each_if_exists(keys).await) {
        let Some(bytes) = bytes? else { continue };
        match serde_json::from_slice::<TrendPoint>(&bytes) {
            Ok(point) => points.push(point),
            Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable trend point"),
        }
    }
    points.sort_by(|a, b| a.cycle_id.cmp(&b.cycle_id));
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn points_read_back_oldest_first_and_a_bad_one_is_skipped() {
        let bucket = Bucket::open("memory://").unwrap();
        let v1 = ModelVer::parse("v1").unwrap();
        let point = |id: &str, logloss: f64| TrendPoint {
            cycle_id: RunId::parse(id).unwrap(),
            model_ver: v1,
            at: Utc::now(),
            state: "succeeded".into(),
            decision: "kept production".into(),
            production_run_id: None,
            trained_run_id: None,
            ingest: IngestCounts::default(),
            drift: None,
            live: None,
            in_drift: false,
            reference: Some(ReferencePoint {
                key: "data/reference.csv".into(),
                sha256: "ab".into(),
                run_id: RunId::parse("20261201T000000000Z-abcdef").unwrap(),
                logloss,
                device_baseline_logloss: 0.3,
            }),
            captured_rows: Some(5),
            timings: vec![],
        };
        let (second, first) = (point("20261202T000000000Z-bbbbbb", 0.2), point("20261201T000000000Z-aaaaaa", 0.25));
        second.save(&bucket).await.unwrap();
        first.save(&bucket).await.unwrap();
        let bad = layout::trend_point(v1, &RunId::parse("20261203T000000000Z-cccccc").unwrap());
        bucket.put(&bad, "{").await.unwrap();
        assert_eq!(series(&bucket, v1).await.unwrap(), vec![first.clone(), second.clone()]);
        assert!(series(&bucket, ModelVer::parse("v0").unwrap()).await.unwrap().is_empty());

        // The newest few: only those are read, so the unreadable newest one
        // leaves fewer, never older ones in its place.
        assert_eq!(newest(&bucket, v1, 2).await.unwrap(), vec![second.clone()]);
        let third = point("20261204T000000000Z-dddddd", 0.22);
        third.save(&bucket).await.unwrap();
        assert_eq!(newest(&bucket, v1, 3).await.unwrap(), vec![second, third.clone()]);
        assert_eq!(newest(&bucket, v1, 1).await.unwrap(), vec![third]);
        assert!(newest(&bucket, v1, 0).await.unwrap().is_empty());
    }
}
