//! What the Zipkin and Jaeger converters share: building OTLP attributes, reading the tags both
//! formats use to carry OTLP concepts (`otel.status_code`, `otel.scope.name`, `span.kind`), and
//! grouping converted spans into resources and scopes, so a batch becomes one
//! `ExportTraceServiceRequest` the front door treats like any OTLP request.

use std::collections::HashMap;

use prost::Message;

use crate::otlp::{
    AnyValue, ArrayValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, any_value::Value,
};

pub const KIND_INTERNAL: i32 = 1;
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
pub const KIND_PRODUCER: i32 = 4;
pub const KIND_CONSUMER: i32 = 5;

pub const STATUS_OK: i32 = 1;
pub const STATUS_ERROR: i32 = 2;

pub fn kv(key: impl Into<String>, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

pub fn string(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

pub fn strings(key: impl Into<String>, values: Vec<String>) -> KeyValue {
    let values = values.into_iter().map(|v| AnyValue { value: Some(Value::StringValue(v)) }).collect();
    kv(key, Value::ArrayValue(ArrayValue { values }))
}

/// A `span.kind` tag's value (OpenTracing's names, any case) as an OTLP kind.
pub fn kind_from_tag(value: &str) -> Option<i32> {
    match value.to_ascii_lowercase().as_str() {
        "client" => Some(KIND_CLIENT),
        "server" => Some(KIND_SERVER),
        "producer" => Some(KIND_PRODUCER),
        "consumer" => Some(KIND_CONSUMER),
        "internal" => Some(KIND_INTERNAL),
        _ => None,
    }
}

/// An `otel.status_code` tag's value as an OTLP status code; unknown values are no status.
pub fn status_from_tag(value: &str) -> Option<i32> {
    match value.to_ascii_uppercase().as_str() {
        "OK" | "STATUS_CODE_OK" => Some(STATUS_OK),
        "ERROR" | "STATUS_CODE_ERROR" => Some(STATUS_ERROR),
        "UNSET" | "STATUS_CODE_UNSET" => Some(0),
        _ => None,
    }
}

/// The scope a span's tags name: `otel.scope.*` (current) or `otel.library.*` (what exporters
/// wrote before the rename).
#[derive(Default)]
pub struct ScopeTags {
    pub name: Option<String>,
    pub version: Option<String>,
}

impl ScopeTags {
    /// Takes `key`'s value when it names the scope; true when it did.
    pub fn take(&mut self, key: &str, value: &str) -> bool {
        match key {
            "otel.scope.name" | "otel.library.name" => self.name = Some(value.to_owned()),
            "otel.scope.version" | "otel.library.version" => self.version = Some(value.to_owned()),
            _ => return false,
        }
        true
    }

    pub fn scope(self) -> InstrumentationScope {
        InstrumentationScope {
            name: self.name.unwrap_or_default(),
            version: self.version.unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// Converted spans grouped by resource, then scope, in the order first seen: Zipkin repeats
/// the endpoint on every span, and a Jaeger batch may mix processes.
#[derive(Default)]
pub struct Grouper {
    resources: Vec<ResourceSpans>,
    /// Encoded resource → its index: equal attribute lists encode equally.
    index: HashMap<Vec<u8>, usize>,
}

impl Grouper {
    pub fn push(&mut self, resource: &Resource, scope: InstrumentationScope, span: Span) {
        let key = resource.encode_to_vec();
        let i = *self.index.entry(key).or_insert_with(|| {
            self.resources.push(ResourceSpans { resource: Some(resource.clone()), ..Default::default() });
            self.resources.len() - 1
        });
        let scopes = &mut self.resources[i].scope_spans;
        let same =
            |s: &&mut ScopeSpans| s.scope.as_ref().is_some_and(|x| x.name == scope.name && x.version == scope.version);
        match scopes.iter_mut().find(same) {
            Some(s) => s.spans.push(span),
            None => scopes.push(ScopeSpans { scope: Some(scope), spans: vec![span], schema_url: String::new() }),
        }
    }

    pub fn finish(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest { resource_spans: self.resources }
    }
}

/// A 64-bit ID widened to OTLP's 128 bits: zeros on the left, as Zipkin and Jaeger mean it.
pub fn widen_trace_id(id: Vec<u8>) -> Vec<u8> {
    if id.len() == 8 {
        let mut wide = vec![0u8; 8];
        wide.extend_from_slice(&id);
        wide
    } else {
        id
    }
}
