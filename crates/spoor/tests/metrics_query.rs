//! TraceQL metrics through the real binary over loopback: range and instant queries over a
//! block and live traces at once, Tempo's JSON shapes and its 400s.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

const QUIET: &[(&str, &str)] =
    &[("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"), ("SPOOR__COMPACTION__ENABLED", "false")];
const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn span(trace: &str, id: &str, name: &str, start: u64, ms: u64, status: u8, attrs: Value) -> Value {
    json!({
        "traceId": trace, "spanId": id, "name": name, "kind": 2,
        "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + ms * MS).to_string(),
        "status": { "code": status }, "attributes": attrs,
    })
}

fn export(service: &str, spans: Vec<Value>) -> String {
    json!({ "resourceSpans": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
        "scopeSpans": [{ "spans": spans }],
    }]})
    .to_string()
}

async fn send(s: &Server, body: String) {
    let r = request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn get(s: &Server, endpoint: &str, query: &str, params: &str) -> Response {
    let url = s.api_url(&format!("/api/metrics/{endpoint}?q={}&{params}", encode(query)));
    request("GET", &url, &[], "").await
}

async fn ok(s: &Server, endpoint: &str, query: &str, params: &str) -> Value {
    let r = get(s, endpoint, query, params).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/json"));
    r.json()
}

fn service(name: &str) -> Value {
    json!([{ "key": "resource.service.name", "value": { "stringValue": name } }])
}

/// Samples at `base + k s` for the given values (zero leaves `value` out, as Tempo does).
fn samples(base: u64, values: &[u64]) -> Value {
    let samples: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let t = ((base + k as u64 * S) / MS).to_string();
            if v == 0 { json!({ "timestampMs": t }) } else { json!({ "timestampMs": t, "value": v as f64 }) }
        })
        .collect();
    Value::Array(samples)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_over_a_block_and_live_traces() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    // Ten minutes ago, on a whole minute, so second-aligned steps start exactly there.
    let base = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 600) / 60 * 60 * S;
    let (t1, t2, t3) =
        ("11111111111111111111111111111111", "22222222222222222222222222222222", "33333333333333333333333333333333");

    // Into a block: two cart spans, one of them an error.
    send(
        &s,
        export(
            "cart",
            vec![
                span(t1, "00000000000000a1", "GET /cart", base + S, 500, 0, json!([])),
                span(t1, "00000000000000a2", "SELECT", base + 1200 * MS, 100, 2, json!([])),
            ],
        ),
    )
    .await;
    assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
    // Live: a cart span and a 500ms billing span.
    send(&s, export("cart", vec![span(t2, "00000000000000b1", "GET /cart", base + 2200 * MS, 20, 0, json!([]))])).await;
    send(&s, export("billing", vec![span(t3, "00000000000000c1", "charge", base + 2500 * MS, 500, 0, json!([]))]))
        .await;

    let secs = base / S;
    let range = format!("start={secs}&end={}&step=1s", secs + 4);
    // Buckets (t-1s, t]: 1s holds a1, 2s holds a2, 3s holds b1 and c1.
    let body = ok(&s, "query_range", "{ } | count_over_time() by (resource.service.name)", &range).await;
    assert_eq!(
        body["series"],
        json!([
            { "labels": service("billing"), "samples": samples(base, &[0, 0, 0, 1, 0]) },
            { "labels": service("cart"), "samples": samples(base, &[0, 1, 1, 1, 0]) },
        ]),
        "{body}"
    );
    let m = &body["metrics"];
    assert_eq!((m["totalBlocks"].as_u64(), m["completedJobs"].as_u64()), (Some(1), Some(1)), "{m}");

    // The same with fractional-second bounds and an error rate.
    let range_frac = format!("start={secs}.0&end={}.000&step=1", secs + 4);
    let body =
        ok(&s, "query_range", "({ status = error } | count_over_time()) / ({ } | count_over_time())", &range_frac)
            .await;
    let name = json!([{ "key": "__name__", "value": { "stringValue": "(count_over_time / count_over_time)" } }]);
    let t = |k: u64| ((base + k * S) / MS).to_string();
    assert_eq!(
        body["series"],
        json!([{ "labels": name, "samples": [
            { "timestampMs": t(1) }, { "timestampMs": t(2), "value": 1.0 }, { "timestampMs": t(3) },
        ]}]),
        "{body}"
    );

    // Exemplars link samples to traces.
    let body = ok(&s, "query_range", "{ } | rate()", &format!("{range}&exemplars=10")).await;
    let exemplars = body["series"][0]["exemplars"].as_array().unwrap().clone();
    assert_eq!(exemplars.len(), 3, "{body}");
    assert_eq!(exemplars[0]["labels"][0], json!({ "key": "trace:id", "value": { "stringValue": t1 } }));
    assert_eq!(exemplars[0]["value"], "NaN");
    assert_eq!(exemplars[0]["timestampMs"], (base / MS + 1000).to_string());
    assert_eq!(body["series"][0]["samples"][3]["value"], 2.0, "{body}");

    // Instant queries: one value per series.
    let whole = format!("start={secs}&end={}", secs + 4);
    let body = ok(&s, "query", "{ } | count_over_time()", &whole).await;
    assert_eq!(
        body["series"],
        json!([{ "labels": [{ "key": "__name__", "value": { "stringValue": "count_over_time" } }], "value": 4.0 }]),
        "{body}"
    );
    let body =
        ok(&s, "query", "{ resource.service.name = \"billing\" } | quantile_over_time(duration, .5, .99)", &whole)
            .await;
    let quantile = |p: f64| {
        json!({ "labels": [
            { "key": "__name__", "value": { "stringValue": "quantile_over_time" } },
            { "key": "p", "value": { "doubleValue": p } },
        ], "value": 0.536870912 })
    };
    assert_eq!(body["series"], json!([quantile(0.5), quantile(0.99)]), "{body}");
    let body = ok(&s, "query", "{ } | max_over_time(duration) by (resource.service.name) > 200ms", &whole).await;
    assert_eq!(
        body["series"],
        json!([{ "labels": service("billing"), "value": 0.5 }, { "labels": service("cart"), "value": 0.5 }])
    );

    // Nothing in range: no series.
    let empty = format!("start={}&end={}", secs - 100, secs - 50);
    assert_eq!(ok(&s, "query_range", "{ } | rate()", &empty).await["series"], json!([]));

    let metrics = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("spoor_queries_total{") && l.contains("metrics_query_range") && l.contains("\"ok\""));
    assert!(line.is_some_and(|l| l.ends_with(" 4")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_metrics_queries_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    for (endpoint, query, params, want) in [
        ("query_range", "{ } | rate()", "start=20&end=10", "end must be greater than start"),
        ("query", "{ } | rate()", "start=20&end=20", "end must be greater than start"),
        (
            "query_range",
            "{ } | rate()",
            "start=1700000000&end=1700020000&step=1s",
            "step of 1s is too small, minimum step for given range is 2s",
        ),
        (
            "query_range",
            "{ } | rate()",
            "start=1700000000&end=1710000000",
            "metrics query time range exceeds the maximum allowed duration of 2160h0m0s",
        ),
        ("query_range", "{ durationn > 1s } | rate()", "", "invalid TraceQL query: parse error at line 1, col 3"),
        ("query_range", "{ status = error }", "", "not a metrics query"),
        ("query", "{ }", "", "not a metrics query"),
        ("query_range", "{ } | rate()", "step=fast", "invalid step"),
        ("query_range", "{ } | rate()", "start=yesterday", "invalid start"),
    ] {
        let r = get(&s, endpoint, query, params).await;
        assert_eq!(r.status, 400, "{query} {params}: {}", r.text());
        assert!(r.text().starts_with(want), "{query} {params}: {:?} is not {want:?}", r.text());
        assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    }
}
