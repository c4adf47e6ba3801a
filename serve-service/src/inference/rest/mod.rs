//! The Open Inference Protocol over HTTP/REST (`SERVE_HTTP_ADDR`), as the
//! KServe V2 "Predict Protocol" specifies it, with Triton's binary tensor data
//! and model repository extensions: the routes of
//! `crs_proto::SERVE_REST_ROUTES`, each answering by the rules of
//! [`Inference`] that its gRPC RPC answers by, and the OpenAPI document of
//! them all (`openapi.rs`).
//!
//! Health is told by the status alone (200, or 400 for not ready) with an
//! empty body; every other answer is JSON, and every error `{"error": "..."}`
//! with the status of its kind (`crs_server::status`). The server kit serves
//! the router with TLS, limits, request ids, the token and metrics.

mod openapi;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use bytes::Bytes;
use crs_platform::error::ErrorKind;
use crs_proto::SERVE_REST_ROUTES;
use crs_server::status::{HttpError, JSON};
use serde::Deserialize;

use super::Inference;
pub use openapi::document as openapi_document;
use wire::{HEADER_LENGTH, InferBody};

/// The protocol extensions of the REST side: those of both transports, and Triton's binary tensor data.
const REST_EXTENSIONS: &[&str] = &["model_repository", "binary_tensor_data"];

/// What the REST handlers share.
#[derive(Debug)]
struct Rest {
    inference: Arc<Inference>,
    /// `MAX_MESSAGE_BYTES`: the largest request body taken.
    max_body_bytes: usize,
    /// The OpenAPI document, rendered once.
    openapi: Bytes,
}

type Shared = State<Arc<Rest>>;

impl Rest {
    /// The request's body, whole, within `MAX_MESSAGE_BYTES`.
    async fn body(&self, request: Request) -> Result<Bytes, HttpError> {
        crs_server::http::read_body(request, self.max_body_bytes, "MAX_MESSAGE_BYTES").await
    }

    /// A load or unload request's model, once its body is checked.
    async fn repository_request(
        &self,
        path: Result<Path<ModelPath>, PathRejection>,
        request: Request,
    ) -> Result<ModelPath, HttpError> {
        let path = model_path(path)?;
        wire::check_repository_request(&self.body(request).await?)?;
        Ok(path)
    }
}

/// The REST API's router: every route of `SERVE_REST_ROUTES`, JSON answers
/// for unknown paths (404) and methods (405).
pub fn router(inference: Arc<Inference>, max_body_bytes: usize) -> Router {
    let document = Bytes::from(serde_json::to_vec_pretty(&openapi::document()).expect("the document serializes"));
    let rest = Arc::new(Rest { inference, max_body_bytes, openapi: document });
    let mut router = Router::new();
    for route in SERVE_REST_ROUTES {
        let rpc = route.rpc.and_then(|rpc| rpc.rsplit('/').next());
        let handler: MethodRouter<Arc<Rest>> = match (route.method, rpc) {
            ("GET", Some("ServerLive")) => get(live),
            ("GET", Some("ServerReady")) => get(server_ready),
            ("GET", Some("ModelReady")) => get(model_ready),
            ("GET", Some("ServerMetadata")) => get(server_metadata),
            ("GET", Some("ModelMetadata")) => get(model_metadata),
            ("POST", Some("ModelInfer")) => post(infer),
            ("POST", Some("RepositoryIndex")) => post(repository_index),
            ("POST", Some("RepositoryModelLoad")) => post(load),
            ("POST", Some("RepositoryModelUnload")) => post(unload),
            ("GET", None) => get(openapi),
            _ => panic!("no handler for the REST route {route:?}"),
        };
        router = router.route(route.path, handler);
    }
    router.method_not_allowed_fallback(method_not_allowed).fallback(not_found).with_state(rest)
}

/// A model and, on the routes that name one, a version.
#[derive(Debug, Deserialize)]
struct ModelPath {
    model: String,
    #[serde(default)]
    version: Option<String>,
}

impl ModelPath {
    fn version(&self) -> &str {
        self.version.as_deref().unwrap_or_default()
    }
}

/// The path's model and version; a path whose segments cannot be read (not
/// UTF-8 once percent-decoded) names no model.
fn model_path(path: Result<Path<ModelPath>, PathRejection>) -> Result<ModelPath, HttpError> {
    path.map(|Path(path)| path).map_err(|e| HttpError::new(ErrorKind::NotFound, format!("the path: {}", e.body_text())))
}

