//! Prefilter throughput (rows/s) over a block of synthetic spans (`spoor_model::synth`), read
//! back from Parquet once with plain and once with dictionary-encoded strings: the per-row
//! work every search does before it reads whole traces. Plus one full evaluation for scale.
//! Run: `cargo bench -p spoor-query --bench eval`; `SPOOR_BENCH_SPANS` sets the corpus size
//! (default 1000000).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, Schema};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use spoor_block::{BlockWriter, DedicatedColumn, DedicatedPolicy, WriteOptions};
use spoor_model::TraceId;
use spoor_model::synth::{Rng, build_request};
use spoor_query::Plan;

/// A block as the writer makes it, with `http.request.method` dedicated and `user.id` left in
/// the generic attribute list.
fn block(spans: usize) -> Bytes {
    let mut rng = Rng::new(42);
    let mut now = 1_700_000_000_000_000_000u64;
    let mut traces: BTreeMap<TraceId, Vec<Bytes>> = BTreeMap::new();
    let mut total = 0;
    while total < spans {
        let (req, ids) = build_request(&mut rng, 10, now);
        total += ids.len();
        now += ids.len() as u64 * 10_000;
        for f in spoor_model::split_request(&req).fragments {
            traces.entry(f.trace_id).or_default().push(f.bytes);
        }
    }
    let dedicated = [("http.request.method", "string"), ("http.route", "string"), ("http.response.status_code", "int")]
        .iter()
        .map(|(key, kind)| DedicatedColumn {
            scope: "span".into(),
            key: key.to_string(),
            kind: kind.to_string(),
            column: String::new(),
        })
        .collect();
    let options = WriteOptions { dedicated: DedicatedPolicy::Fixed(dedicated), ..Default::default() };
    let mut out = Vec::new();
    let mut w = BlockWriter::new(&mut out, "bench", "block", &options).unwrap();
    for (id, fragments) in &traces {
        w.push_trace(*id, fragments).unwrap();
    }
    w.finish().unwrap();
    Bytes::from(out)
}

fn dictionary_field(f: &Field) -> Field {
    let t = match f.data_type() {
        DataType::Utf8 => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        DataType::List(item) => DataType::List(Arc::new(dictionary_field(item))),
        DataType::Struct(fields) => {
            DataType::Struct(Fields::from(fields.iter().map(|f| dictionary_field(f)).collect::<Vec<_>>()))
        }
        other => other.clone(),
    };
    f.clone().with_data_type(t)
}

fn read(data: &Bytes, dictionaries: bool) -> RecordBatch {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(data.clone()).unwrap();
    if dictionaries {
        let fields: Vec<Field> = builder.schema().fields().iter().map(|f| dictionary_field(f)).collect();
        let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
        builder = ParquetRecordBatchReaderBuilder::try_new_with_options(data.clone(), options).unwrap();
    }
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.with_batch_size(1 << 16).build().unwrap().map(|b| b.unwrap()).collect();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

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
