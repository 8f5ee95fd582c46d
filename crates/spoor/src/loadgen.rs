//! `spoor loadgen`: the project's benchmark driver. Builds realistic traces of an internal
//! developer platform (portal, CI/CD, deploys, chat) and sends them over OTLP; or, with
//! `--query-traces`, reads traces back by ID through the Tempo API and reports latency.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spoor_agent::client::Outcome;
use spoor_model::ids::hex;
use spoor_model::synth::Rng;

mod payloads;

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    target: crate::target::Target,
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
    #[command(flatten)]
    access: crate::http::Access,
    /// Sink mode: accept OTLP/gRPC on this address for --duration seconds, answer every export
    /// with success without decoding it, and report requests and bytes received (a downstream
    /// that costs nothing, for benchmarking `spoor agent`).
    #[arg(long)]
    sink: Option<String>,
    /// Append `<trace id> <span id>` for every acknowledged span to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Seed for the trace generator (per connection: seed + index).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Append the ID of every acknowledged trace (once per request it appears in) to this file.
    #[arg(long)]
    record_traces: Option<PathBuf>,
    /// Query mode: fetch random traces listed in this file (first column: trace ID, as
    /// `--record` or `--record-traces` write) by ID from the query API at --endpoint.
    #[arg(long)]
    query_traces: Option<PathBuf>,
    /// Search mode: run each of these TraceQL queries `--queries` times, one after another,
    /// against the query API at --endpoint; report latency and what each search inspected.
    #[arg(long)]
    search: Vec<String>,
    /// Search mode: the `limit` parameter.
    #[arg(long, default_value_t = 20)]
    search_limit: u32,
    /// Query mode: how many trace-by-ID requests to make (search mode: runs per query).
    #[arg(long, default_value_t = 1000)]
    queries: u64,
    /// How many distinct requests of loadgen's own traces to build up front and then replay
    /// (with new trace IDs and timestamps on every send).
    #[arg(long, default_value_t = 500)]
    pool: usize,
    /// Replay the export requests in this file (written by `scripts/shape-payloads`) instead of
    /// generating loadgen's own traces; trace IDs and timestamps are made new on every send.
    #[arg(long)]
    payloads: Option<PathBuf>,
    /// Resend at once after a refusal instead of honouring the retry hint (to measure what
    /// refusing costs the server).
    #[arg(long)]
    no_backoff: bool,
    /// Report accepted spans per window of this many seconds (`accepted_per_window`).
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Send traces this much older than now (a Go duration such as `240h`): old data for tiered
    /// retention's measurements (`scripts/bench-tiers`).
    #[arg(long, value_parser = backdate)]
    backdate: Option<u64>,
}

