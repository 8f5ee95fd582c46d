//! One downstream OTLP exporter with the collector's retry semantics (collector.md §1.6, §1.7,
//! checklist §7.2): per-attempt timeout, exponential backoff with jitter, server throttle hints
//! (gRPC `RetryInfo`, HTTP `Retry-After`) honoured, permanent errors not retried, a deadline
//! (`max_elapsed_time`) after which the data is given up, and an early return on shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{Compression, OtlpClient, Outcome, Transport};
use crate::error::Error;

/// The collector's `retry_on_failure` block.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub enabled: bool,
    /// The first backoff delay.
    #[serde(with = "spoor_process::duration")]
    pub initial_interval: Duration,
    /// Each delay is the previous one times this (before jitter).
    pub multiplier: f64,
    /// Each delay is drawn from delay × (1 ± this).
    pub randomization_factor: f64,
    /// No backoff delay is longer (a server's throttle hint may be).
    #[serde(with = "spoor_process::duration")]
    pub max_interval: Duration,
    /// Give up this long after the first attempt; 0 = never.
    #[serde(with = "spoor_process::duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            multiplier: 1.5,
            randomization_factor: 0.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    /// The collector's checks (only when enabled), plus a positive initial interval so a retry
    /// loop cannot spin.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.initial_interval.is_zero() {
            return Err("retry_on_failure.initial_interval must be positive".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier > 0.0) {
            return Err(format!("retry_on_failure.multiplier must be positive, not {}", self.multiplier));
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(format!(
                "retry_on_failure.randomization_factor must be within [0, 1], not {}",
                self.randomization_factor
            ));
        }
        if self.max_interval.is_zero() {
            return Err("retry_on_failure.max_interval must be positive".into());
        }
        if !self.max_elapsed_time.is_zero()
            && (self.max_elapsed_time < self.initial_interval || self.max_elapsed_time < self.max_interval)
        {
            return Err("retry_on_failure.max_elapsed_time must not be shorter than initial_interval or max_interval \
                 (0 retries forever)"
                .into());
        }
        Ok(())
    }
}

/// How requests travel.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC (`/opentelemetry.proto.collector.trace.v1.TraceService/Export`), default port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP protobuf (`/v1/traces`), default port 4318.
    Http,
}

impl Protocol {
    pub fn transport(self) -> Transport {
        match self {
            Protocol::Grpc => Transport::Grpc,
            Protocol::Http => Transport::Http,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Grpc => 4317,
            Protocol::Http => 4318,
        }
    }
}

/// Request compression (gRPC `grpc-encoding` / HTTP `Content-Encoding`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExportCompression {
    None,
    /// The collector's default.
    #[default]
    Gzip,
    Zstd,
}

impl ExportCompression {
    fn codec(self) -> Compression {
        match self {
            ExportCompression::None => Compression::None,
            ExportCompression::Gzip => Compression::Gzip,
            ExportCompression::Zstd => Compression::Zstd,
        }
    }
}

/// One downstream: the collector's OTLP exporter settings that apply here.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExporterConfig {
    /// `host:port` (the protocol's default port when omitted) or `http://host:port`. Left empty
    /// in a load balancer's template, which fills it per backend ([`with_endpoint`](Self::with_endpoint)).
    pub endpoint: String,
    pub protocol: Protocol,
    pub compression: ExportCompression,
    /// Per attempt; an attempt that takes longer is abandoned and retried.
    #[serde(with = "spoor_process::duration")]
    pub timeout: Duration,
    /// Sent with every request; the tenant's `X-Scope-OrgID` wins over one set here.
    pub headers: BTreeMap<String, String>,
    pub retry_on_failure: RetryConfig,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            endpoint: String::new(),
            protocol: Protocol::Grpc,
            compression: ExportCompression::Gzip,
            timeout: Duration::from_secs(5),
            headers: BTreeMap::new(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl ExporterConfig {
    /// This configuration aimed at another endpoint (a load balancer's template made concrete).
    pub fn with_endpoint(&self, endpoint: &str) -> ExporterConfig {
        ExporterConfig { endpoint: endpoint.to_string(), ..self.clone() }
    }

    /// `http://host:port`, the form the client takes.
    pub fn base_url(&self) -> Result<String, String> {
        let e = self.endpoint.trim();
        if e.is_empty() {
            return Err("exporter endpoint is empty".into());
        }
        if let Some(rest) = e.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() {
                return Err(format!("exporter endpoint {e:?} has no host"));
            }
            return Ok(format!("http://{authority}"));
        }
        if e.starts_with("https://") {
            return Err(format!("exporter endpoint {e:?}: TLS is not supported; use host:port or http://host:port"));
        }
        if e.contains("://") || e.contains('/') {
            return Err(format!("exporter endpoint {e:?}: expected host:port or http://host:port"));
        }
        if has_port(e) { Ok(format!("http://{e}")) } else { Ok(format!("http://{e}:{}", self.protocol.default_port())) }
    }

    fn header_map(&self) -> Result<hyper::HeaderMap, String> {
        let mut map = hyper::HeaderMap::new();
        for (name, value) in &self.headers {
            let n = hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("exporter header name {name:?} is not valid"))?;
            let v = hyper::header::HeaderValue::from_str(value)
                .map_err(|_| format!("exporter header {name}: value {value:?} is not valid"))?;
            map.insert(n, v);
        }
        Ok(map)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.base_url()?;
        self.header_map()?;
        if self.timeout.is_zero() {
            return Err("exporter timeout must be positive".into());
        }
        self.retry_on_failure.validate()
    }
}

