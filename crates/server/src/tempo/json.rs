//! Tempo's JSON shapes for search and metrics answers (tempo-compat §1.5, §1.8): the query
//! handlers and `spoor query` compute typed results and render them here, at the edge.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};
use spoor_model::ids::hex;
use spoor_model::json::{any_value_json, double_json};
use spoor_model::otlp::AnyValue;
use spoor_query::metrics::{self, Exemplar, Grid, Label, MetricsResult, Series};
use spoor_query::search::{SearchMetrics, SearchResult};
use spoor_query::{SpanHit, SpansetHit, TraceHit, Value};

use crate::tempo::params::go_duration_string;

/// A reported value as an OTLP `AnyValue` in JSON.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Nil => json!({ "stringValue": "nil" }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Int(i) => json!({ "intValue": i.to_string() }),
        Value::Float(f) => json!({ "doubleValue": double_json(*f) }),
        Value::Str(s) => json!({ "stringValue": s }),
        Value::Duration(ns) => json!({ "stringValue": go_duration_string(*ns) }),
        Value::Status(s) => json!({ "stringValue": s.as_str() }),
        Value::Kind(k) => json!({ "stringValue": k.as_str() }),
        Value::Any(bytes) => {
            use prost::Message;
            match AnyValue::decode(&bytes[..]) {
                Ok(any) => any_value_json(&any),
                Err(_) => json!({}),
            }
        }
    }
}

fn attributes_json(attrs: &[(String, Value)]) -> Json {
    Json::Array(attrs.iter().map(|(k, v)| json!({ "key": k, "value": value_json(v) })).collect())
}

fn span_json(s: &SpanHit) -> Json {
    let mut m = Map::new();
    m.insert("spanID".into(), json!(hex(&s.span_id)));
    if !s.name.is_empty() {
        m.insert("name".into(), json!(s.name));
    }
    m.insert("startTimeUnixNano".into(), json!(s.start_unix_nano.to_string()));
    m.insert("durationNanos".into(), json!(s.duration_nano.to_string()));
    if !s.attributes.is_empty() {
        m.insert("attributes".into(), attributes_json(&s.attributes));
    }
    Json::Object(m)
}

fn spanset_json(s: &SpansetHit) -> Json {
    let mut m = Map::new();
    m.insert("spans".into(), Json::Array(s.spans.iter().map(span_json).collect()));
    if s.matched > 0 {
        m.insert("matched".into(), json!(s.matched));
    }
    if !s.attributes.is_empty() {
        m.insert("attributes".into(), attributes_json(&s.attributes));
    }
    Json::Object(m)
}

