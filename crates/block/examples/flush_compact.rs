//! A fixed amount of block-building work, for instruction counts that do not depend on a noisy
//! machine: a flush (the head's fragments of ~200K of loadgen's spans into a block), then a
//! compaction (that block and a second one read back and merged into one).
//!   cargo build --release -p spoor-block --example flush_compact
//!   valgrind --tool=callgrind --toggle-collect='*flush_phase*' target/release/examples/flush_compact
//!   valgrind --tool=callgrind --toggle-collect='*compact_phase*' target/release/examples/flush_compact
//! Without valgrind it prints each phase's wall time.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use spoor_block::{BlockWriter, TraceIter, WriteOptions};
use spoor_model::TraceId;
use spoor_model::otlp::ResourceSpans;
use spoor_model::synth::{Rng, build_request};

type Corpus = Vec<(TraceId, Vec<Bytes>)>;

/// Traces as the head holds them at cut time: fragments per trace, in trace-ID order.
fn corpus(seed: u64, spans: usize) -> Corpus {
    let mut rng = Rng::new(seed);
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

#[inline(never)]
fn flush_phase(corpus: &Corpus, out: &std::path::Path) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(out).expect("temp file"));
    let mut w = BlockWriter::new(file, "bench", "flushed", &WriteOptions::default()).expect("writer");
    for (id, fragments) in corpus {
        w.push_trace(*id, fragments).expect("push");
    }
    w.finish().expect("finish").meta.spans
}

#[inline(never)]
fn compact_phase(inputs: &[&std::path::Path], out: &std::path::Path) -> u64 {
    let iters: Vec<TraceIter> =
        inputs.iter().map(|p| TraceIter::open(std::fs::File::open(p).expect("block")).expect("open")).collect();
    let file = std::io::BufWriter::new(std::fs::File::create(out).expect("temp file"));
    let mut w = BlockWriter::new(file, "bench", "compacted", &WriteOptions::default()).expect("writer");
    merge(iters, |id, trace| w.push_decoded(id, trace)).expect("merge");
    w.finish().expect("finish").meta.spans
}

/// Both inputs hold different traces (their seeds differ), so a merge is a sort by trace ID.
fn merge(
    iters: Vec<TraceIter>,
    mut emit: impl FnMut(TraceId, Vec<ResourceSpans>) -> spoor_block::Result<()>,
) -> spoor_block::Result<()> {
    let mut all = Vec::new();
    for it in iters {
        for trace in it {
            all.push(trace?);
        }
    }
    all.sort_by_key(|t| t.0);
    all.into_iter().try_for_each(|(id, trace)| emit(id, trace))
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let second = corpus(7, 100_000);
    flush_phase(&second, &b);
    let first = corpus(42, 200_000);
    let t = Instant::now();
    let flushed = flush_phase(&first, &a);
    let flush = t.elapsed();
    let t = Instant::now();
    let compacted = compact_phase(&[&a, &b], &c);
    let compact = t.elapsed();
    println!("flush: {flushed} spans in {flush:.2?}; compaction: {compacted} spans in {compact:.2?}");
}
