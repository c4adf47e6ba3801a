//! Keeps every run of a version scored on the version's reference set
//! (`reference_key` in its `lifecycle.yaml`; see
//! `crs_platform::registry::reference`): a new run is scored when its job
//! saves it, and each cycle scores the kept runs that have no score on the
//! file as it is now (runs from before the key was set, or before the file
//! changed). Scoring is best effort: a run or a cycle never fails for it.

use crs_domain::models::ModelVer;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::reference::{ReferenceError, ReferenceScore, ReferenceSet};
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::RunId;

use crate::gate::{GateError, lifecycle_config};

/// Why a version's reference set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceSetError {
    #[error(transparent)]
    Config(#[from] GateError),
    #[error("config/{model_ver}/lifecycle.yaml: reference_key {key:?}: {source}")]
    Key { model_ver: ModelVer, key: String, source: crs_platform::storage::bucket::KeyError },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

impl crs_platform::error::Classify for ReferenceSetError {
    fn kind(&self) -> crs_platform::error::ErrorKind {
        match self {
            ReferenceSetError::Config(e) => e.kind(),
            ReferenceSetError::Key { .. } => crs_platform::error::ErrorKind::Precondition,
            ReferenceSetError::Reference(e) => e.kind(),
        }
    }
}

/// The version's reference set as it is now; `None` when `lifecycle.yaml` names none.
pub async fn reference_set(catalog: &Catalog, model_ver: ModelVer) -> Result<Option<ReferenceSet>, ReferenceSetError> {
    let config = lifecycle_config(catalog, model_ver).await?;
    let Some(key) = config.reference_key else { return Ok(None) };
    let key = BucketKey::parse(&key).map_err(|source| ReferenceSetError::Key { model_ver, key, source })?;
    Ok(Some(catalog.references().resolve(&key).await?))
}

/// Scores a run its job has just saved, if the version has a reference set.
pub async fn score_new_run(catalog: &Catalog, model_ver: ModelVer, run: &RunId) -> Option<ReferenceScore> {
    let scored = async {
        let Some(set) = reference_set(catalog, model_ver).await? else { return Ok(None) };
        Ok::<_, ReferenceSetError>(Some(catalog.references().score(model_ver, run, &set).await?))
    };
    match scored.await {
        Ok(score) => score,
        Err(e) => {
            tracing::warn!(%model_ver, run_id = %run, error = %e, "could not score the run on the reference set");
            None
        }
    }
}

/// Scores every listed run of the version that has no score on the reference
/// set as it is now; returns how many it scored.
pub async fn score_unscored_runs(catalog: &Catalog, model_ver: ModelVer) -> Result<usize, ReferenceSetError> {
    let Some(set) = reference_set(catalog, model_ver).await? else { return Ok(0) };
    let kept = catalog.references().kept(model_ver, &set).await?;
    let runs = catalog.runs(model_ver).await.map_err(GateError::from)?;
    let mut scored = 0;
    for entry in runs.runs.iter().filter(|entry| !kept.contains_key(&entry.metadata.run_id)) {
        let run = &entry.metadata.run_id;
        match catalog.references().score(model_ver, run, &set).await {
            Ok(_) => scored += 1,
            // One run that cannot be scored (it reads attributes the file lacks) does not stop the rest.
            Err(e) => {
                tracing::warn!(%model_ver, run_id = %run, error = %e, "could not score a run on the reference set")
            }
        }
    }
    Ok(scored)
}
