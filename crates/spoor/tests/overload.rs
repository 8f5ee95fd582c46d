//! Overload and abuse over loopback, cases R9, R12, R13 and R14 of specs/reliability.md: a
//! tail sampler flooded with new trace IDs stays bounded (or pushes back); the memory limiter
//! keeps resident memory near its hard limit under a blast (two gaps against the spec are
//! ignored tests marked "known bug"); slowloris connections are closed at the header read
//! timeout while a normal client is served; an HTTP/2 client opening more streams than the
//! server allows is queued or refused, never buffered without bound.
//!
//! Timing assertions are generous (a loaded 2-core CI machine); the numbers measured are
//! printed (`cargo test -p spoor --test overload -- --nocapture`).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use spoor_agent::client::{OtlpClient, Outcome, Transport};
use spoor_model::otlp::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, any_value,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const QUIET: &[(&str, &str)] =
    &[("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"), ("SPOOR__COMPACTION__ENABLED", "false")];
const MIB: u64 = 1 << 20;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Starts `spoor serve` with `yaml` as its config file, plus [`QUIET`] and `env`.
fn start_with(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> Server {
    let config = dir.join("spoor.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut s = Server::unstarted(&dir.join("data"));
    s.config = Some(config);
    s.env = QUIET.iter().chain(env).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.spawn();
    s.wait_ready();
    s
}

fn pid(s: &Server) -> u32 {
    s.child.as_ref().expect("server running").id()
}

fn assert_alive(s: &mut Server) {
    if let Some(status) = s.child.as_mut().unwrap().try_wait().unwrap() {
        panic!("spoor died ({status}):\n{}", s.log());
    }
}

/// A number field of /proc/<pid>/status (`VmRSS` in kB, `Threads`).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of a process, in bytes.
fn vm_rss(pid: u32) -> Option<u64> {
    Some(proc_status(pid, "VmRSS")? * 1024)
}

/// Samples a process's VmRSS every 50 ms on a plain thread (so a busy test runtime does not
/// skip samples) and keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    peak_threads: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<(f64, u64)>>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let peak_threads = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak, samples, threads) = (stop.clone(), peak.clone(), samples.clone(), peak_threads.clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let mut timeline = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = vm_rss(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                        timeline.push((t0.elapsed().as_secs_f64(), rss));
                    }
                    if let Some(n) = proc_status(pid, "Threads") {
                        threads.fetch_max(n, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                timeline
            })
        };
        RssSampler { stop, peak, peak_threads, samples, thread: Some(thread) }
    }

    fn peak_threads(&self) -> u64 {
        self.peak_threads.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns (peak bytes, number of samples).
    fn finish(self) -> (u64, u64) {
        let (peak, samples, _) = self.finish_with_timeline();
        (peak, samples)
    }

    /// Stops sampling; returns (peak bytes, number of samples, (seconds, bytes) samples).
    fn finish_with_timeline(mut self) -> (u64, u64, Vec<(f64, u64)>) {
        self.stop.store(true, Ordering::Relaxed);
        let timeline = self.thread.take().unwrap().join().unwrap();
        (self.peak.load(Ordering::Relaxed), self.samples.load(Ordering::Relaxed), timeline)
    }
}

/// A metric's value summed over its label sets; `None` when it is absent.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("bad sample: {line}"));
        *sum.get_or_insert(0.0) += value;
    }
    sum
}

async fn metrics(s: &Server) -> String {
    request("GET", &s.api_url("/metrics"), &[], "").await.text()
}

/// Scrapes `/metrics` until `done` holds (or 15 s pass); returns the last scrape.
async fn metrics_when(s: &Server, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = metrics(s).await;
        if done(&m) || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post_json(s: &Server, body: String) -> Response {
    request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body).await
}