/// `host:port` or `[v6]:port`, with a numeric port.
fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

/// What to do after one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Accepted; `rejected` spans refused individually (partial success, never retried).
    Delivered { rejected: i64 },
    /// Try again; `after` is the server's throttle hint, if it gave one.
    Retry { after: Option<Duration> },
    /// Do not try again; the data is dropped.
    Permanent(String),
}

/// Sorts one attempt's result by collector.md §1.6/§1.7: gRPC CANCELLED, DEADLINE_EXCEEDED,
/// ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS retry (RESOURCE_EXHAUSTED only with a
/// `RetryInfo`); HTTP 429, 502, 503, 504 retry (429 and 503 with their `Retry-After`);
/// connection failures and timeouts retry; everything else is permanent.
pub fn classify(outcome: &Result<Outcome, Error>, transport: Transport) -> Verdict {
    match outcome {
        Ok(Outcome::Accepted { rejected, .. }) => Verdict::Delivered { rejected: *rejected },
        Ok(Outcome::Refused { code, retry_after_secs, .. }) => {
            let hint = retry_after_secs.map(Duration::from_secs);
            let retry = match transport {
                Transport::Grpc => match code {
                    1 | 4 | 10 | 11 | 14 | 15 => Some(hint),
                    8 if hint.is_some() => Some(hint),
                    _ => None,
                },
                Transport::Http => match code {
                    429 | 503 => Some(hint),
                    502 | 504 => Some(None),
                    _ => None,
                },
            };
            match retry {
                Some(after) => Verdict::Retry { after },
                None => Verdict::Permanent(describe(outcome, transport)),
            }
        }
        // Could not connect, the connection broke, or the answer was not OTLP: the server may
        // not have the data, so send it again (duplicates are accepted, §1.7).
        Err(Error::Transport(_)) => Verdict::Retry { after: None },
        Err(_) => Verdict::Permanent(describe(outcome, transport)),
    }
}

/// A one-line account of an attempt's result, for logs and [`Failure`].
pub fn describe(outcome: &Result<Outcome, Error>, transport: Transport) -> String {
    const LIMIT: usize = 1024;
    let mut text = match outcome {
        Ok(Outcome::Accepted { rejected, message }) => format!("accepted, {rejected} spans rejected: {message}"),
        Ok(Outcome::Refused { code, message, .. }) => match transport {
            Transport::Grpc => format!("gRPC {} ({code}): {message}", grpc_code_name(*code)),
            Transport::Http => format!("HTTP {code}: {message}"),
        },
        Err(e) => e.to_string(),
    };
    if text.len() > LIMIT {
        let mut cut = LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("UNKNOWN")
}

/// A request the downstream took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Spans the downstream refused individually (partial success); they are gone.
    pub rejected_spans: i64,
    /// The partial success message, if any (may be a warning with 0 rejected).
    pub message: String,
    /// Attempts it took, ≥ 1.
    pub attempts: u32,
}

/// Why a request was not delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The downstream refused it for good (or it could not be encoded): drop it.
    #[error("permanent error: {0}")]
    Permanent(String),
    /// Still failing when `max_elapsed_time` ran out, or failing with retries disabled: drop it.
    #[error("gave up after {attempts} attempt(s) over {elapsed:?}: {last}")]
    GaveUp { attempts: u32, elapsed: Duration, last: String },
    /// Shutdown was asked for: the request was not (known to be) delivered and stays queued.
    #[error("stopped by shutdown before delivery")]
    Stopped,
}

/// Counters for self metrics; all monotonic except `last_latency_us`.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Requests put on the wire (every attempt).
    pub attempts: AtomicU64,
    /// `send` calls that ended delivered.
    pub delivered: AtomicU64,
    /// Retries scheduled (attempts after a retryable failure).
    pub retries: AtomicU64,
    /// Attempts abandoned at `timeout`.
    pub timeouts: AtomicU64,
    /// Spans refused by partial successes.
    pub rejected_spans: AtomicU64,
    /// `send` calls that ended in [`Failure::Permanent`].
    pub failed_permanent: AtomicU64,
    /// `send` calls that ended in [`Failure::GaveUp`].
    pub failed_gave_up: AtomicU64,
    /// `send` calls that ended in [`Failure::Stopped`].
    pub stopped: AtomicU64,
    /// Duration of the last attempt that completed (answer or connection error), in µs.
    pub last_latency_us: AtomicU64,
}

/// A plain copy of [`ExportStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStatsSnapshot {
    pub attempts: u64,
    pub delivered: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub rejected_spans: u64,
    pub failed_permanent: u64,
    pub failed_gave_up: u64,
    pub stopped: u64,
    pub last_latency_us: u64,
}

