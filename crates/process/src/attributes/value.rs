//! Attribute values as text and back: the collector's string rendering, the `hash` action's
//! digest, and YAML literals as OTLP values. The redaction processor renders values the same way.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use spoor_model::otlp::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value};

pub(crate) fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(s.into())) }
}

/// The `hash` action's digest: SHA-256, lowercase hex, of the value's canonical bytes (string:
/// UTF-8; bool: one byte 1/0; int: 8 bytes little-endian; double: IEEE-754 bits, 8 bytes
/// little-endian). Other types (bytes, list, map, empty), and the empty string, give the empty
/// string, as the collector does.
pub fn sha256_value(v: Option<&AnyValue>) -> String {
    let mut buf = [0u8; 8];
    let bytes: &[u8] = match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.as_bytes(),
        Some(Value::BoolValue(b)) => {
            buf[0] = *b as u8;
            &buf[..1]
        }
        Some(Value::IntValue(i)) => {
            buf = i.to_le_bytes();
            &buf
        }
        Some(Value::DoubleValue(f)) => {
            buf = f.to_bits().to_le_bytes();
            &buf
        }
        _ => &[],
    };
    if bytes.is_empty() {
        return String::new();
    }
    hex(&Sha256::digest(bytes))
}

pub(crate) use spoor_model::ids::hex;

/// A value's string rendering, as the collector's `AsString`: strings as they are, ints in
/// base 10, doubles in the shortest round-trip form (exponent form below 1e-6 and from 1e21
/// on), bools `true`/`false`, bytes in standard base64, lists and maps as JSON (map keys
/// sorted), empty as "".
pub fn value_to_string(v: &AnyValue) -> String {
    render(v.value.as_ref())
}

pub(super) fn render(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(f)) => format_double(*f),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => to_json(Some(v)).to_string(),
    }
}

fn format_double(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Rust writes `1e21` / `1.5e-7`; the collector (ES6 style) writes `1e+21` / `1.5e-7`.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

fn to_json(v: Option<&Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(f)) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Some(Value::BytesValue(b)) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(|v| to_json(v.value.as_ref())).collect()),
        Some(Value::KvlistValue(kvs)) => {
            let mut entries: Vec<&KeyValue> = kvs.values.iter().collect();
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            let mut m = serde_json::Map::new();
            for kv in entries {
                m.insert(kv.key.clone(), to_json(kv.value.as_ref().and_then(|v| v.value.as_ref())));
            }
            J::Object(m)
        }
    }
}

/// A YAML literal as an OTLP value: strings, integers (int64), floats, bools, lists, maps.
pub(crate) fn json_to_any(v: &serde_json::Value) -> Option<AnyValue> {
    use serde_json::Value as J;
    let out = match v {
        J::Null => return None,
        J::Bool(b) => Value::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64()?),
        },
        J::String(s) => Value::StringValue(s.clone()),
        J::Array(a) => {
            Value::ArrayValue(ArrayValue { values: a.iter().map(|v| json_to_any(v).unwrap_or_default()).collect() })
        }
        J::Object(m) => Value::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| KeyValue { key: k.clone(), value: json_to_any(v) }).collect(),
        }),
    };
    Some(AnyValue { value: Some(out) })
}