/// One span in each of the `n` traces numbered `first..first + n`, as OTLP/JSON.
fn traces_body(first: u64, n: u64) -> String {
    let start = now_ns() - 1_000_000_000;
    let spans: Vec<String> = (first..first + n)
        .map(|i| {
            format!(
                r#"{{"traceId":"{:016x}{:016x}","spanId":"0000000000000001","name":"op","kind":2,"startTimeUnixNano":"{start}","endTimeUnixNano":"{}"}}"#,
                0x0e12_0000_0000_0000u64 + i,
                (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                start + 5_000_000
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"flood"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

fn retry_after(r: &Response) -> Option<u64> {
    r.headers.get("retry-after")?.to_str().ok()?.parse().ok()
}

const SAMPLING: &str = "\
processors:
  tail_sampling:
    decision_wait: 30s
    num_traces: 100
    policies:
      - {name: everything, type: always_sample}
";

/// R12: 2,000 new trace IDs against `num_traces: 100`: every request is acknowledged, the
/// oldest undecided traces are evicted (and counted), the sampler holds at most 100 traces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_flooded_tail_sampler_evicts_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_with(dir.path(), SAMPLING, &[]);
    let rss_before = vm_rss(pid(&s)).unwrap();
    for batch in 0..20 {
        let r = post_json(&s, traces_body(batch * 100, 100)).await;
        assert_eq!(r.status, 200, "batch {batch}: {}", r.text());
    }
    // The sampler publishes its counters at every tick (100 ms).
    let m = metrics_when(&s, |m| metric(m, "spoor_sampling_evicted_traces_total").unwrap_or(0.0) >= 1900.0).await;
    let evicted = metric(&m, "spoor_sampling_evicted_traces_total").unwrap_or(0.0);
    let too_early = metric(&m, "spoor_sampling_dropped_too_early_total").unwrap_or(0.0);
    let in_memory = metric(&m, "spoor_sampling_traces_in_memory").expect("traces_in_memory gauge");
    let new = metric(&m, "spoor_sampling_new_traces_total").unwrap_or(0.0);
    let rss_after = vm_rss(pid(&s)).unwrap();
    eprintln!(
        "R12 evict: new {new}, evicted {evicted}, dropped too early {too_early}, in memory {in_memory}; \
         RSS {} → {} MiB",
        rss_before / MIB,
        rss_after / MIB
    );
    assert_eq!(new, 2000.0, "{m}");
    assert!(evicted >= 1900.0, "evicted {evicted}:\n{m}");
    assert!(too_early >= 1900.0, "undecided evictions are counted as dropped too early: {too_early}");
    assert!(in_memory <= 100.0, "the sampler holds {in_memory} traces, over num_traces");
    assert_alive(&mut s);
    assert_eq!(request("GET", &s.api_url("/ready"), &[], "").await.status, 200);
    // Still ingesting.
    assert_eq!(post_json(&s, traces_body(5000, 1)).await.status, 200);
}

/// R12 with `block_on_overflow`: once 100 traces wait for a decision, clients get 503 +
/// Retry-After naming `sampler_full`, and nothing is evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_full_tail_sampler_with_block_on_overflow_pushes_back() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = SAMPLING.replace("num_traces: 100\n", "num_traces: 100\n    block_on_overflow: true\n");
    let mut s = start_with(dir.path(), &yaml, &[]);
    let (mut accepted, mut refused) = (0, 0);
    for batch in 0..50 {
        let r = post_json(&s, traces_body(batch * 10, 10)).await;
        match r.status {
            200 => {
                assert_eq!(refused, 0, "batch {batch} accepted after a refusal (decisions are 30 s away)");
                accepted += 1;
            }
            503 => {
                assert!(retry_after(&r).is_some_and(|s| s >= 1), "503 without Retry-After: {:?}", r.headers);
                assert!(r.text().contains("sampler_full"), "{}", r.text());
                refused += 1;
            }
            other => panic!("batch {batch}: unexpected {other}: {}", r.text()),
        }
    }
    let m = metrics_when(&s, |m| metric(m, "spoor_sampling_traces_in_memory") == Some(100.0)).await;
    let evicted = metric(&m, "spoor_sampling_evicted_traces_total").unwrap_or(0.0);
    let too_early = metric(&m, "spoor_sampling_dropped_too_early_total").unwrap_or(0.0);
    let in_memory = metric(&m, "spoor_sampling_traces_in_memory");
    eprintln!(
        "R12 block: {accepted} requests accepted, {refused} refused (503 sampler_full); evicted {evicted}, in memory {in_memory:?}"
    );
    assert_eq!(accepted, 10, "exactly num_traces / 10 requests fit");
    assert_eq!(refused, 40);
    assert_eq!(evicted, 0.0, "block_on_overflow never evicts:\n{m}");
    assert_eq!(too_early, 0.0);
    assert_eq!(in_memory, Some(100.0), "{m}");
    assert_alive(&mut s);
    assert_eq!(request("GET", &s.api_url("/ready"), &[], "").await.status, 200);
}

#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    refused: u64,
    refused_without_retry_after: u64,
    other: BTreeMap<u16, u64>,
    transport_errors: Vec<String>,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.ok += t.ok;
        self.refused += t.refused;
        self.refused_without_retry_after += t.refused_without_retry_after;
        for (k, v) in t.other {
            *self.other.entry(k).or_default() += v;
        }
        self.transport_errors.extend(t.transport_errors);
    }
}

/// A server after an R9 overload: its memory limiter's limits and the peak RSS seen.
struct Overload {
    s: Server,
    soft: u64,
    hard: u64,
    peak: u64,
}

/// R9's load: 8 clients, the n-th starting `n × ramp` after the first, blast ~2 MiB protobuf
/// requests until 8 s have passed at a server whose memory limiter has a hard limit of idle
/// RSS + 150 MiB (soft: + 100 MiB), and no other limit near. Asserts what must hold under
/// the load: refusals are counted 503s with Retry-After, nothing else fails.
async fn overload_memory_limiter(dir: &Path, ramp: Duration) -> Overload {
    // The limiter's gauge exists only when it is on: measure idle RSS on a plain server.
    let idle = {
        let s = Server::start(&dir.join("probe"), QUIET);
        tokio::time::sleep(Duration::from_millis(500)).await;
        vm_rss(pid(&s)).unwrap()
    };
    let limit_mib = idle / MIB + 150;
    let (hard, soft) = (limit_mib * MIB, (limit_mib - 50) * MIB);
    let big = 8u64 << 30;
    let yaml = format!(
        "processors:\n  memory_limiter:\n    check_interval: 100ms\n    limit_mib: {limit_mib}\n    spike_limit_mib: 50\n\
         limits:\n  max_live_bytes: {big}\n  max_bytes_per_tenant: {big}\n"
    );
    let mut s = start_with(dir, &yaml, &[]);

    // Distinct traces (the head keeps each span once), ~2 MiB of protobuf per request.
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        tokio::task::spawn_blocking(|| {
            let now = now_ns();
            (0..64u64)
                .map(|i| {
                    let mut rng = spoor_model::synth::Rng::new(0x0e12 + i);
                    Bytes::from(spoor_model::synth::build_request(&mut rng, 280, now).0.encode_to_vec())
                })
                .collect()
        })
        .await
        .unwrap(),
    );
    let body_mib = bodies[0].len() as f64 / MIB as f64;

    let rss = RssSampler::start(pid(&s));
    let started = Instant::now();
    let until = started + Duration::from_secs(8);
    let next = Arc::new(AtomicUsize::new(0));
    let url = s.otlp_url("/v1/traces");
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..8u32 {
        let (bodies, next, url) = (bodies.clone(), next.clone(), url.clone());
        clients.spawn(async move {
            tokio::time::sleep(ramp * n).await;
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut t = Tally::default();
            while Instant::now() < until {
                let body = bodies[next.fetch_add(1, Ordering::Relaxed) % bodies.len()].clone();
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(Full::new(body))
                    .unwrap();
                let resp = match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(e)) => {
                        t.transport_errors.push(format!("{e:?}"));
                        continue;
                    }
                    Err(_) => {
                        t.transport_errors.push("no response within 30 s".into());
                        continue;
                    }
                };
                let status = resp.status().as_u16();
                let has_retry_after = resp.headers().contains_key("retry-after");
                let _ = resp.into_body().collect().await;
                match status {
                    200 => t.ok += 1,
                    503 => {
                        t.refused += 1;
                        t.refused_without_retry_after += !has_retry_after as u64;
                    }
                    other => *t.other.entry(other).or_default() += 1,
                }
            }
            t
        });
    }
    let mut total = Tally::default();
    while let Some(t) = clients.join_next().await {
        total.add(t.unwrap());
    }
    let load_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (peak, samples, timeline) = rss.finish_with_timeline();
    let m = metrics(&s).await;
    let refused_metric = metric(&m, "spoor_requests_refused_total").unwrap_or(0.0);
    let live = metric(&m, "spoor_live_bytes").unwrap_or(0.0);
    let timeline: Vec<String> = timeline.iter().step_by(10).map(|(t, rss)| format!("{t:.1}s:{}", rss / MIB)).collect();
    eprintln!(
        "R9 (clients {ramp:?} apart): idle RSS {} MiB, soft {} MiB, hard {} MiB; peak RSS {} MiB ({samples} samples), {} MiB after the load; \
         {body_mib:.2} MiB bodies for {load_secs:.1} s: {} accepted, {} refused (server counted {refused_metric}), \
         other {:?}, transport errors {}; {:.1} MiB of live traces\n  RSS every 0.5 s, MiB: {}",
        idle / MIB,
        soft / MIB,
        hard / MIB,
        peak / MIB,
        vm_rss(pid(&s)).unwrap_or(0) / MIB,
        total.ok,
        total.refused,
        total.other,
        total.transport_errors.len(),
        live / MIB as f64,
        timeline.join(" "),
    );
    assert_alive(&mut s);
    assert!(total.transport_errors.is_empty(), "requests failed without a response: {:?}", total.transport_errors);
    assert!(total.other.is_empty(), "statuses other than 200 and 503: {:?}", total.other);
    assert!(total.ok > 0, "nothing was accepted");
    assert!(total.refused > 0, "the memory limiter never refused (peak {} MiB)", peak / MIB);
    assert_eq!(total.refused_without_retry_after, 0, "503s without Retry-After");
    assert!(
        refused_metric >= total.refused as f64,
        "spoor_requests_refused_total {refused_metric} < {}",
        total.refused
    );
    assert!(m.contains("reason=\"memory_limited\""), "refusals are counted as memory_limited");
    Overload { s, soft, hard, peak }
}

