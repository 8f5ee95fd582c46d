//! OTLP traces as Jaeger's UI model (the JSON of `/api/traces`): the mapping the collector's
//! Jaeger translator makes, so a trace looks the same whether Jaeger or Spoor stored it.
//! Resources become processes (`service.name` is the process's `serviceName`, the other
//! attributes its tags); the parent becomes a `CHILD_OF` reference and links `FOLLOWS_FROM`;
//! kind, status and scope become tags (`span.kind`, `error`, `otel.status_code`,
//! `otel.status_description`, `otel.scope.name`, `otel.scope.version`); events become logs.
//! Times are microseconds.

use base64::Engine;
use serde_json::{Value as Json, json};
use spoor_model::ids::hex;
use spoor_model::otlp::{AnyValue, KeyValue, Span, TracesData, any_value};

/// What the translator names a resource without `service.name`.
const NO_SERVICE: &str = "OTLPResourceNoServiceName";

/// OTLP status codes.
const STATUS_OK: i32 = 1;
const STATUS_ERROR: i32 = 2;

/// One assembled trace as a Jaeger trace: `traceID`, `spans`, `processes`, `warnings`.
/// Processes are numbered `p1`, `p2`… in order of first use; identical resources share one.
pub fn trace(trace_id: &str, data: &TracesData) -> Json {
    let mut processes: Vec<(Json, String)> = Vec::new();
    let mut spans: Vec<Json> = Vec::new();
    for rs in &data.resource_spans {
        let attrs = rs.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or(&[]);
        let service = attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(value_text)
            .unwrap_or_else(|| NO_SERVICE.to_owned());
        let process = json!({
            "serviceName": service,
            "tags": attrs.iter().filter(|kv| kv.key != "service.name").map(tag).collect::<Vec<_>>(),
        });
        let id = match processes.iter().find(|(p, _)| *p == process) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", processes.len() + 1);
                processes.push((process, id.clone()));
                id
            }
        };
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref();
            let scope_tags: Vec<Json> = [
                ("otel.scope.name", scope.map(|s| s.name.as_str()).unwrap_or("")),
                ("otel.scope.version", scope.map(|s| s.version.as_str()).unwrap_or("")),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| json!({ "key": k, "type": "string", "value": v }))
            .collect();
            for s in &ss.spans {
                spans.push(span(s, &id, &scope_tags));
            }
        }
    }
    // The UI draws spans in start order; ties keep their stored order.
    spans.sort_by_key(|s| s["startTime"].as_u64().unwrap_or(0));
    let processes: serde_json::Map<String, Json> = processes.into_iter().map(|(p, id)| (id, p)).collect();
    json!({ "traceID": trace_id, "spans": spans, "processes": processes, "warnings": Json::Null })
}

fn span(s: &Span, process_id: &str, scope_tags: &[Json]) -> Json {
    let trace_id = hex(&s.trace_id);
    let mut references = Vec::new();
    if !s.parent_span_id.is_empty() {
        references.push(json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": hex(&s.parent_span_id) }));
    }
    for l in &s.links {
        references.push(json!({ "refType": "FOLLOWS_FROM", "traceID": hex(&l.trace_id), "spanID": hex(&l.span_id) }));
    }
    let mut tags: Vec<Json> = s.attributes.iter().map(tag).collect();
    tags.extend(scope_tags.iter().cloned());
    if let Some(kind) = kind_name(s.kind) {
        tags.push(json!({ "key": "span.kind", "type": "string", "value": kind }));
    }
    let status = s.status.as_ref();
    match status.map_or(0, |st| st.code) {
        STATUS_ERROR => {
            tags.push(json!({ "key": "error", "type": "bool", "value": true }));
            tags.push(json!({ "key": "otel.status_code", "type": "string", "value": "ERROR" }));
        }
        STATUS_OK => tags.push(json!({ "key": "otel.status_code", "type": "string", "value": "OK" })),
        _ => {}
    }
    if let Some(st) = status.filter(|st| !st.message.is_empty()) {
        tags.push(json!({ "key": "otel.status_description", "type": "string", "value": st.message }));
    }
    if !s.trace_state.is_empty() {
        tags.push(json!({ "key": "w3c.tracestate", "type": "string", "value": s.trace_state }));
    }
    let logs: Vec<Json> = s
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            if !e.name.is_empty() {
                fields.push(json!({ "key": "event", "type": "string", "value": e.name }));
            }
            fields.extend(e.attributes.iter().map(tag));
            json!({ "timestamp": e.time_unix_nano / 1000, "fields": fields })
        })
        .collect();
    json!({
        "traceID": trace_id,
        "spanID": hex(&s.span_id),
        // The low byte of OTLP span flags is W3C trace flags, Jaeger's `flags` (1 = sampled).
        "flags": s.flags & 0xff,
        "operationName": s.name,
        "references": references,
        "startTime": s.start_time_unix_nano / 1000,
        "duration": s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) / 1000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": Json::Null,
    })
}

