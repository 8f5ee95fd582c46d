//! Prometheus remote_write sender for the metrics generated from traces (tempo-compat.md §5.1
//! "Output"): one POST of an already encoded body (`spoor_generate::remote::encode`) to every
//! configured endpoint at once, each retried on its own.
//!
//! Retries: network errors, timeouts, 5xx and 429 are retried with exponential backoff and
//! jitter (the agent exporter's `Backoff`), waiting at least as long as a `Retry-After`
//! asks. Any other status is permanent: Prometheus answers 400 to out-of-order or duplicate
//! samples, and sending those again can only fail again. A push is given up after
//! `max_retries` retries; since every push carries the current value of every series, the
//! next push repairs what a lost one left out.
//!
//! A push is bounded: at most `max_retries + 1` attempts of at most `timeout_secs` each,
//! separated by waits of at most `max(max_backoff_ms, max_retry_after_secs)`. Nothing is
//! spawned, so dropping the future (at shutdown) cancels the requests in flight and leaves
//! nothing behind.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::metrics::names;
use crate::retry::{Backoff, RetryConfig, Rng, parse_retry_after};
use crate::tls::ClientTlsConfig;

/// Headers the protocol sets; a configured header must not replace them.
const RESERVED_HEADERS: [&str; 8] = [
    "content-encoding",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "user-agent",
    "x-prometheus-remote-write-version",
];

/// How much of an error response is read (and logged, shortened further): enough for
/// Prometheus' and Mimir's one-line reasons, not a whole HTML page.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
const LOG_EXCERPT: usize = 512;

/// One `remote_write` endpoint, in the shape of Prometheus' `remote_write` entries where that
/// is cheap (`url`, `name`, `headers`, `basic_auth`) plus Tempo's per-tenant options
/// (`remote_write_add_org_id_header` → `send_tenant_header`, `remote_write_headers` →
/// `tenant_headers`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// `http://host:port/path` or `https://…`, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// TLS for an `https://` url: the client keys of every `tls` block (CA, client certificate,
    /// server name override, skip verification for tests).
    #[serde(default, skip_serializing_if = "is_default_tls")]
    pub tls: ClientTlsConfig,
    /// Names the endpoint in logs and in the `endpoint` label of Spoor's own metrics (the URL
    /// when empty). Unique among the endpoints.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `X-Scope-OrgID: <tenant>` on every request (Tempo's `remote_write_add_org_id_header`).
    #[serde(default = "yes")]
    pub send_tenant_header: bool,
    /// Extra headers per tenant (Tempo's `remote_write_headers`). They win over `headers` and
    /// over the tenant header, so a tenant can be mapped to another `X-Scope-OrgID`.
    #[serde(default)]
    pub tenant_headers: BTreeMap<String, BTreeMap<String, String>>,
    /// `Authorization: Basic …`; excludes an `Authorization` entry in `headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Per attempt, connecting and reading the answer included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// The first wait before a retry; it doubles on each further retry.
    #[serde(default = "default_min_backoff_ms")]
    pub min_backoff_ms: u64,
    /// No backoff wait is longer (a `Retry-After` may be).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Retries after the first attempt; 0 sends once.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The longest `Retry-After` waited for; a server asking for more makes the push give up
    /// at once (the next push carries the same series, fresher) rather than hold it.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: String,
}

fn is_default_tls(t: &ClientTlsConfig) -> bool {
    !t.is_set()
}

