//! The persistent queue's tests: durability, order, acks, recovery and memory bounds.

use std::collections::HashSet;
use std::io::BufRead;

use crate::Durability;

use super::*;

fn cfg(dir: &Path) -> QueueConfig {
    QueueConfig {
        dir: dir.into(),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        durability: Durability::Os,
        memory_bytes: 1 << 20,
        seal: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Item `i`: its number, padded to `len` bytes.
fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut p = format!("item-{i:08}-").into_bytes();
    p.resize(len.max(p.len()), (i % 251) as u8);
    p
}

fn number(item: &Item) -> usize {
    std::str::from_utf8(&item.payload[5..13]).unwrap().parse().unwrap()
}

fn never_stop() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx); // stays open: pops wait for items
    rx
}

async fn next(q: &Queue) -> Item {
    tokio::time::timeout(Duration::from_secs(20), q.pop(&mut never_stop()))
        .await
        .expect("an item within 20 s")
        .expect("an item, not a stop")
}

async fn push_all(q: &Queue, range: std::ops::Range<usize>, len: usize) {
    for i in range {
        q.push(payload(i, len)).await.unwrap();
    }
}

/// Pops everything queued (per `stats`), in order, acking each; returns the item numbers.
async fn drain(q: &Queue) -> Vec<usize> {
    let mut out = Vec::new();
    while q.stats().items > q.stats().in_flight {
        let item = next(q).await;
        out.push(number(&item));
        q.ack(item.id);
    }
    out
}

fn files(dir: &Path, ext: &str) -> usize {
    fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == ext)).count()
}

#[test]
fn reopen_without_acks_delivers_all_again() {
    // §7.8 item 2: ten items, the process goes away without acks, all ten come back.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let q = Queue::open(cfg(dir.path())).unwrap();
    rt.block_on(push_all(&q, 0..10, 100));
    assert_eq!(q.stats().items, 10);
    drop(q); // no close: as after a crash
    let q = Queue::open(cfg(dir.path())).unwrap();
    assert_eq!((q.stats().items, q.stats().bytes), (10, 1000));
    rt.block_on(async {
        for i in 0..10 {
            let item = next(&q).await;
            assert_eq!(item.payload, payload(i, 100));
            assert_eq!(item.attempts_hint, 1, "found again after a restart");
            assert!(item.pushed_at_unix_ms > 0);
            q.ack(item.id);
        }
    });
    assert_eq!(q.stats().items, 0);
    q.close();
}

#[test]
fn in_flight_at_crash_is_delivered_again() {
    // §7.8 item 3.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let q = Queue::open(cfg(dir.path())).unwrap();
    rt.block_on(async {
        push_all(&q, 0..5, 50).await;
        let first = next(&q).await;
        assert_eq!((number(&first), first.attempts_hint), (0, 0));
        q.ack(first.id);
        let (a, b) = (next(&q).await, next(&q).await);
        assert_eq!((number(&a), number(&b)), (1, 2));
        assert_eq!(q.stats().in_flight, 2);
    });
    drop(q);
    let q = Queue::open(cfg(dir.path())).unwrap();
    rt.block_on(async { assert_eq!(drain(&q).await, vec![1, 2, 3, 4]) });
}

#[test]
fn full_refuses_drains_and_accepts_again() {
    // §7.8 item 4: the cap refuses new pushes at once, what is queued still drains, and
    // acked space is reclaimed (sealed segments deleted, the open one rotated away).
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let config = QueueConfig { max_bytes: 4096, segment_bytes: 1024, ..cfg(dir.path()) };
    let q = Queue::open(config.clone()).unwrap();
    rt.block_on(async {
        let mut pushed = 0;
        let err = loop {
            match q.push(payload(pushed, 200)).await {
                Ok(()) => pushed += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, QueueError::Full { max_bytes: 4096 });
        assert!(err.to_string().contains("full"), "{err}");
        assert_eq!(pushed, 4096 / 221);
        assert!(q.stats().disk_bytes <= 4096);
        assert_eq!(q.push(payload(99, 200)).await, Err(QueueError::Full { max_bytes: 4096 }));
        assert_eq!(q.stats().full_total, 2);
        assert_eq!(drain(&q).await, (0..pushed).collect::<Vec<_>>());
        // Sealed segments all acked are gone; the open one stays until the cap needs it.
        assert!(q.stats().disk_bytes <= 1024, "{:?}", q.stats());
        assert!(files(dir.path(), "wal") <= 2);
        // New items share the open segment with acked ones, which pins at most a segment.
        let mut again = 0;
        while q.push(payload(100 + again, 200)).await.is_ok() {
            again += 1;
        }
        assert!(again >= pushed - 1024 / 221, "{again} pushes after draining {pushed}");
        assert_eq!(drain(&q).await, (100..100 + again).collect::<Vec<_>>());
    });
    q.close();
    // And across a restart the acked items stay gone.
    let q = Queue::open(config).unwrap();
    assert_eq!(q.stats().items, 0);
}

#[test]
fn full_with_everything_in_the_open_segment_rotates_it_away() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let q = Queue::open(QueueConfig { max_bytes: 4 * 221, ..cfg(dir.path()) }).unwrap();
    rt.block_on(async {
        for round in 0..3 {
            push_all(&q, round * 10..round * 10 + 4, 200).await;
            assert!(matches!(q.push(payload(99, 200)).await, Err(QueueError::Full { .. })));
            assert_eq!(drain(&q).await, (round * 10..round * 10 + 4).collect::<Vec<_>>());
        }
    });
    assert_eq!(q.stats().full_total, 3);
}

