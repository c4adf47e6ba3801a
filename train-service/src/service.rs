//! The gRPC face of the jobs, the cycles and the stored runs.

use std::sync::Arc;

use crs_domain::models::ModelVer;
use crs_platform::lifecycle::ingest::ingest_new;
use crs_platform::registry::catalog::Catalog;
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::{self, RunId};
use crs_proto::train as proto;
use crs_proto::train::train_service_server::TrainService;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

use crate::actions::{self, Actor};
use crate::convert;
use crate::cycles::Cycles;
use crate::jobs::{Cancellation, Jobs};
use crate::metrics::TrainMetrics;
use crate::status::ApiError;

#[derive(Clone, Debug)]
pub struct TrainApi {
    jobs: Jobs,
    cycles: Cycles,
    catalog: Catalog,
    /// Used when a request names no version.
    default_model_ver: ModelVer,
    metrics: Arc<TrainMetrics>,
}

impl TrainApi {
    pub fn new(
        jobs: Jobs,
        cycles: Cycles,
        catalog: Catalog,
        default_model_ver: ModelVer,
        metrics: Arc<TrainMetrics>,
    ) -> Self {
        TrainApi { jobs, cycles, catalog, default_model_ver, metrics }
    }

    fn model_ver(&self, name: &str) -> Result<ModelVer, ApiError> {
        if name.is_empty() { Ok(self.default_model_ver) } else { Ok(ModelVer::parse(name)?) }
    }

    async fn version_runs(&self, model_ver: ModelVer) -> Result<proto::ModelVersionRuns, ApiError> {
        Ok(convert::version_runs(&self.catalog.runs(model_ver).await?))
    }

    async fn promote(&self, request: proto::PromoteRequest) -> Result<proto::ModelVersionRuns, ApiError> {
        let model_ver = self.model_ver(&request.model_ver)?;
        let run = RunId::parse(&request.run_id)?;
        let actor = Actor { by: request.by, reason: request.reason };
        actions::promote(&self.catalog, model_ver, run, actor).await?;
        self.version_runs(model_ver).await
    }

    async fn rollback(&self, request: proto::RollbackRequest) -> Result<proto::ModelVersionRuns, ApiError> {
        let model_ver = self.model_ver(&request.model_ver)?;
        actions::rollback(&self.catalog, model_ver, Actor { by: request.by, reason: request.reason }).await?;
        self.version_runs(model_ver).await
    }

    async fn score(&self, request: proto::ScoreRequest) -> Result<proto::ScoreResponse, ApiError> {
        let model_ver = self.model_ver(&request.model_ver)?;
        let key = BucketKey::parse(&request.data_key)?;
        let (production, evaluation) = actions::score(&self.catalog, model_ver, &key).await?;
        Ok(proto::ScoreResponse {
            model_ver: model_ver.to_string(),
            run_id: production.to_string(),
            evaluation: Some(convert::evaluation(&evaluation)),
        })
    }

    async fn report(&self, request: proto::GetReportRequest) -> Result<proto::GetReportResponse, ApiError> {
        let model_ver = self.model_ver(&request.model_ver)?;
        let key = if !request.cycle_id.is_empty() {
            layout::cycle_report(model_ver, &RunId::parse(&request.cycle_id)?)
        } else {
            let run = match request.run_id.as_str() {
                "" => self
                    .catalog
                    .production(model_ver)
                    .await?
                    .ok_or_else(|| ApiError::Precondition(format!("model {model_ver} has no production run")))?,
                id => RunId::parse(id)?,
            };
            layout::run_report(model_ver, &run)
        };
        if !self.catalog.bucket().exists(&key).await? {
            return Err(ApiError::MissingObject { what: "report", key: key.to_string() });
        }
        Ok(proto::GetReportResponse { report_key: key.to_string() })
    }
}

#[tonic::async_trait]
impl TrainService for TrainApi {
    async fn start_training(
        &self,
        request: Request<proto::StartTrainingRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let call = self.metrics.call("StartTraining");
        call.finish(
            async {
                let request = convert::job_request(request.into_inner(), self.default_model_ver)?;
                let job = self.jobs.start(request).await?;
                Ok::<_, Status>(Response::new(convert::job(&job)))
            }
            .await,
        )
    }

    async fn get_training_job(
        &self,
        request: Request<proto::GetTrainingJobRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let call = self.metrics.call("GetTrainingJob");
        call.finish(
            async {
                let job = self.jobs.get(&request.into_inner().job_id).await?;
                Ok::<_, Status>(Response::new(convert::job(&job)))
            }
            .await,
        )
    }

    async fn list_training_jobs(
        &self,
        _request: Request<proto::ListTrainingJobsRequest>,
    ) -> Result<Response<proto::ListTrainingJobsResponse>, Status> {
        let call = self.metrics.call("ListTrainingJobs");
        call.finish(
            async {
                let jobs = self.jobs.list().await?.iter().map(convert::job).collect();
                Ok::<_, Status>(Response::new(proto::ListTrainingJobsResponse { jobs }))
            }
            .await,
        )
    }

    async fn cancel_training_job(
        &self,
        request: Request<proto::CancelTrainingJobRequest>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let call = self.metrics.call("CancelTrainingJob");
        call.finish(
            async {
                let request = request.into_inner();
                let or = |text: String, default: &str| if text.is_empty() { default.to_owned() } else { text };
                let cancellation = Cancellation {
                    by: or(request.by, "a CancelTrainingJob call"),
                    reason: or(request.reason, "no reason given"),
                };
                let job = self.jobs.cancel(&request.job_id, cancellation).await?;
                Ok::<_, Status>(Response::new(convert::job(&job)))
            }
            .await,
        )
    }

