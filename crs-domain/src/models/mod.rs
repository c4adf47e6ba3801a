//! Model versions behind one template.
//!
//! A version is a module implementing [`ModelVersion`]: typed hyperparameters
//! read from YAML, a `fit` on a [`TrainingSet`], and a fitted model that is plain
//! serde data and predicts a rate in [0, 1] per row. Adding `v3` means writing
//! `v3.rs` and adding one line to [`REGISTRY`]; the services only see
//! [`ModelVer`], a name checked against the registry once, where a request or
//! the configuration is parsed.
//!
//! Besides `fit` and `validate`, a version may fill in `report` (what a run
//! records about its fit, e.g. v2's search) and `Predictor::importance`;
//! `fit` gets a progress callback that versions with a long search call as they go.
//!
//! [`imported`] is the other kind of version: declared in a bucket, its runs
//! are xgboost or lightgbm model files converted at import into the same
//! [`forest`] v2 predicts with.

mod artifact;
pub mod forest;
pub mod imported;
mod registry;
mod template;
mod tree;
pub mod v0;
pub mod v1;
pub mod v2;

pub use artifact::{ARTIFACT_FORMAT_VERSION, ArtifactError, TrainedModel, hex_digest, sha256_hex};
pub use registry::{DeclareError, MAX_VERSION_NAME, ModelVer, REGISTRY, UnknownVersion, known_versions};
pub use template::{
    FitError, FittedModel, ModelVersion, ParamError, Predictor, Progress, RegisteredVersion, TrainingSet,
};
