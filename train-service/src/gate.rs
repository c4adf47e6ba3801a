//! The gate every completed run that is not a draft goes through: scored with
//! the production champion on the run's own evaluation rows, against the
//! version's lifecycle rules, and then promoted, held for a person, or rejected,
//! as one event in the version's history.

use crs_domain::data::Observations;
use crs_domain::lifecycle::{GateDecision, GateScores, LifecycleConfig, Promotion, gate};
use crs_domain::metrics::score;
use crs_domain::models::{ModelVer, ParamError};
use crs_platform::registry::catalog::{Catalog, CatalogError};
use crs_platform::error::{Classify, ErrorKind};
use crs_platform::registry::events::{AppendError, Change, Stage};
use crs_platform::storage::layout::{self, RunId};
use crs_platform::registry::runs::{LoadError, RunMetadata};

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

/// What the gate did with a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Gated {
    pub stage: Stage,
    pub decision: GateDecision,
    pub champion: Option<RunId>,
}

/// The version's lifecycle rules from the bucket; a missing file means the defaults.
pub async fn lifecycle_config(catalog: &Catalog, model_ver: ModelVer) -> Result<LifecycleConfig, GateError> {
    let key = layout::lifecycle_key(model_ver);
    let text = catalog.store().bucket().get_if_exists(&key).await?;
    let text = text.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(LifecycleConfig::parse(key.as_str(), text.as_deref())?)
}

/// Gates `run`, whose evaluation rows are `eval`, and records the outcome.
pub async fn gate_run(catalog: &Catalog, run: &RunMetadata, eval: &Observations, by: &str) -> Result<Gated, GateError> {
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
                Stage::Production,
                Change::Promote { run_id: run.run_id.clone(), previous: champion.clone() },
                decision.reason.clone(),
            ),
            (true, true) => (
                Stage::Candidate,
                Change::Stage { run_id: run.run_id.clone(), stage: Stage::Candidate },
                format!("{}; waiting for crctl promote", decision.reason),
            ),
            (false, _) => (
                Stage::Rejected,
                Change::Stage { run_id: run.run_id.clone(), stage: Stage::Rejected },
                decision.reason.clone(),
            ),
        };
        let numbers = serde_json::json!({
            "logloss": scores.challenger.logloss,
            "scores": scores,
            "margin": config.margin,
            "champion": champion,
            "eval_weeks": run.weeks.as_ref().map(|w| w.eval.clone()),
        });
        match log.append(history.next_seq(), by, &reason, change, Some(numbers)).await {
            Ok(_) => {
                tracing::info!(model_ver = %run.model_ver, run_id = %run.run_id, %stage, %reason, "gated");
                return Ok(Gated { stage, decision: GateDecision { reason, ..decision }, champion });
            }
            // Someone changed the history meanwhile: decide again against it.
            Err(AppendError::Conflict { .. }) if attempt < ATTEMPTS => attempt += 1,
            Err(e) => return Err(CatalogError::from(e).into()),
        }
    }
}
