//! Block behaviour on known inputs: nested-set numbers, de-duplication, lookups of absent
//! traces, corrupt files, meta, and lookups through both object store backends.

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use bytes::Bytes;
use common::*;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;
use spoor_block::{BlockMeta, BlockReader, BlockWriter, Error, TraceIter, WriteOptions, new_block_id};
use spoor_model::TraceId;
use spoor_model::otlp::*;

fn span(id: u8, parent: Option<u8>, start: u64) -> Span {
    Span {
        trace_id: vec![9; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("s{id}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 100,
        ..Default::default()
    }
}

fn fragment(spans: Vec<Span>) -> Bytes {
    let rs = ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue("svc".into())) }),
            }],
            dropped_attributes_count: 0,
        }),
        scope_spans: vec![ScopeSpans { scope: None, spans, schema_url: String::new() }],
        schema_url: String::new(),
    };
    Bytes::from(rs.encode_to_vec())
}

fn tmpfile(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, data).unwrap();
    f
}

#[test]
fn nested_set_numbers_follow_start_order_and_mark_orphans() {
    // A ─┬─ C ── D      E (parent 0x58 is not in the trace) ── F
    //    └─ B
    let spans = vec![
        span(b'A', None, 0),
        span(b'B', Some(b'A'), 10),
        span(b'C', Some(b'A'), 5),
        span(b'D', Some(b'C'), 7),
        span(b'E', Some(b'X'), 3),
        span(b'F', Some(b'E'), 4),
    ];
    let block = write(&vec![(TraceId([9; 16]), vec![fragment(spans)])], &WriteOptions::default());
    let batch = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(block.data))
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let ints = |name: &str| batch.column_by_name(name).unwrap().as_primitive::<Int32Type>().values().to_vec();
    let ids: Vec<u8> =
        batch.column_by_name("span_id").unwrap().as_binary::<i32>().iter().map(|v| v.unwrap()[0]).collect();
    assert_eq!(ids, b"AEFCDB", "rows are in start order");
    assert_eq!(ints("nested_left"), [1, 9, 10, 2, 3, 6]);
    assert_eq!(ints("nested_right"), [8, 12, 11, 5, 4, 7]);
    assert_eq!(ints("nested_parent"), [0, -1, 9, 1, 2, 1]);
    let parents = batch.column_by_name("parent_span_id").unwrap().as_binary::<i32>();
    let stored: Vec<Option<&[u8]>> = parents.iter().collect();
    assert_eq!(stored, [None, Some(&[b'X'; 8][..]), None, None, None, None], "only the orphan's parent is stored");
}

#[test]
fn repeated_spans_are_written_once_first_copy_wins() {
    let mut first = span(1, None, 0);
    first.kind = 2;
    let mut retry = first.clone();
    retry.name = "retried".into();
    let mut other_kind = first.clone();
    other_kind.kind = 3;
    let id = TraceId([9; 16]);
    let traces = vec![(id, vec![fragment(vec![first, span(2, Some(1), 5)]), fragment(vec![retry, other_kind])])];
    let block = write(&traces, &WriteOptions::default());
    assert_eq!(block.meta.spans, 3);
    let (_, got) = TraceIter::open(tmpfile(&block.data).reopen().unwrap()).unwrap().next().unwrap().unwrap();
    let got = common::encoded(&got);
    let trace = spoor_model::trace::assemble(got.iter().map(|b| &b[..])).unwrap();
    let spans = &trace.trace.resource_spans[0].scope_spans[0].spans;
    let names: Vec<(&str, i32)> = spans.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(names, [("s1", 2), ("s1", 3), ("s2", 0)]);
    assert_eq!(spans[2].parent_span_id, vec![1; 8]);
}

#[test]
fn traces_must_ascend_and_fragments_must_decode() {
    let mut w = BlockWriter::new(Vec::new(), "t", "b", &WriteOptions::default()).unwrap();
    w.push_trace(TraceId([2; 16]), &[fragment(vec![span(1, None, 0)])]).unwrap();
    let err = w.push_trace(TraceId([2; 16]), &[fragment(vec![span(1, None, 0)])]).unwrap_err();
    assert!(matches!(err, Error::Order { .. }), "{err}");
    let err = w.push_trace(TraceId([1; 16]), &[fragment(vec![span(1, None, 0)])]).unwrap_err();
    assert!(matches!(err, Error::Order { .. }), "{err}");
    let err = w.push_trace(TraceId([3; 16]), &[Bytes::from_static(&[0x0a, 0x05, 1])]).unwrap_err();
    assert!(err.to_string().contains("invalid fragment"), "{err}");
    // The writer is still usable after refusing input.
    w.push_trace(TraceId([4; 16]), &[fragment(vec![span(1, None, 0)])]).unwrap();
    assert_eq!(w.finish().unwrap().meta.traces, 2);
}

