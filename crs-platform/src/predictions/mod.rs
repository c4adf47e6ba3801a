//! Predictions the bucket keeps: batch outputs streamed from an input object
//! (or from every file under a prefix, split between shards),
//! and the shadow records of what a primary and its shadows answered.

pub mod batch;
pub mod shadow;
pub mod shards;