impl ExportStats {
    pub fn snapshot(&self) -> ExportStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExportStatsSnapshot {
            attempts: r(&self.attempts),
            delivered: r(&self.delivered),
            retries: r(&self.retries),
            timeouts: r(&self.timeouts),
            rejected_spans: r(&self.rejected_spans),
            failed_permanent: r(&self.failed_permanent),
            failed_gave_up: r(&self.failed_gave_up),
            stopped: r(&self.stopped),
            last_latency_us: r(&self.last_latency_us),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One downstream OTLP endpoint. Cheap to share (`Arc<Exporter>`); `send` may run concurrently.
pub struct Exporter {
    config: ExporterConfig,
    url: String,
    client: OtlpClient,
    stats: Arc<ExportStats>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("url", &self.url).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Exporter {
    /// Checks the configuration (an invalid one is [`Error::Startup`]) and builds the client.
    pub fn new(config: ExporterConfig) -> Result<Exporter, Error> {
        config.validate().map_err(Error::Startup)?;
        let url = config.base_url().map_err(Error::Startup)?;
        let headers = config.header_map().map_err(Error::Startup)?;
        let client = OtlpClient::new(config.protocol.transport(), &url, None).with_headers(headers);
        Ok(Exporter { config, url, client, stats: Arc::default() })
    }

    pub fn config(&self) -> &ExporterConfig {
        &self.config
    }

    /// `http://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Sends one encoded `ExportTraceServiceRequest` until it is delivered, refused for good,
    /// `max_elapsed_time` runs out, or `stop` turns true (then at once, even mid-attempt or
    /// mid-backoff, with [`Failure::Stopped`]). `tenant` goes out as `X-Scope-OrgID`.
    ///
    /// Between attempts it waits max(backoff, the server's throttle hint); the backoff starts at
    /// `initial_interval`, grows by `multiplier` up to `max_interval` and is jittered by
    /// ±`randomization_factor` (never above `max_interval`). It gives up instead of waiting
    /// when the wait would end past `max_elapsed_time` after the first attempt.
    pub async fn send(
        &self,
        body: Bytes,
        tenant: Option<&str>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Delivery, Failure> {
        let mut stop = stop.clone();
        let retry = &self.config.retry_on_failure;
        let transport = self.config.protocol.transport();
        let codec = self.config.compression.codec();
        let mut backoff = Backoff::new(retry, Rng::seeded());
        let start = Instant::now();
        let mut attempts = 0u32;
        loop {
            if *stop.borrow_and_update() {
                return self.stopped();
            }
            attempts += 1;
            bump(&self.stats.attempts);
            let began = Instant::now();
            let attempt = tokio::time::timeout(self.config.timeout, self.client.export_as(body.clone(), codec, tenant));
            let outcome = tokio::select! {
                r = attempt => match r {
                    Ok(r) => {
                        let us = began.elapsed().as_micros().min(u64::MAX as u128) as u64;
                        self.stats.last_latency_us.store(us, Ordering::Relaxed);
                        r
                    }
                    Err(_) => {
                        bump(&self.stats.timeouts);
                        Err(Error::Transport(format!("{}: no answer within {:?}", self.url, self.config.timeout)))
                    }
                },
                _ = stop_requested(&mut stop) => return self.stopped(),
            };
            match classify(&outcome, transport) {
                Verdict::Delivered { rejected } => {
                    bump(&self.stats.delivered);
                    let message = match outcome {
                        Ok(Outcome::Accepted { message, .. }) => message,
                        _ => String::new(),
                    };
                    if rejected > 0 {
                        self.stats.rejected_spans.fetch_add(rejected as u64, Ordering::Relaxed);
                        tracing::warn!(endpoint = %self.url, rejected, %message, "downstream rejected spans (partial success)");
                    } else if !message.is_empty() {
                        tracing::info!(endpoint = %self.url, %message, "downstream accepted with a warning");
                    }
                    return Ok(Delivery { rejected_spans: rejected, message, attempts });
                }
                Verdict::Permanent(message) => {
                    bump(&self.stats.failed_permanent);
                    return Err(Failure::Permanent(message));
                }
                Verdict::Retry { after } => {
                    let last = describe(&outcome, transport);
                    let give_up = |elapsed: Duration| -> Result<Delivery, Failure> {
                        bump(&self.stats.failed_gave_up);
                        Err(Failure::GaveUp { attempts, elapsed, last: last.clone() })
                    };
                    if !retry.enabled {
                        return give_up(start.elapsed());
                    }
                    let delay = backoff.next().max(after.unwrap_or_default());
                    let elapsed = start.elapsed();
                    if !retry.max_elapsed_time.is_zero() && elapsed + delay > retry.max_elapsed_time {
                        return give_up(elapsed);
                    }
                    bump(&self.stats.retries);
                    // The first failure of a request says the downstream is in trouble; later
                    // ones only repeat it.
                    if attempts == 1 {
                        tracing::warn!(endpoint = %self.url, ?delay, error = %last, "export failed; retrying (queued data is kept)");
                    } else {
                        tracing::debug!(endpoint = %self.url, attempts, ?delay, error = %last, "export failed; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop_requested(&mut stop) => return self.stopped(),
                    }
                }
            }
        }
    }

    fn stopped(&self) -> Result<Delivery, Failure> {
        bump(&self.stats.stopped);
        Err(Failure::Stopped)
    }
}

/// Resolves once `stop` is true; never, if its sender is gone while it is false.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Exponential backoff with jitter (the collector's, capped at `max_interval` after jitter).
pub(crate) struct Backoff {
    current: Duration,
    multiplier: f64,
    randomization: f64,
    max: Duration,
    rng: Rng,
}

impl Backoff {
    pub(crate) fn new(cfg: &RetryConfig, rng: Rng) -> Backoff {
        Backoff {
            current: cfg.initial_interval.min(cfg.max_interval),
            multiplier: cfg.multiplier,
            randomization: cfg.randomization_factor,
            max: cfg.max_interval,
            rng,
        }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let base = self.current;
        self.current = base.mul_f64(self.multiplier).min(self.max);
        let factor = 1.0 - self.randomization + 2.0 * self.randomization * self.rng.unit();
        base.mul_f64(factor.max(0.0)).min(self.max)
    }
}

/// xorshift64* — jitter needs spread, not quality.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        // splitmix64 of time and a per-call counter, so concurrent senders do not move in step.
        let mut z = (time as u64) ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z.max(1))
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;
    use base64::Engine;
    use http_body_util::BodyExt;
    use prost::Message;
    use spoor_model::otlp::{
        ExportTracePartialSuccess, ExportTraceServiceResponse, ProtoAny, ProtoDuration, RetryInfo, RpcStatus,
    };

    use super::*;

    // ---- pure parts ----

    fn refused(code: i32, retry_after_secs: Option<u64>) -> Result<Outcome, Error> {
        Ok(Outcome::Refused { code, message: "m".into(), retry_after_secs })
    }

    #[test]
    fn classify_grpc() {
        let g = |o| classify(&o, Transport::Grpc);
        for code in [1, 4, 10, 11, 14, 15] {
            assert_eq!(g(refused(code, None)), Verdict::Retry { after: None }, "code {code}");
        }
        assert_eq!(g(refused(14, Some(2))), Verdict::Retry { after: Some(Duration::from_secs(2)) });
        assert_eq!(g(refused(8, Some(1))), Verdict::Retry { after: Some(Duration::from_secs(1)) });
        assert!(matches!(g(refused(8, None)), Verdict::Permanent(m) if m.contains("RESOURCE_EXHAUSTED")));
        for code in [2, 3, 5, 6, 7, 9, 12, 13, 16, 99] {
            assert!(matches!(g(refused(code, Some(1))), Verdict::Permanent(_)), "code {code}");
        }
        assert_eq!(g(Ok(Outcome::Accepted { rejected: 2, message: "x".into() })), Verdict::Delivered { rejected: 2 });
        assert_eq!(g(Err(Error::Transport("refused".into()))), Verdict::Retry { after: None });
        assert!(matches!(g(Err(Error::Internal("zstd".into()))), Verdict::Permanent(_)));
    }

    #[test]
    fn classify_http() {
        let h = |o| classify(&o, Transport::Http);
        assert_eq!(h(refused(429, Some(3))), Verdict::Retry { after: Some(Duration::from_secs(3)) });
        assert_eq!(h(refused(503, Some(1))), Verdict::Retry { after: Some(Duration::from_secs(1)) });
        assert_eq!(h(refused(503, None)), Verdict::Retry { after: None });
        // Retry-After counts only on the throttling statuses.
        assert_eq!(h(refused(502, Some(9))), Verdict::Retry { after: None });
        assert_eq!(h(refused(504, None)), Verdict::Retry { after: None });
        for code in [400, 401, 403, 404, 413, 415, 500, 501] {
            assert!(
                matches!(h(refused(code, Some(1))), Verdict::Permanent(m) if m.starts_with(&format!("HTTP {code}")))
            );
        }
        assert_eq!(
            h(Ok(Outcome::Accepted { rejected: 0, message: String::new() })),
            Verdict::Delivered { rejected: 0 }
        );
    }

    #[test]
    fn backoff_grows_by_multiplier_up_to_max_interval() {
        let cfg = RetryConfig { randomization_factor: 0.0, ..RetryConfig::default() };
        let mut b = Backoff::new(&cfg, Rng(1));
        let got: Vec<f64> = (0..8).map(|_| b.next().as_secs_f64()).collect();
        let want = [5.0, 7.5, 11.25, 16.875, 25.3125, 30.0, 30.0, 30.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // With ±50 % jitter: each within its band, never above max_interval, and actually spread.
        let mut b = Backoff::new(&RetryConfig::default(), Rng::seeded());
        let mut seen = Vec::new();
        for w in want {
            let d = b.next().as_secs_f64();
            assert!(d >= w * 0.5 - 1e-6 && d <= (w * 1.5).min(30.0) + 1e-6, "{d} for {w}");
            seen.push(d);
        }
        let mut firsts: Vec<u64> =
            (0..20).map(|_| Backoff::new(&RetryConfig::default(), Rng::seeded()).next().as_millis() as u64).collect();
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() > 10, "jitter should vary: {firsts:?}");
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::seeded();
        let xs: Vec<f64> = (0..10_000).map(|_| r.unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn config_collector_shape_and_defaults() {
        let yaml = "endpoint: backend-1:4317\nprotocol: http\ncompression: zstd\ntimeout: 2s\n\
                    headers: {authorization: Bearer x}\n\
                    retry_on_failure: {initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 0}\n";
        let c: ExporterConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(c.protocol, Protocol::Http);
        assert_eq!(c.compression, ExportCompression::Zstd);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.headers["authorization"], "Bearer x");
        assert_eq!(c.retry_on_failure.initial_interval, Duration::from_millis(200));
        assert_eq!(c.retry_on_failure.max_elapsed_time, Duration::ZERO);
        assert_eq!(c.retry_on_failure.multiplier, 1.5);
        assert!(c.retry_on_failure.enabled);
        c.validate().unwrap();
        let d: ExporterConfig = serde_saphyr::from_str("endpoint: x:1\n").unwrap();
        assert_eq!(d, ExporterConfig { endpoint: "x:1".into(), ..ExporterConfig::default() });
        assert_eq!(d.compression, ExportCompression::Gzip);
        assert_eq!(d.retry_on_failure.initial_interval, Duration::from_secs(5));
        assert_eq!(d.retry_on_failure.max_elapsed_time, Duration::from_secs(300));
        // Round trip.
        let back: ExporterConfig = serde_saphyr::from_str(&serde_saphyr::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_saphyr::from_str::<ExporterConfig>("endpont: x\n").is_err());
        assert!(serde_saphyr::from_str::<ExporterConfig>("compression: brotli\n").is_err());
    }

    #[test]
    fn config_validation() {
        let ok = ExporterConfig { endpoint: "h:1".into(), ..ExporterConfig::default() };
        ok.validate().unwrap();
        let retry = |r: RetryConfig| ExporterConfig { retry_on_failure: r, ..ok.clone() }.validate();
        let d = RetryConfig::default();
        assert!(retry(RetryConfig { max_elapsed_time: Duration::from_secs(10), ..d.clone() }).is_err());
        assert!(retry(RetryConfig { max_elapsed_time: Duration::from_secs(2), ..d.clone() }).is_err());
        assert!(retry(RetryConfig { max_elapsed_time: Duration::ZERO, ..d.clone() }).is_ok());
        assert!(retry(RetryConfig { max_elapsed_time: Duration::from_secs(30), ..d.clone() }).is_ok());
        assert!(retry(RetryConfig { randomization_factor: 1.5, ..d.clone() }).is_err());
        assert!(retry(RetryConfig { multiplier: 0.0, ..d.clone() }).is_err());
        assert!(retry(RetryConfig { initial_interval: Duration::ZERO, ..d.clone() }).is_err());
        assert!(retry(RetryConfig { enabled: false, initial_interval: Duration::ZERO, ..d.clone() }).is_ok());
        let ep = |e: &str| ok.with_endpoint(e).base_url();
        assert_eq!(ep("h:1").unwrap(), "http://h:1");
        assert_eq!(ep("h").unwrap(), "http://h:4317");
        assert_eq!(
            ExporterConfig { protocol: Protocol::Http, ..ok.with_endpoint("h") }.base_url().unwrap(),
            "http://h:4318"
        );
        assert_eq!(ep("[::1]:4317").unwrap(), "http://[::1]:4317");
        assert_eq!(ep("[::1]").unwrap(), "http://[::1]:4317");
        assert_eq!(ep("http://h:4318/").unwrap(), "http://h:4318");
        assert!(ep("https://h:4318").is_err());
        assert!(ep("").is_err());
        assert!(ep("h:1/v1/traces").is_err());
        assert!(ExporterConfig { timeout: Duration::ZERO, ..ok.clone() }.validate().is_err());
        let bad_header = ExporterConfig { headers: [("bad name".into(), "v".into())].into(), ..ok.clone() };
        assert!(bad_header.validate().is_err());
        assert!(matches!(Exporter::new(bad_header), Err(Error::Startup(_))));
    }

    // ---- against scripted servers ----

    /// One scripted answer.
    #[derive(Clone)]
    struct Reply {
        delay: Duration,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        /// gRPC OK: send the status in trailers after the body.
        grpc_ok: bool,
    }

    impl Reply {
        fn http(status: u16) -> Reply {
            Reply { delay: Duration::ZERO, status, headers: vec![], body: vec![], grpc_ok: false }
        }
        fn http_ok(rejected: i64) -> Reply {
            let resp = ExportTraceServiceResponse {
                partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: format!("{rejected} spans had invalid span IDs"),
                }),
            };
            Reply { body: resp.encode_to_vec(), ..Reply::http(200) }.header("content-type", "application/x-protobuf")
        }
        fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
            self.headers.push((name, value.into()));
            self
        }
        fn delayed(mut self, delay: Duration) -> Reply {
            self.delay = delay;
            self
        }
        fn grpc_ok() -> Reply {
            Reply { grpc_ok: true, ..Reply::http(200) }
        }
        /// A trailers-only gRPC error, as `receive::grpc_error` answers.
        fn grpc_error(code: i32, retry_secs: Option<i64>) -> Reply {
            let mut r = Reply::http(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", code.to_string())
                .header("grpc-message", "scripted%20error");
            if let Some(seconds) = retry_secs {
                let info = RetryInfo { retry_delay: Some(ProtoDuration { seconds, nanos: 0 }) };
                let status = RpcStatus {
                    code,
                    message: "scripted error".into(),
                    details: vec![ProtoAny {
                        type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                        value: info.encode_to_vec(),
                    }],
                };
                let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
                r = r.header("grpc-status-details-bin", b64);
            }
            r
        }
    }

    /// What the server saw of one request.
    #[derive(Clone, Debug)]
    struct Seen {
        at: Instant,
        headers: hyper::HeaderMap,
        body_len: usize,
    }

    #[derive(Default)]
    struct Script {
        replies: Mutex<VecDeque<Reply>>,
        last: Mutex<Option<Reply>>,
        seen: Mutex<Vec<Seen>>,
    }

    impl Script {
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
        fn gaps(&self) -> Vec<Duration> {
            self.seen().windows(2).map(|w| w[1].at - w[0].at).collect()
        }
    }

    async fn answer(State(script): State<Arc<Script>>, req: Request) -> Response {
        let at = Instant::now();
        let (parts, body) = req.into_parts();
        let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        script.seen.lock().unwrap().push(Seen { at, headers: parts.headers, body_len });
        // The last reply repeats once the script runs out.
        let reply = {
            let mut q = script.replies.lock().unwrap();
            let mut last = script.last.lock().unwrap();
            match q.pop_front() {
                Some(r) => {
                    *last = Some(r.clone());
                    r
                }
                None => last.clone().expect("empty script"),
            }
        };
        tokio::time::sleep(reply.delay).await;
        let mut b = Response::builder().status(reply.status);
        for (k, v) in &reply.headers {
            b = b.header(*k, v);
        }
        if reply.grpc_ok {
            let mut frame = vec![0u8, 0, 0, 0, 0];
            frame.extend(ExportTraceServiceResponse::default().encode_to_vec());
            let mut trailers = hyper::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(frame))),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            return b
                .header("content-type", "application/grpc")
                .body(Body::new(http_body_util::StreamBody::new(frames)))
                .unwrap();
        }
        b.body(Body::from(reply.body)).unwrap()
    }

