//! Borrowed views of OTLP `ResourceSpans`: what the writer reads spans through. A view is parsed
//! straight from a fragment's bytes (strings and IDs point into them; decoding into owned prost
//! messages allocated for every string and was over a third of a flush), or made from owned
//! messages (a compaction's rows) without encoding them first.

use std::borrow::Cow;

use prost::Message;
use spoor_model::otlp::{AnyValue, KeyValue, ResourceSpans, Span, any_value};
use spoor_model::wire::WireError;
use spoor_model::wire::{I32, I64, LEN, Reader, VARINT};

type Wire<T> = std::result::Result<T, WireError>;

/// An attribute value. `Empty` is an `AnyValue` without a value (SDKs send one for None),
/// `Absent` no `AnyValue` at all; `Nested` is an array or key-value list, kept encoded as an
/// `AnyValue` (how blocks store them).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Absent,
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Nested(Cow<'a, [u8]>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Kv<'a> {
    pub key: &'a str,
    pub value: Val<'a>,
}

#[derive(Default)]
pub(crate) struct EventV<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Vec<Kv<'a>>,
    pub dropped_attributes_count: u32,
}

#[derive(Default)]
pub(crate) struct LinkV<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub attributes: Vec<Kv<'a>>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

#[derive(Default)]
pub(crate) struct SpanV<'a> {
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<Kv<'a>>,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventV<'a>>,
    pub dropped_events_count: u32,
    pub links: Vec<LinkV<'a>>,
    pub dropped_links_count: u32,
    pub status_code: i32,
    pub status_message: &'a str,
}

#[derive(Default)]
pub(crate) struct ScopeV<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub attributes: Vec<Kv<'a>>,
    pub dropped_attributes_count: u32,
}

#[derive(Default)]
pub(crate) struct ScopeSpansV<'a> {
    pub scope: ScopeV<'a>,
    pub spans: Vec<SpanV<'a>>,
    pub schema_url: &'a str,
}

#[derive(Default)]
pub(crate) struct ResourceSpansV<'a> {
    pub resource: Vec<Kv<'a>>,
    pub resource_dropped: u32,
    pub scope_spans: Vec<ScopeSpansV<'a>>,
    pub schema_url: &'a str,
}

impl<'a> ResourceSpansV<'a> {
    /// Parses an encoded `ResourceSpans`. Unknown fields are skipped and a repeated message
    /// field merges, as protobuf requires; a field of the wrong wire type is an error.
    pub fn parse(bytes: &'a [u8]) -> Wire<Self> {
        let mut out = ResourceSpansV::default();
        let mut r = Reader(bytes);
        while let Some((tag, wire)) = r.key()? {
            match (tag, wire) {
                (1, LEN) => {
                    let mut m = Reader(r.bytes()?);
                    while let Some((tag, wire)) = m.key()? {
                        match (tag, wire) {
                            (1, LEN) => out.resource.push(kv(m.bytes()?)?),
                            (2, VARINT) => out.resource_dropped = m.varint()? as u32,
                            _ => m.skip(wire)?,
                        }
                    }
                }
                (2, LEN) => out.scope_spans.push(scope_spans(r.bytes()?)?),
                (3, LEN) => out.schema_url = r.str()?,
                _ => r.skip(wire)?,
            }
        }
        Ok(out)
    }

    /// A view of owned messages: only arrays and key-value lists are encoded (blocks keep them so).
    pub fn of(rs: &'a ResourceSpans) -> Self {
        let resource = rs.resource.as_ref();
        ResourceSpansV {
            resource: resource.map(|r| kvs_of(&r.attributes)).unwrap_or_default(),
            resource_dropped: resource.map_or(0, |r| r.dropped_attributes_count),
            scope_spans: rs
                .scope_spans
                .iter()
                .map(|ss| {
                    let scope = ss.scope.as_ref();
                    ScopeSpansV {
                        scope: ScopeV {
                            name: scope.map_or("", |s| &s.name),
                            version: scope.map_or("", |s| &s.version),
                            attributes: scope.map(|s| kvs_of(&s.attributes)).unwrap_or_default(),
                            dropped_attributes_count: scope.map_or(0, |s| s.dropped_attributes_count),
                        },
                        spans: ss.spans.iter().map(span_of).collect(),
                        schema_url: &ss.schema_url,
                    }
                })
                .collect(),
            schema_url: &rs.schema_url,
        }
    }
}