/// Polls with a small request until one is accepted; the time it took, or the last refusal.
async fn serving_again(s: &Server, within: Duration) -> Result<Duration, String> {
    let since = Instant::now();
    let mut last = String::new();
    while since.elapsed() < within {
        let r = post_json(s, traces_body(1 << 40, 1)).await;
        if r.status == 200 {
            return Ok(since.elapsed());
        }
        last = format!("{} {} (RSS {} MiB)", r.status, r.text(), vm_rss(pid(s)).unwrap_or(0) / MIB);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// R9: 8 clients arriving over 2 s overload the server (over a thousand 2 MiB requests a
/// second offered, about ten accepted in all): RSS stays near the hard limit, every refusal is a
/// counted 503 + Retry-After, nothing else fails, and the server stays up and ready. Serving
/// again once the load stops is `r9_serves_again_within_two_check_intervals_without_intervention`
/// (ignored: known bug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_memory_limiter_bounds_rss_under_overload() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = overload_memory_limiter(dir.path(), Duration::from_millis(300)).await;
    // Tolerance over the hard limit: the limiter samples RSS every check_interval (100 ms) and
    // counts requests being decoded at 4× their size, but request bodies are buffered whole
    // before admission (8 clients × 2 MiB, plus hyper's read buffers), the sampler here reads
    // every 50 ms, and the allocator keeps freed pages for a while. 64 MiB covers that; more
    // means the limiter is not what bounds memory.
    assert!(
        o.peak <= o.hard + 64 * MIB,
        "peak RSS {} MiB is over the hard limit {} MiB + 64 MiB tolerance",
        o.peak / MIB,
        o.hard / MIB
    );
    assert_alive(&mut o.s);
    assert_eq!(request("GET", &o.s.api_url("/ready"), &[], "").await.status, 200);
    // Not asserted here (see above); measured for the record.
    let recovered = serving_again(&o.s, Duration::from_secs(3)).await;
    eprintln!("R9: serving again within 3 s of the load stopping (soft limit {} MiB): {recovered:?}", o.soft / MIB);
}

/// R9 with all 8 clients starting at once. KNOWN BUG: the limiter admits a request while
/// RSS + 4 × (bytes being decoded) is under the soft limit, and at idle that admits all 8
/// requests (16 MiB of protobuf) at once; they took RSS from ~33 MiB to 197–263 MiB here
/// (10–14× their size; hard limit 182 MiB) before the next check refused anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open: 8 simultaneous 2 MiB clients peak at 183–197 MiB against a 182 MiB hard limit (was 197–263 before the early refusal and the 12× estimate)"]
async fn r9_simultaneous_burst_stays_under_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let o = overload_memory_limiter(dir.path(), Duration::ZERO).await;
    assert!(o.peak <= o.hard, "peak RSS {} MiB is over the hard limit {} MiB", o.peak / MIB, o.hard / MIB);
}

