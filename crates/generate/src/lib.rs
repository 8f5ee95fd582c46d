//! Metrics from traces: span metrics (RED) and service graphs, generated from every span
//! before sampling, kept per tenant in bounded series registries, and rendered for a scrape
//! (Prometheus text or OpenMetrics) or encoded for Prometheus remote_write.
//!
//! No network stack here: the server feeds decoded requests in, ticks the clock, and ships
//! [`Family`] snapshots out.

pub mod config;
pub mod dora;
pub mod error;
pub mod expose;
mod family;
pub mod filter;
mod labels;
mod observation;
mod registry;
pub mod remote;
pub mod servicegraph;
pub mod spanmetrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use config::GeneratorConfig;
pub use error::Error;
pub use family::{Exemplar, Family, Histogram, Kind, Labels, NativeHistogram, Series, Value};
use observation::Observation;
use registry::Budget;
use servicegraph::{Graph, ServiceGraph};
use spanmetrics::{SpanMetrics, SpanSeries};
use spoor_model::otlp::ExportTraceServiceRequest;

/// The generator: one per server, holding every tenant's series.
pub struct Generator {
    span_metrics: Option<SpanMetrics>,
    service_graph: Option<ServiceGraph>,
    slack_ns: u64,
    stale_ms: i64,
    max_active_series: usize,
    max_cardinality_per_label: usize,
    /// Tenants with a series budget of their own (per-tenant overrides).
    series_limits: Mutex<HashMap<String, usize>>,
    trace_id_label: String,
    tenants: Mutex<HashMap<String, Arc<Mutex<Tenant>>>>,
}

struct Tenant {
    budget: Budget,
    spans: Option<registry::SeriesMap<SpanSeries>>,
    graph: Option<Graph>,
    /// Reused for every series key this tenant builds.
    key: String,
    counts: Counts,
}

/// What a tenant's generator has done, for Spoor's own `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Spans fed to the processors.
    pub spans: u64,
    /// Spans not counted: ended longer ago than the slack, or no `service.name` (graphs only).
    pub spans_too_old: u64,
    /// Observations folded into overflow series because the series budget was spent.
    pub series_limited: u64,
    /// Observations with a label value replaced by `__cardinality_overflow__`.
    pub label_values_limited: u64,
    pub active_series: usize,
    pub pending_edges: usize,
    pub expired_edges: u64,
    pub dropped_spans: u64,
}

