//! A model version's history: every change of a run's stage and of its
//! `production` alias, as an append-only log of immutable, numbered events
//! (`history/<ver>/<seq>.json`).
//!
//! Appending writes entry `n + 1` with create-if-absent after reading up to
//! `n`, so of two replicas changing the same version at once exactly one
//! succeeds and the other learns it lost ([`AppendError::Conflict`]) instead of
//! overwriting: no alias update is ever lost, on a folder, in memory or on S3.
//! The current stage of every run and the run `production` points at are the
//! log replayed ([`History`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use crs_domain::lifecycle::GateScores;
use crs_domain::models::ModelVer;
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Classify, ErrorKind};
use crate::storage::bucket::{Bucket, StorageError};
use crate::storage::layout::{ModelKey, RunId, sequence_number};

/// Where a run is in its life: its stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStage {
    /// A development run: never served unless loaded by id, never gated.
    Draft,
    /// Complete, waiting for (or passed and waiting after) the gate.
    Candidate,
    /// What `production` points at.
    Production,
    /// Was production, or was kept after a newer one replaced it.
    Archived,
    /// Failed the gate; kept with its numbers.
    Rejected,
}

impl RunStage {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStage::Draft => "draft",
            RunStage::Candidate => "candidate",
            RunStage::Production => "production",
            RunStage::Archived => "archived",
            RunStage::Rejected => "rejected",
        }
    }
}

impl fmt::Display for RunStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`RunStage`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0:?} is not a run stage")]
pub struct UnknownStage(String);

impl std::str::FromStr for RunStage {
    type Err = UnknownStage;

    /// The stage of a name as [`RunStage::as_str`] writes it, for records that keep it in text.
    fn from_str(name: &str) -> Result<Self, UnknownStage> {
        let all = [RunStage::Draft, RunStage::Candidate, RunStage::Production, RunStage::Archived, RunStage::Rejected];
        all.into_iter().find(|stage| stage.as_str() == name).ok_or_else(|| UnknownStage(name.to_owned()))
    }
}

/// One change, with who made it and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// Who or what: `cycle <id>`, `job <id>`, `crctl promote`, `migration`.
    pub by: String,
    pub reason: String,
    pub change: Change,
    /// The numbers a gate decision rests on; absent from changes made by hand.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "keys_sorted")]
    pub numbers: Option<GateNumbers>,
}

/// What the gate weighed when it decided about a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateNumbers {
    /// Production when the gate decided, if there was one.
    pub champion: Option<RunId>,
    /// The weeks the run was judged on (absent for runs not trained on ingested weeks).
    pub eval_weeks: Option<Vec<i64>>,
    /// The run's log-loss on its evaluation rows: what a later drift check
    /// compares a production run's log-loss on new weeks with.
    pub logloss: f64,
    pub margin: f64,
    pub scores: GateScores,
}

/// Writes the numbers with every object's keys sorted, as events have always
/// held them (they were built as a `serde_json::Value` before they had a type),
/// so that a rewritten event is byte for byte what was read.
fn keys_sorted<S: Serializer>(numbers: &Option<GateNumbers>, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(numbers).map_err(serde::ser::Error::custom)?.serialize(serializer)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A run's stage is set (a candidate held for manual promotion, a rejection).
    Stage { run_id: RunId, stage: RunStage },
    /// `production` moves to `run_id`; the run it leaves becomes archived.
    Promote { run_id: RunId, previous: Option<RunId> },
    /// `production` goes back to `run_id`; `demoted` becomes archived, and
    /// automatic promotion pauses until the next promotion by hand.
    Rollback { run_id: RunId, demoted: RunId },
}

/// The log replayed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    events: Vec<Event>,
}

impl History {
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The number the next event must have.
    pub fn next_seq(&self) -> u64 {
        self.events.last().map_or(1, |e| e.seq + 1)
    }

    /// What `production` points at, if anything yet.
    pub fn production(&self) -> Option<&RunId> {
        self.events.iter().rev().find_map(|e| match &e.change {
            Change::Promote { run_id, .. } | Change::Rollback { run_id, .. } => Some(run_id),
            Change::Stage { .. } => None,
        })
    }