/// R9 as the spec words it: normal service within 2 check intervals after the load stops,
/// without intervention. KNOWN BUG: RSS stays over the soft limit after the load (the live
/// traces accepted before the limiter refused, plus memory the allocator keeps), nothing
/// frees it under memory pressure (no flush, no purge), so the server refuses everything until
/// `blocks.max_block_age_secs` flushes the head, and longer if the allocator keeps the pages.
/// Of 19 runs here, 7 were still refusing at the end (RSS 146–161 MiB vs a 132 MiB soft
/// limit, 3–15 s after the load), 4 took 2.4–10 s, 8 served again within 0.9 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open: service resumes 0.6–1.3 s after the load stops, not within two 100 ms check intervals (it used to stay refusing)"]
async fn r9_serves_again_within_two_check_intervals_without_intervention() {
    let dir = tempfile::tempdir().unwrap();
    let o = overload_memory_limiter(dir.path(), Duration::from_millis(300)).await;
    let recovered = serving_again(&o.s, Duration::from_secs(15)).await;
    eprintln!("R9 recovery without a flush: {recovered:?}");
    let took = recovered.unwrap_or_else(|last| panic!("still refusing 15 s after the load stopped: {last}"));
    assert!(took <= Duration::from_millis(500), "serving again only after {took:?}");
}

