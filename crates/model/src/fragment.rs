//! Validation and splitting of an export request into per-trace fragments.
//!
//! A fragment is one encoded `ResourceSpans` whose spans all belong to one trace. It is what
//! the WAL persists and what the head stores, so a trace lookup concatenates fragments and a
//! replay never decodes a span. Resource and scope are encoded once per request and copied
//! into each trace's fragment as bytes.

use bytes::Bytes;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::ids::{SpanId, TraceId};
use crate::otlp::{ExportTraceServiceRequest, Span};
use crate::wire::{LEN, Reader};

/// The spans of one trace from one resource, encoded as an OTLP `ResourceSpans`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fragment {
    pub trace_id: TraceId,
    pub spans: u32,
    pub bytes: Bytes,
}

/// What a request holds once bad spans are taken out.
#[derive(Debug, Default)]
pub struct Split {
    pub fragments: Vec<Fragment>,
    pub accepted_spans: usize,
    pub rejected_spans: usize,
    /// A summary of why spans were rejected; empty when none were.
    pub message: String,
}

#[derive(Default)]
struct Rejections {
    trace_id: usize,
    span_id: usize,
    parent_id: usize,
}

impl Rejections {
    fn check(&mut self, span: &Span) -> Option<TraceId> {
        self.check_ids(&span.trace_id, &span.span_id, &span.parent_span_id)
    }

    fn check_ids(&mut self, trace_id: &[u8], span_id: &[u8], parent_span_id: &[u8]) -> Option<TraceId> {
        let Some(trace_id) = TraceId::from_slice(trace_id) else {
            self.trace_id += 1;
            return None;
        };
        if SpanId::from_slice(span_id).is_none() {
            self.span_id += 1;
            return None;
        }
        if !parent_span_id.is_empty() && parent_span_id.len() != 8 {
            self.parent_id += 1;
            return None;
        }
        Some(trace_id)
    }

    fn total(&self) -> usize {
        self.trace_id + self.span_id + self.parent_id
    }

    fn message(&self) -> String {
        let mut parts = Vec::new();
        if self.trace_id > 0 {
            parts.push(format!("{} with an invalid trace ID (must be 16 bytes, not all zero)", self.trace_id));
        }
        if self.span_id > 0 {
            parts.push(format!("{} with an invalid span ID (must be 8 bytes, not all zero)", self.span_id));
        }
        if self.parent_id > 0 {
            parts.push(format!("{} with an invalid parent span ID (must be empty or 8 bytes)", self.parent_id));
        }
        if parts.is_empty() { String::new() } else { format!("{} spans rejected: {}", self.total(), parts.join(", ")) }
    }
}

fn field_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_field(buf: &mut Vec<u8>, tag: u32, body: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body.len() as u64, buf);
    buf.extend_from_slice(body);
}

/// Spans taken out of a request by [`retain_valid`].
#[derive(Debug, Default, PartialEq)]
pub struct Retained {
    pub kept: usize,
    pub rejected: usize,
    /// Why, as [`Split::message`] says it; empty when none were.
    pub message: String,
}

/// Drops the spans [`split_request`] would reject, in place, for a process that forwards the
/// request as a whole (the agent) rather than splitting it.
pub fn retain_valid(req: &mut ExportTraceServiceRequest) -> Retained {
    let mut rejections = Rejections::default();
    let mut kept = 0;
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| rejections.check(span).is_some());
            kept += ss.spans.len();
        }
    }
    Retained { kept, rejected: rejections.total(), message: rejections.message() }
}

