//! The durability contract through the real binary: what was acknowledged survives `kill -9`,
//! torn and corrupted WAL files, a full disk, and graceful shutdown.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_ingest_loses_no_acknowledged_span() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("d"), &[]);
    let record = dir.path().join("acked.txt");
    kill9_rounds(&mut s, &record, 10, 0, 300, 1200).await;
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(m.contains("spoor_wal_corrupt_records_total 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_syncs_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("d"), &[]);
    let record = dir.path().join("acked.txt");
    let mut lg = loadgen(&s, "grpc", &record, 99, 20_000);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.terminate(), Some(0), "{}", s.log());
    lg.kill().unwrap();
    lg.wait().unwrap();
    assert!(s.log().contains("WAL synced"));
    s.spawn();
    s.wait_ready();
    assert_all_present_once(&s, &acked(&record)).await;
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.into_iter().find(|p| std::fs::metadata(p).unwrap().len() > 0).expect("a non-empty segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_and_flipped_bit_in_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &[]);
    let traces = send_traces(&s, 0, 20).await;
    assert_eq!(s.terminate(), Some(0));
    let seg = only_segment(&data);
    let full = std::fs::read(&seg).unwrap();

    // Torn tail: cut the last record short. Everything before it comes back.
    std::fs::write(&seg, &full[..full.len() - 7]).unwrap();
    s.spawn();
    s.wait_ready();
    for (i, t) in traces.iter().enumerate() {
        let n = fetch_span_ids(&s, t).await.len();
        assert_eq!(n, usize::from(i < 19), "trace {i}");
    }
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(m.contains("spoor_wal_truncated_bytes_total"), "{m}");
    assert!(!m.contains("spoor_wal_truncated_bytes_total 0\n"), "{m}");
    assert_eq!(s.terminate(), Some(0));

    // A flipped bit in the middle: that record alone is skipped and counted.
    let mut flipped = full.clone();
    flipped[full.len() / 2] ^= 0x10;
    std::fs::write(&seg, &flipped).unwrap();
    s.spawn();
    s.wait_ready();
    let mut present = 0;
    for t in &traces {
        present += fetch_span_ids(&s, t).await.len();
    }
    assert_eq!(present, 19);
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(m.contains("spoor_wal_corrupt_records_total 1\n"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_then_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED disk_full_refuses_then_recovers_by_itself: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _guard = Unmount(&data);
    let mut s = Server::start(&data, &[]);
    // Leave little room, then send 20 KB requests until the WAL cannot take one.
    let filler = data.join("filler");
    std::fs::write(&filler, vec![1u8; 3 << 20]).unwrap();
    let url = s.otlp_url("/v1/traces");
    let big_attr = "x".repeat(20_000);
    let body = |i: u32| {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{:032x}","spanId":"0000000000000001","name":"{big_attr}"}}]}}]}}]}}"#,
            0xf00000 + i
        )
    };
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let r = request("POST", &url, &[("content-type", "application/json")], body(i)).await;
        match r.status {
            200 => acked.push(i),
            503 => {
                assert!(r.headers.contains_key("retry-after"));
                assert!(r.json()["message"].as_str().unwrap().contains("cannot make spans durable"), "{}", r.text());
                refused = Some(i);
                break;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    let refused = refused.expect("the disk never filled");
    // Still refusing while full; then space returns and ingest resumes on its own.
    assert_eq!(request("POST", &url, &[("content-type", "application/json")], body(refused)).await.status, 503);
    std::fs::remove_file(&filler).unwrap();
    let r = request("POST", &url, &[("content-type", "application/json")], body(refused)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    acked.push(refused);
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(!m.contains("spoor_wal_write_errors_total 0\n"), "{m}");
    // And after a crash, everything acknowledged is there.
    s.restart();
    for i in acked {
        assert_eq!(fetch_span_ids(&s, &format!("{:032x}", 0xf00000 + i)).await.len(), 1, "request {i}");
    }
    s.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_replaying_and_ingest_asks_to_retry() {
    use spoor_model::synth::{Rng, build_request};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // A WAL of ~200 MB, written through the WAL crate as the server would write it.
    let (wal, thread) = spoor_wal::Wal::open(spoor_wal::Config {
        dir: data.join("wal"),
        segment_bytes: 64 << 20,
        durability: spoor_wal::Durability::Os,
        seal: None,
    })
    .unwrap();
    let mut rng = Rng::new(5);
    let (req, _) = build_request(&mut rng, 50, 1_700_000_000_000_000_000);
    let split = spoor_model::split_request(&req);
    let record = spoor_model::encode_record("single-tenant", &split.fragments);
    for _ in 0..(200 << 20) / record.len() {
        wal.append(record.clone()).await.unwrap();
    }
    drop(wal);
    tokio::task::spawn_blocking(move || thread.join()).await.unwrap();

    let mut s = Server::unstarted(&data);
    s.spawn();
    // Listeners open before replay; catch the server while it replays.
    let (ready, ingest) = {
        let ready = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if let Ok(r) = try_request("GET", &s.api_url("/ready")).await {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("query API did not come up");
        let ingest = request(
            "POST",
            &s.otlp_url("/v1/traces"),
            &[("content-type", "application/json")],
            json_spans(&"1".repeat(32), &["0000000000000001"]),
        )
        .await;
        (ready, ingest)
    };
    assert_eq!(ready.status, 503, "replay finished before the first probe: {}", ready.text());
    assert!(ready.text().contains("replaying the WAL"), "{}", ready.text());
    assert_eq!(ingest.status, 503, "{}", ingest.text());
    assert!(ingest.headers.contains_key("retry-after"));
    s.wait_ready();
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(m.contains("spoor_wal_replay_seconds"), "{m}");
}
