//! The crate's one error enum.

/// Everything that can go wrong turning bytes into spans.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid JSON: {0}")]
    JsonSyntax(#[from] serde_json::Error),
    #[error("invalid OTLP JSON at {path}: {message}")]
    Json { path: String, message: String },
    #[error("{0}")]
    TraceId(String),
    /// A Zipkin or Jaeger body that does not decode: the format, and where and why.
    #[error("invalid {format}: {message}")]
    Foreign { format: &'static str, message: String },
}
