//! The Open Inference Protocol (KServe V2) on the model slots, whichever
//! transport carries it: gRPC (`grpc.rs`, `inference.GRPCInferenceService`)
//! and HTTP/REST (`rest/`). [`Inference`] holds the rules both answer by, so
//! that the same request gets the same answer over either: model and version
//! resolution, the tensors and their checks (`tensors.rs`), `MAX_PREDICT_ROWS`,
//! the outputs, and the rows offered to the model's shadows.
//!
//! A model's name is its model version (`v1`) and its version is the run id;
//! an empty version means the run that model version serves.
//!
//! The model repository extension works on the slots: the index lists every
//! registered model version (the loaded ones READY), a load gives a version its
//! production run in its own slot (refused beyond MAX_LOADED_MODELS), and an
//! unload empties that version's slot until its next load, leaving the others
//! serving.

pub mod grpc;
mod json_data;
pub mod rest;
pub mod tensors;

use std::sync::Arc;

use crs_domain::models::ModelVer;
use crs_proto::inference::repository_index_response::ModelIndex;
use crs_proto::inference::{ModelMetadataResponse, ServerMetadataResponse};

use crate::model::{Models, Selection, Serving};
use crate::shadow::Shadows;
use crate::status::ServeError;
use tensors::InputTensor;

/// What `ModelMetadata` calls the platform of every model.
const PLATFORM: &str = "crs";

/// The protocol extensions served over both transports.
pub const EXTENSIONS: &[&str] = &["model_repository"];

/// What a model in the repository index is when it serves a run, and when not.
pub const READY: &str = "READY";
pub const UNAVAILABLE: &str = "UNAVAILABLE";

/// An inference request, whichever transport carried it.
#[derive(Debug)]
pub struct InferRequest<'a> {
    pub model: &'a str,
    /// Empty: the run the model serves.
    pub version: &'a str,
    pub inputs: Vec<InputTensor<'a>>,
    /// The outputs asked for; none means every output.
    pub outputs: Vec<&'a str>,
}

/// What a model answered: the run that answered, and the rate of each row.
#[derive(Debug)]
pub struct Inferred {
    pub serving: Arc<Serving>,
    pub cr: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct Inference {
    models: Arc<Models>,
    shadows: Arc<Shadows>,
    max_predict_rows: usize,
}

impl Inference {
    pub fn new(models: Arc<Models>, shadows: Arc<Shadows>, max_predict_rows: usize) -> Self {
        Inference { models, shadows, max_predict_rows }
    }

    /// The run model `name` serves, if it is `version` (empty: whichever it serves).
    fn serving(&self, name: &str, version: &str) -> Result<Arc<Serving>, ServeError> {
        let model_ver = known_model(name)?;
        let Some(serving) = self.models.current(model_ver) else {
            return Err(ServeError::NotFound(format!("model '{model_ver}' is not loaded")));
        };
        if !version.is_empty() && version != serving.run_id().as_str() {
            return Err(ServeError::NotFound(format!(
                "model '{model_ver}' has no loaded version '{version}' (serving run {})",
                serving.run_id()
            )));
        }
        Ok(serving)
    }

    /// Ready while the default version (`MODEL_VER`) serves a run.
    pub fn server_ready(&self) -> bool {
        self.models.default_slot().current().is_some()
    }

    /// Whether model `name` serves a run (`version`, if not empty). An unknown
    /// model is an error; a known one not loaded is just not ready.
    pub fn model_ready(&self, name: &str, version: &str) -> Result<bool, ServeError> {
        known_model(name)?;
        Ok(self.serving(name, version).is_ok())
    }

    /// The server's name, version and the `extensions` of the transport asking.
    pub fn server_metadata(&self, extensions: &[&str]) -> ServerMetadataResponse {
        ServerMetadataResponse {
            name: crate::config::SERVICE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: extensions.iter().map(|&e| e.to_owned()).collect(),
        }
    }

    /// The model's served run as its only version, and its tensors.
    pub fn model_metadata(&self, name: &str, version: &str) -> Result<ModelMetadataResponse, ServeError> {
        let serving = self.serving(name, version)?;
        Ok(ModelMetadataResponse {
            name: serving.model_ver().to_string(),
            versions: vec![serving.run_id().to_string()],
            platform: PLATFORM.into(),
            inputs: tensors::input_metadata(serving.run.model.required_attributes()),
            outputs: tensors::output_metadata(),
        })
    }

    /// The rates of the request's rows, from the run it names, after every
    /// check; the rows are then offered to the model's shadows.
    pub fn infer(&self, request: &InferRequest<'_>) -> Result<Inferred, ServeError> {
        let serving = self.serving(request.model, request.version)?;
        tensors::check_outputs(request.outputs.iter().copied())?;
        let model = &serving.run.model;
        let rows = tensors::decode(&request.inputs, model.required_attributes(), self.max_predict_rows)?;
        let cr = self.shadows.predict(&serving, rows)?;
        Ok(Inferred { serving, cr })
    }

    /// Every registered model version: the loaded ones READY with their run,
    /// the others UNAVAILABLE; `ready_only` leaves those out.
    pub fn repository_index(&self, ready_only: bool) -> Vec<ModelIndex> {
        ModelVer::all()
            .map(|model_ver| match self.models.current(model_ver) {
                Some(serving) => ModelIndex {
                    name: model_ver.to_string(),
                    version: serving.run_id().to_string(),
                    state: READY.into(),
                    reason: String::new(),
                },
                None => ModelIndex {
                    name: model_ver.to_string(),
                    version: String::new(),
                    state: UNAVAILABLE.into(),
                    reason: "not loaded".into(),
                },
            })
            .filter(|model| !ready_only || model.state == READY)
            .collect()
    }

    /// Makes a model version declared in the bucket (an imported one) known to
    /// this process, so that `name` parses; both transports call it before any
    /// method that takes a model name.
    pub async fn resolve(&self, name: &str) {
        self.models.resolve(name).await;
    }

    /// Loads model `name` at its production run, in its own slot, and follows
    /// its production alias from then on.
    pub async fn load(&self, name: &str) -> Result<(), ServeError> {
        self.resolve(name).await;
        let model_ver = known_model(name)?;
        self.models.select(model_ver, Selection::Production).await.map(|_| ())
    }

    /// Empties the slot of model `name`, which must be loaded.
    pub fn unload(&self, name: &str) -> Result<(), ServeError> {
        let serving = self.serving(name, "")?;
        tracing::info!(model_ver = %serving.model_ver(), run_id = %serving.run_id(), "unload requested");
        self.models.unload(serving.model_ver());
        Ok(())
    }
}

/// A model name: one of the registered model versions.
fn known_model(name: &str) -> Result<ModelVer, ServeError> {
    ModelVer::parse(name).map_err(|_| {
        let known: Vec<String> = ModelVer::all().map(|v| format!("'{v}'")).collect();
        ServeError::NotFound(format!("unknown model '{name}' (the models are {})", known.join(", ")))
    })
}
