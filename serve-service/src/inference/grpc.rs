//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`):
//! each method counts and times itself under the protocol's method name and
//! answers by the rules of [`Inference`].

use std::sync::Arc;

use crs_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crs_proto::inference::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest,
    ModelReadyResponse, RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest,
    RepositoryModelLoadResponse, RepositoryModelUnloadRequest, RepositoryModelUnloadResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use tonic::{Request, Response, Status};

use super::{EXTENSIONS, InferRequest, Inference, tensors};
use crate::metrics::ServeMetrics;
use crate::status::ServeError;

#[derive(Clone, Debug)]
pub struct GrpcInference {
    inference: Arc<Inference>,
    metrics: Arc<ServeMetrics>,
}

impl GrpcInference {
    pub fn new(inference: Arc<Inference>, metrics: Arc<ServeMetrics>) -> Self {
        GrpcInference { inference, metrics }
    }

    fn infer(&self, request: &ModelInferRequest) -> Result<ModelInferResponse, ServeError> {
        let inputs = tensors::grpc_inputs(request)?;
        let raw = !request.raw_input_contents.is_empty();
        let outputs = request.outputs.iter().map(|output| output.name.as_str()).collect();
        let infer = InferRequest { model: &request.model_name, version: &request.model_version, inputs, outputs };
        let inferred = self.inference.infer(&infer)?;
        let (output, raw) = tensors::grpc_output(&inferred.cr, raw);
        Ok(ModelInferResponse {
            model_name: inferred.serving.model_ver().to_string(),
            model_version: inferred.serving.run_id().to_string(),
            id: request.id.clone(),
            outputs: vec![output],
            raw_output_contents: raw.into_iter().collect(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcInference {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        let call = self.metrics.call("ServerLive");
        call.finish(Ok(Response::new(ServerLiveResponse { live: true })))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        let call = self.metrics.call("ServerReady");
        call.finish(Ok(Response::new(ServerReadyResponse { ready: self.inference.server_ready() })))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        self.inference.resolve(&request.name).await;
        let mut call = self.metrics.call("ModelReady");
        call.model_named(&request.name);
        let result = self.inference.model_ready(&request.name, &request.version);
        call.finish(result.map(|ready| Response::new(ModelReadyResponse { ready })).map_err(Status::from))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let call = self.metrics.call("ServerMetadata");
        call.finish(Ok(Response::new(self.inference.server_metadata(EXTENSIONS))))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        self.inference.resolve(&request.name).await;
        let mut call = self.metrics.call("ModelMetadata");
        call.model_named(&request.name);
        let result = self.inference.model_metadata(&request.name, &request.version);
        call.finish(result.map(Response::new).map_err(Status::from))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        self.inference.resolve(&request.get_ref().model_name).await;
        let mut call = self.metrics.call("ModelInfer");
        call.model_named(&request.get_ref().model_name);
        call.finish(self.infer(request.get_ref()).map(Response::new).map_err(Status::from))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let call = self.metrics.call("RepositoryIndex");
        let models = self.inference.repository_index(request.get_ref().ready);
        call.finish(Ok(Response::new(RepositoryIndexResponse { models })))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let name = &request.get_ref().model_name;
        let mut call = self.metrics.call("RepositoryModelLoad");
        call.model_named(name);
        let result = self.inference.load(name).await;
        call.finish(result.map(|()| Response::new(RepositoryModelLoadResponse {})).map_err(Status::from))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let name = &request.get_ref().model_name;
        let mut call = self.metrics.call("RepositoryModelUnload");
        call.model_named(name);
        let result = self.inference.unload(name);
        call.finish(result.map(|()| Response::new(RepositoryModelUnloadResponse {})).map_err(Status::from))
    }
}
