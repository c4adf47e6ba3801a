//! Deterministic crash points for the crash tests: when a service's hidden
//! `CRS_FAIL_AT` setting names a step, the process aborts there, as `kill -9`
//! would, so a test can check what a restart finds at exactly that point.
//!
//! Every step is named in [`STEPS`], like every key in `layout.rs`, so that a
//! test can walk them all and a mistyped name is refused at startup rather
//! than never firing.

/// Every fail point: a cycle's, in the order a cycle that trains and promotes
/// reaches them, then a batch prediction's (serve-service's `PredictBatch` and a
/// cycle's batch step alike).
pub const STEPS: [&str; 13] = [
    // An incoming file's rows are written, its ledger entry is not.
    INGEST_ROWS_WRITTEN,
    // The cycle's ingestion is over.
    "cycle:ingest",
    // The production run has been scored on the new weeks.
    "cycle:drift",
    // A run's artifact and checksum are written, its metadata is not.
    RUN_ARTIFACT_WRITTEN,
    // A run's metadata is written, so the run is complete; its index entry and LATEST are not.
    RUN_SAVED,
    // A run is complete and LATEST moved; the gate has not recorded its decision.
    JOB_SAVED,
    // The cycle's run is trained and gated (promoted or not); the cycle's record does not say so yet.
    "cycle:train",
    // The batch prediction of the new production run is written.
    "cycle:batch",
    // The cycle's report is written, the version's report index is not.
    CYCLE_REPORT_WRITTEN,
    // Every report is written; the cycle's final record is not.
    "cycle:report",
    // A batch's output upload is open and holds output; nothing is at the output key.
    BATCH_UPLOAD_STARTED,
    // Every row is predicted and handed to the upload; the upload is not completed.
    BATCH_PREDICTED,
    // The output is complete at its key; the batch is not reported (log, webhook, metrics) yet.
    BATCH_OUTPUT_WRITTEN,
];

/// The batch steps of [`STEPS`].
pub const BATCH_STEPS: [&str; 3] = [BATCH_UPLOAD_STARTED, BATCH_PREDICTED, BATCH_OUTPUT_WRITTEN];

pub const INGEST_ROWS_WRITTEN: &str = "ingest:rows-written";
pub const RUN_ARTIFACT_WRITTEN: &str = "run:artifact-written";
pub const RUN_SAVED: &str = "run:saved";
pub const JOB_SAVED: &str = "job:saved";
pub const CYCLE_REPORT_WRITTEN: &str = "cycle:report-written";
pub const BATCH_UPLOAD_STARTED: &str = "batch:upload-started";
pub const BATCH_PREDICTED: &str = "batch:predicted";
pub const BATCH_OUTPUT_WRITTEN: &str = "batch:output-written";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown fail point {0:?} (known: {known})", known = STEPS.join(", "))]
pub struct UnknownFailPoint(String);

/// The step to abort at, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailPoint(Option<&'static str>);

impl FailPoint {
    /// No step, for an empty or missing setting; otherwise one of [`STEPS`].
    pub fn new(step: Option<&str>) -> Result<Self, UnknownFailPoint> {
        match step.filter(|s| !s.is_empty()) {
            None => Ok(FailPoint(None)),
            Some(step) => {
                STEPS.iter().find(|s| **s == step).map(|s| FailPoint(Some(s))).ok_or(UnknownFailPoint(step.to_owned()))
            }
        }
    }

    /// Aborts the process if `step` is the configured one.
    pub fn check(&self, step: &str) {
        debug_assert!(STEPS.contains(&step), "fail point {step} is not in STEPS");
        if self.0 == Some(step) {
            eprintln!("fail point {step}: aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_steps_are_accepted() {
        assert_eq!(FailPoint::new(None).unwrap(), FailPoint::default());
        assert_eq!(FailPoint::new(Some("")).unwrap(), FailPoint::default());
        assert_eq!(FailPoint::new(Some("cycle:train")).unwrap(), FailPoint(Some("cycle:train")));
        let err = FailPoint::new(Some("cycle:trian")).unwrap_err().to_string();
        assert!(err.starts_with("unknown fail point \"cycle:trian\" (known: ingest:rows-written, "), "{err}");
        // A step that is not the configured one passes.
        FailPoint::new(Some("cycle:train")).unwrap().check("cycle:report");
    }
}
