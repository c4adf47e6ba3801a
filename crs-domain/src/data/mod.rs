//! The data contract: what raw files look like, how they are validated, and the
//! in-memory types they become.

mod error;
mod ingest;
mod prepare;
mod rows;
mod scan;
mod schema;
mod table;
mod training;

pub use error::{DataError, Problem};
pub use ingest::{IngestCounts, NewRows, SeenRows, ingest};
pub use prepare::{
    DataFile, EvalSource, HOLDOUT_FRACTION, HOLDOUT_SEED, PreparedData, WeekSplitData, prepare, prepare_by_week,
};
pub use rows::{KeywordRows, Observations, RowProblem};
pub use schema::{
    ATTRIBUTE_PREFIX, CLICKS, CONVERSIONS, DEVICE, Device, ENTITY_ID, TableKind, WEEK, attribute_name, attribute_number,
};
pub use table::{Attributes, Chunk, DEFAULT_CHUNK_BYTES, TableReader, keyword_rows};
pub use training::{ColumnProfile, RowCounts, TrainingTable};
pub mod synth;
