//! Predictions the bucket keeps: batch outputs streamed from an input object
//! (or from every file under a prefix, split between shards), and record
//! objects (`records.rs`) of what was served: the shadow records of what a
//! primary and its shadows answered, and captured traffic.

pub mod batch;
pub mod capture;
pub mod records;
pub mod shadow;
pub mod shards;
