//! Assembling one trace from its fragments: decode, drop duplicate spans, merge fragments that
//! share a resource and scope.

use std::collections::{HashMap, HashSet};

use prost::Message;

use crate::error::Error;
use crate::otlp::{ResourceSpans, ScopeSpans, TracesData};

/// The assembled trace, its span count and the bytes inspected to build it.
pub struct Assembled {
    pub trace: TracesData,
    pub spans: usize,
    pub inspected_bytes: u64,
}

/// Builds a trace from fragments in arrival order. A span seen again with the same span ID and
/// kind (a client retry, a replayed record) appears once: the first copy wins.
pub fn assemble<'a>(fragments: impl IntoIterator<Item = &'a [u8]>) -> Result<Assembled, Error> {
    let mut seen = HashSet::<(Vec<u8>, i32)>::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    // (resource bytes, resource schema) -> index in `out`; (resource index, scope bytes, scope schema) -> scope index
    let mut resources = HashMap::<(Vec<u8>, String), usize>::new();
    let mut scopes = HashMap::<(usize, Vec<u8>, String), usize>::new();
    let mut spans = 0;
    let mut inspected = 0u64;
    for bytes in fragments {
        inspected += bytes.len() as u64;
        let rs = ResourceSpans::decode(bytes)?;
        let rkey = (rs.resource.as_ref().map(identity).unwrap_or_default(), rs.schema_url.clone());
        let ri = *resources.entry(rkey).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: rs.resource.clone(),
                scope_spans: Vec::new(),
                schema_url: rs.schema_url.clone(),
            });
            out.len() - 1
        });
        for ss in rs.scope_spans {
            let skey = (ri, ss.scope.as_ref().map(|s| s.encode_to_vec()).unwrap_or_default(), ss.schema_url.clone());
            let target = &mut out[ri].scope_spans;
            let si = *scopes.entry(skey).or_insert_with(|| {
                target.push(ScopeSpans {
                    scope: ss.scope.clone(),
                    spans: Vec::new(),
                    schema_url: ss.schema_url.clone(),
                });
                target.len() - 1
            });
            for span in ss.spans {
                if seen.insert((span.span_id.clone(), span.kind)) {
                    target[si].spans.push(span);
                    spans += 1;
                }
            }
        }
    }
    // A fragment whose spans were all duplicates leaves an empty scope (and maybe resource).
    for rs in &mut out {
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    out.retain(|rs| !rs.scope_spans.is_empty());
    Ok(Assembled { trace: TracesData { resource_spans: out }, spans, inspected_bytes: inspected })
}

/// What makes two resources the same: their encoding with attributes in key order (blocks do
/// not keep the order the SDK sent them in; attributes are a set to every consumer).
fn identity(r: &crate::otlp::Resource) -> Vec<u8> {
    if r.attributes.is_sorted_by(|a, b| a.key <= b.key) {
        return r.encode_to_vec();
    }
    let mut sorted = r.clone();
    sorted.attributes.sort_by(|a, b| a.key.cmp(&b.key));
    sorted.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::*;
    use crate::split_request;

    #[test]
    fn duplicates_appear_once_and_fragments_merge() {
        let span = |id: u8| Span { trace_id: vec![7; 16], span_id: vec![id; 8], ..Default::default() };
        let req = |ids: &[u8]| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue { key: "k".into(), value: None }],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans { spans: ids.iter().map(|&i| span(i)).collect(), ..Default::default() }],
                schema_url: String::new(),
            }],
        };
        let a = split_request(&req(&[1, 2]));
        let b = split_request(&req(&[2, 3]));
        let t = assemble([&a.fragments[0].bytes[..], &b.fragments[0].bytes[..], &a.fragments[0].bytes[..]]).unwrap();
        assert_eq!(t.spans, 3);
        assert_eq!(t.trace.resource_spans.len(), 1);
        assert_eq!(t.trace.resource_spans[0].scope_spans.len(), 1);
        let ids: Vec<u8> = t.trace.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.span_id[0]).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        // Only duplicates, under the same resource with its attributes in another order: no
        // empty resource or scope appears.
        let mut c = req(&[3]);
        c.resource_spans[0].resource.as_mut().unwrap().attributes.insert(0, KeyValue { key: "a".into(), value: None });
        let mut d = req(&[3]);
        d.resource_spans[0].resource.as_mut().unwrap().attributes.push(KeyValue { key: "a".into(), value: None });
        let (c, d) = (split_request(&c), split_request(&d));
        let t = assemble([&c.fragments[0].bytes[..], &d.fragments[0].bytes[..], &a.fragments[0].bytes[..]]).unwrap();
        assert_eq!(t.spans, 3);
        let shape: Vec<usize> = t.trace.resource_spans.iter().map(|rs| rs.scope_spans[0].spans.len()).collect();
        assert_eq!(shape, vec![1, 2], "c and d merge; a is another resource");
    }
}