/// Validates every span and groups the good ones by trace. Never fails: bad spans are
/// counted and described, good ones kept.
pub fn split_request(req: &ExportTraceServiceRequest) -> Split {
    let mut rejections = Rejections::default();
    let mut out = Split::default();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map(|r| r.encode_to_vec());
        let encoded: Vec<Option<Vec<u8>>> =
            rs.scope_spans.iter().map(|ss| ss.scope.as_ref().map(|s| s.encode_to_vec())).collect();
        let scopes: Vec<(Option<&[u8]>, &[u8])> =
            rs.scope_spans.iter().zip(&encoded).map(|(ss, e)| (e.as_deref(), ss.schema_url.as_bytes())).collect();
        let mut spans = Vec::new();
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for span in &ss.spans {
                if let Some(trace_id) = rejections.check(span) {
                    // Measured once: measuring walks every attribute.
                    spans.push((trace_id, si, Encoded(span, span.encoded_len())));
                }
            }
        }
        cut(resource.as_deref(), &scopes, rs.schema_url.as_bytes(), spans, &mut out);
    }
    out.rejected_spans = rejections.total();
    out.message = rejections.message();
    out
}

/// [`split_request`] for a request nothing has changed since it arrived: the spans, resources
/// and scopes are copied from its protobuf `body` as they came instead of being encoded again
/// (which walked every attribute of every span). `None` when the body has what only a decode
/// handles (a resource or scope given twice, which protobuf merges); then split the decoded
/// request. The body must be the one the request was decoded from.
pub fn split_encoded(body: &[u8]) -> Option<Split> {
    let mut rejections = Rejections::default();
    let mut out = Split::default();
    let mut r = Reader(body);
    while let Some((tag, wire)) = r.key().ok()? {
        if (tag, wire) != (1, LEN) {
            r.skip(wire).ok()?;
            continue;
        }
        let (mut resource, mut scope_spans, mut schema_url) = (None, Vec::new(), &[][..]);
        let mut m = Reader(r.bytes().ok()?);
        while let Some((tag, wire)) = m.key().ok()? {
            match (tag, wire) {
                (1, LEN) if resource.is_none() => resource = Some(m.bytes().ok()?),
                (1, _) => return None,
                (2, LEN) => scope_spans.push(m.bytes().ok()?),
                (3, LEN) => schema_url = m.bytes().ok()?,
                _ => m.skip(wire).ok()?,
            }
        }
        let mut scopes = Vec::with_capacity(scope_spans.len());
        let mut spans = Vec::new();
        for (si, ss) in scope_spans.into_iter().enumerate() {
            let (mut scope, mut url) = (None, &[][..]);
            let mut m = Reader(ss);
            while let Some((tag, wire)) = m.key().ok()? {
                match (tag, wire) {
                    (1, LEN) if scope.is_none() => scope = Some(m.bytes().ok()?),
                    (1, _) => return None,
                    (2, LEN) => {
                        let span = m.bytes().ok()?;
                        let (t, s, p) = span_ids(span)?;
                        if let Some(trace_id) = rejections.check_ids(t, s, p) {
                            spans.push((trace_id, si, span));
                        }
                    }
                    (3, LEN) => url = m.bytes().ok()?,
                    _ => m.skip(wire).ok()?,
                }
            }
            scopes.push((scope, url));
        }
        cut(resource, &scopes, schema_url, spans, &mut out);
    }
    out.rejected_spans = rejections.total();
    out.message = rejections.message();
    Some(out)
}

/// An encoded span's trace ID, span ID and parent span ID (of a field given twice, the last,
/// as a decode keeps).
fn span_ids(span: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (mut t, mut s, mut p) = (&[][..], &[][..], &[][..]);
    let mut r = Reader(span);
    while let Some((tag, wire)) = r.key().ok()? {
        match (tag, wire) {
            (1, LEN) => t = r.bytes().ok()?,
            (2, LEN) => s = r.bytes().ok()?,
            (4, LEN) => p = r.bytes().ok()?,
            _ => r.skip(wire).ok()?,
        }
    }
    Some((t, s, p))
}

/// A span's encoded form: written from a decoded span, or copied from the request.
trait SpanBytes {
    fn len(&self) -> usize;
    fn put(&self, buf: &mut Vec<u8>);
}

/// A decoded span and its encoded length.
struct Encoded<'a>(&'a Span, usize);

