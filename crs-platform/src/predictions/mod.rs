//! Predictions the bucket keeps: batch outputs streamed from an input object,
//! and the shadow records of what a primary and its shadows answered.

pub mod batch;
pub mod shadow;
