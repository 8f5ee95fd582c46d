//! The `metrics_generator:` configuration, in Tempo's shape where Tempo has the knob (so a
//! Tempo `metrics_generator` block ports with few changes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spoor_model::duration;

use crate::error::Error;

/// Tempo's span-metrics latency buckets: 2 ms doubling to 16.384 s.
pub const SPAN_METRICS_BUCKETS: [f64; 14] =
    [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];

/// Tempo's service-graph latency buckets: 100 ms doubling to 12.8 s.
pub const SERVICE_GRAPH_BUCKETS: [f64; 8] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];

/// `R` is the remote_write endpoint configuration, which belongs to the crate that sends (this
/// one has no network stack); `()` where there is none.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig<R = ()> {
    /// Which processors run: `span-metrics`, `service-graphs` (both by default; `[]` turns the
    /// generator off).
    pub processors: Vec<String>,
    /// How often service-graph edges are expired and remote_write pushes.
    #[serde(with = "duration")]
    pub collection_interval: Duration,
    /// Spans that ended longer ago than this are not counted (a replayed or late batch would
    /// otherwise land in the current rate). `0s`: count everything.
    #[serde(with = "duration")]
    pub ingestion_time_range_slack: Duration,
    /// Histograms as classic `_bucket` series, native (exponential) histograms, or both.
    /// Native ones go out through remote_write only (Prometheus needs
    /// `--enable-feature=native-histograms`); a scrape always shows the classic ones.
    pub generate_native_histograms: HistogramKinds,
    pub registry: RegistryConfig,
    pub span_metrics: SpanMetricsConfig,
    pub service_graphs: ServiceGraphConfig,
    /// Where to push every collection interval, each tenant with its own requests.
    pub remote_write: Vec<R>,
}

impl<R> Default for GeneratorConfig<R> {
    fn default() -> Self {
        GeneratorConfig {
            processors: vec![SPAN_METRICS.into(), SERVICE_GRAPHS.into()],
            collection_interval: Duration::from_secs(15),
            ingestion_time_range_slack: Duration::from_secs(30),
            generate_native_histograms: HistogramKinds::Classic,
            registry: RegistryConfig::default(),
            span_metrics: SpanMetricsConfig::default(),
            service_graphs: ServiceGraphConfig::default(),
            remote_write: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HistogramKinds {
    #[default]
    Classic,
    Native,
    Both,
}

impl HistogramKinds {
    pub(crate) fn kinds(self) -> crate::registry::Kinds {
        crate::registry::Kinds { classic: self != HistogramKinds::Native, native: self != HistogramKinds::Classic }
    }
}

pub const SPAN_METRICS: &str = "span-metrics";
pub const SERVICE_GRAPHS: &str = "service-graphs";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Per tenant, counted as Prometheus counts them (a histogram is its buckets plus `_sum`
    /// and `_count`). A new series past the limit is folded into its family's overflow series
    /// (`metric_overflow="true"`) and counted. 0: unlimited.
    pub max_active_series: usize,
    /// A series not updated for this long is dropped.
    #[serde(with = "duration")]
    pub stale_duration: Duration,
    /// Distinct values a label may take per tenant and metric (a span name with an ID in it
    /// would otherwise spend the whole budget); further values become
    /// `__cardinality_overflow__`. 0: no cap.
    pub max_cardinality_per_label: usize,
    /// Added to every series exported.
    pub external_labels: BTreeMap<String, String>,
    /// Adds the tenant ID as this label (for example `tenant`). Empty: no label, except that the
    /// scrape endpoint labels series `tenant` when multi-tenancy is on, to keep them apart.
    pub inject_tenant_id_as: String,
    /// Exemplar label carrying the trace ID (Grafana links on `traceID`).
    pub trace_id_label_name: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_active_series: 100_000,
            stale_duration: Duration::from_secs(15 * 60),
            max_cardinality_per_label: 0,
            external_labels: BTreeMap::new(),
            inject_tenant_id_as: String::new(),
            trace_id_label_name: "traceID".into(),
        }
    }
}

/// A dimension: an attribute name, or `{name, default}` for a label value when it is missing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Dimension {
    Name(String),
    WithDefault {
        name: String,
        #[serde(default)]
        default: String,
    },
}

impl Dimension {
    pub fn name(&self) -> &str {
        match self {
            Dimension::Name(n) | Dimension::WithDefault { name: n, .. } => n,
        }
    }

