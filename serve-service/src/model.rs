//! The models being served, and how they change: one slot per model version,
//! each loaded at start or on request, swapped when its production alias (or
//! LATEST) moves or `LoadModel` asks, never replaced by a run that fails to load.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crs_domain::models::ModelVer;
use crs_platform::notify::webhook::{Notice, Notifier, Outcome};
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::{LoadError, LoadedRun, ModelStore};
use crs_platform::registry::versions::{self, VersionError};
use crs_platform::storage::bucket::{KeyError, StorageError};
use crs_platform::storage::layout::RunId;
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

    pub fn memory_bytes(&self) -> u64 {
        memory_bytes(&self.run)
    }
}

/// The memory a run holds while loaded, as its model counts it from its
/// trees' node arrays (or tables).
fn memory_bytes(run: &LoadedRun) -> u64 {
    run.model.memory_bytes()
}

/// The memory the other loaded models hold, and the most all may hold (MAX_MODEL_MEMORY_MB).
#[derive(Clone, Copy, Debug)]
struct MemoryRoom {
    held: u64,
    max: u64,
}

/// One model version's slot.
#[derive(Debug)]
pub struct ModelSlot {
    model_ver: ModelVer,
    catalog: Catalog,
    /// Swapped whole: a request holds its own `Arc` and finishes on the model it started with.
    current: RwLock<Option<Arc<Serving>>>,
    /// What the poller follows.
    wanted: Mutex<Selection>,
    /// Runs that failed to load, reported once and not retried.
    refused: Mutex<HashSet<RunId>>,
    /// Set by an unload: the poller stays away until something is loaded again.
    unloaded: Mutex<bool>,
    /// Whether a model is in, for whoever reports health.
    loaded: watch::Sender<bool>,
    notifier: Notifier,
    metrics: Arc<ServeMetrics>,
}

impl ModelSlot {
    fn new(
        catalog: Catalog,
        model_ver: ModelVer,
        selection: Selection,
        notifier: Notifier,
        metrics: Arc<ServeMetrics>,
    ) -> Self {
        ModelSlot {
            model_ver,
            catalog,
            current: RwLock::new(None),
            wanted: Mutex::new(selection),
            refused: Mutex::default(),
            unloaded: Mutex::new(false),
            loaded: watch::Sender::new(false),
            notifier,
            metrics,
        }
    }

    fn store(&self) -> &ModelStore {
        self.catalog.store()
    }

    /// `true` while a model is in: from the first swap until an unload.
    pub fn loaded(&self) -> watch::Receiver<bool> {
        self.loaded.subscribe()
    }