pub fn trace_json(t: &TraceHit) -> Json {
    let mut m = Map::new();
    // Tempo strips leading zeros from trace IDs in search results.
    let id = hex(&t.trace_id.0);
    let id = id.trim_start_matches('0');
    m.insert("traceID".into(), json!(if id.is_empty() { "0" } else { id }));
    m.insert(
        "rootServiceName".into(),
        json!(match (&t.root_name, &t.root_service) {
            (None, _) => "<root span not yet received>",
            (Some(_), Some(s)) => s.as_str(),
            (Some(_), None) => "",
        }),
    );
    if let Some(name) = t.root_name.as_deref().filter(|n| !n.is_empty()) {
        m.insert("rootTraceName".into(), json!(name));
    }
    m.insert("startTimeUnixNano".into(), json!(t.start_unix_nano.to_string()));
    let ms = t.end_unix_nano.saturating_sub(t.start_unix_nano) / 1_000_000;
    if ms > 0 {
        m.insert("durationMs".into(), json!(ms));
    }
    if let Some(first) = t.spansets.first() {
        m.insert("spanSet".into(), spanset_json(first));
    }
    m.insert("spanSets".into(), Json::Array(t.spansets.iter().map(spanset_json).collect()));
    let stats: Map<String, Json> = t
        .service_stats
        .iter()
        .map(|(svc, (spans, errors))| {
            let mut s = Map::new();
            s.insert("spanCount".into(), json!(spans));
            if *errors > 0 {
                s.insert("errorCount".into(), json!(errors));
            }
            (svc.clone(), Json::Object(s))
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    if !stats.is_empty() {
        m.insert("serviceStats".into(), Json::Object(stats));
    }
    Json::Object(m)
}

pub fn metrics_json(m: &SearchMetrics) -> Json {
    let mut out = Map::new();
    let mut put = |k: &str, v: Json, zero: bool| {
        if !zero {
            out.insert(k.into(), v);
        }
    };
    put("inspectedTraces", json!(m.inspected_traces), m.inspected_traces == 0);
    put("inspectedBytes", json!(m.inspected_bytes.to_string()), m.inspected_bytes == 0);
    put("inspectedSpans", json!(m.inspected_spans.to_string()), m.inspected_spans == 0);
    put("totalBlocks", json!(m.total_blocks), m.total_blocks == 0);
    put("completedJobs", json!(m.completed_blocks), m.completed_blocks == 0);
    put("totalJobs", json!(m.total_blocks), m.total_blocks == 0);
    put("totalBlockBytes", json!(m.total_block_bytes.to_string()), m.total_block_bytes == 0);
    // Spoor's own: the search reached the sampled retention tier (some traces there were
    // dropped by its sampling rules).
    put("sampledTierBlocks", json!(m.sampled_blocks), m.sampled_blocks == 0);
    Json::Object(out)
}

pub fn search_json(r: &SearchResult) -> Json {
    json!({
        "traces": r.traces.iter().map(trace_json).collect::<Vec<_>>(),
        "metrics": metrics_json(&r.metrics),
    })
}

/// An OTLP `AnyValue` in JSON, typed as the label is.
fn label_json(l: &Label) -> Json {
    match l {
        Label::Str(s) => json!({ "stringValue": s }),
        Label::Int(i) => json!({ "intValue": i.to_string() }),
        Label::Float(f) => json!({ "doubleValue": double_json(f.0) }),
        Label::Bool(b) => json!({ "boolValue": b }),
        Label::Duration(ns) => json!({ "stringValue": go_duration_string(*ns) }),
    }
}

fn labels_json(labels: &[(String, Label)]) -> Json {
    Json::Array(labels.iter().map(|(k, v)| json!({ "key": k, "value": label_json(v) })).collect())
}

fn exemplar_json(e: &Exemplar) -> Json {
    let labels = [
        ("trace:id".to_owned(), Label::Str(spoor_model::ids::hex(&e.trace_id))),
        ("span:id".to_owned(), Label::Str(spoor_model::ids::hex(&e.span_id))),
    ];
    let mut m = Map::new();
    m.insert("labels".into(), labels_json(&labels));
    // Zero is left out, as protobuf JSON leaves out defaults.
    if e.value != 0.0 {
        m.insert("value".into(), double_json(e.value));
    }
    m.insert("timestampMs".into(), json!((e.start_unix_nano / 1_000_000).to_string()));
    Json::Object(m)
}

fn series_json(s: &Series, timestamps: &[u64]) -> Json {
    let samples: Vec<Json> = timestamps
        .iter()
        .zip(&s.values)
        .filter(|(_, v)| !v.is_nan())
        .map(|(t, &v)| {
            let mut m = Map::new();
            m.insert("timestampMs".into(), json!((t / 1_000_000).to_string()));
            if v != 0.0 {
                m.insert("value".into(), double_json(v));
            }
            Json::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("labels".into(), labels_json(&s.labels));
    m.insert("samples".into(), Json::Array(samples));
    if !s.exemplars.is_empty() {
        m.insert("exemplars".into(), Json::Array(s.exemplars.iter().map(exemplar_json).collect()));
    }
    Json::Object(m)
}

pub fn range_json(r: &MetricsResult, grid: &Grid) -> Json {
    let timestamps = grid.timestamps();
    partial(
        r,
        json!({
            "series": r.series.iter().map(|s| series_json(s, &timestamps)).collect::<Vec<_>>(),
            "metrics": metrics_json(&r.metrics),
        }),
    )
}

/// Marks an answer that left groups out, in Tempo's words.
fn partial(r: &MetricsResult, mut body: Json) -> Json {
    if r.truncated {
        body["status"] = json!("PARTIAL");
        body["message"] = json!(format!(
            "Response exceeds maximum series limit of {}, a partial response is returned. Warning: the accuracy of each individual value is not guaranteed.",
            metrics::MAX_SERIES
        ));
    }
    body
}

/// One value per series: its first sample.
pub fn instant_json(r: &MetricsResult) -> Json {
    let series: Vec<Json> = r
        .series
        .iter()
        .filter_map(|s| {
            let v = *s.values.iter().find(|v| !v.is_nan())?;
            let mut m = Map::new();
            m.insert("labels".into(), labels_json(&s.labels));
            if v != 0.0 {
                m.insert("value".into(), double_json(v));
            }
            Some(Json::Object(m))
        })
        .collect();
    partial(r, json!({ "series": series, "metrics": metrics_json(&r.metrics) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempo::params::SECOND;

    #[test]
    fn json_shapes() {
        let grid = Grid::range(0, 2 * SECOND, SECOND).unwrap();
        let series = Series {
            labels: vec![("span.code".into(), Label::Int(200)), ("p".into(), Label::Float(metrics::FloatLabel(0.5)))],
            values: vec![0.0, f64::NAN, 2.5],
            exemplars: vec![Exemplar {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                start_unix_nano: 1_500_000_000,
                value: f64::NAN,
            }],
        };
        let r = MetricsResult { series: vec![series], truncated: false, metrics: Default::default() };
        assert_eq!(
            range_json(&r, &grid),
            json!({
                "series": [{
                    "labels": [
                        { "key": "span.code", "value": { "intValue": "200" } },
                        { "key": "p", "value": { "doubleValue": 0.5 } },
                    ],
                    "samples": [{ "timestampMs": "0" }, { "timestampMs": "2000", "value": 2.5 }],
                    "exemplars": [{
                        "labels": [
                            { "key": "trace:id", "value": { "stringValue": "01010101010101010101010101010101" } },
                            { "key": "span:id", "value": { "stringValue": "0202020202020202" } },
                        ],
                        "value": "NaN",
                        "timestampMs": "1500",
                    }],
                }],
                "metrics": {},
            })
        );
        assert_eq!(
            instant_json(&r),
            json!({ "series": [{ "labels": range_json(&r, &grid)["series"][0]["labels"].clone() }], "metrics": {} })
        );
    }
}
