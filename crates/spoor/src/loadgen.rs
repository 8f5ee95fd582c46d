//! `spoor loadgen`: the project's benchmark driver. Builds realistic traces of an internal
//! developer platform (portal, CI/CD, deploys, chat) and sends them over OTLP.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use spoor_model::ids::hex;
use spoor_model::otlp::*;
use spoor_server::client::{OtlpClient, Outcome, Transport};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Server endpoint, e.g. http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// grpc or http (protobuf).
    #[arg(long, default_value = "grpc")]
    transport: String,
    /// Target spans per second across all connections; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Concurrent connections (each with one request in flight).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many spans have been sent (0: no limit).
    #[arg(long, default_value_t = 0)]
    spans: u64,
    /// Traces per export request.
    #[arg(long, default_value_t = 10)]
    traces_per_request: usize,
    /// Tenant to send as X-Scope-OrgID.
    #[arg(long)]
    tenant: Option<String>,
    /// Append `<trace id> <span id>` for every acknowledged span to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Seed for the trace generator (per connection: seed + index).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// SplitMix64: fast, seedable, good enough for synthetic data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-normal with the given median and shape.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }
    fn nonzero(&mut self) -> u64 {
        self.next().max(1)
    }
}

const SERVICES: &[(&str, &str)] = &[
    ("portal", "frontend"),
    ("backstage", "platform"),
    ("auth", "platform"),
    ("catalog", "platform"),
    ("jenkins", "ci"),
    ("argocd", "deploy"),
    ("chat", "collab"),
    ("labs", "learning"),
];
const OPERATIONS: &[&str] = &[
    "GET /api/catalog", "POST /api/login", "SELECT entities", "render page", "build pipeline",
    "deploy-to-production", "sync application", "POST /messages", "start lab", "checkout repo",
];

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// One request's worth of traces; returns the request and (trace, span) IDs in it.
pub fn build_request(rng: &mut Rng, traces: usize, now_ns: u64) -> (ExportTraceServiceRequest, Vec<([u8; 16], [u8; 8])>) {
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut ids = Vec::new();
    for _ in 0..traces {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&rng.nonzero().to_le_bytes());
        trace_id[8..].copy_from_slice(&rng.next().to_le_bytes());
        let n = 10 + rng.below(21) as usize;
        let first_service = rng.below(SERVICES.len() as u64) as usize;
        let service_count = 3 + rng.below(4) as usize;
        let mut spans: Vec<(usize, [u8; 8], u64, u64)> = Vec::with_capacity(n); // service, id, start, end
        let root_dur = rng.lognormal(80e6, 0.8) as u64 + n as u64 * 1000;
        let start0 = now_ns - root_dur;
        for i in 0..n {
            let span_id = rng.nonzero().to_le_bytes();
            let (service, parent, start, end) = if i == 0 {
                (first_service, None, start0, start0 + root_dur)
            } else {
                let p = rng.below(i as u64) as usize;
                let (ps, _, pstart, pend) = spans[p];
                let service = if rng.below(3) == 0 {
                    (first_service + rng.below(service_count as u64) as usize) % SERVICES.len()
                } else {
                    ps
                };
                let span = pend.saturating_sub(pstart).max(2);
                let start = pstart + rng.below(span / 2);
                let dur = (rng.lognormal(span as f64 / 4.0, 0.6) as u64).clamp(1, pend - start);
                (service, Some(spans[p].1), start, start + dur)
            };
            spans.push((service, span_id, start, end));
            let error = rng.below(20) == 0;
            let op = OPERATIONS[rng.below(OPERATIONS.len() as u64) as usize];
            let kind = if parent.is_none() { 2 } else { 1 + rng.below(5) as i32 };
            let status_code = if error { 500 } else { 200 };
            let attributes = vec![
                kv("http.request.method", s(if op.starts_with("POST") { "POST" } else { "GET" })),
                kv("http.route", s(op)),
                kv("http.response.status_code", any_value::Value::IntValue(status_code)),
                kv("url.scheme", s("https")),
                kv("server.address", s(SERVICES[service].0)),
                kv("net.peer.port", any_value::Value::IntValue(8000 + rng.below(100) as i64)),
                kv("db.system", s(if op.starts_with("SELECT") { "postgresql" } else { "none" })),
                kv("user.id", s(&format!("user-{}", rng.below(5000)))),
                kv("retry.count", any_value::Value::IntValue(rng.below(3) as i64)),
                kv("sample.ratio", any_value::Value::DoubleValue(rng.unit())),
                kv("cache.hit", any_value::Value::BoolValue(rng.below(2) == 0)),
            ];
            let events = if error {
                vec![Event {
                    time_unix_nano: end,
                    name: "exception".into(),
                    attributes: vec![kv("exception.type", s("TimeoutError")), kv("exception.message", s("upstream timed out"))],
                    dropped_attributes_count: 0,
                }]
            } else {
                Vec::new()
            };
            by_service[service].push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                name: op.into(),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events,
                status: error.then(|| Status { message: "upstream timed out".into(), code: 2 }),
                flags: 0x101,
                ..Default::default()
            });
            ids.push((trace_id, span_id));
        }
    }
    let resource_spans = by_service
        .into_iter()
        .enumerate()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(i, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(SERVICES[i].0)),
                    kv("service.namespace", s(SERVICES[i].1)),
                    kv("k8s.namespace.name", s("production")),
                    kv("deployment.environment", s("prod")),
                ],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "spoor.loadgen".into(), version: "1.0.0".into(), ..Default::default() }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, ids)
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let transport = match args.transport.as_str() {
        "grpc" => Transport::Grpc,
        "http" => Transport::Http,
        other => anyhow::bail!("--transport must be grpc or http, not {other:?}"),
    };
    let record = match &args.record {
        Some(path) => Some(Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new().create(true).append(true).open(path)?,
        ))),
        None => None,
    };
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for c in 0..args.connections.max(1) {
        let client = OtlpClient::new(transport, &args.endpoint, args.tenant.clone());
        let (args, totals, stop, record) = (args.clone(), totals.clone(), stop.clone(), record.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(args.seed.wrapping_add(c as u64));
            let per_conn_rate = args.rate as f64 / args.connections.max(1) as f64;
            let mut latencies = Vec::new();
            let mut sent_here = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
                let (req, ids) = build_request(&mut rng, args.traces_per_request, now_ns);
                let body = Bytes::from(req.encode_to_vec());
                let n = ids.len() as u64;
                if args.spans > 0 && totals.sent.fetch_add(n, Ordering::Relaxed) >= args.spans {
                    stop.store(true, Ordering::Relaxed);
                    break;
                } else if args.spans == 0 {
                    totals.sent.fetch_add(n, Ordering::Relaxed);
                }
                let t0 = Instant::now();
                let outcome = client.export(body).await;
                latencies.push(t0.elapsed().as_secs_f64());
                match outcome {
                    Ok(Outcome::Accepted { rejected, .. }) => {
                        totals.accepted.fetch_add(n - rejected as u64, Ordering::Relaxed);
                        totals.refused.fetch_add(rejected as u64, Ordering::Relaxed);
                        if let (Some(file), 0) = (&record, rejected) {
                            let mut lines = String::with_capacity(ids.len() * 50);
                            for (t, s) in &ids {
                                lines.push_str(&format!("{} {}\n", hex(t), hex(s)));
                            }
                            let _ = file.lock().unwrap().write_all(lines.as_bytes());
                        }
                    }
                    Ok(Outcome::Refused { retry_after_secs, .. }) => {
                        totals.refused.fetch_add(n, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100).max(Duration::from_secs(retry_after_secs.unwrap_or(0)).min(Duration::from_secs(1)))).await;
                    }
                    Err(_) => {
                        totals.errors.fetch_add(n, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                sent_here += n;
                if per_conn_rate > 0.0 {
                    let due = start + Duration::from_secs_f64(sent_here as f64 / per_conn_rate);
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0.0) * 1e3;
    let accepted = totals.accepted.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "seconds": elapsed,
        "requests": latencies.len(),
        "spans_accepted": accepted,
        "spans_refused": totals.refused.load(Ordering::Relaxed),
        "spans_failed": totals.errors.load(Ordering::Relaxed),
        "accepted_spans_per_sec": accepted as f64 / elapsed,
        "latency_ms": { "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0) },
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "{:.1}s: {} spans accepted ({:.0}/s), {} refused, {} failed; {} requests, latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            elapsed, accepted, accepted as f64 / elapsed, summary["spans_refused"], summary["spans_failed"],
            latencies.len(), pct(0.5), pct(0.9), pct(0.99), pct(1.0)
        );
    }
    Ok(())
}
