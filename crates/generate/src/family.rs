//! What the generator hands out: metric families of series (counters, gauges, classic and
//! native histograms, with exemplars), ready to render for a scrape or encode for remote_write.

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
    /// Unix milliseconds of the series' first observation (it started from 0 just before);
    /// `i64::MIN` for series rebuilt from stored history, which have no such start.
    pub created_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Counter(f64),
    Gauge(f64),
    Histogram(Histogram),
}

/// A classic histogram. `counts[i]` is the number of observations in bucket `i` alone (not
/// cumulative); there is one more count than bounds, the last for `+Inf`. Counts are floats
/// because a sampled span may stand for several (a span multiplier).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: std::sync::Arc<[f64]>,
    pub counts: Vec<f64>,
    pub sum: f64,
    pub count: f64,
    /// At most one exemplar per bucket (the latest), `None` where there is none.
    pub exemplars: Vec<Option<Exemplar>>,
    /// Whether remote_write sends the classic `_bucket`/`_sum`/`_count` series (a scrape
    /// always shows them: the text formats cannot carry native histograms).
    pub classic: bool,
    /// The same observations as a native (exponential) histogram, when enabled.
    pub native: Option<NativeHistogram>,
}

/// An exponential ("native") histogram: bucket `i` holds values in
/// `(base^(i-1), base^i]` with `base = 2^(2^-schema)`; values up to `zero_threshold` go to
/// the zero bucket. Only positive values occur (durations).
#[derive(Clone, Debug, PartialEq)]
pub struct NativeHistogram {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    /// (bucket index, count), ascending by index, counts not cumulative.
    pub buckets: Vec<(i32, f64)>,
}

/// A sample pointing at the span behind it: labels `traceID` and `spanID` (hex).
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: i64,
}
