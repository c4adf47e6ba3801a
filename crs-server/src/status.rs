//! The one table from error kinds (`crs_platform::error`) to what a caller is
//! answered: a gRPC code, and the HTTP status of the same kind for the HTTP
//! APIs, whose error answers are `{"error": "<message>"}` ([`HttpError`]). A
//! service sorts its own errors into kinds (`Classify`) and answers with these.
//!
//! | kind | gRPC code | HTTP status |
//! |---|---|---|
//! | `InvalidInput` | `INVALID_ARGUMENT` | 400 |
//! | `NotFound` | `NOT_FOUND` | 404 |
//! | `Precondition` | `FAILED_PRECONDITION` | 409 |
//! | `Conflict` | `ABORTED` | 409 |
//! | `AlreadyExists` | `ALREADY_EXISTS` | 409 |
//! | `Unauthenticated` | `UNAUTHENTICATED` | 401 |
//! | `Unavailable` | `UNAVAILABLE` | 503 |
//! | `Exhausted` | `RESOURCE_EXHAUSTED` | 429 |
//! | `TooLarge` | `RESOURCE_EXHAUSTED` | 413 |
//! | `Internal` | `INTERNAL` | 500 |

use axum::response::{IntoResponse, Response};
use crs_platform::error::ErrorKind;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use tonic::Code;

/// The gRPC code of each kind of failure.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidInput => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Precondition => Code::FailedPrecondition,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Unavailable => Code::Unavailable,
        // gRPC's own answer to a message over the size limit.
        ErrorKind::Exhausted | ErrorKind::TooLarge => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The HTTP status of each kind of failure. A precondition that does not hold
/// is a conflict with the server's state, as a lost race is: 409 for both.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Precondition | ErrorKind::Conflict | ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Exhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What an HTTP API answers a failed request with: the status of its kind and
/// the body `{"error": "<message>"}`, as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl HttpError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HttpError { kind, message: message.into() }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

/// The content type of every JSON answer of the HTTP APIs.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = http_status(self.kind);
        // The bucket's and our own failures are the operator's problem; the rest are the caller's.
        if status.is_server_error() {
            tracing::error!(error = %self.message, status = status.as_u16(), "request failed");
        }
        (status, [(CONTENT_TYPE, JSON)], self.body()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in this module's documentation, spelled out again on purpose:
    /// changing an answer must change this test as well as the code.
    fn documented(kind: ErrorKind) -> (Code, u16) {
        match kind {
            ErrorKind::InvalidInput => (Code::InvalidArgument, 400),
            ErrorKind::NotFound => (Code::NotFound, 404),
            ErrorKind::Precondition => (Code::FailedPrecondition, 409),
            ErrorKind::Conflict => (Code::Aborted, 409),
            ErrorKind::AlreadyExists => (Code::AlreadyExists, 409),
            ErrorKind::Unauthenticated => (Code::Unauthenticated, 401),
            ErrorKind::Unavailable => (Code::Unavailable, 503),
            ErrorKind::Exhausted => (Code::ResourceExhausted, 429),
            ErrorKind::TooLarge => (Code::ResourceExhausted, 413),
            ErrorKind::Internal => (Code::Internal, 500),
        }
    }

    #[test]
    fn every_kind_gets_the_documented_code_and_status() {
        for kind in ErrorKind::ALL {
            assert_eq!((code(kind), http_status(kind).as_u16()), documented(kind), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn every_kind_is_answered_over_http_with_its_status_and_the_message_as_json() {
        use http_body_util::BodyExt;
        for kind in ErrorKind::ALL {
            let message = format!("input 'device' row 2: \"Phone\" is not a device ({kind:?})");
            let answer = HttpError::new(kind, message.clone()).into_response();
            assert_eq!(answer.status().as_u16(), documented(kind).1, "{kind:?}");
            assert_eq!(answer.headers()[CONTENT_TYPE], "application/json");
            let body = answer.into_body().collect().await.expect("body").to_bytes();
            let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(parsed, serde_json::json!({ "error": message }), "{kind:?}");
        }
    }
}