    /// The event that made the current production run production.
    pub fn production_event(&self) -> Option<&Event> {
        self.events.iter().rev().find(|e| matches!(e.change, Change::Promote { .. } | Change::Rollback { .. }))
    }

    /// Every run `production` has pointed at, oldest first, repeats included.
    pub fn alias_history(&self) -> Vec<&RunId> {
        self.events
            .iter()
            .filter_map(|e| match &e.change {
                Change::Promote { run_id, .. } | Change::Rollback { run_id, .. } => Some(run_id),
                Change::Stage { .. } => None,
            })
            .collect()
    }

    /// Where a rollback goes: the latest earlier production run that is
    /// neither the current one nor one a rollback demoted.
    pub fn rollback_target(&self) -> Option<&RunId> {
        let current = self.production()?;
        let demoted: Vec<&RunId> = self
            .events
            .iter()
            .filter_map(|e| match &e.change {
                Change::Rollback { demoted, .. } => Some(demoted),
                _ => None,
            })
            .collect();
        self.alias_history().into_iter().rev().find(|run| *run != current && !demoted.contains(run))
    }

    /// A run's stage as the log has it; `None` for a run the log never names.
    pub fn stage(&self, run: &RunId) -> Option<RunStage> {
        let mut stage = None;
        for event in &self.events {
            match &event.change {
                Change::Stage { run_id, stage: s } if run_id == run => stage = Some(*s),
                Change::Stage { .. } => {}
                Change::Promote { run_id, previous } => {
                    if run_id == run {
                        stage = Some(RunStage::Production);
                    } else if previous.as_ref() == Some(run) {
                        stage = Some(RunStage::Archived);
                    }
                }
                Change::Rollback { run_id, demoted } => {
                    if run_id == run {
                        stage = Some(RunStage::Production);
                    } else if demoted == run {
                        stage = Some(RunStage::Archived);
                    }
                }
            }
        }
        stage
    }

    /// The last event that names `run`.
    pub fn last_event_of(&self, run: &RunId) -> Option<&Event> {
        self.events.iter().rev().find(|e| match &e.change {
            Change::Stage { run_id, .. } => run_id == run,
            Change::Promote { run_id, previous } => run_id == run || previous.as_ref() == Some(run),
            Change::Rollback { run_id, demoted } => run_id == run || demoted == run,
        })
    }

    /// Automatic promotion is paused from a rollback until the next promotion by hand.
    pub fn auto_promotion_paused(&self) -> bool {
        for event in self.events.iter().rev() {
            match &event.change {
                Change::Rollback { .. } => return true,
                // Automatic promotions only happen while not paused, so any promotion ends a pause.
                Change::Promote { .. } => return false,
                Change::Stage { .. } => {}
            }
        }
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "model {model_ver}: the history changed while this change was decided (event {seq} was written by someone else)"
    )]
    Conflict { model_ver: ModelVer, seq: u64 },
    #[error("{key}: not a history event: {message}")]
    Malformed { key: String, message: String },
}

impl Classify for AppendError {
    fn kind(&self) -> ErrorKind {
        match self {
            AppendError::Storage(e) => e.kind(),
            AppendError::Conflict { .. } => ErrorKind::Conflict,
            AppendError::Malformed { .. } => ErrorKind::Internal,
        }
    }
}

/// The event log of one model version. Events never change once written, so
/// the ones already read are kept and only new ones are fetched.
#[derive(Clone, Debug)]
pub struct EventLog {
    bucket: Bucket,
    model_ver: ModelVer,
    seen: Arc<Mutex<BTreeMap<u64, Event>>>,
}

impl EventLog {
    pub fn new(bucket: Bucket, model_ver: ModelVer) -> Self {
        EventLog { bucket, model_ver, seen: Arc::default() }
    }