    /// Serves `replies` in order on 127.0.0.1; returns `host:port`.
    async fn serve(replies: Vec<Reply>) -> (String, Arc<Script>) {
        let script = Arc::new(Script { replies: Mutex::new(replies.into()), ..Script::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, script)
    }

    fn fast_retry() -> RetryConfig {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(20),
            multiplier: 1.5,
            randomization_factor: 0.0,
            max_interval: Duration::from_millis(100),
            max_elapsed_time: Duration::from_secs(10),
        }
    }

    fn exporter(endpoint: &str, protocol: Protocol, retry: RetryConfig) -> Exporter {
        Exporter::new(ExporterConfig {
            endpoint: endpoint.into(),
            protocol,
            compression: ExportCompression::None,
            timeout: Duration::from_secs(2),
            headers: BTreeMap::new(),
            retry_on_failure: retry,
        })
        .unwrap()
    }

    fn no_stop() -> watch::Receiver<bool> {
        // The sender is dropped: never stops.
        watch::channel(false).1
    }

    fn body() -> Bytes {
        Bytes::from_static(b"")
    }

    #[tokio::test]
    async fn http_429_retry_after_3_is_honoured() {
        let (addr, script) = serve(vec![Reply::http(429).header("retry-after", "3"), Reply::http_ok(0)]).await;
        let e = exporter(&addr, Protocol::Http, fast_retry());
        let d = e.send(body(), None, &no_stop()).await.unwrap();
        assert_eq!(d, Delivery { rejected_spans: 0, message: String::new(), attempts: 2 });
        let gap = script.gaps()[0];
        assert!(gap >= Duration::from_secs(3) && gap < Duration::from_millis(4500), "{gap:?}");
        let s = e.stats().snapshot();
        assert_eq!((s.attempts, s.retries, s.delivered), (2, 1, 1));
    }

