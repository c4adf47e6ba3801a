//! The JSON API under `/api/v1/`: each read is a view of `views`, each action
//! the function the gRPC method calls (`crate::actions`, jobs, cycles).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crs_domain::models::ModelVer;
use crs_platform::registry::versions;
use crs_platform::storage::bucket::BucketKey;
use crs_platform::storage::layout::RunId;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::views::{self, Page, RunFilter};
use super::{Console, Failure};
use crate::actions::{self, Actor};
use crate::jobs::Cancellation;
use crate::status::ApiError;

type Answer = Result<Response, Failure>;
type Params = Query<HashMap<String, String>>;

fn json(value: impl serde::Serialize) -> Answer {
    Ok(Json(value).into_response())
}

/// A built-in version, or one the bucket declares for imports (declared by
/// another replica since this one started included).
pub(super) async fn model_ver(console: &Console, text: &str) -> Result<ModelVer, ApiError> {
    Ok(versions::resolve(console.catalog.bucket(), text).await?)
}

pub(super) fn run_id(text: &str) -> Result<RunId, ApiError> {
    Ok(RunId::parse(text)?)
}

pub(super) fn page(params: &HashMap<String, String>) -> Result<Page, ApiError> {
    Page::parse(params.get("offset").map(String::as_str), params.get("limit").map(String::as_str))
}

pub(super) fn run_filter(params: &HashMap<String, String>) -> Result<RunFilter, ApiError> {
    let get = |name: &str| params.get(name).map(String::as_str);
    RunFilter::parse(get("stage"), get("label"), get("sort"), get("order"))
}

/// An action's JSON body; an empty body is `{}`, so actions whose fields are
/// all optional can be sent without one.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

pub(super) async fn not_found() -> Failure {
    Failure(ApiError::MissingObject { what: "page", key: "no such path".to_owned() })
}

pub(super) async fn models(State(console): State<Console>) -> Answer {
    json(views::models(&console).await?)
}

pub(super) async fn runs(State(console): State<Console>, Path(ver): Path<String>, Query(params): Params) -> Answer {
    let (model_ver, filter, page) = (model_ver(&console, &ver).await?, run_filter(&params)?, page(&params)?);
    json(views::runs(&console, model_ver, &filter, page).await?)
}

pub(super) async fn run(State(console): State<Console>, Path((ver, run)): Path<(String, String)>) -> Answer {
    json(views::run(&console, model_ver(&console, &ver).await?, &run_id(&run)?).await?)
}

pub(super) async fn history(State(console): State<Console>, Path(ver): Path<String>) -> Answer {
    json(views::history(&console, model_ver(&console, &ver).await?).await?)
}

pub(super) async fn cycles(State(console): State<Console>, Path(ver): Path<String>, Query(params): Params) -> Answer {
    json(views::cycles(&console, model_ver(&console, &ver).await?, page(&params)?).await?)
}

pub(super) async fn cycle(State(console): State<Console>, Path((ver, cycle)): Path<(String, String)>) -> Answer {
    json(console.cycles.get(model_ver(&console, &ver).await?, &run_id(&cycle)?).await?)
}

pub(super) async fn chart(State(console): State<Console>, Path(ver): Path<String>) -> Answer {
    json(views::chart(&console, model_ver(&console, &ver).await?).await?)
}

pub(super) async fn production(State(console): State<Console>, Path(ver): Path<String>) -> Answer {
    json(views::production(&console, model_ver(&console, &ver).await?).await?)
}

pub(super) async fn jobs(State(console): State<Console>, Query(params): Params) -> Answer {
    json(views::jobs(&console, page(&params)?).await?)
}

pub(super) async fn job(State(console): State<Console>, Path(id): Path<String>) -> Answer {
    json(console.jobs.get(&id).await?)
}

pub(super) async fn ledger(State(console): State<Console>, Query(params): Params) -> Answer {
    json(views::ledger(&console.catalog, page(&params)?).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreBody {
    /// A labelled file in the bucket, in the training schema.
    data_key: String,
}

pub(super) async fn score(State(console): State<Console>, Path(ver): Path<String>, bytes: Bytes) -> Answer {
    let model_ver = model_ver(&console, &ver).await?;
    let request: ScoreBody = body(&bytes)?;
    let key = BucketKey::parse(&request.data_key)?;
    let (run_id, evaluation) = actions::score(&console.catalog, model_ver, &key).await?;
    json(
        serde_json::json!({ "model_ver": model_ver, "run_id": run_id, "data_key": key.as_str(), "evaluation": evaluation }),
    )
}

/// Who acts and why, as an action's body carries them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorBody {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    run_id: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
}

/// What an action's `by` becomes when the caller names nobody.
const CONSOLE: &str = "console";

fn actor(by: String, reason: String) -> Actor {
    Actor { by: if by.trim().is_empty() { CONSOLE.to_owned() } else { by }, reason }
}

pub(super) async fn promote(State(console): State<Console>, Path(ver): Path<String>, bytes: Bytes) -> Answer {
    let model_ver = model_ver(&console, &ver).await?;
    let request: PromoteBody = body(&bytes)?;
    let run = run_id(&request.run_id)?;
    let event = actions::promote(&console.catalog, model_ver, run, actor(request.by, request.reason)).await?;
    json(event)
}

pub(super) async fn rollback(State(console): State<Console>, Path(ver): Path<String>, bytes: Bytes) -> Answer {
    let model_ver = model_ver(&console, &ver).await?;
    let request: ActorBody = body(&bytes)?;
    json(actions::rollback(&console.catalog, model_ver, actor(request.by, request.reason)).await?)
}

pub(super) async fn start_cycle(State(console): State<Console>, Path(ver): Path<String>, bytes: Bytes) -> Answer {
    let model_ver = model_ver(&console, &ver).await?;
    let request: ActorBody = body(&bytes)?;
    let by = if request.by.trim().is_empty() { CONSOLE.to_owned() } else { request.by };
    let record = console.cycles.start(model_ver, &by).await?;
    Ok((StatusCode::ACCEPTED, Json(record)).into_response())
}

pub(super) async fn cancel_job(State(console): State<Console>, Path(id): Path<String>, bytes: Bytes) -> Answer {
    let request: ActorBody = body(&bytes)?;
    let cancellation = Cancellation {
        by: if request.by.trim().is_empty() { CONSOLE.to_owned() } else { request.by },
        reason: if request.reason.trim().is_empty() { "no reason given".to_owned() } else { request.reason },
    };
    json(console.jobs.cancel(&id, cancellation).await?)
}