/// R13: 300 connections send a request head one byte per second, 30 more send nothing; with
/// `header_read_timeout_secs: 2` the server closes each within the timeout + 3 s, and a
/// normal client posting every 200 ms is served within 2 s every time meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_slowloris_connections_are_closed_at_the_header_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let mut env = QUIET.to_vec();
    env.push(("SPOOR__SERVER__HEADER_READ_TIMEOUT_SECS", "2"));
    let mut s = Server::start(&dir.path().join("data"), &env);
    let head: &'static [u8] =
        b"POST /v1/traces HTTP/1.1\r\nHost: spoor\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

    // Each task: (silent?, time from connect to close or None if still open after 20 s,
    // bytes sent, bytes the server answered before closing).
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..330 {
        let addr = s.http.clone();
        let silent = i >= 300;
        slow.spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.expect("connect");
            let t0 = Instant::now();
            let (mut sent, mut answered) = (0usize, 0usize);
            let mut buf = [0u8; 1024];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = tcp.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return (silent, Some(t0.elapsed()), sent, answered),
                        Ok(n) => answered += n,
                    },
                    _ = tick.tick() => {
                        if t0.elapsed() > Duration::from_secs(20) {
                            return (silent, None, sent, answered);
                        }
                        if !silent && sent < head.len() {
                            if tcp.write_all(&head[sent..sent + 1]).await.is_err() {
                                return (silent, Some(t0.elapsed()), sent, answered);
                            }
                            sent += 1;
                        }
                    }
                }
            }
        });
    }

    // A normal client meanwhile, on fresh connections.
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(7) {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), post_json(&s, traces_body(0x51_0000 + i, 1)))
            .await
            .unwrap_or_else(|_| panic!("request {i} took over 2 s during the slowloris"));
        assert_eq!(r.status, 200, "{}", r.text());
        latencies.push(t.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut closes: Vec<(bool, Option<Duration>, usize, usize)> = Vec::new();
    while let Some(r) = slow.join_next().await {
        closes.push(r.unwrap());
    }
    let open: Vec<_> = closes.iter().filter(|c| c.1.is_none()).collect();
    let times = |silent: bool| {
        let mut t: Vec<f64> =
            closes.iter().filter(|c| c.0 == silent).filter_map(|c| c.1).map(|d| d.as_secs_f64()).collect();
        t.sort_by(f64::total_cmp);
        (
            t.first().copied().unwrap_or(0.0),
            t.get(t.len() / 2).copied().unwrap_or(0.0),
            t.last().copied().unwrap_or(0.0),
        )
    };
    let answered = closes.iter().filter(|c| c.3 > 0).count();
    let max_sent = closes.iter().map(|c| c.2).max().unwrap_or(0);
    let max_latency = latencies.iter().max().unwrap();
    eprintln!(
        "R13: closed after (min, median, max) s: slow senders {:?}, silent {:?}; still open {}; at most {max_sent} \
         header bytes sent; {answered} got a reply before the close; normal client: {} requests, max latency {max_latency:?}",
        times(false),
        times(true),
        open.len(),
        latencies.len(),
    );
    assert!(open.is_empty(), "{} slow connections still open after 20 s", open.len());
    for (silent, closed, sent, _) in &closes {
        let closed = closed.unwrap();
        assert!(
            closed <= TIMEOUT + Duration::from_secs(3),
            "closed after {closed:?} (silent: {silent}, {sent} bytes sent)"
        );
    }
    assert_alive(&mut s);
    assert_eq!(post_json(&s, traces_body(0x52_0000, 1)).await.status, 200);
}

