//! TraceQL search and tags through the real binary over loopback: whole responses compared,
//! the same answers from live traces and from blocks, Tempo's error shapes.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

const QUIET: &[(&str, &str)] =
    &[("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"), ("SPOOR__COMPACTION__ENABLED", "false")];

const T_CART: &str = "2f3e0cee77ae5dc9c17ade3689eb2e54";
/// Leading zeros: search results strip them, as Tempo's do.
const T_PORTAL: &str = "00000000000000000000000000000abc";
const T_DEPLOY: &str = "7d1c0aa5e2b34c58a0c1f2e3d4b5a697";

#[allow(clippy::too_many_arguments)] // one argument per OTLP span field the tests vary
fn span(
    trace: &str,
    id: &str,
    parent: &str,
    name: &str,
    kind: u8,
    start: u64,
    ms: u64,
    status: u8,
    attrs: Value,
) -> Value {
    json!({
        "traceId": trace, "spanId": id, "parentSpanId": parent, "name": name, "kind": kind,
        "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + ms * 1_000_000).to_string(),
        "status": { "code": status }, "attributes": attrs,
    })
}

fn resource(service: &str, spans: Vec<Value>) -> Value {
    json!({
        "resource": { "attributes": [
            { "key": "service.name", "value": { "stringValue": service } },
            { "key": "deployment.environment", "value": { "stringValue": "production" } },
        ]},
        "scopeSpans": [{ "scope": { "name": "checkout-lib", "version": "1.2.0" }, "spans": spans }],
    })
}

fn kv(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": value })
}