#[tokio::test]
async fn empty_block_is_valid() {
    let block = write(&Vec::new(), &WriteOptions::default());
    assert_eq!((block.meta.spans, block.meta.traces, block.meta.row_groups), (0, 0, 0));
    assert_eq!(TraceIter::open(tmpfile(&block.data).reopen().unwrap()).unwrap().count(), 0);
    let reader = upload(Arc::new(InMemory::new()), &block).await;
    assert!(!reader.may_contain(&TraceId([1; 16])));
    assert!(reader.find_trace(&TraceId([1; 16])).await.unwrap().is_empty());
}

#[tokio::test]
async fn find_trace_on_local_filesystem_and_in_memory() {
    let traces = synth(3000, 11);
    let options = WriteOptions { row_group_spans: 10_000, page_rows: 500, ..WriteOptions::default() };
    let block = write(&traces, &options);
    assert!(block.meta.row_groups > 3, "several row groups: {}", block.meta.row_groups);
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    for reader in [upload(local, &block).await, upload(Arc::new(InMemory::new()), &block).await] {
        for (id, fragments) in traces.iter().step_by(97).chain(traces.last()) {
            assert!(reader.may_contain(id));
            let got = reader.find_trace(id).await.unwrap();
            assert_eq!(normalize(*id, &got), normalize(*id, fragments), "trace {id}");
            // One fragment per resource; the load generator sends one scope per resource.
            let services = spoor_model::trace::assemble(fragments.iter().map(|b| &b[..])).unwrap();
            assert_eq!(got.len(), services.trace.resource_spans.len());
        }
    }
}

#[tokio::test]
async fn a_lookup_fetches_only_the_pages_that_can_hold_the_trace() {
    let traces = synth(3000, 18);
    let block = write(&traces, &WriteOptions { row_group_spans: 10_000, page_rows: 500, ..WriteOptions::default() });
    let reader = upload(Arc::new(InMemory::new()), &block).await;
    assert!(!reader.find_trace(&traces[10].0).await.unwrap().is_empty());
    let footer_and_first = reader.bytes_fetched();
    let (id, fragments) = &traces[2000];
    let got = reader.find_trace(id).await.unwrap();
    assert_eq!(normalize(*id, &got), normalize(*id, fragments));
    let fetched = reader.bytes_fetched() - footer_and_first;
    // About one 500-row page per column (plus dictionary pages) out of a 60K-span file.
    assert!(fetched * 20 < block.meta.data_bytes, "fetched {fetched} of {} bytes", block.meta.data_bytes);
    // An ID the filter rules out costs no read at all.
    let absent = TraceId([0xee; 16]);
    if !reader.may_contain(&absent) {
        let before = reader.bytes_fetched();
        assert!(reader.find_trace(&absent).await.unwrap().is_empty());
        assert_eq!(reader.bytes_fetched(), before);
    }
}

#[tokio::test]
async fn absent_traces_are_empty_whether_or_not_the_filter_says_so() {
    let traces = synth(2000, 12);
    let block = write(&traces, &WriteOptions { page_rows: 500, ..WriteOptions::default() });
    let reader = upload(Arc::new(InMemory::new()), &block).await;
    let present: std::collections::HashSet<TraceId> = traces.iter().map(|(id, _)| *id).collect();
    let mut rng = spoor_model::synth::Rng::new(5);
    let (mut negatives, mut false_positives) = (0, 0);
    while false_positives < 3 {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let id = TraceId(id);
        if present.contains(&id) {
            continue;
        }
        if reader.may_contain(&id) {
            false_positives += 1;
        } else {
            negatives += 1;
        }
        assert!(reader.find_trace(&id).await.unwrap().is_empty());
    }
    // Binary fuse 8: about 0.4% false positives; the budget is 1%.
    assert!(false_positives * 100 <= (negatives + false_positives), "{false_positives} of {negatives}");
}

#[test]
fn filter_false_positive_rate_is_under_one_percent() {
    let traces = synth(20_000, 13);
    let block = write(&traces, &WriteOptions::default());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let reader = rt.block_on(upload(Arc::new(InMemory::new()), &block));
    assert!(traces.iter().all(|(id, _)| reader.may_contain(id)), "no false negatives");
    let mut rng = spoor_model::synth::Rng::new(99);
    let probes = 200_000;
    let hits = (0..probes)
        .filter(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            reader.may_contain(&TraceId(id))
        })
        .count();
    assert!(hits * 100 < probes, "false positive rate {:.3}%", hits as f64 * 100.0 / probes as f64);
    // The trace-ID part (the value index follows it): fingerprints at bytes 26..30.
    let fingerprints = u32::from_le_bytes(block.filter[26..30].try_into().unwrap()) as u64;
    assert!(fingerprints < 2 * block.meta.traces, "about 9 bits per trace");
}

#[test]
fn scan_returns_every_trace_in_order() {
    // Batches of 4096 rows cut through traces: the iterator must join them.
    let traces = synth(1500, 14);
    let block = write(&traces, &WriteOptions { row_group_spans: 7000, ..WriteOptions::default() });
    let scanned: Vec<_> =
        TraceIter::open(tmpfile(&block.data).reopen().unwrap()).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(scanned.len(), traces.len());
    for ((id, fragments), (got_id, got)) in traces.iter().zip(&scanned) {
        assert_eq!(id, got_id);
        assert_eq!(normalize(*id, &common::encoded(got)), normalize(*id, fragments), "trace {id}");
    }
}

