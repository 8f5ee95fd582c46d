//! Encryption at rest through the real binary: with `storage.encryption.key_file`, no trace
//! ID and no attribute value is anywhere on disk (WAL, blocks, the agent's queue), a kill -9
//! under load loses nothing acknowledged, `spoor keys rotate` (even interrupted) leaves every
//! trace readable after a restart, and a wrong or missing key refuses to start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "zebra-unicorn-credit-4711";

fn write_key(dir: &Path, name: &str, byte: u8, base64: bool) -> PathBuf {
    use base64::Engine;
    let key = [byte; 32];
    let text = if base64 {
        base64::engine::general_purpose::STANDARD.encode(key)
    } else {
        key.iter().map(|b| format!("{b:02x}")).collect()
    };
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

fn key_env(key: &Path) -> Vec<(String, String)> {
    vec![("SPOOR__STORAGE__ENCRYPTION__KEY_FILE".into(), key.display().to_string())]
}

/// A trace with one span carrying [`SECRET`] as an attribute value.
fn secret_trace(trace: &str) -> String {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"00000000000000a1","name":"charge","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000","attributes":[{{"key":"card.holder","value":{{"stringValue":"{SECRET}"}}}}]}}]}}]}}]}}"#
    )
}

/// A deployment span now (so the DORA store keeps it) with [`SECRET`] as an attribute value: the
/// store holds its trace ID and environment, which must not reach the disk in the clear either.
async fn send_secret_deployment(s: &Server, trace: &str) {
    let now = spoor_model_now_ns();
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"00000000000000d1","name":"deploy","kind":1,"startTimeUnixNano":"{}","endTimeUnixNano":"{now}","attributes":[{{"key":"card.holder","value":{{"stringValue":"{SECRET}"}}}},{{"key":"cicd.pipeline.task.type","value":{{"stringValue":"deploy"}}}},{{"key":"deployment.environment.name","value":{{"stringValue":"production"}}}}]}}]}}]}}]}}"#,
        now - 1_000_000_000
    );
    let r = request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn spoor_model_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// How many production deployments `/api/dora` counts.
async fn dora_deployments(s: &Server) -> u64 {
    let r = request("GET", &s.api_url("/api/dora?environment=production"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str::<serde_json::Value>(&r.text()).unwrap()["deployments"].as_u64().unwrap()
}

async fn send_secret_traces(s: &Server, prefix: &str, n: u32) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = format!("{prefix}{i:08x}");
        assert_eq!(t.len(), 32);
        let r =
            request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], secret_trace(&t)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(t);
    }
    out
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Fails if any byte sequence that would reveal `traces` or [`SECRET`] is in any file under `dir`.
fn assert_nothing_readable(dir: &Path, traces: &[String]) {
    use base64::Engine;
    let mut needles: Vec<(String, Vec<u8>)> = vec![("the attribute value".into(), SECRET.as_bytes().to_vec())];
    for t in traces {
        let raw: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap()).collect();
        needles.push((format!("trace {t} in hex"), t.as_bytes().to_vec()));
        needles.push((format!("trace {t} in HEX"), t.to_uppercase().into_bytes()));
        needles.push((
            format!("trace {t} in base64"),
            base64::engine::general_purpose::STANDARD.encode(&raw).into_bytes(),
        ));
        needles.push((format!("trace {t} raw"), raw));
    }
    let mut files = Vec::new();
    all_files(dir, &mut files);
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} is readable in {}",
                f.display()
            );
        }
    }
}

async fn assert_served(s: &Server, traces: &[String]) {
    for t in traces {
        let r = request("GET", &s.api_url(&format!("/api/traces/{t}")), &[], "").await;
        assert_eq!(r.status, 200, "trace {t}: {}\n{}", r.text(), s.log());
        assert!(r.text().contains(SECRET), "trace {t} came back without its attribute");
    }
}

