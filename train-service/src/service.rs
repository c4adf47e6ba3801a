//! The gRPC face of the jobs, the cycles and the stored runs.

use std::sync::Arc;

use crs_domain::models::ModelVer;
use crs_platform::lifecycle::ingest::ingest_new;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::versions;
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
    /// Most bytes an imported model file may have (MAX_IMPORT_BYTES).
    max_import_bytes: usize,
    metrics: Arc<TrainMetrics>,
}

impl TrainApi {
    pub fn new(
        jobs: Jobs,
        cycles: Cycles,
        catalog: Catalog,
        default_model_ver: ModelVer,
        max_import_bytes: usize,
        metrics: Arc<TrainMetrics>,
    ) -> Self {
        TrainApi { jobs, cycles, catalog, default_model_ver, max_import_bytes, metrics }
    }

    /// The version a request names: the server's MODEL_VER when it names
    /// none, else one this build trains or the bucket declares for imports.
    async fn model_ver(&self, name: &str) -> Result<ModelVer, ApiError> {
        if name.is_empty() {
            return Ok(self.default_model_ver);
        }
        Ok(versions::resolve(self.catalog.bucket(), name).await?)
    }

    /// Reads an ImportModel stream: its header, then the file up to the size
    /// cap, then converts the file and queues the job.
    async fn import_model(
        &self,
        mut stream: tonic::Streaming<proto::ImportModelRequest>,
    ) -> Result<proto::TrainingJob, Status> {
        use proto::import_model_request::Part;
        let header = match stream.message().await? {
            Some(proto::ImportModelRequest { part: Some(Part::Header(header)) }) => header,
            _ => return Err(ApiError::BadImport("an ImportModel stream starts with its header".to_owned()).into()),
        };
        if header.model_ver.is_empty() {
            return Err(ApiError::BadImport("an import names the version it is for (model_ver)".to_owned()).into());
        }
        let model_ver = self.model_ver(&header.model_ver).await?;
        let declaration = versions::declaration(self.catalog.bucket(), model_ver).await.map_err(ApiError::from)?;
        let Some(declaration) = declaration.filter(|_| model_ver.is_imported()) else {
            return Err(ApiError::BadImport(format!(
                "model version {model_ver} is trained by this build, not declared for imports: declare a version of its own in config/<ver>/model.yaml (framework: xgboost or lightgbm)"
            ))
            .into());
        };
        let mut file = bytes::BytesMut::new();
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(Part::Chunk(chunk)) => {
                    if file.len() + chunk.len() > self.max_import_bytes {
                        return Err(ApiError::BadImport(format!(
                            "the model file is larger than the import size cap of {} bytes (MAX_IMPORT_BYTES)",
                            self.max_import_bytes
                        ))
                        .into());
                    }
                    file.extend_from_slice(&chunk);
                }
                _ => {
                    return Err(ApiError::BadImport("only the first ImportModel message is a header".to_owned()).into());
                }
            }
        }
        if file.is_empty() {
            return Err(ApiError::BadImport("the model file is empty".to_owned()).into());
        }
        let framework = declaration.framework;
        let bytes = file.freeze();
        // Converting is CPU work on a file of up to the cap: off the async workers.
        let request = tokio::task::spawn_blocking(move || convert::import_request(header, model_ver, framework, bytes))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        let job = self.jobs.start(request).await?;
        Ok(convert::job(&job))
    }

    async fn version_runs(&self, model_ver: ModelVer) -> Result<proto::ModelVersionRuns, ApiError> {
        Ok(convert::version_runs(&self.catalog.runs(model_ver).await?))
    }

    async fn promote(&self, request: proto::PromoteRequest) -> Result<proto::ModelVersionRuns, ApiError> {
        let model_ver = self.model_ver(&request.model_ver).await?;
        let run = RunId::parse(&request.run_id)?;
        let actor = Actor { by: request.by, reason: request.reason };
        actions::promote(&self.catalog, model_ver, run, actor).await?;
        self.version_runs(model_ver).await
    }

    async fn rollback(&self, request: proto::RollbackRequest) -> Result<proto::ModelVersionRuns, ApiError> {
        let model_ver = self.model_ver(&request.model_ver).await?;
        actions::rollback(&self.catalog, model_ver, Actor { by: request.by, reason: request.reason }).await?;
        self.version_runs(model_ver).await
    }

    async fn score(&self, request: proto::ScoreRequest) -> Result<proto::ScoreResponse, ApiError> {
        let model_ver = self.model_ver(&request.model_ver).await?;
        let key = BucketKey::parse(&request.data_key)?;
        let (production, evaluation) = actions::score(&self.catalog, model_ver, &key).await?;
        Ok(proto::ScoreResponse {
            model_ver: model_ver.to_string(),
            run_id: production.to_string(),
            evaluation: Some(convert::evaluation(&evaluation)),
        })
    }

    async fn report(&self, request: proto::GetReportRequest) -> Result<proto::GetReportResponse, ApiError> {
        let model_ver = self.model_ver(&request.model_ver).await?;
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
                let request = request.into_inner();
                let model_ver = self.model_ver(&request.model_ver).await?;
                let request = convert::job_request(request, model_ver)?;
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
                    // Runs of imported versions are listed once their declarations are known.
                    versions::declare_all(self.catalog.bucket()).await;
                    self.catalog.store().versions().await.map_err(ApiError::from)?
                } else {
                    vec![self.model_ver(&model_ver).await?]
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
                let model_ver = self.model_ver(&request.into_inner().model_ver).await?;
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
                let model_ver = self.model_ver(&request.model_ver).await?;
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
                let model_ver = self.model_ver(&request.model_ver).await?;
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
                let model_ver = self.model_ver(&request.into_inner().model_ver).await?;
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

    async fn import_model(
        &self,
        request: Request<tonic::Streaming<proto::ImportModelRequest>>,
    ) -> Result<Response<proto::TrainingJob>, Status> {
        let call = self.metrics.call("ImportModel");
        call.finish(
            async { Ok::<_, Status>(Response::new(TrainApi::import_model(self, request.into_inner()).await?)) }.await,
        )
    }
}
