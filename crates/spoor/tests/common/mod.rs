//! Test harness: runs the real `spoor` binary on free loopback ports and talks to it over
//! HTTP and gRPC, as users do.
#![allow(dead_code)]

pub mod proxy;
pub mod s3;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use spoor_model::otlp::TraceByIdResponse;

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports: the listeners stay open until all are chosen, so the kernel
/// cannot hand the same port out twice (it did: a server's gRPC and HTTP ports collided).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

pub struct Server {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub grpc: String,
    pub http: String,
    pub api: String,
    pub env: Vec<(String, String)>,
    /// A YAML file passed as `--config`.
    pub config: Option<PathBuf>,
    log: PathBuf,
}

impl Server {
    /// Starts `spoor serve` on `data_dir` with extra `SPOOR__…` variables, and waits until ready.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut s = Server::unstarted(data_dir);
        s.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s.spawn();
        s.wait_ready();
        s
    }

    /// A server description with fresh ports and no process yet.
    pub fn unstarted(data_dir: &Path) -> Server {
        let [grpc, http, api] = free_ports::<3>();
        Server {
            child: None,
            data_dir: data_dir.to_owned(),
            grpc: format!("127.0.0.1:{grpc}"),
            http: format!("127.0.0.1:{http}"),
            api: format!("127.0.0.1:{api}"),
            env: Vec::new(),
            config: None,
            log: data_dir.with_extension("log"),
        }
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spoor"));
        if let Some(config) = &self.config {
            cmd.args(["serve", "--config"]).arg(config);
        } else {
            cmd.arg("serve");
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--otlp-grpc-listen", &self.grpc, "--otlp-http-listen", &self.http, "--http-listen", &self.api])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn spoor");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://{}/ready", self.api);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("spoor exited early with {status}:\n{}", self.log());
            }
            if let Ok(r) = blocking_get(&url)
                && r.0 == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("spoor not ready in time:\n{}", self.log());
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        Some(c.wait().unwrap().code().unwrap_or(-1))
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready();
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn otlp_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
    send(method, url, headers, body.into()).await.expect("request")
}

/// A request without headers or body that may fail to connect.
pub async fn try_request(method: &str, url: &str) -> Result<Response, String> {
    send(method, url, &[], Bytes::new()).await
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Response, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(body)).unwrap()).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body })
}

/// A plain HTTP/1.0 GET over std's TcpStream, so it works inside and outside a runtime.
pub fn blocking_get(url: &str) -> Result<(u16, String), ()> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or(())?;
    let (host, path) = rest.split_once('/').ok_or(())?;
    let mut stream = std::net::TcpStream::connect(host).map_err(|_| ())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|_| ())?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|_| ())?;
    let mut out = String::new();
    stream.read_to_string(&mut out).map_err(|_| ())?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(())?;
    Ok((status, out))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The JSON body of a one-span-per-id export for trace `trace_hex`.
pub fn json_spans(trace_hex: &str, span_hexes: &[&str]) -> String {
    let spans: Vec<String> = span_hexes
        .iter()
        .map(|s| format!(r#"{{"traceId":"{trace_hex}","spanId":"{s}","name":"op-{s}","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000"}}"#))
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

/// Span IDs (lowercase hex) of a trace fetched as v2 JSON; IDs there are base64.
pub fn span_ids(v2: &serde_json::Value) -> Vec<String> {
    use base64::Engine;
    let mut out = Vec::new();
    for rs in v2["trace"]["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                let raw = base64::engine::general_purpose::STANDARD.decode(s["spanId"].as_str().unwrap()).unwrap();
                out.push(spoor_model::ids::hex(&raw));
            }
        }
    }
    out
}

pub fn loadgen(s: &Server, transport: &str, record: &Path, seed: u64, rate: u64) -> Child {
    let endpoint = format!("http://{}", if transport == "grpc" { &s.grpc } else { &s.http });
    Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["loadgen", "--endpoint", &endpoint, "--transport", transport, "--connections", "4", "--duration", "60"])
        .args(["--rate", &rate.to_string(), "--seed", &seed.to_string(), "--traces-per-request", "5", "--record"])
        .arg(record)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Acknowledged spans by trace, from a loadgen record file (a torn last line is ignored).
pub fn acked(record: &Path) -> HashMap<String, HashSet<String>> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for line in text.lines() {
        if let Some((t, s)) = line.split_once(' ')
            && t.len() == 32
            && s.len() == 16
        {
            out.entry(t.into()).or_default().insert(s.into());
        }
    }
    out
}

