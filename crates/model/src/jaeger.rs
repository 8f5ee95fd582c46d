//! Jaeger spans (the `jaeger.api_v2` protobuf model, which the Thrift decoder also produces)
//! converted to OTLP as the OpenTelemetry Collector's jaeger receiver does; docs/receivers.md
//! has the mapping table.
//!
//! The messages are written by hand with prost derives from `model.proto` and
//! `collector.proto`'s field numbers, as `otlp.rs` is.

use crate::convert::{self, Grouper, ScopeTags};
use crate::error::Error;
use crate::otlp::{
    Event, ExportTraceServiceRequest, KeyValue, Link, ProtoDuration, Resource, Span, Status, any_value::Value,
};

pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `ValueType`: STRING 0, BOOL 1, INT64 2, FLOAT64 3, BINARY 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JKeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(int32, tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

pub const V_STRING: i32 = 0;
pub const V_BOOL: i32 = 1;
pub const V_INT64: i32 = 2;
pub const V_FLOAT64: i32 = 3;
pub const V_BINARY: i32 = 4;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<JKeyValue>,
}

/// `SpanRefType`: CHILD_OF 0, FOLLOWS_FROM 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(int32, tag = "3")]
    pub ref_type: i32,
}

pub const CHILD_OF: i32 = 0;
pub const FOLLOWS_FROM: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<JKeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct JSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<ProtoDuration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<JKeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<JSpan>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansRequest {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

/// Empty: success carries nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansResponse {}

/// A gRPC `PostSpansRequest` message.
pub fn decode_post_spans(bytes: &[u8]) -> Result<ExportTraceServiceRequest, Error> {
    let req = <PostSpansRequest as prost::Message>::decode(bytes).map_err(|e| Error::Foreign {
        format: "Jaeger protobuf",
        message: format!("{e} (the message must be a jaeger.api_v2.PostSpansRequest)"),
    })?;
    Ok(to_otlp(req.batch.unwrap_or_default()))
}

/// A batch as OTLP: one resource per process (a span's own process, else the batch's).
pub fn to_otlp(batch: Batch) -> ExportTraceServiceRequest {
    let batch_resource = batch.process.map(resource).unwrap_or_default();
    let mut grouper = Grouper::default();
    for mut s in batch.spans {
        let own = s.process.take().map(resource);
        let (scope, span) = span(s);
        grouper.push(own.as_ref().unwrap_or(&batch_resource), scope, span);
    }
    grouper.finish()
}

fn resource(p: Process) -> Resource {
    let mut attributes = Vec::with_capacity(p.tags.len() + 1);
    if !p.service_name.is_empty() {
        attributes.push(convert::string("service.name", p.service_name));
    }
    attributes.extend(p.tags.into_iter().map(attribute));
    Resource { attributes, dropped_attributes_count: 0 }
}

fn value(kv: &JKeyValue) -> Value {
    match kv.v_type {
        V_BOOL => Value::BoolValue(kv.v_bool),
        V_INT64 => Value::IntValue(kv.v_int64),
        V_FLOAT64 => Value::DoubleValue(kv.v_float64),
        V_BINARY => Value::BytesValue(kv.v_binary.clone()),
        // STRING, and types this model does not know: the string is what a client filled.
        _ => Value::StringValue(kv.v_str.clone()),
    }
}

fn attribute(kv: JKeyValue) -> KeyValue {
    let v = value(&kv);
    convert::kv(kv.key, v)
}

/// A tag's value as text, for the tags that carry OTLP fields.
fn text(kv: &JKeyValue) -> String {
    match value(kv) {
        Value::StringValue(s) => s,
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        _ => String::new(),
    }
}

fn nanos(ts: Option<&Timestamp>) -> u64 {
    ts.map_or(0, |t| (t.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(t.nanos.max(0) as u64))
}

fn span(s: JSpan) -> (crate::otlp::InstrumentationScope, Span) {
    let trace_id = convert::widen_trace_id(s.trace_id);
    let mut scope = ScopeTags::default();
    let mut kind = 0;
    let mut status_code = None;
    let mut status_message = None;
    let mut error = false;
    let mut http_status = None;
    let mut trace_state = String::new();
    let mut attributes = Vec::with_capacity(s.tags.len());
    for t in s.tags {
        let v = text(&t);
        if t.v_type == V_STRING && scope.take(&t.key, &v) {
            continue;
        }
        match t.key.as_str() {
            "span.kind" => kind = convert::kind_from_tag(&v).unwrap_or(0),
            "otel.status_code" => status_code = convert::status_from_tag(&v),
            "otel.status_description" => status_message = Some(v),
            "error" if v == "true" => error = true,
            "w3c.tracestate" => trace_state = v,
            // Jaeger's own bookkeeping, not the span's.
            "internal.span.format" => {}
            key => {
                if key == "http.status_code" || key == "http.response.status_code" {
                    http_status = v.parse::<u16>().ok();
                }
                attributes.push(attribute(t));
            }
        }
    }
    // The collector's order: an explicit OTel status, then `error=true`, then a failed HTTP
    // status (4xx only on the client side: a server answering 404 did its job).
    let code = match (status_code, error, http_status) {
        (Some(c), _, _) => c,
        (None, true, _) => convert::STATUS_ERROR,
        (None, false, Some(h)) if h >= 500 || (h >= 400 && kind != convert::KIND_SERVER) => convert::STATUS_ERROR,
        _ => 0,
    };
    let message = status_message.unwrap_or_default();

    // The parent: the first same-trace CHILD_OF reference, else the first same-trace
    // FOLLOWS_FROM; every other reference is a link.
    let same_trace = |r: &SpanRef| convert::widen_trace_id(r.trace_id.clone()) == trace_id;
    let parent = s
        .references
        .iter()
        .position(|r| r.ref_type == CHILD_OF && same_trace(r))
        .or_else(|| s.references.iter().position(|r| r.ref_type == FOLLOWS_FROM && same_trace(r)));
    let mut parent_span_id = Vec::new();
    let mut links = Vec::new();
    for (i, r) in s.references.into_iter().enumerate() {
        if Some(i) == parent {
            parent_span_id = r.span_id;
            continue;
        }
        let ref_type = if r.ref_type == FOLLOWS_FROM { "follows_from" } else { "child_of" };
        links.push(Link {
            trace_id: convert::widen_trace_id(r.trace_id),
            span_id: r.span_id,
            attributes: vec![convert::string("opentracing.ref_type", ref_type)],
            ..Default::default()
        });
    }

    let start = nanos(s.start_time.as_ref());
    let duration = s
        .duration
        .map_or(0, |d| (d.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(d.nanos.max(0) as u64));
    let events = s.logs.into_iter().map(event).collect();
    let span = Span {
        trace_id,
        span_id: s.span_id,
        trace_state,
        parent_span_id,
        // Jaeger's flags: 1 sampled, 2 debug, 4 firehose; only "sampled" has a W3C trace flag.
        flags: s.flags & 1,
        name: s.operation_name,
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(duration),
        attributes,
        events,
        links,
        status: (code != 0 || !message.is_empty()).then_some(Status { code, message }),
        ..Default::default()
    };
    (scope.scope(), span)
}

/// A log as an event: its `event` field names it (the collector's reading), else its
/// `message` field (where OpenTelemetry's Jaeger exporters put the event name); the other
/// fields are its attributes.
fn event(log: Log) -> Event {
    let time_unix_nano = nanos(log.timestamp.as_ref());
    let is_name = |f: &JKeyValue, key: &str| f.key == key && f.v_type == V_STRING;
    let named_by = ["event", "message"].into_iter().find(|k| log.fields.iter().any(|f| is_name(f, k)));
    let mut name = String::new();
    let mut attributes = Vec::with_capacity(log.fields.len());
    for f in log.fields {
        match named_by {
            Some(k) if name.is_empty() && is_name(&f, k) => name = f.v_str,
            _ => attributes.push(attribute(f)),
        }
    }
    Event { time_unix_nano, name, attributes, dropped_attributes_count: 0 }
}

#[cfg(test)]
mod tests;
