//! The crate's one error type: what a query can fail with, and whose fault it is.

/// Everything a query can fail with. `Invalid` and `Parse` are the client's fault (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid TraceQL query: {0}")]
    Parse(#[from] spoor_traceql::Error),
    /// A query that parses but cannot run (division by zero, a regex too large, ...).
    #[error("invalid TraceQL query: {0}")]
    Invalid(String),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("block: {0}")]
    Block(#[from] spoor_block::Error),
    #[error("store: {0}")]
    Store(#[from] spoor_store::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A search task died (a bug, not the query's fault).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The client's fault: HTTP 400.
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Error::Parse(_) | Error::Invalid(_))
    }
}
