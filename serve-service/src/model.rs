//! The model being served, and how it changes: loaded at start, swapped when
//! LATEST moves or `LoadModel` asks, never replaced by a run that fails to load.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use crs_domain::models::ModelVer;
use crs_platform::bucket::{KeyError, StorageError};
use crs_platform::catalog::Catalog;
use crs_platform::layout::RunId;
use crs_platform::runs::{LoadError, LoadedRun, ModelStore};
use crs_platform::webhook::{Notice, Notifier, Outcome};
use tokio::sync::watch;

use crate::metrics::ServeMetrics;
use crate::status::ServeError;

/// Which run of a version to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Follow the version's production alias.
    Production,
    /// Follow model/<version>/LATEST: the newest complete run of any stage.
    Latest,
    Run(RunId),
}

impl FromStr for Selection {
    type Err = KeyError;

    /// `production` (or empty), `latest`, or a run id.
    fn from_str(run: &str) -> Result<Self, KeyError> {
        match run.trim() {
            "" | "production" => Ok(Selection::Production),
            "latest" => Ok(Selection::Latest),
            id => Ok(Selection::Run(RunId::parse(id)?)),
        }
    }
}

impl Selection {
    pub fn describe(&self) -> String {
        match self {
            Selection::Production => "production".to_owned(),
            Selection::Latest => "latest".to_owned(),
            Selection::Run(id) => id.to_string(),
        }
    }
}

/// A loaded run and how it was selected.
#[derive(Debug)]
pub struct Serving {
    pub run: LoadedRun,
    pub selection: Selection,
    pub loaded_at: DateTime<Utc>,
}

impl Serving {
    pub fn model_ver(&self) -> ModelVer {
        self.run.metadata.model_ver
    }

    pub fn run_id(&self) -> &RunId {
        &self.run.metadata.run_id
    }
}

#[derive(Debug)]
pub struct ModelSlot {
    catalog: Catalog,
    /// Swapped whole: a request holds its own `Arc` and finishes on the model it started with.
    current: RwLock<Option<Arc<Serving>>>,
    /// What the poller follows.
    wanted: Mutex<(ModelVer, Selection)>,
    /// Runs that failed to load, reported once and not retried.
    refused: Mutex<HashSet<(ModelVer, RunId)>>,
    /// Set by an unload: the poller stays away until something is loaded again.
    unloaded: Mutex<bool>,
    /// Whether a model is in, for whoever reports health.
    loaded: watch::Sender<bool>,
    notifier: Notifier,
    metrics: Arc<ServeMetrics>,
}

impl ModelSlot {
    pub fn new(
        catalog: Catalog,
        model_ver: ModelVer,
        selection: Selection,
        notifier: Notifier,
        metrics: Arc<ServeMetrics>,
    ) -> Self {
        ModelSlot {
            catalog,
            current: RwLock::new(None),
            wanted: Mutex::new((model_ver, selection)),
            refused: Mutex::default(),
            unloaded: Mutex::new(false),
            loaded: watch::Sender::new(false),
            notifier,
            metrics,
        }
    }

