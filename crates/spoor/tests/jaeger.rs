//! Jaeger's query API and `spoor trace` through the real binary: OTLP in over loopback, every
//! route's JSON compared with the shape Jaeger's own handlers answer (the `data` / `total` /
//! `limit` / `offset` / `errors` envelope, traces with processes, µs times, typed tags, logs
//! and references), from live traces and again from blocks.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

const QUIET: &[(&str, &str)] =
    &[("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"), ("SPOOR__COMPACTION__ENABLED", "false")];

/// A checkout: frontend → cart (fails, out of stock) → a SELECT → postgres.
const T_CHECKOUT: &str = "5b8efff798038103d269b633813fc60c";
/// A page view inside frontend alone.
const T_HOME: &str = "0af7651916cd43dd8448eb211c80319c";
/// A cart call that succeeds.
const T_CART: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

const LONG_SQL: &str = "SELECT items.id, items.name, items.price, stock.count FROM items JOIN stock ON stock.item_id = items.id WHERE items.cart_id = $1 ORDER BY items.added_at";

fn kv(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": value })
}

#[allow(clippy::too_many_arguments)] // one argument per OTLP span field the tests vary
fn span(trace: &str, id: &str, parent: &str, name: &str, kind: u8, start: u64, us: u64, extra: Value) -> Value {
    let mut s = json!({
        "traceId": trace, "spanId": id, "parentSpanId": parent, "name": name, "kind": kind, "flags": 1,
        "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + us * 1_000).to_string(),
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

fn resource(service: &str, spans: Vec<Value>) -> Value {
    json!({
        "resource": { "attributes": [
            kv("service.name", json!({ "stringValue": service })),
            kv("host.name", json!({ "stringValue": format!("{service}-1") })),
        ]},
        "scopeSpans": [{ "scope": { "name": "shop-instrumentation", "version": "2.1.0" }, "spans": spans }],
    })
}

/// Twenty minutes ago plus a second, on a whole minute: every span below falls in the same
/// one-minute step, and rates over ten minutes are over before now.
fn base_time() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    ((now / 60 - 20) * 60 + 1) * 1_000_000_000
}

fn dataset(base: u64) -> Value {
    let ms = 1_000_000;
    json!({ "resourceSpans": [
        resource("frontend", vec![
            span(T_CHECKOUT, "1000000000000001", "", "GET /checkout", 2, base, 200_000, json!({
                "attributes": [
                    kv("http.route", json!({ "stringValue": "/checkout" })),
                    kv("http.status_code", json!({ "intValue": "200" })),
                    kv("retry", json!({ "boolValue": false })),
                    kv("ratio", json!({ "doubleValue": 0.25 })),
                    kv("payload", json!({ "bytesValue": "AQI=" })),
                ],
                "status": { "code": 1 },
            })),
            span(T_HOME, "2000000000000001", "", "GET /home", 2, base + 20 * ms, 20_000, json!({
                "attributes": [kv("http.status_code", json!({ "intValue": "404" }))],
            })),
            span(T_HOME, "2000000000000002", "2000000000000001", "render", 1, base + 25 * ms, 5_000, json!({})),
        ]),
        resource("cart", vec![
            span(T_CHECKOUT, "1000000000000002", "1000000000000001", "AddItem", 2, base + 10 * ms, 50_000, json!({
                "status": { "code": 2, "message": "out of stock" },
                "events": [{ "timeUnixNano": (base + 40 * ms).to_string(), "name": "exception", "attributes": [
                    kv("exception.type", json!({ "stringValue": "OutOfStock" })),
                    kv("exception.message", json!({ "stringValue": "item 42 is out of stock" })),
                ]}],
                "links": [{ "traceId": T_CART, "spanId": "3000000000000001" }],
            })),
            span(T_CHECKOUT, "1000000000000003", "1000000000000002", "SELECT items", 3, base + 12 * ms, 10_000, json!({
                "attributes": [kv("db.statement", json!({ "stringValue": LONG_SQL }))],
            })),
            span(T_CART, "3000000000000001", "", "AddItem", 2, base + 2_000 * ms, 300_000, json!({ "status": { "code": 1 } })),
        ]),
        resource("postgres", vec![
            span(T_CHECKOUT, "1000000000000004", "1000000000000003", "query", 2, base + 13 * ms, 8_000, json!({})),
        ]),
    ]})
}

async fn ingest(s: &Server, base: u64) {
    let r =
        request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], dataset(base).to_string())
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = request("GET", &s.api_url(path), &[], "").await;
    assert_eq!(r.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"), "{path}");
    (r.status, r.json())
}

/// A successful answer's `data`, after checking Jaeger's envelope around it.
async fn data(s: &Server, path: &str) -> Value {
    let (status, body) = get(s, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let total = body["data"].as_array().map_or(0, Vec::len);
    assert_eq!(body["total"], total, "{path}");
    assert_eq!((&body["limit"], &body["offset"], &body["errors"]), (&json!(0), &json!(0), &Value::Null), "{path}");
    body["data"].clone()
}

/// A refusal: the status, and Jaeger's `errors` with that code and a message naming `needle`.
async fn refused(s: &Server, path: &str, code: u16, needle: &str) {
    let (status, body) = get(s, path).await;
    assert_eq!(status, code, "{path}: {body}");
    assert_eq!(body["data"], Value::Null, "{path}");
    assert_eq!(body["errors"][0]["code"], code, "{path}");
    let msg = body["errors"][0]["msg"].as_str().unwrap_or("");
    assert!(msg.contains(needle), "{path}: {msg:?} does not name {needle:?}");
}

fn trace_ids(traces: &Value) -> Vec<&str> {
    traces.as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap()).collect()
}

fn tag(key: &str, ty: &str, value: Value) -> Value {
    json!({ "key": key, "type": ty, "value": value })
}

/// The checkout trace exactly as Jaeger's UI model has it; processes by service name (their
/// `pN` numbering follows storage order).
fn expected_checkout(base: u64) -> (Vec<Value>, Value) {
    let us = |off_ms: u64| base / 1_000 + off_ms * 1_000;
    let scope = [
        tag("otel.scope.name", "string", json!("shop-instrumentation")),
        tag("otel.scope.version", "string", json!("2.1.0")),
    ];
    let span = |id: &str, parent: Option<&str>, name: &str, start: u64, dur: u64, service: &str, tags: Vec<Value>| {
        let mut refs = Vec::new();
        if let Some(p) = parent {
            refs.push(json!({ "refType": "CHILD_OF", "traceID": T_CHECKOUT, "spanID": p }));
        }
        json!({
            "traceID": T_CHECKOUT, "spanID": id, "flags": 1, "operationName": name, "references": refs,
            "startTime": start, "duration": dur, "tags": tags, "logs": [], "processID": service, "warnings": null,
        })
    };
    let with = |mut v: Vec<Value>, more: Vec<Value>| {
        let kind = more;
        v.splice(0..0, []);
        v.extend(scope.iter().cloned());
        v.extend(kind);
        v
    };
    let mut add_item = span(
        "1000000000000002",
        Some("1000000000000001"),
        "AddItem",
        us(10),
        50_000,
        "cart",
        with(
            vec![],
            vec![
                tag("span.kind", "string", json!("server")),
                tag("error", "bool", json!(true)),
                tag("otel.status_code", "string", json!("ERROR")),
                tag("otel.status_description", "string", json!("out of stock")),
            ],
        ),
    );
    add_item["references"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "refType": "FOLLOWS_FROM", "traceID": T_CART, "spanID": "3000000000000001" }));
    add_item["logs"] = json!([{ "timestamp": us(40), "fields": [
        tag("event", "string", json!("exception")),
        tag("exception.type", "string", json!("OutOfStock")),
        tag("exception.message", "string", json!("item 42 is out of stock")),
    ]}]);
    let spans = vec![
        span(
            "1000000000000001",
            None,
            "GET /checkout",
            us(0),
            200_000,
            "frontend",
            with(
                vec![
                    tag("http.route", "string", json!("/checkout")),
                    tag("http.status_code", "int64", json!(200)),
                    tag("retry", "bool", json!(false)),
                    tag("ratio", "float64", json!(0.25)),
                    tag("payload", "binary", json!("AQI=")),
                ],
                vec![tag("span.kind", "string", json!("server")), tag("otel.status_code", "string", json!("OK"))],
            ),
        ),
        add_item,
        span(
            "1000000000000003",
            Some("1000000000000002"),
            "SELECT items",
            us(12),
            10_000,
            "cart",
            with(
                vec![tag("db.statement", "string", json!(LONG_SQL))],
                vec![tag("span.kind", "string", json!("client"))],
            ),
        ),
        span(
            "1000000000000004",
            Some("1000000000000003"),
            "query",
            us(13),
            8_000,
            "postgres",
            with(vec![], vec![tag("span.kind", "string", json!("server"))]),
        ),
    ];
    let processes = json!({
        "cart": { "serviceName": "cart", "tags": [tag("host.name", "string", json!("cart-1"))] },
        "frontend": { "serviceName": "frontend", "tags": [tag("host.name", "string", json!("frontend-1"))] },
        "postgres": { "serviceName": "postgres", "tags": [tag("host.name", "string", json!("postgres-1"))] },
    });
    (spans, processes)
}

