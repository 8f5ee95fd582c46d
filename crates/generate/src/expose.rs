//! The scrape formats: Prometheus text 0.0.4, and OpenMetrics 1.0 (which carries exemplars;
//! Prometheus asks for it first).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::family::{Exemplar, Family, Kind, Labels, Series, Value};
use crate::remote::format_float;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper accepts it (Prometheus does, and then stores exemplars).
    pub fn from_accept(accept: &str) -> Format {
        if accept.contains("application/openmetrics-text") { Format::OpenMetrics } else { Format::Text }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A family merged across tenants: its type, help and every tenant's series with their labels.
type Merged<'a> = (Kind, &'a str, Vec<(Labels, &'a Series)>);

/// Renders the families of several tenants as one exposition: families of the same name are
/// merged, and each part's series get that part's `extra` labels (a tenant label, external
/// labels) unless they carry the label already.
pub fn render(parts: &[(Labels, Vec<Family>)], format: Format) -> String {
    let mut families: BTreeMap<&str, Merged> = BTreeMap::new();
    for (extra, fams) in parts {
        for f in fams {
            let entry = families.entry(&f.name).or_insert((f.kind, f.help, Vec::new()));
            for s in &f.series {
                entry.2.push((merge(&s.labels, extra), s));
            }
        }
    }
    let mut out = String::new();
    for (name, (kind, help, series)) in families {
        let family = match (format, kind) {
            (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let type_name = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {family} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(out, "# TYPE {family} {type_name}");
        for (labels, s) in series {
            match &s.value {
                Value::Counter(v) | Value::Gauge(v) => sample(&mut out, name, &labels, None, *v, None),
                Value::Histogram(h) => {
                    let mut cumulative = 0.0;
                    for (i, count) in h.counts.iter().enumerate() {
                        cumulative += count;
                        let le = h.bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| format_float(*b));
                        let ex = match format {
                            Format::OpenMetrics => h.exemplars.get(i).and_then(Option::as_ref),
                            Format::Text => None,
                        };
                        sample(&mut out, &format!("{name}_bucket"), &labels, Some(&le), cumulative, ex);
                    }
                    sample(&mut out, &format!("{name}_sum"), &labels, None, h.sum, None);
                    sample(&mut out, &format!("{name}_count"), &labels, None, h.count, None);
                }
            }
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn merge(labels: &Labels, extra: &Labels) -> Labels {
    let mut out = labels.clone();
    for (k, v) in extra {
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out.sort();
    out
}

fn sample(out: &mut String, name: &str, labels: &Labels, le: Option<&str>, value: f64, ex: Option<&Exemplar>) {
    out.push_str(name);
    let le = le.map(|le| ("le", le));
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let pairs = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(le);
        for (i, (k, v)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = write!(out, " {}", format_float(value));
    if let Some(e) = ex {
        out.push_str(" # {");
        for (i, (k, v)) in e.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        let _ = write!(
            out,
            "}} {} {}.{:03}",
            format_float(e.value),
            e.timestamp_ms.div_euclid(1000),
            e.timestamp_ms.rem_euclid(1000)
        );
    }
    out.push('\n');
}

fn escape(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_string();
    }
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::family::Histogram;

    fn families() -> Vec<Family> {
        let l = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Labels>();
        vec![
            Family {
                name: "traces_spanmetrics_calls_total".into(),
                kind: Kind::Counter,
                help: "Spans.",
                series: vec![Series {
                    labels: l(&[("service", "a\"b"), ("span_name", "GET /x")]),
                    value: Value::Counter(3.0),
                    updated_ms: 0,
                    created_ms: 0,
                }],
            },
            Family {
                name: "traces_spanmetrics_latency".into(),
                kind: Kind::Histogram,
                help: "Durations.",
                series: vec![Series {
                    labels: l(&[("service", "a")]),
                    value: Value::Histogram(Histogram {
                        bounds: Arc::from(&[0.002, 0.004][..]),
                        counts: vec![1.0, 0.0, 2.0],
                        sum: 10.5,
                        count: 3.0,
                        exemplars: vec![
                            Some(Exemplar {
                                labels: l(&[
                                    ("traceID", "0af7651916cd43dd8448eb211c80319c"),
                                    ("spanID", "b7ad6b7169203331"),
                                ]),
                                value: 0.0015,
                                timestamp_ms: 1_700_000_000_123,
                            }),
                            None,
                            None,
                        ],
                        classic: true,
                        native: None,
                    }),
                    updated_ms: 0,
                    created_ms: 0,
                }],
            },
        ]
    }

    #[test]
    fn prometheus_text_has_no_exemplars() {
        let text = render(&[(vec![("tenant".into(), "t1".into())], families())], Format::Text);
        assert_eq!(
            text,
            "# HELP traces_spanmetrics_calls_total Spans.\n\
             # TYPE traces_spanmetrics_calls_total counter\n\
             traces_spanmetrics_calls_total{service=\"a\\\"b\",span_name=\"GET /x\",tenant=\"t1\"} 3\n\
             # HELP traces_spanmetrics_latency Durations.\n\
             # TYPE traces_spanmetrics_latency histogram\n\
             traces_spanmetrics_latency_bucket{service=\"a\",tenant=\"t1\",le=\"0.002\"} 1\n\
             traces_spanmetrics_latency_bucket{service=\"a\",tenant=\"t1\",le=\"0.004\"} 1\n\
             traces_spanmetrics_latency_bucket{service=\"a\",tenant=\"t1\",le=\"+Inf\"} 3\n\
             traces_spanmetrics_latency_sum{service=\"a\",tenant=\"t1\"} 10.5\n\
             traces_spanmetrics_latency_count{service=\"a\",tenant=\"t1\"} 3\n"
        );
    }

    #[test]
    fn openmetrics_carries_exemplars_and_ends_with_eof() {
        let text = render(&[(vec![], families())], Format::OpenMetrics);
        assert!(text.starts_with("# HELP traces_spanmetrics_calls Spans.\n# TYPE traces_spanmetrics_calls counter\n"));
        assert!(text.contains(
            "traces_spanmetrics_latency_bucket{service=\"a\",le=\"0.002\"} 1 # {traceID=\"0af7651916cd43dd8448eb211c80319c\",spanID=\"b7ad6b7169203331\"} 0.0015 1700000000.123\n"
        ));
        assert!(text.contains("traces_spanmetrics_latency_bucket{service=\"a\",le=\"0.004\"} 1\n"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            Format::from_accept("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept("text/plain"), Format::Text);
    }
}
