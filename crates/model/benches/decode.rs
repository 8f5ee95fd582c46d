//! Ingest CPU stages per span: protobuf decode, OTLP/JSON decode, validate + split by trace,
//! WAL record encoding, and trace assembly for a lookup.
//! Run: `cargo bench -p spoor-model --bench decode`.

// The allocator the server runs with: decode cost is mostly allocation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use spoor_model::otlp::ExportTraceServiceRequest;
use spoor_model::synth::{Rng, build_request};
use spoor_model::{encode_record, split_request};

fn request() -> (ExportTraceServiceRequest, u64) {
    // 10 traces per request, as `spoor loadgen` sends by default.
    let (req, ids) = build_request(&mut Rng::new(42), 10, 1_700_000_000_000_000_000);
    (req, ids.len() as u64)
}

fn stages(c: &mut Criterion) {
    let (req, spans) = request();
    let proto = req.encode_to_vec();
    let json = serde_json::to_vec(&otlp_json(&req)).unwrap();
    let split = split_request(&req);
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(spans));
    g.bench_function("decode_protobuf", |b| b.iter(|| ExportTraceServiceRequest::decode(&proto[..]).unwrap()));
    g.bench_function("decode_json", |b| b.iter(|| spoor_model::json::decode_export_request(&json).unwrap()));
    g.bench_function("split_by_trace", |b| b.iter(|| split_request(&req)));
    g.bench_function("encode_wal_record", |b| b.iter(|| encode_record("single-tenant", &split.fragments)));
    g.bench_function("decode_split_record", |b| {
        b.iter(|| {
            let r = ExportTraceServiceRequest::decode(&proto[..]).unwrap();
            let s = split_request(&r);
            encode_record("single-tenant", &s.fragments)
        })
    });
    g.finish();
    let one = &split.fragments[0];
    let mut g = c.benchmark_group("query");
    g.throughput(Throughput::Elements(one.spans as u64));
    g.bench_function("assemble_trace", |b| b.iter(|| spoor_model::trace::assemble([&one.bytes[..]]).unwrap()));
    g.finish();
}

/// OTLP/JSON for the request (hex IDs, as SDKs send it).
fn otlp_json(req: &ExportTraceServiceRequest) -> serde_json::Value {
    let data = spoor_model::otlp::TracesData { resource_spans: req.resource_spans.clone() };
    serde_json::json!({ "resourceSpans": spoor_model::json::trace_to_json(&data, spoor_model::json::IdStyle::Hex) })
}

criterion_group!(benches, stages);
criterion_main!(benches);