/// Starts `spoor serve` expecting it to refuse; returns its log.
fn refused_start(data: &Path, env: &[(String, String)]) -> String {
    let mut s = Server::unstarted(data);
    s.env = env.to_vec();
    let before = s.log().len();
    s.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = s.child.as_mut().unwrap().try_wait().unwrap() {
            assert!(!status.success());
            s.child = None;
            return s.log()[before..].to_owned();
        }
        assert!(Instant::now() < deadline, "spoor started although it should not have:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rotate(data: &Path, old: &Path, new: &Path, failpoint: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spoor"));
    cmd.args(["keys", "rotate", "--data-dir"]).arg(data).arg("--old-key-file").arg(old).arg("--new-key-file").arg(new);
    if let Some(f) = failpoint {
        cmd.env("SPOOR_FAILPOINT", f);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_data_dir_reveals_nothing_and_survives_an_interrupted_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (k1, k2) = (write_key(dir.path(), "k1", 0x11, false), write_key(dir.path(), "k2", 0x22, true));
    let mut s = Server::unstarted(&data);
    s.env = key_env(&k1);
    s.spawn();
    s.wait_ready();
    let flushed = send_secret_traces(&s, "5ec0e7aa11110000beef0000", 20).await;
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204, "flush: {}", r.text());
    let wal_only = send_secret_traces(&s, "5ec0e7bb22220000cafe0000", 20).await;
    let deployed = "5ec0e7dd44440000d0d00000deadbeef".to_string();
    send_secret_deployment(&s, &deployed).await;
    assert_eq!(dora_deployments(&s).await, 1);
    assert!(data.join("dora").read_dir().unwrap().next().is_some(), "the DORA store holds the deployment");
    let all: Vec<String> = flushed.iter().chain(&wal_only).chain([&deployed]).cloned().collect();
    assert_served(&s, &all).await;
    let mut files = Vec::new();
    all_files(&data.join("blocks"), &mut files);
    assert!(files.iter().any(|f| f.ends_with("data.parquet")), "the flush wrote a block: {files:?}");
    // Blocks are no longer Parquet files: nothing but Spoor can read them.
    for f in files.iter().filter(|f| f.ends_with("data.parquet")) {
        assert!(!std::fs::read(f).unwrap().starts_with(b"PAR1"), "{} is a plain Parquet file", f.display());
    }
    assert_nothing_readable(&data, &all);
    s.terminate();
    assert_nothing_readable(&data, &all);

    // A rotation killed in its first pass: the old key still opens everything.
    let out = rotate(&data, &k1, &k2, Some("rotate.pass1.2"));
    assert!(!out.status.success(), "the fail point stops the rotation");
    s.spawn();
    s.wait_ready();
    assert_served(&s, &all).await;
    s.terminate();

    // Killed in its second pass: finishing it is running it again.
    let out = rotate(&data, &k1, &k2, Some("rotate.pass2.1"));
    assert!(!out.status.success());
    let out = rotate(&data, &k1, &k2, None);
    assert!(out.status.success(), "rotate: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rotated"), "{}", String::from_utf8_lossy(&out.stdout));

    // The old key is refused now, naming the key file; no key at all is refused too.
    let log = refused_start(&data, &key_env(&k1));
    assert!(log.contains("wrong encryption key") && log.contains(&k1.display().to_string()), "{log}");
    let log = refused_start(&data, &[]);
    assert!(log.contains("encrypted at rest") && log.contains("key_file is not set"), "{log}");
    let bad = dir.path().join("bad-key");
    std::fs::write(&bad, "not a key").unwrap();
    let log = refused_start(&data, &key_env(&bad));
    assert!(log.contains(&bad.display().to_string()) && log.contains("256-bit"), "{log}");

    // The new key serves every trace: flushed blocks and WAL-only ones.
    s.env = key_env(&k2);
    s.spawn();
    s.wait_ready();
    assert_served(&s, &all).await;
    assert_eq!(dora_deployments(&s).await, 1, "the DORA store opens with the new key");
    let more = send_secret_traces(&s, "5ec0e7cc33330000f00d0000", 5).await;
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204);
    s.restart();
    assert_served(&s, &more).await;
    s.terminate();
    assert_nothing_readable(&data, &all.iter().chain(&more).cloned().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_for_a_plaintext_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &[]);
    send_traces(&s, 1, 3).await;
    s.terminate();
    let key = write_key(dir.path(), "k", 0x33, false);
    let log = refused_start(&data, &key_env(&key));
    assert!(log.contains("written without encryption"), "{log}");
    // Without the key it still starts, as before.
    s.spawn();
    s.wait_ready();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_with_encryption_loses_nothing_acknowledged() {
    // Kept when the test fails: the server's log is in it.
    let kept = tempfile::Builder::new().prefix("spoor-enc-kill9-").tempdir().unwrap().keep();
    let data = kept.join("d");
    let key = write_key(&kept, "k", 0x44, false);
    let mut s = Server::unstarted(&data);
    // Small blocks cut every second and compacted every second: kills land mid-flush and
    // mid-compaction of sealed blocks.
    s.env = key_env(&key);
    for (k, v) in [
        ("SPOOR__BLOCKS__MAX_BLOCK_BYTES", "300000"),
        ("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "1"),
        ("SPOOR__COMPACTION__INTERVAL_SECS", "1"),
        ("SPOOR__COMPACTION__MAX_INPUT_BLOCKS", "4"),
        ("SPOOR__STORAGE__BLOCKLIST_POLL_SECS", "1"),
    ] {
        s.env.push((k.into(), v.into()));
    }
    s.spawn();
    s.wait_ready();
    let record = kept.join("acked.txt");
    kill9_rounds(&mut s, &record, 3, 10_000, 1500, 2500).await;
    let traces: Vec<String> = acked(&record).into_keys().take(200).collect();
    s.terminate();
    assert_nothing_readable(&data, &traces);
    let _ = std::fs::remove_dir_all(&kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_queue_is_encrypted_and_delivers_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "k", 0x55, false);
    // The downstream is down at first: requests wait in the agent's queue, on disk.
    let mut server = Server::unstarted(&dir.path().join("server"));
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {{encryption: {{key_file: \"{}\"}}}}\nagent:\n  exporters:\n    otlp:\n      endpoint: \"{}\"\n      retry_on_failure: {{initial_interval: 100ms, max_interval: 300ms, max_elapsed_time: 0}}\n",
            key.display(),
            server.grpc
        ),
    )
    .unwrap();
    let agent_data = dir.path().join("agent-data");
    let [grpc, http, api] = free_ports::<3>();
    let start_agent = || {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spoor"))
            .args(["agent", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&agent_data)
            .args(["--otlp-grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-listen", &format!("127.0.0.1:{http}"), "--http-listen", &format!("127.0.0.1:{api}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while blocking_get(&format!("http://127.0.0.1:{api}/ready")).map(|r| r.0) != Ok(200) {
            let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "agent not ready:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let mut agent = start_agent();
    let mut traces = Vec::new();
    for i in 0..10u32 {
        let t = format!("a9e7a9e7a9e7a9e7a9e70000{i:08x}");
        let r = request(
            "POST",
            &format!("http://127.0.0.1:{http}/v1/traces"),
            &[("content-type", "application/json")],
            secret_trace(&t),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        traces.push(t);
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(agent_data.join("queue").join("ENCRYPTION").exists());
    assert_nothing_readable(&agent_data, &traces);

    // Restarted with its key, it delivers every queued request once the server is up.
    let mut agent = start_agent();
    server.spawn();
    server.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(60);
    for t in &traces {
        loop {
            let r = request("GET", &server.api_url(&format!("/api/traces/{t}")), &[], "").await;
            if r.status == 200 {
                assert!(r.text().contains(SECRET));
                break;
            }
            assert!(Instant::now() < deadline, "trace {t} never arrived");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
}