/// A small valid Export request: one span of trace `n`.
fn small_export(n: u64) -> Bytes {
    let start = now_ns() - 1_000_000_000;
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&0x0e14_0000_0000_0000u64.to_be_bytes());
    trace_id[8..].copy_from_slice(&(n + 1).to_be_bytes());
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: 1u64.to_be_bytes().to_vec(),
        name: "stream".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        ..Default::default()
    };
    let service = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue("streams".into())) }),
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![service], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    };
    Bytes::from(req.encode_to_vec())
}

fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + msg.len());
    f.push(0);
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

/// Raw HTTP/2 framing, for a client that ignores the server's stream limit.
mod h2raw {
    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const END_STREAM: u8 = 1;
    pub const END_HEADERS: u8 = 4;
    pub const ACK: u8 = 1;
    pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
    pub const REFUSED_STREAM: u32 = 7;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Frame> {
        let mut h = [0u8; 9];
        r.read_exact(&mut h).await?;
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let mut payload = vec![0; len];
        r.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// HPACK "literal header field without indexing, new name", no Huffman (short strings).
    pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            assert!(name.len() < 127 && value.len() < 127);
            out.push(0);
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.push(value.len() as u8);
            out.extend_from_slice(value.as_bytes());
        }
        out
    }
}