    pub fn default_value(&self) -> &str {
        match self {
            Dimension::Name(_) => "",
            Dimension::WithDefault { default, .. } => default,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IntrinsicDimensions {
    pub service: bool,
    pub span_name: bool,
    pub span_kind: bool,
    pub status_code: bool,
    pub status_message: bool,
}

impl Default for IntrinsicDimensions {
    fn default() -> Self {
        IntrinsicDimensions {
            service: true,
            span_name: true,
            span_kind: true,
            status_code: true,
            status_message: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpanMetricsConfig {
    /// Latency histogram bounds in seconds, ascending (`+Inf` is implied).
    pub histogram_buckets: Vec<f64>,
    pub intrinsic_dimensions: IntrinsicDimensions,
    /// Extra labels from span attributes, else resource attributes; names become label names
    /// (`http.method` → `http_method`).
    pub dimensions: Vec<Dimension>,
    /// Sub-metrics: `calls`, `latency`, `size` (all by default).
    pub subprocessors: Vec<String>,
    /// An attribute holding the sampling ratio the span was kept at (0.1: one in ten); the span
    /// then counts as 1/ratio.
    pub span_multiplier_key: String,
    /// Attach trace and span IDs to latency observations.
    pub exemplars: bool,
    /// Which spans count (all when empty): see [`crate::filter`].
    pub filter_policies: Vec<crate::filter::FilterPolicy>,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            histogram_buckets: SPAN_METRICS_BUCKETS.to_vec(),
            intrinsic_dimensions: IntrinsicDimensions::default(),
            dimensions: Vec::new(),
            subprocessors: vec!["calls".into(), "latency".into(), "size".into()],
            span_multiplier_key: String::new(),
            exemplars: true,
            filter_policies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceGraphConfig {
    /// How long half an edge waits for its other half.
    #[serde(with = "duration")]
    pub wait: Duration,
    /// Pending half-edges per tenant; spans past it are dropped (counted).
    pub max_items: usize,
    pub histogram_buckets: Vec<f64>,
    /// Extra labels, looked up like span-metrics dimensions.
    pub dimensions: Vec<String>,
    /// Each dimension becomes `client_<dim>` and `server_<dim>`.
    pub enable_client_server_prefix: bool,
    /// Adds `virtual_node="client"|"server"` to edges with an uninstrumented side.
    pub enable_virtual_node_label: bool,
    /// `traces_service_graph_request_messaging_system_seconds`: consumer start − producer end.
    pub enable_messaging_system_latency_histogram: bool,
    /// Where an uninstrumented peer's name comes from, first present wins.
    pub peer_attributes: Vec<String>,
    /// A CLIENT span with one of these is a database call: its edge completes at once.
    pub database_name_attributes: Vec<String>,
    pub span_multiplier_key: String,
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        ServiceGraphConfig {
            wait: Duration::from_secs(10),
            max_items: 10_000,
            histogram_buckets: SERVICE_GRAPH_BUCKETS.to_vec(),
            dimensions: Vec::new(),
            enable_client_server_prefix: false,
            enable_virtual_node_label: false,
            enable_messaging_system_latency_histogram: false,
            // Tempo's, plus the messaging system, so a producer whose consumer is not instrumented
            // (or a consumer fed by an uninstrumented producer) links to its broker node.
            peer_attributes: ["peer.service", "db.name", "db.system", "db.system.name", "messaging.system"]
                .map(String::from)
                .to_vec(),
            database_name_attributes: ["db.namespace", "db.name", "db.system", "db.system.name"]
                .map(String::from)
                .to_vec(),
            span_multiplier_key: String::new(),
        }
    }
}

impl<R> GeneratorConfig<R> {
    pub fn enabled(&self, processor: &str) -> bool {
        self.processors.iter().any(|p| p == processor)
    }

    /// Mistakes a deserializer cannot see, named by their key.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, why: String| Err(Error::Config(format!("metrics_generator.{key}: {why}")));
        for p in &self.processors {
            if p != SPAN_METRICS && p != SERVICE_GRAPHS {
                return bad("processors", format!("unknown processor {p:?}; known: {SPAN_METRICS}, {SERVICE_GRAPHS}"));
            }
        }
        if self.collection_interval < Duration::from_millis(100) {
            return bad("collection_interval", "must be at least 100ms".into());
        }
        for (key, buckets) in [
            ("span_metrics.histogram_buckets", &self.span_metrics.histogram_buckets),
            ("service_graphs.histogram_buckets", &self.service_graphs.histogram_buckets),
        ] {
            if buckets.is_empty() || buckets.iter().any(|b| !b.is_finite()) || buckets.windows(2).any(|w| w[0] >= w[1])
            {
                return bad(key, "needs finite bounds in strictly ascending order".into());
            }
        }
        for s in &self.span_metrics.subprocessors {
            if !["calls", "latency", "size"].contains(&s.as_str()) {
                return bad("span_metrics.subprocessors", format!("unknown {s:?}; known: calls, latency, size"));
            }
        }
        for d in &self.span_metrics.dimensions {
            if d.name().is_empty() {
                return bad("span_metrics.dimensions", "an empty attribute name".into());
            }
        }
        crate::filter::Filter::new(&self.span_metrics.filter_policies)?;
        if self.service_graphs.max_items == 0 {
            return bad("service_graphs.max_items", "must be at least 1".into());
        }
        if self.service_graphs.wait.is_zero() {
            return bad("service_graphs.wait", "must be more than 0s".into());
        }
        for name in self.registry.external_labels.keys() {
            if crate::labels::sanitize(name) != *name {
                return bad("registry.external_labels", format!("{name:?} is not a valid label name"));
            }
        }
        let t = &self.registry.inject_tenant_id_as;
        if !t.is_empty() && crate::labels::sanitize(t) != *t {
            return bad("registry.inject_tenant_id_as", format!("{t:?} is not a valid label name"));
        }
        Ok(())
    }
}