    pub async fn read(&self) -> Result<History, AppendError> {
        let keys = self.bucket.list(&ModelKey::new(self.model_ver).events()).await?;
        let known: Vec<u64> = self.seen.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for key in keys {
            let Some(seq) = sequence_number(&key) else { continue };
            if known.binary_search(&seq).is_ok() {
                continue;
            }
            let bytes = self.bucket.get(&key).await?;
            let event: Event = serde_json::from_slice(&bytes)
                .map_err(|e| AppendError::Malformed { key: key.to_string(), message: e.to_string() })?;
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(seq, event);
        }
        let events = self.seen.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        Ok(History { events })
    }

    /// Appends `change` as event `seq`, which must be the history's
    /// [`History::next_seq`] as the caller read it when deciding.
    pub async fn append(
        &self,
        seq: u64,
        by: &str,
        reason: &str,
        change: Change,
        numbers: Option<GateNumbers>,
    ) -> Result<Event, AppendError> {
        let event = Event { seq, at: Utc::now(), by: by.to_owned(), reason: reason.to_owned(), change, numbers };
        let key = ModelKey::new(self.model_ver).event(seq);
        let bytes = serde_json::to_vec_pretty(&event).expect("events are plain serde data");
        match self.bucket.create(&key, bytes).await {
            Ok(()) => {
                self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(seq, event.clone());
                Ok(event)
            }
            Err(StorageError::AlreadyExists { .. }) => Err(AppendError::Conflict { model_ver: self.model_ver, seq }),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u32) -> RunId {
        RunId::parse(&format!("20260101T000000{n:03}Z-aaaaaa")).unwrap()
    }

    async fn log() -> EventLog {
        EventLog::new(Bucket::open("memory://").unwrap(), ModelVer::parse("v1").unwrap())
    }

    #[tokio::test]
    async fn promotions_rollbacks_and_stages_replay_in_order() {
        let log = log().await;
        let promote = |previous: Option<RunId>, next: RunId| Change::Promote { run_id: next, previous };
        log.append(1, "cycle c1", "first candidate", promote(None, run(1)), None).await.unwrap();
        log.append(2, "cycle c2", "beat the champion", promote(Some(run(1)), run(2)), None).await.unwrap();
        let stage = Change::Stage { run_id: run(3), stage: RunStage::Rejected };
        log.append(3, "cycle c3", "worse than the champion", stage, None).await.unwrap();
        let history = log.read().await.unwrap();
        assert_eq!(history.production(), Some(&run(2)));
        assert_eq!(history.stage(&run(1)), Some(RunStage::Archived));
        assert_eq!(history.stage(&run(3)), Some(RunStage::Rejected));
        assert_eq!(history.stage(&run(9)), None);
        assert!(!history.auto_promotion_paused());

        let target = history.rollback_target().cloned().unwrap();
        assert_eq!(target, run(1));
        let rollback = Change::Rollback { run_id: target, demoted: run(2) };
        log.append(history.next_seq(), "crctl rollback", "bad numbers", rollback, None).await.unwrap();
        let history = log.read().await.unwrap();
        assert_eq!(history.production(), Some(&run(1)));
        assert_eq!(history.stage(&run(2)), Some(RunStage::Archived));
        assert!(history.auto_promotion_paused());
        assert_eq!(history.rollback_target(), None, "no earlier production run that was not demoted");

        log.append(5, "crctl promote", "fixed", promote(Some(run(1)), run(3)), None).await.unwrap();
        let history = log.read().await.unwrap();
        assert!(!history.auto_promotion_paused(), "a promotion by hand resumes automatic promotion");
        assert_eq!(history.rollback_target(), Some(&run(1)));
    }

    #[tokio::test]
    async fn of_two_writers_deciding_on_the_same_history_one_loses() {
        let log = log().await;
        let seq = log.read().await.unwrap().next_seq();
        let first = Change::Promote { run_id: run(1), previous: None };
        let second = Change::Promote { run_id: run(2), previous: None };
        log.append(seq, "a", "a", first, None).await.unwrap();
        let err = log.append(seq, "b", "b", second, None).await.unwrap_err();
        assert!(matches!(err, AppendError::Conflict { seq: 1, .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        // Another reader of the same bucket sees the winner.
        let other = EventLog::new(log.bucket.clone(), log.model_ver);
        assert_eq!(other.read().await.unwrap().production(), Some(&run(1)));
    }
}