impl SpanBytes for Encoded<'_> {
    fn len(&self) -> usize {
        self.1
    }

    fn put(&self, buf: &mut Vec<u8>) {
        self.0.encode_raw(buf);
    }
}

impl SpanBytes for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self);
    }
}

/// Cuts one `ResourceSpans` into a fragment per trace: its resource, and per run of spans of one
/// scope that scope, each as encoded bytes. `spans` are (trace, scope index, span), valid ones
/// only, in request order; `scopes` are (encoded scope, schema URL) per scope index.
fn cut<S: SpanBytes>(
    resource: Option<&[u8]>,
    scopes: &[(Option<&[u8]>, &[u8])],
    schema_url: &[u8],
    spans: Vec<(TraceId, usize, S)>,
    out: &mut Split,
) {
    let mut traces: Vec<(TraceId, Vec<(usize, S)>)> = Vec::new();
    let mut index = std::collections::HashMap::<TraceId, usize, ahash::RandomState>::default();
    for (trace_id, si, span) in spans {
        let slot = *index.entry(trace_id).or_insert_with(|| {
            traces.push((trace_id, Vec::new()));
            traces.len() - 1
        });
        traces[slot].1.push((si, span));
        out.accepted_spans += 1;
    }
    for (trace_id, spans) in traces {
        // Sized up front: growing the buffer span by span copied it over and over.
        let spans_len: usize = spans.iter().map(|(_, s)| s.len() + 6).sum();
        let scopes_len: usize = scopes.iter().map(|(s, url)| s.map_or(8, |s| s.len() + 8) + url.len()).sum();
        let resource_len = resource.map_or(0, |r| r.len() + 6);
        let mut buf = Vec::with_capacity(resource_len + scopes_len + spans_len + schema_url.len() + 8);
        if let Some(r) = resource {
            put_field(&mut buf, 1, r);
        }
        let mut i = 0;
        while i < spans.len() {
            let si = spans[i].0;
            let run = spans[i..].iter().take_while(|(s, _)| *s == si).count();
            let (scope, url) = scopes[si];
            let mut len = scope.map_or(0, |s| field_len(1, s.len()));
            len += spans[i..i + run].iter().map(|(_, s)| field_len(2, s.len())).sum::<usize>();
            if !url.is_empty() {
                len += field_len(3, url.len());
            }
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(len as u64, &mut buf);
            if let Some(s) = scope {
                put_field(&mut buf, 1, s);
            }
            for (_, span) in &spans[i..i + run] {
                encode_key(2, WireType::LengthDelimited, &mut buf);
                encode_varint(span.len() as u64, &mut buf);
                span.put(&mut buf);
            }
            if !url.is_empty() {
                put_field(&mut buf, 3, url);
            }
            i += run;
        }
        if !schema_url.is_empty() {
            put_field(&mut buf, 3, schema_url);
        }
        out.fragments.push(Fragment { trace_id, spans: spans.len() as u32, bytes: Bytes::from(buf) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::*;

    fn span(trace: u8, id: u8) -> Span {
        Span { trace_id: vec![trace; 16], span_id: vec![id; 8], name: format!("s{id}"), ..Default::default() }
    }

    #[test]
    fn splits_by_trace_and_rejects_bad_ids() {
        let mut bad_parent = span(1, 9);
        bad_parent.parent_span_id = vec![1; 3];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![], dropped_attributes_count: 1 }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope { name: "a".into(), ..Default::default() }),
                        spans: vec![span(1, 1), span(2, 2), span(0, 3)],
                        schema_url: "u".into(),
                    },
                    ScopeSpans {
                        scope: None,
                        spans: vec![span(1, 4), span(1, 0), bad_parent, Span { trace_id: vec![1; 15], ..span(1, 5) }],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "rs".into(),
            }],
        };
        let split = split_request(&req);
        assert_eq!(split.accepted_spans, 3);
        assert_eq!(split.rejected_spans, 4);
        assert!(split.message.starts_with("4 spans rejected: 2 with an invalid trace ID"), "{}", split.message);
        assert_eq!(split.fragments.len(), 2);
        let f = ResourceSpans::decode(split.fragments[0].bytes.clone()).unwrap();
        assert_eq!(split.fragments[0].trace_id, TraceId([1; 16]));
        assert_eq!(f.schema_url, "rs");
        assert_eq!(f.resource.unwrap().dropped_attributes_count, 1);
        assert_eq!(f.scope_spans.len(), 2);
        assert_eq!(f.scope_spans[0].spans, vec![span(1, 1)]);
        assert_eq!(f.scope_spans[0].schema_url, "u");
        assert_eq!(f.scope_spans[1].scope, None);
        assert_eq!(f.scope_spans[1].spans, vec![span(1, 4)]);
    }

    fn same_split(a: &Split, b: &Split) {
        assert_eq!(a.fragments, b.fragments);
        assert_eq!((a.accepted_spans, a.rejected_spans, &a.message), (b.accepted_spans, b.rejected_spans, &b.message));
    }

    #[test]
    fn an_untouched_body_splits_into_the_same_bytes_as_its_decoded_request() {
        let mut rng = crate::synth::Rng::new(7);
        for traces in [1, 3, 50] {
            let (mut req, _) = crate::synth::build_request(&mut rng, traces, 1_700_000_000_000_000_000);
            // Bad IDs and a second scope without scope or schema URL, among the good spans.
            let good = req.resource_spans[0].scope_spans[0].spans[0].clone();
            let bad = Span { span_id: vec![0; 8], ..good.clone() };
            req.resource_spans[0].scope_spans.push(ScopeSpans {
                scope: None,
                spans: vec![bad, good],
                schema_url: String::new(),
            });
            req.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0".into();
            let body = req.encode_to_vec();
            same_split(&split_encoded(&body).unwrap(), &split_request(&req));
        }
    }

    #[test]
    fn what_only_a_decode_merges_is_left_to_the_decoded_path() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![], dropped_attributes_count: 1 }),
                scope_spans: vec![ScopeSpans { scope: None, spans: vec![span(1, 1)], schema_url: String::new() }],
                schema_url: String::new(),
            }],
        };
        let mut body = req.encode_to_vec();
        assert!(split_encoded(&body).is_some());
        // The resource given twice inside the one ResourceSpans: protobuf merges the two.
        let extra = [0x0a, 0x02, 0x10, 0x02];
        body[1] += extra.len() as u8;
        body.extend_from_slice(&extra);
        assert!(ExportTraceServiceRequest::decode(&body[..]).is_ok());
        assert!(split_encoded(&body).is_none());
        assert!(split_encoded(&[0x0a, 0x05, 0x01]).is_none(), "truncated");
    }
}

