//! Blocks through the real binary: live traces flushed into Parquet blocks on local disk and on
//! a real S3-compatible server (moto), read back by trace ID, merged by the compactor, deleted
//! by retention, shared with a second, query-only process, and kept whole across kill -9 at
//! every step of flush and compaction and across an object-store outage.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::FaultProxy;
use common::s3::{Moto, s3_env_at};
use common::*;

/// Flushes only when asked (or when tests turn the knobs), polls the blocklist every second.
const QUIET: &[(&str, &str)] = &[
    ("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"),
    ("SPOOR__COMPACTION__ENABLED", "false"),
    ("SPOOR__STORAGE__BLOCKLIST_POLL_SECS", "1"),
];

fn env_with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = base.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).copied().collect();
    v.extend_from_slice(extra);
    v
}

fn owned(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, val)| (k.as_str(), val.as_str())).collect()
}

/// Runs loadgen to completion against `s` (HTTP), recording every acknowledged span.
fn load(s: &Server, record: &Path, spans: u64, seed: u64) {
    let status = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["loadgen", "--endpoint", &format!("http://{}", s.http), "--transport", "http", "--connections", "2"])
        .args(["--spans", &spans.to_string(), "--duration", "60", "--seed", &seed.to_string(), "--record"])
        .arg(record)
        .output()
        .unwrap();
    assert!(status.status.success(), "loadgen: {}\n{}", String::from_utf8_lossy(&status.stdout), s.log());
}

async fn flush(s: &Server) {
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204, "flush: {}", r.text());
}

/// meta.json paths under a local blocks dir, per tenant.
fn metas(blocks: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for tenant in std::fs::read_dir(blocks).into_iter().flatten().flatten() {
        for block in std::fs::read_dir(tenant.path()).into_iter().flatten().flatten() {
            let m = block.path().join("meta.json");
            if m.exists() {
                out.push(m);
            }
        }
    }
    out.sort();
    out
}

fn wal_segments(data: &Path) -> usize {
    std::fs::read_dir(data.join("wal"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "wal"))
        .count()
}

fn total(acked: &HashMap<String, HashSet<String>>) -> usize {
    acked.values().map(HashSet::len).sum()
}

async fn metric(s: &Server, name_and_labels: &str) -> f64 {
    let text = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_traces_read_back_from_local_blocks_and_the_wal_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let record = dir.path().join("acked");
    let mut s = Server::start(&data, QUIET);
    load(&s, &record, 3000, 1);
    let acked = acked(&record);
    assert!(total(&acked) >= 3000);
    // A trace fetched live, for a byte-for-byte comparison after the flush.
    let some = acked.keys().next().unwrap().clone();
    let live = request("GET", &s.api_url(&format!("/api/v2/traces/{some}")), &[], "").await.json();

    flush(&s).await;
    let blocks = data.join("blocks");
    assert_eq!(metas(&blocks).len(), 1, "one tenant, one block");
    assert!(metas(&blocks)[0].starts_with(blocks.join("single-tenant")));
    assert_eq!(wal_segments(&data), 1, "only the fresh active segment is left");
    assert_eq!(metric(&s, "spoor_live_bytes{tenant=\"single-tenant\"}").await, 0.0);
    assert_eq!(metric(&s, "spoor_block_spans{tenant=\"single-tenant\"}").await as usize, total(&acked));
    let from_block = request("GET", &s.api_url(&format!("/api/v2/traces/{some}")), &[], "").await.json();
    assert_eq!(sorted_spans(&from_block), sorted_spans(&live));
    assert_all_present_once(&s, &acked).await;

    // After a restart nothing is replayed: it all comes from the block.
    s.restart();
    assert_eq!(metric(&s, "spoor_wal_replay_records").await, 0.0);
    assert_all_present_once(&s, &acked).await;

    // A time range that excludes the block skips it; live traces are always searched.
    let r = request("GET", &s.api_url(&format!("/api/v2/traces/{some}?start=1000&end=2000")), &[], "").await;
    assert_eq!(r.status, 404);
}

