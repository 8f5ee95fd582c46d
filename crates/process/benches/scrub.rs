//! Spans per second through the default scrubbing policy (`Scrubber::apply`), on synthetic
//! load-generator traffic (nothing to scrub: the common case) and on the same traffic with
//! secrets in every span (headers, e-mails, card numbers, SQL literals, URL credentials).
//!
//! `cargo bench -p spoor-process --bench scrub`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use spoor_model::otlp::{AnyValue, ExportTraceServiceRequest, KeyValue, any_value::Value};
use spoor_model::synth::{Rng, build_request};
use spoor_process::scrub::{ScrubConfig, Scrubber};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }) }
}

fn spans(req: &ExportTraceServiceRequest) -> u64 {
    req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum()
}

fn bench(c: &mut Criterion) {
    let scrubber = Scrubber::new(&ScrubConfig::default()).unwrap();
    // ~100 traces of 10–30 spans, ~11 attributes each: a typical large OTLP request.
    let (clean, _) = build_request(&mut Rng::new(42), 100, 1_700_000_000_000_000_000);
    let mut dirty = clean.clone();
    let mut i = 0u64;
    for rs in &mut dirty.resource_spans {
        for ss in &mut rs.scope_spans {
            for sp in &mut ss.spans {
                i += 1;
                sp.attributes.extend([
                    kv("http.request.header.authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"),
                    kv("user.email", &format!("user{i}@example.com")),
                    kv("payment.note", "charged card 4111 1111 1111 1111 for order 123456"),
                    kv("db.statement", &format!("SELECT * FROM users WHERE id = {i} AND name = 'bob'")),
                    kv("url.full", "https://svc:hunter2@api.example.com/v1/items?access_token=abc&page=2"),
                ]);
            }
        }
    }

    let mut g = c.benchmark_group("scrub");
    for (name, req) in [("synthetic", &clean), ("with_secrets", &dirty)] {
        g.throughput(Throughput::Elements(spans(req)));
        g.bench_function(name, |b| b.iter_batched_ref(|| req.clone(), |r| scrubber.apply(r), BatchSize::LargeInput));
    }
    // The clean request can be scrubbed in place repeatedly (nothing changes), so this one
    // measures the pass alone, without the clone/drop of the batched setup.
    let mut same = clean.clone();
    g.throughput(Throughput::Elements(spans(&same)));
    g.bench_function("synthetic_in_place", |b| b.iter(|| scrubber.apply(&mut same)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
