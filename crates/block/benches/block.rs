//! Block encode throughput, size per span and trace-by-ID latency on synthetic traces (the load
//! generator's). Prints bytes/span and per-column sizes once, then runs criterion.
//! Run: `cargo bench -p spoor-block --bench block`.
//! `SPOOR_BENCH_SPANS` sets the corpus size (default 500000); `SPOOR_BENCH_VARIANTS=1` also
//! prints size and encode time for the encoding alternatives README.md compares;
//! `SPOOR_BENCH_OUT=dir` writes the block there (for pyarrow/DuckDB checks).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use spoor_block::{
    BlockReader, BlockWriter, ColumnEncoding, DedicatedColumn, DedicatedPolicy, Encodings, Finished, WriteOptions,
};
use spoor_model::TraceId;
use spoor_model::synth::{Rng, build_request};

type Corpus = Vec<(TraceId, Vec<Bytes>)>;

/// Traces as the head would hold them at cut time: fragments per trace, trace-ID order. Time
/// advances as if ingest ran at 100K spans/s, 10 traces per request.
fn corpus(spans: usize) -> Corpus {
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
    traces.into_iter().collect()
}

fn write(corpus: &Corpus, options: &WriteOptions) -> (Vec<u8>, Finished) {
    let mut out = Vec::new();
    let mut w = BlockWriter::new(&mut out, "bench", "block", options).unwrap();
    for (id, fragments) in corpus {
        w.push_trace(*id, fragments).unwrap();
    }
    let finished = w.finish().unwrap();
    (out, finished)
}

fn bytes_per_span(f: &Finished) -> f64 {
    (f.meta.data_bytes + f.meta.filter_bytes) as f64 / f.meta.spans as f64
}

fn report(corpus: &Corpus) {
    let (data, f) = write(corpus, &WriteOptions::default());
    if let Some(dir) = std::env::var_os("SPOOR_BENCH_OUT") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(spoor_block::DATA_FILE), &data).unwrap();
        std::fs::write(dir.join(spoor_block::FILTER_FILE), &f.filter).unwrap();
        std::fs::write(dir.join(spoor_block::META_FILE), serde_json::to_vec_pretty(&f.meta).unwrap()).unwrap();
    }
    let spans = f.meta.spans as f64;
    println!(
        "block: {} spans, {} traces, {} row groups, data {} B + filter {} B = {:.2} bytes/span",
        f.meta.spans,
        f.meta.traces,
        f.meta.row_groups,
        f.meta.data_bytes,
        f.meta.filter_bytes,
        bytes_per_span(&f)
    );
    let mut columns = f.meta.columns.clone();
    columns.sort_by_key(|c| std::cmp::Reverse(c.compressed_bytes));
    println!("{:<40} {:>12} {:>10} {:>12}", "column", "compressed", "B/span", "uncompressed");
    for c in &columns {
        println!(
            "{:<40} {:>12} {:>10.3} {:>12}",
            c.name,
            c.compressed_bytes,
            c.compressed_bytes as f64 / spans,
            c.uncompressed_bytes
        );
    }
    let dedicated: Vec<_> = f.meta.dedicated_columns.iter().map(|d| d.column.as_str()).collect();
    println!("dedicated: {}", dedicated.join(", "));
    if std::env::var_os("SPOOR_BENCH_VARIANTS").is_some() {
        variants(corpus);
    }
}

