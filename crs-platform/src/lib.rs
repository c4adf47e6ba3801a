//! The platform under both services: the bucket and everything the services
//! keep in it. Models come from `crs-domain` and are used only through its
//! small types ([`crs_domain::models::ModelVer`],
//! [`crs_domain::models::TrainedModel`] and the data contract); a new storage
//! backend touches only [`storage::bucket`].
//!
//! - [`storage::bucket`]: an `object_store` location (a folder, S3, memory) with checked keys and whole-or-nothing writes
//! - [`storage::layout`]: every key in the bucket, and the order they are written and deleted in
//! - [`storage::staging`]: upload staging files a killed process left in a local bucket
//! - [`storage::sample_data`]: a bucket's default data, generated
//! - [`registry::runs`]: saving, listing, loading and deleting a version's runs, and moving `LATEST`
//! - [`registry::events`]: a version's history of run stages and `production` moves
//! - [`registry::catalog`]: runs, stages and aliases read together
//! - [`lifecycle::ingest`]: new incoming files to ingested rows and ledger entries
//! - [`lifecycle::inputs`]: what a training run reads
//! - [`lifecycle::retention`]: deleting what a version no longer keeps
//! - [`lifecycle::lease`]: one holder at a time across every process on the bucket
//! - [`predictions::batch`]: batch predictions streamed from an input object to an output object
//! - [`predictions::shadow`]: the recorded answers of a primary model and its shadows
//! - [`reports::pages`]: the HTML reports of runs and cycles, and their index
//! - [`notify::webhook`]: Slack notices, delivered in the background
//! - [`error`]: the kinds every failure is sorted into, which both services answer with
//! - [`failpoint`]: the crash tests' abort points
//! - [`service::runtime`]: logging, and parsing settings as the binaries do
//! - [`service::request_id`]: the request-id tower layer and the id a task works for
//! - [`service::security`]: the bearer token, its tower layer, and the TLS files

pub mod error;
pub mod failpoint;
pub mod lifecycle;
pub mod notify;
pub mod predictions;
pub mod registry;
pub mod reports;
pub mod service;
pub mod storage;