    pub fn store(&self) -> &ModelStore {
        self.catalog.store()
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// `true` while a model is in: from the first swap until an unload.
    pub fn loaded(&self) -> watch::Receiver<bool> {
        self.loaded.subscribe()
    }

    pub fn current(&self) -> Option<Arc<Serving>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The model requests should use, or why there is none.
    pub fn require(&self) -> Result<Arc<Serving>, ServeError> {
        self.current().ok_or_else(|| {
            let (ver, selection) = self.wanted();
            if *self.unloaded.lock().unwrap_or_else(|e| e.into_inner()) {
                return ServeError::NoModel(format!("model {ver} was unloaded; load a model to serve again"));
            }
            ServeError::NoModel(match selection {
                Selection::Production => format!("waiting for a production run of model {ver}"),
                Selection::Latest => format!("waiting for model/{ver}/LATEST to appear in the bucket"),
                Selection::Run(id) => format!("waiting for run {id} of model {ver} to appear in the bucket"),
            })
        })
    }

    /// Loads a version and run on request and, once it has loaded, serves it and
    /// follows that selection from then on.
    pub async fn select(&self, model_ver: ModelVer, selection: Selection) -> Result<Arc<Serving>, ServeError> {
        let run = match &selection {
            Selection::Production => {
                let production = self.catalog.production(model_ver).await?;
                let run = production.ok_or(ServeError::NoProduction(model_ver))?;
                self.store().load(model_ver, &run).await?
            }
            Selection::Latest => self.store().load_latest(model_ver).await?,
            Selection::Run(id) => self.store().load(model_ver, id).await?,
        };
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = (model_ver, selection.clone());
        *self.unloaded.lock().unwrap_or_else(|e| e.into_inner()) = false;
        Ok(self.swap_in(run, selection))
    }

    /// The version and run selection the slot follows.
    pub fn wanted(&self) -> (ModelVer, Selection) {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Empties the slot and stops following LATEST until the next
    /// [`Self::select`]. Requests already holding the model finish on it.
    pub fn unload(&self) -> Option<Arc<Serving>> {
        // Flag first, so that a poll racing this cannot load the model back.
        *self.unloaded.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let previous = self.current.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(previous) = &previous {
            tracing::info!(model_ver = %previous.model_ver(), run_id = %previous.run_id(), "unloaded the model");
            self.metrics.unloaded(previous.model_ver(), previous.run_id().as_str());
        }
        self.loaded.send_replace(false);
        previous
    }

    /// One poll: loads the wanted run if it is not the one being served.
    pub async fn refresh(&self) {
        if *self.unloaded.lock().unwrap_or_else(|e| e.into_inner()) {
            return;
        }
        let (model_ver, selection) = self.wanted();
        let target = match &selection {
            Selection::Run(id) => Ok(Some(id.clone())),
            Selection::Production => self.catalog.production(model_ver).await.map_err(|e| e.to_string()),
            Selection::Latest => self.store().latest(model_ver).await.map_err(|e| e.to_string()),
        };
        let target = match target {
            Ok(Some(run)) => run,
            Ok(None) => {
                if self.current().is_none() {
                    tracing::info!(%model_ver, selection = %selection.describe(), "no model yet; still looking");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the bucket to look for a new model");
                return;
            }
        };
        let unchanged = self
            .current()
            .is_some_and(|s| s.model_ver() == model_ver && *s.run_id() == target && s.selection == selection);
        let key = (model_ver, target.clone());
        if unchanged || self.refused.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return;
        }
        match self.store().load(model_ver, &target).await {
            Ok(run) => {
                self.swap_in(run, selection);
            }
            // Not there (yet): a pinned run may still be on its way; look again next poll.
            Err(e @ LoadError::Storage(StorageError::NotFound { .. })) => {
                tracing::info!(error = %e, "wanted model run not in the bucket yet");
            }
            // Present but unusable (checksum, format, structure, metadata): refuse it for good.
            Err(e) => self.refuse(key, &e),
        }
    }

    fn swap_in(&self, run: LoadedRun, selection: Selection) -> Arc<Serving> {
        let serving = Arc::new(Serving { run, selection, loaded_at: Utc::now() });
        let previous = self.current.write().unwrap_or_else(|e| e.into_inner()).replace(serving.clone());
        tracing::info!(
            model_ver = %serving.model_ver(),
            run_id = %serving.run_id(),
            previous = previous.as_ref().map(|p| p.run_id().to_string()).unwrap_or_default(),
            "serving model"
        );
        self.metrics.swapped_in(
            serving.model_ver(),
            serving.run_id().as_str(),
            previous.as_ref().map(|p| (p.model_ver(), p.run_id().as_str())),
        );
        self.loaded.send_replace(true);
        serving
    }

    fn refuse(&self, key: (ModelVer, RunId), error: &LoadError) {
        let keeps = match self.current() {
            Some(s) => format!("still serving {} run {}", s.model_ver(), s.run_id()),
            None => "no model is being served".to_owned(),
        };
        tracing::error!(model_ver = %key.0, run_id = %key.1, error = %error, "refused a model run; {keeps}");
        self.notifier.notify(
            Notice::new(Outcome::Failed, format!("serve-service refused model {} run {}: {keeps}", key.0, key.1))
                .field("reason", error),
        );
        self.metrics.refused(key.0);
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
    }
}
