//! RED metrics per (service, span name, kind, status) and configured dimensions:
//! `traces_spanmetrics_calls_total`, `traces_spanmetrics_latency` and
//! `traces_spanmetrics_size_total`, the series Grafana's APM table and span-metrics links read.

use std::sync::Arc;

use prost::Message;
use spoor_model::otlp::{KeyValue, Span};

use crate::config::SpanMetricsConfig;
use crate::family::{Family, Kind};
use crate::labels;
use crate::observation::Observation;
use crate::registry::{Budget, Ex, Hist, Kinds, SeriesMap, counters, histograms, push_key};

pub const CALLS: &str = "traces_spanmetrics_calls_total";
pub const LATENCY: &str = "traces_spanmetrics_latency";
pub const SIZE: &str = "traces_spanmetrics_size_total";

pub(crate) struct SpanMetrics {
    bounds: Arc<[f64]>,
    intrinsics: crate::config::IntrinsicDimensions,
    /// (attribute name, value when missing).
    dimensions: Vec<(String, String)>,
    label_names: Vec<String>,
    calls: bool,
    latency: bool,
    size: bool,
    exemplars: bool,
    multiplier_key: String,
    filter: crate::filter::Filter,
    kinds: Kinds,
}

pub(crate) struct SpanSeries {
    calls: f64,
    size: f64,
    latency: Option<Hist>,
}

impl SpanMetrics {
    pub fn new(cfg: &SpanMetricsConfig, kinds: Kinds) -> Result<SpanMetrics, crate::error::Error> {
        let i = &cfg.intrinsic_dimensions;
        let mut names: Vec<String> = [
            (i.service, "service"),
            (i.span_name, "span_name"),
            (i.span_kind, "span_kind"),
            (i.status_code, "status_code"),
            (i.status_message, "status_message"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n.to_string())
        .collect();
        let intrinsic = ["service", "span_name", "span_kind", "status_code", "status_message"];
        names.extend(labels::dimension_labels(cfg.dimensions.iter().map(|d| d.name()), &intrinsic));
        let has = |s: &str| cfg.subprocessors.iter().any(|p| p == s);
        Ok(SpanMetrics {
            filter: crate::filter::Filter::new(&cfg.filter_policies)?,
            kinds,
            bounds: cfg.histogram_buckets.clone().into(),
            intrinsics: i.clone(),
            dimensions: cfg.dimensions.iter().map(|d| (d.name().to_string(), d.default_value().to_string())).collect(),
            label_names: names,
            calls: has("calls"),
            latency: has("latency"),
            size: has("size"),
            exemplars: cfg.exemplars,
            multiplier_key: cfg.span_multiplier_key.clone(),
        })
    }

    pub fn series(&self) -> SeriesMap<SpanSeries> {
        let cost =
            usize::from(self.calls) + usize::from(self.size) + if self.latency { self.bounds.len() + 3 } else { 0 };
        SeriesMap::new(self.label_names.clone(), cost)
    }

    pub fn observe(&self, map: &mut SeriesMap<SpanSeries>, budget: &mut Budget, key: &mut String, o: &Observation) {
        let span = o.span;
        if !self.filter.is_empty() && !self.filter.keeps(o.resource, span) {
            return;
        }
        key.clear();
        let i = &self.intrinsics;
        if i.service {
            push_key(key, o.service.unwrap_or(""));
        }
        if i.span_name {
            push_key(key, &span.name);
        }
        if i.span_kind {
            push_key(key, labels::kind_name(span.kind));
        }
        let status = span.status.as_ref();
        if i.status_code {
            push_key(key, labels::status_name(status.map_or(0, |s| s.code)));
        }
        if i.status_message {
            push_key(key, status.map_or("", |s| s.message.as_str()));
        }
        for (name, default) in &self.dimensions {
            // The span's own attribute wins over its resource's.
            let value = labels::find(&span.attributes, name).or_else(|| labels::find(o.resource, name));
            let before = key.len();
            if labels::push_value(key, value) {
                if key[before..].contains(crate::registry::SEP) {
                    let v = key.split_off(before);
                    push_key(key, &v);
                } else {
                    key.push(crate::registry::SEP);
                }
            } else {
                push_key(key, default);
            }
        }
        let weight = multiplier(&span.attributes, &self.multiplier_key);
        let (bounds, exemplars) = (&self.bounds, self.exemplars && self.latency);
        let (latency, kinds) = (self.latency, self.kinds);
        let s = map.entry(key, budget, o.now_ms(), || SpanSeries {
            calls: 0.0,
            size: 0.0,
            latency: latency.then(|| Hist::new(bounds, exemplars, kinds)),
        });
        s.calls += weight;
        if self.size {
            s.size += span.encoded_len() as f64 * weight;
        }
        if let Some(h) = &mut s.latency {
            let secs = duration_secs(span);
            let ex = exemplars.then(|| Ex {
                trace_id: id(&span.trace_id),
                span_id: id(&span.span_id),
                value: secs,
                timestamp_ms: o.now_ms(),
            });
            h.observe(bounds, secs, weight, ex);
        }
    }

    pub fn families(&self, map: &SeriesMap<SpanSeries>, trace_label: &str, out: &mut Vec<Family>) {
        if self.calls {
            out.push(Family {
                name: CALLS.into(),
                kind: Kind::Counter,
                help: "Spans counted, by service, span name, kind, status and dimensions.",
                series: counters(map, |s| s.calls),
            });
        }
        if self.latency {
            out.push(Family {
                name: LATENCY.into(),
                kind: Kind::Histogram,
                help: "Span durations in seconds.",
                series: histograms(map, &self.bounds, trace_label, |s| s.latency.as_ref()),
            });
        }
        if self.size {
            out.push(Family {
                name: SIZE.into(),
                kind: Kind::Counter,
                help: "Protobuf-encoded size of the spans counted, in bytes.",
                series: counters(map, |s| s.size),
            });
        }
    }
}

/// End − start in seconds; a span that ends before it starts took 0 s.
pub(crate) fn duration_secs(span: &Span) -> f64 {
    span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e9
}

/// How many spans this one stands for: 1/ratio of the sampling ratio attribute, when it is a
/// ratio in (0, 1].
pub(crate) fn multiplier(attrs: &[KeyValue], key: &str) -> f64 {
    if key.is_empty() {
        return 1.0;
    }
    match labels::number_value(attrs, key) {
        Some(r) if r > 0.0 && r <= 1.0 => 1.0 / r,
        _ => 1.0,
    }
}

/// A fixed-size ID from its bytes (zero-padded or cut when the length is wrong).
pub(crate) fn id<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}
