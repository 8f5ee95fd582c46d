//! Configuration: embedded defaults, then a YAML file, then `SPOOR__SECTION__KEY` environment
//! variables, then command-line flags. Every key is documented in docs/configuration.md.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use spoor_store::{AzureConfig, BackendKind, GcsConfig, S3Config};

pub use crate::auth::AuthConfig;
pub use crate::cluster::{IngesterConfig, KafkaConfig, QuerierConfig, Role};
pub use crate::dora::config::DoraConfig;
pub use crate::encryption::EncryptionConfig;
pub use crate::ingest::foreign::{JaegerConfig, ZipkinConfig};
pub use crate::ingest::limits::{IngestionLimits, LimitsConfig, MemoryLimiterConfig};
pub use crate::ingest::processors::{Processor, Processors};
pub use crate::retention::{RetentionConfig, SampledKeepConfig, TenantRetention, TiersConfig};
pub use crate::tls::TlsConfig;
pub use spoor_wal::Durability;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub wal: WalConfig,
    pub blocks: BlocksConfig,
    pub compaction: CompactionConfig,
    pub retention: RetentionConfig,
    pub ingest: IngestConfig,
    pub limits: LimitsConfig,
    pub search: SearchConfig,
    pub tenancy: TenancyConfig,
    /// The Zipkin v2 receiver; off unless present (`zipkin: {}` listens on 127.0.0.1:9411).
    pub zipkin: Option<ZipkinConfig>,
    /// The Jaeger Thrift-over-HTTP receiver; off unless present (`jaeger: {}` listens on
    /// 127.0.0.1:14268). Jaeger gRPC is always served on the OTLP gRPC port.
    pub jaeger: Option<JaegerConfig>,
    /// Tokens, roles and the audit log; off by default (docs/security.md).
    pub auth: AuthConfig,
    /// The collector-shaped `processors:` block (scrubbing, tail sampling, memory limiter, batch).
    pub processors: Processors,
    /// `spoor agent` only: its queue and where it forwards.
    pub agent: agent::AgentConfig,
    /// Span metrics and service graphs from every span before sampling (Tempo's
    /// metrics-generator), for the scrape endpoint and remote_write.
    pub metrics_generator: spoor_generate::GeneratorConfig<crate::generated::remote_write::RemoteWriteConfig>,
    /// The web UI on the API port (docs/ui.md).
    pub ui: crate::ui::UiConfig,
    /// DORA metrics from CI/CD traces (docs/dora.md).
    pub dora: DoraConfig,
    /// What this process runs (`spoor serve --roles`); every role by default (docs/scale-out.md).
    pub roles: Roles,
    /// The Kafka-API log between distributors and ingesters; absent: the WAL of a single node.
    pub kafka: Option<KafkaConfig>,
    pub ingester: IngesterConfig,
    pub querier: QuerierConfig,
}

/// The roles of a process, sorted; every role unless configured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Roles(pub Vec<Role>);

impl Default for Roles {
    fn default() -> Self {
        Roles(Role::ALL.to_vec())
    }
}

impl Roles {
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }
}

impl Config {
    /// Whether this process takes spans in (receivers) or holds them (ingester).
    pub fn ingests(&self) -> bool {
        self.ingest.enabled && (self.roles.has(Role::Distributor) || self.roles.has(Role::Ingester))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Tempo-compatible query API, `/metrics`, `/ready`.
    pub http_listen: String,
    pub otlp_grpc_listen: String,
    pub otlp_http_listen: String,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// How long a client may take to send an HTTP/1 request head, and to send its first bytes
    /// on a new connection (HTTP/1 or the HTTP/2 preface); slower connections are closed
    /// (slowloris). An HTTP/1 keep-alive connection idle this long between requests is closed
    /// too. 0: no limit.
    pub header_read_timeout_secs: u64,
    /// TLS for every listener; off while `cert_file` is empty.
    pub tls: TlsConfig,
    /// Per-listener TLS, named after the listener's address key: when set, it replaces `tls`
    /// for that listener as a whole (`{}` turns TLS off there).
    /// (Serialized as null when unset, so `SPOOR__SERVER__OTLP_GRPC_TLS__…` can reach them.)
    pub http_tls: Option<TlsConfig>,
    pub otlp_grpc_tls: Option<TlsConfig>,
    pub otlp_http_tls: Option<TlsConfig>,
}

/// One of the server's listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Api,
    OtlpGrpc,
    OtlpHttp,
}

