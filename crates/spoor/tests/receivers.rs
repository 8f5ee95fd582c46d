//! The Zipkin and Jaeger receivers through their real interfaces: hand-built bodies over
//! loopback (Zipkin JSON and proto3, Jaeger Thrift over HTTP, Jaeger gRPC PostSpans), each
//! trace read back through the Tempo API and checked field by field against the mapping in
//! docs/receivers.md; then every refusal, and tenancy.

mod common;

use bytes::Bytes;
use common::*;
use prost::Message;
use spoor_model::ids::{hex, unhex};
use spoor_model::jaeger;
use spoor_model::otlp::any_value::Value;
use spoor_model::otlp::*;
use spoor_model::zipkin;

/// A server with the Zipkin and Jaeger receivers on free ports: (server, zipkin, jaeger thrift).
fn start(dir: &std::path::Path, extra: &[(&str, &str)]) -> (Server, String, String) {
    let [z, j] = free_ports::<2>();
    let (z, j) = (format!("127.0.0.1:{z}"), format!("127.0.0.1:{j}"));
    let mut env = vec![("SPOOR__ZIPKIN__LISTEN", z.as_str()), ("SPOOR__JAEGER__THRIFT_HTTP_LISTEN", j.as_str())];
    env.extend_from_slice(extra);
    (Server::start(dir, &env), z, j)
}

async fn fetch(s: &Server, trace: &str, headers: &[(&str, &str)]) -> Vec<(Resource, InstrumentationScope, Span)> {
    let mut h = vec![("accept", "application/protobuf")];
    h.extend_from_slice(headers);
    let r = request("GET", &s.api_url(&format!("/api/v2/traces/{trace}")), &h, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = TraceByIdResponse::decode(r.body).unwrap().trace.unwrap_or_default();
    let mut out = Vec::new();
    for rs in t.resource_spans {
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push((rs.resource.clone().unwrap_or_default(), ss.scope.clone().unwrap_or_default(), span));
            }
        }
    }
    out.sort_by(|a, b| a.2.span_id.cmp(&b.2.span_id));
    out
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn sv(v: &str) -> Option<Value> {
    Some(Value::StringValue(v.into()))
}

const ZIPKIN_TRACE: &str = "00000000000000005af7183fb1d4cf5f";

