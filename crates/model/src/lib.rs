//! Spoor's data model: OTLP trace messages, IDs, the OTLP/JSON and Tempo JSON codecs,
//! the Zipkin and Jaeger wire formats converted to OTLP,
//! per-trace fragments (the unit the WAL persists and the head holds), and the wall clock and
//! calendar arithmetic the wire formats need ([`time`]).

pub mod convert;
pub mod duration;
pub mod error;
pub mod fragment;
pub mod ids;
pub mod jaeger;
pub mod json;
pub mod otlp;
pub mod synth;
pub mod thrift;
pub mod time;
pub mod trace;
pub mod wire;
pub mod zipkin;

pub use error::Error;
pub use fragment::{
    Fragment, Record, Retained, Split, decode_any, decode_record, encode_decisions, encode_record, retain_valid,
    split_encoded, split_request,
};
pub use ids::{SpanId, TraceId};