fn yes() -> bool {
    true
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_min_backoff_ms() -> u64 {
    30
}
fn default_max_backoff_ms() -> u64 {
    5000
}
fn default_max_retries() -> u32 {
    10
}
fn default_max_retry_after_secs() -> u64 {
    60
}

impl RemoteWriteConfig {
    /// The checks [`RemoteWrite::new`] makes for one endpoint, as a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let uri = self.uri()?;
        self.tls.validate().map_err(|e| format!("remote_write {}: {e}", self.label()))?;
        if self.tls.is_set() && uri.scheme_str() != Some("https") {
            return Err(format!("remote_write {}: tls is set but the url is not https://", self.label()));
        }
        self.header_map()?;
        self.tenant_header_maps()?;
        if self.timeout_secs == 0 {
            return Err(format!("remote_write {}: timeout_secs must be positive", self.label()));
        }
        if self.min_backoff_ms == 0 {
            return Err(format!("remote_write {}: min_backoff_ms must be positive", self.label()));
        }
        if self.max_backoff_ms < self.min_backoff_ms {
            return Err(format!(
                "remote_write {}: max_backoff_ms ({}) must not be below min_backoff_ms ({})",
                self.label(),
                self.max_backoff_ms,
                self.min_backoff_ms
            ));
        }
        Ok(())
    }

    /// The `endpoint` label: the name, or the URL.
    pub fn label(&self) -> &str {
        if self.name.is_empty() { self.url.trim() } else { &self.name }
    }

    fn uri(&self) -> Result<hyper::Uri, String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err("remote_write url is empty".into());
        }
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err(format!("remote_write url {url:?} must start with http:// or https://"));
        }
        let uri: hyper::Uri = url.parse().map_err(|e| format!("remote_write url {url:?}: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("remote_write url {url:?} has no host"));
        }
        Ok(uri)
    }

    /// `headers` and `basic_auth` as sent on every request.
    fn header_map(&self) -> Result<HeaderMap, String> {
        let mut map = to_header_map(&self.headers, &format!("remote_write {} headers", self.label()))?;
        if let Some(auth) = &self.basic_auth {
            if map.contains_key(hyper::header::AUTHORIZATION) {
                return Err(format!(
                    "remote_write {}: set basic_auth or an Authorization header, not both",
                    self.label()
                ));
            }
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.username, auth.password));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| format!("remote_write {}: basic_auth is not a valid header", self.label()))?;
            value.set_sensitive(true);
            map.insert(hyper::header::AUTHORIZATION, value);
        }
        Ok(map)
    }

    fn tenant_header_maps(&self) -> Result<HashMap<String, HeaderMap>, String> {
        self.tenant_headers
            .iter()
            .map(|(tenant, headers)| {
                let what = format!("remote_write {} tenant_headers.{tenant}", self.label());
                Ok((tenant.clone(), to_header_map(headers, &what)?))
            })
            .collect()
    }
}

fn to_header_map(headers: &BTreeMap<String, String>, what: &str) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{what}: {name:?} is not a header name"))?;
        if RESERVED_HEADERS.contains(&n.as_str()) {
            return Err(format!("{what}: {name} is set by the remote-write protocol and cannot be configured"));
        }
        let v = HeaderValue::from_str(value).map_err(|_| format!("{what}: the value of {name} is not valid"))?;
        map.insert(n, v);
    }
    Ok(map)
}

/// How one endpoint's push ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// A 2xx answer, after `attempts` attempts.
    Delivered { attempts: u32 },
    /// Refused in a way that retrying cannot fix (a 4xx other than 429, or a tenant that is
    /// not a valid header value); the samples are dropped.
    Permanent { attempts: u32, error: String },
    /// Still failing after `max_retries` retries, or told to wait past `max_retry_after_secs`.
    GaveUp { attempts: u32, error: String },
}

impl PushOutcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, PushOutcome::Delivered { .. })
    }
}

/// One attempt's result, sorted.
enum Verdict {
    Delivered,
    Retry { after: Option<Duration>, error: String },
    Permanent(String),
}

struct Endpoint {
    label: String,
    /// Per endpoint, since each may have its own TLS settings; pools its connections.
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: hyper::Uri,
    headers: HeaderMap,
    tenant_headers: HashMap<String, HeaderMap>,
    send_tenant_header: bool,
    timeout: Duration,
    retry: RetryConfig,
    max_retries: u32,
    max_retry_after: Duration,
}

/// Every configured endpoint, sharing one connection pool. Cheap to share behind an `Arc`;
/// `push` may run concurrently (for different tenants).
pub struct RemoteWrite {
    endpoints: Vec<Endpoint>,
}

impl std::fmt::Debug for RemoteWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWrite").field("endpoints", &self.endpoints().collect::<Vec<_>>()).finish()
    }
}