/// R14: the gRPC port advertises a bound on concurrent streams and refuses streams beyond
/// it (REFUSED_STREAM) while the allowed ones complete; a well-behaved client opening 1,000
/// Export streams at once on one connection gets every one answered (the excess waits in the
/// client); memory stays bounded and another client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r14_grpc_streams_beyond_the_limit_wait_or_are_refused() {
    use h2raw::*;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), QUIET);
    let rss_before = vm_rss(pid(&s)).unwrap();
    let rss = RssSampler::start(pid(&s));

    // Another client, on its own connection, exporting every 20 ms until told to stop.
    let other_stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (endpoint, stop) = (format!("http://{}", s.grpc), other_stop.clone());
        tokio::spawn(async move {
            let client = OtlpClient::new(Transport::Grpc, &endpoint, None);
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let outcome = tokio::time::timeout(Duration::from_secs(10), client.export(small_export(1 << 32 | n)))
                    .await
                    .unwrap_or_else(|_| panic!("export {n} of the other client took over 10 s"))
                    .unwrap_or_else(|e| panic!("export {n} of the other client failed: {e}"));
                assert!(matches!(outcome, Outcome::Accepted { rejected: 0, .. }), "{outcome:?}");
                latencies.push(t.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        })
    };

    // 1. A raw client: read the advertised limit, open 100 streams more than that.
    let mut tcp = TcpStream::connect(&s.grpc).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let limit = loop {
        let f = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut tcp)).await.unwrap().unwrap();
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            let limit =
                f.payload.chunks(6).find(|p| u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS);
            break limit.map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
        }
    };
    let limit = limit.expect("the server advertises no SETTINGS_MAX_CONCURRENT_STREAMS: unbounded streams");
    assert_eq!(limit, spoor_server::http::HTTP2_MAX_CONCURRENT_STREAMS);
    tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    let authority = s.grpc.clone();
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", spoor_server::ingest::receive::GRPC_EXPORT_PATH),
        (":authority", &authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    let excess = 100u32;
    let ids: Vec<u32> = (0..limit + excess).map(|i| 2 * i + 1).collect();
    let mut out = Vec::new();
    for id in &ids {
        out.extend(frame(HEADERS, END_HEADERS, *id, &block));
    }
    tcp.write_all(&out).await.unwrap();
    // Bodies are not sent yet: the allowed streams wait in their handlers; the rest are refused.
    let mut refused = HashSet::new();
    let mut other_resets = Vec::new();
    let until = Instant::now() + Duration::from_secs(15);
    while refused.len() < excess as usize && Instant::now() < until {
        let Ok(f) = tokio::time::timeout(Duration::from_secs(1), read_frame(&mut tcp)).await else { continue };
        let f = f.expect("connection closed while streams were open");
        assert_ne!(f.kind, GOAWAY, "GOAWAY: {:?}", f.payload);
        if f.kind == RST_STREAM {
            let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
            if code == REFUSED_STREAM {
                refused.insert(f.stream);
            } else {
                other_resets.push((f.stream, code));
            }
        }
    }
    assert!(other_resets.is_empty(), "streams reset other than REFUSED_STREAM: {other_resets:?}");
    assert_eq!(refused.len(), excess as usize, "streams over the limit of {limit} refused");
    // The limit is per connection: with this one's streams all taken, another is served.
    let other_client = OtlpClient::new(Transport::Grpc, &format!("http://{}", s.grpc), None);
    let outcome = tokio::time::timeout(Duration::from_secs(10), other_client.export(small_export(3 << 32)))
        .await
        .expect("another connection waited over 10 s while this one held every stream")
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted { rejected: 0, .. }), "{outcome:?}");
    // Finish the allowed streams: each gets a gRPC reply (headers, message, trailers).
    let allowed: Vec<u32> = ids.iter().copied().filter(|id| !refused.contains(id)).collect();
    let mut out = Vec::new();
    for id in &allowed {
        out.extend(frame(DATA, END_STREAM, *id, &grpc_frame(&small_export(*id as u64))));
    }
    tcp.write_all(&out).await.unwrap();
    let mut with_data = HashSet::new();
    let mut ended = HashSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while ended.len() < allowed.len() && Instant::now() < until {
        let Ok(f) = tokio::time::timeout(Duration::from_secs(1), read_frame(&mut tcp)).await else { continue };
        let f = f.expect("connection closed before every stream was answered");
        match f.kind {
            DATA if !f.payload.is_empty() => {
                with_data.insert(f.stream);
            }
            HEADERS if f.flags & END_STREAM != 0 => {
                ended.insert(f.stream);
            }
            RST_STREAM => panic!("stream {} reset: {:?}", f.stream, f.payload),
            GOAWAY => panic!("GOAWAY: {:?}", f.payload),
            _ => {}
        }
        if f.kind == DATA && f.flags & END_STREAM != 0 {
            ended.insert(f.stream);
        }
    }
    assert_eq!(ended.len(), allowed.len(), "allowed streams answered");
    // A trailers-only reply (no message) would be an error status.
    assert_eq!(with_data.len(), allowed.len(), "allowed streams answered with a message (grpc-status 0)");
    drop(tcp);

    // 2. A well-behaved client (hyper, one connection) with 1,000 Export streams at once.
    let tcp = TcpStream::connect(&s.grpc).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let url = format!("http://{}{}", s.grpc, spoor_server::ingest::receive::GRPC_EXPORT_PATH);
    let started = Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for n in 0..1000u64 {
        let (mut sender, url) = (sender.clone(), url.clone());
        streams.spawn(async move {
            let req = hyper::Request::post(&url)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(grpc_frame(&small_export(2 << 32 | n)))))
                .unwrap();
            let resp = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await?;
                Ok::<_, hyper::Error>((parts, body.trailers().cloned()))
            };
            match tokio::time::timeout(Duration::from_secs(60), resp).await {
                Err(_) => Err("no reply within 60 s".to_string()),
                Ok(Err(e)) => Err(format!("{e:?}")),
                Ok(Ok((parts, trailers))) => {
                    let status = trailers
                        .as_ref()
                        .and_then(|t| t.get("grpc-status"))
                        .or_else(|| parts.headers.get("grpc-status"))
                        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
                    Ok(status)
                }
            }
        });
    }
    let mut statuses: HashMap<String, u64> = HashMap::new();
    while let Some(r) = streams.join_next().await {
        let key = match r.unwrap() {
            Ok(Some(0)) => "ok".to_string(),
            // UNAVAILABLE: refused cleanly, to be retried.
            Ok(Some(14)) => "unavailable".to_string(),
            Ok(other) => format!("grpc-status {other:?}"),
            Err(e) if e.contains("REFUSED_STREAM") => "refused".to_string(),
            Err(e) => e,
        };
        *statuses.entry(key).or_default() += 1;
    }
    let streams_took = started.elapsed();
    other_stop.store(true, Ordering::Relaxed);
    let latencies = other.await.unwrap();
    let threads = rss.peak_threads();
    let (peak, samples) = rss.finish();
    eprintln!(
        "R14: max concurrent streams {limit}; raw client: {} of {} streams refused (REFUSED_STREAM), {} answered; \
         hyper client: 1000 streams in {streams_took:?}: {statuses:?}; other client: {} exports, max latency {:?}; \
         RSS {} → peak {} MiB ({samples} samples), at most {threads} threads",
        refused.len(),
        ids.len(),
        ended.len(),
        latencies.len(),
        latencies.iter().max(),
        rss_before / MIB,
        peak / MIB,
    );
    let clean = ["ok", "unavailable", "refused"];
    let unclean: Vec<_> = statuses.iter().filter(|(k, _)| !clean.contains(&k.as_str())).collect();
    assert!(unclean.is_empty(), "streams that neither completed nor were refused cleanly: {unclean:?}");
    assert_eq!(statuses.values().sum::<u64>(), 1000);
    assert!(statuses.get("ok").copied().unwrap_or(0) > 0, "{statuses:?}");
    assert!(!latencies.is_empty(), "the other client was not served");
    assert!(peak < rss_before + 200 * MIB, "RSS grew from {} to {} MiB", rss_before / MIB, peak / MIB);
    assert_alive(&mut s);
}
