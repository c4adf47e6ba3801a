//! The template a model version fills in, and the type-erased form the
//! registry and the services see.

use std::fmt::Debug;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::features::Features;

/// What a model version learns from: one row per (keyword, device).
#[derive(Clone, Debug)]
pub struct TrainingSet {
    pub features: Features,
    pub clicks: Vec<f64>,
    pub conversions: Vec<f64>,
    /// The `entity_id` of each row, so that searches can keep a keyword's rows
    /// on one side of a cross-validation split.
    pub groups: Vec<i64>,
}

/// How far a fit has got, for versions whose fit takes long enough to report
/// (v2's hyperparameter search). Serialisable so a training job can stream it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// One cross-validation fold of one grid point is done (counted from 1).
    Fold {
        point: usize,
        points: usize,
        fold: usize,
        folds: usize,
        /// Trees the fold's early stopping kept, and its validation log-loss there.
        trees: usize,
        logloss: f64,
    },
    /// All folds of a grid point are done.
    Point {
        point: usize,
        points: usize,
        trees: usize,
        mean_logloss: f64,
        /// The best grid point so far and its mean validation log-loss.
        best_point: usize,
        best_logloss: f64,
    },
    /// The search is over: the final model is being fitted on every row.
    Refit { point: usize, trees: usize },
}

/// The template a model version fills in.
pub trait ModelVersion: 'static {
    /// Registry name, e.g. `v1`.
    const NAME: &'static str;
    /// One line for listings and the README.
    const SUMMARY: &'static str;
    /// Hyperparameters. `Default` is the documented defaults; mark the struct
    /// `#[serde(default, deny_unknown_fields)]` so unknown keys are errors.
    type Params: Serialize + DeserializeOwned + Default + Debug;
    /// The fitted model, saved as plain serde data inside the artifact.
    type Fitted: Predictor + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Range checks, naming the offending key.
    fn check(params: &Self::Params) -> Result<(), ParamError>;

    /// `progress` hears how a long fit goes; versions with a quick fit ignore it.
    fn fit(
        params: &Self::Params,
        data: &TrainingSet,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Self::Fitted, FitError>;

    /// What a run should record about this fit besides its metrics, as JSON
    /// (`feature_names` names the matrix columns); `Null` for nothing (v2: its search).
    fn report(_fitted: &Self::Fitted, _feature_names: &[String]) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Structural checks of a fitted model read back from an artifact, which may
    /// have been edited or corrupted by hand: indices in range, no cycles, finite
    /// values, rates in [0, 1], matrix columns below `width`. Whatever passes must
    /// predict without panicking or looping.
    fn validate(fitted: &Self::Fitted, width: usize) -> Result<(), String>;
}

pub trait Predictor {
    /// One rate in [0, 1] per row of `features`.
    fn predict(&self, features: &Features) -> Vec<f64>;

    /// The matrix columns `predict` reads. Prediction inputs need only the
    /// attributes among them, and readers skip the rest.
    fn used_features(&self) -> Vec<usize>;

    /// How much each matrix column contributes, for reports: (column, importance),
    /// any order. Versions with nothing meaningful to say return nothing.
    fn importance(&self) -> Vec<(usize, f64)> {
        Vec::new()
    }

    /// The bytes the fitted model holds in memory, counted from its arrays
    /// (trees' nodes and the like): what a server limits loaded models by.
    fn memory_bytes(&self) -> usize;
}

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("'{key}' must be {expected}, got {value}")]
    OutOfRange { key: &'static str, expected: &'static str, value: String },
}

