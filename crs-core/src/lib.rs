//! The conversion-rate domain shared by both services and `crctl`.
//!
//! Science side: [`data`] (the data contract), [`features`], [`models`],
//! [`metrics`] and [`evaluation`]. Engineering side: [`storage`] (the bucket and
//! the model runs in it), [`batch`] (streaming predictions) and [`webhook`].
//! They meet at small types: [`data::Observations`] in, a fitted model out,
//! predictions out. Nothing here knows about gRPC.

pub mod batch;
pub mod data;
pub mod evaluation;
pub mod features;
pub mod metrics;
pub mod models;
mod rng;
pub mod runtime;
pub mod sample_data;
pub mod storage;
pub mod training;
pub mod webhook;