impl ServerConfig {
    /// The TLS settings a listener serves with, and the key they come from.
    pub fn tls_for(&self, l: Listener) -> (&TlsConfig, &'static str) {
        let (own, key) = match l {
            Listener::Api => (&self.http_tls, "server.http_tls"),
            Listener::OtlpGrpc => (&self.otlp_grpc_tls, "server.otlp_grpc_tls"),
            Listener::OtlpHttp => (&self.otlp_http_tls, "server.otlp_http_tls"),
        };
        match own {
            Some(t) => (t, key),
            None => (&self.tls, "server.tls"),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_listen: "127.0.0.1:3200".into(),
            otlp_grpc_listen: "127.0.0.1:4317".into(),
            otlp_http_listen: "127.0.0.1:4318".into(),
            shutdown_timeout_secs: 30,
            header_read_timeout_secs: 30,
            tls: TlsConfig::default(),
            http_tls: None,
            otlp_grpc_tls: None,
            otlp_http_tls: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The WAL and temporary files; local blocks too unless `local.path` says otherwise.
    pub data_dir: PathBuf,
    pub backend: BackendKind,
    /// Key prefix inside the bucket (or directory) under which tenants' blocks live.
    pub prefix: String,
    pub local: LocalConfig,
    pub s3: S3Config,
    pub gcs: GcsConfig,
    pub azure: AzureConfig,
    pub request_timeout_secs: u64,
    pub max_retries: usize,
    /// How often the blocklist is re-read from the backend (blocks written by other processes).
    pub blocklist_poll_secs: u64,
    /// Memory for block footers and page indexes kept between lookups (least recently used
    /// blocks give theirs up first).
    pub block_cache_bytes: usize,
    /// Encryption at rest of the WAL, local blocks and the agent's queue (docs/security.md).
    pub encryption: EncryptionConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            backend: BackendKind::Local,
            prefix: String::new(),
            local: LocalConfig::default(),
            s3: S3Config::default(),
            gcs: GcsConfig::default(),
            azure: AzureConfig::default(),
            request_timeout_secs: 30,
            max_retries: 10,
            blocklist_poll_secs: 15,
            block_cache_bytes: 256 << 20,
            encryption: EncryptionConfig::default(),
        }
    }
}

