//! The bucket itself: where objects are stored, what every key is called, and
//! what a bucket holds before anything has run.

pub mod bucket;
pub mod layout;
pub mod sample_data;
pub mod staging;
