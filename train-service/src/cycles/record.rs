//! A cycle's record in the bucket: what it ingested, its drift numbers, its
//! decision, the runs involved and how long each step took.

use std::fmt;

use chrono::{DateTime, Utc};
use crs_domain::lifecycle::{DriftReport, LiveDriftReport};
use crs_domain::models::ModelVer;
use crs_platform::failpoint::FailStep;
use crs_platform::lifecycle::ingest::LedgerEntry;
use crs_platform::lifecycle::inputs::IngestedSplit;
use crs_platform::lifecycle::retention::Swept;
use crs_platform::registry::runs::StageTiming;
use crs_platform::storage::bucket::{Bucket, StorageError};
use crs_platform::storage::layout::{self, RunId};
use serde::{Deserialize, Serialize};

use crate::gate::GateOutcome;
use crate::jobs::Cancellation;
use crate::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl CycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            CycleState::Running => "running",
            CycleState::Succeeded => "succeeded",
            CycleState::Failed => "failed",
            CycleState::Cancelled => "cancelled",
        }
    }
}

/// The steps of a cycle, in the order a cycle reaches them; drift, train and
/// batch are skipped when there is nothing for them to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleStep {
    /// The record is written; no step has begun.
    Starting,
    Ingest,
    Drift,
    /// Production's captured traffic and late labels against what it learnt from.
    Live,
    Train,
    Batch,
    Retention,
    Report,
}

impl CycleStep {
    /// The step's name in records, timings and the wire.
    pub fn name(self) -> &'static str {
        match self {
            CycleStep::Starting => "starting",
            CycleStep::Ingest => "ingest",
            CycleStep::Drift => "drift",
            CycleStep::Live => "live",
            CycleStep::Train => "train",
            CycleStep::Batch => "batch",
            CycleStep::Retention => "retention",
            CycleStep::Report => "report",
        }
    }

    /// Where the crash tests abort a cycle at the step's end, for the steps
    /// whose end changes the bucket.
    pub fn fail_point(self) -> Option<FailStep> {
        match self {
            // Live reads and writes nothing but the record.
            CycleStep::Starting | CycleStep::Live | CycleStep::Retention => None,
            CycleStep::Ingest => Some(FailStep::CycleIngest),
            CycleStep::Drift => Some(FailStep::CycleDrift),
            CycleStep::Train => Some(FailStep::CycleTrain),
            CycleStep::Batch => Some(FailStep::CycleBatch),
            CycleStep::Report => Some(FailStep::CycleReport),
        }
    }
}

impl fmt::Display for CycleStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CycleRecord {
    pub cycle_id: RunId,
    pub model_ver: ModelVer,
    pub state: CycleState,
    /// Who started it: `schedule`, `crctl cycle`, ...
    pub by: String,
    /// The step running now, or the last one reached.
    pub step: CycleStep,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What it decided, in words.
    pub decision: String,
    /// The run it trained, if any.
    pub run_id: Option<RunId>,
    /// Production when it ended.
    pub production_run_id: Option<RunId>,
    pub error: Option<String>,
    /// The files it ingested.
    pub ingested: Vec<LedgerEntry>,
    pub drift: Option<DriftReport>,
    /// What production served since it was promoted (absent without captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveDriftReport>,
    /// The gate's decision about the run it trained.
    pub gate: Option<GateOutcome>,
    /// How the run it trained was judged: on the newest weeks, or for a first
    /// run from too few weeks, on held-out keywords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<IngestedSplit>,
    pub batch_output: Option<String>,
    pub report_key: Option<String>,
    pub timings: Vec<StageTiming>,
    /// What the retention step deleted (absent in records from before it, or if it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Swept>,
    /// Who cancelled the cycle and why, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancellation>,
}

impl CycleRecord {
    pub fn new(cycle_id: RunId, model_ver: ModelVer, by: &str) -> Self {
        CycleRecord {
            cycle_id,
            model_ver,
            state: CycleState::Running,
            by: by.to_owned(),
            step: CycleStep::Starting,
            started_at: Utc::now(),
            finished_at: None,
            decision: String::new(),
            run_id: None,
            production_run_id: None,
            error: None,
            ingested: Vec::new(),
            drift: None,
            live: None,
            gate: None,
            split: None,
            batch_output: None,
            report_key: None,
            timings: Vec::new(),
            retention: None,
            cancelled: None,
        }
    }

    pub fn key(&self) -> crs_platform::storage::bucket::BucketKey {
        layout::cycle_record(self.model_ver, &self.cycle_id)
    }

    /// Only the lease holder writes a cycle's record, so plain writes suffice.
    pub async fn save(&self, bucket: &Bucket) -> Result<(), StorageError> {
        bucket.put(&self.key(), serde_json::to_vec_pretty(self).expect("records are plain serde data")).await
    }

    pub async fn load(bucket: &Bucket, model_ver: ModelVer, cycle_id: &RunId) -> Result<CycleRecord, ApiError> {
        let key = layout::cycle_record(model_ver, cycle_id);
        let bytes = match bucket.get(&key).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => return Err(ApiError::UnknownCycle(cycle_id.to_string())),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRecord { key: key.to_string(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_stored_by_its_name_and_read_back() {
        let steps = [
            CycleStep::Starting,
            CycleStep::Ingest,
            CycleStep::Drift,
            CycleStep::Live,
            CycleStep::Train,
            CycleStep::Batch,
            CycleStep::Retention,
            CycleStep::Report,
        ];
        for step in steps {
            let stored = serde_json::to_value(step).unwrap();
            assert_eq!(stored, step.name(), "{step:?}");
            assert_eq!(serde_json::from_value::<CycleStep>(stored).unwrap(), step);
        }
        assert!(serde_json::from_value::<CycleStep>("trian".into()).is_err());
    }
}