/// Version byte of the WAL record layout below.
const RECORD_V1: u8 = 1;
/// Tail-sampling decisions: `[2][tenant len u16][tenant][count u32]{[trace id 16][sampled u8]}`.
const DECISIONS_V1: u8 = 2;

/// A WAL record: spans, or the sampler's decisions about traces whose spans came earlier.
/// Decisions make a replay after a crash keep exactly what was kept before it.
#[derive(Debug, PartialEq)]
pub enum Record {
    Spans { tenant: String, fragments: Vec<Fragment> },
    Decisions { tenant: String, decisions: Vec<(TraceId, bool)> },
}

/// Encodes sampling decisions (trace ID, sampled) as a WAL record payload.
pub fn encode_decisions(tenant: &str, decisions: &[(TraceId, bool)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + tenant.len() + decisions.len() * 17);
    out.push(DECISIONS_V1);
    out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    out.extend_from_slice(tenant.as_bytes());
    out.extend_from_slice(&(decisions.len() as u32).to_le_bytes());
    for (id, sampled) in decisions {
        out.extend_from_slice(&id.0);
        out.push(*sampled as u8);
    }
    out
}

/// Decodes any WAL record payload; `None` when it is not one of ours (or torn).
pub fn decode_any(payload: &[u8]) -> Option<Record> {
    match *payload.first()? {
        RECORD_V1 => decode_record(payload).map(|(tenant, fragments)| Record::Spans { tenant, fragments }),
        DECISIONS_V1 => {
            let mut r = &payload[1..];
            let mut take = |n: usize| -> Option<&[u8]> {
                let (head, tail) = r.split_at_checked(n)?;
                r = tail;
                Some(head)
            };
            let tlen = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            let tenant = std::str::from_utf8(take(tlen)?).ok()?.to_owned();
            let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let mut decisions = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let id = TraceId(take(16)?.try_into().ok()?);
                let sampled = match take(1)? {
                    [0] => false,
                    [1] => true,
                    _ => return None,
                };
                decisions.push((id, sampled));
            }
            r.is_empty().then_some(Record::Decisions { tenant, decisions })
        }
        _ => None,
    }
}

