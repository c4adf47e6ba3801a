//! The gRPC face of the jobs and the stored runs.

use std::sync::Arc;

use crs_domain::models::ModelVer;
use crs_platform::runs::ModelStore;
use crs_proto::train as proto;
use crs_proto::train::train_service_server::TrainService;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::jobs::Jobs;
use crate::metrics::TrainMetrics;
use crate::status::ApiError;

#[derive(Clone, Debug)]
pub struct TrainApi {
    jobs: Jobs,
    store: ModelStore,
    /// Trained when a request names no version.
    default_model_ver: ModelVer,
    metrics: Arc<TrainMetrics>,
}

impl TrainApi {
    pub fn new(jobs: Jobs, store: ModelStore, default_model_ver: ModelVer, metrics: Arc<TrainMetrics>) -> Self {
        TrainApi { jobs, store, default_model_ver, metrics }
    }

    async fn version_runs(&self, model_ver: ModelVer) -> Result<proto::ModelVersionRuns, ApiError> {
        let latest = self.store.latest(model_ver).await?;
        let runs = self.store.runs(model_ver).await?;
        Ok(proto::ModelVersionRuns {
            latest_run_id: latest.map(|run| run.to_string()).unwrap_or_default(),
            runs: runs.iter().map(convert::model_run).collect(),
            model_ver: model_ver.to_string(),
        })
    }
}

/// The methods themselves; the trait below counts and times each.
impl TrainApi {
    async fn start_training_inner(
        &self,
        request: Request<proto::StartTrainingRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let request = convert::job_request(request.into_inner(), self.default_model_ver)?;
        let job = self.jobs.start(request).await?;
        Ok(Response::new(convert::job(&job)))
    }

    async fn get_training_job_inner(
        &self,
        request: Request<proto::GetTrainingJobRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let job = self.jobs.get(&request.into_inner().job_id)?;
        Ok(Response::new(convert::job(&job)))
    }

    async fn list_training_jobs_inner(
        &self,
        _request: Request<proto::ListTrainingJobsRequest>,
    ) -> Result<Response<proto::ListTrainingJobsResponse>, Status> {
        let jobs = self.jobs.list().iter().map(convert::job).collect();
        Ok(Response::new(proto::ListTrainingJobsResponse { jobs }))
    }

    async fn watch_training_job_inner(
        &self,
        request: Request<proto::WatchTrainingJobRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let updates = self.jobs.watch(&request.into_inner().job_id)?;
        Ok(Response::new(updates.map(|job| Ok(convert::job(&job))).boxed()))
    }

    async fn list_models_inner(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        let model_ver = request.into_inner().model_ver;
        let model_vers = if model_ver.is_empty() {
            self.store.versions().await.map_err(ApiError::from)?
        } else {
            vec![ModelVer::parse(&model_ver).map_err(ApiError::from)?]
        };
        let mut versions = Vec::with_capacity(model_vers.len());
        for model_ver in model_vers {
            versions.push(self.version_runs(model_ver).await?);
        }
        Ok(Response::new(proto::ListModelsResponse { versions }))
    }
}

type WatchStream = BoxStream<'static, Result<proto::TrainingJob, Status>>;

#[tonic::async_trait]
impl TrainService for TrainApi {
    async fn start_training(
        &self,
        request: Request<proto::StartTrainingRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let call = self.metrics.call("StartTraining");
        call.finish(self.start_training_inner(request).await)
    }

    async fn get_training_job(
        &self,
        request: Request<proto::GetTrainingJobRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let call = self.metrics.call("GetTrainingJob");
        call.finish(self.get_training_job_inner(request).await)
    }

    async fn list_training_jobs(
        &self,
        request: Request<proto::ListTrainingJobsRequest>,
    ) -> Result<Response<proto::ListTrainingJobsResponse>, Status> {
        let call = self.metrics.call("ListTrainingJobs");
        call.finish(self.list_training_jobs_inner(request).await)
    }

    type WatchTrainingJobStream = WatchStream;

    async fn watch_training_job(
        &self,
        request: Request<proto::WatchTrainingJobRequest>,
    ) -> Result<Response<Self::WatchTrainingJobStream>, Status> {
        let call = self.metrics.call("WatchTrainingJob");
        call.finish(self.watch_training_job_inner(request).await)
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        let call = self.metrics.call("ListModels");
        call.finish(self.list_models_inner(request).await)
    }
}
