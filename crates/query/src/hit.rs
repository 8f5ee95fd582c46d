//! What a search returns per trace: the engine's output, before the HTTP layer shapes it.

use std::collections::BTreeMap;

use spoor_model::TraceId;
use spoor_traceql::ast::{Kind, Status};

/// A typed value reported on a span or spanset (attributes the query referenced or selected,
/// `by()` keys, aggregate results).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Nanoseconds.
    Duration(i64),
    Status(Status),
    Kind(Kind),
    /// Arrays and anything else not scalar, as the protobuf-encoded OTLP `AnyValue`.
    Any(Vec<u8>),
}

/// One trace that matched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceHit {
    pub trace_id: TraceId,
    /// `service.name` of the root span's resource, if a root span (no parent) is present.
    pub root_service: Option<String>,
    /// Name of the root span, if present.
    pub root_name: Option<String>,
    /// Earliest span start and latest span end, over every span of the trace that was read.
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Per service name: (spans, error spans).
    pub service_stats: BTreeMap<String, (u32, u32)>,
    pub spansets: Vec<SpansetHit>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpansetHit {
    /// At most `spss` spans, earliest start first.
    pub spans: Vec<SpanHit>,
    /// Spans in the spanset before truncation to `spss`.
    pub matched: u32,
    /// `by(...)` keys and aggregate values: (`by(resource.service.name)`, value), (`count()`, 3).
    pub attributes: Vec<(String, Value)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanHit {
    pub span_id: Vec<u8>,
    pub name: String,
    pub start_unix_nano: u64,
    pub duration_nano: u64,
    /// Every attribute the query referenced or selected that the span has, keyed by bare name
    /// (`service.name`, `http.status_code`) or intrinsic name (`status`, `kind`, `span:id`).
    pub attributes: Vec<(String, Value)>,
}