#[test]
fn dedicated_columns_are_chosen_from_the_data() {
    let block = write(&synth(500, 15), &WriteOptions::default());
    let columns: Vec<&str> = block.meta.dedicated_columns.iter().map(|d| d.column.as_str()).collect();
    for want in ["service_name", "span.http.route", "span.http.response.status_code", "resource.k8s.namespace.name"] {
        assert!(columns.contains(&want), "{want} not in {columns:?}");
    }
    // Doubles and booleans stay in the generic list.
    assert!(!columns.contains(&"span.sample.ratio") && !columns.contains(&"span.cache.hit"));
    let status = block.meta.dedicated_columns.iter().find(|d| d.key == "http.response.status_code").unwrap();
    assert_eq!((status.scope.as_str(), status.kind.as_str()), ("span", "int"));
    assert!(block.meta.columns.iter().any(|c| c.name == "span.http.route" && c.compressed_bytes > 0));
}

#[tokio::test]
async fn corrupt_or_truncated_files_are_errors_not_panics() {
    let traces = synth(300, 16);
    let block = write(&traces, &WriteOptions { page_rows: 200, ..WriteOptions::default() });
    let (id, _) = &traces[150];
    let len = block.data.len();
    for cut in [0, 4, 8, len / 3, len / 2, len - 9, len - 8, len - 1] {
        let truncated = Written {
            data: block.data[..cut].to_vec(),
            filter: block.filter.clone(),
            meta: BlockMeta { data_bytes: cut as u64, ..block.meta.clone() },
        };
        let reader = upload(Arc::new(InMemory::new()), &truncated).await;
        assert!(reader.find_trace(id).await.is_err(), "cut at {cut}");
        let scan = TraceIter::open(tmpfile(&truncated.data).reopen().unwrap());
        assert!(scan.is_err() || scan.unwrap().any(|t| t.is_err()), "cut at {cut}");
    }
    // Flipped bytes anywhere: an error or (when the damage is in values) wrong data, never a panic.
    let mut rng = spoor_model::synth::Rng::new(3);
    for _ in 0..std::env::var("SPOOR_FLIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100) {
        let mut data = block.data.clone();
        let at = rng.below(len as u64) as usize;
        data[at] ^= 1 << rng.below(8);
        let damaged = Written { data, filter: block.filter.clone(), meta: block.meta.clone() };
        let reader = upload(Arc::new(InMemory::new()), &damaged).await;
        let _ = reader.find_trace(id).await;
        if let Ok(scan) = TraceIter::open(tmpfile(&damaged.data).reopen().unwrap()) {
            for t in scan {
                let _ = t;
            }
        }
    }
    // A damaged trace-ID filter refuses to open (a damaged value index after it is dropped,
    // see `tests/index.rs`).
    let store = Arc::new(InMemory::new());
    upload(store.clone(), &block).await;
    let trace_part = 30 + u32::from_le_bytes(block.filter[26..30].try_into().unwrap()) as usize;
    for bad in [&block.filter[..3], &block.filter[..trace_part - 1], b"SPFL\x09\x01"] {
        let path = object_store::path::Path::from(format!("{DIR}/{}", spoor_block::FILTER_FILE));
        object_store::ObjectStoreExt::put(&*store, &path, Bytes::copy_from_slice(bad).into()).await.unwrap();
        let opened = BlockReader::open(store.clone(), DIR.into(), block.meta.clone()).await;
        assert!(matches!(opened, Err(Error::Filter(_))), "{:?}", opened.err());
    }
}

#[test]
fn meta_round_trips_through_json_and_tolerates_new_fields() {
    let block = write(&synth(50, 17), &WriteOptions::default());
    let mut meta = block.meta.clone();
    meta.compaction_level = 2;
    meta.replaces = vec![new_block_id(), new_block_id()];
    let json = serde_json::to_string(&meta).unwrap();
    assert_eq!(serde_json::from_str::<BlockMeta>(&json).unwrap(), meta);
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value.as_object_mut().unwrap().remove("replaces");
    value.as_object_mut().unwrap().insert("added_later".into(), serde_json::json!({"x": 1}));
    let older = serde_json::from_value::<BlockMeta>(value).unwrap();
    assert!(older.replaces.is_empty());
    assert_eq!(meta.format, spoor_block::FORMAT);
    assert_eq!(meta.data_bytes, block.data.len() as u64);
    assert_eq!((meta.tenant.as_str(), meta.block_id.as_str()), ("tenant", "block"));
    assert!(meta.start_unix_nano < meta.end_unix_nano && meta.spans > 50 * 10);
}

#[test]
fn block_ids_are_uuid_v7_and_sort_by_time() {
    let a = new_block_id();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let b = new_block_id();
    assert!(a < b, "{a} {b}");
    for id in [&a, &b] {
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        assert!(parts[2].starts_with('7'), "version 7: {id}");
        assert!("89ab".contains(&parts[3][..1]), "variant: {id}");
    }
    assert_ne!(new_block_id(), new_block_id());
}
