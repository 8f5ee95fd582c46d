//! Prometheus remote_write 1.0: the protobuf messages (declared by hand, no build step), the
//! expansion of [`Family`] snapshots into time series, and the snappy-compressed body.
//!
//! One push carries one sample per series, all at the push's timestamp: the registry holds
//! current values (cumulative counters, classic histograms), so a push supersedes the previous
//! one and a lost push only leaves a gap.
//!
//! Field numbers follow `prompb/types.proto` and `prompb/remote.proto`. Native histograms
//! (`TimeSeries.histograms = 4`) and remote-write 2.0 are not produced.

use crate::error::Error;
use crate::family::{Family, Histogram, Kind, Labels, NativeHistogram, Value};

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    // Tag 2 is reserved in remote.proto.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`. Labels must be sorted by name and include `__name__`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<NativeSample>,
}

/// `prometheus.Histogram`: one native-histogram sample, integer flavour (delta-encoded
/// bucket counts), which every Prometheus with native histograms accepts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NativeSample {
    #[prost(uint64, tag = "1")]
    pub count_int: u64,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "6")]
    pub zero_count_int: u64,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// `prometheus.BucketSpan`: `length` consecutive buckets, `offset` after the previous span's
/// end (the first span's offset is its first index).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// A native histogram as one remote-write sample (counts rounded: the integer flavour).
pub fn native_sample(h: &NativeHistogram, sum: f64, count: f64, timestamp: i64) -> NativeSample {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(h.buckets.len());
    let (mut previous_index, mut previous_count) = (None::<i32>, 0i64);
    for &(index, c) in &h.buckets {
        let c = c.round().max(0.0) as i64;
        match previous_index {
            Some(p) if index == p.saturating_add(1) => spans.last_mut().expect("a span").length += 1,
            Some(p) => spans.push(BucketSpan { offset: index.saturating_sub(p).saturating_sub(1), length: 1 }),
            None => spans.push(BucketSpan { offset: index, length: 1 }),
        }
        deltas.push(c - previous_count);
        (previous_index, previous_count) = (Some(index), c);
    }
    NativeSample {
        count_int: count.round().max(0.0) as u64,
        sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count_int: h.zero_count.round().max(0.0) as u64,
        positive_spans: spans,
        positive_deltas: deltas,
        timestamp,
    }
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    // Tag 3 is unused in types.proto.
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`. Note HISTOGRAM = 3 and SUMMARY = 5, as in
/// `types.proto` (not the order of the text format's type names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    Gaugehistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

impl From<Kind> for MetricType {
    fn from(kind: Kind) -> MetricType {
        match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

/// Prometheus refuses exemplars whose label names and values together are longer than this
/// many characters (`ExemplarMaxLabelSetLength`); such exemplars are left out rather than
/// sent to be dropped on the other side.
pub const EXEMPLAR_MAX_LABEL_SET_LENGTH: usize = 128;

/// The time series for `families`, one sample each at `now_ms`, plus one metadata entry per
/// family that has series.
///
/// * Counters and gauges become one series named after the family.
/// * Histograms become `<name>_bucket` per bound (cumulative, `le` as [`format_float`] writes
///   it) and `le="+Inf"`, then `<name>_sum` and `<name>_count`.
/// * Labels: the series' own, then `extra_labels` (external labels, the tenant label) for
///   names the series lacks; `__name__` and `le` are always ours. Empty values are dropped
///   (Prometheus treats an empty label as absent); the result is sorted by name.
/// * A bucket's exemplar goes on that bucket's series when its `timestamp_ms` is greater than
///   `exemplars_since_ms`, so the caller can pass the newest exemplar timestamp it already
///   sent ([`newest_exemplar_ms`]) and not send it again; `i64::MIN` sends them all. An
///   exemplar older than one already sent for the same series would be refused as out of
///   order by Prometheus anyway.
/// * A series created after `previous_push_ms` (the last push's `now_ms`; `i64::MIN` for the
///   first) starts with a 0 sample just before its first observation, so `rate()` and
///   `increase()` see the first spans too rather than taking the first value as the baseline.
pub fn write_request(
    families: &[Family],
    extra_labels: &Labels,
    now_ms: i64,
    exemplars_since_ms: i64,
    previous_push_ms: i64,
) -> WriteRequest {
    let mut extra: Vec<(&str, &str)> =
        extra_labels.iter().filter(|(_, v)| !v.is_empty()).map(|(n, v)| (n.as_str(), v.as_str())).collect();
    extra.sort_by(|a, b| a.0.cmp(b.0));
    extra.dedup_by(|b, a| a.0 == b.0);

    let mut req = WriteRequest::default();
    for family in families {
        if family.series.is_empty() {
            continue;
        }
        req.metadata.push(MetricMetadata {
            r#type: MetricType::from(family.kind) as i32,
            metric_family_name: family.name.clone(),
            help: family.help.to_string(),
            unit: String::new(),
        });
        for series in &family.series {
            let base = merge(&series.labels, &extra);
            let zero_at = (series.created_ms > previous_push_ms).then(|| (series.created_ms - 1).min(now_ms - 1));
            let sample = |value: f64| samples(value, now_ms, zero_at);
            match &series.value {
                Value::Counter(v) | Value::Gauge(v) => req.timeseries.push(TimeSeries {
                    labels: labels(&base, &family.name, None),
                    samples: sample(*v),
                    exemplars: Vec::new(),
                    histograms: Vec::new(),
                }),
                Value::Histogram(h) => {
                    push_histogram(&mut req.timeseries, &family.name, &base, h, (now_ms, zero_at), exemplars_since_ms)
                }
            }
        }
    }
    req
}

/// The sample at `now_ms`, after a 0 at `zero_at` for a new series.
fn samples(value: f64, now_ms: i64, zero_at: Option<i64>) -> Vec<Sample> {
    let zero = zero_at.map(|t| Sample { value: 0.0, timestamp: t });
    zero.into_iter().chain([Sample { value, timestamp: now_ms }]).collect()
}

fn push_histogram(
    out: &mut Vec<TimeSeries>,
    name: &str,
    base: &[(&str, &str)],
    h: &Histogram,
    (now_ms, zero_at): (i64, Option<i64>),
    exemplars_since_ms: i64,
) {
    if let Some(n) = &h.native {
        // A new series starts from an empty histogram, as counters start from 0.
        let empty = NativeHistogram { buckets: Vec::new(), zero_count: 0.0, ..n.clone() };
        let zero = zero_at.map(|t| native_sample(&empty, 0.0, 0.0, t));
        out.push(TimeSeries {
            labels: labels(base, name, None),
            samples: Vec::new(),
            exemplars: Vec::new(),
            histograms: zero.into_iter().chain([native_sample(n, h.sum, h.count, now_ms)]).collect(),
        });
    }
    if !h.classic {
        return;
    }
    let bucket_name = format!("{name}_bucket");
    let exemplar = |i: usize| -> Vec<Exemplar> {
        match h.exemplars.get(i) {
            Some(Some(e))
                if e.timestamp_ms > exemplars_since_ms
                    && label_set_length(&e.labels) <= EXEMPLAR_MAX_LABEL_SET_LENGTH =>
            {
                vec![Exemplar {
                    labels: e.labels.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect(),
                    value: e.value,
                    timestamp: e.timestamp_ms,
                }]
            }
            _ => Vec::new(),
        }
    };
    let mut cumulative = 0.0;
    for (i, bound) in h.bounds.iter().enumerate() {
        // A missing count (a malformed snapshot) counts as empty rather than panicking.
        cumulative += h.counts.get(i).copied().unwrap_or(0.0);
        out.push(TimeSeries {
            labels: labels(base, &bucket_name, Some(&format_float(*bound))),
            samples: samples(cumulative, now_ms, zero_at),
            exemplars: exemplar(i),
            histograms: Vec::new(),
        });
    }
    // The +Inf bucket holds whatever is past the last bound (any surplus counts too), so it
    // always equals the sum of all buckets.
    cumulative += h.counts.iter().skip(h.bounds.len()).sum::<f64>();
    out.push(TimeSeries {
        labels: labels(base, &bucket_name, Some("+Inf")),
        samples: samples(cumulative, now_ms, zero_at),
        exemplars: exemplar(h.bounds.len()),
        histograms: Vec::new(),
    });
    out.push(TimeSeries {
        labels: labels(base, &format!("{name}_sum"), None),
        samples: samples(h.sum, now_ms, zero_at),
        exemplars: Vec::new(),
        histograms: Vec::new(),
    });
    out.push(TimeSeries {
        labels: labels(base, &format!("{name}_count"), None),
        samples: samples(h.count, now_ms, zero_at),
        exemplars: Vec::new(),
        histograms: Vec::new(),
    });
}

fn label_set_length(labels: &Labels) -> usize {
    labels.iter().map(|(n, v)| n.chars().count() + v.chars().count()).sum()
}

/// The series' labels and the extra ones for names the series lacks, without `__name__` and
/// `le` (ours to set), without empty values, sorted by name and unique.
fn merge<'a>(series: &'a Labels, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(series.len() + extra.len());
    out.extend(series.iter().filter(|(_, v)| !v.is_empty()).map(|(n, v)| (n.as_str(), v.as_str())));
    // `Labels` is documented sorted, but sorting a sorted vector is cheap and a snapshot that
    // is not must still produce valid series. The sort is stable, so series labels stay ahead
    // of extra ones with the same name and win the dedup.
    out.extend_from_slice(extra);
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.dedup_by(|b, a| a.0 == b.0);
    out.retain(|(n, _)| *n != "__name__" && *n != "le");
    out
}

/// `base` (sorted, without `__name__`/`le`) with `__name__` and optionally `le` inserted in
/// order: Prometheus requires labels sorted by name (byte order, so `__name__` is not always
/// first: upper-case names sort before it).
fn labels(base: &[(&str, &str)], name: &str, le: Option<&str>) -> Vec<Label> {
    let mut extra: Vec<(&str, &str)> = Vec::with_capacity(2);
    extra.push(("__name__", name));
    if let Some(le) = le {
        extra.push(("le", le));
    }
    let mut out = Vec::with_capacity(base.len() + extra.len());
    let (mut b, mut e) = (base.iter().peekable(), extra.into_iter().peekable());
    loop {
        let next = match (b.peek(), e.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => b.next().copied(),
            (_, Some(_)) => e.next(),
            (Some(_), None) => b.next().copied(),
            (None, None) => break,
        };
        if let Some((n, v)) = next {
            out.push(Label { name: n.to_string(), value: v.to_string() });
        }
    }
    out
}

/// A float as Prometheus writes `le` and sample values: shortest round-trip digits without an
/// exponent (`0.1`, `1`, `2.5`), and `+Inf`, `-Inf`, `NaN`.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        // Rust's `Display` for f64 is the shortest representation that round-trips and never
        // uses an exponent, which is what Go's FormatFloat(v, 'f', -1, 64) gives.
        v.to_string()
    }
}

/// Samples in a request (one per series as built here), for the sender's counters.
pub fn sample_count(req: &WriteRequest) -> u64 {
    req.timeseries.iter().map(|t| (t.samples.len() + t.histograms.len()) as u64).sum()
}

/// Exemplars in a request.
pub fn exemplar_count(req: &WriteRequest) -> u64 {
    req.timeseries.iter().map(|t| t.exemplars.len() as u64).sum()
}

/// The newest exemplar timestamp in a request, to pass as the next `exemplars_since_ms` once
/// it is delivered.
pub fn newest_exemplar_ms(req: &WriteRequest) -> Option<i64> {
    req.timeseries.iter().flat_map(|t| &t.exemplars).map(|e| e.timestamp).max()
}

/// `req` cut into requests of at most `max_series` series each (0 = no limit), for receivers
/// that cap the request size. The metadata goes with the first. Series order is kept, so a
/// histogram's series may straddle two requests, which remote-write allows.
pub fn split(mut req: WriteRequest, max_series: usize) -> Vec<WriteRequest> {
    if max_series == 0 || req.timeseries.len() <= max_series {
        return vec![req];
    }
    let mut out = Vec::with_capacity(req.timeseries.len().div_ceil(max_series));
    let metadata = std::mem::take(&mut req.metadata);
    let mut rest = req.timeseries;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(max_series));
        out.push(WriteRequest { timeseries: rest, metadata: Vec::new() });
        rest = tail;
    }
    if let Some(first) = out.first_mut() {
        first.metadata = metadata;
    }
    out
}

/// The HTTP body: the protobuf encoding compressed with snappy's block format (not the
/// framed stream format), as remote-write 1.0 requires. Fails only for a request too large
/// for snappy (about 4 GiB).
pub fn encode(req: &WriteRequest) -> Result<Vec<u8>, Error> {
    let raw = prost::Message::encode_to_vec(req);
    Ok(snap::raw::Encoder::new().compress_vec(&raw)?)
}

/// The inverse of [`encode`], for receivers and tests. `max_decompressed` bounds the size the
/// body claims to expand to, checked before anything is allocated.
pub fn decode(body: &[u8], max_decompressed: usize) -> Result<WriteRequest, Error> {
    let len = snap::raw::decompress_len(body)?;
    if len > max_decompressed {
        return Err(Error::TooLarge { size: len, limit: max_decompressed });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(<WriteRequest as prost::Message>::decode(raw.as_slice())?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::family::{Exemplar as SpanExemplar, Series};

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn names(ts: &TimeSeries) -> Vec<(&str, &str)> {
        ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect()
    }

    fn get<'a>(ts: &'a TimeSeries, name: &str) -> Option<&'a str> {
        ts.labels.iter().find(|l| l.name == name).map(|l| l.value.as_str())
    }

    fn exemplar(trace: &str, value: f64, ts: i64) -> SpanExemplar {
        SpanExemplar { labels: l(&[("traceID", trace)]), value, timestamp_ms: ts }
    }

    fn histogram_family() -> Family {
        Family {
            name: "traces_spanmetrics_latency".into(),
            kind: Kind::Histogram,
            help: "latency",
            series: vec![Series {
                labels: l(&[("service", "api"), ("span_name", "GET /")]),
                value: Value::Histogram(Histogram {
                    bounds: Arc::from(vec![0.1, 1.0, 2.5]),
                    counts: vec![1.0, 2.0, 0.0, 4.0],
                    sum: 21.5,
                    count: 7.0,
                    exemplars: vec![Some(exemplar("aa", 0.05, 1_000)), None, None, Some(exemplar("bb", 9.0, 2_000))],
                    classic: true,
                    native: None,
                }),
                updated_ms: 5,
                created_ms: 5,
            }],
        }
    }

    fn families() -> Vec<Family> {
        vec![
            Family {
                name: "traces_spanmetrics_calls_total".into(),
                kind: Kind::Counter,
                help: "calls",
                series: vec![
                    Series {
                        labels: l(&[("service", "api")]),
                        value: Value::Counter(3.0),
                        updated_ms: 1,
                        created_ms: 1,
                    },
                    Series {
                        labels: l(&[("service", "db")]),
                        value: Value::Counter(1.0),
                        updated_ms: 1,
                        created_ms: 1,
                    },
                ],
            },
            Family {
                name: "traces_service_graph_unpaired".into(),
                kind: Kind::Gauge,
                help: "unpaired",
                series: vec![Series { labels: vec![], value: Value::Gauge(-2.5), updated_ms: 1, created_ms: 1 }],
            },
            histogram_family(),
            Family { name: "empty".into(), kind: Kind::Gauge, help: "", series: vec![] },
        ]
    }

    #[test]
    fn round_trip_through_snappy_and_protobuf() {
        let req = write_request(&families(), &l(&[("cluster", "eu")]), 42_000, i64::MIN, i64::MAX);
        let body = encode(&req).unwrap();
        // The block format: a varint length first, no stream identifier chunk.
        assert_eq!(snap::raw::decompress_len(&body).unwrap(), prost::Message::encoded_len(&req));
        let back = decode(&body, 1 << 20).unwrap();
        assert_eq!(back, req);
        // 2 counters + 1 gauge + (3 bounds + Inf + sum + count).
        assert_eq!(back.timeseries.len(), 9);
        assert_eq!(sample_count(&back), 9);
        assert_eq!(exemplar_count(&back), 2);
        assert!(back.timeseries.iter().all(|t| t.samples == [Sample { value: t.samples[0].value, timestamp: 42_000 }]));
        assert!(matches!(decode(&body, 10), Err(Error::TooLarge { limit: 10, .. })));
        assert!(decode(b"\xff\xff\xff\xff\xff\xff", 1 << 20).is_err());
        assert_eq!(encode(&WriteRequest::default()).unwrap(), vec![0]);
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_prometheus_le() {
        let req = write_request(&[histogram_family()], &vec![], 7, i64::MIN, i64::MAX);
        let got: Vec<(&str, Option<&str>, f64)> =
            req.timeseries.iter().map(|t| (get(t, "__name__").unwrap(), get(t, "le"), t.samples[0].value)).collect();
        assert_eq!(
            got,
            [
                ("traces_spanmetrics_latency_bucket", Some("0.1"), 1.0),
                ("traces_spanmetrics_latency_bucket", Some("1"), 3.0),
                ("traces_spanmetrics_latency_bucket", Some("2.5"), 3.0),
                ("traces_spanmetrics_latency_bucket", Some("+Inf"), 7.0),
                ("traces_spanmetrics_latency_sum", None, 21.5),
                ("traces_spanmetrics_latency_count", None, 7.0),
            ]
        );
        assert_eq!(format_float(0.005), "0.005");
        assert_eq!(format_float(1e-7), "0.0000001");
        assert_eq!(format_float(1e6), "1000000");
        assert_eq!(format_float(-1.5), "-1.5");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn malformed_histogram_does_not_panic() {
        let mut f = histogram_family();
        if let Value::Histogram(h) = &mut f.series[0].value {
            h.counts = vec![1.0]; // too short
            h.exemplars = vec![];
        }
        let req = write_request(&[f.clone()], &vec![], 0, i64::MIN, i64::MAX);
        let buckets: Vec<f64> = req.timeseries.iter().take(4).map(|t| t.samples[0].value).collect();
        assert_eq!(buckets, [1.0, 1.0, 1.0, 1.0]);
        if let Value::Histogram(h) = &mut f.series[0].value {
            h.counts = vec![1.0, 1.0, 1.0, 1.0, 5.0]; // one too many: folded into +Inf
        }
        let req = write_request(&[f], &vec![], 0, i64::MIN, i64::MAX);
        assert_eq!(req.timeseries[3].samples[0].value, 9.0);
        assert_eq!(get(&req.timeseries[3], "le"), Some("+Inf"));
    }

    #[test]
    fn labels_sorted_merged_and_series_win() {
        let fams = vec![Family {
            name: "m_total".into(),
            kind: Kind::Counter,
            help: "",
            series: vec![Series {
                // Deliberately unsorted, with an empty value and a stray __name__.
                labels: l(&[("zone", "a"), ("Alpha", "x"), ("cluster", "mine"), ("empty", ""), ("__name__", "bogus")]),
                value: Value::Counter(1.0),
                updated_ms: 0,
                created_ms: 0,
            }],
        }];
        let extra = l(&[("tenant", "t1"), ("cluster", "theirs"), ("empty", "filled"), ("__name__", "x"), ("b", "")]);
        let req = write_request(&fams, &extra, 0, i64::MIN, i64::MAX);
        assert_eq!(
            names(&req.timeseries[0]),
            [
                ("Alpha", "x"),
                ("__name__", "m_total"),
                ("cluster", "mine"),
                ("empty", "filled"),
                ("tenant", "t1"),
                ("zone", "a"),
            ]
        );
        // Histograms: `le` is ours even when a series or extra label is named so.
        let mut h = histogram_family();
        h.series[0].labels = l(&[("le", "bogus"), ("service", "api")]);
        let req = write_request(&[h], &l(&[("a", "1"), ("le", "x")]), 0, i64::MIN, i64::MAX);
        for ts in &req.timeseries {
            let n = names(ts);
            assert!(n.windows(2).all(|w| w[0].0 < w[1].0), "{n:?}");
            assert_eq!(
                n.iter().filter(|(k, _)| *k == "le").count(),
                usize::from(get(ts, "__name__").unwrap().ends_with("_bucket"))
            );
            assert_ne!(get(ts, "le"), Some("bogus"));
            assert_eq!(get(ts, "a"), Some("1"));
        }
        assert_eq!(
            names(&req.timeseries[0]),
            [("__name__", "traces_spanmetrics_latency_bucket"), ("a", "1"), ("le", "0.1"), ("service", "api")]
        );
    }

    #[test]
    fn exemplars_on_their_bucket_and_not_resent() {
        let req = write_request(&[histogram_family()], &vec![], 3_000, i64::MIN, i64::MAX);
        let with: Vec<(Option<&str>, &Vec<Exemplar>)> =
            req.timeseries.iter().filter(|t| !t.exemplars.is_empty()).map(|t| (get(t, "le"), &t.exemplars)).collect();
        assert_eq!(with.len(), 2);
        assert_eq!(with[0].0, Some("0.1"));
        assert_eq!(
            with[0].1[..],
            [Exemplar {
                labels: vec![Label { name: "traceID".into(), value: "aa".into() }],
                value: 0.05,
                timestamp: 1_000
            }]
        );
        assert_eq!(with[1].0, Some("+Inf"));
        assert_eq!(with[1].1[0].timestamp, 2_000);
        assert_eq!(newest_exemplar_ms(&req), Some(2_000));
        // Since 1000: only the newer one.
        let req = write_request(&[histogram_family()], &vec![], 3_000, 1_000, i64::MAX);
        assert_eq!(exemplar_count(&req), 1);
        assert_eq!(get(req.timeseries.iter().find(|t| !t.exemplars.is_empty()).unwrap(), "le"), Some("+Inf"));
        let req = write_request(&[histogram_family()], &vec![], 3_000, 2_000, i64::MAX);
        assert_eq!(exemplar_count(&req), 0);
        assert_eq!(newest_exemplar_ms(&req), None);
        // Over Prometheus' label set length: left out.
        let mut f = histogram_family();
        if let Value::Histogram(h) = &mut f.series[0].value {
            h.exemplars[0] = Some(exemplar(&"a".repeat(200), 1.0, 5_000));
        }
        assert_eq!(exemplar_count(&write_request(&[f], &vec![], 0, i64::MIN, i64::MAX)), 1);
    }

    #[test]
    fn metadata_per_family_with_proto_type_numbers() {
        let req = write_request(&families(), &vec![], 0, i64::MIN, i64::MAX);
        let meta: Vec<(&str, i32, &str)> =
            req.metadata.iter().map(|m| (m.metric_family_name.as_str(), m.r#type, m.help.as_str())).collect();
        assert_eq!(
            meta,
            [
                ("traces_spanmetrics_calls_total", 1, "calls"),
                ("traces_service_graph_unpaired", 2, "unpaired"),
                ("traces_spanmetrics_latency", 3, "latency"),
            ]
        );
        assert_eq!(MetricType::Summary as i32, 5);
        assert_eq!(MetricType::Stateset as i32, 7);
        assert!(req.metadata.iter().all(|m| m.unit.is_empty()));
    }

    #[test]
    fn split_keeps_order_and_puts_metadata_first() {
        let req = write_request(&families(), &vec![], 0, i64::MIN, i64::MAX);
        let parts = split(req.clone(), 4);
        assert_eq!(parts.iter().map(|p| p.timeseries.len()).collect::<Vec<_>>(), [4, 4, 1]);
        assert_eq!(parts[0].metadata, req.metadata);
        assert!(parts[1..].iter().all(|p| p.metadata.is_empty()));
        let joined: Vec<TimeSeries> = parts.into_iter().flat_map(|p| p.timeseries).collect();
        assert_eq!(joined, req.timeseries);
        assert_eq!(split(req.clone(), 0), vec![req.clone()]);
        assert_eq!(split(req.clone(), 100), vec![req]);
    }

    /// Field numbers checked on the wire, independent of the derive attributes above.
    #[test]
    fn wire_field_numbers() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label { name: "a".into(), value: "b".into() }],
                samples: vec![Sample { value: 1.0, timestamp: 2 }],
                exemplars: vec![],
                histograms: vec![],
            }],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Histogram as i32,
                metric_family_name: "f".into(),
                help: "h".into(),
                unit: "u".into(),
            }],
        };
        let bytes = prost::Message::encode_to_vec(&req);
        let label = [0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b'];
        let sample = [0x12, 11, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 2];
        let mut ts = vec![0x0a, (label.len() + sample.len()) as u8];
        ts.extend_from_slice(&label[..]);
        ts.extend_from_slice(&sample);
        let meta = [0x1a, 11, 0x08, 3, 0x12, 1, b'f', 0x22, 1, b'h', 0x2a, 1, b'u'];
        let mut want = ts;
        want.extend_from_slice(&meta);
        assert_eq!(bytes, want);
    }

    #[test]
    fn new_series_start_from_zero() {
        let mut f = histogram_family();
        f.series[0].created_ms = 2_500;
        let req = write_request(&[f.clone()], &vec![], 3_000, i64::MIN, 2_000);
        for ts in &req.timeseries {
            assert_eq!(ts.samples.len(), 2, "{:?}", ts.labels);
            assert_eq!((ts.samples[0].value, ts.samples[0].timestamp), (0.0, 2_499));
            assert_eq!(ts.samples[1].timestamp, 3_000);
        }
        // Created before the previous push: already sent, no zero.
        let req = write_request(&[f.clone()], &vec![], 4_000, i64::MIN, 3_000);
        assert!(req.timeseries.iter().all(|ts| ts.samples.len() == 1));
        // A zero never lands at or after the push itself.
        f.series[0].created_ms = 9_000;
        let req = write_request(&[f], &vec![], 5_000, i64::MIN, 4_000);
        assert_eq!(req.timeseries[0].samples[0].timestamp, 4_999);
    }

    #[test]
    fn native_histograms_encode_as_spans_and_deltas() {
        let n = NativeHistogram {
            schema: 3,
            zero_threshold: 1e-9,
            zero_count: 1.0,
            buckets: vec![(-2, 1.0), (-1, 3.0), (2, 2.0)],
        };
        let s = native_sample(&n, 4.5, 7.0, 9);
        assert_eq!(s.positive_spans, [BucketSpan { offset: -2, length: 2 }, BucketSpan { offset: 2, length: 1 }]);
        assert_eq!(s.positive_deltas, [1, 2, -1]);
        assert_eq!((s.count_int, s.zero_count_int, s.schema, s.timestamp), (7, 1, 3, 9));
        // In a request: one series named after the family, no le, classic series only when asked.
        let mut f = histogram_family();
        if let Value::Histogram(h) = &mut f.series[0].value {
            h.native = Some(n);
            h.classic = false;
        }
        let req = write_request(&[f], &vec![], 3_000, i64::MIN, i64::MAX);
        assert_eq!(req.timeseries.len(), 1);
        let ts = &req.timeseries[0];
        assert!(ts.labels.iter().any(|l| l.name == "__name__" && !l.value.ends_with("_bucket")));
        assert!(!ts.labels.iter().any(|l| l.name == "le"));
        assert_eq!((ts.samples.len(), ts.histograms.len()), (0, 1));
        let back = decode(&encode(&req).unwrap(), 1 << 20).unwrap();
        assert_eq!(back.timeseries[0].histograms[0], ts.histograms[0]);
    }
}