/// Three traces: a cart request with a failing root and a database call (two services), a
/// one-span portal render, and a CI pipeline deploying to production.
fn dataset(base: u64) -> Value {
    let s = 1_000_000_000;
    json!({ "resourceSpans": [
        resource("shop-backend", vec![
            span(T_CART, "0000000000000001", "", "GET /cart", 2, base, 500, 2, json!([
                kv("http.method", json!({"stringValue": "GET"})),
                kv("http.status_code", json!({"intValue": "500"})),
            ])),
            span(T_CART, "0000000000000002", "0000000000000001", "SELECT cart", 3, base + 10_000_000, 300, 0, json!([
                kv("db.system", json!({"stringValue": "postgresql"})),
            ])),
        ]),
        resource("billing", vec![
            span(T_CART, "0000000000000003", "0000000000000001", "charge", 2, base + 320_000_000, 160, 1, json!([])),
        ]),
        resource("portal", vec![
            span(T_PORTAL, "00000000000000a1", "", "render", 1, base + s, 20, 0, json!([
                kv("retry.counts", json!({"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "3"}]}})),
            ])),
        ]),
        resource("jenkins", vec![
            span(T_DEPLOY, "00000000000000b1", "", "pipeline", 1, base + 2 * s, 3000, 0, json!([])),
            span(T_DEPLOY, "00000000000000b2", "00000000000000b1", "deploy-to-production", 1, base + 2 * s + 500_000_000, 1000, 0, json!([
                kv("deploy.target", json!({"stringValue": "prod-eu"})),
            ])),
        ]),
    ]})
}

fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn search(s: &Server, query: &str) -> Response {
    request("GET", &s.api_url(&format!("/api/search?q={}", encode(query))), &[], "").await
}

async fn traces(s: &Server, query: &str) -> Value {
    let r = search(s, query).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    r.json()["traces"].clone()
}

/// The expected search answer for each query, given the dataset's base time.
fn expectations(base: u64) -> Vec<(&'static str, Value)> {
    let ns = |off: u64| (base + off).to_string();
    let cart = |spansets: Value| {
        json!({
            "traceID": T_CART, "rootServiceName": "shop-backend", "rootTraceName": "GET /cart",
            "startTimeUnixNano": ns(0), "durationMs": 500,
            "spanSet": spansets[0].clone(), "spanSets": spansets,
            "serviceStats": { "billing": { "spanCount": 1 }, "shop-backend": { "spanCount": 2, "errorCount": 1 } },
        })
    };
    let deploy = |spansets: Value| {
        json!({
            "traceID": T_DEPLOY, "rootServiceName": "jenkins", "rootTraceName": "pipeline",
            "startTimeUnixNano": ns(2_000_000_000), "durationMs": 3000,
            "spanSet": spansets[0].clone(), "spanSets": spansets,
            "serviceStats": { "jenkins": { "spanCount": 2 } },
        })
    };
    let portal = |spansets: Value| {
        json!({
            "traceID": "abc", "rootServiceName": "portal", "rootTraceName": "render",
            "startTimeUnixNano": ns(1_000_000_000), "durationMs": 20,
            "spanSet": spansets[0].clone(), "spanSets": spansets,
            "serviceStats": { "portal": { "spanCount": 1 } },
        })
    };
    vec![
        (
            r#"{ span.db.system = "postgresql" }"#,
            json!([cart(json!([{ "matched": 1, "spans": [{
                "spanID": "0000000000000002", "name": "SELECT cart", "startTimeUnixNano": ns(10_000_000),
                "durationNanos": "300000000", "attributes": [{ "key": "db.system", "value": { "stringValue": "postgresql" } }],
            }]}]))]),
        ),
        (
            "{ status = error && resource.deployment.environment = \"production\" }",
            json!([cart(json!([{ "matched": 1, "spans": [{
                "spanID": "0000000000000001", "name": "GET /cart", "startTimeUnixNano": ns(0), "durationNanos": "500000000",
                "attributes": [
                    { "key": "status", "value": { "stringValue": "error" } },
                    { "key": "deployment.environment", "value": { "stringValue": "production" } },
                ],
            }]}]))]),
        ),
        (
            r#"{ resource.service.name = "jenkins" } >> { span:name = "deploy-to-production" }"#,
            json!([deploy(json!([{ "matched": 1, "spans": [{
                "spanID": "00000000000000b2", "name": "deploy-to-production", "startTimeUnixNano": ns(2_500_000_000),
                "durationNanos": "1000000000",
                // Every attribute the query referenced that the span has (its own name is in `name`).
                "attributes": [{ "key": "service.name", "value": { "stringValue": "jenkins" } }],
            }]}]))]),
        ),
        (
            "{ duration >= 1s }",
            json!([deploy(json!([{ "matched": 2, "spans": [
                { "spanID": "00000000000000b1", "name": "pipeline", "startTimeUnixNano": ns(2_000_000_000),
                  "durationNanos": "3000000000" },
                { "spanID": "00000000000000b2", "name": "deploy-to-production", "startTimeUnixNano": ns(2_500_000_000),
                  "durationNanos": "1000000000" },
            ]}]))]),
        ),
        (
            "{ } | count() > 2",
            json!([cart(
                json!([{ "matched": 3, "attributes": [{ "key": "count()", "value": { "intValue": "3" } }], "spans": [
                    { "spanID": "0000000000000001", "name": "GET /cart", "startTimeUnixNano": ns(0), "durationNanos": "500000000" },
                    { "spanID": "0000000000000002", "name": "SELECT cart", "startTimeUnixNano": ns(10_000_000), "durationNanos": "300000000" },
                    { "spanID": "0000000000000003", "name": "charge", "startTimeUnixNano": ns(320_000_000), "durationNanos": "160000000" },
                ]}])
            )]),
        ),
        (
            // Groups in order of first appearance (the root starts first).
            r#"{ kind = server } | by(resource.service.name)"#,
            json!([cart(json!([
                { "matched": 1, "attributes": [{ "key": "by(resource.service.name)", "value": { "stringValue": "shop-backend" } }], "spans": [
                    { "spanID": "0000000000000001", "name": "GET /cart", "startTimeUnixNano": ns(0), "durationNanos": "500000000",
                      "attributes": [
                          { "key": "kind", "value": { "stringValue": "server" } },
                          { "key": "service.name", "value": { "stringValue": "shop-backend" } },
                      ] },
                ]},
                { "matched": 1, "attributes": [{ "key": "by(resource.service.name)", "value": { "stringValue": "billing" } }], "spans": [
                    { "spanID": "0000000000000003", "name": "charge", "startTimeUnixNano": ns(320_000_000), "durationNanos": "160000000",
                      "attributes": [
                          { "key": "kind", "value": { "stringValue": "server" } },
                          { "key": "service.name", "value": { "stringValue": "billing" } },
                      ] },
                ]},
            ]))]),
        ),
        (
            r#"{ name = "render" } || { name = "pipeline" }"#,
            json!([
                deploy(json!([{ "matched": 1, "spans": [{ "spanID": "00000000000000b1", "name": "pipeline",
                    "startTimeUnixNano": ns(2_000_000_000), "durationNanos": "3000000000" }]}])),
                portal(json!([{ "matched": 1, "spans": [{ "spanID": "00000000000000a1", "name": "render",
                    "startTimeUnixNano": ns(1_000_000_000), "durationNanos": "20000000" }]}])),
            ]),
        ),
        ("{ span.http.status_code = 404 }", json!([])),
    ]
}

/// Attributes on a span or spanset are a set: compare them sorted by key.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                normalise(x);
                if k == "attributes"
                    && let Value::Array(a) = x
                {
                    a.sort_by_key(|kv| kv["key"].as_str().unwrap_or("").to_owned());
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

async fn check_all(s: &Server, base: u64, when: &str) {
    for (query, mut want) in expectations(base) {
        let mut got = traces(s, query).await;
        normalise(&mut got);
        normalise(&mut want);
        assert_eq!(got, want, "{when}: {query}\ngot:  {got:#}\nwant: {want:#}");
    }
}

fn base_time() -> u64 {
    // Ten minutes ago, on a whole second, so ranges in unix seconds cover it exactly.
    (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 600) * 1_000_000_000
}

async fn ingest(s: &Server, base: u64) {
    let r =
        request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], dataset(base).to_string())
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn search_answers_the_same_from_live_traces_and_from_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    let base = base_time();
    ingest(&s, base).await;

    // Searchable at once: no 30-second wait, no start/end needed.
    check_all(&s, base, "live").await;
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204);
    check_all(&s, base, "blocks").await;

    // Newest first, and the limit takes the newest.
    let r = request("GET", &s.api_url("/api/search?q=%7B%7D&limit=2"), &[], "").await;
    let ids: Vec<String> =
        r.json()["traces"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec![T_DEPLOY.to_owned(), "abc".to_owned()]);

    // A range that ends before the pipeline started leaves it out.
    let (start, end) = (base / 1_000_000_000 - 60, base / 1_000_000_000 + 1);
    let r = request("GET", &s.api_url(&format!("/api/search?q=%7B%7D&start={start}&end={end}")), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> =
        r.json()["traces"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec!["abc".to_owned(), T_CART.to_owned()]);
    let m = &r.json()["metrics"];
    assert!(m["totalBlocks"].as_u64().unwrap() >= 1, "{m}");

    // Legacy parameters: tags (substring, case-insensitive) and durations.
    let r = request("GET", &s.api_url("/api/search?tags=service.name%3DJENK&minDuration=2s"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> =
        r.json()["traces"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec![T_DEPLOY.to_owned()]);
    // A legacy tag whose value reads as a number matches the int attribute too.
    let r = request("GET", &s.api_url("/api/search?tags=http.status_code%3D500"), &[], "").await;
    let ids: Vec<String> =
        r.json()["traces"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec![T_CART.to_owned()], "{}", r.text());
    // Tag values of an int array: each element, typed.
    let r = request("GET", &s.api_url("/api/v2/search/tag/span.retry.counts/values"), &[], "").await;
    assert_eq!(
        r.json()["tagValues"],
        json!([{"type": "int", "value": "1"}, {"type": "int", "value": "3"}]),
        "{}",
        r.text()
    );
    // Metrics arithmetic followed by a filter and a limit.
    let q = encode("(({ } | count_over_time()) * 100 > 5) | topk(1)");
    let r = request("GET", &s.api_url(&format!("/api/metrics/query_range?q={q}&since=24h")), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["series"].as_array().map(Vec::len), Some(1), "{}", r.text());
    // Raw, unencoded braces, as one Grafana version sent them (over a plain socket: HTTP
    // clients refuse to send such a URL).
    let (status, raw) = blocking_get(&s.api_url("/api/search?q={%20name=%22render%22%20}")).unwrap();
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains(r#""traceID":"abc""#), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_searches_get_400_with_tempo_style_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    for (query, want) in [
        ("{ durationn > 1s }", "invalid TraceQL query: parse error at line 1, col 3"),
        ("{ durationn > 1s }", "did you mean 'duration'"),
        ("{ name = 1 }", "invalid TraceQL query: "),
        ("{ .a =~ \"[\" }", "invalid TraceQL query: "),
    ] {
        let r = search(&s, query).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.text().contains(want), "{query}: {:?} lacks {want:?}", r.text());
        assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    }
    for (params, want) in [
        ("q=%7B%7D&limit=0", "limit"),
        ("q=%7B%7D&spss=101", "spss"),
        ("q=%7B%7D&start=20&end=10", "start must be before end"),
        ("q=%7B%7D&start=1&end=1000000", "exceeds"),
        ("q=%7B%7D&tags=a%3Db", "q and tags"),
        ("minDuration=2s&maxDuration=1s", "maxDuration"),
        ("minDuration=fast", "minDuration"),
    ] {
        let r = request("GET", &s.api_url(&format!("/api/search?{params}")), &[], "").await;
        assert_eq!(r.status, 400, "{params}: {}", r.text());
        assert!(r.text().contains(want), "{params}: {:?} lacks {want:?}", r.text());
    }
    let metrics = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    let line = metrics.lines().find(|l| l.starts_with("spoor_queries_total{") && l.contains("bad_request"));
    assert!(line.is_some_and(|l| l.ends_with(" 11")), "{metrics}");
}

fn spoor_query(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spoor")).arg("query").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn spoor_query_reads_a_server_or_the_blocks_directly() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), QUIET);
    let base = base_time();
    ingest(&s, base).await;
    let server = format!("http://{}", s.api);
    let (ok, out, err) = spoor_query(&["--server", &server, "--json", "{ status = error }"]);
    assert!(ok, "{err}");
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["traces"][0]["traceID"], T_CART);

    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204);
    s.terminate();
    let data = dir.path().to_str().unwrap();
    // The same answer straight from the blocks, as JSON and as a table.
    let (ok, out, err) = spoor_query(&["--data-dir", data, "--json", "{ status = error }"]);
    assert!(ok, "{err}");
    let local: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(local["traces"], body["traces"]);
    let (ok, out, err) = spoor_query(&["--data-dir", data, "{ span.deploy.target =~ \"prod-.*\" }"]);
    assert!(ok, "{err}");
    assert!(out.contains(T_DEPLOY) && out.contains("jenkins") && out.contains("deploy-to-production"), "{out}");
    assert!(out.contains("deploy.target=\"prod-eu\""), "{out}");
    let (ok, _, err) = spoor_query(&["--data-dir", data, "{ nope }"]);
    assert!(!ok && err.contains("invalid TraceQL query"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_take_the_newest_traces_across_blocks_and_live_data_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    let base = base_time();
    // 240 one-span traces in 4 rounds: three become blocks, the last stays live. Trace IDs are
    // scrambled against time, so ID order (the block order) says nothing about recency.
    let mut all: Vec<(u64, String, bool)> = Vec::new();
    for round in 0..4u64 {
        let mut spans = Vec::new();
        for i in 0..60u64 {
            let n = round * 60 + i;
            let trace = format!("{:032x}", (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8) | 1 << 60);
            let start = base + ((n * 7919) % 240) * 1_000_000_000 / 4 + n;
            let error = n % 3 == 0;
            spans.push(span(&trace, "00000000000000c1", "", "op", 2, start, 5, if error { 2 } else { 0 }, json!([])));
            all.push((start, trace, error));
        }
        let body = json!({ "resourceSpans": [resource("svc", spans)] });
        let r =
            request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body.to_string()).await;
        assert_eq!(r.status, 200);
        if round < 3 {
            assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
        }
    }
    all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (query, only_errors) in [("{ }", false), ("{ status = error }", true)] {
        let want: Vec<String> = all
            .iter()
            .filter(|t| !only_errors || t.2)
            .take(25)
            .map(|t| t.1.trim_start_matches('0').to_owned())
            .collect();
        for _ in 0..3 {
            let r = request("GET", &s.api_url(&format!("/api/search?q={}&limit=25", encode(query))), &[], "").await;
            assert_eq!(r.status, 200, "{}", r.text());
            let got: Vec<String> = r.json()["traces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["traceID"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(got, want, "{query}");
        }
    }
}

/// A block skips attribute lists its key catalog rules out; values that did not fit the
/// dedicated column (another type) must still be found in the generic list.
#[tokio::test(flavor = "multi_thread")]
async fn blocks_find_values_outside_their_dedicated_columns() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    let base = base_time();
    let trace = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    let mut spans: Vec<Value> = (0..20u64)
        .map(|i| {
            let id = format!("{:016x}", 0x100 + i);
            span(trace, &id, "", "op", 2, base + i, 5, 0, json!([kv("code", json!({"stringValue": format!("c{i}")}))]))
        })
        .collect();
    // One span has `code` as an int: the block dedicates `code` as a string column, so this
    // value goes to the generic list.
    spans.push(span(
        trace,
        "00000000000001ff",
        "",
        "odd",
        2,
        base + 100,
        5,
        0,
        json!([kv("code", json!({"intValue": "7"}))]),
    ));
    let body = json!({ "resourceSpans": [resource("svc", spans)] });
    let r = request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body.to_string()).await;
    assert_eq!(r.status, 200);
    for when in ["live", "blocks"] {
        if when == "blocks" {
            assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
        }
        let spans_of = |v: Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|t| {
                    t["spanSets"][0]["spans"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s["name"].as_str().unwrap().to_owned())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(spans_of(traces(&s, "{ span.code = 7 }").await), vec!["odd"], "{when}");
        assert_eq!(spans_of(traces(&s, "{ .code = 7 }").await), vec!["odd"], "{when}");
        assert_eq!(spans_of(traces(&s, r#"{ span.code = "c3" }"#).await), vec!["op"], "{when}");
        assert_eq!(traces(&s, r#"{ span.nowhere = "x" }"#).await, json!([]), "{when}");
        assert_eq!(traces(&s, r#"{ event.code = "c3" }"#).await, json!([]), "{when}");
        assert_eq!(spans_of(traces(&s, "{ span.nowhere = nil && span.code = 7 }").await), vec!["odd"], "{when}");
    }
    let metas: Vec<_> = std::fs::read_dir(dir.path().join("blocks/single-tenant")).unwrap().flatten().collect();
    let meta: Value = serde_json::from_slice(&std::fs::read(metas[0].path().join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["keys"]["span"], json!(["code"]), "{meta}");
    assert_eq!(meta["keys"]["generic_span"], json!(["code"]), "{meta}");
    assert!(meta["dedicated_columns"].as_array().unwrap().iter().any(|d| d["key"] == "code"), "{meta}");
}

/// `app.user_id` is on every span of the first block (a dedicated column there) and on one span
/// of the second (generic there); `app.level` is an int in the first and mixed int/string in
/// the second; `app.tags` is an array. Each query must answer the same while the second batch
/// is live and once both are blocks, and the value index must not hide anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_dedicated_in_one_block_and_generic_in_another_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), QUIET);
    let base = base_time();
    let str_ = |v: &str| json!({ "stringValue": v });
    let int = |v: i64| json!({ "intValue": v.to_string() });
    let batch = |first: bool| -> Value {
        let spans: Vec<Value> = (0..60u64)
            .map(|i| {
                let trace = format!("{}{:031x}", if first { 'a' } else { 'b' }, i / 10);
                let id = format!("{:016x}", 0x1000 + i);
                let mut attrs = vec![kv("app.level", int((i % 5) as i64))];
                if first || i == 17 {
                    attrs.push(kv("app.user_id", str_(&format!("u{}", i % 7))));
                }
                if !first && i % 4 == 0 {
                    attrs = vec![kv("app.level", str_("high"))];
                }
                if !first && i % 9 == 0 {
                    attrs.push(kv("app.tags", json!({ "arrayValue": { "values": [str_("a"), str_("b")] } })));
                }
                span(&trace, &id, "", &format!("op{i}"), 2, base + i * 1000, 5, 0, json!(attrs))
            })
            .collect();
        json!({ "resourceSpans": [resource(if first { "first" } else { "second" }, spans)] })
    };
    let queries = [
        r#"{ span.app.user_id = "u3" }"#,
        r#"{ span.app.user_id = "nobody" }"#,
        r#"{ span.app.user_id =~ "u[12]" }"#,
        r#"{ span.app.user_id != "u3" }"#,
        r#"{ .app.user_id = "u3" }"#,
        "{ span.app.level > 2 }",
        "{ span.app.level = 4 }",
        r#"{ span.app.level = "high" }"#,
        r#"{ span.app.level != "high" }"#,
        r#"{ span.app.tags = "b" }"#,
        r#"{ span.app.tags = "z" }"#,
        "{ span.app.level = 4.0 }",
    ];
    let url = s.otlp_url("/v1/traces");
    let post = |body: Value| request("POST", &url, &[("content-type", "application/json")], body.to_string());
    assert_eq!(post(batch(true)).await.status, 200);
    assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
    assert_eq!(post(batch(false)).await.status, 200);
    let mut live = Vec::new();
    for q in queries {
        let mut got = traces(&s, q).await;
        normalise(&mut got);
        live.push(got);
    }
    assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
    for (q, want) in queries.iter().zip(&live) {
        let mut got = traces(&s, q).await;
        normalise(&mut got);
        assert_eq!(&got, want, "{q}: live {want:#}\nblocks {got:#}");
    }
    let count = |v: &Value| v.as_array().unwrap().len();
    // u3: spans 3, 10, 17, ... of the first batch (traces 0..5) and span 17 of the second.
    assert_eq!(count(&live[0]), 7, "{:#}", live[0]);
    assert_eq!(count(&live[1]), 0);
    assert_eq!(count(&live[7]), 6, "every trace of the second batch has a \"high\" span");
    assert_eq!(count(&live[9]), 6, "spans 0, 9, ..., 54 carry the array");
    assert_eq!(count(&live[10]), 0);
    let dirs: Vec<_> = std::fs::read_dir(dir.path().join("blocks/single-tenant")).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 2);
    let dedicated: Vec<bool> = dirs
        .iter()
        .map(|d| {
            let meta: Value = serde_json::from_slice(&std::fs::read(d.path().join("meta.json")).unwrap()).unwrap();
            meta["dedicated_columns"].as_array().unwrap().iter().any(|c| c["key"] == "app.user_id")
        })
        .collect();
    assert!(dedicated.contains(&true) && dedicated.contains(&false), "{dedicated:?}");
}
