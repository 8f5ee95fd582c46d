//! The crate's one error enum.

use crate::meta::FORMAT;

/// Everything that can go wrong writing or reading a block.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid fragment of trace {trace}: {source}")]
    Fragment { trace: spoor_model::TraceId, source: spoor_model::wire::WireError },
    #[error("traces must be pushed in ascending ID order: {next} after {previous}")]
    Order { previous: spoor_model::TraceId, next: spoor_model::TraceId },
    #[error("invalid trace-ID filter: {0}")]
    Filter(String),
    #[error("block is not in format {FORMAT}: {0}")]
    Format(String),
    #[error("the block writer failed earlier and cannot continue")]
    WriterFailed,
    #[error("corrupt block: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, Error>;