impl StorageConfig {
    pub fn local_path(&self) -> PathBuf {
        if self.local.path.as_os_str().is_empty() { self.data_dir.join("blocks") } else { self.local.path.clone() }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Where local blocks live; empty: `<data_dir>/blocks`.
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BlocksConfig {
    /// A tenant's live traces become a block once they take this many (encoded) bytes...
    pub max_block_bytes: usize,
    /// ...or once the oldest of them arrived this long ago.
    pub max_block_age_secs: u64,
    /// Spans per Parquet row group; 0: the block format's default.
    pub row_group_spans: usize,
    /// Give frequent attributes their own columns, chosen per block from its data; false: only
    /// `service.name` (every other attribute in the generic lists: what benchmarks compare).
    pub dedicated_columns: bool,
}

impl Default for BlocksConfig {
    fn default() -> Self {
        BlocksConfig { max_block_bytes: 100 << 20, max_block_age_secs: 60, row_group_spans: 0, dedicated_columns: true }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// Run compaction, retention and cleanup in this process. Exactly one process per backend
    /// should.
    pub enabled: bool,
    pub interval_secs: u64,
    /// Only blocks whose first span starts in the same window are merged.
    pub window_secs: u64,
    /// Blocks per merge, at most. Flushed blocks of the current window wait until this many are
    /// there, so each span is rewritten about once; compacted blocks are merged again only
    /// while their window holds more than this many blocks.
    pub max_input_blocks: usize,
    /// Upper bound on a compacted block's spans; blocks over half of it are not compacted again.
    pub max_block_spans: u64,
    /// Files of a block that never got its meta are deleted after this long.
    pub orphan_grace_secs: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            interval_secs: 30,
            window_secs: 3600,
            max_input_blocks: 32,
            max_block_spans: 20_000_000,
            orphan_grace_secs: 3600,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// `fsync`: acknowledge after fdatasync. `os`: after write(2) only (survives a crash of
    /// Spoor, not of the machine).
    pub durability: Durability,
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig { durability: Durability::Fsync, segment_bytes: 64 << 20 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// false: a query-only process (no OTLP receivers, no WAL) serving the backend's blocks.
    pub enabled: bool,
    /// Largest accepted request, measured after decompression (HTTP body, gRPC message).
    pub max_request_bytes: usize,
    /// Spans that ended longer ago than this are refused (partial success); 0: spans of any
    /// age are accepted and placed by their own time (tiered retention takes them from there).
    pub max_span_age_hours: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { enabled: true, max_request_bytes: 64 << 20, max_span_age_hours: 0 }
    }
}

impl Config {
    /// The memory limiter's settings (off unless configured).
    pub fn memory_limiter(&self) -> MemoryLimiterConfig {
        self.processors.memory_limiter().cloned().unwrap_or_default()
    }
}

/// Search and tag queries (Tempo's names and defaults where it has them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Traces returned when a search gives no `limit`.
    pub default_result_limit: u32,
    /// Largest `limit` accepted (more → 400).
    pub max_result_limit: u32,
    /// Spans per spanset when `spss` is absent or 0, and the largest accepted.
    pub default_spans_per_span_set: u32,
    pub max_spans_per_span_set: u32,
    /// Longest `end - start` a search or tag query may cover.
    pub max_search_duration_hours: u64,
    /// Longest `end - start` a TraceQL metrics query may cover: the aggregated tier's 90 days,
    /// answered from rollups past the full tier (the step stays bounded: at most
    /// `MAX_INTERVALS` steps per query).
    pub max_metrics_duration_hours: u64,
    /// Most exemplars a TraceQL metrics query returns per series (`exemplars=N` is capped).
    pub max_exemplars: usize,
    /// Longest TraceQL text accepted.
    pub max_query_expression_size_bytes: usize,
    /// Tag values returned at most per request, and their total bytes.
    pub max_tag_values: usize,
    pub max_bytes_per_tag_values_query: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            default_result_limit: 20,
            max_result_limit: 262_144,
            default_spans_per_span_set: 3,
            max_spans_per_span_set: 100,
            max_search_duration_hours: 168,
            max_metrics_duration_hours: 2160,
            max_exemplars: 100,
            max_query_expression_size_bytes: 128 << 10,
            max_tag_values: 10_000,
            max_bytes_per_tag_values_query: 1 << 20,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenancyConfig {
    /// When on, `X-Scope-OrgID` is required on every ingest and query request.
    pub multitenancy_enabled: bool,
}

/// A configuration that cannot be loaded: the key at fault when one is known
/// (`limits.max_live_traces`, `metrics_generator.remote_write[1]`), and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    fn new(message: String) -> ConfigError {
        ConfigError { key: None, message }
    }

    fn at(key: impl Into<String>, message: String) -> ConfigError {
        ConfigError { key: Some(key.into()), message }
    }
}

impl Config {
    /// Builds the configuration from its layers. `overrides` are `section.key = value` pairs
    /// from command-line flags; `env` is the process environment (passed in for tests).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Config, ConfigError> {
        let mut value = serde_json::to_value(Config::default()).expect("defaults serialize");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(format!("cannot read config file {}: {e}", path.display())))?;
            // Deserializing straight into Config gives errors with line numbers and key names.
            serde_saphyr::from_str::<Config>(&text)
                .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
            let file_value: Value =
                serde_saphyr::from_str(&text).map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
            merge(&mut value, file_value);
        }
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix("SPOOR__") else { continue };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set(&mut value, &path, &raw)
                .map_err(|e| ConfigError::at(path.join("."), format!("environment variable {key}: {e}")))?;
        }
        for (key, raw) in overrides {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set(&mut value, &path, raw).map_err(|e| ConfigError::at(*key, format!("flag for {key}: {e}")))?;
        }
        let config: Config = serde_json::from_value(value.clone()).map_err(|e| match bad_key(&value) {
            Some(key) => {
                let message = format!("invalid configuration: {key}: {e}");
                ConfigError::at(key, message)
            }
            None => ConfigError::new(format!("invalid configuration: {e}")),
        })?;
        config.retention.validate().map_err(|e| ConfigError::at("retention", format!("invalid configuration: {e}")))?;
        config
            .metrics_generator
            .validate()
            .map_err(|e| ConfigError::at("metrics_generator", format!("invalid configuration: {e}")))?;
        for l in [Listener::Api, Listener::OtlpGrpc, Listener::OtlpHttp] {
            let (tls, key) = config.server.tls_for(l);
            tls.validate(key).map_err(|e| ConfigError::at(key, format!("invalid configuration: {e}")))?;
        }
        crate::cluster::config::validate(&config.roles.0, config.kafka.as_ref())
            .map_err(|e| ConfigError::new(format!("invalid configuration: {e}")))?;
        if config.kafka.is_some() && config.processors.tail_sampling().is_some() {
            // The sampler logs its decisions in the WAL, which an ingester does not have.
            return Err(ConfigError::new(
                "invalid configuration: tail sampling with kafka is not supported yet; sample in `spoor agent` in front"
                    .into(),
            ));
        }
        let key = "ui.trace_to_logs_url";
        config.ui.validate().map_err(|e| ConfigError::at(key, format!("invalid configuration: {key}: {e}")))?;
        for (i, rw) in config.metrics_generator.remote_write.iter().enumerate() {
            rw.validate().map_err(|e| {
                let key = format!("metrics_generator.remote_write[{i}]");
                ConfigError { message: format!("invalid configuration: {key}: {e}"), key: Some(key) }
            })?;
        }
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_default()
    }
}

