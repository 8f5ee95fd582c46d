//! The `agent:` section: what `spoor agent` queues and where it forwards (the collector's
//! exporter, load-balancing and resolver shapes). Here rather than in the agent crate because
//! one file configures both programs and is checked as a whole at load.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryConfig;
use spoor_wal::Durability;

/// The `agent:` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub queue: QueueSettings,
    /// Batches exported at once.
    pub num_consumers: usize,
    /// Where to forward: the collector's exporter shapes.
    pub exporters: ExportersConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig { queue: QueueSettings::default(), num_consumers: 4, exporters: ExportersConfig::default() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Empty: `<storage.data_dir>/queue`.
    pub directory: PathBuf,
    /// On-disk cap; beyond it clients get 503 + Retry-After until deliveries free space.
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// `fsync`: acknowledge after fdatasync; `os`: after write(2).
    pub durability: Durability,
    /// Queued payloads kept in memory; the rest is read back from disk.
    pub memory_bytes: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            directory: PathBuf::new(),
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            durability: Durability::Fsync,
            memory_bytes: 64 << 20,
        }
    }
}

/// One of the collector's exporters: `otlp` (gRPC), `otlphttp`, or `loadbalancing`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExportersConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<ExporterConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlphttp: Option<ExporterConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loadbalancing: Option<LoadBalancingConfig>,
}

/// The collector's `loadbalancing` exporter: `protocol.otlp` is the template for every backend.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancingConfig {
    pub routing_key: RoutingKey,
    pub protocol: LoadBalancingProtocol,
    pub resolver: ResolverConfig,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancingProtocol {
    pub otlp: ExporterConfig,
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

    pub fn header_map(&self) -> Result<hyper::HeaderMap, String> {
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
/// The collector's `resolver` block; `dns` wins when both are set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_: Option<StaticResolverConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsResolverConfig>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StaticResolverConfig {
    /// Endpoints as the exporter takes them (`host:port`), used as given.
    pub hostnames: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsResolverConfig {
    pub hostname: String,
    pub port: u16,
    /// How often the name is looked up again.
    #[serde(with = "spoor_process::duration")]
    pub interval: Duration,
    /// How long one lookup may take.
    #[serde(with = "spoor_process::duration")]
    pub timeout: Duration,
}

impl Default for DnsResolverConfig {
    fn default() -> Self {
        DnsResolverConfig {
            hostname: String::new(),
            port: 4317,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        }
    }
}

impl ResolverConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.dns, &self.static_) {
            (Some(dns), _) => {
                if dns.hostname.trim().is_empty() {
                    return Err("resolver.dns.hostname is empty".into());
                }
                if dns.interval.is_zero() || dns.timeout.is_zero() {
                    return Err("resolver.dns.interval and resolver.dns.timeout must be positive".into());
                }
                Ok(())
            }
            (None, Some(s)) if s.hostnames.iter().any(|h| h.trim().is_empty()) => {
                Err("resolver.static.hostnames has an empty entry".into())
            }
            (None, Some(s)) if s.hostnames.is_empty() => Err("resolver.static.hostnames is empty".into()),
            (None, Some(_)) => Ok(()),
            (None, None) => Err("resolver: set static.hostnames or dns.hostname".into()),
        }
    }

    /// `"dns"` or `"static"`, for metric labels (the collector's `resolver` label).
    pub fn kind(&self) -> &'static str {
        if self.dns.is_some() { "dns" } else { "static" }
    }
}

/// What a request is split by (the collector's `routing_key`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum RoutingKey {
    /// All spans of a trace go to one backend (for tail sampling, service graphs).
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// All spans of a service (`service.name` of the resource) go to one backend (span metrics).
    #[serde(rename = "service")]
    Service,
}
