//! What the model lifecycle does to the bucket besides runs: new files in,
//! what a training run reads, what a version stops keeping, and the leases
//! that keep such work to one process at a time.

pub mod ingest;
pub mod inputs;
pub mod lease;
pub mod retention;
pub mod trends;
