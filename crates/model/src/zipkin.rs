//! Zipkin v2 spans (JSON, and proto3 `zipkin.proto3.ListOfSpans`) converted to OTLP, as the
//! OpenTelemetry Collector's zipkin receiver does; docs/receivers.md has the mapping table.
//!
//! Zipkin repeats the local endpoint on every span, so spans are grouped by it into resources
//! (`service.name`, `host.ip`); the remote endpoint becomes peer attributes of the span. A
//! shared (server-side) span keeps the ID its client span has: Zipkin tells the two apart by
//! kind, and so does trace assembly.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use crate::convert::{self, Grouper, ScopeTags};
use crate::error::Error;
use crate::ids::unhex;
use crate::otlp::{Event, ExportTraceServiceRequest, KeyValue, Resource, Span, Status, any_value::Value};

/// How tags become attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Tags that read as an integer, a float or a boolean become that type (the collector's
    /// `parse_string_tags`); otherwise every tag stays a string, as Zipkin sends it.
    pub parse_string_tags: bool,
}

/// A Zipkin span in the shape both encodings share.
#[derive(Default)]
struct ZSpan {
    trace_id: Vec<u8>,
    id: Vec<u8>,
    parent_id: Vec<u8>,
    name: String,
    kind: Option<i32>,
    timestamp_us: u64,
    duration_us: u64,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    annotations: Vec<(u64, String)>,
    tags: BTreeMap<String, String>,
}

#[derive(Default, Clone)]
struct Endpoint {
    service_name: String,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i64>,
}

fn bad(format: &'static str, message: String) -> Error {
    Error::Foreign { format, message }
}

const JSON: &str = "Zipkin JSON";
const PROTO: &str = "Zipkin protobuf";

// ---- JSON (`[{"traceId": …}, …]`, Zipkin's api v2) ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<serde_json::Number>,
    duration: Option<serde_json::Number>,
    local_endpoint: Option<JsonEndpoint>,
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    tags: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i64>,
}

#[derive(Deserialize)]
struct JsonAnnotation {
    timestamp: Option<serde_json::Number>,
    value: Option<String>,
}

/// Zipkin v2 JSON: a list of spans.
pub fn decode_json(bytes: &[u8], options: Options) -> Result<ExportTraceServiceRequest, Error> {
    let spans: Vec<JsonSpan> = serde_json::from_slice(bytes)
        .map_err(|e| bad(JSON, format!("{e} (the body must be a JSON list of Zipkin v2 spans)")))?;
    let mut out = Vec::with_capacity(spans.len());
    for (i, s) in spans.into_iter().enumerate() {
        let at = |field: &str, m: String| bad(JSON, format!("[{i}].{field}: {m}"));
        let id = |field: &str, text: Option<String>, lens: &[usize]| -> Result<Vec<u8>, Error> {
            let text = text.unwrap_or_default();
            if text.is_empty() && field == "parentId" {
                return Ok(Vec::new());
            }
            if !lens.contains(&text.len()) {
                let want = lens.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" or ");
                return Err(at(field, format!("{text:?} must be {want} hex characters")));
            }
            unhex(&text).map_err(|m| at(field, m))
        };
        let micros = |field: &str, n: Option<serde_json::Number>| -> Result<u64, Error> {
            match n {
                None => Ok(0),
                Some(n) => n
                    .as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .ok_or_else(|| at(field, format!("{n} is not a non-negative number of microseconds"))),
            }
        };
        let kind = match s.kind.as_deref() {
            None | Some("") => None,
            Some(k) => Some(kind_name(k).ok_or_else(|| at("kind", format!("unknown kind {k:?}")))?),
        };
        let mut annotations = Vec::with_capacity(s.annotations.len());
        for (j, a) in s.annotations.into_iter().enumerate() {
            let ts = micros(&format!("annotations[{j}].timestamp"), a.timestamp)?;
            annotations.push((ts, a.value.unwrap_or_default()));
        }
        let tags = s
            .tags
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                // Not Zipkin, but sent by some clients: kept as the text they would have sent.
                other => (k, other.to_string()),
            })
            .collect();
        out.push(ZSpan {
            trace_id: id("traceId", s.trace_id, &[16, 32])?,
            id: id("id", s.id, &[16])?,
            parent_id: id("parentId", s.parent_id, &[16])?,
            name: s.name.unwrap_or_default(),
            kind,
            timestamp_us: micros("timestamp", s.timestamp)?,
            duration_us: micros("duration", s.duration)?,
            local: s.local_endpoint.map(json_endpoint),
            remote: s.remote_endpoint.map(json_endpoint),
            annotations,
            tags,
        });
    }
    Ok(convert(out, options))
}

