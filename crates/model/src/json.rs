//! OTLP/JSON decoding (liberal: camelCase or snake_case keys, enum names or numbers, 64-bit
//! integers as strings or numbers, unknown fields ignored) and the JSON encodings Spoor emits:
//! Tempo's jsonpb style for traces (IDs base64, enums by name, 64-bit integers as strings,
//! empty fields omitted) and OTLP responses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::ids::unhex;
use crate::otlp::*;

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_export_request(body: &[u8]) -> Result<ExportTraceServiceRequest, Error> {
    let value: Value = serde_json::from_slice(body)?;
    let mut d = Decoder { path: Vec::new() };
    let obj = d.object(&value, "request")?;
    Ok(ExportTraceServiceRequest {
        resource_spans: d.list(obj, "resourceSpans", "resource_spans", Decoder::resource_spans)?,
    })
}

struct Decoder {
    path: Vec<String>,
}

type Obj = Map<String, Value>;

impl Decoder {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Json {
            path: if self.path.is_empty() { "$".into() } else { self.path.concat() },
            message: message.into(),
        }
    }

    fn object<'a>(&self, v: &'a Value, what: &str) -> Result<&'a Obj, Error> {
        v.as_object().ok_or_else(|| self.err(format!("expected a {what} object, found {}", kind_of(v))))
    }

    fn field<'a>(obj: &'a Obj, camel: &str, snake: &str) -> Option<&'a Value> {
        obj.get(camel).or_else(|| obj.get(snake)).filter(|v| !v.is_null())
    }

    fn with<T>(&mut self, segment: String, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        self.path.push(segment);
        let out = f(self);
        self.path.pop();
        out
    }

    fn list<T>(
        &mut self,
        obj: &Obj,
        camel: &str,
        snake: &str,
        mut item: impl FnMut(&mut Self, &Value) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let Some(v) = Self::field(obj, camel, snake) else { return Ok(Vec::new()) };
        let prefix = if self.path.is_empty() { camel.to_string() } else { format!(".{camel}") };
        let arr = self.with(prefix.clone(), |d| {
            v.as_array().ok_or_else(|| d.err(format!("expected an array, found {}", kind_of(v))))
        })?;
        let mut out = Vec::with_capacity(arr.len());
        for (i, x) in arr.iter().enumerate() {
            out.push(self.with(format!("{prefix}[{i}]"), |d| item(d, x))?);
        }
        Ok(out)
    }

    fn scalar<T>(
        &mut self,
        obj: &Obj,
        camel: &str,
        snake: &str,
        parse: impl FnOnce(&Self, &Value) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        match Self::field(obj, camel, snake) {
            None => Ok(None),
            Some(v) => self.with(format!(".{camel}"), |d| parse(d, v).map(Some)),
        }
    }

    fn string(&mut self, obj: &Obj, camel: &str, snake: &str) -> Result<String, Error> {
        Ok(self
            .scalar(obj, camel, snake, |d, v| {
                v.as_str().map(str::to_owned).ok_or_else(|| d.err(format!("expected a string, found {}", kind_of(v))))
            })?
            .unwrap_or_default())
    }

    fn u64(&mut self, obj: &Obj, camel: &str, snake: &str) -> Result<u64, Error> {
        Ok(self.scalar(obj, camel, snake, parse_int::<u64>)?.unwrap_or(0))
    }

    fn u32(&mut self, obj: &Obj, camel: &str, snake: &str) -> Result<u32, Error> {
        Ok(self.scalar(obj, camel, snake, parse_int::<u32>)?.unwrap_or(0))
    }

    fn id(&mut self, obj: &Obj, camel: &str, snake: &str) -> Result<Vec<u8>, Error> {
        Ok(self
            .scalar(obj, camel, snake, |d, v| {
                let s = v.as_str().ok_or_else(|| d.err(format!("expected a hex string, found {}", kind_of(v))))?;
                unhex(s).map_err(|e| d.err(e))
            })?
            .unwrap_or_default())
    }

    fn enumeration(&mut self, obj: &Obj, camel: &str, snake: &str, names: &[&str]) -> Result<i32, Error> {
        Ok(self
            .scalar(obj, camel, snake, |d, v| match v {
                Value::String(s) => match names.iter().position(|n| n == s) {
                    Some(i) => Ok(i as i32),
                    None => s.parse::<i32>().map_err(|_| {
                        d.err(format!("unknown enum value {s:?}; expected a number or one of {}", names.join(", ")))
                    }),
                },
                _ => parse_int::<i32>(d, v),
            })?
            .unwrap_or(0))
    }

    fn resource_spans(&mut self, v: &Value) -> Result<ResourceSpans, Error> {
        let obj = self.object(v, "ResourceSpans")?;
        let resource = match Self::field(obj, "resource", "resource") {
            None => None,
            Some(r) => Some(self.with(".resource".into(), |d| {
                let o = d.object(r, "Resource")?;
                Ok(Resource {
                    attributes: d.list(o, "attributes", "attributes", Decoder::key_value)?,
                    dropped_attributes_count: d.u32(o, "droppedAttributesCount", "dropped_attributes_count")?,
                })
            })?),
        };
        Ok(ResourceSpans {
            resource,
            scope_spans: self.list(obj, "scopeSpans", "scope_spans", Decoder::scope_spans)?,
            schema_url: self.string(obj, "schemaUrl", "schema_url")?,
        })
    }

    fn scope_spans(&mut self, v: &Value) -> Result<ScopeSpans, Error> {
        let obj = self.object(v, "ScopeSpans")?;
        let scope = match Self::field(obj, "scope", "scope") {
            None => None,
            Some(s) => Some(self.with(".scope".into(), |d| {
                let o = d.object(s, "InstrumentationScope")?;
                Ok(InstrumentationScope {
                    name: d.string(o, "name", "name")?,
                    version: d.string(o, "version", "version")?,
                    attributes: d.list(o, "attributes", "attributes", Decoder::key_value)?,
                    dropped_attributes_count: d.u32(o, "droppedAttributesCount", "dropped_attributes_count")?,
                })
            })?),
        };
        Ok(ScopeSpans {
            scope,
            spans: self.list(obj, "spans", "spans", Decoder::span)?,
            schema_url: self.string(obj, "schemaUrl", "schema_url")?,
        })
    }

    fn span(&mut self, v: &Value) -> Result<Span, Error> {
        let o = self.object(v, "Span")?;
        let status = match Self::field(o, "status", "status") {
            None => None,
            Some(s) => Some(self.with(".status".into(), |d| {
                let so = d.object(s, "Status")?;
                Ok(Status {
                    message: d.string(so, "message", "message")?,
                    code: d.enumeration(so, "code", "code", &STATUS_CODE_NAMES)?,
                })
            })?),
        };
        Ok(Span {
            trace_id: self.id(o, "traceId", "trace_id")?,
            span_id: self.id(o, "spanId", "span_id")?,
            trace_state: self.string(o, "traceState", "trace_state")?,
            parent_span_id: self.id(o, "parentSpanId", "parent_span_id")?,
            flags: self.u32(o, "flags", "flags")?,
            name: self.string(o, "name", "name")?,
            kind: self.enumeration(o, "kind", "kind", &SPAN_KIND_NAMES)?,
            start_time_unix_nano: self.u64(o, "startTimeUnixNano", "start_time_unix_nano")?,
            end_time_unix_nano: self.u64(o, "endTimeUnixNano", "end_time_unix_nano")?,
            attributes: self.list(o, "attributes", "attributes", Decoder::key_value)?,
            dropped_attributes_count: self.u32(o, "droppedAttributesCount", "dropped_attributes_count")?,
            events: self.list(o, "events", "events", |d, v| {
                let e = d.object(v, "Event")?;
                Ok(Event {
                    time_unix_nano: d.u64(e, "timeUnixNano", "time_unix_nano")?,
                    name: d.string(e, "name", "name")?,
                    attributes: d.list(e, "attributes", "attributes", Decoder::key_value)?,
                    dropped_attributes_count: d.u32(e, "droppedAttributesCount", "dropped_attributes_count")?,
                })
            })?,
            dropped_events_count: self.u32(o, "droppedEventsCount", "dropped_events_count")?,
            links: self.list(o, "links", "links", |d, v| {
                let l = d.object(v, "Link")?;
                Ok(Link {
                    trace_id: d.id(l, "traceId", "trace_id")?,
                    span_id: d.id(l, "spanId", "span_id")?,
                    trace_state: d.string(l, "traceState", "trace_state")?,
                    attributes: d.list(l, "attributes", "attributes", Decoder::key_value)?,
                    dropped_attributes_count: d.u32(l, "droppedAttributesCount", "dropped_attributes_count")?,
                    flags: d.u32(l, "flags", "flags")?,
                })
            })?,
            dropped_links_count: self.u32(o, "droppedLinksCount", "dropped_links_count")?,
            status,
        })
    }

    fn key_value(&mut self, v: &Value) -> Result<KeyValue, Error> {
        let o = self.object(v, "KeyValue")?;
        let value = match Self::field(o, "value", "value") {
            None => None,
            Some(val) => Some(self.with(".value".into(), |d| d.any_value(val))?),
        };
        Ok(KeyValue { key: self.string(o, "key", "key")?, value })
    }

    fn any_value(&mut self, v: &Value) -> Result<AnyValue, Error> {
        use any_value::Value as V;
        let o = self.object(v, "AnyValue")?;
        let value = if let Some(s) = Self::field(o, "stringValue", "string_value") {
            Some(V::StringValue(
                s.as_str()
                    .ok_or_else(|| self.err(format!("stringValue must be a string, found {}", kind_of(s))))?
                    .into(),
            ))
        } else if let Some(b) = Self::field(o, "boolValue", "bool_value") {
            Some(V::BoolValue(
                b.as_bool().ok_or_else(|| self.err(format!("boolValue must be a boolean, found {}", kind_of(b))))?,
            ))
        } else if let Some(i) = Self::field(o, "intValue", "int_value") {
            Some(V::IntValue(self.with(".intValue".into(), |d| parse_int::<i64>(d, i))?))
        } else if let Some(f) = Self::field(o, "doubleValue", "double_value") {
            Some(V::DoubleValue(self.with(".doubleValue".into(), |d| parse_double(d, f))?))
        } else if let Some(a) = Self::field(o, "arrayValue", "array_value") {
            let ao = self.object(a, "ArrayValue")?;
            Some(V::ArrayValue(ArrayValue {
                values: self.with(".arrayValue".into(), |d| d.list(ao, "values", "values", Decoder::any_value))?,
            }))
        } else if let Some(k) = Self::field(o, "kvlistValue", "kvlist_value") {
            let ko = self.object(k, "KeyValueList")?;
            Some(V::KvlistValue(KeyValueList {
                values: self.with(".kvlistValue".into(), |d| d.list(ko, "values", "values", Decoder::key_value))?,
            }))
        } else if let Some(b) = Self::field(o, "bytesValue", "bytes_value") {
            let s = b.as_str().ok_or_else(|| self.err("bytesValue must be a base64 string"))?;
            Some(V::BytesValue(B64.decode(s).map_err(|e| self.err(format!("bytesValue is not base64: {e}")))?))
        } else {
            None
        };
        Ok(AnyValue { value })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_int<T: TryFrom<i128> + std::str::FromStr>(d: &Decoder, v: &Value) -> Result<T, Error> {
    let out = match v {
        Value::String(s) => s.trim().parse::<T>().ok(),
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e38).map(|f| f as i128))
            .and_then(|i| T::try_from(i).ok()),
        _ => None,
    };
    out.ok_or_else(|| d.err(format!("expected an integer (number or decimal string) in range, found {v}")))
}