impl RemoteWrite {
    /// Validates every endpoint (an invalid one, or two with the same label, is
    /// [`StartupError::new`]) and builds the client. No configuration is valid too: pushes then
    /// do nothing.
    pub fn new(configs: &[RemoteWriteConfig]) -> Result<RemoteWrite, StartupError> {
        let mut endpoints = Vec::with_capacity(configs.len());
        for c in configs {
            c.validate().map_err(StartupError::new)?;
            let label = c.label().to_string();
            if endpoints.iter().any(|e: &Endpoint| e.label == label) {
                return Err(StartupError::new(format!(
                    "remote_write: two endpoints named {label:?}; give them distinct names"
                )));
            }
            let min = Duration::from_millis(c.min_backoff_ms);
            let max = Duration::from_millis(c.max_backoff_ms);
            let connector = crate::tls::client::connector(false, &c.tls)
                .map_err(|e| StartupError::new(format!("remote_write {label}: {e}")))?;
            endpoints.push(Endpoint {
                client: Client::builder(TokioExecutor::new()).build(connector),
                label,
                uri: c.uri().map_err(StartupError::new)?,
                headers: c.header_map().map_err(StartupError::new)?,
                tenant_headers: c.tenant_header_maps().map_err(StartupError::new)?,
                send_tenant_header: c.send_tenant_header,
                timeout: Duration::from_secs(c.timeout_secs),
                // Doubling like Prometheus' queue manager, with the exporter's ±50 % jitter so
                // the pushes of many tenants that failed together do not retry together.
                retry: RetryConfig {
                    enabled: true,
                    initial_interval: min,
                    multiplier: 2.0,
                    randomization_factor: 0.5,
                    max_interval: max,
                    max_elapsed_time: Duration::ZERO,
                },
                max_retries: c.max_retries,
                max_retry_after: Duration::from_secs(c.max_retry_after_secs),
            });
        }
        Ok(RemoteWrite { endpoints })
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoints' labels (name or URL), in configuration order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|e| e.label.as_str())
    }

    /// Sends `body` (a snappy-compressed `WriteRequest` holding `samples` samples) for `tenant`
    /// to every endpoint concurrently and returns how each ended, in configuration order.
    ///
    /// Counts into `metrics` (label `endpoint`): `spoor_remote_write_requests_total{outcome}`
    /// with `ok`, `retried` (per retry), `failed_permanent`, `failed_retries_exhausted`;
    /// `spoor_remote_write_samples_total` and `spoor_remote_write_bytes_total` (delivered);
    /// `spoor_remote_write_samples_failed_total` (given up); `spoor_remote_write_seconds_total`
    /// (time in requests, waits excluded).
    pub async fn push(&self, tenant: &str, body: Bytes, samples: u64, metrics: &Metrics) -> Vec<PushOutcome> {
        let sends = self.endpoints.iter().map(|e| self.push_one(e, tenant, body.clone(), samples, metrics));
        futures_util::future::join_all(sends).await
    }

