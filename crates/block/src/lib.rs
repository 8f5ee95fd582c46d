//! Spoor's block format: an immutable Parquet file of span rows sorted by (trace ID, start time),
//! a trace-ID filter and a `meta.json`. See `README.md` in this crate for the schema and why.

mod codec;
mod error;
mod filter;
mod index;
mod meta;
mod read;
pub mod rollup;
pub mod schema;
mod sealed;
mod write;

pub use error::{Error, Result};
pub use filter::{BlockFilter, TraceFilter};
pub use index::{GroupIndex, KeyValues, ValueIndex, kinds};
pub use meta::{
    AttributeKeys, BlockMeta, ColumnSize, DATA_FILE, DedicatedColumn, FILTER_FILE, FORMAT, LogOffsets, META_FILE, Tier,
    log_block_id, merge_log_offsets, new_block_id,
};
pub use read::{BlockReader, TraceIter};
pub use schema as columns;
pub use schema::{ColumnEncoding, Encodings};
pub use write::{BlockWriter, DedicatedPolicy, Finished, WriteOptions, encode_batch};