fn parse_double(d: &Decoder, v: &Value) -> Result<f64, Error> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| d.err("number out of range")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(|_| d.err(format!("expected a double, found {other:?}"))),
        },
        other => Err(d.err(format!("expected a double, found {}", kind_of(other)))),
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

/// How IDs appear in emitted JSON.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IdStyle {
    /// Tempo's API (jsonpb of `bytes`): base64.
    Base64,
    /// OTLP/JSON: lowercase hex.
    Hex,
}

/// Encodes a trace as Tempo does (`resourceSpans` list; the caller renames it for v1).
pub fn trace_to_json(trace: &TracesData, ids: IdStyle) -> Value {
    Value::Array(trace.resource_spans.iter().map(|rs| resource_spans_json(rs, ids)).collect())
}

struct Out(Map<String, Value>);

impl Out {
    fn new() -> Self {
        Out(Map::new())
    }
    fn str(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::String(v.into()));
        }
        self
    }
    fn u64(mut self, k: &str, v: u64) -> Self {
        if v != 0 {
            self.0.insert(k.into(), Value::String(v.to_string()));
        }
        self
    }
    fn u32(mut self, k: &str, v: u32) -> Self {
        if v != 0 {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn id(mut self, k: &str, v: &[u8], ids: IdStyle) -> Self {
        if !v.is_empty() {
            let text = match ids {
                IdStyle::Base64 => B64.encode(v),
                IdStyle::Hex => crate::ids::hex(v),
            };
            self.0.insert(k.into(), Value::String(text));
        }
        self
    }
    fn list(mut self, k: &str, v: Vec<Value>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::Array(v));
        }
        self
    }
    fn opt(mut self, k: &str, v: Option<Value>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn attrs(kvs: &[KeyValue]) -> Vec<Value> {
    kvs.iter().map(key_value_json).collect()
}

fn key_value_json(kv: &KeyValue) -> Value {
    Out::new().str("key", &kv.key).opt("value", kv.value.as_ref().map(any_value_json)).done()
}

/// One attribute value in OTLP JSON form (`{"stringValue":"x"}`, `{"intValue":"3"}`, …).
pub fn any_value_json(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match &v.value {
        None => json!({}),
        Some(V::StringValue(s)) => json!({ "stringValue": s }),
        Some(V::BoolValue(b)) => json!({ "boolValue": b }),
        Some(V::IntValue(i)) => json!({ "intValue": i.to_string() }),
        Some(V::DoubleValue(f)) => json!({ "doubleValue": double_json(*f) }),
        Some(V::ArrayValue(a)) => {
            json!({ "arrayValue": Out::new().list("values", a.values.iter().map(any_value_json).collect()).done() })
        }
        Some(V::KvlistValue(k)) => json!({ "kvlistValue": Out::new().list("values", attrs(&k.values)).done() }),
        Some(V::BytesValue(b)) => json!({ "bytesValue": B64.encode(b) }),
    }
}

/// A double as protobuf JSON writes it: NaN and infinities as strings.
pub fn double_json(f: f64) -> Value {
    if f.is_nan() {
        json!("NaN")
    } else if f.is_infinite() {
        json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(f)
    }
}

fn resource_spans_json(rs: &ResourceSpans, ids: IdStyle) -> Value {
    let resource = rs.resource.as_ref().map(|r| {
        Out::new()
            .list("attributes", attrs(&r.attributes))
            .u32("droppedAttributesCount", r.dropped_attributes_count)
            .done()
    });
    let scopes = rs
        .scope_spans
        .iter()
        .map(|ss| {
            let scope = ss.scope.as_ref().map(|s| {
                Out::new()
                    .str("name", &s.name)
                    .str("version", &s.version)
                    .list("attributes", attrs(&s.attributes))
                    .u32("droppedAttributesCount", s.dropped_attributes_count)
                    .done()
            });
            Out::new()
                .opt("scope", scope)
                .list("spans", ss.spans.iter().map(|s| span_json(s, ids)).collect())
                .str("schemaUrl", &ss.schema_url)
                .done()
        })
        .collect();
    Out::new().opt("resource", resource).list("scopeSpans", scopes).str("schemaUrl", &rs.schema_url).done()
}

fn enum_name(names: &[&str], v: i32) -> Option<Value> {
    match usize::try_from(v).ok().and_then(|i| names.get(i)) {
        Some(_) if v == 0 => None,
        Some(name) => Some(json!(name)),
        None => Some(json!(v)),
    }
}

fn span_json(s: &Span, ids: IdStyle) -> Value {
    let status = s
        .status
        .as_ref()
        .map(|st| Out::new().str("message", &st.message).opt("code", enum_name(&STATUS_CODE_NAMES, st.code)).done());
    Out::new()
        .id("traceId", &s.trace_id, ids)
        .id("spanId", &s.span_id, ids)
        .str("traceState", &s.trace_state)
        .id("parentSpanId", &s.parent_span_id, ids)
        .u32("flags", s.flags)
        .str("name", &s.name)
        .opt("kind", enum_name(&SPAN_KIND_NAMES, s.kind))
        .u64("startTimeUnixNano", s.start_time_unix_nano)
        .u64("endTimeUnixNano", s.end_time_unix_nano)
        .list("attributes", attrs(&s.attributes))
        .u32("droppedAttributesCount", s.dropped_attributes_count)
        .list(
            "events",
            s.events
                .iter()
                .map(|e| {
                    Out::new()
                        .u64("timeUnixNano", e.time_unix_nano)
                        .str("name", &e.name)
                        .list("attributes", attrs(&e.attributes))
                        .u32("droppedAttributesCount", e.dropped_attributes_count)
                        .done()
                })
                .collect(),
        )
        .u32("droppedEventsCount", s.dropped_events_count)
        .list(
            "links",
            s.links
                .iter()
                .map(|l| {
                    Out::new()
                        .id("traceId", &l.trace_id, ids)
                        .id("spanId", &l.span_id, ids)
                        .str("traceState", &l.trace_state)
                        .list("attributes", attrs(&l.attributes))
                        .u32("droppedAttributesCount", l.dropped_attributes_count)
                        .u32("flags", l.flags)
                        .done()
                })
                .collect(),
        )
        .u32("droppedLinksCount", s.dropped_links_count)
        .opt("status", status)
        .done()
}

/// OTLP/JSON `ExportTraceServiceResponse`.
pub fn export_response_json(resp: &ExportTraceServiceResponse) -> Value {
    match &resp.partial_success {
        Some(p) if p.rejected_spans != 0 || !p.error_message.is_empty() => json!({
            "partialSuccess": Out::new().u64("rejectedSpans", p.rejected_spans as u64).str("errorMessage", &p.error_message).done()
        }),
        _ => json!({}),
    }
}

/// OTLP/JSON `google.rpc.Status`, with a RetryInfo detail when a delay is given.
pub fn rpc_status_json(code: i32, message: &str, retry_after_secs: Option<u64>) -> Value {
    let mut out = Out::new().str("message", message);
    if code != 0 {
        out.0.insert("code".into(), json!(code));
    }
    if let Some(secs) = retry_after_secs {
        out.0.insert(
            "details".into(),
            json!([{ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{secs}s") }]),
        );
    }
    out.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_camel_snake_enum_names_and_string_ints() {
        let body = br#"{"resource_spans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
          "scopeSpans":[{"scope":{"name":"lib"},"spans":[
            {"traceId":"5B8EFFF798038103D269B633813FC60C","span_id":"eee19b7ec3c1b174","name":"a",
             "kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1544712660000000000","end_time_unix_nano":1544712661000000000,
             "status":{"code":"STATUS_CODE_ERROR"},"unknown":{"x":1},
             "attributes":[{"key":"n","value":{"intValue":"-7","extra":true}},{"key":"b","value":{"bytesValue":"AQID"}},
                           {"key":"d","value":{"doubleValue":"NaN"}},{"key":"arr","value":{"arrayValue":{"values":[{"boolValue":true}]}}}]}]}]}]}"#;
        let req = decode_export_request(body).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(crate::ids::hex(&span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(span.kind, 2);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.start_time_unix_nano, 1544712660000000000);
        assert_eq!(span.end_time_unix_nano, 1544712661000000000);
        assert_eq!(span.attributes[0].value.as_ref().unwrap().value, Some(any_value::Value::IntValue(-7)));
        assert_eq!(span.attributes[1].value.as_ref().unwrap().value, Some(any_value::Value::BytesValue(vec![1, 2, 3])));
    }

    #[test]
    fn errors_name_the_path() {
        let err = decode_export_request(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"), "{err}");
        let err = decode_export_request(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"NOPE"}]}]}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown enum value \"NOPE\""), "{err}");
        assert!(decode_export_request(b"[1,2]").is_err());
        assert!(decode_export_request(b"{").is_err());
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = AnyValue> {
        use any_value::Value as V;
        let leaf = prop_oneof![
            ".{0,8}".prop_map(V::StringValue),
            any::<bool>().prop_map(V::BoolValue),
            any::<i64>().prop_map(V::IntValue),
            any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(V::DoubleValue),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(V::BytesValue),
        ];
        let leaf = leaf.prop_map(|v| AnyValue { value: Some(v) });
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3)
                    .prop_map(|values| AnyValue { value: Some(V::ArrayValue(ArrayValue { values })) }),
                proptest::collection::vec(("[a-z.]{1,6}", inner), 0..3).prop_map(|kvs| AnyValue {
                    value: Some(V::KvlistValue(KeyValueList {
                        values: kvs.into_iter().map(|(key, v)| KeyValue { key, value: Some(v) }).collect(),
                    })),
                }),
            ]
        })
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        proptest::collection::vec(("[a-z.]{1,8}", any_value()), 0..4)
            .prop_map(|kvs| kvs.into_iter().map(|(key, v)| KeyValue { key, value: Some(v) }).collect())
    }

    fn span() -> impl Strategy<Value = Span> {
        (
            (any::<[u8; 16]>(), any::<[u8; 8]>(), proptest::option::of(any::<[u8; 8]>()), ".{0,10}", 0..6i32),
            (any::<u64>(), any::<u64>(), any::<u32>(), attributes()),
            proptest::option::of((0..3i32, ".{0,6}")),
            proptest::collection::vec((any::<u64>(), ".{0,5}", attributes()), 0..2),
            proptest::collection::vec((any::<[u8; 16]>(), any::<[u8; 8]>(), attributes(), any::<u32>()), 0..2),
        )
            .prop_map(|((t, s, p, name, kind), (start, end, flags, attributes), status, events, links)| Span {
                trace_id: t.to_vec(),
                span_id: s.to_vec(),
                parent_span_id: p.map(|p| p.to_vec()).unwrap_or_default(),
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                flags,
                attributes,
                status: status.map(|(code, message)| Status { code, message }),
                events: events
                    .into_iter()
                    .map(|(time_unix_nano, name, attributes)| Event {
                        time_unix_nano,
                        name,
                        attributes,
                        dropped_attributes_count: 0,
                    })
                    .collect(),
                links: links
                    .into_iter()
                    .map(|(t, s, attributes, flags)| Link {
                        trace_id: t.to_vec(),
                        span_id: s.to_vec(),
                        attributes,
                        flags,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
    }

    proptest! {
        /// What we emit as OTLP/JSON (hex IDs) reads back to the same spans.
        #[test]
        fn otlp_json_round_trip(spans in proptest::collection::vec(span(), 1..4), res in attributes(), scope in ".{0,6}") {
            let data = TracesData { resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: res, dropped_attributes_count: 0 }),
                scope_spans: vec![ScopeSpans { scope: Some(InstrumentationScope { name: scope, ..Default::default() }), spans, schema_url: String::new() }],
                schema_url: String::new(),
            }]};
            let text = serde_json::to_vec(&json!({ "resourceSpans": trace_to_json(&data, IdStyle::Hex) })).unwrap();
            let back = decode_export_request(&text).unwrap();
            prop_assert_eq!(back.resource_spans, data.resource_spans);
        }

        /// Arbitrary bytes never panic the JSON reader.
        #[test]
        fn arbitrary_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_export_request(&bytes);
        }
    }
}