    async fn push_one(&self, e: &Endpoint, tenant: &str, body: Bytes, samples: u64, metrics: &Metrics) -> PushOutcome {
        let endpoint = e.label.as_str();
        let count = |outcome: &'static str| {
            metrics.inc(names::REMOTE_WRITE_REQUESTS_TOTAL, &[("endpoint", endpoint), ("outcome", outcome)], 1.0)
        };
        let dropped =
            || metrics.inc(names::REMOTE_WRITE_SAMPLES_FAILED_TOTAL, &[("endpoint", endpoint)], samples as f64);
        let headers = match request_headers(e, tenant) {
            Ok(h) => h,
            Err(error) => {
                tracing::warn!(endpoint, tenant, %error, "remote write not sent");
                count("failed_permanent");
                dropped();
                return PushOutcome::Permanent { attempts: 0, error };
            }
        };
        let mut backoff = Backoff::new(&e.retry, Rng::seeded());
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let began = Instant::now();
            let verdict = match tokio::time::timeout(e.timeout, self.attempt(e, &headers, body.clone())).await {
                Ok(v) => v,
                Err(_) => Verdict::Retry { after: None, error: format!("no answer within {:?}", e.timeout) },
            };
            metrics.inc(names::REMOTE_WRITE_SECONDS_TOTAL, &[("endpoint", endpoint)], began.elapsed().as_secs_f64());
            let (after, error) = match verdict {
                Verdict::Delivered => {
                    count("ok");
                    metrics.inc(names::REMOTE_WRITE_SAMPLES_TOTAL, &[("endpoint", endpoint)], samples as f64);
                    metrics.inc(names::REMOTE_WRITE_BYTES_TOTAL, &[("endpoint", endpoint)], body.len() as f64);
                    return PushOutcome::Delivered { attempts };
                }
                Verdict::Permanent(error) => {
                    tracing::warn!(endpoint, tenant, attempts, %error, samples, "remote write refused; samples dropped");
                    count("failed_permanent");
                    dropped();
                    return PushOutcome::Permanent { attempts, error };
                }
                Verdict::Retry { after, error } => (after, error),
            };
            let give_up = |why: &str| {
                tracing::warn!(endpoint, tenant, attempts, %error, samples, "remote write failed {why}; samples dropped");
                count("failed_retries_exhausted");
                dropped();
                PushOutcome::GaveUp { attempts, error: error.clone() }
            };
            if attempts > e.max_retries {
                return give_up("and retries are exhausted");
            }
            if after.is_some_and(|a| a > e.max_retry_after) {
                return give_up("and Retry-After is longer than max_retry_after_secs");
            }
            let delay = backoff.next_delay().max(after.unwrap_or_default());
            count("retried");
            // The first failure says the endpoint is in trouble; later ones only repeat it.
            if attempts == 1 {
                tracing::warn!(endpoint, tenant, ?delay, %error, "remote write failed; retrying");
            } else {
                tracing::debug!(endpoint, tenant, attempts, ?delay, %error, "remote write failed; retrying");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One POST, answer read (error bodies up to [`ERROR_BODY_LIMIT`]).
    async fn attempt(&self, e: &Endpoint, headers: &HeaderMap, body: Bytes) -> Verdict {
        let mut req = hyper::Request::new(Full::new(body));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = e.uri.clone();
        *req.headers_mut() = headers.clone();
        let resp = match e.client.request(req).await {
            Ok(r) => r,
            // Could not connect or the connection broke: the samples may not have arrived.
            Err(err) => return Verdict::Retry { after: None, error: format!("request failed: {}", error_chain(&err)) },
        };
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        // Read even a success body to its end so the connection can be reused.
        let text = match Limited::new(body, ERROR_BODY_LIMIT).collect().await {
            Ok(b) => excerpt(&b.to_bytes()),
            Err(_) if status.is_success() => String::new(),
            Err(err) => format!("(body unreadable: {err})"),
        };
        if status.is_success() {
            return Verdict::Delivered;
        }
        let error = if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") };
        if status == hyper::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let after = parts
                .headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()))
                .map(Duration::from_secs);
            Verdict::Retry { after, error }
        } else {
            Verdict::Permanent(error)
        }
    }
}