/// A Jaeger trace with process IDs replaced by their service names, and its processes keyed
/// by service name: comparable whatever `pN` each process got.
fn by_service(trace: &Value) -> (Vec<Value>, Value) {
    let processes = trace["processes"].as_object().unwrap();
    let mut keyed = serde_json::Map::new();
    for p in processes.values() {
        keyed.insert(p["serviceName"].as_str().unwrap().to_owned(), p.clone());
    }
    let spans = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let pid = s["processID"].as_str().unwrap().to_owned();
            s["processID"] = processes[&pid]["serviceName"].clone();
            s
        })
        .collect();
    (spans, Value::Object(keyed))
}

async fn check_all(s: &Server, base: u64, from: &str) {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    // Services and operations, under both prefixes.
    for prefix in ["/jaeger/api", "/api"] {
        assert_eq!(data(s, &format!("{prefix}/services")).await, json!(["cart", "frontend", "postgres"]), "{from}");
        assert_eq!(data(s, &format!("{prefix}/services/cart/operations")).await, json!(["AddItem", "SELECT items"]));
        assert_eq!(
            data(s, &format!("{prefix}/operations?service=frontend")).await,
            json!([
                { "name": "GET /checkout", "spanKind": "server" },
                { "name": "GET /home", "spanKind": "server" },
                { "name": "render", "spanKind": "internal" },
            ]),
            "{from}"
        );
        assert_eq!(
            data(s, &format!("{prefix}/operations?service=frontend&spanKind=internal")).await,
            json!([{ "name": "render", "spanKind": "internal" }])
        );
    }
    assert_eq!(data(s, "/jaeger/api/services/nobody/operations").await, json!([]));

    // Trace by ID: the whole trace, field for field.
    let got = data(s, &format!("/jaeger/api/traces/{T_CHECKOUT}")).await;
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["traceID"], T_CHECKOUT);
    assert_eq!(got[0]["warnings"], Value::Null);
    let (spans, processes) = by_service(&got[0]);
    let (want_spans, want_processes) = expected_checkout(base);
    assert_eq!(processes, want_processes, "{from}");
    assert_eq!(spans.len(), want_spans.len());
    // Tag order is not part of the model (blocks keep hot attributes in their own columns).
    let sorted = |s: &Value| {
        let mut s = s.clone();
        s["tags"].as_array_mut().unwrap().sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
        s
    };
    for (g, w) in spans.iter().zip(&want_spans) {
        assert_eq!(sorted(g), sorted(w), "{from}");
    }

    // Search: service, operation, tags (JSON and logfmt, typed values, error), durations, limit.
    let search = |q: &str| format!("/jaeger/api/traces?{q}");
    let found = data(s, &search("service=frontend")).await;
    assert_eq!(trace_ids(&found), vec![T_HOME, T_CHECKOUT], "{from}: newest first");
    let (home_spans, _) = by_service(&found[0]);
    assert_eq!(home_spans.len(), 2, "search answers whole traces");
    assert_eq!(trace_ids(&data(s, &search("service=frontend&limit=1")).await), vec![T_HOME]);
    assert_eq!(trace_ids(&data(s, &search("service=frontend&operation=GET%20%2Fcheckout")).await), vec![T_CHECKOUT]);
    let tags = encode(r#"{"http.status_code":"404"}"#);
    assert_eq!(trace_ids(&data(s, &search(&format!("service=frontend&tags={tags}"))).await), vec![T_HOME]);
    let tags = encode("http.route=/checkout retry=false");
    assert_eq!(trace_ids(&data(s, &search(&format!("service=frontend&tags={tags}"))).await), vec![T_CHECKOUT]);
    let tags = encode(r#"{"error":"true"}"#);
    assert_eq!(trace_ids(&data(s, &search(&format!("service=cart&tags={tags}"))).await), vec![T_CHECKOUT]);
    let tags = encode(r#"{"http.status_code":"500"}"#);
    assert_eq!(data(s, &search(&format!("service=frontend&tags={tags}"))).await, json!([]));
    assert_eq!(trace_ids(&data(s, &search("service=frontend&minDuration=100ms")).await), vec![T_CHECKOUT]);
    assert_eq!(trace_ids(&data(s, &search("service=frontend&maxDuration=50ms")).await), vec![T_HOME]);
    assert_eq!(trace_ids(&data(s, &search("service=cart&minDuration=40ms&maxDuration=60ms")).await), vec![T_CHECKOUT]);
    // The window: µs `start`/`end`; the cart call starts 2 s after the others.
    let (start, end) = (base / 1_000 + 1_000_000, base / 1_000 + 3_000_000);
    assert_eq!(trace_ids(&data(s, &search(&format!("service=cart&start={start}&end={end}"))).await), vec![T_CART]);
    assert_eq!(trace_ids(&data(s, &search(&format!("traceID={T_HOME}&traceID={T_CART}"))).await), vec![T_HOME, T_CART]);

    // Dependencies: calls between services in the window, from the stored spans.
    assert_eq!(
        data(s, &format!("/jaeger/api/dependencies?endTs={now_ms}&lookback=3600000")).await,
        json!([
            { "parent": "cart", "child": "postgres", "callCount": 1 },
            { "parent": "frontend", "child": "cart", "callCount": 1 },
        ]),
        "{from}"
    );
    assert_eq!(data(s, "/api/dependencies").await, data(s, "/jaeger/api/dependencies").await);
    let before = base / 1_000_000 - 1;
    assert_eq!(data(s, &format!("/jaeger/api/dependencies?endTs={before}&lookback=60000")).await, json!([]));

    monitor(s, now_ms, from).await;
}

/// The Monitor tab: calls, errors and latencies per service and operation.
async fn monitor(s: &Server, now_ms: u64, from: &str) {
    let window = format!("endTs={now_ms}&lookback=3600000&step=60000&ratePer=600000");
    let family = |name: &str, body: &Value| {
        assert_eq!(body["name"], name, "{body}");
        assert_eq!(body["type"], "GAUGE");
        assert!(body["help"].is_string());
        body["metrics"].as_array().unwrap().clone()
    };
    let points = |m: &Value| -> Vec<(String, f64)> {
        m["metricPoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["timestamp"].as_str().unwrap().to_owned(), p["gaugeValue"]["doubleValue"].as_f64().unwrap()))
            .collect()
    };

    let (status, body) =
        get(s, &format!("/jaeger/api/metrics/calls?service=frontend&groupByOperation=true&{window}")).await;
    assert_eq!(status, 200, "{body}");
    let metrics = family("service_operation_call_rate", &body);
    let labels: Vec<&Value> = metrics.iter().map(|m| &m["labels"]).collect();
    assert_eq!(
        labels,
        vec![
            &json!([{ "name": "service_name", "value": "frontend" }, { "name": "operation", "value": "GET /checkout" }]),
            &json!([{ "name": "service_name", "value": "frontend" }, { "name": "operation", "value": "GET /home" }]),
        ],
        "{from}: server spans only, by default"
    );
    // One call in a ten-minute rate window: 1/600 per second at the ten steps whose window
    // holds it, 0 elsewhere.
    let p = points(&metrics[0]);
    assert!(p.len() >= 60, "{p:?}");
    let hit: Vec<f64> = p.iter().map(|(_, v)| *v).filter(|v| *v != 0.0).collect();
    assert_eq!(hit.len(), 10, "{p:?}");
    assert!(hit.iter().all(|v| (v - 1.0 / 600.0).abs() < 1e-12), "{hit:?}");
    assert!(p.iter().all(|(t, _)| t.ends_with(":00Z")), "whole minutes: {p:?}");

    let (status, body) = get(s, &format!("/jaeger/api/metrics/errors?service=cart&{window}")).await;
    assert_eq!(status, 200, "{body}");
    let metrics = family("service_error_rate", &body);
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["labels"], json!([{ "name": "service_name", "value": "cart" }]));
    // Two server calls, one failed, in the same step; no point where there were no calls.
    let p = points(&metrics[0]);
    assert_eq!(p.len(), 10, "{p:?}");
    assert!(p.iter().all(|(_, v)| *v == 0.5), "{p:?}");

    let (status, body) =
        get(s, &format!("/jaeger/api/metrics/latencies?service=frontend&quantile=0.95&groupByOperation=1&{window}"))
            .await;
    assert_eq!(status, 200, "{body}");
    let metrics = family("service_operation_latencies", &body);
    let p = points(&metrics[0]);
    assert_eq!(p.len(), 1, "one step with spans: {p:?}");
    // Quantiles come from log2 buckets: 200 ms lies in (2^27, 2^28] ns.
    assert!((200.0..=268.5).contains(&p[0].1), "200 ms within its log2 bucket: {p:?}");

    let (status, body) = get(s, "/api/metrics/minstep").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "data": 1000, "total": 0, "limit": 0, "offset": 0, "errors": null }));
}

