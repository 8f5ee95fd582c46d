//! Spans per second through the metrics generator (`Generator::observe`) on synthetic
//! load-generator traffic: span metrics alone, the service graph alone, and both (the default).
//! The series exist after the first iteration, so this measures the steady state: a key built
//! and looked up per span, a histogram observed, and half-edges paired.
//!
//! `cargo bench -p spoor-generate --bench generate`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spoor_generate::{Generator, GeneratorConfig};
use spoor_model::synth::{Rng, build_request};

fn bench(c: &mut Criterion) {
    let now = 1_700_000_000_000_000_000;
    // ~100 traces of 10–30 spans: a typical large OTLP request.
    let (req, _) = build_request(&mut Rng::new(42), 100, now);
    let spans: u64 = req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum();
    let mut group = c.benchmark_group("generator");
    group.throughput(Throughput::Elements(spans));
    for (name, processors) in [
        ("span-metrics", vec!["span-metrics"]),
        ("service-graphs", vec!["service-graphs"]),
        ("both", vec!["span-metrics", "service-graphs"]),
    ] {
        let config = GeneratorConfig::<()> {
            processors: processors.into_iter().map(String::from).collect(),
            ..GeneratorConfig::default()
        };
        let g = Generator::new(&config).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                g.observe("t", &req, now);
                // Expires unpaired halves (the same trace IDs come every iteration); series stay.
                g.tick(now + 60_000_000_000);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
