//! The runs of each model version with their stages and aliases: the stored
//! runs (`runs`) read together with the version's event log (`events`).
//!
//! `production` is the newest promotion in the log. A bucket written before
//! stages existed has `LATEST` and no log; the first reader that needs
//! `production` migrates it once by promoting what `LATEST` points at (an
//! event written with create-if-absent, so two readers cannot both do it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crs_domain::models::ModelVer;

use crate::error::{Classify, ErrorKind};
use crate::failpoint::FailPoint;
use crate::registry::events::{AppendError, Change, Event, EventLog, History, RunStage};
use crate::registry::reference::References;
use crate::registry::runs::{LoadError, ModelStore, RunMetadata};
use crate::storage::bucket::{Bucket, StorageError};
use crate::storage::layout::RunId;

/// `by` of the migration event.
pub const MIGRATION: &str = "migration";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Runs(#[from] LoadError),
    #[error(transparent)]
    History(#[from] AppendError),
}

impl Classify for CatalogError {
    fn kind(&self) -> ErrorKind {
        match self {
            CatalogError::Storage(e) => e.kind(),
            CatalogError::Runs(e) => e.kind(),
            CatalogError::History(e) => e.kind(),
        }
    }
}

/// One run as listings show it.
#[derive(Clone, Debug)]
pub struct RunEntry {
    pub metadata: RunMetadata,
    pub stage: RunStage,
    /// `production` and/or `latest`, when they point at this run.
    pub aliases: Vec<&'static str>,
    /// The change that set the stage, if the log has one.
    pub stage_event: Option<Event>,
}

#[derive(Clone, Debug)]
pub struct RunList {
    pub model_ver: ModelVer,
    pub production: Option<RunId>,
    pub latest: Option<RunId>,
    /// Oldest first.
    pub runs: Vec<RunEntry>,
}

/// Runs, stages and aliases of every version in one bucket.
#[derive(Clone, Debug)]
pub struct Catalog {
    store: ModelStore,
    references: References,
    logs: Arc<Mutex<HashMap<ModelVer, EventLog>>>,
}

impl Catalog {
    pub fn new(store: ModelStore) -> Self {
        Catalog { references: References::new(store.clone()), store, logs: Arc::default() }
    }

    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    /// Runs' scores on reference sets, with the caches every reader shares.
    pub fn references(&self) -> &References {
        &self.references
    }

    /// The bucket the runs are in, which also holds everything else the
    /// services keep: job and cycle records, reports, ingested data.
    pub fn bucket(&self) -> &Bucket {
        self.store.bucket()
    }

    /// Where writes through this catalog abort for the crash tests: the same
    /// fail point as its store's runs.
    pub fn fail_point(&self) -> &FailPoint {
        self.store.fail_point()
    }

    /// The version's event log; one per version, so its cache of events is shared.
    pub fn log(&self, model_ver: ModelVer) -> EventLog {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry(model_ver).or_insert_with(|| EventLog::new(self.store.bucket().clone(), model_ver)).clone()
    }

    /// The version's history, after migrating a bucket from before stages.
    pub async fn history(&self, model_ver: ModelVer) -> Result<History, CatalogError> {
        let log = self.log(model_ver);
        let history = log.read().await?;
        if !history.events().is_empty() {
            return Ok(history);
        }
        let Some(latest) = self.store.latest(model_ver).await? else { return Ok(history) };
        let metadata = self.store.metadata(model_ver, &latest).await?;
        if metadata.stage.is_some() {
            // Written with stages: its LATEST was never meant to be production by itself.
            return Ok(history);
        }
        let change = Change::Promote { run_id: latest, previous: None };
        match log.append(1, MIGRATION, "the bucket had LATEST and no production alias", change, None).await {
            Ok(_) | Err(AppendError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(log.read().await?)
    }

    pub async fn production(&self, model_ver: ModelVer) -> Result<Option<RunId>, CatalogError> {
        Ok(self.history(model_ver).await?.production().cloned())
    }

    pub async fn runs(&self, model_ver: ModelVer) -> Result<RunList, CatalogError> {
        let history = self.history(model_ver).await?;
        let latest = self.store.latest(model_ver).await?;
        let production = history.production().cloned();
        let runs = self
            .store
            .runs(model_ver)
            .await?
            .into_iter()
            .map(|metadata| {
                let run = &metadata.run_id;
                // Runs from before stages, never promoted: kept, not in play.
                let stage = history.stage(run).or(metadata.stage).unwrap_or(RunStage::Archived);
                let mut aliases = Vec::new();
                if production.as_ref() == Some(run) {
                    aliases.push("production");
                }
                if latest.as_ref() == Some(run) {
                    aliases.push("latest");
                }
                let stage_event = history.last_event_of(run).cloned();
                RunEntry { stage, aliases, stage_event, metadata }
            })
            .collect();
        Ok(RunList { model_ver, production, latest, runs })
    }
}