fn span_of(s: &Span) -> SpanV<'_> {
    SpanV {
        span_id: &s.span_id,
        trace_state: &s.trace_state,
        parent_span_id: &s.parent_span_id,
        flags: s.flags,
        name: &s.name,
        kind: s.kind,
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: kvs_of(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| EventV {
                time_unix_nano: e.time_unix_nano,
                name: &e.name,
                attributes: kvs_of(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| LinkV {
                trace_id: &l.trace_id,
                span_id: &l.span_id,
                trace_state: &l.trace_state,
                attributes: kvs_of(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status_code: s.status.as_ref().map_or(0, |st| st.code),
        status_message: s.status.as_ref().map_or("", |st| &st.message),
    }
}

pub(crate) fn kvs_of(attrs: &[KeyValue]) -> Vec<Kv<'_>> {
    attrs.iter().map(kv_of).collect()
}

pub(crate) fn kv_of(kv: &KeyValue) -> Kv<'_> {
    use any_value::Value;
    let value = match kv.value.as_ref() {
        None => Val::Absent,
        Some(AnyValue { value: None }) => Val::Empty,
        Some(AnyValue { value: Some(v) }) => match v {
            Value::StringValue(s) => Val::Str(s),
            Value::BoolValue(b) => Val::Bool(*b),
            Value::IntValue(i) => Val::Int(*i),
            Value::DoubleValue(d) => Val::Double(*d),
            Value::BytesValue(b) => Val::Bytes(b),
            Value::ArrayValue(_) | Value::KvlistValue(_) => {
                Val::Nested(Cow::Owned(AnyValue { value: Some(v.clone()) }.encode_to_vec()))
            }
        },
    };
    Kv { key: &kv.key, value }
}

fn scope_spans(bytes: &[u8]) -> Wire<ScopeSpansV<'_>> {
    let mut out = ScopeSpansV::default();
    let mut r = Reader(bytes);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => {
                let mut m = Reader(r.bytes()?);
                while let Some((tag, wire)) = m.key()? {
                    match (tag, wire) {
                        (1, LEN) => out.scope.name = m.str()?,
                        (2, LEN) => out.scope.version = m.str()?,
                        (3, LEN) => out.scope.attributes.push(kv(m.bytes()?)?),
                        (4, VARINT) => out.scope.dropped_attributes_count = m.varint()? as u32,
                        _ => m.skip(wire)?,
                    }
                }
            }
            (2, LEN) => out.spans.push(span(r.bytes()?)?),
            (3, LEN) => out.schema_url = r.str()?,
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn span(bytes: &[u8]) -> Wire<SpanV<'_>> {
    // Sized for a typical span: growing the list attribute by attribute cost ~5% of a flush.
    let mut s = SpanV { attributes: Vec::with_capacity(16), ..SpanV::default() };
    let mut r = Reader(bytes);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => {
                r.bytes()?; // the trace ID: the fragment's, checked when it was split
            }
            (2, LEN) => s.span_id = r.bytes()?,
            (3, LEN) => s.trace_state = r.str()?,
            (4, LEN) => s.parent_span_id = r.bytes()?,
            (5, LEN) => s.name = r.str()?,
            (6, VARINT) => s.kind = r.varint()? as i32,
            (7, I64) => s.start_time_unix_nano = r.fixed64()?,
            (8, I64) => s.end_time_unix_nano = r.fixed64()?,
            (9, LEN) => s.attributes.push(kv(r.bytes()?)?),
            (10, VARINT) => s.dropped_attributes_count = r.varint()? as u32,
            (11, LEN) => s.events.push(event(r.bytes()?)?),
            (12, VARINT) => s.dropped_events_count = r.varint()? as u32,
            (13, LEN) => s.links.push(link(r.bytes()?)?),
            (14, VARINT) => s.dropped_links_count = r.varint()? as u32,
            (15, LEN) => {
                let mut m = Reader(r.bytes()?);
                while let Some((tag, wire)) = m.key()? {
                    match (tag, wire) {
                        (2, LEN) => s.status_message = m.str()?,
                        (3, VARINT) => s.status_code = m.varint()? as i32,
                        _ => m.skip(wire)?,
                    }
                }
            }
            (16, I32) => s.flags = r.fixed32()?,
            _ => r.skip(wire)?,
        }
    }
    Ok(s)
}

