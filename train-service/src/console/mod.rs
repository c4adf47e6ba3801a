//! The model registry console: server-rendered pages for people and the JSON
//! API under `/api/v1/` they are built from, on train-service's HTTP listener.
//!
//! Every read goes to the bucket (through the same catalog, cycle and job
//! functions the gRPC methods use), with no cache of its own, so two replicas
//! on one bucket show the same thing. Long lists are paged, so reading a page
//! costs the page and not the version's whole past.
//!
//! Pages work without JavaScript for reading; `console.js`, served as a file
//! (the Content-Security-Policy allows no inline script), adds the actions
//! (promote, roll back, start a cycle, cancel a job) and live job progress.
//! Actions need the bearer token when one is set ([`ConsoleRule`]).

mod api;
mod pages;
mod views;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use crs_domain::models::ModelVer;
use crs_platform::error::Classify;
use crs_platform::registry::catalog::Catalog;
use crs_platform::service::security::TokenRule;
use http_body_util::Full;

use crate::cycles::Cycles;
use crate::jobs::Jobs;
use crate::status::ApiError;

pub use views::{DEFAULT_PAGE, MAX_PAGE};

/// Sent with every answer: scripts only from files this binary serves, no
/// framing, no guessing of content types.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'";

/// The OpenAPI 3 document of the JSON API, as served at `/api/v1/openapi.json`
/// (a test keeps `docs/console-openapi.json` equal to it).
pub const OPENAPI: &str = include_str!("openapi.json");

const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// What the console reads and acts on: the service's own catalog, jobs and cycles.
#[derive(Clone, Debug)]
pub struct Console {
    catalog: Catalog,
    jobs: Jobs,
    cycles: Cycles,
    /// Shown first where a page needs one version.
    default_model_ver: ModelVer,
}

impl Console {
    pub fn new(catalog: Catalog, jobs: Jobs, cycles: Cycles, default_model_ver: ModelVer) -> Self {
        Console { catalog, jobs, cycles, default_model_ver }
    }

    /// The jobs it lists and cancels: the service's own queue.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The cycles it lists and starts: the service's own.
    pub fn cycles(&self) -> &Cycles {
        &self.cycles
    }
}

/// The console's pages, its JSON API and its two static files. Put
/// [`ConsoleRule`] in front of it with the token (the kit's `AuthLayer`).
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(pages::models))
        .route("/models/{ver}", get(pages::version))
        .route("/models/{ver}/runs/{run}", get(pages::run))
        .route("/models/{ver}/runs/{run}/report", get(pages::run_report))
        .route("/models/{ver}/cycles/{cycle}", get(pages::cycle))
        .route("/models/{ver}/cycles/{cycle}/report", get(pages::cycle_report))
        .route("/jobs", get(pages::jobs))
        .route("/ledger", get(pages::ledger))
        .route("/static/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/static/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/v1/openapi.json", get(|| async { asset("application/json", OPENAPI) }))
        .route("/api/v1/models", get(api::models))
        .route("/api/v1/models/{ver}/runs", get(api::runs))
        .route("/api/v1/models/{ver}/runs/{run}", get(api::run))
        .route("/api/v1/models/{ver}/history", get(api::history))
        .route("/api/v1/models/{ver}/cycles", get(api::cycles).post(api::start_cycle))
        .route("/api/v1/models/{ver}/cycles/{cycle}", get(api::cycle))
        .route("/api/v1/models/{ver}/chart", get(api::chart))
        .route("/api/v1/models/{ver}/production", get(api::production))
        .route("/api/v1/models/{ver}/score", post(api::score))
        .route("/api/v1/models/{ver}/promote", post(api::promote))
        .route("/api/v1/models/{ver}/rollback", post(api::rollback))
        .route("/api/v1/jobs", get(api::jobs))
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/v1/ledger", get(api::ledger))
        .fallback(api::not_found)
        .with_state(console)
        .layer(axum::middleware::map_response(secure))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The headers every answer carries.
async fn secure(mut response: Response) -> Response {
    add_security_headers(response.headers_mut());
    response
}

fn add_security_headers(headers: &mut http::HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// The console's token rule: reading needs no token; every other call does,
/// except scoring a file, which changes nothing (as gRPC's `Score`). A path
/// this list does not know needs the token, so a new action is never open by
/// mistake.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleRule;

impl TokenRule for ConsoleRule {
    fn needs_token(&self, method: &http::Method, path: &str) -> bool {
        if matches!(*method, http::Method::GET | http::Method::HEAD) {
            return false;
        }
        let scoring = path
            .strip_prefix("/api/v1/models/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_ver, action)| action == "score");
        !(*method == http::Method::POST && scoring)
    }

    fn refusal(&self) -> http::Response<Full<Bytes>> {
        let body = serde_json::json!({
            "error": "this action needs the bearer token: send it as `Authorization: Bearer <token>`",
            "kind": "unauthenticated",
        });
        let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        // The refusal is answered in front of the router: it carries the headers itself.
        add_security_headers(headers);
        response
    }
}

/// A failed API call: the error's message and kind as JSON, with the HTTP
/// status of its kind from the kit's one table.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.into())
    }
}

impl Failure {
    fn status(&self) -> http::StatusCode {
        crs_server::status::http_status(self.0.kind())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "console request failed");
        }
        let kind = format!("{:?}", self.0.kind());
        (status, axum::Json(serde_json::json!({ "error": self.0.to_string(), "kind": snake(&kind) }))).into_response()
    }
}

/// `InvalidInput` as `invalid_input`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_scoring_are_open_and_every_other_call_needs_the_token() {
        let rule = ConsoleRule;
        assert!(!rule.needs_token(&http::Method::GET, "/api/v1/models"));
        assert!(!rule.needs_token(&http::Method::GET, "/models/v1"));
        assert!(!rule.needs_token(&http::Method::POST, "/api/v1/models/v1/score"));
        for path in [
            "/api/v1/models/v1/promote",
            "/api/v1/models/v1/rollback",
            "/api/v1/models/v1/cycles",
            "/api/v1/jobs/job-1/cancel",
            "/api/v1/models/v1/score/x",
            "/api/v1/something-new",
        ] {
            assert!(rule.needs_token(&http::Method::POST, path), "{path}");
        }
        assert!(rule.needs_token(&http::Method::DELETE, "/api/v1/models/v1/score"));
    }

    #[test]
    fn kinds_are_named_in_snake_case() {
        assert_eq!(snake("InvalidInput"), "invalid_input");
        assert_eq!(snake("NotFound"), "not_found");
        assert_eq!(snake("Internal"), "internal");
    }
}