const ZIPKIN_JSON: &str = r#"[{
  "traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "parentId": "352bff9a74ca9ad2",
  "name": "get /api", "kind": "SERVER", "timestamp": 1700000000000000, "duration": 1500,
  "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.101", "port": 9000},
  "remoteEndpoint": {"serviceName": "frontend", "ipv4": "172.19.0.2", "port": 58648},
  "annotations": [{"timestamp": 1700000000000100, "value": "wr"}],
  "tags": {"http.method": "GET", "http.path": "/api", "error": "timeout", "otel.scope.name": "zk"},
  "shared": true
}, {
  "traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "name": "root",
  "timestamp": 1699999999999000, "duration": 4000,
  "localEndpoint": {"serviceName": "frontend"}, "tags": {"span.kind": "internal"}
}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_json_and_proto_map_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let (s, zipkin, _) = start(&dir.path().join("d"), &[]);
    let url = format!("http://{zipkin}/api/v2/spans");
    let r = request(
        "POST",
        &url,
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
        gzip(ZIPKIN_JSON.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());

    let spans = fetch(&s, ZIPKIN_TRACE, &[]).await;
    assert_eq!(spans.len(), 2);
    let (res, scope, span) = &spans[1];
    assert_eq!(hex(&span.span_id), "6b221d5bc9e6496c");
    assert_eq!(hex(&span.trace_id), ZIPKIN_TRACE, "64-bit trace IDs are zero-padded");
    assert_eq!(hex(&span.parent_span_id), "352bff9a74ca9ad2");
    assert_eq!((span.name.as_str(), span.kind), ("get /api", 2));
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_001_500_000);
    assert_eq!(attr(&res.attributes, "service.name").cloned(), sv("backend"));
    let ips = match attr(&res.attributes, "host.ip") {
        Some(Value::ArrayValue(a)) => a.values.iter().map(|v| v.value.clone()).collect::<Vec<_>>(),
        other => panic!("host.ip: {other:?}"),
    };
    assert_eq!(ips, vec![sv("192.168.99.101")]);
    assert_eq!(scope.name, "zk");
    assert_eq!(attr(&span.attributes, "http.method").cloned(), sv("GET"));
    assert_eq!(attr(&span.attributes, "peer.service").cloned(), sv("frontend"));
    assert_eq!(attr(&span.attributes, "network.peer.address").cloned(), sv("172.19.0.2"));
    assert_eq!(attr(&span.attributes, "network.peer.port"), Some(&Value::IntValue(58648)));
    assert_eq!(attr(&span.attributes, "network.local.port"), Some(&Value::IntValue(9000)));
    assert_eq!(attr(&span.attributes, "error"), None, "error becomes the status");
    let st = span.status.clone().unwrap();
    assert_eq!((st.code, st.message.as_str()), (2, "timeout"));
    assert_eq!((span.events[0].name.as_str(), span.events[0].time_unix_nano), ("wr", 1_700_000_000_000_100_000));
    let (root_res, _, root) = &spans[0];
    assert_eq!((root.kind, root.parent_span_id.len()), (1, 0));
    assert_eq!(attr(&root_res.attributes, "service.name").cloned(), sv("frontend"));

    // proto3 ListOfSpans, 128-bit ID, deflate.
    let list = zipkin::ListOfSpans {
        spans: vec![zipkin::ProtoSpan {
            trace_id: unhex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            id: unhex("b7ad6b7169203331").unwrap(),
            kind: 1,
            name: "query".into(),
            timestamp: 1_700_000_000_000_000,
            duration: 20,
            local_endpoint: Some(zipkin::ProtoEndpoint { service_name: "api".into(), ..Default::default() }),
            remote_endpoint: Some(zipkin::ProtoEndpoint {
                service_name: "postgres".into(),
                ipv6: vec![0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                port: 5432,
                ..Default::default()
            }),
            tags: [("db.statement".to_string(), "select 1".to_string())].into(),
            ..Default::default()
        }],
    };
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &list.encode_to_vec()).unwrap();
    let headers = [("content-type", "application/x-protobuf"), ("content-encoding", "deflate")];
    let r = request("POST", &url, &headers, z.finish().unwrap()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let spans = fetch(&s, "0af7651916cd43dd8448eb211c80319c", &[]).await;
    let (res, _, span) = &spans[0];
    assert_eq!((span.kind, span.end_time_unix_nano - span.start_time_unix_nano), (3, 20_000));
    assert_eq!(attr(&res.attributes, "service.name").cloned(), sv("api"));
    assert_eq!(attr(&span.attributes, "network.peer.address").cloned(), sv("2001:db8::1"));
    // Scrubbed like any OTLP span: the default policy masks literals in statements.
    assert_eq!(attr(&span.attributes, "db.statement").cloned(), sv("select ?"));

    // The receiver's requests are counted under their own transport.
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(
        m.lines().any(|l| l.starts_with("spoor_requests_total")
            && l.contains("transport=\"zipkin\"")
            && l.contains("code=\"ok\"")
            && l.ends_with(" 2")),
        "{m}"
    );
}

/// A Thrift binary writer: enough of the protocol to build a Jaeger `Batch`.
#[derive(Default)]
struct Thrift(Vec<u8>);

impl Thrift {
    fn field(mut self, t: u8, id: i16) -> Self {
        self.0.push(t);
        self.0.extend_from_slice(&id.to_be_bytes());
        self
    }
    fn i32(self, id: i16, v: i32) -> Self {
        let mut s = self.field(8, id);
        s.0.extend_from_slice(&v.to_be_bytes());
        s
    }
    fn i64(self, id: i16, v: i64) -> Self {
        let mut s = self.field(10, id);
        s.0.extend_from_slice(&v.to_be_bytes());
        s
    }
    fn f64(self, id: i16, v: f64) -> Self {
        let mut s = self.field(4, id);
        s.0.extend_from_slice(&v.to_bits().to_be_bytes());
        s
    }
    fn bool(self, id: i16, v: bool) -> Self {
        let mut s = self.field(2, id);
        s.0.push(v as u8);
        s
    }
    fn str(self, id: i16, v: &str) -> Self {
        let mut s = self.field(11, id);
        s.0.extend_from_slice(&(v.len() as i32).to_be_bytes());
        s.0.extend_from_slice(v.as_bytes());
        s
    }
    fn structs(self, id: i16, items: Vec<Vec<u8>>) -> Self {
        let mut s = self.field(15, id);
        s.0.push(12);
        s.0.extend_from_slice(&(items.len() as i32).to_be_bytes());
        items.into_iter().for_each(|i| s.0.extend_from_slice(&i));
        s
    }
    fn strct(self, id: i16, body: Vec<u8>) -> Self {
        let mut s = self.field(12, id);
        s.0.extend_from_slice(&body);
        s
    }
    fn end(mut self) -> Vec<u8> {
        self.0.push(0);
        self.0
    }
}

