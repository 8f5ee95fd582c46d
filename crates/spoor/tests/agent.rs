//! `spoor agent` over loopback with the real binaries: the downstream is down, the queue fills
//! to its cap and then pushes back (503 + Retry-After), the agent is killed and restarted, and
//! once the server is up every span the agent acknowledged arrives (reliability R20).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Agent {
    child: Option<Child>,
    config: PathBuf,
    data_dir: PathBuf,
    grpc: String,
    http: String,
    api: String,
    log: PathBuf,
}

impl Agent {
    fn new(dir: &Path, yaml: &str) -> Agent {
        let config = dir.join("agent.yaml");
        std::fs::write(&config, yaml).unwrap();
        let [grpc, http, api] = free_ports::<3>();
        Agent {
            child: None,
            config,
            data_dir: dir.join("agent-data"),
            grpc: format!("127.0.0.1:{grpc}"),
            http: format!("127.0.0.1:{http}"),
            api: format!("127.0.0.1:{api}"),
            log: dir.join("agent.log"),
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spoor"))
            .args(["agent", "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--otlp-grpc-listen", &self.grpc, "--otlp-http-listen", &self.http, "--http-listen", &self.api])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while blocking_get(&format!("http://{}/ready", self.api)).map(|r| r.0) != Ok(200) {
            assert!(Instant::now() < deadline, "agent not ready:\n{}", std::fs::read_to_string(&self.log).unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    async fn metric(&self, line_start: &str) -> f64 {
        let text = request("GET", &format!("http://{}/metrics", self.api), &[], "").await.text();
        text.lines()
            .filter(|l| l.starts_with(line_start))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fills_the_queue_then_pushes_back_and_every_acknowledged_span_arrives() {
    let dir = tempfile::tempdir().unwrap();
    // The server's ports are chosen now; nothing listens on them yet.
    let mut server = Server::unstarted(&dir.path().join("server"));
    let mut agent = Agent::new(
        dir.path(),
        &format!(
            r#"
agent:
  queue: {{max_bytes: 3000000, segment_bytes: 262144}}
  exporters:
    otlp:
      endpoint: "{}"
      compression: zstd
      retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0}}
"#,
            server.grpc
        ),
    );
    agent.start();
    let record = dir.path().join("acked.txt");
    let out = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["loadgen", "--endpoint", &format!("http://{}", agent.grpc), "--connections", "4", "--duration", "4"])
        .args(["--traces-per-request", "5", "--json", "--record"])
        .arg(&record)
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("loadgen summary");
    assert!(summary["spans_accepted"].as_u64().unwrap() > 0, "{summary}");
    // The cap was reached: clients were told to come back, nothing was dropped silently.
    assert!(summary["spans_refused"].as_u64().unwrap() > 0, "{summary}");
    assert!(agent.metric("spoor_agent_queue_full_total").await > 0.0);
    assert!(agent.metric("spoor_spans_refused_total{tenant=\"single-tenant\",reason=\"queue_full\"}").await > 0.0);
    assert!(agent.metric("spoor_agent_queue_items").await > 0.0);
    assert!(agent.metric("spoor_agent_export_retries_total").await > 0.0);
    // At the cap, a request that does not fit is refused with a retry hint.
    let ids: Vec<String> = (1..=500).map(|i| format!("{i:016x}")).collect();
    let big = json_spans("0000000000000000000000000000beef", &ids.iter().map(String::as_str).collect::<Vec<_>>());
    let mut r = None;
    for _ in 0..100 {
        let resp = request(
            "POST",
            &format!("http://{}/v1/traces", agent.http),
            &[("content-type", "application/json")],
            big.clone(),
        )
        .await;
        if resp.status != 200 {
            r = Some(resp);
            break;
        }
    }
    let r = r.expect("the queue never filled up");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.text().contains("queue is full"), "{}", r.text());

    // A crash while the downstream is still down loses nothing that was acknowledged.
    agent.kill9();
    agent.start();
    assert!(agent.metric("spoor_agent_queue_items").await > 0.0);

    server.spawn();
    server.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(90);
    while agent.metric("spoor_agent_queue_items").await > 0.0 {
        assert!(Instant::now() < deadline, "queue not drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked = acked(&record);
    assert!(!acked.is_empty());
    assert_all_present_once(&server, &acked).await;
    // And the queue accepts again.
    let r = request(
        "POST",
        &format!("http://{}/v1/traces", agent.http),
        &[("content-type", "application/json")],
        json_spans("0000000000000000000000000000beef", &["0000000000000001"]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