/// Configured headers, then the tenant header, then the tenant's own headers, then the
/// protocol's (validation keeps configured ones off those names).
fn request_headers(e: &Endpoint, tenant: &str) -> Result<HeaderMap, String> {
    let mut h = e.headers.clone();
    if e.send_tenant_header {
        let v = HeaderValue::from_str(tenant).map_err(|_| format!("tenant {tenant:?} is not a valid header value"))?;
        h.insert("x-scope-orgid", v);
    }
    if let Some(extra) = e.tenant_headers.get(tenant) {
        for (n, v) in extra {
            h.insert(n.clone(), v.clone());
        }
    }
    h.insert(hyper::header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    h.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    h.insert("x-prometheus-remote-write-version", HeaderValue::from_static("0.1.0"));
    h.insert(hyper::header::USER_AGENT, HeaderValue::from_static(concat!("spoor/", env!("CARGO_PKG_VERSION"))));
    Ok(h)
}

/// hyper-util's error says only "client error (Connect)"; the cause says what happened.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The start of a response body as one line, for logs.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > LOG_EXCERPT {
        line.truncate(line.floor_char_boundary(LOG_EXCERPT));
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Request, State};
    use axum::response::Response;
    use spoor_generate::remote::{self, WriteRequest};
    use spoor_generate::{Family, Kind, Series, Value};

    use super::*;

    // ---- configuration ----

    fn parse(yaml: &str) -> Result<RemoteWriteConfig, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn config_defaults_and_round_trip() {
        let c = parse("url: http://prom:9090/api/v1/write\n").unwrap();
        assert_eq!(c.name, "");
        assert_eq!(c.label(), "http://prom:9090/api/v1/write");
        assert!(c.send_tenant_header);
        assert!(c.headers.is_empty() && c.tenant_headers.is_empty() && c.basic_auth.is_none());
        assert_eq!((c.timeout_secs, c.min_backoff_ms, c.max_backoff_ms, c.max_retries), (30, 30, 5000, 10));
        assert_eq!(c.max_retry_after_secs, 60);
        c.validate().unwrap();
        let full = parse(
            "url: http://mimir/api/v1/push\nname: mimir\nheaders: {x-a: '1'}\nsend_tenant_header: false\n\
             tenant_headers: {team-a: {x-team: a}}\nbasic_auth: {username: u, password: p}\n\
             timeout_secs: 5\nmin_backoff_ms: 10\nmax_backoff_ms: 100\nmax_retries: 3\nmax_retry_after_secs: 9\n",
        )
        .unwrap();
        assert_eq!(full.label(), "mimir");
        assert_eq!(full.tenant_headers["team-a"]["x-team"], "a");
        full.validate().unwrap();
        let back: RemoteWriteConfig = serde_saphyr::from_str(&serde_saphyr::to_string(&full).unwrap()).unwrap();
        assert_eq!(back, full);
        // The server's config is read through serde_json.
        let j: RemoteWriteConfig = serde_json::from_value(serde_json::json!({"url": "http://h:1/w"})).unwrap();
        assert_eq!(j.max_retries, 10);
        assert!(parse("url: http://h/w\nremote_timeout: 30s\n").unwrap_err().contains("remote_timeout"));
        assert!(parse("name: x\n").is_err(), "url is required");
    }

    #[test]
    fn config_validation() {
        let ok = parse("url: http://h:9090/api/v1/write\n").unwrap();
        let with = |f: &dyn Fn(&mut RemoteWriteConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate()
        };
        assert!(with(&|c| c.url = "https://h/api/v1/write".into()).is_ok());
        assert!(with(&|c| c.url = "HTTPS://h/".into()).is_ok());
        let err = with(&|c| c.tls.insecure_skip_verify = true).unwrap_err();
        assert!(err.contains("not https://"), "{err}");
        assert!(with(&|c| c.url = "ftp://h/".into()).is_err());
        assert!(with(&|c| c.url = "h:9090/api/v1/write".into()).is_err());
        assert!(with(&|c| c.url = "http://".into()).is_err());
        assert!(with(&|c| c.url = "http://h h/".into()).is_err());
        assert!(with(&|c| c.url = String::new()).is_err());
        assert!(with(&|c| c.url = " http://h:1 ".into()).is_ok());
        assert!(with(&|c| c.headers = [("bad name".into(), "v".into())].into()).is_err());
        assert!(with(&|c| c.headers = [("x-a".into(), "line\nbreak".into())].into()).is_err());
        let err = with(&|c| c.headers = [("Content-Encoding".into(), "gzip".into())].into()).unwrap_err();
        assert!(err.contains("protocol"), "{err}");
        assert!(
            with(&|c| c.tenant_headers =
                [("t".into(), [("x-prometheus-remote-write-version".into(), "2".into())].into())].into())
            .is_err()
        );
        assert!(
            with(&|c| c.tenant_headers = [("t".into(), [("x-scope-orgid".into(), "other".into())].into())].into())
                .is_ok()
        );
        assert!(
            with(&|c| {
                c.headers = [("authorization".into(), "Bearer x".into())].into();
                c.basic_auth = Some(BasicAuth { username: "u".into(), password: "p".into() });
            })
            .is_err()
        );
        assert!(with(&|c| c.timeout_secs = 0).is_err());
        assert!(with(&|c| c.min_backoff_ms = 0).is_err());
        assert!(with(&|c| c.max_backoff_ms = 10).is_err());
        assert!(matches!(RemoteWrite::new(&[ok.clone(), ok.clone()]), Err(e) if e.to_string().contains("distinct")));
        let named = RemoteWriteConfig { name: "b".into(), ..ok.clone() };
        let rw = RemoteWrite::new(&[ok.clone(), named]).unwrap();
        assert_eq!(rw.endpoints().collect::<Vec<_>>(), ["http://h:9090/api/v1/write", "b"]);
        let missing_ca = ClientTlsConfig { ca_file: "/nonexistent/ca.pem".into(), ..ClientTlsConfig::default() };
        let err =
            RemoteWrite::new(&[RemoteWriteConfig { url: "https://h/".into(), tls: missing_ca, ..ok }]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(RemoteWrite::new(&[]).unwrap().is_empty());
    }

    // ---- against scripted servers ----

    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
        delay: Duration,
    }

    fn reply(status: u16) -> Reply {
        Reply { status, headers: vec![], body: "", delay: Duration::ZERO }
    }

    #[derive(Clone)]
    struct Seen {
        headers: hyper::HeaderMap,
        request: Result<WriteRequest, String>,
        at: Instant,
    }

    /// Answers with the replies in order, repeating the last; records what it was sent.
    #[derive(Default)]
    struct Script {
        replies: Mutex<VecDeque<Reply>>,
        seen: Mutex<Vec<Seen>>,
    }

    impl Script {
        /// A copy, so no lock is held across an await.
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn answer(State(script): State<Arc<Script>>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let request = remote::decode(&bytes, 1 << 24).map_err(|e| e.to_string());
        script.seen.lock().unwrap().push(Seen { headers: parts.headers, request, at: Instant::now() });
        let r = {
            let mut q = script.replies.lock().unwrap();
            if q.len() > 1 { q.pop_front().unwrap() } else { q.front().cloned().unwrap_or(reply(200)) }
        };
        tokio::time::sleep(r.delay).await;
        let mut resp = Response::builder().status(r.status);
        for (n, v) in r.headers {
            resp = resp.header(n, v);
        }
        resp.body(axum::body::Body::from(r.body)).unwrap()
    }

    async fn serve(replies: Vec<Reply>) -> (String, Arc<Script>) {
        let script = Arc::new(Script { replies: Mutex::new(replies.into()), ..Script::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, script)
    }

    fn config(url: &str) -> RemoteWriteConfig {
        RemoteWriteConfig {
            url: url.to_string(),
            tls: ClientTlsConfig::default(),
            name: String::new(),
            headers: BTreeMap::new(),
            send_tenant_header: true,
            tenant_headers: BTreeMap::new(),
            basic_auth: None,
            timeout_secs: 5,
            min_backoff_ms: 10,
            max_backoff_ms: 50,
            max_retries: 10,
            max_retry_after_secs: 60,
        }
    }

    fn request() -> WriteRequest {
        let family = Family {
            name: "traces_spanmetrics_calls_total".into(),
            kind: Kind::Counter,
            help: "calls",
            series: vec![
                Series {
                    labels: vec![("service".into(), "api".into())],
                    value: Value::Counter(3.0),
                    updated_ms: 0,
                    created_ms: 0,
                },
                Series {
                    labels: vec![("service".into(), "db".into())],
                    value: Value::Counter(1.0),
                    updated_ms: 0,
                    created_ms: 0,
                },
            ],
        };
        remote::write_request(&[family], &vec![], 1_000, i64::MIN, i64::MIN)
    }

    fn body() -> Bytes {
        Bytes::from(remote::encode(&request()).unwrap())
    }

    /// A counter's value as `/metrics` renders it (0 when absent).
    fn metric(m: &Metrics, series: &str) -> f64 {
        m.render_registry()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
    }

    fn requests(m: &Metrics, endpoint: &str, outcome: &str) -> f64 {
        metric(m, &format!("spoor_remote_write_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}}"))
    }

    #[tokio::test]
    async fn headers_and_body_go_out() {
        let (url, script) = serve(vec![reply(204)]).await;
        let rw = RemoteWrite::new(&[RemoteWriteConfig {
            headers: [("x-custom".into(), "1".into()), ("x-scope-orgid".into(), "ignored".into())].into(),
            tenant_headers: [("team-a".into(), [("x-team".into(), "a".into())].into())].into(),
            ..config(&url)
        }])
        .unwrap();
        let m = Metrics::default();
        assert_eq!(rw.push("team-a", body(), 2, &m).await, [PushOutcome::Delivered { attempts: 1 }]);
        assert_eq!(rw.push("team-b", body(), 2, &m).await, [PushOutcome::Delivered { attempts: 1 }]);
        let seen = script.seen();
        let h = &seen[0].headers;
        assert_eq!(h["content-encoding"], "snappy");
        assert_eq!(h["content-type"], "application/x-protobuf");
        assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(h.get_all("x-scope-orgid").iter().collect::<Vec<_>>(), ["team-a"]);
        assert_eq!(h["x-custom"], "1");
        assert_eq!(h["x-team"], "a");
        assert!(h["user-agent"].to_str().unwrap().starts_with("spoor/"));
        assert_eq!(seen[0].request.as_ref().unwrap(), &request());
        let h = &seen[1].headers;
        assert_eq!(h["x-scope-orgid"], "team-b");
        assert!(h.get("x-team").is_none());
        assert_eq!(requests(&m, &url, "ok"), 2.0);
        assert_eq!(metric(&m, &format!("spoor_remote_write_samples_total{{endpoint=\"{url}\"}}")), 4.0);
        assert_eq!(
            metric(&m, &format!("spoor_remote_write_bytes_total{{endpoint=\"{url}\"}}")),
            2.0 * body().len() as f64
        );
        assert!(m.render_registry().contains("spoor_remote_write_seconds_total"));

        // No tenant header; basic auth; a tenant header overriding the org id.
        let (url, script) = serve(vec![reply(200)]).await;
        let rw = RemoteWrite::new(&[RemoteWriteConfig {
            send_tenant_header: false,
            basic_auth: Some(BasicAuth { username: "u".into(), password: "p".into() }),
            ..config(&url)
        }])
        .unwrap();
        rw.push("team-a", body(), 2, &m).await;
        let rw = RemoteWrite::new(&[RemoteWriteConfig {
            tenant_headers: [("team-a".into(), [("x-scope-orgid".into(), "mapped".into())].into())].into(),
            ..config(&url)
        }])
        .unwrap();
        rw.push("team-a", body(), 2, &m).await;
        let seen = script.seen();
        assert!(seen[0].headers.get("x-scope-orgid").is_none());
        assert_eq!(seen[0].headers["authorization"], "Basic dTpw");
        assert_eq!(seen[1].headers.get_all("x-scope-orgid").iter().collect::<Vec<_>>(), ["mapped"]);
    }

    #[tokio::test]
    async fn retries_503_then_succeeds() {
        let (url, script) = serve(vec![reply(503), reply(503), reply(200)]).await;
        let rw = RemoteWrite::new(&[config(&url)]).unwrap();
        let m = Metrics::default();
        assert_eq!(rw.push("t", body(), 2, &m).await, [PushOutcome::Delivered { attempts: 3 }]);
        assert_eq!(script.seen().len(), 3);
        assert_eq!(requests(&m, &url, "retried"), 2.0);
        assert_eq!(requests(&m, &url, "ok"), 1.0);
        assert_eq!(metric(&m, &format!("spoor_remote_write_samples_total{{endpoint=\"{url}\"}}")), 2.0);
    }

    #[tokio::test]
    async fn retry_after_is_honoured_and_bounded() {
        let throttled = Reply { headers: vec![("retry-after", "1")], ..reply(429) };
        let (url, script) = serve(vec![throttled, reply(200)]).await;
        let rw = RemoteWrite::new(&[config(&url)]).unwrap();
        let m = Metrics::default();
        assert_eq!(rw.push("t", body(), 2, &m).await, [PushOutcome::Delivered { attempts: 2 }]);
        let seen = script.seen();
        let gap = seen[1].at - seen[0].at;
        assert!(gap >= Duration::from_millis(990) && gap < Duration::from_secs(3), "{gap:?}");
        // Past max_retry_after_secs: given up at once rather than held.
        let long = Reply { headers: vec![("retry-after", "3600")], ..reply(503) };
        let (url, script) = serve(vec![long]).await;
        let rw = RemoteWrite::new(&[config(&url)]).unwrap();
        let t = Instant::now();
        let out = rw.push("t", body(), 2, &m).await;
        assert!(
            matches!(&out[..], [PushOutcome::GaveUp { attempts: 1, error }] if error.starts_with("HTTP 503")),
            "{out:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(script.seen().len(), 1);
        assert_eq!(requests(&m, &url, "failed_retries_exhausted"), 1.0);
    }

    #[tokio::test]
    async fn a_400_is_not_retried() {
        let refusal = Reply { body: "out of order sample\n", ..reply(400) };
        let (url, script) = serve(vec![refusal]).await;
        let rw = RemoteWrite::new(&[config(&url)]).unwrap();
        let m = Metrics::default();
        let out = rw.push("t", body(), 2, &m).await;
        assert_eq!(
            out,
            [PushOutcome::Permanent { attempts: 1, error: "HTTP 400 Bad Request: out of order sample".into() }]
        );
        assert_eq!(script.seen().len(), 1);
        assert_eq!(requests(&m, &url, "failed_permanent"), 1.0);
        assert_eq!(requests(&m, &url, "retried"), 0.0);
        assert_eq!(metric(&m, &format!("spoor_remote_write_samples_failed_total{{endpoint=\"{url}\"}}")), 2.0);
        // A tenant that cannot be a header value: nothing sent.
        let out = rw.push("bad\ntenant", body(), 2, &m).await;
        assert!(matches!(&out[..], [PushOutcome::Permanent { attempts: 0, .. }]), "{out:?}");
        assert_eq!(script.seen().len(), 1);
    }

    #[tokio::test]
    async fn retries_exhausted_are_counted() {
        let (url, script) = serve(vec![reply(500)]).await;
        let rw = RemoteWrite::new(&[RemoteWriteConfig { max_retries: 2, ..config(&url) }]).unwrap();
        let m = Metrics::default();
        let out = rw.push("t", body(), 2, &m).await;
        assert!(matches!(&out[..], [PushOutcome::GaveUp { attempts: 3, .. }]), "{out:?}");
        assert_eq!(script.seen().len(), 3);
        assert_eq!(requests(&m, &url, "retried"), 2.0);
        assert_eq!(requests(&m, &url, "failed_retries_exhausted"), 1.0);
        assert_eq!(requests(&m, &url, "ok"), 0.0);
        // Connection refused is retried too (a port nothing listens on).
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/write", closed.local_addr().unwrap());
        drop(closed);
        let rw = RemoteWrite::new(&[RemoteWriteConfig { max_retries: 1, ..config(&url) }]).unwrap();
        let out = rw.push("t", body(), 2, &m).await;
        assert!(
            matches!(&out[..], [PushOutcome::GaveUp { attempts: 2, error }] if error.contains("request failed")),
            "{out:?}"
        );
        // max_retries 0: one attempt.
        let (url, script) = serve(vec![reply(503)]).await;
        let rw = RemoteWrite::new(&[RemoteWriteConfig { max_retries: 0, ..config(&url) }]).unwrap();
        assert!(matches!(&rw.push("t", body(), 2, &m).await[..], [PushOutcome::GaveUp { attempts: 1, .. }]));
        assert_eq!(script.seen().len(), 1);
    }

    #[tokio::test]
    async fn a_slow_attempt_times_out_and_is_retried() {
        let slow = Reply { delay: Duration::from_secs(10), ..reply(200) };
        let (url, script) = serve(vec![slow, reply(200)]).await;
        let rw = RemoteWrite::new(&[RemoteWriteConfig { timeout_secs: 1, ..config(&url) }]).unwrap();
        let t = Instant::now();
        let out = rw.push("t", body(), 2, &Metrics::default()).await;
        assert_eq!(out, [PushOutcome::Delivered { attempts: 2 }]);
        assert!(t.elapsed() >= Duration::from_secs(1) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(script.seen().len(), 2);
    }

    #[tokio::test]
    async fn two_endpoints_both_receive_independently() {
        let (a, script_a) = serve(vec![reply(200)]).await;
        let (b, script_b) = serve(vec![reply(503), reply(200)]).await;
        let rw = RemoteWrite::new(&[
            RemoteWriteConfig { name: "a".into(), ..config(&a) },
            RemoteWriteConfig { name: "b".into(), ..config(&b) },
        ])
        .unwrap();
        let m = Metrics::default();
        let out = rw.push("t", body(), 2, &m).await;
        assert_eq!(out, [PushOutcome::Delivered { attempts: 1 }, PushOutcome::Delivered { attempts: 2 }]);
        assert!(out.iter().all(PushOutcome::is_delivered));
        for script in [&script_a, &script_b] {
            let seen = script.seen();
            assert_eq!(seen.last().unwrap().request.as_ref().unwrap(), &request());
        }
        assert_eq!(requests(&m, "a", "ok"), 1.0);
        assert_eq!(requests(&m, "b", "ok"), 1.0);
        assert_eq!(requests(&m, "b", "retried"), 1.0);
        assert_eq!(requests(&m, "a", "retried"), 0.0);
    }

    #[tokio::test]
    async fn dropping_a_push_cancels_it() {
        let (url, script) = serve(vec![reply(503)]).await;
        let rw =
            RemoteWrite::new(&[RemoteWriteConfig { min_backoff_ms: 60_000, max_backoff_ms: 60_000, ..config(&url) }])
                .unwrap();
        let m = Metrics::default();
        // Dropped during the backoff wait after the first 503.
        assert!(tokio::time::timeout(Duration::from_millis(300), rw.push("t", body(), 2, &m)).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(script.seen().len(), 1);
        assert_eq!(requests(&m, &url, "retried"), 1.0);
        assert_eq!(requests(&m, &url, "failed_retries_exhausted"), 0.0);
        // The client is still usable afterwards.
        *script.replies.lock().unwrap() = [reply(200)].into();
        assert_eq!(rw.push("t", body(), 2, &m).await, [PushOutcome::Delivered { attempts: 1 }]);
    }
}