fn tag(key: &str) -> Thrift {
    Thrift::default().str(1, key)
}

const HIGH: i64 = 0x1122334455667788;
const LOW: i64 = 0x0102030405060708;
const JAEGER_TRACE: &str = "11223344556677880102030405060708";

fn thrift_batch() -> Vec<u8> {
    let process = Thrift::default()
        .str(1, "inventory")
        .structs(2, vec![tag("hostname").i32(2, 0).str(3, "host-1").end(), tag("cpus").i32(2, 3).i64(6, 8).end()])
        .end();
    let log = Thrift::default()
        .i64(1, 1_700_000_000_000_500)
        .structs(2, vec![tag("event").i32(2, 0).str(3, "cache miss").end(), tag("key").i32(2, 0).str(3, "sku-1").end()])
        .end();
    let follows = Thrift::default().i32(1, 1).i64(2, 9).i64(3, 9).i64(4, 0x99).end();
    let child = Thrift::default()
        .i64(1, LOW)
        .i64(2, HIGH)
        .i64(3, 0x0b)
        .i64(4, 0x0a)
        .str(5, "reserve")
        .structs(6, vec![follows])
        .i32(7, 1)
        .i64(8, 1_700_000_000_000_000)
        .i64(9, 2_500)
        .structs(
            10,
            vec![
                tag("span.kind").i32(2, 0).str(3, "client").end(),
                tag("error").i32(2, 2).bool(5, true).end(),
                tag("ratio").i32(2, 1).f64(4, 0.25).end(),
                tag("retries").i32(2, 3).i64(6, 3).end(),
                tag("cached").i32(2, 2).bool(5, false).end(),
            ],
        )
        .structs(11, vec![log])
        .end();
    let root = Thrift::default()
        .i64(1, LOW)
        .i64(2, HIGH)
        .i64(3, 0x0a)
        .i64(4, 0)
        .str(5, "GET /stock")
        .i32(7, 1)
        .i64(8, 1_699_999_999_999_000)
        .i64(9, 5_000)
        .structs(
            10,
            vec![
                tag("span.kind").i32(2, 0).str(3, "server").end(),
                tag("otel.status_code").i32(2, 0).str(3, "OK").end(),
            ],
        )
        .end();
    Thrift::default().strct(1, process).structs(2, vec![child, root]).end()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_thrift_and_grpc_map_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, jaeger_http) = start(&dir.path().join("d"), &[]);
    let url = format!("http://{jaeger_http}/api/traces");
    let r = request("POST", &url, &[("content-type", "application/x-thrift")], thrift_batch()).await;
    assert_eq!(r.status, 202, "{}", r.text());

    let spans = fetch(&s, JAEGER_TRACE, &[]).await;
    assert_eq!(spans.len(), 2);
    let (res, _, root) = &spans[0];
    assert_eq!(attr(&res.attributes, "service.name").cloned(), sv("inventory"));
    assert_eq!(attr(&res.attributes, "hostname").cloned(), sv("host-1"));
    assert_eq!(attr(&res.attributes, "cpus"), Some(&Value::IntValue(8)));
    assert_eq!((root.name.as_str(), root.kind, root.status.as_ref().unwrap().code), ("GET /stock", 2, 1));
    assert!(root.parent_span_id.is_empty() && root.attributes.is_empty());
    let (_, _, child) = &spans[1];
    assert_eq!(hex(&child.trace_id), JAEGER_TRACE);
    assert_eq!(hex(&child.span_id), "000000000000000b");
    assert_eq!(hex(&child.parent_span_id), "000000000000000a", "parentSpanId is the parent");
    assert_eq!(child.kind, 3);
    assert_eq!(child.flags, 1);
    assert_eq!(child.status.as_ref().unwrap().code, 2, "error=true is an error status");
    assert_eq!(child.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(child.end_time_unix_nano, 1_700_000_000_002_500_000);
    assert_eq!(attr(&child.attributes, "ratio"), Some(&Value::DoubleValue(0.25)));
    assert_eq!(attr(&child.attributes, "retries"), Some(&Value::IntValue(3)));
    assert_eq!(attr(&child.attributes, "cached"), Some(&Value::BoolValue(false)));
    assert_eq!(attr(&child.attributes, "span.kind"), None);
    assert_eq!(attr(&child.attributes, "error"), None);
    let e = &child.events[0];
    assert_eq!((e.name.as_str(), e.time_unix_nano), ("cache miss", 1_700_000_000_000_500_000));
    assert_eq!(attr(&e.attributes, "key").cloned(), sv("sku-1"));
    let link = &child.links[0];
    assert_eq!(
        (hex(&link.trace_id).as_str(), hex(&link.span_id).as_str()),
        ("00000000000000090000000000000009", "0000000000000099")
    );
    assert_eq!(attr(&link.attributes, "opentracing.ref_type").cloned(), sv("follows_from"));

    // gRPC PostSpans on the OTLP gRPC port.
    let trace = unhex("aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb").unwrap();
    let req = jaeger::PostSpansRequest {
        batch: Some(jaeger::Batch {
            process: Some(jaeger::Process { service_name: "billing".into(), tags: vec![] }),
            spans: vec![jaeger::JSpan {
                trace_id: trace.clone(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 7],
                operation_name: "invoice".into(),
                references: vec![jaeger::SpanRef {
                    trace_id: trace,
                    span_id: vec![0, 0, 0, 0, 0, 0, 0, 6],
                    ref_type: 0,
                }],
                start_time: Some(jaeger::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                duration: Some(ProtoDuration { seconds: 0, nanos: 3_000 }),
                tags: vec![jaeger::JKeyValue {
                    key: "span.kind".into(),
                    v_str: "producer".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }),
    };
    let (status, message) = grpc_post_spans(&s.grpc, req.encode_to_vec().into()).await;
    assert_eq!(status, "0", "{message}");
    let spans = fetch(&s, "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb", &[]).await;
    let (res, _, span) = &spans[0];
    assert_eq!(attr(&res.attributes, "service.name").cloned(), sv("billing"));
    assert_eq!((span.name.as_str(), span.kind, hex(&span.parent_span_id).as_str()), ("invoice", 4, "0000000000000006"));
    assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 3_000);
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    for t in ["jaeger_thrift", "jaeger_grpc"] {
        assert!(
            m.lines().any(|l| l.starts_with("spoor_requests_total") && l.contains(&format!("transport=\"{t}\""))),
            "{m}"
        );
    }
}

/// One PostSpans call; returns (grpc-status, grpc-message).
async fn grpc_post_spans(addr: &str, message: Bytes) -> (String, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let req = hyper::Request::post(format!("http://{addr}{}", jaeger::POST_SPANS_PATH))
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |k: &str| trailers.get(k).or(headers.get(k)).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_reason_and_tenants_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (s, zipkin, jaeger_http) = start(&dir.path().join("d"), &[("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true")]);
    let z = format!("http://{zipkin}/api/v2/spans");
    let j = format!("http://{jaeger_http}/api/traces");
    let org = ("x-scope-orgid", "acme");
    let json = ("content-type", "application/json");
    let thrift = ("content-type", "application/x-thrift");

    let r = request("POST", &z, &[json], ZIPKIN_JSON).await;
    assert_eq!(r.status, 401, "no tenant: {}", r.text());
    assert!(r.text().contains("X-Scope-OrgID"));
    let r = request("POST", &z, &[json, org], "[{\"traceId\": 12").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid Zipkin JSON"), "{}", r.text());
    let r = request("POST", &z, &[json, org], r#"[{"traceId":"nothex","id":"6b221d5bc9e6496c"}]"#).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("[0].traceId"), "{}", r.text());
    let r = request("POST", &z, &[("content-type", "application/x-protobuf"), org], &b"\xff\xff\xff"[..]).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Zipkin protobuf"), "{}", r.text());
    let r = request("POST", &z, &[("content-type", "text/plain"), org], "x").await;
    assert_eq!(r.status, 415);
    let r = request("POST", &z, &[json, org, ("content-encoding", "br")], ZIPKIN_JSON).await;
    assert_eq!(r.status, 400);
    assert_eq!(request("GET", &z, &[org], "").await.status, 405);
    assert_eq!(request("POST", &format!("http://{zipkin}/api/v1/nope"), &[json, org], "[]").await.status, 404);

    let batch = thrift_batch();
    let r = request("POST", &j, &[thrift, org], batch[..batch.len() / 2].to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid Jaeger Thrift") && r.text().contains("truncated"), "{}", r.text());
    let r = request("POST", &j, &[("content-type", "application/json"), org], "{}").await;
    assert_eq!(r.status, 415);
    assert!(r.text().contains("application/x-thrift"));
    let (status, message) = grpc_post_spans(&s.grpc, Bytes::from_static(b"\xff\xff\xff")).await;
    assert_eq!(status, "16", "no tenant on gRPC either: {message}");

    // With a tenant, accepted and readable only under it.
    assert_eq!(request("POST", &z, &[json, org], ZIPKIN_JSON).await.status, 202);
    assert_eq!(request("POST", &j, &[thrift, org], thrift_batch()).await.status, 202);
    assert_eq!(fetch(&s, ZIPKIN_TRACE, &[org]).await.len(), 2);
    assert_eq!(fetch(&s, JAEGER_TRACE, &[org]).await.len(), 2);
    let other =
        request("GET", &s.api_url(&format!("/api/v2/traces/{ZIPKIN_TRACE}")), &[("x-scope-orgid", "other")], "").await;
    assert_eq!(other.status, 404);
    // A span with an all-zero ID is refused alone; the reply says so.
    let zero = r#"[{"traceId":"5af7183fb1d4cf5f","id":"0000000000000000","name":"z"}]"#;
    let r = request("POST", &z, &[json, org], zero).await;
    assert_eq!(r.status, 202);
    assert!(r.text().contains("1 spans rejected"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_receivers_with_the_ingest_role() {
    use sha2::Digest;
    let sha = |t: &str| sha2::Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let yaml = format!(
        "- {{name: shipper, sha256: {}, tenants: [acme], roles: [ingest]}}\n- {{name: viewer, sha256: {}, tenants: [acme], roles: [read]}}\n",
        sha("ship-token"),
        sha("view-token")
    );
    std::fs::write(&tokens, yaml).unwrap();
    let (s, zipkin, jaeger_http) = start(
        &dir.path().join("d"),
        &[
            ("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true"),
            ("SPOOR__AUTH__ENABLED", "true"),
            ("SPOOR__AUTH__TOKENS_FILE", tokens.to_str().unwrap()),
            ("SPOOR__AUTH__AUDIT_LOG", ""),
        ],
    );
    let z = format!("http://{zipkin}/api/v2/spans");
    let j = format!("http://{jaeger_http}/api/traces");
    let json = ("content-type", "application/json");
    let thrift = ("content-type", "application/x-thrift");

    let r = request("POST", &z, &[json], ZIPKIN_JSON).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = request("POST", &z, &[json, ("authorization", "Bearer view-token")], ZIPKIN_JSON).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("ingest"), "{}", r.text());
    let r = request("POST", &j, &[thrift, ("authorization", "Bearer view-token")], thrift_batch()).await;
    assert_eq!(r.status, 403);
    let (status, _) = grpc_post_spans(&s.grpc, Bytes::new()).await;
    assert_eq!(status, "16", "no token on the gRPC port");

    // The token's tenant is the write's tenant.
    let ship = ("authorization", "Bearer ship-token");
    assert_eq!(request("POST", &z, &[json, ship], ZIPKIN_JSON).await.status, 202);
    assert_eq!(request("POST", &j, &[thrift, ship], thrift_batch()).await.status, 202);
    let view = [("authorization", "Bearer view-token"), ("x-scope-orgid", "acme")];
    assert_eq!(fetch(&s, ZIPKIN_TRACE, &view).await.len(), 2);
    assert_eq!(fetch(&s, JAEGER_TRACE, &view).await.len(), 2);
    let m = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(
        m.lines().any(|l| l.starts_with("spoor_auth_refused_requests_total") && l.contains("listener=\"zipkin\"")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_a_retry_hint_and_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, zipkin, jaeger_http) = start(&dir.path().join("d"), &[("SPOOR__LIMITS__MAX_LIVE_TRACES", "1")]);
    let z = format!("http://{zipkin}/api/v2/spans");
    assert_eq!(request("POST", &z, &[("content-type", "application/json")], ZIPKIN_JSON).await.status, 202);
    // A second live trace is over the tenant's limit: 429 with Retry-After, nothing stored.
    let r = request(
        "POST",
        &format!("http://{jaeger_http}/api/traces"),
        &[("content-type", "application/x-thrift")],
        thrift_batch(),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.headers.get("retry-after").is_some());
    assert!(r.text().contains("max_live_traces") || r.text().contains("live-trace limits"), "{}", r.text());
    let gone = request("GET", &s.api_url(&format!("/api/v2/traces/{JAEGER_TRACE}")), &[], "").await;
    assert_eq!(gone.status, 404);
}
