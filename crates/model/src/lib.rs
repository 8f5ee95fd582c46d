//! Spoor's data model: OTLP trace messages, IDs, the OTLP/JSON and Tempo JSON codecs, and
//! per-trace fragments (the unit the WAL persists and the head holds).

pub mod duration;
pub mod fragment;
pub mod ids;
pub mod json;
pub mod otlp;
pub mod synth;
pub mod trace;

pub use fragment::{
    Fragment, Record, Split, decode_any, decode_record, encode_decisions, encode_record, split_request,
};
pub use ids::{SpanId, TraceId};

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
}