/// serde_json's errors carry no path: find the first `section.key` whose value alone fails.
fn bad_key(value: &Value) -> Option<String> {
    let defaults = serde_json::to_value(Config::default()).ok()?;
    for (section, keys) in value.as_object()? {
        let Some(keys) = keys.as_object() else { continue };
        for (key, v) in keys {
            let mut probe = defaults.clone();
            let Some(slot) = probe.get_mut(section) else { continue };
            // An optional section unset by default (`zipkin`) is probed with this key alone.
            if slot.is_null() {
                *slot = Value::Object(Default::default());
            }
            let Some(obj) = slot.as_object_mut() else { continue };
            obj.insert(key.clone(), v.clone());
            if serde_json::from_value::<Config>(probe).is_err() {
                return Some(format!("{section}.{key}"));
            }
        }
    }
    None
}

/// The defaults with every optional section present, so a key set in one by a variable is read
/// as the type its default has (`zipkin.parse_string_tags=true` is a boolean).
fn shapes() -> Value {
    fn some<T: Default>() -> Option<T> {
        Some(T::default())
    }
    let server = ServerConfig { http_tls: some(), otlp_grpc_tls: some(), otlp_http_tls: some(), ..Default::default() };
    // `ingester.ordinal` is a number when set (unset: from the hostname).
    let ingester = IngesterConfig { ordinal: Some(0), ..Default::default() };
    let c = Config { zipkin: some(), jaeger: some(), kafka: some(), server, ingester, ..Default::default() };
    serde_json::to_value(c).unwrap_or(Value::Null)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Sets a leaf, reading `raw` as the type the default has there, so `data_dir=123` stays a
/// string and `max_live_traces=abc` is an error that names the key.
fn set(root: &mut Value, path: &[String], raw: &str) -> Result<(), String> {
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    let mut default = Some(&defaults);
    let open = path.first().is_some_and(|s| s == "processors");
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        // An optional section unset by default (`server.otlp_grpc_tls`) starts empty when a
        // variable sets one of its keys, and takes keys the defaults cannot show; the final
        // deserialization checks that they exist.
        // So are the collector-shaped `processors:` (a stage a file does not set is no key of
        // the defaults); their own deserialization names an unknown processor or key.
        let optional = i > 0 && (open || default.is_some_and(Value::is_null));
        if optional && cur.is_null() {
            *cur = Value::Object(Default::default());
        }
        let obj = cur.as_object_mut().ok_or_else(|| format!("{} is not a section", path[..i].join(".")))?;
        if optional && !obj.contains_key(seg) {
            obj.insert(seg.clone(), Value::Null);
        }
        cur = obj.get_mut(seg).ok_or_else(|| format!("unknown configuration key {}", path[..=i].join(".")))?;
        default = if optional { default } else { default.and_then(|d| d.get(seg)) };
    }
    let key = path.join(".");
    let shape = if cur.is_null() { shapes().pointer(&format!("/{}", path.join("/"))).cloned() } else { None };
    *cur = match shape.as_ref().unwrap_or(cur) {
        Value::String(_) => Value::String(raw.to_owned()),
        Value::Bool(_) => Value::Bool(raw.parse().map_err(|_| format!("{key} must be true or false, got {raw:?}"))?),
        Value::Number(_) => Value::Number(
            raw.parse::<u64>().map_err(|_| format!("{key} must be a non-negative integer, got {raw:?}"))?.into(),
        ),
        Value::Object(_) => return Err(format!("{key} is a section, not a key")),
        // A comma-separated list; empty for none.
        Value::Array(_) => {
            Value::Array(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.into()).collect())
        }
        // A processor key no default shows: a number or a boolean when it reads as one
        // (`limit_mib=10`), else a string (`check_interval=100ms`).
        Value::Null if open => match raw {
            "true" | "false" => Value::Bool(raw == "true"),
            _ => raw.parse::<u64>().map_or_else(|_| Value::String(raw.to_owned()), |n| Value::Number(n.into())),
        },
        _ => Value::String(raw.to_owned()),
    };
    Ok(())
}