#[test]
fn corrupt_record_is_skipped_counted_and_reclaimed() {
    // §7.8 item 5: flip a byte in the middle of a segment.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let q = Queue::open(cfg(dir.path())).unwrap();
    rt.block_on(push_all(&q, 0..10, 100));
    q.close();
    let (_, path) = crate::list_segments(dir.path())
        .unwrap()
        .into_iter()
        .find(|(_, p)| fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let mut data = fs::read(&path).unwrap();
    let record = 12 + ITEM_HEADER + 100;
    data[5 * record + record / 2] ^= 0x40; // inside item 5's payload
    fs::write(&path, &data).unwrap();

    let q = Queue::open(cfg(dir.path())).unwrap();
    assert_eq!((q.stats().items, q.stats().corrupt_total), (9, 1));
    rt.block_on(async { assert_eq!(drain(&q).await, vec![0, 1, 2, 3, 4, 6, 7, 8, 9]) });
    assert!(!path.exists(), "the damaged segment is reclaimed once the rest is acked");
    q.close();
    let q = Queue::open(cfg(dir.path())).unwrap();
    assert_eq!(q.stats().items, 0);
}

#[test]
fn torn_tail_is_cut_off_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let q = Queue::open(cfg(dir.path())).unwrap();
    rt.block_on(push_all(&q, 0..3, 100));
    drop(q);
    let (_, path) = crate::list_segments(dir.path()).unwrap().pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0x4C, 0x57, 0x50, 0x53, 200, 0, 0]).unwrap(); // a record cut short by the crash
    for _ in 0..2 {
        // Twice: the second time the damaged segment is no longer the newest.
        let q = Queue::open(cfg(dir.path())).unwrap();
        assert_eq!((q.stats().items, q.stats().corrupt_total), (3, 0));
        drop(q);
    }
    let q = Queue::open(cfg(dir.path())).unwrap();
    rt.block_on(async { assert_eq!(drain(&q).await, vec![0, 1, 2]) });
}

#[test]
fn fifo_across_segment_rotation_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let config = QueueConfig { segment_bytes: 2048, ..cfg(dir.path()) };
    let q = Queue::open(config.clone()).unwrap();
    rt.block_on(async {
        push_all(&q, 0..300, 100).await;
        assert!(files(dir.path(), "wal") > 10);
        for i in 0..100 {
            let item = next(&q).await;
            assert_eq!(number(&item), i);
            q.ack(item.id);
        }
    });
    drop(q);
    let q = Queue::open(config).unwrap();
    rt.block_on(async {
        push_all(&q, 300..350, 100).await;
        assert_eq!(drain(&q).await, (100..350).collect::<Vec<_>>());
    });
    assert!(files(dir.path(), "wal") <= 2, "acked segments are deleted");
}

#[test]
fn acked_items_are_not_delivered_again() {
    // The guarantee: an ack is written to the OS before `ack` returns, so after a process
    // crash nothing acked comes back (a power cut can lose acks: those items come back).
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let config = QueueConfig { segment_bytes: 4096, ..cfg(dir.path()) };
    let q = Queue::open(config.clone()).unwrap();
    rt.block_on(async {
        push_all(&q, 0..100, 100).await;
        for _ in 0..80 {
            let item = next(&q).await;
            if number(&item).is_multiple_of(2) {
                q.ack(item.id);
            }
        }
    });
    drop(q);
    let q = Queue::open(config.clone()).unwrap();
    assert_eq!(q.stats().items, 60);
    let want: Vec<usize> = (0..100).filter(|i| i % 2 == 1 || *i >= 80).collect();
    rt.block_on(async {
        let mut got = Vec::new();
        for _ in 0..60 {
            let item = next(&q).await;
            got.push(number(&item));
            if number(&item).is_multiple_of(3) {
                q.ack(item.id); // acks of recovered items stick too
            }
        }
        assert_eq!(got, want);
    });
    q.close();
    let q = Queue::open(config).unwrap();
    rt.block_on(async {
        let got: Vec<usize> = want.iter().copied().filter(|i| i % 3 != 0).collect();
        assert_eq!(drain(&q).await, got);
    });
}

