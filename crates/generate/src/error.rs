//! The crate's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration mistake, naming its key.
    #[error("{0}")]
    Config(String),
    /// Snappy compression or decompression failed (input too large, or a corrupt body).
    #[error("snappy: {0}")]
    Snappy(#[from] snap::Error),
    /// A body that is not the expected protobuf message.
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Something claims to be larger than the caller allows.
    #[error("{size} bytes is over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}