    type WatchTrainingJobStream = BoxStream<'static, Result<proto::TrainingJob, Status>>;

    async fn watch_training_job(
        &self,
        request: Request<proto::WatchTrainingJobRequest>,
    ) -> Result<Response<Self::WatchTrainingJobStream>, Status> {
        let call = self.metrics.call("WatchTrainingJob");
        call.finish(
            async {
                let updates = self.jobs.watch(&request.into_inner().job_id)?;
                Ok::<_, Status>(Response::new(updates.map(|job| Ok(convert::job(&job))).boxed()))
            }
            .await,
        )
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        let call = self.metrics.call("ListModels");
        call.finish(
            async {
                let model_ver = request.into_inner().model_ver;
                let model_vers = if model_ver.is_empty() {
                    self.catalog.store().versions().await.map_err(ApiError::from)?
                } else {
                    vec![ModelVer::parse(&model_ver).map_err(ApiError::from)?]
                };
                let mut versions = Vec::with_capacity(model_vers.len());
                for model_ver in model_vers {
                    versions.push(self.version_runs(model_ver).await?);
                }
                Ok::<_, Status>(Response::new(proto::ListModelsResponse { versions }))
            }
            .await,
        )
    }

    async fn ingest(&self, _request: Request<proto::IngestRequest>) -> Result<Response<proto::IngestResponse>, Status> {
        let call = self.metrics.call("Ingest");
        call.finish(
            async {
                let bucket = self.catalog.bucket();
                let incoming = self.cycles.incoming();
                let fail = self.catalog.fail_point();
                let entries = ingest_new(bucket, incoming, "crctl ingest", self.cycles.lease_ttl(), fail)
                    .await
                    .map_err(ApiError::from)?;
                Ok::<_, Status>(Response::new(proto::IngestResponse {
                    entries: entries.iter().map(convert::ledger_entry).collect(),
                }))
            }
            .await,
        )
    }

    async fn run_cycle(&self, request: Request<proto::RunCycleRequest>) -> Result<Response<proto::Cycle>, Status> {
        let call = self.metrics.call("RunCycle");
        call.finish(
            async {
                let model_ver = self.model_ver(&request.into_inner().model_ver)?;
                let record = self.cycles.start(model_ver, "crctl cycle").await?;
                Ok::<_, Status>(Response::new(convert::cycle(&record)))
            }
            .await,
        )
    }

    async fn get_cycle(&self, request: Request<proto::GetCycleRequest>) -> Result<Response<proto::Cycle>, Status> {
        let call = self.metrics.call("GetCycle");
        call.finish(
            async {
                let request = request.into_inner();
                let model_ver = self.model_ver(&request.model_ver)?;
                let id = RunId::parse(&request.cycle_id).map_err(ApiError::from)?;
                Ok::<_, Status>(Response::new(convert::cycle(&self.cycles.get(model_ver, &id).await?)))
            }
            .await,
        )
    }

    async fn cancel_cycle(
        &self,
        request: Request<proto::CancelCycleRequest>,
    ) -> Result<Response<proto::Cycle>, Status> {
        let call = self.metrics.call("CancelCycle");
        call.finish(
            async {
                let request = request.into_inner();
                let model_ver = self.model_ver(&request.model_ver)?;
                let id = RunId::parse(&request.cycle_id).map_err(ApiError::from)?;
                let or = |text: String, default: &str| if text.is_empty() { default.to_owned() } else { text };
                let cancellation = Cancellation {
                    by: or(request.by, "a CancelCycle call"),
                    reason: or(request.reason, "no reason given"),
                };
                let record = self.cycles.cancel(model_ver, &id, cancellation).await?;
                Ok::<_, Status>(Response::new(convert::cycle(&record)))
            }
            .await,
        )
    }

    async fn list_cycles(
        &self,
        request: Request<proto::ListCyclesRequest>,
    ) -> Result<Response<proto::ListCyclesResponse>, Status> {
        let call = self.metrics.call("ListCycles");
        call.finish(
            async {
                let model_ver = self.model_ver(&request.into_inner().model_ver)?;
                let cycles = self.cycles.list(model_ver).await?.iter().map(convert::cycle).collect();
                Ok::<_, Status>(Response::new(proto::ListCyclesResponse { cycles }))
            }
            .await,
        )
    }

    async fn promote(
        &self,
        request: Request<proto::PromoteRequest>,
    ) -> Result<Response<proto::ModelVersionRuns>, Status> {
        let call = self.metrics.call("Promote");
        call.finish(
            async { Ok::<_, Status>(Response::new(TrainApi::promote(self, request.into_inner()).await?)) }.await,
        )
    }

    async fn rollback(
        &self,
        request: Request<proto::RollbackRequest>,
    ) -> Result<Response<proto::ModelVersionRuns>, Status> {
        let call = self.metrics.call("Rollback");
        call.finish(
            async { Ok::<_, Status>(Response::new(TrainApi::rollback(self, request.into_inner()).await?)) }.await,
        )
    }

    async fn score(&self, request: Request<proto::ScoreRequest>) -> Result<Response<proto::ScoreResponse>, Status> {
        let call = self.metrics.call("Score");
        call.finish(async { Ok::<_, Status>(Response::new(TrainApi::score(self, request.into_inner()).await?)) }.await)
    }

    async fn get_report(
        &self,
        request: Request<proto::GetReportRequest>,
    ) -> Result<Response<proto::GetReportResponse>, Status> {
        let call = self.metrics.call("GetReport");
        call.finish(async { Ok::<_, Status>(Response::new(self.report(request.into_inner()).await?)) }.await)
    }
}