    #[tokio::test]
    async fn http_503_backs_off_with_growing_delays_capped_by_max_interval() {
        let retry = RetryConfig {
            initial_interval: Duration::from_millis(50),
            multiplier: 3.0,
            max_interval: Duration::from_millis(200),
            ..fast_retry()
        };
        let mut replies = vec![Reply::http(503); 5];
        replies.push(Reply::http_ok(0));
        let (addr, script) = serve(replies).await;
        let e = exporter(&addr, Protocol::Http, retry);
        let d = e.send(body(), None, &no_stop()).await.unwrap();
        assert_eq!(d.attempts, 6);
        let gaps = script.gaps();
        // 50, 150, 200 (450 uncapped), 200 (1350 uncapped), 200.
        let want = [50, 150, 200, 200, 200].map(Duration::from_millis);
        for (g, w) in gaps.iter().zip(want) {
            assert!(*g >= w && *g < w + Duration::from_millis(240), "{gaps:?}");
        }
        assert_eq!(e.stats().snapshot().retries, 5);
    }

    #[tokio::test]
    async fn jittered_delays_stay_in_their_band() {
        let retry = RetryConfig {
            initial_interval: Duration::from_millis(100),
            multiplier: 1.0,
            randomization_factor: 0.5,
            max_interval: Duration::from_millis(1000),
            ..fast_retry()
        };
        let mut replies = vec![Reply::http(502); 4];
        replies.push(Reply::http_ok(0));
        let (addr, script) = serve(replies).await;
        exporter(&addr, Protocol::Http, retry).send(body(), None, &no_stop()).await.unwrap();
        for g in script.gaps() {
            assert!(g >= Duration::from_millis(50) && g < Duration::from_millis(150 + 150), "{g:?}");
        }
    }

