//! Reads CSV or gzip CSV in the raw schema, chunk by chunk, into validated polars
//! frames. Memory is bounded by the chunk size, whatever the file size.
//!
//! polars parses each chunk with a typed schema (the fast path). When it refuses a
//! chunk, the chunk is read again as text to say which row and column are wrong.
//!
//! - `reader`: [`TableReader`], which cuts the input into chunks of whole records
//!   and turns each into a validated frame;
//! - `plan`: what a file's header says to read, type and check;
//! - `plain`: the shortcut past polars for plain prediction input;
//! - `diagnose`: the row and column a chunk breaks the contract at;
//! - `records`: where CSV records and fields end, as polars splits them;
//! - `read_ahead`: decompression on a thread of its own;
//! - `chunk`: what the reader hands out, and the model rows it becomes.

mod chunk;
mod diagnose;
mod plain;
mod plan;
mod read_ahead;
mod reader;
mod records;

pub use chunk::{Chunk, keyword_rows};
pub use plan::Attributes;
pub use reader::{DEFAULT_CHUNK_BYTES, TableReader};