#[tokio::test(flavor = "multi_thread")]
async fn jaeger_api_answers_from_live_traces_and_from_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    let base = base_time();
    ingest(&s, base).await;
    check_all(&s, base, "live").await;
    assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
    check_all(&s, base, "blocks").await;

    // Bad input: 400 (or 404) with Jaeger's errors, naming the problem.
    refused(&s, "/jaeger/api/traces", 400, "service").await;
    refused(&s, "/jaeger/api/traces?service=cart&tags=%7Bnope", 400, "tags").await;
    refused(&s, "/jaeger/api/traces?service=cart&tags=novalue", 400, "tags").await;
    refused(&s, "/jaeger/api/traces?service=cart&minDuration=fast", 400, "minDuration").await;
    refused(&s, "/jaeger/api/traces?service=cart&minDuration=2s&maxDuration=1s", 400, "maxDuration").await;
    refused(&s, "/jaeger/api/traces?service=cart&limit=-1", 400, "limit").await;
    refused(&s, "/jaeger/api/traces?service=cart&start=yesterday", 400, "start").await;
    refused(&s, "/jaeger/api/traces/not-hex", 400, "trace").await;
    refused(&s, "/jaeger/api/traces/00000000000000000000000000000bad", 404, "trace not found").await;
    refused(&s, "/jaeger/api/operations", 400, "service").await;
    refused(&s, "/jaeger/api/operations?service=cart&spanKind=sideways", 400, "span kind").await;
    refused(&s, "/jaeger/api/dependencies?lookback=a%20day", 400, "lookback").await;
    refused(&s, "/jaeger/api/metrics/calls", 400, "service").await;
    refused(&s, "/jaeger/api/metrics/latencies?service=cart", 400, "quantile").await;
    refused(&s, "/jaeger/api/metrics/latencies?service=cart&quantile=2", 400, "quantile").await;
    refused(&s, "/jaeger/api/metrics/calls?service=cart&groupByOperation=maybe", 400, "groupByOperation").await;
    refused(&s, "/jaeger/api/metrics/calls?service=cart&step=1&lookback=3600000", 400, "step").await;
    refused(&s, "/jaeger/api/metrics/saturation?service=cart", 404, "saturation").await;
    refused(&s, "/jaeger/api/nothing", 404, "route").await;

    // `spoor trace`: the tree from the server, the same tree from the blocks, OTLP JSON.
    let tree = spoor(&["trace", T_CHECKOUT, "--server", &s.api_url("")]);
    assert!(tree.status.success(), "{}", String::from_utf8_lossy(&tree.stderr));
    let tree = String::from_utf8(tree.stdout).unwrap();
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 5, "{tree}");
    assert!(
        lines[0].starts_with(&format!("trace {T_CHECKOUT}"))
            && lines[0].contains("200ms  4 spans, 3 services, 1 errors"),
        "{tree}"
    );
    assert!(lines[1].starts_with("GET /checkout  1000000000000001  [frontend server]  +0s  200ms  ok  http.route=\"/checkout\" http.status_code=200"), "{tree}");
    assert!(
        lines[2].starts_with("└─ AddItem  1000000000000002  [cart server]  +10ms  50ms  ERROR \"out of stock\""),
        "{tree}"
    );
    assert!(
        lines[2].ends_with("exception.type=\"OutOfStock\" exception.message=\"item 42 is out of stock\""),
        "{tree}"
    );
    assert!(
        lines[3].starts_with(
            "   └─ SELECT items  1000000000000003  [cart client]  +12ms  10ms  db.statement=\"SELECT items.id"
        ),
        "{tree}"
    );
    assert!(lines[3].ends_with("…\"") && !lines[3].contains("ORDER BY"), "long statements are cut: {tree}");
    assert!(lines[4].starts_with("      └─ query  1000000000000004  [postgres server]  +13ms  8ms"), "{tree}");

    let local = spoor(&["trace", T_CHECKOUT, "--data-dir", dir.path().to_str().unwrap()]);
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    assert_eq!(String::from_utf8(local.stdout).unwrap(), tree, "blocks read directly give the same tree");

    let json_out = spoor(&["trace", T_HOME, "--server", &s.api_url(""), "--json"]);
    assert!(json_out.status.success());
    let otlp: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let spans: Vec<&Value> = otlp["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .collect();
    let mut ids: Vec<&str> = spans.iter().map(|s| s["spanId"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec!["2000000000000001", "2000000000000002"], "OTLP/JSON has hex IDs: {otlp}");
    assert!(spans.iter().all(|s| s["traceId"] == T_HOME));

    for target in [vec!["--server", &s.api_url("")], vec!["--data-dir", dir.path().to_str().unwrap()]] {
        let mut args = vec!["trace", "00000000000000000000000000000bad"];
        args.extend(target.iter().copied());
        let missing = spoor(&args);
        assert_eq!(missing.status.code(), Some(1));
        let err = String::from_utf8_lossy(&missing.stderr);
        assert!(err.contains("trace 00000000000000000000000000000bad not found"), "{err}");
    }
    let bad = spoor(&["trace", "xyz", "--server", &s.api_url("")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("hex"));
}

fn spoor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spoor")).args(args).env("RUST_LOG", "error").output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn jaeger_api_reads_the_tenant_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[QUIET[0], QUIET[1], ("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true")]);
    let body = dataset(base_time()).to_string();
    let r = request(
        "POST",
        &s.otlp_url("/v1/traces"),
        &[("content-type", "application/json"), ("x-scope-orgid", "acme")],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let as_tenant = |t: &'static str, path: &'static str| {
        let url = s.api_url(path);
        async move { request("GET", &url, &[("x-scope-orgid", t)], "").await }
    };
    let r = as_tenant("acme", "/jaeger/api/services").await;
    assert_eq!(r.json()["data"], json!(["cart", "frontend", "postgres"]));
    let r = as_tenant("globex", "/jaeger/api/services").await;
    assert_eq!(r.json()["data"], json!([]));
    let r = as_tenant("globex", "/jaeger/api/traces/5b8efff798038103d269b633813fc60c").await;
    assert_eq!(r.status, 404);
    let r = request("GET", &s.api_url("/jaeger/api/services"), &[], "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], 401);
}
