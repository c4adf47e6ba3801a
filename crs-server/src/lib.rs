//! The server kit under both services: everything a service of this project
//! serves with besides its own business, written once.
//!
//! [`settings`] is the settings every service reads, [`status`] the one table
//! from error kinds to gRPC codes and HTTP statuses, [`metrics`] the per-call
//! metrics and the `/metrics` endpoint, [`http`] the HTTP listener core (TLS,
//! connection limit, header-read timeout, request ids, graceful shutdown),
//! [`grpc`] the gRPC server builder and its bearer-token rule, and [`startup`]
//! the startup and shutdown sequence that each service's
//! `run(config, listeners, shutdown)` hands its own parts to.
//!
//! It sits between `crs-platform` (the bucket, webhooks, the token mechanism,
//! request ids) and the services; `crs-proto` keeps the wire contract.

pub mod grpc;
pub mod http;
pub mod metrics;
pub mod settings;
pub mod startup;
pub mod status;