/// Encodes one tenant's accepted fragments as a WAL record payload:
/// `[1][tenant len u16][tenant][count u32]{[trace id 16][spans u32][len u32][bytes]}`.
pub fn encode_record(tenant: &str, fragments: &[Fragment]) -> Vec<u8> {
    let size = 7 + tenant.len() + fragments.iter().map(|f| 24 + f.bytes.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(RECORD_V1);
    out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    out.extend_from_slice(tenant.as_bytes());
    out.extend_from_slice(&(fragments.len() as u32).to_le_bytes());
    for f in fragments {
        out.extend_from_slice(&f.trace_id.0);
        out.extend_from_slice(&f.spans.to_le_bytes());
        out.extend_from_slice(&(f.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&f.bytes);
    }
    out
}

/// Decodes a WAL record payload written by [`encode_record`].
pub fn decode_record(payload: &[u8]) -> Option<(String, Vec<Fragment>)> {
    let mut r = payload;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = r.split_at_checked(n)?;
        r = tail;
        Some(head)
    };
    if take(1)? != [RECORD_V1] {
        return None;
    }
    let tlen = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let tenant = std::str::from_utf8(take(tlen)?).ok()?.to_owned();
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let mut fragments = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let trace_id = TraceId(take(16)?.try_into().ok()?);
        let spans = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let bytes = Bytes::copy_from_slice(take(len)?);
        fragments.push(Fragment { trace_id, spans, bytes });
    }
    Some((tenant, fragments))
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn record_round_trip(tenant in "[a-z0-9-]{0,20}", frags in proptest::collection::vec((any::<[u8; 16]>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..8)) {
            let fragments: Vec<Fragment> = frags.into_iter().map(|(t, s, b)| Fragment { trace_id: TraceId(t), spans: s, bytes: Bytes::from(b) }).collect();
            let payload = encode_record(&tenant, &fragments);
            let (t, f) = decode_record(&payload).unwrap();
            prop_assert_eq!(t, tenant);
            prop_assert_eq!(&f, &fragments);
            // Any strict prefix is refused, never misread.
            if !payload.is_empty() {
                prop_assert!(decode_record(&payload[..payload.len() - 1]).is_none());
            }
        }

        #[test]
        fn decisions_round_trip(tenant in "[a-z0-9-]{0,20}", ds in proptest::collection::vec((any::<[u8; 16]>(), any::<bool>()), 0..8)) {
            let decisions: Vec<(TraceId, bool)> = ds.into_iter().map(|(t, s)| (TraceId(t), s)).collect();
            let payload = encode_decisions(&tenant, &decisions);
            prop_assert_eq!(decode_any(&payload), Some(Record::Decisions { tenant: tenant.clone(), decisions }));
            prop_assert!(decode_any(&payload[..payload.len() - 1]).is_none());
            prop_assert!(decode_record(&payload).is_none());
        }
    }
}
