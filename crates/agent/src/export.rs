//! One downstream OTLP exporter with the collector's retry semantics (collector.md §1.6, §1.7,
//! checklist §7.2): per-attempt timeout, exponential backoff with jitter, server throttle hints
//! (gRPC `RetryInfo`, HTTP `Retry-After`) honoured, permanent errors not retried, a deadline
//! (`max_elapsed_time`) after which the data is given up, and an early return on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use spoor_server::config::agent::{ExportCompression, ExporterConfig, Protocol};
use spoor_server::error::{Error, Kind, StartupError};
use spoor_server::retry::{Backoff, Rng};

use crate::client::{Compression, OtlpClient, Outcome, Transport};

/// How a configured protocol travels.
fn transport(p: Protocol) -> Transport {
    match p {
        Protocol::Grpc => Transport::Grpc,
        Protocol::Http => Transport::Http,
    }
}

/// The codec for a configured compression.
fn codec(c: ExportCompression) -> Compression {
    match c {
        ExportCompression::None => Compression::None,
        ExportCompression::Gzip => Compression::Gzip,
        ExportCompression::Zstd => Compression::Zstd,
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
        Err(e) if e.kind() == Kind::Unavailable => Verdict::Retry { after: None },
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
        text.truncate(text.floor_char_boundary(LIMIT));
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
    /// Checks the configuration (an invalid one is [`StartupError::new`]) and builds the client.
    pub fn new(config: ExporterConfig) -> Result<Exporter, StartupError> {
        config.validate().map_err(StartupError::new)?;
        let url = config.base_url().map_err(StartupError::new)?;
        let headers = config.header_map().map_err(StartupError::new)?;
        let client = OtlpClient::with_tls(transport(config.protocol), &url, None, &config.tls)
            .map_err(StartupError::new)?
            .with_headers(headers);
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
        let transport = transport(self.config.protocol);
        let codec = codec(self.config.compression);
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
                        Err(Error::transport(format!("{}: no answer within {:?}", self.url, self.config.timeout)))
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
                    let delay = backoff.next_delay().max(after.unwrap_or_default());
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

#[cfg(test)]
mod tests;
