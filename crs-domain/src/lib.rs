//! The conversion-rate domain: what the data scientists own.
//!
//! [`data`] is the data contract (schema, validation, aggregation, synthetic
//! data), [`features`] the feature pipeline, [`models`] the model template, the
//! registry and the versions, [`metrics`] and [`evaluation`] how a model is
//! scored against the baselines, [`drift`] how far new data has moved, and
//! [`lifecycle`] the rules for retraining and promotion. Everything here is plain computation: no async
//! runtime, no storage, no HTTP, no gRPC. The engineering side (`crs-platform`
//! and the services) meets it at small types: [`data::Observations`] in, a
//! [`models::TrainedModel`] out, rates out.
//!
//! A new model version touches only [`models`]: see its module documentation.

pub mod data;
pub mod diagnostics;
pub mod drift;
pub mod evaluation;
pub mod features;
pub mod lifecycle;
pub mod metrics;
pub mod models;
pub mod rng;
