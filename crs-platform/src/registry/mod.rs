//! The model registry: the stored runs of each version, their history of
//! stages and `production` moves, the two read together, and each run's
//! score on the version's reference set.

pub mod catalog;
pub mod events;
pub mod reference;
pub mod runs;
pub mod versions;