#[test]
fn nacked_items_come_first_and_stop_ends_pop() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let q = Queue::open(cfg(dir.path())).unwrap();
    rt.block_on(async {
        push_all(&q, 0..5, 10).await;
        let (a, b, c) = (next(&q).await, next(&q).await, next(&q).await);
        q.nack(c);
        q.nack(a);
        q.ack(b.id);
        let again: Vec<(usize, u32)> =
            [next(&q).await, next(&q).await].iter().map(|i| (number(i), i.attempts_hint)).collect();
        assert_eq!(again, vec![(0, 1), (2, 1)], "given back: first, in queue order");
        assert_eq!(number(&next(&q).await), 3);

        let (tx, mut rx) = watch::channel(false);
        let item = q.pop(&mut rx).await.unwrap();
        assert_eq!(number(&item), 4);
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move { q.pop(&mut rx).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), None);
        // A push wakes a waiting pop.
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move { next(&q).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.push(payload(5, 10)).await.unwrap();
        assert_eq!(number(&waiting.await.unwrap()), 5);
        // Close: pops end, pushes are refused.
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move { q.pop(&mut never_stop()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.close();
        assert_eq!(waiting.await.unwrap(), None);
        assert_eq!(q.push(vec![1]).await, Err(QueueError::Closed));
    });
}

#[test]
fn memory_cap_holds_and_items_come_back_from_disk_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cap = 16 << 10;
    let config = QueueConfig { memory_bytes: cap, segment_bytes: 256 << 10, ..cfg(dir.path()) };
    let q = Queue::open(config).unwrap();
    let n = 10_000;
    rt.block_on(async {
        for i in 0..n {
            q.push(payload(i, 1000)).await.unwrap();
            assert!(q.stats().memory_bytes <= cap as u64);
        }
        assert_eq!(q.stats().items, n as u64);
        assert!(q.stats().disk_bytes > 10 * cap as u64);
        // Pop half, then push more while the reader is behind, then the rest.
        for i in 0..n / 2 {
            let item = next(&q).await;
            assert_eq!(item.payload, payload(i, 1000));
            q.ack(item.id);
            assert!(q.stats().memory_bytes <= cap as u64);
        }
        push_all(&q, n..n + 100, 1000).await;
        for i in n / 2..n + 100 {
            let item = next(&q).await;
            assert_eq!(item.payload, payload(i, 1000));
            q.ack(item.id);
            assert!(q.stats().memory_bytes <= cap as u64);
        }
        let stats = q.stats();
        assert_eq!((stats.items, stats.bytes, stats.memory_bytes), (0, 0, 0));
        assert_eq!((stats.pushed_total, stats.acked_total), (n as u64 + 100, n as u64 + 100));
    });
    assert!(files(dir.path(), "wal") <= 1);
}

#[test]
fn concurrent_pushes_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let q = Queue::open(QueueConfig { durability: Durability::Fsync, ..cfg(dir.path()) }).unwrap();
    let n = 256;
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let q = q.clone();
                tokio::spawn(async move { q.push(payload(i, 4000)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let syncs = q.inner.shared.lock().wal.as_ref().unwrap().stats().syncs.load(std::sync::atomic::Ordering::Relaxed);
    assert!(syncs < n as u64 / 4, "{n} concurrent pushes took {syncs} fsyncs");
    let got = rt.block_on(drain(&q));
    assert_eq!(got.iter().copied().collect::<HashSet<_>>(), (0..n).collect::<HashSet<_>>());
    assert_eq!(got.len(), n);
}

#[test]
fn concurrent_producers_and_consumers_deliver_each_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let config = QueueConfig { memory_bytes: 8 << 10, segment_bytes: 8 << 10, ..cfg(dir.path()) };
    let q = Queue::open(config).unwrap();
    let (producers, per, consumers) = (4, 500, 4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let got = rt.block_on(async {
        let consumer_tasks: Vec<_> = (0..consumers)
            .map(|c| {
                let q = q.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(item) = q.pop(&mut stop).await {
                        got.push(number(&item));
                        // Every so often give one back.
                        if (number(&item) + c).is_multiple_of(17) && item.attempts_hint == 0 {
                            q.nack(item);
                        } else {
                            q.ack(item.id);
                        }
                    }
                    got
                })
            })
            .collect();
        let producer_tasks: Vec<_> = (0..producers)
            .map(|p| {
                let q = q.clone();
                tokio::spawn(async move { push_all(&q, p * per..(p + 1) * per, 300).await })
            })
            .collect();
        for t in producer_tasks {
            t.await.unwrap();
        }
        while q.stats().acked_total < (producers * per) as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        let mut got = Vec::new();
        for t in consumer_tasks {
            got.extend(t.await.unwrap());
        }
        got
    });
    let delivered: HashSet<usize> = got.iter().copied().collect();
    assert_eq!(delivered, (0..producers * per).collect::<HashSet<_>>());
    let nacked = (0..producers * per).filter(|i| got.iter().filter(|g| *g == i).count() > 1).count();
    assert_eq!(got.len(), producers * per + nacked, "handed out once, plus once again when nacked");
    let stats = q.stats();
    assert_eq!((stats.items, stats.in_flight, stats.memory_bytes), (0, 0, 0));
    assert!(files(dir.path(), "wal") <= 1, "every acked segment reclaimed");
}

