//! Prefilter throughput (rows/s) over a block of synthetic spans (`spoor_model::synth`), read
//! back from Parquet once with plain and once with dictionary-encoded strings: the per-row
//! work every search does before it reads whole traces. Plus one full evaluation for scale.
//! Run: `cargo bench -p spoor-query --bench eval`; `SPOOR_BENCH_SPANS` sets the corpus size
//! (default 1000000).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spoor_query::Plan;

mod corpus;
use corpus::{block, read};

fn bench(c: &mut Criterion) {
    let spans = std::env::var("SPOOR_BENCH_SPANS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let data = block(spans);
    let queries = [
        ("name =", r#"{ name = "render page" }"#),
        ("dedicated =", r#"{ span.http.request.method = "POST" }"#),
        ("generic =", r#"{ span.user.id = "user-42" }"#),
        ("regex", r#"{ name =~ "GET .*" }"#),
        ("duration range", "{ duration > 10ms && duration < 20ms }"),
    ];
    for dictionaries in [false, true] {
        let strings = if dictionaries { "dictionary" } else { "plain" };
        let full = read(&data, dictionaries);
        let mut group = c.benchmark_group(format!("prefilter/{strings}"));
        group.throughput(Throughput::Elements(full.num_rows() as u64));
        group.sample_size(20);
        for (name, query) in queries {
            let plan = Plan::new(&spoor_traceql::parse(query).unwrap()).unwrap();
            let schema = full.schema();
            let columns = plan.prefilter_columns(&schema).unwrap();
            let indices: Vec<usize> = columns.iter().map(|c| schema.index_of(c).unwrap()).collect();
            let batch = full.project(&indices).unwrap();
            let kept = plan.prefilter(&batch).unwrap().true_count();
            println!("{strings} {name}: {kept} of {} rows", batch.num_rows());
            group.bench_function(name, |b| b.iter(|| plan.prefilter(&batch).unwrap()));
        }
        group.finish();
    }
    // Every trace is a candidate: the upper bound of the second phase.
    let full = read(&data, false);
    let plan = Plan::new(&spoor_traceql::parse("{ status = error } | by(resource.service.name)").unwrap()).unwrap();
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(full.num_rows() as u64));
    group.sample_size(10);
    group.bench_function("all traces", |b| b.iter(|| plan.evaluate(&full, 3).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