impl Generator {
    pub fn new<R>(config: &GeneratorConfig<R>) -> Result<Generator, Error> {
        config.validate()?;
        Ok(Generator {
            span_metrics: config
                .enabled(config::SPAN_METRICS)
                .then(|| SpanMetrics::new(&config.span_metrics, config.generate_native_histograms.kinds()))
                .transpose()?,
            service_graph: config
                .enabled(config::SERVICE_GRAPHS)
                .then(|| ServiceGraph::new(&config.service_graphs, config.generate_native_histograms.kinds())),
            slack_ns: config.ingestion_time_range_slack.as_nanos().min(u64::MAX as u128) as u64,
            stale_ms: config.registry.stale_duration.as_millis().min(i64::MAX as u128) as i64,
            max_active_series: config.registry.max_active_series,
            max_cardinality_per_label: config.registry.max_cardinality_per_label,
            series_limits: Mutex::new(HashMap::new()),
            trace_id_label: config.registry.trace_id_label_name.clone(),
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any processor runs (else the pipeline need not call [`Generator::observe`]).
    pub fn is_enabled(&self) -> bool {
        self.span_metrics.is_some() || self.service_graph.is_some()
    }

    fn tenant(&self, tenant: &str) -> Arc<Mutex<Tenant>> {
        let mut tenants = self.tenants.lock().unwrap();
        if let Some(t) = tenants.get(tenant) {
            return t.clone();
        }
        let max = self.series_limits.lock().unwrap().get(tenant).copied().unwrap_or(self.max_active_series);
        let t = Arc::new(Mutex::new(Tenant {
            budget: Budget { max, ..Budget::default() },
            spans: self.span_metrics.as_ref().map(|s| s.series().with_cardinality(self.max_cardinality_per_label)),
            graph: self.service_graph.as_ref().map(|s| s.graph(self.max_cardinality_per_label)),
            key: String::new(),
            counts: Counts::default(),
        }));
        tenants.insert(tenant.to_string(), t.clone());
        t
    }

    /// Sets the tenants' own series budgets (others keep `registry.max_active_series`). A
    /// lowered budget stops new series at once; existing ones stay until they go stale.
    pub fn set_series_limits(&self, limits: HashMap<String, usize>) {
        let tenants = self.tenants.lock().unwrap();
        for (name, t) in tenants.iter() {
            t.lock().unwrap().budget.max = limits.get(name).copied().unwrap_or(self.max_active_series);
        }
        *self.series_limits.lock().unwrap() = limits;
    }

    /// Counts every span of a request at wall-clock time `now_ns` (unix nanoseconds).
    pub fn observe(&self, tenant: &str, req: &ExportTraceServiceRequest, now_ns: u64) {
        if !self.is_enabled() {
            return;
        }
        let oldest_end = if self.slack_ns == 0 { 0 } else { now_ns.saturating_sub(self.slack_ns) };
        let t = self.tenant(tenant);
        let mut guard = t.lock().unwrap();
        let Tenant { budget, spans, graph, key, counts } = &mut *guard;
        for rs in &req.resource_spans {
            let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let service = labels::str_value(resource, "service.name");
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                counts.spans += 1;
                if span.end_time_unix_nano < oldest_end {
                    counts.spans_too_old += 1;
                    continue;
                }
                let o = Observation { service, resource, span, now_ns };
                if let (Some(sm), Some(map)) = (&self.span_metrics, spans.as_mut()) {
                    sm.observe(map, budget, key, &o);
                }
                if let (Some(sg), Some(g)) = (&self.service_graph, graph.as_mut()) {
                    sg.observe(g, budget, key, &o);
                }
            }
        }
    }

    /// Expires service-graph halves whose wait is over and drops stale series. Call it often
    /// (every collection interval, or more).
    pub fn tick(&self, now_ns: u64) {
        let tenants: Vec<_> = self.tenants.lock().unwrap().values().cloned().collect();
        let before_ms = (now_ns / 1_000_000) as i64 - self.stale_ms;
        for t in tenants {
            let mut guard = t.lock().unwrap();
            let Tenant { budget, spans, graph, key, .. } = &mut *guard;
            if let (Some(sg), Some(g)) = (&self.service_graph, graph.as_mut()) {
                sg.expire(g, budget, key, now_ns);
                sg.remove_stale(g, before_ms, budget);
            }
            if let Some(map) = spans.as_mut() {
                map.remove_stale(before_ms, budget);
            }
        }
    }

    pub fn tenants(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tenants.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// The tenant's series now (empty families left out).
    pub fn snapshot(&self, tenant: &str) -> Vec<Family> {
        let Some(t) = self.tenants.lock().unwrap().get(tenant).cloned() else { return Vec::new() };
        let guard = t.lock().unwrap();
        let mut out = Vec::new();
        if let (Some(sm), Some(map)) = (&self.span_metrics, &guard.spans) {
            sm.families(map, &self.trace_id_label, &mut out);
        }
        if let (Some(sg), Some(g)) = (&self.service_graph, &guard.graph) {
            sg.families(g, &mut out);
        }
        out.retain(|f| !f.series.is_empty());
        for f in &mut out {
            f.series.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        out
    }

    pub fn counts(&self, tenant: &str) -> Counts {
        let Some(t) = self.tenants.lock().unwrap().get(tenant).cloned() else { return Counts::default() };
        let g = t.lock().unwrap();
        let mut c = g.counts.clone();
        c.series_limited = g.budget.limited;
        c.label_values_limited = g.spans.as_ref().map_or(0, |m| m.cardinality_limited())
            + g.graph.as_ref().map_or(0, |gr| gr.edges.cardinality_limited());
        c.active_series = g.budget.used;
        if let Some(graph) = &g.graph {
            c.pending_edges = graph.store.len();
            c.expired_edges = graph.expired;
            c.dropped_spans = graph.dropped_spans;
        }
        c
    }
}