    #[tokio::test]
    async fn http_400_is_not_retried() {
        let (addr, script) = serve(vec![Reply::http(400)]).await;
        let e = exporter(&addr, Protocol::Http, fast_retry());
        let err = e.send(body(), None, &no_stop()).await.unwrap_err();
        assert!(matches!(&err, Failure::Permanent(m) if m.starts_with("HTTP 400")), "{err:?}");
        assert_eq!(script.seen().len(), 1);
        let s = e.stats().snapshot();
        assert_eq!((s.attempts, s.retries, s.failed_permanent), (1, 0, 1));
    }

    #[tokio::test]
    async fn partial_success_is_delivered_not_retried() {
        let (addr, script) = serve(vec![Reply::http_ok(2), Reply::http(500)]).await;
        let e = exporter(&addr, Protocol::Http, fast_retry());
        let d = e.send(body(), None, &no_stop()).await.unwrap();
        assert_eq!(d.rejected_spans, 2);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.message, "2 spans had invalid span IDs");
        assert_eq!(script.seen().len(), 1);
        assert_eq!(e.stats().snapshot().rejected_spans, 2);
    }

    #[tokio::test]
    async fn retry_after_http_date_is_honoured() {
        // A date 2 s ahead (whole seconds, so 1–2 s from now).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let date = imf_fixdate(now + 2);
        assert_eq!(crate::client::parse_http_date(&date), Some(now + 2));
        let (addr, script) = serve(vec![Reply::http(503).header("retry-after", date), Reply::http_ok(0)]).await;
        let d = exporter(&addr, Protocol::Http, fast_retry()).send(body(), None, &no_stop()).await.unwrap();
        assert_eq!(d.attempts, 2);
        let gap = script.gaps()[0];
        assert!(gap >= Duration::from_secs(1) && gap < Duration::from_millis(3500), "{gap:?}");
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT` for seconds since the epoch.
    fn imf_fixdate(secs: u64) -> String {
        let days = (secs / 86_400) as i64;
        let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
        // Civil from days (Hinnant).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + (month <= 2) as i64;
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        format!("{weekday}, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT", months[month as usize - 1])
    }

    #[tokio::test]
    async fn grpc_resource_exhausted_needs_retry_info() {
        let (addr, script) = serve(vec![Reply::grpc_error(8, None)]).await;
        let err = exporter(&addr, Protocol::Grpc, fast_retry()).send(body(), None, &no_stop()).await.unwrap_err();
        assert!(
            matches!(&err, Failure::Permanent(m) if m.contains("RESOURCE_EXHAUSTED") && m.contains("scripted error"))
        );
        assert_eq!(script.seen().len(), 1);

        let (addr, script) = serve(vec![Reply::grpc_error(8, Some(1)), Reply::grpc_ok()]).await;
        let d = exporter(&addr, Protocol::Grpc, fast_retry()).send(body(), None, &no_stop()).await.unwrap();
        assert_eq!(d.attempts, 2);
        let gap = script.gaps()[0];
        assert!(gap >= Duration::from_secs(1) && gap < Duration::from_millis(2500), "{gap:?}");
    }

    #[tokio::test]
    async fn grpc_unavailable_is_retried_invalid_argument_is_not() {
        let (addr, script) =
            serve(vec![Reply::grpc_error(14, None), Reply::grpc_error(14, None), Reply::grpc_ok()]).await;
        let e = exporter(&addr, Protocol::Grpc, fast_retry());
        let d = e.send(body(), None, &no_stop()).await.unwrap();
        assert_eq!(d.attempts, 3);
        assert_eq!(script.seen().len(), 3);

        let (addr, script) = serve(vec![Reply::grpc_error(3, None), Reply::grpc_ok()]).await;
        let err = exporter(&addr, Protocol::Grpc, fast_retry()).send(body(), None, &no_stop()).await.unwrap_err();
        assert!(matches!(&err, Failure::Permanent(m) if m.contains("INVALID_ARGUMENT")), "{err:?}");
        assert_eq!(script.seen().len(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_given_up() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let retry = RetryConfig {
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(100),
            max_elapsed_time: Duration::from_millis(400),
            ..fast_retry()
        };
        let e = exporter(&addr, Protocol::Grpc, retry);
        let t = Instant::now();
        let err = e.send(body(), None, &no_stop()).await.unwrap_err();
        let Failure::GaveUp { attempts, elapsed, last } = &err else { panic!("{err:?}") };
        assert!(*attempts >= 4, "{err:?}");
        assert!(*elapsed <= Duration::from_millis(400) && t.elapsed() < Duration::from_secs(2), "{err:?}");
        assert!(last.contains("transport error"), "{last}");
        let s = e.stats().snapshot();
        assert_eq!((s.failed_gave_up, s.retries, s.attempts), (1, *attempts as u64 - 1, *attempts as u64));
    }

    #[tokio::test]
    async fn connection_refused_then_server_comes_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let script = Arc::new(Script { replies: Mutex::new(vec![Reply::http_ok(0)].into()), ..Script::default() });
            let app = axum::Router::new().fallback(answer).with_state(script.clone());
            let _ = tx.send(script);
            axum::serve(listener, app).await
        });
        let e = exporter(&addr.to_string(), Protocol::Http, fast_retry());
        let d = e.send(body(), None, &no_stop()).await.unwrap();
        assert!(d.attempts >= 2, "{d:?}");
        assert_eq!(rx.await.unwrap().seen().len(), 1);
    }

    #[tokio::test]
    async fn an_attempt_past_timeout_is_cut_off_and_retried() {
        let (addr, script) = serve(vec![Reply::http_ok(0).delayed(Duration::from_secs(5)), Reply::http_ok(0)]).await;
        let e = Exporter::new(ExporterConfig {
            timeout: Duration::from_millis(300),
            ..exporter(&addr, Protocol::Http, fast_retry()).config().clone()
        })
        .unwrap();
        let t = Instant::now();
        let d = e.send(body(), None, &no_stop()).await.unwrap();
        assert_eq!(d.attempts, 2);
        assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(script.seen().len(), 2);
        assert_eq!(e.stats().snapshot().timeouts, 1);
    }

    #[tokio::test]
    async fn max_elapsed_time_gives_up() {
        let (addr, script) = serve(vec![Reply::http(503)]).await;
        let retry = RetryConfig {
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(100),
            max_elapsed_time: Duration::from_millis(400),
            ..fast_retry()
        };
        let e = exporter(&addr, Protocol::Http, retry);
        let t = Instant::now();
        let err = e.send(body(), None, &no_stop()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
        let Failure::GaveUp { attempts, last, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*attempts as usize, script.seen().len());
        assert!(*attempts >= 4, "{err:?}");
        assert!(last.starts_with("HTTP 503"), "{last}");
        assert_eq!(e.stats().snapshot().failed_gave_up, 1);
        // A server hint past the deadline: give up at once rather than wait for nothing.
        let (addr, script) = serve(vec![Reply::http(429).header("retry-after", "60")]).await;
        let t = Instant::now();
        let err = exporter(&addr, Protocol::Http, fast_retry()).send(body(), None, &no_stop()).await.unwrap_err();
        assert!(matches!(err, Failure::GaveUp { attempts: 1, .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(script.seen().len(), 1);
    }

    #[tokio::test]
    async fn retry_disabled_gives_up_after_one_attempt() {
        let (addr, script) = serve(vec![Reply::http(503)]).await;
        let retry = RetryConfig { enabled: false, ..fast_retry() };
        let err = exporter(&addr, Protocol::Http, retry).send(body(), None, &no_stop()).await.unwrap_err();
        assert!(matches!(err, Failure::GaveUp { attempts: 1, .. }), "{err:?}");
        assert_eq!(script.seen().len(), 1);
    }

    #[tokio::test]
    async fn stop_ends_a_send_during_backoff_and_during_an_attempt() {
        let slow = RetryConfig {
            initial_interval: Duration::from_secs(20),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::ZERO,
            ..fast_retry()
        };
        // During backoff.
        let (addr, _script) = serve(vec![Reply::http(503)]).await;
        let e = exporter(&addr, Protocol::Http, slow.clone());
        let (tx, rx) = watch::channel(false);
        let flip = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(true).unwrap();
            tx
        });
        let t = Instant::now();
        assert_eq!(e.send(body(), None, &rx).await, Err(Failure::Stopped));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(e.stats().snapshot().stopped, 1);
        // Already stopped: nothing sent.
        let tx = flip.await.unwrap();
        assert_eq!(e.send(body(), None, &rx).await, Err(Failure::Stopped));
        assert_eq!(e.stats().snapshot().attempts, 1);
        drop(tx);
        // During a slow attempt.
        let (addr, _script) = serve(vec![Reply::http_ok(0).delayed(Duration::from_secs(10))]).await;
        let e = exporter(&addr, Protocol::Http, slow);
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tx.send(true);
        });
        let t = Instant::now();
        assert_eq!(e.send(body(), None, &rx).await, Err(Failure::Stopped));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn tenant_headers_and_compression_go_out() {
        for protocol in [Protocol::Http, Protocol::Grpc] {
            let ok = if protocol == Protocol::Http { Reply::http_ok(0) } else { Reply::grpc_ok() };
            let (addr, script) = serve(vec![ok]).await;
            let e = Exporter::new(ExporterConfig {
                endpoint: format!("http://{addr}"),
                protocol,
                compression: ExportCompression::Gzip,
                headers: [("x-scope-orgid".to_string(), "default".to_string()), ("x-extra".into(), "1".into())].into(),
                ..ExporterConfig::default()
            })
            .unwrap();
            let payload = Bytes::from(vec![b'a'; 10_000]);
            e.send(payload.clone(), Some("team-a"), &no_stop()).await.unwrap();
            e.send(payload, None, &no_stop()).await.unwrap();
            let seen = script.seen();
            let h = &seen[0].headers;
            assert_eq!(h.get_all("x-scope-orgid").iter().collect::<Vec<_>>(), ["team-a"]);
            assert_eq!(h["x-extra"], "1");
            let enc = if protocol == Protocol::Http { "content-encoding" } else { "grpc-encoding" };
            assert_eq!(h[enc], "gzip");
            assert!(seen[0].body_len < 1000, "compressed: {}", seen[0].body_len);
            assert_eq!(seen[1].headers["x-scope-orgid"], "default", "the configured header without a tenant");
        }
    }
}
