//! Metrics from traces: span metrics (RED) and service graphs, generated from every span
//! before sampling, kept per tenant in bounded series registries, and rendered for a scrape
//! (Prometheus text or OpenMetrics) or encoded for Prometheus remote_write.
//!
//! No network stack here: the server feeds decoded requests in, ticks the clock, and ships
//! [`Family`] snapshots out.

pub mod remote;

/// What a series counts: the Prometheus metric types the generator produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family of one tenant at one instant: a name (`traces_spanmetrics_calls_total`
/// for counters, the base name `traces_spanmetrics_latency` for histograms), its type and help,
/// and its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: &'static str,
    pub series: Vec<Series>,
}

/// Label pairs, sorted by name, names already valid Prometheus label names.
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub value: Value,
    /// Unix milliseconds of the last update.
    pub updated_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Counter(f64),
    Gauge(f64),
    Histogram(Histogram),
}

/// A classic histogram. `counts[i]` is the number of observations in bucket `i` alone (not
/// cumulative); there is one more count than bounds, the last for `+Inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: std::sync::Arc<[f64]>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
    /// At most one exemplar per bucket (the latest), `None` where there is none.
    pub exemplars: Vec<Option<Exemplar>>,
}

/// A sample pointing at the span behind it: labels `traceID` and `spanID` (hex).
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: i64,
}
