//! The model registry: the stored runs of each version, their history of
//! stages and `production` moves, and the two read together.

pub mod catalog;
pub mod events;
pub mod runs;
pub mod versions;
