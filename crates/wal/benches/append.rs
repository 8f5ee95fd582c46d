//! WAL append throughput with group commit: N concurrent appenders of 40 KB records (about
//! 100 spans each), fsync and OS durability. Run: `cargo bench -p spoor-wal --bench append`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spoor_wal::{Config, Durability, Wal};

const RECORD: usize = 40_000;
const PER_ITER: usize = 64;

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("wal_append");
    g.throughput(Throughput::Bytes((RECORD * PER_ITER) as u64));
    g.sample_size(20);
    for (name, durability) in [("fsync", Durability::Fsync), ("os", Durability::Os)] {
        for appenders in [1usize, 16] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _thread) =
                Wal::open(Config { dir: dir.path().into(), segment_bytes: 64 << 20, durability, seal: None }).unwrap();
            g.bench_function(format!("{name}/{appenders}_appenders"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let mut tasks = Vec::new();
                        for _ in 0..appenders {
                            let wal = wal.clone();
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..PER_ITER / appenders {
                                    wal.append(vec![7u8; RECORD]).await.unwrap();
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.unwrap();
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