const CRASH_DIR: &str = "SPOOR_QUEUE_CRASH_DIR";

/// The child of `kill_9_loses_no_acknowledged_push`: pushes and acks until killed,
/// printing each push that returned Ok and each ack that returned.
#[test]
#[ignore = "run by kill_9_loses_no_acknowledged_push in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else { return };
    let q = Queue::open(QueueConfig { durability: Durability::Fsync, segment_bytes: 64 << 10, ..cfg(Path::new(&dir)) })
        .unwrap();
    rt().block_on(async {
        for p in 0..4 {
            let q = q.clone();
            tokio::spawn(async move {
                for i in (p..).step_by(4) {
                    q.push(payload(i, 2000)).await.unwrap();
                    println!("PUSHED {i}");
                }
            });
        }
        for _ in 0..300 {
            let item = next(&q).await;
            q.ack(item.id);
            println!("ACKED {}", number(&item));
        }
        // One in flight at the kill; the rest stays queued.
        let item = next(&q).await;
        println!("POPPED {}", number(&item));
        std::future::pending::<()>().await;
    });
}

#[test]
fn kill_9_loses_no_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "queue::tests::crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut pushed, mut acked, mut popped) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut line = String::new();
    let record = |line: &str, sets: [&mut HashSet<usize>; 3]| {
        // Only whole lines: the kill can cut one short.
        let Some(line) = line.strip_suffix('\n') else { return };
        for (tag, set) in ["PUSHED ", "ACKED ", "POPPED "].into_iter().zip(sets) {
            if let Some(i) = line.rfind(tag) {
                set.insert(line[i + tag.len()..].parse::<usize>().unwrap());
            }
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while pushed.len() < 2000 || popped.is_empty() {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended early");
        record(&line, [&mut pushed, &mut acked, &mut popped]);
        assert!(std::time::Instant::now() < deadline, "the child is too slow");
    }
    child.kill().unwrap(); // SIGKILL
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        record(&line, [&mut pushed, &mut acked, &mut popped]);
    }
    child.wait().unwrap();

    let q = Queue::open(cfg(dir.path())).unwrap();
    let found: HashSet<usize> = rt().block_on(drain(&q)).into_iter().collect();
    let lost: Vec<_> = pushed.iter().filter(|i| !found.contains(i) && !acked.contains(i)).collect();
    assert!(lost.is_empty(), "{} acknowledged pushes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    let again: Vec<_> = acked.iter().filter(|i| found.contains(i)).collect();
    assert!(again.is_empty(), "acked items delivered again: {again:?}");
    assert!(popped.is_subset(&found), "the item in flight at the kill is found");
}

#[test]
fn a_sealed_queue_holds_no_plaintext_and_reads_back_through_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let key = |b: u8| Some(Arc::new(spoor_seal::MasterKey::from_bytes(&[b; 32], Path::new(&format!("key-{b}")))));
    // Little memory and small segments: items are read back from sealed segments on disk.
    let config = QueueConfig { memory_bytes: 2 << 10, segment_bytes: 4 << 10, seal: key(1), ..cfg(dir.path()) };
    let rt = rt();
    let q = Queue::open(config.clone()).unwrap();
    rt.block_on(push_all(&q, 0..100, 300));
    rt.block_on(async {
        for i in 0..50 {
            let item = next(&q).await;
            assert_eq!(item.payload, payload(i, 300));
            q.ack(item.id);
        }
    });
    drop(q); // as after a crash: the 50 not acked come back
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "wal") {
            let bytes = fs::read(&path).unwrap();
            assert!(!bytes.windows(5).any(|w| w == b"item-"), "{} holds plaintext", path.display());
        }
    }
    let err = Queue::open(QueueConfig { seal: key(2), ..config.clone() }).err().unwrap();
    assert!(err.to_string().contains("another key"), "{err}");
    let err = Queue::open(QueueConfig { seal: None, ..config.clone() }).err().unwrap();
    assert!(err.to_string().contains("is encrypted"), "{err}");
    let q = Queue::open(config).unwrap();
    let rest = rt.block_on(drain(&q));
    assert_eq!(rest.len(), 50);
    assert!(rest.iter().all(|i| *i >= 50));
    q.close();
}
