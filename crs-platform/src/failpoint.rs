//! Deterministic crash points for the crash tests: when a service's hidden
//! `CRS_FAIL_AT` setting names a step, the process aborts there, as `kill -9`
//! would, so a test can check what a restart finds at exactly that point.
//!
//! Every step is a [`FailStep`], listed in [`FailStep::ALL`] like every key in
//! `layout.rs`, so that a test can walk them all, code can only name a step
//! that exists, and a mistyped setting is refused at startup rather than
//! never firing.

use std::fmt;

/// One point where a process may be made to abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailStep {
    /// An incoming file's rows are written, its ledger entry is not.
    IngestRowsWritten,
    /// The cycle's ingestion is over.
    CycleIngest,
    /// The production run has been scored on the new weeks.
    CycleDrift,
    /// A run's artifact and checksum are written, its metadata is not.
    RunArtifactWritten,
    /// A run's metadata is written, so the run is complete; its index entry and LATEST are not.
    RunSaved,
    /// A run is complete and LATEST moved; the gate has not recorded its decision.
    JobSaved,
    /// The cycle's run is trained and gated (promoted or not); the cycle's record does not say so yet.
    CycleTrain,
    /// The batch prediction of the new production run is written.
    CycleBatch,
    /// The cycle's report is written, the version's report index is not.
    CycleReportWritten,
    /// Every report is written; the cycle's final record is not.
    CycleReport,
    /// A batch's output upload is open and holds output; nothing is at the output key.
    BatchUploadStarted,
    /// Every row is predicted and handed to the upload; the upload is not completed.
    BatchPredicted,
    /// The output is complete at its key; the batch is not reported (log, webhook, metrics) yet.
    BatchOutputWritten,
}

impl FailStep {
    /// Every fail point: a cycle's, in the order a cycle that trains and
    /// promotes reaches them, then a batch prediction's (serve-service's
    /// `PredictBatch` and a cycle's batch step alike).
    pub const ALL: [FailStep; 13] = [
        FailStep::IngestRowsWritten,
        FailStep::CycleIngest,
        FailStep::CycleDrift,
        FailStep::RunArtifactWritten,
        FailStep::RunSaved,
        FailStep::JobSaved,
        FailStep::CycleTrain,
        FailStep::CycleBatch,
        FailStep::CycleReportWritten,
        FailStep::CycleReport,
        FailStep::BatchUploadStarted,
        FailStep::BatchPredicted,
        FailStep::BatchOutputWritten,
    ];

    /// The batch steps of [`FailStep::ALL`].
    pub const BATCH: [FailStep; 3] =
        [FailStep::BatchUploadStarted, FailStep::BatchPredicted, FailStep::BatchOutputWritten];

    /// The step's name in `CRS_FAIL_AT`.
    pub fn name(self) -> &'static str {
        match self {
            FailStep::IngestRowsWritten => "ingest:rows-written",
            FailStep::CycleIngest => "cycle:ingest",
            FailStep::CycleDrift => "cycle:drift",
            FailStep::RunArtifactWritten => "run:artifact-written",
            FailStep::RunSaved => "run:saved",
            FailStep::JobSaved => "job:saved",
            FailStep::CycleTrain => "cycle:train",
            FailStep::CycleBatch => "cycle:batch",
            FailStep::CycleReportWritten => "cycle:report-written",
            FailStep::CycleReport => "cycle:report",
            FailStep::BatchUploadStarted => "batch:upload-started",
            FailStep::BatchPredicted => "batch:predicted",
            FailStep::BatchOutputWritten => "batch:output-written",
        }
    }
}

impl fmt::Display for FailStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown fail point {0:?} (known: {known})", known = known())]
pub struct UnknownFailPoint(String);

fn known() -> String {
    FailStep::ALL.map(FailStep::name).join(", ")
}

/// The step to abort at, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailPoint(Option<FailStep>);

impl FailPoint {
    /// No step, for an empty or missing setting; otherwise the step the setting names.
    pub fn new(step: Option<&str>) -> Result<Self, UnknownFailPoint> {
        match step.filter(|s| !s.is_empty()) {
            None => Ok(FailPoint(None)),
            Some(name) => FailStep::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .map(|s| FailPoint(Some(s)))
                .ok_or(UnknownFailPoint(name.to_owned())),
        }
    }

    /// Aborts the process if `step` is the configured one.
    pub fn check(&self, step: FailStep) {
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
        assert_eq!(FailPoint::new(Some("cycle:train")).unwrap(), FailPoint(Some(FailStep::CycleTrain)));
        let err = FailPoint::new(Some("cycle:trian")).unwrap_err().to_string();
        assert!(err.starts_with("unknown fail point \"cycle:trian\" (known: ingest:rows-written, "), "{err}");
        // A step that is not the configured one passes.
        FailPoint::new(Some("cycle:train")).unwrap().check(FailStep::CycleReport);
        // Every step's name leads back to it, and no step is listed twice.
        let mut names = FailStep::ALL.map(FailStep::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FailStep::ALL.len());
        for step in FailStep::ALL {
            assert_eq!(FailPoint::new(Some(step.name())).unwrap(), FailPoint(Some(step)));
        }
    }
}
