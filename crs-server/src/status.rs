//! The one table from error kinds (`crs_platform::error`) to what a caller is
//! answered: a gRPC code, and the HTTP status of the same kind for the HTTP
//! listeners. A service sorts its own errors into kinds (`Classify`) and
//! answers with these.
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
//! | `Internal` | `INTERNAL` | 500 |

use crs_platform::error::ErrorKind;
use http::StatusCode;
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
        ErrorKind::Exhausted => Code::ResourceExhausted,
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
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
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
            ErrorKind::Internal => (Code::Internal, 500),
        }
    }

    #[test]
    fn every_kind_gets_the_documented_code_and_status() {
        for kind in ErrorKind::ALL {
            assert_eq!((code(kind), http_status(kind).as_u16()), documented(kind), "{kind:?}");
        }
    }
}
