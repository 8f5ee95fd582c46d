//! Tail sampling throughput: offer + tick for realistic traces under the ADR policy
//! (errors, slow traces, 10 % of the rest), and under a policy that never decodes.
//!
//! `cargo bench -p spoor-process --bench sample`

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use spoor_model::otlp::{AnyValue, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status, any_value::Value};
use spoor_model::{Fragment, TraceId};
use spoor_process::sample::{Sampler, TailSamplingConfig};

const TRACES: u64 = 2000;
const SPANS_PER_FRAGMENT: u64 = 5;
const FRAGMENTS_PER_TRACE: u64 = 2;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

/// Fragments of `TRACES` traces, interleaved as they would arrive.
fn workload() -> Vec<Fragment> {
    let mut out = Vec::new();
    for part in 0..FRAGMENTS_PER_TRACE {
        for n in 0..TRACES {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            id[8..].copy_from_slice(&n.to_le_bytes());
            let spans: Vec<Span> = (0..SPANS_PER_FRAGMENT)
                .map(|i| Span {
                    trace_id: id.to_vec(),
                    span_id: (part * 100 + i + 1).to_le_bytes().to_vec(),
                    name: "GET /api/orders".into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000 + i * 1_000_000,
                    end_time_unix_nano: 1_700_000_000_000_000_000 + i * 1_000_000 + 500_000,
                    attributes: vec![
                        kv("http.request.method", Value::StringValue("GET".into())),
                        kv("http.response.status_code", Value::IntValue(200)),
                        kv("url.path", Value::StringValue("/api/orders/12345".into())),
                    ],
                    status: Some(Status { message: String::new(), code: if n % 50 == 0 { 2 } else { 0 } }),
                    ..Default::default()
                })
                .collect();
            let rs = ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue(format!("svc-{part}")))],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans { scope: None, spans, schema_url: String::new() }],
                schema_url: String::new(),
            };
            out.push(Fragment {
                trace_id: TraceId(id),
                spans: SPANS_PER_FRAGMENT as u32,
                bytes: Bytes::from(rs.encode_to_vec()),
            });
        }
    }
    out
}

const ADR: &str = "decision_wait: 1s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 1000}}
  - {name: baseline, type: probabilistic, probabilistic: {sampling_percentage: 10}}
";

const NO_DECODE: &str = "decision_wait: 1s
policies:
  - {name: baseline, type: probabilistic, probabilistic: {sampling_percentage: 10}}
  - {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 100000}}
";

fn run(c: &mut Criterion) {
    let fragments = workload();
    let mut group = c.benchmark_group("sample");
    group.throughput(Throughput::Elements(TRACES * FRAGMENTS_PER_TRACE * SPANS_PER_FRAGMENT));
    for (name, yaml) in [("adr", ADR), ("no_decode", NO_DECODE)] {
        let cfg: TailSamplingConfig = serde_saphyr::from_str(yaml).unwrap();
        group.bench_function(format!("offer_and_tick/{name}"), |b| {
            b.iter_batched(
                || (Sampler::new(&cfg).unwrap(), fragments.clone()),
                |(mut sampler, fragments)| {
                    // Arrivals spread over 1 s, ticks every 100 ms, as the server does.
                    let per_ms = fragments.len() / 1000 + 1;
                    let mut decided = 0;
                    for (i, f) in fragments.into_iter().enumerate() {
                        let now = (i / per_ms) as u64;
                        if i % (per_ms * 100) == 0 {
                            decided += sampler.tick(now).len();
                        }
                        sampler.offer(now, "bench", f, now / 100);
                    }
                    decided += sampler.tick(10_000).len();
                    assert_eq!(decided as u64, TRACES);
                    sampler
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, run);
criterion_main!(benches);