fn json_endpoint(e: JsonEndpoint) -> Endpoint {
    Endpoint {
        service_name: e.service_name.unwrap_or_default(),
        ipv4: e.ipv4.filter(|s| !s.is_empty()),
        ipv6: e.ipv6.filter(|s| !s.is_empty()),
        port: e.port.filter(|p| *p != 0),
    }
}

fn kind_name(k: &str) -> Option<i32> {
    match k.to_ascii_uppercase().as_str() {
        "CLIENT" => Some(convert::KIND_CLIENT),
        "SERVER" => Some(convert::KIND_SERVER),
        "PRODUCER" => Some(convert::KIND_PRODUCER),
        "CONSUMER" => Some(convert::KIND_CONSUMER),
        _ => None,
    }
}

// ---- proto3 (`zipkin.proto3.ListOfSpans`; field numbers from zipkin.proto) ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<ProtoEndpoint>,
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<ProtoEndpoint>,
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<ProtoAnnotation>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "12")]
    pub debug: bool,
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoEndpoint {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub port: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAnnotation {
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Zipkin proto3: a `ListOfSpans`.
pub fn decode_proto(bytes: &[u8], options: Options) -> Result<ExportTraceServiceRequest, Error> {
    let list = <ListOfSpans as prost::Message>::decode(bytes)
        .map_err(|e| bad(PROTO, format!("{e} (the body must be a zipkin.proto3.ListOfSpans)")))?;
    let mut out = Vec::with_capacity(list.spans.len());
    for (i, s) in list.spans.into_iter().enumerate() {
        let kind = match s.kind {
            0 => None,
            1 => Some(convert::KIND_CLIENT),
            2 => Some(convert::KIND_SERVER),
            3 => Some(convert::KIND_PRODUCER),
            4 => Some(convert::KIND_CONSUMER),
            k => return Err(bad(PROTO, format!("spans[{i}].kind: unknown kind {k}"))),
        };
        let endpoint = |e: ProtoEndpoint| Endpoint {
            service_name: e.service_name,
            ipv4: <[u8; 4]>::try_from(&e.ipv4[..]).ok().map(|b| Ipv4Addr::from(b).to_string()),
            ipv6: <[u8; 16]>::try_from(&e.ipv6[..]).ok().map(|b| Ipv6Addr::from(b).to_string()),
            port: (e.port != 0).then_some(e.port as i64),
        };
        out.push(ZSpan {
            trace_id: s.trace_id,
            id: s.id,
            parent_id: s.parent_id,
            name: s.name,
            kind,
            timestamp_us: s.timestamp,
            duration_us: s.duration,
            local: s.local_endpoint.map(endpoint),
            remote: s.remote_endpoint.map(endpoint),
            annotations: s.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
            tags: s.tags,
        });
    }
    Ok(convert(out, options))
}

// ---- the conversion ----

fn convert(spans: Vec<ZSpan>, options: Options) -> ExportTraceServiceRequest {
    let mut grouper = Grouper::default();
    for s in spans {
        let resource = resource(s.local.as_ref());
        let mut attributes = Vec::with_capacity(s.tags.len() + 3);
        let mut scope = ScopeTags::default();
        let mut status_code = None;
        let mut status_message = None;
        let mut error = None;
        let mut kind = s.kind;
        let mut trace_state = String::new();
        let mut dropped = [0u32; 3];
        let kind_tag = s.tags.get("span.kind").and_then(|v| convert::kind_from_tag(v));
        for (key, value) in s.tags {
            if scope.take(&key, &value) {
                continue;
            }
            match key.as_str() {
                "otel.status_code" => status_code = convert::status_from_tag(&value),
                "otel.status_description" => status_message = Some(value),
                "error" => error = Some(value),
                "w3c.tracestate" => trace_state = value,
                // What the exporter had to drop, where OTLP keeps it.
                "otel.dropped_attributes_count" if value.parse::<u32>().is_ok() => {
                    dropped[0] = value.parse().unwrap_or(0)
                }
                "otel.dropped_events_count" if value.parse::<u32>().is_ok() => dropped[1] = value.parse().unwrap_or(0),
                "otel.dropped_links_count" if value.parse::<u32>().is_ok() => dropped[2] = value.parse().unwrap_or(0),
                // Only where Zipkin's own kind is absent, as the collector reads it.
                "span.kind" if kind.is_none() && kind_tag.is_some() => kind = kind_tag,
                _ => attributes.push(tag(key, value, options)),
            }
        }
        // `error` marks a failed span whatever its value (Zipkin puts the message there);
        // `otel.status_code` wins when both are present.
        let code = status_code.or(error.as_ref().map(|_| convert::STATUS_ERROR)).unwrap_or(0);
        let message = status_message
            .or_else(|| error.filter(|e| code == convert::STATUS_ERROR && !e.is_empty() && e != "true"))
            .unwrap_or_default();
        if let Some(r) = &s.remote {
            peer_attributes(r, &mut attributes);
        }
        if let Some(port) = s.local.as_ref().and_then(|l| l.port) {
            attributes.push(convert::kv("network.local.port", Value::IntValue(port)));
        }
        let start = s.timestamp_us.saturating_mul(1000);
        let span = Span {
            trace_id: convert::widen_trace_id(s.trace_id),
            span_id: s.id,
            trace_state,
            parent_span_id: s.parent_id,
            name: s.name,
            kind: kind.unwrap_or(0),
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(s.duration_us.saturating_mul(1000)),
            attributes,
            events: s.annotations.into_iter().map(|(ts, value)| event(ts, value)).collect(),
            status: (code != 0 || !message.is_empty()).then_some(Status { code, message }),
            dropped_attributes_count: dropped[0],
            dropped_events_count: dropped[1],
            dropped_links_count: dropped[2],
            ..Default::default()
        };
        grouper.push(&resource, scope.scope(), span);
    }
    grouper.finish()
}

/// The local endpoint: the service and the host it runs on.
fn resource(local: Option<&Endpoint>) -> Resource {
    let mut attributes = Vec::new();
    if let Some(l) = local {
        if !l.service_name.is_empty() {
            attributes.push(convert::string("service.name", &l.service_name));
        }
        let ips: Vec<String> = l.ipv4.iter().chain(&l.ipv6).cloned().collect();
        if !ips.is_empty() {
            attributes.push(convert::strings("host.ip", ips));
        }
    }
    Resource { attributes, dropped_attributes_count: 0 }
}

/// The remote endpoint, in today's semantic-convention names.
fn peer_attributes(r: &Endpoint, attributes: &mut Vec<KeyValue>) {
    if !r.service_name.is_empty() {
        attributes.push(convert::string("peer.service", &r.service_name));
    }
    if let Some(ip) = r.ipv4.as_ref().or(r.ipv6.as_ref()) {
        attributes.push(convert::string("network.peer.address", ip));
    }
    if let Some(port) = r.port {
        attributes.push(convert::kv("network.peer.port", Value::IntValue(port)));
    }
}

fn tag(key: String, value: String, options: Options) -> KeyValue {
    if options.parse_string_tags {
        if let Ok(i) = value.parse::<i64>() {
            return convert::kv(key, Value::IntValue(i));
        }
        if let Ok(f) = value.parse::<f64>() {
            return convert::kv(key, Value::DoubleValue(f));
        }
        if let Ok(b) = value.parse::<bool>() {
            return convert::kv(key, Value::BoolValue(b));
        }
    }
    convert::string(key, value)
}

/// An annotation as an event. OpenTelemetry's Zipkin exporters write an event with attributes
/// as `{"name": {attributes}}` (the SDKs) or `name|{attributes}|dropped` (the collector); any
/// other value is the event's name.
fn event(timestamp_us: u64, value: String) -> Event {
    let time_unix_nano = timestamp_us.saturating_mul(1000);
    if value.starts_with('{')
        && let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&value)
        && o.len() == 1
        && let Some((name, serde_json::Value::Object(attrs))) = o.into_iter().next()
    {
        return Event { time_unix_nano, name, attributes: json_attributes(attrs), dropped_attributes_count: 0 };
    }
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() >= 3
        && let Ok(serde_json::Value::Object(attrs)) = serde_json::from_str(parts[parts.len() - 2])
        && let Ok(dropped) = parts[parts.len() - 1].parse::<u32>()
    {
        let name = parts[..parts.len() - 2].join("|");
        return Event { time_unix_nano, name, attributes: json_attributes(attrs), dropped_attributes_count: dropped };
    }
    Event { time_unix_nano, name: value, ..Default::default() }
}

fn json_attributes(attrs: serde_json::Map<String, serde_json::Value>) -> Vec<KeyValue> {
    attrs.into_iter().filter_map(|(k, v)| json_value(v).map(|v| convert::kv(k, v))).collect()
}

fn json_value(v: serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    Some(match v {
        J::String(s) => Value::StringValue(s),
        J::Bool(b) => Value::BoolValue(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64()?),
        },
        J::Array(items) => Value::ArrayValue(crate::otlp::ArrayValue {
            values: items
                .into_iter()
                .filter_map(json_value)
                .map(|v| crate::otlp::AnyValue { value: Some(v) })
                .collect(),
        }),
        J::Null | J::Object(_) => return None,
    })
}

#[cfg(test)]
mod tests;
