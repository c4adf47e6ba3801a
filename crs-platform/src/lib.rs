//! The platform under both services: what the engineers own.
//!
//! [`bucket`] is storage (an `object_store` location: a folder, S3 or memory)
//! with checked keys and whole-or-nothing writes, [`layout`] names every key in
//! it, [`runs`] saves, lists, loads and promotes model runs, [`inputs`] fetches
//! what a training run reads, [`retention`] deletes what a version no longer
//! keeps, [`batch`] streams batch predictions from an input
//! object to an output object, [`webhook`] posts Slack notices, [`error`] sorts
//! every failure into the kinds both services answer with, [`runtime`] is
//! logging and shutdown signals, [`security`] the bearer token, the table of
//! which RPC needs it and the TLS files, and [`failpoint`] the crash tests' abort
//! points. [`sample_data`] writes a bucket's default data.
//!
//! Models come from `crs-domain` and are used only through its small types:
//! [`crs_domain::models::ModelVer`], [`crs_domain::models::TrainedModel`] and the
//! data contract. A new storage backend touches only [`bucket`].

pub mod batch;
pub mod bucket;
pub mod catalog;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod ingest;
pub mod inputs;
pub mod layout;
pub mod lease;
pub mod report;
pub mod retention;
pub mod runs;
pub mod sample_data;
pub mod service;
pub mod shadow;
pub mod staging;
pub mod webhook;