/// Fetches a trace (v2, protobuf) and returns its span IDs, duplicates kept.
pub async fn fetch_span_ids(s: &Server, trace: &str) -> Vec<String> {
    let r =
        request("GET", &s.api_url(&format!("/api/v2/traces/{trace}")), &[("accept", "application/protobuf")], "").await;
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(r.status, 200);
    let t = TraceByIdResponse::decode(r.body).unwrap().trace.unwrap_or_default();
    t.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| spoor_model::ids::hex(&s.span_id))
        .collect()
}

pub async fn assert_all_present_once(s: &Server, acked: &HashMap<String, HashSet<String>>) {
    use futures_util::StreamExt;
    // Eight fetches in flight: a kill -9 round checks tens of thousands of traces.
    let mut checks = futures_util::stream::iter(acked)
        .map(|(trace, spans)| async move { (trace, spans, fetch_span_ids(s, trace).await) })
        .buffer_unordered(8);
    while let Some((trace, spans, got)) = checks.next().await {
        let unique: HashSet<String> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "trace {trace} returned a span twice");
        let missing: Vec<_> = spans.difference(&unique).collect();
        assert!(missing.is_empty(), "trace {trace}: acknowledged spans lost: {missing:?}");
    }
}

/// Sends `n` one-trace requests; returns their trace IDs.
pub async fn send_traces(s: &Server, first: u32, n: u32) -> Vec<String> {
    let mut out = Vec::new();
    for i in first..first + n {
        let t = format!("{:032x}", 0xabc0000 + i);
        let r = request(
            "POST",
            &s.otlp_url("/v1/traces"),
            &[("content-type", "application/json")],
            json_spans(&t, &["0000000000000001"]),
        )
        .await;
        assert_eq!(r.status, 200);
        out.push(t);
    }
    out
}

/// `rounds` times: loadgen (alternating gRPC and HTTP, `rate` spans/s, 0 = flat out) against
/// `s`, kill -9 after a pseudo-random `min_ms..min_ms + spread_ms`, restart, and check every
/// span acknowledged so far (recorded in `record`) is there exactly once.
pub async fn kill9_rounds(s: &mut Server, record: &Path, rounds: u64, rate: u64, min_ms: u64, spread_ms: u64) {
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut seen = HashMap::new();
    for round in 0..rounds {
        let transport = if round % 2 == 0 { "grpc" } else { "http" };
        let before = std::fs::metadata(record).map(|m| m.len()).unwrap_or(0);
        let mut lg = loadgen(s, transport, record, round + 1, rate);
        // The kill point counts from the first acknowledgement, not from the spawn: a debug
        // load generator on a busy CI machine can take over a second to build its payloads.
        let waited = std::time::Instant::now();
        while std::fs::metadata(record).map(|m| m.len()).unwrap_or(0) == before {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "round {round}: no acknowledgement in 30 s\n{}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(min_ms + rng % spread_ms)).await;
        s.kill9();
        // Let the load generator record the last replies it got, then stop it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        lg.kill().unwrap();
        lg.wait().unwrap();
        s.spawn();
        s.wait_ready();
        // Each round checks what it acknowledged; the last also checks every earlier round again
        // (a later crash must not lose or duplicate what an earlier one kept).
        let all = acked(record);
        let new: HashMap<_, _> =
            all.iter().filter(|(t, sp)| seen.get(*t) != Some(*sp)).map(|(t, sp)| (t.clone(), sp.clone())).collect();
        assert!(!new.is_empty(), "round {round}: nothing was acknowledged");
        assert_all_present_once(s, if round + 1 == rounds { &all } else { &new }).await;
        seen = all;
    }
}