/// Size and single-run encode time of each alternative against the default.
fn variants(corpus: &Corpus) {
    let base = WriteOptions::default();
    let enc = |f: &dyn Fn(&mut Encodings)| {
        let mut o = base.clone();
        f(&mut o.encodings);
        o
    };
    let fixed: Vec<DedicatedColumn> = [
        ("span", "http.request.method", "string"),
        ("span", "http.route", "string"),
        ("span", "http.response.status_code", "int"),
        ("span", "url.scheme", "string"),
        ("span", "server.address", "string"),
        ("span", "db.system", "string"),
        ("span", "db.name", "string"),
        ("resource", "service.namespace", "string"),
        ("resource", "k8s.namespace.name", "string"),
        ("resource", "deployment.environment", "string"),
    ]
    .iter()
    .map(|(scope, key, kind)| DedicatedColumn::new(scope, key, kind))
    .collect();
    let list: Vec<(&str, WriteOptions)> = vec![
        ("default", base.clone()),
        ("times=plain", enc(&|e| e.times = ColumnEncoding::Plain)),
        ("nested=plain", enc(&|e| e.nested = ColumnEncoding::Plain)),
        ("ids=plain", enc(&|e| e.ids = ColumnEncoding::Plain)),
        ("compress_all", enc(&|e| e.compress_all = true)),
        ("trace_id=dictionary", enc(&|e| e.trace_id = ColumnEncoding::Dictionary)),
        ("times=delta", enc(&|e| e.times = ColumnEncoding::DeltaBinaryPacked)),
        ("nested=delta", enc(&|e| e.nested = ColumnEncoding::DeltaBinaryPacked)),
        ("doubles=plain", enc(&|e| e.doubles = ColumnEncoding::Plain)),
        ("doubles=dictionary", enc(&|e| e.doubles = ColumnEncoding::Dictionary)),
        ("dedicated=fixed list", WriteOptions { dedicated: DedicatedPolicy::Fixed(fixed), ..base.clone() }),
        ("dedicated=none", WriteOptions { dedicated: DedicatedPolicy::Fixed(Vec::new()), ..base.clone() }),
        ("zstd=1", WriteOptions { zstd_level: 1, ..base.clone() }),
        ("zstd=6", WriteOptions { zstd_level: 6, ..base.clone() }),
        ("zstd=9", WriteOptions { zstd_level: 9, ..base.clone() }),
        ("page_rows=1000", WriteOptions { page_rows: 1000, ..base.clone() }),
        ("page_rows=3000", WriteOptions { page_rows: 3000, ..base.clone() }),
        ("page_rows=5000", WriteOptions { page_rows: 5000, ..base.clone() }),
        ("page_rows=10000", WriteOptions { page_rows: 10000, ..base.clone() }),
        ("row_group_spans=50000", WriteOptions { row_group_spans: 50_000, ..base.clone() }),
        ("row_group_spans=250000", WriteOptions { row_group_spans: 250_000, ..base.clone() }),
    ];
    println!("{:<28} {:>8} {:>18} {:>16}", "variant", "B/span", "Kspans/s (1 run)", "find µs (median)");
    for (name, options) in list {
        let t = Instant::now();
        let (data, f) = write(corpus, &options);
        let secs = t.elapsed().as_secs_f64();
        let lookup = lookup_median_us(corpus, data, &f);
        println!(
            "{:<28} {:>8.2} {:>18.0} {:>16.0}",
            name,
            bytes_per_span(&f),
            f.meta.spans as f64 / secs / 1e3,
            lookup
        );
    }
}

/// Median latency of 300 warm lookups of random present traces on a local filesystem store.
fn lookup_median_us(corpus: &Corpus, data: Vec<u8>, f: &Finished) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reader = rt.block_on(upload(dir.path(), data, f));
    let mut rng = Rng::new(3);
    let mut times: Vec<f64> = (0..300)
        .map(|_| {
            let (id, _) = &corpus[rng.below(corpus.len() as u64) as usize];
            let t = Instant::now();
            assert!(!rt.block_on(reader.find_trace(id)).unwrap().is_empty());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

async fn upload(dir: &std::path::Path, data: Vec<u8>, f: &Finished) -> BlockReader {
    let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap());
    let block = Path::from("bench/block");
    store.put(&block.clone().join(spoor_block::DATA_FILE), Bytes::from(data).into()).await.unwrap();
    store.put(&block.clone().join(spoor_block::FILTER_FILE), Bytes::from(f.filter.clone()).into()).await.unwrap();
    BlockReader::open(store, block, f.meta.clone()).await.unwrap()
}

fn benches(c: &mut Criterion) {
    let spans: usize = std::env::var("SPOOR_BENCH_SPANS").ok().and_then(|s| s.parse().ok()).unwrap_or(500_000);
    let corpus = corpus(spans);
    report(&corpus);
    let options = WriteOptions::default();
    let (data, finished) = write(&corpus, &options);

    let mut g = c.benchmark_group("block");
    g.sample_size(10);
    g.throughput(Throughput::Elements(finished.meta.spans));
    g.bench_function("encode", |b| b.iter(|| write(&corpus, &options)));
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let block = Path::from("bench/block");
    rt.block_on(async {
        store.put(&block.clone().join(spoor_block::DATA_FILE), Bytes::from(data).into()).await.unwrap();
        store.put(&block.clone().join(spoor_block::FILTER_FILE), Bytes::from(finished.filter).into()).await.unwrap();
    });
    let reader = rt.block_on(BlockReader::open(store.clone(), block.clone(), finished.meta.clone())).unwrap();
    let mut rng = Rng::new(1);
    let mut g = c.benchmark_group("find_trace");
    g.bench_function("present", |b| {
        b.iter(|| {
            let (id, _) = &corpus[rng.below(corpus.len() as u64) as usize];
            let got = rt.block_on(reader.find_trace(id)).unwrap();
            assert!(!got.is_empty());
        })
    });
    g.bench_function("absent", |b| {
        b.iter(|| {
            let id = TraceId([rng.next_u64() as u8; 16]);
            rt.block_on(reader.find_trace(&id)).unwrap()
        })
    });
    // A reader's first lookup also fetches the footer and page index.
    g.bench_function("present_cold", |b| {
        b.iter_batched(
            || corpus[rng.below(corpus.len() as u64) as usize].0,
            |id| {
                rt.block_on(async {
                    let r = BlockReader::open(store.clone(), block.clone(), finished.meta.clone()).await.unwrap();
                    r.find_trace(&id).await.unwrap()
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(block, benches);
criterion_main!(block);
