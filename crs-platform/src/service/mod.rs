//! Service plumbing that knows no gRPC: logging and settings parsing
//! ([`runtime`]), request ids ([`request_id`]), and the bearer token, its tower
//! layer and the TLS files ([`security`]). The gRPC and HTTP servers that use
//! them are the `crs-server` crate's.

pub mod request_id;
pub mod runtime;
pub mod security;