impl ParamError {
    pub fn out_of_range(key: &'static str, expected: &'static str, value: impl ToString) -> Self {
        ParamError::OutOfRange { key, expected, value: value.to_string() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("no training rows with clicks")]
    NoData,
    #[error("training failed: {0}")]
    Library(String),
    /// The hyperparameter search cannot run on these rows, e.g. more folds than keywords.
    #[error("hyperparameter search: {0}")]
    Search(String),
}

/// A fitted model of any version.
pub trait FittedModel: Send + Sync + Debug {
    fn predict(&self, features: &Features) -> Vec<f64>;
    fn used_features(&self) -> Vec<usize>;
    fn importance(&self) -> Vec<(usize, f64)>;
    fn to_json(&self) -> serde_json::Value;
    /// See [`ModelVersion::report`].
    fn report(&self, feature_names: &[String]) -> serde_json::Value;
    fn memory_bytes(&self) -> usize;
}

/// A version as the registry and the services see it, with its types erased.
pub trait RegisteredVersion: Send + Sync {
    fn name(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    /// Reads and checks hyperparameters from YAML (`None`: the defaults);
    /// returns them complete, defaults filled in, as recorded in the artifact.
    fn params(&self, file: &str, yaml: Option<&str>) -> Result<serde_json::Value, ParamError>;
    fn fit(
        &self,
        params: &serde_json::Value,
        data: &TrainingSet,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Box<dyn FittedModel>, FitError>;
    /// Reads a fitted model from its artifact form and validates it for a
    /// feature matrix `width` columns wide; the error says what is wrong.
    fn load(&self, model: serde_json::Value, width: usize) -> Result<Box<dyn FittedModel>, String>;
    /// Whether the version's runs are model files imported from another
    /// library (declared in a bucket) rather than fitted by this build.
    fn imported(&self) -> bool {
        false
    }
}

// `fn() -> V` keeps the marker Send and Sync whatever V is.
pub(super) struct Registered<V>(pub(super) PhantomData<fn() -> V>);

struct Fitted<V: ModelVersion>(V::Fitted);

impl<V: ModelVersion> Debug for Fitted<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fitted({})", V::NAME)
    }
}

impl<V: ModelVersion> FittedModel for Fitted<V> {
    fn predict(&self, features: &Features) -> Vec<f64> {
        self.0.predict(features)
    }

    fn used_features(&self) -> Vec<usize> {
        self.0.used_features()
    }

    fn importance(&self) -> Vec<(usize, f64)> {
        self.0.importance()
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("fitted models are plain serde data")
    }

    fn report(&self, feature_names: &[String]) -> serde_json::Value {
        V::report(&self.0, feature_names)
    }

    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
}

impl<V: ModelVersion> RegisteredVersion for Registered<V> {
    fn name(&self) -> &'static str {
        V::NAME
    }

    fn summary(&self) -> &'static str {
        V::SUMMARY
    }

    fn params(&self, file: &str, yaml: Option<&str>) -> Result<serde_json::Value, ParamError> {
        let invalid = |message: String| ParamError::Invalid { file: file.to_owned(), message };
        let text = yaml.unwrap_or_default();
        // A file of only comments is an empty document: the defaults.
        let document: serde_norway::Value = serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let params: V::Params = if document.is_null() {
            V::Params::default()
        } else {
            // Parsed again from the text, not the value, so errors keep the key and line.
            serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        V::check(&params).map_err(|e| invalid(e.to_string()))?;
        Ok(serde_json::to_value(&params).expect("hyperparameters are plain serde data"))
    }

    fn fit(
        &self,
        params: &serde_json::Value,
        data: &TrainingSet,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Box<dyn FittedModel>, FitError> {
        let params: V::Params =
            serde_json::from_value(params.clone()).map_err(|e| FitError::Library(format!("hyperparameters: {e}")))?;
        if data.features.is_empty() {
            return Err(FitError::NoData);
        }
        Ok(Box::new(Fitted::<V>(V::fit(&params, data, progress)?)))
    }

    fn load(&self, model: serde_json::Value, width: usize) -> Result<Box<dyn FittedModel>, String> {
        let fitted: V::Fitted = serde_json::from_value(model).map_err(|e| format!("not a {} model: {e}", V::NAME))?;
        V::validate(&fitted, width)?;
        Ok(Box::new(Fitted::<V>(fitted)))
    }
}