    pub fn current(&self) -> Option<Arc<Serving>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_unloaded(&self) -> bool {
        *self.unloaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model requests should use, or why there is none.
    pub fn require(&self) -> Result<Arc<Serving>, ServeError> {
        self.current().ok_or_else(|| {
            let ver = self.model_ver;
            if self.is_unloaded() {
                return ServeError::NoModel(format!("model {ver} was unloaded; load a model to serve again"));
            }
            ServeError::NoModel(match self.wanted() {
                Selection::Production => format!("waiting for a production run of model {ver}"),
                Selection::Latest => format!("waiting for model/{ver}/LATEST to appear in the bucket"),
                Selection::Run(id) => format!("waiting for run {id} of model {ver} to appear in the bucket"),
            })
        })
    }

    /// Loads a run on request and, if it fits in `room`, serves it and follows
    /// that selection from then on.
    async fn select(&self, selection: Selection, room: MemoryRoom) -> Result<Arc<Serving>, ServeError> {
        let model_ver = self.model_ver;
        let run = match &selection {
            Selection::Production => {
                let production = self.catalog.production(model_ver).await?;
                let run = production.ok_or(ServeError::NoProduction(model_ver))?;
                self.store().load(model_ver, &run).await?
            }
            Selection::Latest => self.store().load_latest(model_ver).await?,
            Selection::Run(id) => self.store().load(model_ver, id).await?,
        };
        // Checked once loaded, since the size is known then; the run is dropped at once if refused.
        let needed = memory_bytes(&run);
        if room.held + needed > room.max {
            let run_id = run.metadata.run_id.to_string();
            return Err(ServeError::TooMuchModelMemory { model_ver, run_id, needed, held: room.held, max: room.max });
        }
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = selection.clone();
        *self.unloaded.lock().unwrap_or_else(|e| e.into_inner()) = false;
        Ok(self.swap_in(run, selection))
    }

    /// The run selection the slot follows.
    pub fn wanted(&self) -> Selection {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Empties the slot and stops following its selection until the next
    /// [`Self::select`]. Requests already holding the model finish on it.
    fn unload(&self) -> Option<Arc<Serving>> {
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
    async fn refresh(&self) {
        if self.is_unloaded() {
            return;
        }
        let model_ver = self.model_ver;
        let selection = self.wanted();
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
                tracing::warn!(%model_ver, error = %e, "cannot read the bucket to look for a new model");
                return;
            }
        };
        let unchanged = self.current().is_some_and(|s| *s.run_id() == target && s.selection == selection);
        if unchanged || self.refused.lock().unwrap_or_else(|e| e.into_inner()).contains(&target) {
            return;
        }
        match self.store().load(model_ver, &target).await {
            Ok(run) => {
                // An unload that came while the run was loading wins.
                if !self.is_unloaded() {
                    self.swap_in(run, selection);
                }
            }
            // Not there (yet): a pinned run may still be on its way; look again next poll.
            Err(e @ LoadError::Storage(StorageError::NotFound { .. })) => {
                tracing::info!(error = %e, "wanted model run not in the bucket yet");
            }
            // Present but unusable (checksum, format, structure, metadata): refuse it for good.
            Err(e) => self.refuse(target, &e),
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

    fn refuse(&self, run: RunId, error: &LoadError) {
        let model_ver = self.model_ver;
        let keeps = match self.current() {
            Some(s) => format!("still serving {} run {}", s.model_ver(), s.run_id()),
            None => format!("no run of {model_ver} is being served"),
        };
        tracing::error!(%model_ver, run_id = %run, error = %error, "refused a model run; {keeps}");
        self.notifier.notify(
            Notice::new(Outcome::Failed, format!("serve-service refused model {model_ver} run {run}: {keeps}"))
                .field("reason", error),
        );
        self.metrics.refused(model_ver);
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).insert(run);
    }
}

/// What [`Models`] starts with.
#[derive(Clone, Debug)]
pub struct ModelsSetup {
    /// The version requests that name none get, and its run selection.
    pub default: (ModelVer, Selection),
    /// Other versions served from the start, each following its production alias.
    pub others: Vec<ModelVer>,
    /// Most versions loaded (or waiting for a run) at once.
    pub max_loaded: usize,
    /// Most memory the loaded runs may take together, as [`Serving::memory_bytes`] estimates it.
    pub max_memory_bytes: u64,
}

/// Names the bucket did not declare, and when: refusing one costs a listing
/// of every declaration in the bucket, and a client retrying a wrong name must
/// not cost that on every request. A version declared meanwhile is found once
/// its name's entry expires.
#[derive(Debug, Default)]
struct Misses(Mutex<HashMap<String, Instant>>);

impl Misses {
    const TTL: Duration = Duration::from_secs(5);
    /// Names are the callers' to choose: past this many, only fresh ones are kept.
    const MAX: usize = 1024;

    fn recent(&self, name: &str, now: Instant) -> bool {
        let misses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        misses.get(name).is_some_and(|&at| now.saturating_duration_since(at) < Self::TTL)
    }

    fn remember(&self, name: &str, now: Instant) {
        let mut misses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if misses.len() >= Self::MAX {
            misses.retain(|_, &mut at| now.saturating_duration_since(at) < Self::TTL);
        }
        if misses.len() < Self::MAX {
            misses.insert(name.to_owned(), now);
        }
    }
}

/// Every model version the service holds, one slot each. Versions configured at
/// start keep their slot for good (an unload empties it); versions loaded on
/// request get one while there is room.
#[derive(Debug)]
pub struct Models {
    catalog: Catalog,
    default: ModelVer,
    max_loaded: usize,
    max_memory_bytes: u64,
    slots: RwLock<BTreeMap<ModelVer, Arc<ModelSlot>>>,
    /// Serializes loads, so that two of them cannot both take the last free place.
    loading: tokio::sync::Mutex<()>,
    notifier: Notifier,
    metrics: Arc<ServeMetrics>,
    misses: Misses,
}

impl Models {
    pub fn new(catalog: Catalog, setup: ModelsSetup, notifier: Notifier, metrics: Arc<ServeMetrics>) -> Self {
        let (default, selection) = setup.default;
        let mut slots = BTreeMap::new();
        let slot = |ver, selection| {
            Arc::new(ModelSlot::new(catalog.clone(), ver, selection, notifier.clone(), metrics.clone()))
        };
        slots.insert(default, slot(default, selection));
        for ver in setup.others {
            slots.entry(ver).or_insert_with(|| slot(ver, Selection::Production));
        }
        Models {
            catalog,
            default,
            max_loaded: setup.max_loaded,
            max_memory_bytes: setup.max_memory_bytes,
            slots: RwLock::new(slots),
            loading: tokio::sync::Mutex::new(()),
            notifier,
            metrics,
            misses: Misses::default(),
        }
    }

    /// Makes the version `name` known to this process when the bucket
    /// declares it for imports (`config/<ver>/model.yaml`), so that the
    /// requests' version parsing takes it from then on. The one place
    /// serve-service resolves a name against the bucket: the gRPC, V2 and
    /// batch handlers call it before they parse a requested name. A name that
    /// is neither known nor declared is left to that parsing to refuse, and is
    /// not looked up again for [`Misses::TTL`].
    pub async fn resolve(&self, name: &str) {
        let name = name.trim();
        if name.is_empty() || ModelVer::parse(name).is_ok() || self.misses.recent(name, Instant::now()) {
            return;
        }
        match versions::resolve(self.store().bucket(), name).await {
            Ok(_) => {}
            Err(e @ (VersionError::Unknown { .. } | VersionError::BadDeclaration { .. })) => {
                tracing::debug!(model_ver = name, error = %e, "not a declared model version");
                self.misses.remember(name, Instant::now());
            }
            Err(e) => tracing::warn!(model_ver = name, error = %e, "cannot read the bucket's model declarations"),
        }
    }

    pub fn store(&self) -> &ModelStore {
        self.catalog.store()
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn default_ver(&self) -> ModelVer {
        self.default
    }

    fn slots(&self) -> Vec<Arc<ModelSlot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn slot(&self, model_ver: ModelVer) -> Option<Arc<ModelSlot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).get(&model_ver).cloned()
    }

    /// The slot of the default version, which exists from start to end.
    pub fn default_slot(&self) -> Arc<ModelSlot> {
        self.slot(self.default).expect("the default version's slot is made at start and never removed")
    }

    /// The run `model_ver` serves now, if any.
    pub fn current(&self, model_ver: ModelVer) -> Option<Arc<Serving>> {
        self.slot(model_ver).and_then(|slot| slot.current())
    }

    /// Every run served now, in version order.
    pub fn loaded(&self) -> Vec<Arc<Serving>> {
        self.slots().iter().filter_map(|slot| slot.current()).collect()
    }

    /// The model a request should use: `model_ver` (the default if `None`) at
    /// `run` (whichever it serves if `None`), or why there is none.
    pub fn require(&self, model_ver: Option<ModelVer>, run: Option<&RunId>) -> Result<Arc<Serving>, ServeError> {
        let model_ver = model_ver.unwrap_or(self.default);
        let Some(slot) = self.slot(model_ver) else {
            let loaded: Vec<String> = self.loaded().iter().map(|s| s.model_ver().to_string()).collect();
            return Err(ServeError::NoModel(format!(
                "model {model_ver} is not loaded (loaded: {}); load it first",
                if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") }
            )));
        };
        let serving = slot.require()?;
        match run {
            Some(run) if run != serving.run_id() => Err(ServeError::NotFound(format!(
                "model {model_ver} does not serve run {run} (it serves run {})",
                serving.run_id()
            ))),
            _ => Ok(serving),
        }
    }

    /// Loads `model_ver` at `selection` and serves it from then on, in its own
    /// slot: the other versions go on as they were. A version without a slot
    /// gets one only while fewer than `max_loaded` are held; any load only if
    /// the run fits beside the other versions' in `max_memory_bytes`.
    pub async fn select(&self, model_ver: ModelVer, selection: Selection) -> Result<Arc<Serving>, ServeError> {
        let _loading = self.loading.lock().await;
        // The version's own run, if any, is replaced and so not counted.
        let held = self.loaded().iter().filter(|s| s.model_ver() != model_ver).map(|s| s.memory_bytes()).sum();
        let room = MemoryRoom { held, max: self.max_memory_bytes };
        if let Some(slot) = self.slot(model_ver).filter(|slot| !slot.is_unloaded()) {
            return slot.select(selection, room).await;
        }
        let held: Vec<ModelVer> = self
            .slots()
            .iter()
            .filter(|slot| slot.model_ver != model_ver && !slot.is_unloaded())
            .map(|slot| slot.model_ver)
            .collect();
        if held.len() >= self.max_loaded {
            return Err(ServeError::TooManyModels { model_ver, max: self.max_loaded, held });
        }
        if let Some(slot) = self.slot(model_ver) {
            return slot.select(selection, room).await;
        }
        let slot = Arc::new(ModelSlot::new(
            self.catalog.clone(),
            model_ver,
            selection.clone(),
            self.notifier.clone(),
            self.metrics.clone(),
        ));
        let serving = slot.select(selection, room).await?;
        self.slots.write().unwrap_or_else(|e| e.into_inner()).insert(model_ver, slot);
        Ok(serving)
    }

    /// Empties `model_ver`'s slot, leaving every other version serving; the
    /// run it served, if any.
    pub fn unload(&self, model_ver: ModelVer) -> Option<Arc<Serving>> {
        self.slot(model_ver).and_then(|slot| slot.unload())
    }

    /// One poll of every slot.
    pub async fn refresh(&self) {
        for slot in self.slots() {
            slot.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_name_is_remembered_for_a_while_and_the_memory_is_bounded() {
        let misses = Misses::default();
        let start = Instant::now();
        assert!(!misses.recent("xgb-new", start));
        misses.remember("xgb-new", start);
        assert!(misses.recent("xgb-new", start + Duration::from_secs(1)));
        assert!(!misses.recent("xgb-other", start + Duration::from_secs(1)));
        assert!(!misses.recent("xgb-new", start + Misses::TTL), "looked up again once the entry expires");

        for i in 0..Misses::MAX * 2 {
            misses.remember(&format!("name-{i}"), start);
        }
        assert_eq!(misses.0.lock().unwrap().len(), Misses::MAX, "full of fresh names: no more are kept");
        let later = start + Misses::TTL;
        misses.remember("late", later);
        assert!(misses.recent("late", later), "expired names make room");
        assert_eq!(misses.0.lock().unwrap().len(), 1);
    }
}
