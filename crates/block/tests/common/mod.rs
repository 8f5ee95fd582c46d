//! Helpers shared by the block tests: synthetic corpora, stores, and the normalization under
//! which a trace read back from a block equals the trace written.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;
use spoor_block::{BlockMeta, BlockReader, BlockWriter, WriteOptions};
use spoor_model::TraceId;
use spoor_model::otlp::{AnyValue, KeyValue, Resource, ResourceSpans, ScopeSpans, Span};
use spoor_model::synth::{Rng, build_request};

pub type Traces = Vec<(TraceId, Vec<Bytes>)>;

/// `traces` synthetic traces as the head holds them at cut time, in trace-ID order.
pub fn synth(traces: usize, seed: u64) -> Traces {
    let mut rng = Rng::new(seed);
    let mut now = 1_700_000_000_000_000_000u64;
    let mut out: BTreeMap<TraceId, Vec<Bytes>> = BTreeMap::new();
    let mut left = traces;
    while left > 0 {
        let n = left.min(10);
        let (req, ids) = build_request(&mut rng, n, now);
        now += ids.len() as u64 * 10_000;
        for f in spoor_model::split_request(&req).fragments {
            out.entry(f.trace_id).or_default().push(f.bytes);
        }
        left -= n;
    }
    out.into_iter().collect()
}

pub struct Written {
    pub data: Vec<u8>,
    pub filter: Vec<u8>,
    pub meta: BlockMeta,
}

pub fn write(traces: &Traces, options: &WriteOptions) -> Written {
    let mut data = Vec::new();
    let mut w = BlockWriter::new(&mut data, "tenant", "block", options).unwrap();
    for (id, fragments) in traces {
        w.push_trace(*id, fragments).unwrap();
    }
    let finished = w.finish().unwrap();
    assert_eq!(finished.meta.data_bytes, data.len() as u64);
    Written { data, filter: finished.filter, meta: finished.meta }
}

pub const DIR: &str = "tenant/block";

/// Uploads a block the way the server does (data, filter, then meta) and opens it.
pub async fn upload(store: Arc<dyn ObjectStore>, block: &Written) -> BlockReader {
    let dir = Path::from(DIR);
    store.put(&dir.clone().join(spoor_block::DATA_FILE), Bytes::from(block.data.clone()).into()).await.unwrap();
    store.put(&dir.clone().join(spoor_block::FILTER_FILE), Bytes::from(block.filter.clone()).into()).await.unwrap();
    let meta = serde_json::to_vec(&block.meta).unwrap();
    store.put(&dir.clone().join(spoor_block::META_FILE), Bytes::from(meta).into()).await.unwrap();
    BlockReader::open(store, dir, block.meta.clone()).await.unwrap()
}

/// The spans of a trace in a canonical form, each as an encoded single-span `ResourceSpans`,
/// sorted by (start, span ID, kind). What a block keeps is exactly this:
/// - duplicates (same span ID and kind) appear once, the first copy (as `assemble` does);
/// - spans are regrouped by resource and scope, so only each span's resource/scope matters,
///   and an absent resource or scope equals an empty one;
/// - span and resource attributes compare as a multiset (dedicated columns move some of them
///   to the front); every other list keeps its order;
/// - an absent status equals status code 0 with an empty message;
/// - every span's `trace_id` is the trace's ID.
///
/// Doubles compare by bits because the encodings are compared, so NaNs are checked too.
/// A scan's decoded `ResourceSpans`, encoded as a lookup returns them.
#[allow(dead_code)]
pub fn encoded(groups: &[spoor_model::otlp::ResourceSpans]) -> Vec<Bytes> {
    groups.iter().map(|g| Bytes::from(prost::Message::encode_to_vec(g))).collect()
}

pub fn normalize(trace_id: TraceId, fragments: &[Bytes]) -> Vec<Vec<u8>> {
    let assembled = spoor_model::trace::assemble(fragments.iter().map(|b| &b[..])).unwrap();
    let mut out = Vec::new();
    for rs in assembled.trace.resource_spans {
        let mut resource = rs.resource.unwrap_or_default();
        norm_attrs(&mut resource.attributes, true);
        for ss in rs.scope_spans {
            let mut scope = ss.scope.unwrap_or_default();
            norm_attrs(&mut scope.attributes, false);
            for mut span in ss.spans {
                norm_span(&mut span, trace_id);
                let key = (span.start_time_unix_nano, span.span_id.clone(), span.kind);
                let one = ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope.clone()),
                        spans: vec![span],
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                };
                out.push((key, one.encode_to_vec()));
            }
        }
    }
    out.sort();
    out.into_iter().map(|(_, b)| b).collect()
}

fn norm_span(span: &mut Span, trace_id: TraceId) {
    span.trace_id = trace_id.0.to_vec();
    norm_attrs(&mut span.attributes, true);
    for e in &mut span.events {
        norm_attrs(&mut e.attributes, false);
    }
    for l in &mut span.links {
        norm_attrs(&mut l.attributes, false);
    }
    if span.status.as_ref().is_some_and(|s| s.code == 0 && s.message.is_empty()) {
        span.status = None;
    }
}

/// An attribute without a value and one with an empty `AnyValue` stay distinct.
fn norm_attrs(attrs: &mut [KeyValue], sort: bool) {
    if sort {
        attrs.sort_by_cached_key(|kv| (kv.key.clone(), kv.value.as_ref().map(AnyValue::encode_to_vec)));
    }
}

/// Decoded form of a normalized trace, for readable assertion messages.
pub fn describe(spans: &[Vec<u8>]) -> Vec<ResourceSpans> {
    spans.iter().map(|b| ResourceSpans::decode(&b[..]).unwrap()).collect()
}

pub fn empty_resource() -> Resource {
    Resource::default()
}
