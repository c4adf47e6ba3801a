//! Test support shared by the workspace: the one in-process stack every
//! integration test starts (a temp-dir or S3 bucket with generated data, both
//! services on `127.0.0.1:0`, a real webhook receiver, gRPC clients), the moto
//! S3 server, helpers to drive them, and committed fixture runs. Real servers
//! and files, no mocks.
//!
//! Configs are built from the services' documented defaults without reading
//! the environment, so a model version or any other setting in a developer's shell
//! never changes a test.

mod bad_files;
mod logs;
mod metrics;
mod reflection;
mod s3;
mod stack;
pub mod v2;
mod wait;
mod webhook;

pub use bad_files::{BAD_FILES, BadFile, Expect, HUGE_FIELD_BYTES, ValidFile, gzip};
pub use logs::{CapturedLogs, capture_logs};
pub use metrics::{Metrics, Sample, parse_metrics, scrape};
pub use reflection::reflected_services;
pub use s3::{Auth, S3Server};
pub use stack::{
    Backend, HttpPorts, Running, SIZES, Setup, Stack, fixture_dir, gunzip, key_of, parse_config, predict_request,
    serving_status, train_to_end, wait_for_cycle, wait_for_end, wait_for_stage, wait_until_serving, wait_until_status,
    watch_to_end,
};
pub use wait::wait_until;
pub use webhook::{Behaviour, WebhookReceiver};