/// The `span.kind` tag value; unspecified kinds get no tag.
pub fn kind_name(kind: i32) -> Option<&'static str> {
    Some(match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => return None,
    })
}

/// A typed Jaeger tag. Arrays and maps have no Jaeger type: they become their JSON text, as
/// the translator does.
fn tag(kv: &KeyValue) -> Json {
    let (ty, value) = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => ("string", json!(s)),
        Some(any_value::Value::BoolValue(b)) => ("bool", json!(b)),
        Some(any_value::Value::IntValue(i)) => ("int64", json!(i)),
        Some(any_value::Value::DoubleValue(f)) => ("float64", spoor_model::json::double_json(*f)),
        Some(any_value::Value::BytesValue(b)) => ("binary", json!(base64::engine::general_purpose::STANDARD.encode(b))),
        Some(_) => ("string", json!(kv.value.as_ref().map(value_text).unwrap_or_default())),
        None => ("string", json!("")),
    };
    json!({ "key": kv.key, "type": ty, "value": value })
}

/// A value as text: strings as they are, anything else as its JSON.
fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(plain_json).collect::<Vec<_>>()).to_string()
        }
        Some(any_value::Value::KvlistValue(l)) => Json::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map(plain_json).unwrap_or(Json::Null)))
                .collect(),
        )
        .to_string(),
        _ => plain_json(v).to_string(),
    }
}

/// An attribute value as plain JSON (`[1,"a"]`, `{"k":true}`), the way the translator writes
/// arrays and maps into a string tag.
fn plain_json(v: &AnyValue) -> Json {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(f)) => spoor_model::json::double_json(*f),
        Some(any_value::Value::BytesValue(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(any_value::Value::ArrayValue(a)) => Json::Array(a.values.iter().map(plain_json).collect()),
        Some(any_value::Value::KvlistValue(l)) => Json::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map(plain_json).unwrap_or(Json::Null)))
                .collect(),
        ),
        None => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_model::otlp::{ArrayValue, Event, Resource, ResourceSpans, ScopeSpans, Status};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }) }
    }

    #[test]
    fn spans_become_jaeger_spans() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "GET /a".into(),
            kind: 2,
            start_time_unix_nano: 5_000_000,
            end_time_unix_nano: 7_500_000,
            attributes: vec![
                kv("n", any_value::Value::IntValue(7)),
                kv(
                    "arr",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: Some(any_value::Value::IntValue(1)) }],
                    }),
                ),
            ],
            events: vec![Event { time_unix_nano: 6_000_000, name: "exception".into(), ..Default::default() }],
            status: Some(Status { code: STATUS_ERROR, message: "boom".into() }),
            ..Default::default()
        };
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", any_value::Value::StringValue("shop".into()))],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                schema_url: String::new(),
            }],
        };
        let t = trace("0101", &data);
        let s = &t["spans"][0];
        assert_eq!(s["startTime"], 5000);
        assert_eq!(s["duration"], 2500);
        assert_eq!(s["references"][0]["refType"], "CHILD_OF");
        assert_eq!(s["processID"], "p1");
        assert_eq!(t["processes"]["p1"]["serviceName"], "shop");
        let tags = s["tags"].as_array().unwrap();
        assert!(tags.contains(&json!({ "key": "n", "type": "int64", "value": 7 })));
        assert!(tags.contains(&json!({ "key": "arr", "type": "string", "value": "[1]" })));
        assert!(tags.contains(&json!({ "key": "span.kind", "type": "string", "value": "server" })));
        assert!(tags.contains(&json!({ "key": "error", "type": "bool", "value": true })));
        assert!(tags.contains(&json!({ "key": "otel.status_description", "type": "string", "value": "boom" })));
        assert_eq!(
            s["logs"][0],
            json!({ "timestamp": 6000, "fields": [{ "key": "event", "type": "string", "value": "exception" }] })
        );
    }
}
