//! Attribute values, span kinds and status codes as label values, and attribute names as label
//! names.

use spoor_model::otlp::{AnyValue, KeyValue, SPAN_KIND_NAMES, STATUS_CODE_NAMES, any_value};

/// A valid Prometheus label name: every character outside `[a-zA-Z0-9_]` becomes `_`, and a
/// leading digit gets a `_` before it (`http.method` → `http_method`).
pub fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Label names for attribute dimensions: sanitized, and prefixed with `__` when they would
/// collide with one of `taken` (an intrinsic label such as `status_code`).
pub fn dimension_labels<'a>(names: impl IntoIterator<Item = &'a str>, taken: &[&str]) -> Vec<String> {
    names
        .into_iter()
        .map(|n| {
            let s = sanitize(n);
            if taken.contains(&s.as_str()) { format!("__{s}") } else { s }
        })
        .collect()
}

pub fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref())
}

/// Appends an attribute value as label text: strings as they are, numbers and booleans in
/// their usual text form. Returns false (and appends nothing) for an absent or empty value.
pub fn push_value(out: &mut String, value: Option<&AnyValue>) -> bool {
    use std::fmt::Write;
    let Some(v) = value.and_then(|v| v.value.as_ref()) else { return false };
    let before = out.len();
    match v {
        any_value::Value::StringValue(s) => out.push_str(s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => {
            let _ = write!(out, "{d}");
        }
        any_value::Value::BytesValue(b) => out.push_str(&spoor_model::ids::hex(b)),
        // Structured values make poor labels; their JSON form at least keeps them apart.
        any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_) => {
            let _ = write!(out, "{}", spoor_model::json::any_value_json(value.unwrap()));
        }
    }
    out.len() > before
}

/// A string attribute, or None.
pub fn str_value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attrs, key)?.value.as_ref()? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// An attribute as text (any scalar type), or None when absent or empty.
pub fn text_value(attrs: &[KeyValue], key: &str) -> Option<String> {
    let mut s = String::new();
    push_value(&mut s, find(attrs, key)).then_some(s)
}

/// A numeric attribute (int or double), for span multipliers.
pub fn number_value(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match find(attrs, key)?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i as f64),
        any_value::Value::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

/// A span kind as the metrics show it (`SPAN_KIND_SERVER`); unknown kinds as unspecified.
pub(crate) fn kind_name(kind: i32) -> &'static str {
    usize::try_from(kind).ok().and_then(|k| SPAN_KIND_NAMES.get(k)).copied().unwrap_or(SPAN_KIND_NAMES[0])
}

/// A status code as the metrics show it (`STATUS_CODE_ERROR`); unknown codes as unset.
pub(crate) fn status_name(code: i32) -> &'static str {
    usize::try_from(code).ok().and_then(|c| STATUS_CODE_NAMES.get(c)).copied().unwrap_or(STATUS_CODE_NAMES[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("http.method"), "http_method");
        assert_eq!(sanitize("k8s.pod-name"), "k8s_pod_name");
        assert_eq!(sanitize("9lives"), "_9lives");
        assert_eq!(sanitize(""), "_");
        assert_eq!(dimension_labels(["status.code", "env"], &["status_code"]), ["__status_code", "env"]);
    }
}