/// The `agent:` section: what `spoor agent` queues and where it forwards (the collector's
/// exporter, load-balancing and resolver shapes). Here rather than in the agent crate because
/// one file configures both programs and is checked as a whole at load.
pub mod agent {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use crate::retry::RetryConfig;
    pub use crate::tls::ClientTlsConfig;
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
        /// TLS to the downstream: used for an `https://` endpoint, or a `host:port` one once a
        /// key here is set.
        pub tls: ClientTlsConfig,
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
                tls: ClientTlsConfig::default(),
            }
        }
    }

    impl ExporterConfig {
        /// This configuration aimed at another endpoint (a load balancer's template made concrete).
        pub fn with_endpoint(&self, endpoint: &str) -> ExporterConfig {
            ExporterConfig { endpoint: endpoint.to_string(), ..self.clone() }
        }

        /// `http://host:port` or `https://host:port`, the form the client takes.
        pub fn base_url(&self) -> Result<String, String> {
            let e = self.endpoint.trim();
            if e.is_empty() {
                return Err("exporter endpoint is empty".into());
            }
            for scheme in ["http", "https"] {
                if let Some(rest) = e.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
                    let authority = rest.trim_end_matches('/');
                    if authority.is_empty() {
                        return Err(format!("exporter endpoint {e:?} has no host"));
                    }
                    if scheme == "http" && self.tls.is_set() {
                        return Err(format!(
                            "exporter endpoint {e:?} is plaintext but tls is set; use https://host:port or host:port"
                        ));
                    }
                    return Ok(format!("{scheme}://{authority}"));
                }
            }
            if e.contains("://") || e.contains('/') {
                return Err(format!(
                    "exporter endpoint {e:?}: expected host:port, http://host:port or https://host:port"
                ));
            }
            let scheme = if self.tls.is_set() { "https" } else { "http" };
            if has_port(e) {
                Ok(format!("{scheme}://{e}"))
            } else {
                Ok(format!("{scheme}://{e}:{}", self.protocol.default_port()))
            }
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
            self.tls.validate()?;
            self.retry_on_failure.validate()
        }
    }

    /// `host:port` or `[v6]:port`, with a numeric port.
    fn has_port(authority: &str) -> bool {
        match authority.rsplit_once(':') {
            Some((host, port)) => {
                !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (!host.contains(':') || host.ends_with(']'))
            }
            None => false,
        }
    }
    // Its own file: three resolvers' settings and their checks.
    mod resolver;
    pub use resolver::{
        DnsResolverConfig, K8sResolverConfig, ResolverConfig, SERVICE_ACCOUNT_DIR, StaticResolverConfig,
    };

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "server:\n  http_listen: 127.0.0.1:9999\nlimits:\n  max_live_traces: 7\n").unwrap();
        let env = vec![
            ("SPOOR__LIMITS__MAX_LIVE_TRACES".to_string(), "8".to_string()),
            ("SPOOR__STORAGE__DATA_DIR".to_string(), "123".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&file), env, &[("server.otlp_http_listen", "127.0.0.1:1".into())]).unwrap();
        assert_eq!(c.server.http_listen, "127.0.0.1:9999");
        assert_eq!(c.limits.max_live_traces, 8);
        assert_eq!(c.storage.data_dir, PathBuf::from("123"));
        assert_eq!(c.server.otlp_http_listen, "127.0.0.1:1");
        assert_eq!(c.server.otlp_grpc_listen, "127.0.0.1:4317");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "server:\n  http_listen: x\n  bogus: 1\n").unwrap();
        let err = Config::load(Some(&file), vec![], &[]).unwrap_err().message;
        assert!(err.contains("bogus"), "{err}");
        let err = Config::load(None, vec![("SPOOR__LIMITS__NOPE".into(), "1".into())], &[]).unwrap_err().message;
        assert!(err.contains("unknown configuration key limits.nope"), "{err}");
        let err = Config::load(None, vec![("SPOOR__LIMITS__MAX_LIVE_TRACES".into(), "x".into())], &[]).unwrap_err();
        assert!(err.message.contains("limits.max_live_traces must be"), "{err}");
        assert_eq!(err.key.as_deref(), Some("limits.max_live_traces"));
    }

    #[test]
    fn per_listener_tls_from_the_environment() {
        let env = vec![
            ("SPOOR__SERVER__OTLP_GRPC_TLS__CERT_FILE".to_string(), "g.pem".to_string()),
            ("SPOOR__SERVER__OTLP_GRPC_TLS__KEY_FILE".to_string(), "g-key.pem".to_string()),
            ("SPOOR__SERVER__OTLP_GRPC_TLS__RELOAD_INTERVAL".to_string(), "5s".to_string()),
            ("SPOOR__SERVER__TLS__CERT_FILE".to_string(), "all.pem".to_string()),
            ("SPOOR__SERVER__TLS__KEY_FILE".to_string(), "all-key.pem".to_string()),
        ];
        let c = Config::load(None, env, &[]).unwrap();
        let (grpc, key) = c.server.tls_for(Listener::OtlpGrpc);
        assert_eq!((grpc.cert_file.to_str(), key), (Some("g.pem"), "server.otlp_grpc_tls"));
        assert_eq!(grpc.reload_interval, std::time::Duration::from_secs(5));
        assert_eq!(c.server.tls_for(Listener::Api).0.cert_file, PathBuf::from("all.pem"));
        let bad = vec![("SPOOR__SERVER__HTTP_TLS__NOPE".to_string(), "x".to_string())];
        let err = Config::load(None, bad, &[]).unwrap_err().message;
        assert!(err.contains("server.http_tls") && err.contains("nope"), "{err}");
    }

    #[test]
    fn zipkin_and_jaeger_are_off_until_configured() {
        assert_eq!((Config::default().zipkin, Config::default().jaeger), (None, None));
        let env = vec![("SPOOR__ZIPKIN__PARSE_STRING_TAGS".to_owned(), "true".to_owned())];
        let z = Config::load(None, env, &[]).unwrap().zipkin.unwrap();
        assert_eq!((z.listen.as_str(), z.parse_string_tags), ("127.0.0.1:9411", true));
        let bad = vec![("SPOOR__JAEGER__NOPE".to_owned(), "x".to_owned())];
        let err = Config::load(None, bad, &[]).unwrap_err().message;
        assert!(err.contains("jaeger.nope"), "{err}");
    }

    #[test]
    fn example_config_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.yaml");
        let c = Config::load(Some(std::path::Path::new(path)), vec![], &[]).unwrap();
        assert_eq!(c.wal.durability, Durability::Fsync);
        assert_eq!(c.metrics_generator, Config::default().metrics_generator, "the example shows the defaults");
        assert_eq!(c.dora, Config::default().dora, "the example shows the defaults");
    }

    #[test]
    fn environment_variables_reach_processors_a_file_does_not_set() {
        let env = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let c = Config::load(
            None,
            vec![
                env("SPOOR__PROCESSORS__MEMORY_LIMITER__LIMIT_MIB", "10"),
                env("SPOOR__PROCESSORS__MEMORY_LIMITER__CHECK_INTERVAL", "100ms"),
                env("SPOOR__PROCESSORS__SCRUB__ENABLED", "false"),
            ],
            &[],
        )
        .unwrap();
        let m = c.memory_limiter();
        assert_eq!((m.limit_mib, m.check_interval), (10, std::time::Duration::from_millis(100)));
        assert!(matches!(c.processors.0.get("scrub"), Some(Processor::Scrub(s)) if !s.enabled));
        let err = Config::load(None, vec![env("SPOOR__PROCESSORS__MEMORY_LIMITR__LIMIT_MIB", "10")], &[])
            .unwrap_err()
            .message;
        assert!(err.contains("memory_limitr"), "{err}");
    }

    #[test]
    fn metrics_generator_keys() {
        let off = Config::load(None, vec![("SPOOR__METRICS_GENERATOR__PROCESSORS".into(), "".into())], &[]).unwrap();
        assert!(off.metrics_generator.processors.is_empty());
        let one = Config::load(None, vec![], &[("metrics_generator.processors", "span-metrics".into())]).unwrap();
        assert_eq!(one.metrics_generator.processors, ["span-metrics"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        for (yaml, expected) in [
            ("metrics_generator:\n  processors: [local-blocks]\n", "metrics_generator.processors: unknown processor"),
            ("metrics_generator:\n  remote_write: [{url: \"ftp://p:9090/api/v1/write\"}]\n", "remote_write[0]"),
            ("metrics_generator:\n  service_graphs: {wait: soon}\n", "invalid duration"),
            (
                "metrics_generator:\n  span_metrics:\n    filter_policies: [{include: {attributes: [{key: http.method, value: GET}]}}]\n",
                "span_metrics.filter_policies[0].include: key \"http.method\"",
            ),
        ] {
            std::fs::write(&file, yaml).unwrap();
            let err = Config::load(Some(&file), vec![], &[]).unwrap_err().message;
            assert!(err.contains(expected), "{yaml}: {err}");
        }
        std::fs::write(&file, "metrics_generator:\n  remote_write:\n    - url: http://127.0.0.1:9090/api/v1/write\n")
            .unwrap();
        let c = Config::load(Some(&file), vec![], &[]).unwrap();
        assert_eq!(c.metrics_generator.remote_write[0].url, "http://127.0.0.1:9090/api/v1/write");
    }

    #[test]
    fn shipped_processing_configs_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/");
        let adr = Config::load(Some(&std::path::Path::new(dir).join("adr-sampling.yaml")), vec![], &[]).unwrap();
        let ts = adr.processors.tail_sampling().expect("tail sampling");
        assert_eq!(ts.policies.len(), 3);
        assert!(
            matches!(adr.processors.0.get("scrub"), Some(Processor::Scrub(s)) if s.enabled),
            "default policy stays on"
        );
        let agent = Config::load(Some(&std::path::Path::new(dir).join("agent.yaml")), vec![], &[]).unwrap();
        assert!(agent.agent.exporters.loadbalancing.is_some());
        assert_eq!(agent.processors.batch().unwrap().send_batch_size, 8192);
        // What `spoor config` prints loads back to the same configuration.
        for c in [adr, agent] {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), c.to_yaml()).unwrap();
            assert_eq!(Config::load(Some(file.path()), vec![], &[]).unwrap(), c);
        }
    }

    #[test]
    fn processor_mistakes_name_the_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        for (yaml, expect) in [
            (
                "processors:\n  tail_sampling:\n    policies:\n      - {name: a, type: status_code, status_code: {status_codes: [FOO]}}\n",
                "FOO",
            ),
            ("processors:\n  transform:\n    x: 1\n", "unknown processor type \"transform\""),
            ("processors:\n  redaction:\n    hash_function: sha256\n", "sha256"),
        ] {
            std::fs::write(&file, yaml).unwrap();
            let err = Config::load(Some(&file), vec![], &[]).unwrap_err().message;
            assert!(err.contains(expect) && err.contains("line"), "{yaml}: {err}");
        }
    }
}
