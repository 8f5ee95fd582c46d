//! The receivers and the query API through their real interfaces: OTLP/HTTP and OTLP/gRPC
//! over loopback, the Tempo trace-by-ID endpoints, and every documented refusal.

mod common;

use bytes::Bytes;
use common::*;
use prost::Message;
use spoor_agent::client::{Compression, OtlpClient, Outcome, Transport};
use spoor_model::otlp::*;

/// One resource, one scope, these spans.
fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

const TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn json_req(body: impl Into<Bytes>) -> (Vec<(&'static str, &'static str)>, Bytes) {
    (vec![("content-type", "application/json")], body.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_liberal_reading_and_tempo_json_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[]);
    // snake_case keys, enum names, 64-bit ints as numbers and strings, unknown fields, upper-case hex.
    let body = r#"{"resource_spans":[{"resource":{"attributes":[{"key":"service.name","value":{"string_value":"cart"}}]},"extra":1,
      "scope_spans":[{"scope":{"name":"lib","version":"1.0"},"spans":[
        {"trace_id":"5B8EFFF798038103D269B633813FC60C","span_id":"EEE19B7EC3C1B174","parent_span_id":"EEE19B7EC3C1B173",
         "name":"POST /cart","kind":"SPAN_KIND_SERVER","start_time_unix_nano":1700000000020000000,"endTimeUnixNano":"1700000000300000000",
         "status":{"code":"STATUS_CODE_ERROR","message":"db timeout"},"unknownField":{"a":[1]},
         "attributes":[{"key":"i","value":{"intValue":42}},{"key":"d","value":{"doubleValue":0.25}},{"key":"b","value":{"boolValue":true}},
                       {"key":"bytes","value":{"bytesValue":"AQID"}},{"key":"arr","value":{"arrayValue":{"values":[{"stringValue":"x"},{"intValue":"3"}]}}},
                       {"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}}],
         "events":[{"time_unix_nano":"1700000000100000000","name":"retry","attributes":[{"key":"n","value":{"intValue":"1"}}]}],
         "links":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","attributes":[{"key":"l","value":{"stringValue":"y"}}]}]}]}]}]}"#;
    let (h, b) = json_req(body);
    let r = request("POST", &s.otlp_url("/v1/traces"), &h, b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json(), serde_json::json!({}));

    let v2 = request("GET", &s.api_url(&format!("/api/v2/traces/{}", TRACE.to_uppercase())), &[], "").await;
    assert_eq!(v2.status, 200);
    let span = &v2.json()["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "W47/95gDgQPSabYzgT/GDA==");
    assert_eq!(span["spanId"], "7uGbfsPBsXQ=");
    assert_eq!(span["kind"], "SPAN_KIND_SERVER");
    assert_eq!(span["startTimeUnixNano"], "1700000000020000000");
    assert_eq!(span["status"], serde_json::json!({"code":"STATUS_CODE_ERROR","message":"db timeout"}));
    assert_eq!(span["attributes"][0]["value"], serde_json::json!({"intValue":"42"}));
    assert_eq!(span["attributes"][3]["value"], serde_json::json!({"bytesValue":"AQID"}));
    assert_eq!(span["attributes"][4]["value"]["arrayValue"]["values"][1], serde_json::json!({"intValue":"3"}));
    assert_eq!(span["events"][0]["name"], "retry");
    assert_eq!(span["links"][0]["attributes"][0]["key"], "l");

    let v1 = request("GET", &s.api_url(&format!("/api/traces/{TRACE}")), &[], "").await.json();
    assert_eq!(v1["batches"], v2.json()["trace"]["resourceSpans"]);

    // Protobuf: v1 is a `Trace` (= TracesData), v2 a TraceByIDResponse; both equal the JSON.
    let accept = [("accept", "application/protobuf")];
    let p1 = request("GET", &s.api_url(&format!("/api/traces/{TRACE}")), &accept, "").await;
    assert_eq!(p1.headers["content-type"], "application/protobuf");
    let t1 = TracesData::decode(p1.body).unwrap();
    let p2 = request("GET", &s.api_url(&format!("/api/v2/traces/{TRACE}")), &accept, "").await;
    let t2 = TraceByIdResponse::decode(p2.body).unwrap();
    assert_eq!(t2.trace.as_ref(), Some(&t1));
    assert!(t2.metrics.unwrap().inspected_bytes > 0);
    let sp = &t1.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(sp.kind, 2);
    assert_eq!(sp.end_time_unix_nano, 1700000000300000000);
    assert_eq!(sp.links[0].span_id, vec![1, 2, 3, 4, 5, 6, 7, 8]);

    // Not found: 404 with an empty body on both, so Grafana falls back from v2 to v1 and stops.
    for path in ["/api/traces/1234", "/api/v2/traces/1234"] {
        let r = request("GET", &s.api_url(path), &[], "").await;
        assert_eq!((r.status, r.body.len()), (404, 0), "{path}");
    }
    let bad = request("GET", &s.api_url("/api/traces/12x4"), &[], "").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("invalid character 'x' at position 3"), "{}", bad.text());
    let bad = request("GET", &s.api_url(&format!("/api/traces/{TRACE}?start=20&end=10")), &[], "").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("start must be before end"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_content_types_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[]);
    let url = s.otlp_url("/v1/traces");
    let body = json_spans(TRACE, &["0000000000000001"]);
    let gz = gzip(body.as_bytes());
    let zs = zstd::encode_all(json_spans(TRACE, &["0000000000000002"]).as_bytes(), 3).unwrap();
    let ct = ("content-type", "application/json");
    assert_eq!(request("POST", &url, &[ct, ("content-encoding", "gzip")], gz).await.status, 200);
    assert_eq!(request("POST", &url, &[ct, ("content-encoding", "zstd")], zs).await.status, 200);
    let r = request("POST", &url, &[ct, ("content-encoding", "br")], body.clone()).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("unsupported content encoding \"br\""));
    assert_eq!(request("POST", &url, &[ct, ("content-encoding", "gzip")], body.clone()).await.status, 400);
    let r = request("POST", &url, &[("content-type", "text/plain")], body.clone()).await;
    assert_eq!(r.status, 415);
    assert_eq!(request("GET", &url, &[], "").await.status, 405);
    assert_eq!(request("POST", &s.otlp_url("/v1/nope"), &[ct], body).await.status, 404);
    let v2 = request("GET", &s.api_url(&format!("/api/v2/traces/{TRACE}")), &[], "").await.json();
    let mut ids = span_ids(&v2);
    ids.sort();
    assert_eq!(ids, vec!["0000000000000001", "0000000000000002"]);

    // gRPC with compressed messages, over the real h2c transport.
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let client = OtlpClient::new(Transport::Grpc, &format!("http://{}", s.grpc), None);
        let req = request_of(vec![Span { trace_id: vec![9; 16], span_id: vec![c as u8 + 1; 8], ..Default::default() }]);
        let out = client.export_with(Bytes::from(req.encode_to_vec()), c).await.unwrap();
        assert_eq!(out, Outcome::Accepted { rejected: 0, message: String::new() }, "{c:?}");
    }
    let v2 = request("GET", &s.api_url(&format!("/api/v2/traces/{}", "09".repeat(16))), &[], "").await.json();
    assert_eq!(span_ids(&v2).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_keeps_the_good_spans() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[]);
    let span = |t: Vec<u8>, id: Vec<u8>| Span { trace_id: t, span_id: id, name: "x".into(), ..Default::default() };
    let mut spans: Vec<Span> = (1..=7u8).map(|i| span(vec![7; 16], vec![i; 8])).collect();
    spans.push(span(vec![0; 16], vec![8; 8])); // all-zero trace ID
    spans.push(span(vec![7; 16], vec![0; 8])); // all-zero span ID
    spans.push(span(vec![7; 15], vec![9; 8])); // 15-byte trace ID
    let req = request_of(spans);
    for transport in [Transport::Http, Transport::Grpc] {
        let endpoint = format!("http://{}", if transport == Transport::Http { &s.http } else { &s.grpc });
        let out = OtlpClient::new(transport, &endpoint, None).export(Bytes::from(req.encode_to_vec())).await.unwrap();
        let Outcome::Accepted { rejected, message } = out else { panic!("{out:?}") };
        assert_eq!(rejected, 3);
        assert!(
            message.contains("2 with an invalid trace ID") && message.contains("1 with an invalid span ID"),
            "{message}"
        );
    }
    // Sent twice (once per transport): each good span still appears once.
    let v2 = request("GET", &s.api_url(&format!("/api/v2/traces/{}", "07".repeat(16))), &[], "").await.json();
    assert_eq!(span_ids(&v2).len(), 7);
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(m.contains("spoor_spans_refused_total{tenant=\"single-tenant\",reason=\"invalid\"} 6"), "{m}");
    assert!(m.contains("spoor_spans_accepted_total{tenant=\"single-tenant\"} 14"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_documented_code_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[("SPOOR__INGEST__MAX_REQUEST_BYTES", "100000")]);
    let url = s.otlp_url("/v1/traces");
    let proto = ("content-type", "application/x-protobuf");
    let json = ("content-type", "application/json");

    // Random bytes and truncated protobuf: 400 with a google.rpc.Status in the request's encoding.
    let mut seed = 7u64;
    for i in 0..200 {
        let len = (i * 37) % 3000 + 1;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        let r = request("POST", &url, &[proto], junk.clone()).await;
        assert!(r.status == 400 || r.status == 200, "random body {i}: {}", r.status);
        if r.status == 400 {
            let st = RpcStatus::decode(r.body).unwrap();
            assert!(st.message.contains("invalid protobuf"), "{}", st.message);
        }
        let r = request("POST", &url, &[json], junk).await;
        assert_eq!(r.status, 400, "random JSON body {i}");
    }
    let good = request_of(vec![Span {
        trace_id: vec![1; 16],
        span_id: vec![1; 8],
        name: "a".repeat(100),
        ..Default::default()
    }])
    .encode_to_vec();
    let r = request("POST", &url, &[proto], good[..good.len() - 10].to_vec()).await;
    assert_eq!(r.status, 400);

    // Size: exactly at the limit passes, one byte over is 413; a gzip bomb is cut off at the limit.
    let mut at_limit = json_spans(TRACE, &["00000000000000aa"]);
    at_limit.push_str(&" ".repeat(100_000 - at_limit.len()));
    assert_eq!(request("POST", &url, &[json], at_limit.clone()).await.status, 200);
    let r = request("POST", &url, &[json], format!("{at_limit} ")).await;
    assert_eq!(r.status, 413);
    assert!(r.headers.get("retry-after").is_none());
    let bomb = gzip(&vec![b' '; 50 << 20]);
    let r = request("POST", &url, &[json, ("content-encoding", "gzip")], bomb.clone()).await;
    assert_eq!(r.status, 413, "{}", r.text());

    // Deep nesting: protobuf beyond prost's recursion limit and JSON beyond serde_json's are 400.
    let mut v = AnyValue { value: Some(any_value::Value::StringValue("leaf".into())) };
    for _ in 0..200 {
        v = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })) };
    }
    let deep = request_of(vec![Span {
        trace_id: vec![1; 16],
        span_id: vec![1; 8],
        attributes: vec![KeyValue { key: "deep".into(), value: Some(v) }],
        ..Default::default()
    }]);
    let r = request("POST", &url, &[proto], deep.encode_to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let deep_json = format!("{}{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    assert_eq!(request("POST", &url, &[json], deep_json).await.status, 400);

    // gRPC: the same rules with gRPC codes.
    let grpc = OtlpClient::new(Transport::Grpc, &format!("http://{}", s.grpc), None);
    let out = grpc.export(Bytes::from(vec![0xff; 64])).await.unwrap();
    assert!(matches!(out, Outcome::Refused { code: 3, .. }), "{out:?}");
    let out = grpc.export(Bytes::from(vec![0; 100_001])).await.unwrap();
    assert!(matches!(out, Outcome::Refused { code: 8, retry_after_secs: None, .. }), "{out:?}");
    let out = grpc.export(Bytes::from(deep.encode_to_vec())).await.unwrap();
    assert!(matches!(out, Outcome::Refused { code: 3, .. }), "{out:?}");
    let bomb_msg = Bytes::from(zstd::encode_all(&vec![0u8; 10 << 20][..], 3).unwrap());
    let raw = request_grpc_raw(&s.grpc, "zstd", bomb_msg).await;
    assert_eq!(raw, "8");
    let raw = request_grpc_raw(&s.grpc, "snappy-nope", Bytes::from_static(b"x")).await;
    assert_eq!(raw, "12");

    // Still up and serving.
    assert_eq!(request("GET", &s.api_url("/api/echo"), &[], "").await.text(), "echo\n");
    assert_eq!(request("POST", &url, &[json], json_spans(TRACE, &["00000000000000bb"])).await.status, 200);
}

/// Sends a pre-compressed gRPC message with the given `grpc-encoding`; returns `grpc-status`.
async fn request_grpc_raw(addr: &str, encoding: &str, message: Bytes) -> String {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut framed = vec![1u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let req = hyper::Request::post(format!("http://{addr}{}", spoor_server::ingest::receive::GRPC_EXPORT_PATH))
        .header("content-type", "application/grpc")
        .header("grpc-encoding", encoding)
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    trailers.get("grpc-status").or(headers.get("grpc-status")).unwrap().to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true")]);
    let url = s.otlp_url("/v1/traces");
    let json = ("content-type", "application/json");
    let body = json_spans(TRACE, &["0000000000000001"]);
    let r = request("POST", &url, &[json], body.clone()).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["message"].as_str().unwrap().contains("no org id"));
    for bad in ["..", ".", "../x", "a|b", &"x".repeat(151)] {
        let r = request("POST", &url, &[json, ("x-scope-orgid", bad)], body.clone()).await;
        assert_eq!(r.status, 401, "tenant {bad:?}");
    }
    assert_eq!(request("POST", &url, &[json, ("x-scope-orgid", "team-a")], body).await.status, 200);
    let path = format!("/api/v2/traces/{TRACE}");
    assert_eq!(request("GET", &s.api_url(&path), &[], "").await.status, 401);
    assert_eq!(request("GET", &s.api_url(&path), &[("x-scope-orgid", "team-b")], "").await.status, 404);
    assert_eq!(
        request("GET", &s.api_url(&format!("/api/traces/{TRACE}")), &[("x-scope-orgid", "team-b")], "").await.status,
        404
    );
    assert_eq!(request("GET", &s.api_url(&path), &[("x-scope-orgid", "team-a")], "").await.status, 200);
    assert_eq!(request("GET", &s.api_url(&path), &[("x-scope-orgid", "team-b|team-a")], "").await.status, 200);
    // gRPC carries the tenant as metadata.
    let grpc = OtlpClient::new(Transport::Grpc, &format!("http://{}", s.grpc), None);
    let out = grpc.export(Bytes::new()).await.unwrap();
    assert!(matches!(out, Outcome::Refused { code: 16, .. }), "{out:?}");
    let grpc = OtlpClient::new(Transport::Grpc, &format!("http://{}", s.grpc), Some("team-b".into()));
    assert!(matches!(grpc.export(Bytes::new()).await.unwrap(), Outcome::Accepted { rejected: 0, .. }));
    // Only validated tenant IDs ever name anything on disk: the block prefixes, after a flush
    // (the DORA store's files spell tenants in hex).
    let names: Vec<_> = std::fs::read_dir(dir.path().join("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| ["wal", "LOCK", "tmp", "blocks", "dora"].contains(&n.to_str().unwrap())), "{names:?}");
    assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
    let mut tenants: Vec<_> =
        std::fs::read_dir(dir.path().join("d/blocks")).unwrap().map(|e| e.unwrap().file_name()).collect();
    tenants.sort();
    assert_eq!(tenants, ["team-a"], "team-b sent no spans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_trace_limits_refuse_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("d"),
        &[("SPOOR__LIMITS__MAX_LIVE_TRACES", "2"), ("SPOOR__LIMITS__MAX_BYTES_PER_TRACE", "600")],
    );
    let url = s.otlp_url("/v1/traces");
    let json = ("content-type", "application/json");
    let t = |n: u8| format!("{:032x}", n);
    for n in 1..=2 {
        assert_eq!(request("POST", &url, &[json], json_spans(&t(n), &["0000000000000001"])).await.status, 200);
    }
    let r = request("POST", &url, &[json], json_spans(&t(3), &["0000000000000001"])).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "5");
    assert!(r.json()["message"].as_str().unwrap().contains("live_traces_exceeded"));
    // A trace that would grow past max_bytes_per_trace: partial success, not silence.
    let many: Vec<String> = (10..30).map(|i| format!("{:016x}", i)).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = request("POST", &url, &[json], json_spans(&t(1), &refs)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["partialSuccess"]["rejectedSpans"], "20");
    let grpc = OtlpClient::new(Transport::Grpc, &format!("http://{}", s.grpc), None);
    let req = request_of(vec![Span { trace_id: vec![3; 16], span_id: vec![1; 8], ..Default::default() }]);
    let out = grpc.export(Bytes::from(req.encode_to_vec())).await.unwrap();
    assert!(matches!(out, Outcome::Refused { code: 8, retry_after_secs: Some(5), .. }), "{out:?}");
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(m.contains("reason=\"live_traces_exceeded\"} 2"), "{m}");
    assert!(m.contains("reason=\"trace_too_large\"} 20"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("d"), &[]);
    assert_eq!(request("GET", &s.api_url("/api/echo"), &[], "").await.text(), "echo\n");
    assert_eq!(request("GET", &s.api_url("/ready"), &[], "").await.text(), "ready\n");
    let info = request("GET", &s.api_url("/api/status/buildinfo"), &[], "").await.json();
    assert!(info["version"].as_str().unwrap().starts_with("2.9.0+spoor."), "{info}");
    let m = request("GET", &s.api_url("/metrics"), &[], "").await;
    assert!(m.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(m.text().contains("# TYPE spoor_wal_fsync_duration_seconds histogram"));
    assert!(m.text().contains("spoor_ready 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_memory_is_bounded_across_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("d"),
        &[("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true"), ("SPOOR__LIMITS__MAX_LIVE_BYTES", "3000")],
    );
    let url = s.otlp_url("/v1/traces");
    let json = ("content-type", "application/json");
    let mut last = 0;
    // Many tenants, each well within its own share, fill the server's bound together.
    for (i, tenant) in (0..40).map(|i| (i, format!("t{i}"))) {
        let r = request(
            "POST",
            &url,
            &[json, ("x-scope-orgid", &tenant)],
            json_spans(&format!("{:032x}", i + 1), &["0000000000000001"]),
        )
        .await;
        last = r.status;
        if r.status == 503 {
            assert_eq!(r.headers["retry-after"], "5");
            assert!(r.json()["message"].as_str().unwrap().contains("live_bytes_exceeded"), "{}", r.text());
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(last, 503, "the bound was never reached");
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(m.contains("reason=\"live_bytes_exceeded\"} 1"), "{m}");
}