fn event(bytes: &[u8]) -> Wire<EventV<'_>> {
    let mut e = EventV::default();
    let mut r = Reader(bytes);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, I64) => e.time_unix_nano = r.fixed64()?,
            (2, LEN) => e.name = r.str()?,
            (3, LEN) => e.attributes.push(kv(r.bytes()?)?),
            (4, VARINT) => e.dropped_attributes_count = r.varint()? as u32,
            _ => r.skip(wire)?,
        }
    }
    Ok(e)
}

fn link(bytes: &[u8]) -> Wire<LinkV<'_>> {
    let mut l = LinkV::default();
    let mut r = Reader(bytes);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => l.trace_id = r.bytes()?,
            (2, LEN) => l.span_id = r.bytes()?,
            (3, LEN) => l.trace_state = r.str()?,
            (4, LEN) => l.attributes.push(kv(r.bytes()?)?),
            (5, VARINT) => l.dropped_attributes_count = r.varint()? as u32,
            (6, I32) => l.flags = r.fixed32()?,
            _ => r.skip(wire)?,
        }
    }
    Ok(l)
}

fn kv(bytes: &[u8]) -> Wire<Kv<'_>> {
    let mut out = Kv { key: "", value: Val::Absent };
    let mut r = Reader(bytes);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => out.key = r.str()?,
            (2, LEN) => out.value = any_value(r.bytes()?)?,
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

