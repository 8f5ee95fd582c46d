//! Property test: arbitrary traces → block → `TraceIter` and `find_trace` give the same spans,
//! under the normalization documented on `common::normalize`.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use object_store::memory::InMemory;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use spoor_block::{DedicatedColumn, DedicatedPolicy, TraceIter, WriteOptions};
use spoor_model::TraceId;
use spoor_model::otlp::*;

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value;
    let leaf = prop_oneof![
        Just(None),
        ".{0,6}".prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        any::<f64>().prop_map(|d| Some(Value::DoubleValue(d))),
        vec(any::<u8>(), 0..5).prop_map(|b| Some(Value::BytesValue(b))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3)
                .prop_map(|values| AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values })) }),
            vec((key(), proptest::option::of(inner)), 0..3).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
                })),
            }),
        ]
    })
}

/// Few keys, so dedicated columns get chosen and meet values of other types and repeats.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("http.route".to_string()),
        Just("service.name".to_string()),
        Just("k".to_string()),
        Just("n".to_string()),
        Just(String::new()),
        "[a-z.]{1,8}",
    ]
}

fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
    vec((key(), proptest::option::of(any_value())), 0..4)
        .prop_map(|kvs| kvs.into_iter().map(|(key, value)| KeyValue { key, value }).collect())
}

/// Span IDs from a small pool so duplicates, shared IDs of different kinds and parents in
/// the trace are common; now and then an ID of another length.
fn span_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![8 => (1u8..7).prop_map(|b| vec![b; 8]), 1 => vec(any::<u8>(), 0..10)]
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 1000u64..1010, 1 => any::<u64>()]
}

fn span(trace_id: [u8; 16]) -> impl Strategy<Value = Span> {
    let event = (time(), ".{0,4}", attrs(), any::<u32>()).prop_map(|(t, name, attributes, dropped)| Event {
        time_unix_nano: t,
        name,
        attributes,
        dropped_attributes_count: dropped,
    });
    let link = (vec(any::<u8>(), 0..17), span_id(), ".{0,3}", attrs(), any::<u32>(), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, dropped, flags)| Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count: dropped,
            flags,
        },
    );
    let ids = (span_id(), prop_oneof![Just(Vec::new()), span_id()], ".{0,3}", any::<u32>());
    let body = (".{0,5}", 0i32..7, time(), time(), attrs(), any::<u32>());
    let rest = (
        vec(event, 0..3),
        any::<u32>(),
        vec(link, 0..2),
        any::<u32>(),
        proptest::option::of((".{0,3}", -1i32..4).prop_map(|(message, code)| Status { message, code })),
    );
    (ids, body, rest).prop_map(
        move |(
            (span_id, parent_span_id, trace_state, flags),
            (name, kind, start, end, attributes, dropped_attributes_count),
            (events, dropped_events_count, links, dropped_links_count, status),
        )| Span {
            trace_id: trace_id.to_vec(),
            span_id,
            trace_state,
            parent_span_id,
            flags,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
        },
    )
}

fn fragment(trace_id: [u8; 16]) -> impl Strategy<Value = Bytes> {
    let scope = proptest::option::of((".{0,3}", ".{0,3}", attrs(), any::<u32>()).prop_map(
        |(name, version, attributes, dropped)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count: dropped,
        },
    ));
    let scope_spans = (scope, vec(span(trace_id), 1..5), ".{0,2}").prop_map(|(scope, spans, schema_url)| ScopeSpans {
        scope,
        spans,
        schema_url,
    });
    let resource = proptest::option::of(
        (attrs(), any::<u32>())
            .prop_map(|(attributes, dropped)| Resource { attributes, dropped_attributes_count: dropped }),
    );
    (resource, vec(scope_spans, 1..3), ".{0,2}").prop_map(|(resource, scope_spans, schema_url)| {
        Bytes::from(ResourceSpans { resource, scope_spans, schema_url }.encode_to_vec())
    })
}

fn traces() -> impl Strategy<Value = Traces> {
    proptest::collection::btree_set(any::<[u8; 16]>(), 1..6).prop_flat_map(|ids| {
        ids.into_iter()
            .map(|id| vec(fragment(id), 1..4).prop_map(move |fragments| (TraceId(id), fragments)))
            .collect::<Vec<_>>()
    })
}

fn options() -> impl Strategy<Value = WriteOptions> {
    let fixed = DedicatedPolicy::Fixed(vec![
        DedicatedColumn {
            scope: "span".into(),
            key: "http.route".into(),
            kind: "string".into(),
            column: String::new(),
        },
        DedicatedColumn { scope: "span".into(), key: "k".into(), kind: "int".into(), column: String::new() },
        DedicatedColumn { scope: "resource".into(), key: "n".into(), kind: "string".into(), column: String::new() },
    ]);
    let from_data = DedicatedPolicy::FromData { min_share: 0.1, max_span: 3, max_resource: 2, sample_spans: 6 };
    (prop_oneof![Just(fixed), Just(from_data)], 1usize..12, 1usize..6).prop_map(|(dedicated, rg, page)| WriteOptions {
        row_group_spans: rg,
        page_rows: page,
        dedicated,
        ..WriteOptions::default()
    })
}

proptest! {
    #[test]
    fn traces_round_trip(traces in traces(), options in options()) {
        let block = write(&traces, &options);
        let spans: usize = traces.iter().map(|(id, f)| normalize(*id, f).len()).sum();
        prop_assert_eq!(block.meta.spans as usize, spans);
        prop_assert_eq!(block.meta.traces as usize, traces.len());

        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut tmp, &block.data).unwrap();
        let scanned: Vec<_> = TraceIter::open(tmp.reopen().unwrap()).unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(scanned.len(), traces.len());
        for ((id, fragments), (got_id, got)) in traces.iter().zip(&scanned) {
            prop_assert_eq!(id, got_id);
            let (want, have) = (normalize(*id, fragments), normalize(*id, &common::encoded(got)));
            prop_assert!(want == have, "scan of {id}:\nwant {:#?}\nhave {:#?}", describe(&want), describe(&have));
        }

        // Written again from the scan without encoding (as compaction does): the same block.
        let mut again = Vec::new();
        let mut w = spoor_block::BlockWriter::new(&mut again, "tenant", "again", &options).unwrap();
        for (id, groups) in scanned {
            w.push_decoded(id, groups).unwrap();
        }
        let finished = w.finish().unwrap();
        prop_assert_eq!(finished.meta.spans, block.meta.spans);
        prop_assert_eq!(&finished.meta.keys, &block.meta.keys);
        prop_assert_eq!(&finished.meta.dedicated_columns, &block.meta.dedicated_columns);
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut tmp, &again).unwrap();
        let rescanned: Vec<_> = TraceIter::open(tmp.reopen().unwrap()).unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(rescanned.len(), traces.len());
        for ((id, fragments), (got_id, got)) in traces.iter().zip(&rescanned) {
            prop_assert_eq!(id, got_id);
            let (want, have) = (normalize(*id, fragments), normalize(*id, &common::encoded(got)));
            prop_assert!(want == have, "rewrite of {id}:\nwant {:#?}\nhave {:#?}", describe(&want), describe(&have));
        }

        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let reader = upload(Arc::new(InMemory::new()), &block).await;
            for (id, fragments) in &traces {
                let got = reader.find_trace(id).await.unwrap();
                let (want, have) = (normalize(*id, fragments), normalize(*id, &got));
                prop_assert!(want == have, "find {id}:\nwant {:#?}\nhave {:#?}", describe(&want), describe(&have));
            }
            Ok(())
        })?;
    }
}
