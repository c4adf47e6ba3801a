//! The Open Inference Protocol (KServe V2) over gRPC, on the same model slots as
//! `crs.serve.v1`. A model's name is its model version (`v1`) and its version is
//! the run id; an empty version means the run that model version serves.
//!
//! The model repository extension works on the slots: the index lists every
//! registered model version (the loaded ones READY), a load gives a version its
//! production run in its own slot (refused beyond MAX_LOADED_MODELS), and an
//! unload empties that version's slot until its next load, leaving the others
//! serving.

use std::sync::Arc;

use crs_domain::models::ModelVer;
use crs_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crs_proto::inference::repository_index_response::ModelIndex;
use crs_proto::inference::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest,
    ModelReadyResponse, RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest,
    RepositoryModelLoadResponse, RepositoryModelUnloadRequest, RepositoryModelUnloadResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use tonic::{Request, Response, Status};

use crate::metrics::ServeMetrics;
use crate::model::{Models, Selection, Serving};
use crate::shadow::Shadows;
use crate::status::ServeError;
use crate::tensors;

/// What `ModelMetadata` calls the platform of every model.
const PLATFORM: &str = "crs";

#[derive(Clone, Debug)]
pub struct Inference {
    models: Arc<Models>,
    shadows: Arc<Shadows>,
    max_predict_rows: usize,
    metrics: Arc<ServeMetrics>,
}

impl Inference {
    pub fn new(
        models: Arc<Models>,
        shadows: Arc<Shadows>,
        max_predict_rows: usize,
        metrics: Arc<ServeMetrics>,
    ) -> Self {
        Inference { models, shadows, max_predict_rows, metrics }
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

    fn infer(&self, request: &ModelInferRequest) -> Result<ModelInferResponse, ServeError> {
        let serving = self.serving(&request.model_name, &request.model_version)?;
        if let Some(other) = request.outputs.iter().find(|o| o.name != tensors::CR) {
            return Err(ServeError::InvalidRequest(format!(
                "unknown output '{}' (the model's only output is '{}')",
                other.name,
                tensors::CR
            )));
        }
        let model = &serving.run.model;
        let decoded = tensors::decode(request, model.required_attributes(), self.max_predict_rows)?;
        let cr = model.predict(&decoded.rows)?;
        let (output, raw) = tensors::output(&cr, decoded.raw);
        self.shadows.offer(&serving, decoded.rows, &cr);
        Ok(ModelInferResponse {
            model_name: serving.model_ver().to_string(),
            model_version: serving.run_id().to_string(),
            id: request.id.clone(),
            outputs: vec![output],
            raw_output_contents: raw.into_iter().collect(),
            ..Default::default()
        })
    }
}

/// A model name: one of the registered model versions.
fn known_model(name: &str) -> Result<ModelVer, ServeError> {
    ModelVer::parse(name).map_err(|_| {
        let known: Vec<String> = ModelVer::all().map(|v| format!("'{v}'")).collect();
        ServeError::NotFound(format!("unknown model '{name}' (the models are {})", known.join(", ")))
    })
}

// Each method counts and times itself, under the protocol's method name.
#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        let call = self.metrics.call("ServerLive");
        call.finish(Ok(Response::new(ServerLiveResponse { live: true })))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        let call = self.metrics.call("ServerReady");
        call.finish(Ok(Response::new(ServerReadyResponse { ready: self.models.default_slot().current().is_some() })))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        self.models.resolve(&request.name).await;
        let mut call = self.metrics.call("ModelReady");
        call.model_named(&request.name);
        // An unknown model is an error; a known one not loaded is just not ready.
        let result = known_model(&request.name).map(|_| {
            Response::new(ModelReadyResponse { ready: self.serving(&request.name, &request.version).is_ok() })
        });
        call.finish(result.map_err(Status::from))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let call = self.metrics.call("ServerMetadata");
        call.finish(Ok(Response::new(ServerMetadataResponse {
            name: "serve-service".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_repository".into()],
        })))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        self.models.resolve(&request.name).await;
        let mut call = self.metrics.call("ModelMetadata");
        call.model_named(&request.name);
        let result = self.serving(&request.name, &request.version).map(|serving| {
            Response::new(ModelMetadataResponse {
                name: serving.model_ver().to_string(),
                versions: vec![serving.run_id().to_string()],
                platform: PLATFORM.into(),
                inputs: tensors::input_metadata(serving.run.model.required_attributes()),
                outputs: tensors::output_metadata(),
            })
        });
        call.finish(result.map_err(Status::from))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let mut call = self.metrics.call("ModelInfer");
        self.models.resolve(&request.get_ref().model_name).await;
        call.model_named(&request.get_ref().model_name);
        call.finish(self.infer(request.get_ref()).map(Response::new).map_err(Status::from))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let call = self.metrics.call("RepositoryIndex");
        let ready_only = request.get_ref().ready;
        let models = ModelVer::all()
            .map(|model_ver| match self.models.current(model_ver) {
                Some(serving) => ModelIndex {
                    name: model_ver.to_string(),
                    version: serving.run_id().to_string(),
                    state: "READY".into(),
                    reason: String::new(),
                },
                None => ModelIndex {
                    name: model_ver.to_string(),
                    version: String::new(),
                    state: "UNAVAILABLE".into(),
                    reason: "not loaded".into(),
                },
            })
            .filter(|model| !ready_only || model.state == "READY")
            .collect();
        call.finish(Ok(Response::new(RepositoryIndexResponse { models })))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let name = &request.get_ref().model_name;
        self.models.resolve(name).await;
        let mut call = self.metrics.call("RepositoryModelLoad");
        call.model_named(name);
        let result = match known_model(name) {
            Ok(model_ver) => self.models.select(model_ver, Selection::Production).await.map(|_| ()),
            Err(e) => Err(e),
        };
        call.finish(result.map(|()| Response::new(RepositoryModelLoadResponse {})).map_err(Status::from))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let name = &request.get_ref().model_name;
        let mut call = self.metrics.call("RepositoryModelUnload");
        call.model_named(name);
        let result = self.serving(name, "").map(|serving| {
            tracing::info!(model_ver = %serving.model_ver(), run_id = %serving.run_id(), "unload requested");
            self.models.unload(serving.model_ver());
            Response::new(RepositoryModelUnloadResponse {})
        });
        call.finish(result.map_err(Status::from))
    }
}
