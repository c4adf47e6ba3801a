//! Model versions behind one template.
//!
//! A version is a module implementing [`ModelVersion`]: typed hyperparameters
//! read from YAML, a `fit` on a [`TrainingSet`], and a fitted model that is plain
//! serde data and predicts a rate in [0, 1] per row. Adding `v3` means writing
//! `v3.rs` and adding one line to [`REGISTRY`]; the services only see
//! [`ModelVer`], a name checked against the registry once, where a request or
//! the configuration is parsed.

mod artifact;
mod registry;
mod template;
mod tree;
pub mod v0;
pub mod v1;

pub use artifact::{ARTIFACT_FORMAT_VERSION, ArtifactError, TrainedModel, sha256_hex};
pub use registry::{ModelVer, REGISTRY, UnknownVersion, known_versions};
pub use template::{FitError, FittedModel, ModelVersion, ParamError, Predictor, RegisteredVersion, TrainingSet};
