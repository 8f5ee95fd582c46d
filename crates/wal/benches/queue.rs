//! Persistent queue throughput for 64 KiB items (about 150 spans each): 16 concurrent pushers
//! (group commit), with fsync and OS durability; pushes alone, and pushes drained by 4
//! consumers that pop and ack. Run: `cargo bench -p spoor-wal --bench queue`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spoor_wal::Durability;
use spoor_wal::queue::{Queue, QueueConfig};

const ITEM: usize = 64 << 10;
const PER_ITER: usize = 64;
const PUSHERS: usize = 16;
const CONSUMERS: usize = 4;

fn open(dir: &std::path::Path, durability: Durability) -> Queue {
    Queue::open(QueueConfig {
        dir: dir.into(),
        max_bytes: 8 << 30,
        segment_bytes: 16 << 20,
        durability,
        memory_bytes: 64 << 20,
        seal: None,
    })
    .unwrap()
}

async fn push(q: &Queue) {
    let tasks: Vec<_> = (0..PUSHERS)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                for _ in 0..PER_ITER / PUSHERS {
                    q.push(vec![7u8; ITEM]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn drain(q: &Queue, n: usize) {
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let q = q.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                for _ in (c..n).step_by(CONSUMERS) {
                    let item = q.pop(&mut stop).await.unwrap();
                    q.ack(item.id);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn queue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Bytes((ITEM * PER_ITER) as u64));
    g.sample_size(20);
    for (name, durability) in [("fsync", Durability::Fsync), ("os", Durability::Os)] {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), durability);
        g.bench_function(format!("{name}/push"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    rt.block_on(push(&q));
                    spent += start.elapsed();
                    rt.block_on(drain(&q, PER_ITER)); // untimed: keeps the queue small
                }
                spent
            })
        });
        g.bench_function(format!("{name}/push_pop_ack"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let consumers = tokio::spawn({
                        let q = q.clone();
                        async move { drain(&q, PER_ITER).await }
                    });
                    push(&q).await;
                    consumers.await.unwrap();
                })
            })
        });
        q.close();
    }
    g.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