fn json_answer(body: impl Into<axum::body::Body>) -> Response {
    ([(CONTENT_TYPE, JSON)], body.into()).into_response()
}

/// A health answer: the status alone.
fn health(ready: bool) -> StatusCode {
    if ready { StatusCode::OK } else { StatusCode::BAD_REQUEST }
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn server_ready(State(rest): Shared) -> StatusCode {
    health(rest.inference.server_ready())
}

async fn model_ready(
    State(rest): Shared,
    path: Result<Path<ModelPath>, PathRejection>,
) -> Result<StatusCode, HttpError> {
    let path = model_path(path)?;
    rest.inference.resolve(&path.model).await;
    Ok(health(rest.inference.model_ready(&path.model, path.version())?))
}

async fn server_metadata(State(rest): Shared) -> Response {
    json_answer(wire::server_metadata_json(&rest.inference.server_metadata(REST_EXTENSIONS)).to_string())
}

async fn model_metadata(
    State(rest): Shared,
    path: Result<Path<ModelPath>, PathRejection>,
) -> Result<Response, HttpError> {
    let path = model_path(path)?;
    rest.inference.resolve(&path.model).await;
    let metadata = rest.inference.model_metadata(&path.model, path.version())?;
    Ok(json_answer(wire::model_metadata_json(&metadata).to_string()))
}

/// The binary tensor data extension's header, if the request has one.
fn header_length(headers: &HeaderMap) -> Result<Option<usize>, HttpError> {
    let Some(value) = headers.get(HEADER_LENGTH) else { return Ok(None) };
    let length = value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok());
    length.map(Some).ok_or_else(|| {
        HttpError::new(ErrorKind::InvalidInput, format!("{HEADER_LENGTH} must be a number of bytes, got {value:?}"))
    })
}

async fn infer(
    State(rest): Shared,
    path: Result<Path<ModelPath>, PathRejection>,
    request: Request,
) -> Result<Response, HttpError> {
    let path = model_path(path)?;
    rest.inference.resolve(&path.model).await;
    let header_length = header_length(request.headers())?;
    let body = rest.body(request).await?;
    let parsed = InferBody::parse(&body, header_length)?;
    let binary = parsed.binary_answer()?;
    let inferred = rest.inference.infer(&parsed.infer_request(&path.model, path.version())?)?;
    let answer = wire::infer_answer(&inferred, parsed.id(), binary);
    Ok(match answer.binary {
        None => json_answer(answer.json),
        Some(binary) => {
            let length = HeaderValue::from(answer.json.len());
            let mut body = answer.json;
            body.extend_from_slice(&binary);
            let headers = [
                (CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (HeaderName::from_static(HEADER_LENGTH), length),
            ];
            (headers, body).into_response()
        }
    })
}

async fn repository_index(State(rest): Shared, request: Request) -> Result<Response, HttpError> {
    let body = rest.body(request).await?;
    let ready_only = wire::index_ready_only(&body)?;
    Ok(json_answer(wire::repository_index_json(&rest.inference.repository_index(ready_only)).to_string()))
}

async fn load(
    State(rest): Shared,
    path: Result<Path<ModelPath>, PathRejection>,
    request: Request,
) -> Result<StatusCode, HttpError> {
    let path = rest.repository_request(path, request).await?;
    rest.inference.load(&path.model).await?;
    Ok(StatusCode::OK)
}

async fn unload(
    State(rest): Shared,
    path: Result<Path<ModelPath>, PathRejection>,
    request: Request,
) -> Result<StatusCode, HttpError> {
    let path = rest.repository_request(path, request).await?;
    rest.inference.unload(&path.model)?;
    Ok(StatusCode::OK)
}

async fn openapi(State(rest): Shared) -> Response {
    json_answer(rest.openapi.clone())
}

async fn not_found(method: Method, uri: Uri) -> HttpError {
    HttpError::new(
        ErrorKind::NotFound,
        format!("no such route: {method} {}; the routes are listed at /v2/openapi.json", uri.path()),
    )
}

/// 405, with the `Allow` header axum adds; a routing answer, not an error kind.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let body = serde_json::json!({ "error": format!("{} does not take {method}", uri.path()) }).to_string();
    (StatusCode::METHOD_NOT_ALLOWED, [(CONTENT_TYPE, JSON)], body).into_response()
}
