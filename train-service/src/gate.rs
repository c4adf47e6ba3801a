//! The gate every completed run that is not a draft goes through: scored with
//! the production champion on the run's own evaluation rows, against the
//! version's lifecycle rules, and then promoted, held for a person, or rejected,
//! as one event in the version's history.

use std::fmt;

use crs_domain::data::Observations;
use crs_domain::lifecycle::{GateScores, LifecycleConfig, Promotion, gate};
use crs_domain::metrics::score;
use crs_domain::models::{ModelVer, ParamError};
use crs_platform::error::{Classify, ErrorKind};
use crs_platform::registry::catalog::{Catalog, CatalogError};
use crs_platform::registry::events::{AppendError, Change, GateNumbers, RunStage};
use crs_platform::registry::runs::{LoadError, RunMetadata};
use crs_platform::storage::layout;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Attempts when another replica changes the history between reading and writing it.
const ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the champion: {0}")]
    Champion(#[from] LoadError),
    #[error("scoring the champion on the run's evaluation rows: {0}")]
    Features(#[from] crs_domain::features::FeatureError),
    #[error(transparent)]
    Lifecycle(#[from] ParamError),
    #[error(transparent)]
    Storage(#[from] crs_platform::storage::bucket::StorageError),
}

impl Classify for GateError {
    fn kind(&self) -> ErrorKind {
        match self {
            GateError::Catalog(e) => e.kind(),
            GateError::Champion(e) => e.kind(),
            GateError::Features(e) => e.kind(),
            GateError::Lifecycle(e) => e.kind(),
            GateError::Storage(e) => e.kind(),
        }
    }
}

/// What the gate did with a run, as its job and its cycle carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateOutcome {
    /// The stage the gate left the run in: production (promoted), candidate
    /// (passed and held for a person, or the gate could not decide), or rejected.
    pub stage: RunStage,
    /// Why, in words.
    pub reason: String,
}

impl GateOutcome {
    /// Whether the run became production.
    pub fn promoted(&self) -> bool {
        self.stage == RunStage::Production
    }
}

/// `<stage>: <reason>`, the text job and cycle records hold.
impl fmt::Display for GateOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.reason)
    }
}

impl Serialize for GateOutcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GateOutcome {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (stage, reason) = text
            .split_once(": ")
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not \"<stage>: <reason>\"")))?;
        let stage = stage.parse().map_err(serde::de::Error::custom)?;
        Ok(GateOutcome { stage, reason: reason.to_owned() })
    }
}

/// The version's lifecycle rules from the bucket; a missing file means the defaults.
pub async fn lifecycle_config(catalog: &Catalog, model_ver: ModelVer) -> Result<LifecycleConfig, GateError> {
    let key = layout::lifecycle_key(model_ver);
    let text = catalog.bucket().get_if_exists(&key).await?;
    let text = text.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(LifecycleConfig::parse(key.as_str(), text.as_deref())?)
}

/// Gates `run`, whose evaluation rows are `eval`, and records the outcome.
pub async fn gate_run(
    catalog: &Catalog,
    run: &RunMetadata,
    eval: &Observations,
    by: &str,
) -> Result<GateOutcome, GateError> {
    let config = lifecycle_config(catalog, run.model_ver).await?;
    let log = catalog.log(run.model_ver);
    let mut attempt = 1;
    loop {
        let history = catalog.history(run.model_ver).await?;
        let champion = history.production().cloned();
        let champion_metrics = match &champion {
            Some(id) if *id != run.run_id => {
                let loaded = catalog.store().load(run.model_ver, id).await?;
                let predicted = loaded.model.predict(&eval.rows)?;
                Some(score(&predicted, &eval.clicks, &eval.conversions))
            }
            _ => None,
        };
        let eval_metrics = &run.metrics.eval;
        let scores = GateScores {
            challenger: eval_metrics.model,
            champion: champion_metrics,
            device_baseline: eval_metrics.device,
            global_baseline: eval_metrics.global,
        };
        let decision = gate(&scores, config.margin);
        let held = config.promotion == Promotion::Manual || history.auto_promotion_paused();
        let (stage, change, reason) = match (decision.passed, held) {
            (true, false) => (
                RunStage::Production,
                Change::Promote { run_id: run.run_id.clone(), previous: champion.clone() },
                decision.reason.clone(),
            ),
            (true, true) => (
                RunStage::Candidate,
                Change::Stage { run_id: run.run_id.clone(), stage: RunStage::Candidate },
                format!("{}; waiting for crctl promote", decision.reason),
            ),
            (false, _) => (
                RunStage::Rejected,
                Change::Stage { run_id: run.run_id.clone(), stage: RunStage::Rejected },
                decision.reason.clone(),
            ),
        };
        let numbers = GateNumbers {
            champion,
            eval_weeks: run.weeks.as_ref().map(|w| w.eval.clone()),
            logloss: scores.challenger.logloss,
            margin: config.margin,
            scores,
        };
        match log.append(history.next_seq(), by, &reason, change, Some(numbers)).await {
            Ok(_) => {
                tracing::info!(model_ver = %run.model_ver, run_id = %run.run_id, %stage, %reason, "gated");
                return Ok(GateOutcome { stage, reason });
            }
            // Someone changed the history meanwhile: decide again against it.
            Err(AppendError::Conflict { .. }) if attempt < ATTEMPTS => attempt += 1,
            Err(e) => return Err(CatalogError::from(e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_stored_as_its_stage_and_reason() {
        let could_not = "\"candidate: the gate could not decide: the champion: no such run\"";
        let outcome: GateOutcome = serde_json::from_str(could_not).unwrap();
        assert_eq!(outcome.stage, RunStage::Candidate);
        assert_eq!(outcome.reason, "the gate could not decide: the champion: no such run");
        assert!(!outcome.promoted());
        assert_eq!(serde_json::to_string(&outcome).unwrap(), could_not);
        assert!(serde_json::from_str::<GateOutcome>("\"production: first\"").unwrap().promoted());
        for bad in ["\"prodution: first\"", "\"production\"", "\"\""] {
            assert!(serde_json::from_str::<GateOutcome>(bad).is_err(), "{bad}");
        }
    }
}
