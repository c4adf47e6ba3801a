//! The model artifact: the feature pipeline, the hyperparameters and the fitted
//! model as one JSON document with a format version. Its sha256 is stored beside
//! it, and loading refuses anything that does not match.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::registry::ModelVer;
use super::template::FittedModel;
use crate::data::KeywordRows;
use crate::features::{FeatureError, FeaturePipeline};

/// Bumped whenever the artifact's layout changes; older services refuse newer
/// artifacts instead of misreading them.
pub const ARTIFACT_FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Artifact {
    format_version: u32,
    model_ver: String,
    features: FeaturePipeline,
    params: serde_json::Value,
    model: serde_json::Value,
}

/// A fitted model with the pipeline that feeds it: rows in, rates out.
#[derive(Debug)]
pub struct TrainedModel {
    pub model_ver: ModelVer,
    pub features: FeaturePipeline,
    pub params: serde_json::Value,
    pub model: Box<dyn FittedModel>,
    required_attributes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("checksum mismatch: expected sha256 {expected}, the artifact has {actual}")]
    Checksum { expected: String, actual: String },
    #[error("not a model artifact: {0}")]
    Malformed(String),
    #[error("artifact format version {found} is not supported (this build reads version {supported})")]
    FormatVersion { found: u64, supported: u32 },
    #[error("artifact is for model version {found:?}, expected {expected:?}")]
    WrongVersion { found: String, expected: String },
    #[error("invalid model: {0}")]
    Invalid(String),
}

impl TrainedModel {
    pub fn new(
        model_ver: ModelVer,
        features: FeaturePipeline,
        params: serde_json::Value,
        model: Box<dyn FittedModel>,
    ) -> Self {
        let required_attributes = model
            .used_features()
            .into_iter()
            .filter_map(|column| features.attribute_at(column).map(str::to_owned))
            .collect();
        TrainedModel { model_ver, features, params, model, required_attributes }
    }

    /// The attribute columns predictions read, in pipeline order: what every
    /// prediction input must have. Often far fewer than the pipeline's.
    pub fn required_attributes(&self) -> &[String] {
        &self.required_attributes
    }

    /// The bytes the fitted model holds in memory (see
    /// [`super::Predictor::memory_bytes`]); the feature pipeline's few names are not counted.
    pub fn memory_bytes(&self) -> u64 {
        self.model.memory_bytes() as u64
    }

    /// What the model version records about its fit (see
    /// [`super::ModelVersion::report`]), with the matrix columns named.
    pub fn report(&self) -> serde_json::Value {
        self.model.report(&self.features.feature_names())
    }

    /// Feature importance by feature name, largest first.
    pub fn importance(&self) -> Vec<(String, f64)> {
        let names = self.features.feature_names();
        let mut out: Vec<(String, f64)> = self
            .model
            .importance()
            .into_iter()
            .filter_map(|(column, value)| names.get(column).map(|name| (name.clone(), value)))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }

    pub fn predict(&self, rows: &KeywordRows) -> Result<Vec<f64>, FeatureError> {
        let features = self.features.transform(rows, &self.required_attributes)?;
        Ok(self.model.predict(&features))
    }

    pub fn to_artifact(&self) -> Vec<u8> {
        let artifact = Artifact {
            format_version: ARTIFACT_FORMAT_VERSION,
            model_ver: self.model_ver.name().to_owned(),
            features: self.features.clone(),
            params: self.params.clone(),
            model: self.model.to_json(),
        };
        serde_json::to_vec(&artifact).expect("artifacts are plain serde data")
    }

    /// Loads an artifact of `model_ver` after checking its sha256 and format version.
    pub fn from_artifact(bytes: &[u8], expected_sha256: &str, model_ver: ModelVer) -> Result<Self, ArtifactError> {
        let actual = sha256_hex(bytes);
        if !actual.eq_ignore_ascii_case(expected_sha256.trim()) {
            return Err(ArtifactError::Checksum { expected: expected_sha256.trim().to_owned(), actual });
        }
        let malformed = |e: serde_json::Error| ArtifactError::Malformed(e.to_string());
        // Check the format version before trusting the rest of the layout.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
        let found = value.get("format_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if found != u64::from(ARTIFACT_FORMAT_VERSION) {
            return Err(ArtifactError::FormatVersion { found, supported: ARTIFACT_FORMAT_VERSION });
        }
        let artifact: Artifact = serde_json::from_value(value).map_err(malformed)?;
        if artifact.model_ver != model_ver.name() {
            return Err(ArtifactError::WrongVersion { found: artifact.model_ver, expected: model_ver.to_string() });
        }
        let model =
            model_ver.version().load(artifact.model, artifact.features.width()).map_err(ArtifactError::Invalid)?;
        Ok(TrainedModel::new(model_ver, artifact.features, artifact.params, model))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_digest(&Sha256::digest(bytes))
}

/// A digest as lowercase hex, as `sha256sum` prints it.
pub fn hex_digest(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