/// One `AnyValue`; of a oneof repeated on the wire the last member wins, as in prost.
fn any_value(bytes: &[u8]) -> Wire<Val<'_>> {
    let mut out = Val::Empty;
    let mut r = Reader(bytes);
    while let Some((tag, wire)) = r.key()? {
        out = match (tag, wire) {
            (1, LEN) => Val::Str(r.str()?),
            (2, VARINT) => Val::Bool(r.varint()? != 0),
            (3, VARINT) => Val::Int(r.varint()? as i64),
            (4, I64) => Val::Double(f64::from_bits(r.fixed64()?)),
            (5 | 6, LEN) => {
                r.bytes()?;
                // Stored as the whole AnyValue: nested values are rare and kept as they came.
                Val::Nested(Cow::Borrowed(bytes))
            }
            (7, LEN) => Val::Bytes(r.bytes()?),
            (1..=7, _) => return Err(WireError::new("an AnyValue field has the wrong wire type")),
            _ => {
                r.skip(wire)?;
                out
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_model::otlp::*;

    fn sample() -> ResourceSpans {
        use any_value::Value;
        let kv = |k: &str, v: Option<Value>| KeyValue { key: k.into(), value: Some(AnyValue { value: v }) };
        let attrs = vec![
            kv("s", Some(Value::StringValue("é".into()))),
            kv("i", Some(Value::IntValue(-5))),
            kv("d", Some(Value::DoubleValue(0.25))),
            kv("b", Some(Value::BoolValue(true))),
            kv("y", Some(Value::BytesValue(vec![1, 2]))),
            kv("a", Some(Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::IntValue(1)) }] }))),
            kv("e", None),
            KeyValue { key: "n".into(), value: None },
        ];
        ResourceSpans {
            resource: Some(Resource { attributes: attrs.clone(), dropped_attributes_count: 3 }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1".into(),
                    attributes: attrs.clone(),
                    dropped_attributes_count: 1,
                }),
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    trace_state: "ts".into(),
                    parent_span_id: vec![3; 8],
                    flags: 0x301,
                    name: "op".into(),
                    kind: -1,
                    start_time_unix_nano: 10,
                    end_time_unix_nano: u64::MAX,
                    attributes: attrs.clone(),
                    dropped_attributes_count: 4,
                    events: vec![Event {
                        time_unix_nano: 11,
                        name: "ev".into(),
                        attributes: attrs.clone(),
                        dropped_attributes_count: 5,
                    }],
                    dropped_events_count: 6,
                    links: vec![Link {
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        trace_state: "lt".into(),
                        attributes: attrs,
                        dropped_attributes_count: 9,
                        flags: 1,
                    }],
                    dropped_links_count: 12,
                    status: Some(Status { message: "bad".into(), code: 2 }),
                }],
                schema_url: "ss".into(),
            }],
            schema_url: "rs".into(),
        }
    }

    /// Every field a view carries, as text, to compare a parsed view with an owned one's.
    fn describe(v: &ResourceSpansV<'_>) -> String {
        let kvs = |a: &[Kv<'_>]| format!("{a:?}");
        let mut out = format!("{} {} {}\n", kvs(&v.resource), v.resource_dropped, v.schema_url);
        for ss in &v.scope_spans {
            let sc = &ss.scope;
            out += &format!(
                "{} {} {} {} {}\n",
                sc.name,
                sc.version,
                kvs(&sc.attributes),
                sc.dropped_attributes_count,
                ss.schema_url
            );
            for s in &ss.spans {
                out += &format!(
                    "{:?} {} {:?} {} {} {} {} {} {} {} {} {} {} {} {}\n",
                    s.span_id,
                    s.trace_state,
                    s.parent_span_id,
                    s.flags,
                    s.name,
                    s.kind,
                    s.start_time_unix_nano,
                    s.end_time_unix_nano,
                    kvs(&s.attributes),
                    s.dropped_attributes_count,
                    s.dropped_events_count,
                    s.dropped_links_count,
                    s.status_code,
                    s.status_message,
                    s.events.len() + s.links.len()
                );
                for e in &s.events {
                    out += &format!(
                        "{} {} {} {}\n",
                        e.time_unix_nano,
                        e.name,
                        kvs(&e.attributes),
                        e.dropped_attributes_count
                    );
                }
                for l in &s.links {
                    out += &format!(
                        "{:?} {:?} {} {} {} {}\n",
                        l.trace_id,
                        l.span_id,
                        l.trace_state,
                        kvs(&l.attributes),
                        l.dropped_attributes_count,
                        l.flags
                    );
                }
            }
        }
        out
    }

    #[test]
    fn parsed_and_owned_views_agree_field_by_field() {
        let rs = sample();
        let bytes = rs.encode_to_vec();
        let parsed = ResourceSpansV::parse(&bytes).unwrap();
        let owned = ResourceSpansV::of(&rs);
        assert_eq!(describe(&parsed), describe(&owned));
        let text = describe(&parsed);
        for want in ["Str(\"é\")", "Int(-5)", "Double(0.25)", "Bool(true)", "Bytes([1, 2])", "Empty", "Absent", "-1 10"]
        {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        // The nested value decodes back to the array it was.
        let Val::Nested(any) = &parsed.resource[5].value else { panic!("nested") };
        assert_eq!(AnyValue::decode(&any[..]).unwrap(), rs.resource.unwrap().attributes[5].value.clone().unwrap());
    }

    #[test]
    fn truncated_or_mistyped_input_is_an_error_never_a_panic() {
        let bytes = sample().encode_to_vec();
        for len in 0..bytes.len() {
            // A prefix may happen to end on a field boundary; it must then parse, not panic.
            let _ = ResourceSpansV::parse(&bytes[..len]);
        }
        assert!(ResourceSpansV::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(ResourceSpansV::parse(&[0x12, 0x05, 0x01]).is_err(), "length past the end");
        assert!(ResourceSpansV::parse(&[0x0b]).is_err(), "group wire type");
        assert!(ResourceSpansV::parse(&[0x1a, 0x01, 0xff]).is_err(), "invalid UTF-8");
        // Unknown fields of every wire type are skipped.
        let unknown = [0xf8, 0x01, 0x05, 0xf9, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0xfd, 0x01, 0, 0, 0, 0];
        assert!(ResourceSpansV::parse(&unknown).unwrap().scope_spans.is_empty());
    }
}