fn backdate(v: &str) -> Result<u64, String> {
    spoor_model::duration::parse(v)
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .ok_or_else(|| format!("{v:?} is not a duration such as 240h"))
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

/// Accepts everything, decodes nothing.
struct Sink {
    requests: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl spoor_server::ingest::receive::Ingest for Sink {
    fn multitenancy_enabled(&self) -> bool {
        false
    }

    fn max_request_bytes(&self) -> usize {
        256 << 20
    }

    async fn ingest(
        self: Arc<Self>,
        export: spoor_server::ingest::receive::Export,
    ) -> Result<spoor_model::otlp::ExportTraceServiceResponse, spoor_server::Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(export.body.len() as u64, Ordering::Relaxed);
        Ok(Default::default())
    }
}

async fn sink(args: &Args, addr: &str) -> anyhow::Result<()> {
    let s = Arc::new(Sink { requests: Default::default(), bytes: Default::default() });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("sink listening on {addr} for {} s", args.duration);
    let server =
        tokio::spawn(axum::serve(listener, spoor_server::ingest::receive::grpc_router(s.clone())).into_future());
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    server.abort();
    println!(
        "sink: {} requests, {:.1} MiB",
        s.requests.load(Ordering::Relaxed),
        s.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    );
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = &args.sink {
        return sink(&args, addr).await;
    }
    if let Some(file) = &args.query_traces {
        return query(&args, file).await;
    }
    if !args.search.is_empty() {
        return search(&args).await;
    }
    // Checked once up front: a typo stops the run before any connection is made.
    args.target.transport()?;
    let record = match &args.record {
        Some(path) => {
            Some(Arc::new(std::sync::Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)))
        }
        None => None,
    };
    let record_traces = match &args.record_traces {
        Some(path) => {
            Some(Arc::new(std::sync::Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)))
        }
        None => None,
    };
    let payloads = Arc::new(
        match &args.payloads {
            Some(path) => payloads::Payloads::load(path)?,
            None => payloads::Payloads::generate(args.seed, args.traces_per_request, args.pool),
        }
        .backdated(args.backdate.unwrap_or(0)),
    );
    let window = args.window.max(0.1);
    let windows: Arc<Vec<AtomicU64>> =
        Arc::new((0..(args.duration / window).ceil() as usize + 1).map(|_| AtomicU64::new(0)).collect());
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for c in 0..args.connections.max(1) {
        let client = args.target.client(args.tenant.clone(), &args.access)?;
        let (args, totals, stop, record) = (args.clone(), totals.clone(), stop.clone(), record.clone());
        let (record_traces, payloads, windows) = (record_traces.clone(), payloads.clone(), windows.clone());
        tasks.push(tokio::spawn(async move {
            let per_conn_rate = args.rate as f64 / args.connections.max(1) as f64;
            let mut latencies = Vec::new();
            let mut sent_here = 0u64;
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let now_ns = spoor_model::time::now_nanos();
                let (body, ids) = payloads.build(args.seed.wrapping_add(c as u64), round, now_ns);
                round += 1;
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
                        let w = (start.elapsed().as_secs_f64() / window) as usize;
                        if let Some(slot) = windows.get(w) {
                            slot.fetch_add(n - rejected as u64, Ordering::Relaxed);
                        }
                        totals.refused.fetch_add(rejected as u64, Ordering::Relaxed);
                        if let (Some(file), 0) = (&record, rejected) {
                            let mut lines = String::with_capacity(ids.len() * 50);
                            for (t, s) in &ids {
                                lines.push_str(&format!("{} {}\n", hex(t), hex(s)));
                            }
                            let _ = file.lock().unwrap().write_all(lines.as_bytes());
                        }
                        if let (Some(file), 0) = (&record_traces, rejected) {
                            let mut lines = String::new();
                            let mut last = None;
                            for (t, _) in &ids {
                                if last != Some(t) {
                                    lines.push_str(&hex(t));
                                    lines.push('\n');
                                    last = Some(t);
                                }
                            }
                            let _ = file.lock().unwrap().write_all(lines.as_bytes());
                        }
                    }
                    Ok(Outcome::Refused { .. }) if args.no_backoff => {
                        totals.refused.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(Outcome::Refused { retry_after_secs, .. }) => {
                        totals.refused.fetch_add(n, Ordering::Relaxed);
                        tokio::time::sleep(
                            Duration::from_millis(100)
                                .max(Duration::from_secs(retry_after_secs.unwrap_or(0)).min(Duration::from_secs(1))),
                        )
                        .await;
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
    let pct = |q: f64| percentile_ms(&latencies, q);
    let accepted = totals.accepted.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "seconds": elapsed,
        "requests": latencies.len(),
        "spans_accepted": accepted,
        "spans_refused": totals.refused.load(Ordering::Relaxed),
        "spans_failed": totals.errors.load(Ordering::Relaxed),
        "accepted_spans_per_sec": accepted as f64 / elapsed,
        "latency_ms": { "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0) },
        "window_seconds": window,
        // The generator's own CPU (it shares the machine with the server under test).
        "client_cpu_seconds": own_cpu_seconds(),
        // Whole windows only: the last, partial one would read as a dip.
        "accepted_per_window": windows[..((elapsed / window) as usize).min(windows.len())]
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect::<Vec<_>>(),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "{:.1}s: {} spans accepted ({:.0}/s), {} refused, {} failed; {} requests, latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            elapsed,
            accepted,
            accepted as f64 / elapsed,
            summary["spans_refused"],
            summary["spans_failed"],
            latencies.len(),
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0)
        );
    }
    Ok(())
}

/// utime + stime of this process, from /proc (0 where there is none).
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn percentile_ms(sorted: &[f64], q: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0) * 1e3
}

/// Trace by ID (v2, protobuf) for random IDs from `file`; every answer must be a 200 with spans.
async fn query(args: &Args, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let mut ids: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).filter(|t| t.len() == 32).collect();
    ids.sort_unstable();
    ids.dedup();
    anyhow::ensure!(!ids.is_empty(), "no trace IDs in {}", file.display());
    let ids: Arc<Vec<String>> = Arc::new(ids.into_iter().map(str::to_owned).collect());
    let client = crate::http::Api::with_access(args.tenant.as_deref(), &args.access)?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections.max(1) {
        let (client, ids, next, args) = (client.clone(), ids.clone(), next.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(args.seed.wrapping_add(c as u64));
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < args.queries {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let url = format!("{}/api/v2/traces/{id}", args.target.endpoint);
                let t0 = Instant::now();
                let (status, body) = client.get(&url, Some("application/protobuf")).await?;
                latencies.push(t0.elapsed().as_secs_f64());
                anyhow::ensure!(status == 200 && !body.is_empty(), "trace {id}: HTTP {status}");
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let summary = serde_json::json!({
        "queries": latencies.len(),
        "traces_known": ids.len(),
        "seconds": elapsed,
        "queries_per_sec": latencies.len() as f64 / elapsed,
        "latency_ms": {
            "p50": percentile_ms(&latencies, 0.5),
            "p90": percentile_ms(&latencies, 0.9),
            "p99": percentile_ms(&latencies, 0.99),
            "max": percentile_ms(&latencies, 1.0),
        },
    });
    if args.json {
        println!("{summary}");
    } else {
        let l = &summary["latency_ms"];
        println!(
            "{} trace-by-ID queries in {elapsed:.1}s ({:.0}/s); latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            latencies.len(),
            latencies.len() as f64 / elapsed,
            l["p50"].as_f64().unwrap_or(0.0),
            l["p90"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Each `--search` query `--queries` times in a row; latency percentiles, traces found and
/// spans inspected per query (the server's own count).
async fn search(args: &Args) -> anyhow::Result<()> {
    let client = crate::http::Api::with_access(args.tenant.as_deref(), &args.access)?;
    let mut results = Vec::new();
    for q in &args.search {
        let url = format!(
            "{}/api/search?q={}&limit={}",
            args.target.endpoint,
            spoor_server::http::encode_query_value(q),
            args.search_limit
        );
        let mut latencies = Vec::new();
        let mut last = serde_json::Value::Null;
        for _ in 0..args.queries.max(1) {
            let t0 = Instant::now();
            let (status, body) = client.get(&url, None).await?;
            latencies.push(t0.elapsed().as_secs_f64());
            anyhow::ensure!(status == 200, "{q}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            last = serde_json::from_slice(&body)?;
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        let m = &last["metrics"];
        let summary = serde_json::json!({
            "query": q,
            "runs": latencies.len(),
            "traces": last["traces"].as_array().map_or(0, Vec::len),
            "inspected_spans": m["inspectedSpans"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
            "inspected_traces": m["inspectedTraces"].as_u64().unwrap_or(0),
            "blocks_searched": m["completedJobs"].as_u64().unwrap_or(0),
            "latency_ms": {
                "p50": percentile_ms(&latencies, 0.5),
                "p90": percentile_ms(&latencies, 0.9),
                "max": percentile_ms(&latencies, 1.0),
            },
        });
        if !args.json {
            println!(
                "{:>9.1} ms p50 {:>9.1} ms max  {:>4} traces  {:>10} spans inspected  {:>3} blocks  {q}",
                summary["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                summary["latency_ms"]["max"].as_f64().unwrap_or(0.0),
                summary["traces"],
                summary["inspected_spans"],
                summary["blocks_searched"],
            );
        }
        results.push(summary);
    }
    if args.json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(())
}
