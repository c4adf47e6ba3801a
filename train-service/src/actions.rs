//! What a person does to a version's runs, one function per action, for
//! every face that offers it (the gRPC methods and the console's JSON API):
//! promote a run, roll production back, score a labelled file with production.
//! Each change is one event in the version's history with who and why.

use crs_domain::data::{DataFile, TrainingTable};
use crs_domain::evaluation::{Baselines, Evaluation};
use crs_domain::models::ModelVer;
use crs_platform::registry::catalog::{Catalog, CatalogError};
use crs_platform::registry::events::{Change, Event};
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::RunId;

use crate::status::ApiError;

/// Who acted and why, as the history records it; empty fields take defaults.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    pub by: String,
    pub reason: String,
}

impl Actor {
    fn or(self, by: &str, reason: &str) -> (String, String) {
        let pick = |text: String, default: &str| if text.trim().is_empty() { default.to_owned() } else { text };
        (pick(self.by, by), pick(self.reason, reason))
    }
}

/// Makes `run` production of `model_ver`; refuses a run that is not stored or already production.
pub async fn promote(catalog: &Catalog, model_ver: ModelVer, run: RunId, actor: Actor) -> Result<Event, ApiError> {
    let runs = catalog.runs(model_ver).await?;
    if !runs.runs.iter().any(|r| r.metadata.run_id == run) {
        return Err(ApiError::UnknownRun { model_ver: model_ver.to_string(), run_id: run.to_string() });
    }
    let history = catalog.history(model_ver).await?;
    let previous = history.production().cloned();
    if previous.as_ref() == Some(&run) {
        return Err(ApiError::Precondition(format!("run {run} is already production")));
    }
    let (by, reason) = actor.or("crctl promote", "promoted by hand");
    let change = Change::Promote { run_id: run, previous };
    Ok(catalog
        .log(model_ver)
        .append(history.next_seq(), &by, &reason, change, None)
        .await
        .map_err(CatalogError::from)?)
}

/// Moves production of `model_ver` back to the run it replaced.
pub async fn rollback(catalog: &Catalog, model_ver: ModelVer, actor: Actor) -> Result<Event, ApiError> {
    let history = catalog.history(model_ver).await?;
    let (Some(current), Some(target)) = (history.production().cloned(), history.rollback_target().cloned()) else {
        return Err(ApiError::Precondition(format!("model {model_ver} has no earlier production run to go back to")));
    };
    let (by, reason) = actor.or("crctl rollback", "rolled back by hand");
    let change = Change::Rollback { run_id: target, demoted: current };
    Ok(catalog
        .log(model_ver)
        .append(history.next_seq(), &by, &reason, change, None)
        .await
        .map_err(CatalogError::from)?)
}

/// Production of `model_ver` scored on the labelled file at `key`, with the
/// baselines fitted on that file's rows (how much the model adds on it).
pub async fn score(catalog: &Catalog, model_ver: ModelVer, key: &BucketKey) -> Result<(RunId, Evaluation), ApiError> {
    let production = catalog
        .production(model_ver)
        .await?
        .ok_or_else(|| ApiError::Precondition(format!("model {model_ver} has no production run")))?;
    let loaded = catalog.store().load(model_ver, &production).await?;
    let bytes = catalog.bucket().get(key).await?;
    let file = DataFile { name: key.to_string(), bytes };
    let evaluation = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut table = TrainingTable::read(&file.name, std::io::Cursor::new(file.bytes.clone()))?;
        let rows = table.observations()?;
        Ok(Baselines::fit(&rows).evaluate(&loaded.model, &rows)?)
    })
    .await
    .map_err(|e| ApiError::Precondition(e.to_string()))??;
    Ok((production, evaluation))
}