/// Spans of a v2 JSON trace as sorted JSON strings: grouping, span order and attribute order
/// may differ between live traces and blocks (attributes are a set to every consumer).
fn sorted_spans(v2: &serde_json::Value) -> Vec<String> {
    fn sort_attributes(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if k == "attributes"
                        && let Some(list) = child.as_array_mut()
                    {
                        list.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
                    }
                    sort_attributes(child);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(sort_attributes),
            _ => {}
        }
    }
    let mut v2 = v2.clone();
    sort_attributes(&mut v2);
    let mut out = Vec::new();
    for rs in v2["trace"]["resourceSpans"].as_array().unwrap() {
        for ss in rs["scopeSpans"].as_array().unwrap() {
            for span in ss["spans"].as_array().unwrap() {
                out.push(format!("{} {} {} {}", rs["resource"], ss["scope"], ss["schemaUrl"], span));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_step_of_a_flush_loses_nothing_and_duplicates_nothing() {
    for point in ["flush.before_meta", "flush.after_meta"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let record = dir.path().join("acked");
        let mut s = Server::start(&data, &env_with(QUIET, &[("SPOOR_FAILPOINT", point)]));
        load(&s, &record, 2000, 2);
        let acked = acked(&record);
        let r = try_request("POST", &s.api_url("/flush")).await;
        assert!(r.is_err(), "{point}: the process should have died mid-flush, got {:?}", r.map(|r| r.status));
        let status = s.child.as_mut().unwrap().wait().unwrap();
        assert!(!status.success());
        s.child = None;
        let fresh = Server::start(&data, QUIET);
        assert_all_present_once(&fresh, &acked).await;
        // The retried flush publishes it all again; still exactly once.
        flush(&fresh).await;
        assert_all_present_once(&fresh, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_blocks_exactly_once_even_when_killed() {
    let compact = [
        ("SPOOR__COMPACTION__ENABLED", "true"),
        ("SPOOR__COMPACTION__INTERVAL_SECS", "1"),
        ("SPOOR__COMPACTION__ORPHAN_GRACE_SECS", "0"),
        // Flushed blocks of the current window merge once this many are there.
        ("SPOOR__COMPACTION__MAX_INPUT_BLOCKS", "3"),
    ];
    for point in ["compact.before_meta", "compact.after_meta", "compact.after_first_delete", ""] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let record = dir.path().join("acked");
        // Three blocks, with the same spans sent twice (a client retry) across two of them.
        let mut s = Server::start(&data, QUIET);
        load(&s, &record, 1000, 3);
        flush(&s).await;
        load(&s, &record, 1000, 4);
        flush(&s).await;
        load(&s, &record, 1000, 3);
        flush(&s).await;
        let acked = acked(&record);
        assert_eq!(metas(&data.join("blocks")).len(), 3);
        s.kill9();

        let mut env = env_with(QUIET, &compact);
        if !point.is_empty() {
            env.push(("SPOOR_FAILPOINT", point));
            let mut crashing = Server::unstarted(&data);
            crashing.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            crashing.spawn();
            let status = crashing.child.as_mut().unwrap().wait().unwrap();
            assert!(!status.success(), "{point}: should have aborted");
            crashing.child = None;
            env.pop();
        }
        let s = Server::start(&data, &env);
        assert_all_present_once(&s, &acked).await;
        let blocks = data.join("blocks");
        wait_for("one compacted block", Duration::from_secs(60), async || metas(&blocks).len() == 1).await;
        // Replaced inputs and orphan files are gone, not just hidden.
        wait_for("cleanup", Duration::from_secs(30), async || {
            std::fs::read_dir(blocks.join("single-tenant")).unwrap().count() == 1
        })
        .await;
        assert_all_present_once(&s, &acked).await;
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&metas(&blocks)[0]).unwrap()).unwrap();
        assert_eq!(meta["spans"].as_u64().unwrap() as usize, total(&acked), "{point}: duplicates dropped");
        assert!(meta["compaction_level"].as_u64().unwrap() >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_the_expired_blocks_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("spoor.yaml");
    std::fs::write(&config, "retention:\n  max_age_hours: 48\n  tenants:\n    short: 1\n").unwrap();
    let env = env_with(QUIET, &[("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true")]);
    let mut s = Server::unstarted(&data);
    s.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.config = Some(config.clone());
    s.spawn();
    s.wait_ready();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let hour = 3_600_000_000_000u64;
    // (tenant, trace, age): expired are 3 days old for "long" (48h) and 2 hours for "short" (1h).
    let cases = [
        ("long", 1u32, 72 * hour, true),
        ("long", 2, hour, false),
        ("short", 3, 2 * hour, true),
        ("short", 4, 0, false),
    ];
    for (tenant, trace, age, _) in cases {
        let t = format!("{trace:032x}");
        let start = now - age - 1_000_000;
        let body = json_spans(&t, &["0000000000000001"])
            .replace("1700000000000000000", &start.to_string())
            .replace("1700000001000000000", &(start + 1000).to_string());
        let r = request(
            "POST",
            &s.otlp_url("/v1/traces"),
            &[("content-type", "application/json"), ("x-scope-orgid", tenant)],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        flush(&s).await; // one block per trace
    }
    assert_eq!(metas(&data.join("blocks")).len(), 4);
    s.kill9();
    s.env.push(("SPOOR__COMPACTION__ENABLED".into(), "true".into()));
    s.env.push(("SPOOR__COMPACTION__INTERVAL_SECS".into(), "1".into()));
    s.spawn();
    s.wait_ready();
    wait_for("retention", Duration::from_secs(30), async || metas(&data.join("blocks")).len() == 2).await;
    for (tenant, trace, _, expired) in cases {
        let r =
            request("GET", &s.api_url(&format!("/api/v2/traces/{trace:032x}")), &[("x-scope-orgid", tenant)], "").await;
        assert_eq!(r.status, if expired { 404 } else { 200 }, "{tenant} trace {trace}");
    }
    assert_eq!(metric(&s, "spoor_blocks_deleted_total{tenant=\"long\",reason=\"retention\"}").await, 1.0);
    assert_eq!(metric(&s, "spoor_blocks_deleted_total{tenant=\"short\",reason=\"retention\"}").await, 1.0);
    assert_eq!(metric(&s, "spoor_blocks{tenant=\"long\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_without_meta_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, QUIET);
    let traces = send_traces(&s, 0, 3).await;
    flush(&s).await;
    let meta = metas(&data.join("blocks")).pop().unwrap();
    std::fs::remove_file(&meta).unwrap();
    s.restart();
    for t in &traces {
        let r = request("GET", &s.api_url(&format!("/api/v2/traces/{t}")), &[], "").await;
        assert_eq!(r.status, 404, "the data file alone must not be read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_query_only_process_serves_blocks_written_by_another() {
    let moto = Moto::start();
    moto.create_bucket("traces");
    let s3 = moto.s3_env("traces");
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("acked");
    let mut env = owned(&s3);
    env.extend_from_slice(QUIET);
    env.push(("SPOOR__STORAGE__PREFIX", "spoor/v1"));
    let writer = Server::start(&dir.path().join("writer"), &env);
    load(&writer, &record, 2000, 5);
    flush(&writer).await;
    let acked = acked(&record);
    let keys = moto.list_keys("traces", "spoor/v1/single-tenant/");
    assert_eq!(keys.iter().filter(|k| k.ends_with("/meta.json")).count(), 1, "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("/data.parquet")));
    assert_all_present_once(&writer, &acked).await;

    env.push(("SPOOR__INGEST__ENABLED", "false"));
    let reader = Server::start(&dir.path().join("reader"), &env);
    assert_all_present_once(&reader, &acked).await;
    // New blocks show up in the reader by polling.
    let more = send_traces(&writer, 100, 2).await;
    flush(&writer).await;
    let url = reader.api_url(&format!("/api/v2/traces/{}", more[1]));
    wait_for("the reader to poll the new block", Duration::from_secs(10), async || {
        request("GET", &url, &[], "").await.status == 200
    })
    .await;
    // The reader does not ingest.
    assert!(try_request("POST", &reader.otlp_url("/v1/traces")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_keeps_ingest_acknowledging_and_uploads_catch_up() {
    let moto = Moto::start();
    moto.create_bucket("traces");
    let proxy = FaultProxy::start(moto.endpoint.trim_start_matches("http://"));
    let s3 = s3_env_at(&proxy.url(), "traces");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let record = dir.path().join("acked");
    let mut env = owned(&s3);
    env.extend_from_slice(&env_with(QUIET, &[("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "1")]));
    env.push(("SPOOR__STORAGE__MAX_RETRIES", "1"));
    env.push(("SPOOR__STORAGE__REQUEST_TIMEOUT_SECS", "2"));
    let mut s = Server::start(&data, &env);
    proxy.set_down(true);
    load(&s, &record, 3000, 6);
    let acked = acked(&record);
    assert!(total(&acked) >= 3000, "ingest kept acknowledging during the outage");
    wait_for("a failed flush", Duration::from_secs(30), async || {
        metric(&s, "spoor_flushes_total{tenant=\"single-tenant\",outcome=\"error\"}").await >= 1.0
    })
    .await;
    assert_all_present_once(&s, &acked).await;
    assert!(moto.list_keys("traces", "").iter().all(|k| !k.ends_with("meta.json")));
    proxy.set_down(false);
    wait_for("uploads to catch up", Duration::from_secs(60), async || {
        moto.list_keys("traces", "").iter().any(|k| k.ends_with("meta.json"))
            && metric(&s, "spoor_flushing_bytes{tenant=\"single-tenant\"}").await == 0.0
            && metric(&s, "spoor_live_bytes{tenant=\"single-tenant\"}").await == 0.0
    })
    .await;
    s.kill9();
    s.spawn();
    s.wait_ready();
    assert_all_present_once(&s, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_cli_lists_and_inspects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let record = dir.path().join("acked");
    let s = Server::start(&data, QUIET);
    load(&s, &record, 1000, 7);
    flush(&s).await;
    let spans = total(&acked(&record));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_spoor")).args(args).arg("--data-dir").arg(&data).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let list = run(&["blocks", "list"]);
    assert!(list.contains("single-tenant"), "{list}");
    assert!(list.contains(&format!("1 blocks, {spans} spans")), "{list}");
    let json: serde_json::Value = serde_json::from_str(&run(&["blocks", "list", "--json"])).unwrap();
    let id = json[0]["meta"]["block_id"].as_str().unwrap().to_owned();
    let inspect = run(&["blocks", "inspect", &id]);
    assert!(inspect.contains("bytes/span"), "{inspect}");
    assert!(inspect.contains("trace_id"), "{inspect}");
    let out = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["blocks", "inspect", "nope", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no block nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_while_flushing_and_compacting_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // Tiny blocks, cut every second, compacted every second: kills land mid-flush and
    // mid-compaction often.
    let churn = [
        ("SPOOR__BLOCKS__MAX_BLOCK_BYTES", "300000"),
        ("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "1"),
        ("SPOOR__COMPACTION__INTERVAL_SECS", "1"),
        ("SPOOR__COMPACTION__MAX_INPUT_BLOCKS", "4"),
        ("SPOOR__STORAGE__BLOCKLIST_POLL_SECS", "1"),
    ];
    let mut s = Server::start(&data, &churn);
    let record = dir.path().join("acked.txt");
    kill9_rounds(&mut s, &record, 4, 10_000, 1500, 2500).await;
    assert!(!metas(&data.join("blocks")).is_empty(), "blocks were written while being killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_footer_cache_stays_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, QUIET);
    let mut traces = send_traces(&s, 0, 3).await;
    flush(&s).await;
    traces.extend(send_traces(&s, 10, 3).await);
    flush(&s).await;
    for t in &traces {
        assert_eq!(request("GET", &s.api_url(&format!("/api/v2/traces/{t}")), &[], "").await.status, 200);
    }
    let cached = metric(&s, "spoor_block_cache_bytes").await;
    assert!(cached > 0.0, "footers are kept between lookups");
    // A budget smaller than one footer: every lookup still works, nothing stays cached.
    s.kill9();
    s.env.push(("SPOOR__STORAGE__BLOCK_CACHE_BYTES".into(), "1".into()));
    s.spawn();
    s.wait_ready();
    for t in &traces {
        assert_eq!(request("GET", &s.api_url(&format!("/api/v2/traces/{t}")), &[], "").await.status, 200);
    }
    assert_eq!(metric(&s, "spoor_block_cache_bytes").await, 0.0);
}
