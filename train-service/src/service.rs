//! The gRPC face of the jobs and the stored runs.

use crs_core::models::lookup;
use crs_core::storage::ModelStore;
use crs_proto::train as proto;
use crs_proto::train::train_service_server::TrainService;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::jobs::{Jobs, StartRequest};
use crate::status::ApiError;

#[derive(Clone, Debug)]
pub struct TrainApi {
    jobs: Jobs,
    store: ModelStore,
}

impl TrainApi {
    pub fn new(jobs: Jobs, store: ModelStore) -> Self {
        TrainApi { jobs, store }
    }

    async fn version_runs(&self, model_ver: String) -> Result<proto::ModelVersionRuns, ApiError> {
        let latest = self.store.latest(&model_ver).await?;
        let runs = self.store.runs(&model_ver).await?;
        Ok(proto::ModelVersionRuns {
            latest_run_id: latest.map(|run| run.to_string()).unwrap_or_default(),
            runs: runs.iter().map(convert::model_run).collect(),
            model_ver,
        })
    }
}

#[tonic::async_trait]
impl TrainService for TrainApi {
    async fn start_training(
        &self,
        request: Request<proto::StartTrainingRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let request = request.into_inner();
        let job = self
            .jobs
            .start(StartRequest {
                model_ver: request.model_ver,
                train_key: request.train_key,
                eval_key: request.eval_key,
                config_key: request.config_key,
                labels: request.labels.into_iter().collect(),
            })
            .await?;
        Ok(Response::new(convert::job(&job)))
    }

    async fn get_training_job(
        &self,
        request: Request<proto::GetTrainingJobRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let job = self.jobs.get(&request.into_inner().job_id)?;
        Ok(Response::new(convert::job(&job)))
    }

    async fn list_training_jobs(
        &self,
        _request: Request<proto::ListTrainingJobsRequest>,
    ) -> Result<Response<proto::ListTrainingJobsResponse>, Status> {
        let jobs = self.jobs.list().iter().map(convert::job).collect();
        Ok(Response::new(proto::ListTrainingJobsResponse { jobs }))
    }

    type WatchTrainingJobStream = BoxStream<'static, Result<proto::TrainingJob, Status>>;

    async fn watch_training_job(
        &self,
        request: Request<proto::WatchTrainingJobRequest>,
    ) -> Result<Response<Self::WatchTrainingJobStream>, Status> {
        let updates = self.jobs.watch(&request.into_inner().job_id)?;
        Ok(Response::new(updates.map(|job| Ok(convert::job(&job))).boxed()))
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        let model_ver = request.into_inner().model_ver;
        let model_vers = if model_ver.is_empty() {
            self.store.versions().await.map_err(ApiError::from)?
        } else {
            // Only registered names reach the bucket as a key segment.
            vec![lookup(&model_ver).map_err(ApiError::from)?.name().to_owned()]
        };
        let mut versions = Vec::with_capacity(model_vers.len());
        for model_ver in model_vers {
            versions.push(self.version_runs(model_ver).await?);
        }
        Ok(Response::new(proto::ListModelsResponse { versions }))
    }
}
