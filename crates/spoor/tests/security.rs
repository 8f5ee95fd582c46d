//! Authentication, authorization and the audit log, against the real binary over loopback
//! (plain TCP here; TLS, mTLS and certificate reload are driven by the Python SDK tests in
//! tests/python/test_security.py, which generate their own CA).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::{Server, json_spans, request};
use sha2::{Digest, Sha256};

const TRACE_A: &str = "0000000000000000000000000000a001";
const TRACE_B: &str = "0000000000000000000000000000b001";
const JSON: (&str, &str) = ("content-type", "application/json");

const TOK_INGEST_A: &str = "ingest-a-7f3c9e1d2b";
const TOK_INGEST_B: &str = "ingest-b-5a8e6c4f10";
const TOK_READ_A: &str = "read-a-c0ffee1234";
const TOK_READ_B: &str = "read-b-deadbeef99";
const TOK_ADMIN: &str = "admin-all-0badf00d77";
const TOK_MASKED_A: &str = "masked-a-5eed1e55";
const EVERY_TOKEN: [&str; 6] = [TOK_INGEST_A, TOK_INGEST_B, TOK_READ_A, TOK_READ_B, TOK_ADMIN, TOK_MASKED_A];

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn tokens_yaml(extra: &str) -> String {
    format!(
        "- {{name: ingest-a, sha256: {}, tenants: [a], roles: [ingest]}}\n\
         - {{name: ingest-b, sha256: {}, tenants: [b], roles: [ingest]}}\n\
         - {{name: read-a, sha256: {}, tenants: [a], roles: [read]}}\n\
         - {{name: read-b, sha256: {}, tenants: [b], roles: [read]}}\n\
         - {{name: ops, sha256: {}, tenants: [\"*\"], roles: [admin, read]}}\n\
         - {{name: masked-a, sha256: {}, tenants: [a], roles: [read], mask: [span.user.email, resource.k8s.namespace.name, \"span.http.request.header.*\"]}}\n{extra}",
        sha(TOK_INGEST_A),
        sha(TOK_INGEST_B),
        sha(TOK_READ_A),
        sha(TOK_READ_B),
        sha(TOK_ADMIN),
        sha(TOK_MASKED_A)
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

struct Secured {
    server: Server,
    tokens: std::path::PathBuf,
    audit: std::path::PathBuf,
}

fn start(dir: &Path) -> Secured {
    let tokens = dir.join("tokens.yaml");
    let audit = dir.join("audit.log");
    std::fs::write(&tokens, tokens_yaml("")).unwrap();
    let server = Server::start(
        &dir.join("d"),
        &[
            ("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true"),
            // What is stored is what was sent: the mask, not the scrubber, must hide the values.
            ("SPOOR__PROCESSORS__SCRUB__ENABLED", "false"),
            ("SPOOR__AUTH__ENABLED", "true"),
            ("SPOOR__AUTH__TOKENS_FILE", tokens.to_str().unwrap()),
            ("SPOOR__AUTH__AUDIT_LOG", audit.to_str().unwrap()),
        ],
    );
    Secured { server, tokens, audit }
}

async fn ingest_http(s: &Server, token: &str, tenant: Option<&str>, trace: &str) -> common::Response {
    let auth = bearer(token);
    let mut headers = vec![JSON, ("authorization", auth.as_str())];
    if let Some(t) = tenant {
        headers.push(("x-scope-orgid", t));
    }
    request("POST", &s.otlp_url("/v1/traces"), &headers, json_spans(trace, &["0000000000000001"])).await
}

async fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> common::Response {
    request("GET", &s.api_url(path), headers, "").await
}

/// One OTLP/gRPC Export over h2c with the given metadata; returns (grpc-status, grpc-message).
async fn grpc_export(addr: &str, metadata: &[(&str, &str)], json: &str) -> (String, String) {
    use http_body_util::{BodyExt, Full};
    use prost::Message;
    let msg = spoor_model::json::decode_export_request(json.as_bytes()).unwrap().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut req = hyper::Request::post(format!("http://{addr}{}", spoor_server::ingest::receive::GRPC_EXPORT_PATH))
        .header("content-type", "application/grpc");
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(Bytes::from(framed))).unwrap()).await.unwrap();
    let headers = resp.headers().clone();
    let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        trailers.get(name).or(headers.get(name)).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    };
    (field("grpc-status"), spoor_server::http::percent_decode(&field("grpc-message"), false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_writes_and_reads_which_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let sec = start(dir.path());
    let s = &sec.server;

    // Ingest: the token names the tenant; no header needed.
    assert_eq!(ingest_http(s, TOK_INGEST_A, None, TRACE_A).await.status, 200);
    assert_eq!(ingest_http(s, TOK_INGEST_B, Some("b"), TRACE_B).await.status, 200);
    // A header naming another tenant than the token's: 403, nothing stored there.
    let r = ingest_http(s, TOK_INGEST_A, Some("b"), "0000000000000000000000000000a0ff").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("token \"ingest-a\" may not use tenant \"b\""));
    // No, unknown or wrongly-roled credentials.
    let r = request("POST", &s.otlp_url("/v1/traces"), &[JSON], json_spans(TRACE_A, &["0000000000000002"])).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["message"].as_str().unwrap().contains("missing credentials"));
    assert!(r.headers.get_all("www-authenticate").iter().any(|v| v.to_str().unwrap().starts_with("Bearer")));
    let r = ingest_http(s, "not-a-token-xyz", None, TRACE_A).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["message"].as_str().unwrap().contains("unknown token") && !r.text().contains("not-a-token-xyz"));
    let r = ingest_http(s, TOK_READ_A, None, TRACE_A).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["message"].as_str().unwrap().contains("does not have the ingest role"), "{}", r.text());

    // gRPC: the same rules, as UNAUTHENTICATED (16) and PERMISSION_DENIED (7).
    let body = json_spans("0000000000000000000000000000a002", &["0000000000000001"]);
    let ingest_a = bearer(TOK_INGEST_A);
    assert_eq!(grpc_export(&s.grpc, &[("authorization", &ingest_a)], &body).await.0, "0");
    let (code, msg) = grpc_export(&s.grpc, &[], &body).await;
    assert_eq!((code.as_str(), msg.contains("missing credentials")), ("16", true), "{msg}");
    let (code, msg) = grpc_export(&s.grpc, &[("authorization", "Bearer guess-123")], &body).await;
    assert_eq!((code.as_str(), msg.contains("guess-123")), ("16", false), "{msg}");
    let read_a = bearer(TOK_READ_A);
    let (code, msg) = grpc_export(&s.grpc, &[("authorization", &read_a)], &body).await;
    assert_eq!(code, "7", "{msg}");
    let (code, _) = grpc_export(&s.grpc, &[("authorization", &ingest_a), ("x-scope-orgid", "b")], &body).await;
    assert_eq!(code, "7");

    // Reads: each read token sees its own tenant only.
    let read_b = bearer(TOK_READ_B);
    let a_trace = format!("/api/v2/traces/{TRACE_A}");
    assert_eq!(get(s, &a_trace, &[("authorization", &read_a)]).await.status, 200);
    assert_eq!(get(s, &a_trace, &[("authorization", &read_b)]).await.status, 404);
    let r = get(s, &a_trace, &[("authorization", &read_b), ("x-scope-orgid", "a")]).await;
    assert_eq!(r.status, 403);
    let r = get(s, &a_trace, &[("authorization", &read_a), ("x-scope-orgid", "a|b")]).await;
    assert_eq!(r.status, 403, "a federation partly outside the token is refused");
    assert!(r.text().contains("may not use tenant \"b\""));
    let search = "/api/search?q=%7B%7D&start=1699999000&end=1700001000";
    let found = get(s, search, &[("authorization", &read_b)]).await.json();
    let ids: Vec<&str> = found["traces"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap()).collect();
    assert!(!ids.iter().any(|id| id.contains("a001")), "B's search finds nothing of A: {ids:?}");
    assert!(!ids.is_empty(), "B's search finds B's trace");
    let tags = get(s, "/api/v2/search/tag/resource.service.name/values", &[("authorization", &read_b)]).await;
    assert_eq!(tags.status, 200);
    // Basic auth with the token as password; the admin token reads every tenant but must name one.
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("grafana:{TOK_READ_A}")));
    assert_eq!(get(s, &a_trace, &[("authorization", &basic)]).await.status, 200);
    let admin = bearer(TOK_ADMIN);
    assert_eq!(get(s, &a_trace, &[("authorization", &admin)]).await.status, 400);
    assert_eq!(get(s, &a_trace, &[("authorization", &admin), ("x-scope-orgid", "b|a")]).await.status, 200);
    assert_eq!(get(s, search, &[]).await.status, 401);

    // Open and admin routes; refusals are counted by listener and code.
    assert_eq!(get(s, "/ready", &[]).await.status, 200);
    let metrics = get(s, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    let refused = |listener: &str, code: &str| {
        metrics.text().lines().any(|l| {
            l.starts_with("spoor_auth_refused_requests_total{")
                && l.contains(&format!("listener=\"{listener}\""))
                && l.contains(&format!("code=\"{code}\""))
                && !l.ends_with(" 0")
        })
    };
    assert!(refused("otlp_http", "unauthenticated") && refused("otlp_grpc", "forbidden"), "{}", metrics.text());
    assert!(refused("api", "forbidden"), "{}", metrics.text());
    assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 401);
    let r = request("POST", &s.api_url("/flush"), &[("authorization", &read_a)], "").await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("admin role"), "{}", r.text());
    assert_eq!(request("POST", &s.api_url("/flush"), &[("authorization", &admin)], "").await.status, 204);
    // After the flush the isolation holds for blocks too.
    assert_eq!(get(s, &a_trace, &[("authorization", &read_b)]).await.status, 404);
    assert_eq!(get(s, &a_trace, &[("authorization", &read_a)]).await.status, 200);
    let r = get(s, "/metrics/generated", &[("authorization", &read_a)]).await;
    assert_eq!(r.status, 403, "a one-tenant token cannot scrape every tenant");
    assert_eq!(get(s, "/metrics/generated?tenant=a", &[("authorization", &read_a)]).await.status, 200);

    // The audit log: a JSON line per query and admin action, refusals included, no token.
    let audit = std::fs::read_to_string(&sec.audit).unwrap();
    for t in EVERY_TOKEN {
        assert!(!audit.contains(t), "audit log holds a token");
    }
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let searched = lines
        .iter()
        .find(|l| l["who"] == "read-b" && l["route"] == "/api/search")
        .unwrap_or_else(|| panic!("no search line in {audit}"));
    assert_eq!((searched["tenant"].as_str(), searched["query"].as_str()), (Some("b"), Some("{}")));
    assert_eq!((searched["status"].as_u64(), searched["results"].as_u64()), (Some(200), Some(ids.len() as u64)));
    assert!(searched["time"].as_str().unwrap().ends_with('Z'));
    assert!(lines.iter().any(|l| l["who"] == "ops" && l["route"] == "/flush" && l["status"] == 204));
    assert!(lines.iter().any(|l| l["who"] == "read-a" && l["route"] == "/flush" && l["status"] == 403));
    assert!(lines.iter().any(|l| l["who"].is_null() && l["status"] == 401));
    assert!(!lines.iter().any(|l| l["route"] == "/v1/traces"), "ingest is not audited line by line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_file_changes_apply_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sec = start(dir.path());
    let s = &sec.server;
    let newcomer = "new-token-4242";
    let auth = bearer(newcomer);
    let path = "/api/search?q=%7B%7D";
    assert_eq!(get(s, path, &[("authorization", &auth)]).await.status, 401);
    let entry = format!("- {{name: newcomer, sha256: {}, tenants: [a], roles: [read]}}\n", sha(newcomer));
    std::fs::write(&sec.tokens, tokens_yaml(&entry)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(s, path, &[("authorization", &auth)]).await.status != 200 {
        assert!(Instant::now() < deadline, "new token not accepted:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken file is logged and the tokens in force stay.
    std::fs::write(&sec.tokens, "- {name: broken").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.log().contains("cannot reload auth tokens") {
        assert!(Instant::now() < deadline, "bad tokens file not reported:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(s, path, &[("authorization", &auth)]).await.status, 200);
    // Revoking: the token stops working.
    std::fs::write(&sec.tokens, tokens_yaml("")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(s, path, &[("authorization", &auth)]).await.status != 401 {
        assert!(Instant::now() < deadline, "revoked token still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `spoor serve` with the given extra variables must exit non-zero saying `expect`.
fn refuses_to_start(dir: &Path, env: &[(&str, &str)], expect: &[&str]) {
    // A data dir (and so a log) per attempt: each message must come from its own start.
    let n = std::fs::read_dir(dir).unwrap().count();
    let mut s = Server::unstarted(&dir.join(format!("d{n}")));
    s.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.spawn();
    let mut child = s.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "spoor did not refuse {env:?}:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = s.log();
    assert!(!status.success(), "{env:?}: {log}");
    for e in expect {
        assert!(log.contains(e), "{env:?}: expected {e:?} in:\n{log}");
    }
}

#[test]
fn bad_security_settings_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let masked = d.join("masked.yaml");
    std::fs::write(&masked, tokens_yaml("- {name: m, sha256: 00000000000000000000000000000000000000000000000000000000000000ff, tenants: [a], roles: [read], spans: \"{ span.public = true } | count() > 1\"}\n")).unwrap();
    let on = ("SPOOR__AUTH__ENABLED", "true");
    refuses_to_start(
        d,
        &[on, ("SPOOR__AUTH__TOKENS_FILE", masked.to_str().unwrap())],
        &["spans: must be one spanset filter", "masked.yaml"],
    );
    let bad_mask = d.join("bad-mask.yaml");
    std::fs::write(&bad_mask, tokens_yaml("- {name: n, sha256: 00000000000000000000000000000000000000000000000000000000000000fe, tenants: [a], roles: [read], mask: [email]}\n")).unwrap();
    refuses_to_start(
        d,
        &[on, ("SPOOR__AUTH__TOKENS_FILE", bad_mask.to_str().unwrap())],
        &["mask entry \"email\"", "bad-mask.yaml"],
    );
    let missing = d.join("nope.yaml");
    refuses_to_start(
        d,
        &[on, ("SPOOR__AUTH__TOKENS_FILE", missing.to_str().unwrap())],
        &["cannot read auth.tokens_file", "nope.yaml"],
    );
    refuses_to_start(d, &[on], &["auth.tokens_file is not set"]);
    let cert = d.join("server-cert.pem");
    std::fs::write(&cert, "garbage").unwrap();
    let tls = [
        ("SPOOR__SERVER__TLS__CERT_FILE", cert.to_str().unwrap()),
        ("SPOOR__SERVER__TLS__KEY_FILE", "/nonexistent/key.pem"),
    ];
    refuses_to_start(d, &tls, &["cannot read TLS key_file /nonexistent/key.pem"]);
    let key = d.join("server-key.pem");
    std::fs::write(&key, "garbage").unwrap();
    let tls = [
        ("SPOOR__SERVER__TLS__CERT_FILE", cert.to_str().unwrap()),
        ("SPOOR__SERVER__TLS__KEY_FILE", key.to_str().unwrap()),
    ];
    refuses_to_start(d, &tls, &["no PEM certificate", "server-cert.pem"]);
    let only_cert = [("SPOOR__SERVER__OTLP_GRPC_TLS__CERT_FILE", cert.to_str().unwrap())];
    refuses_to_start(d, &only_cert, &["server.otlp_grpc_tls", "key_file"]);
    refuses_to_start(
        d,
        &[
            ("SPOOR__SERVER__TLS__CERT_FILE", "/x.pem"),
            ("SPOOR__SERVER__TLS__KEY_FILE", "/y.pem"),
            ("SPOOR__SERVER__TLS__MIN_VERSION", "1.0"),
        ],
        &["TLS 1.0 is not supported"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_wait_for_the_body() {
    use http_body_util::StreamBody;
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let sec = start(dir.path());
    let s = &sec.server;

    // HTTP/1: a 100 MB body announced, 5 bytes sent, nothing more: the 401 still comes.
    let mut tcp = std::net::TcpStream::connect(&s.http).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000000\r\n\r\nhello"
    )
    .unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");

    // gRPC: the message stream stays open and is never finished; UNAUTHENTICATED comes anyway.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(1);
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(&[0, 5, 0, 0, 0])))).await.unwrap();
    let body = StreamBody::new(tokio_stream_from(rx));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<StreamBody<_>>();
    let req = hyper::Request::post(format!("http://{}{}", s.grpc, spoor_server::ingest::receive::GRPC_EXPORT_PATH))
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req)).await.expect("answered").unwrap();
    assert_eq!(resp.headers().get("grpc-status").unwrap(), "16");
    drop(tx);
}

/// An mpsc receiver as a stream of body frames.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

const SECRETS: [&str; 3] = ["alice@secret.example", "ns-secret-7", "hdr-secret-9"];

fn masked_trace_json(trace: &str) -> String {
    let kv = |k: &str, v: &str| format!(r#"{{"key":"{k}","value":{{"stringValue":"{v}"}}}}"#);
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{},{}]}},"scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"00000000000000a1","name":"checkout","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000","attributes":[{},{},{}]}}]}}]}}]}}"#,
        kv("service.name", "svc-m"),
        kv("k8s.namespace.name", "ns-secret-7"),
        kv("user.email", "alice@secret.example"),
        kv("http.request.header.authorization", "hdr-secret-9"),
        kv("plain", "visible-1"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_keys_never_leave_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let sec = start(dir.path());
    let s = &sec.server;
    let trace = "0000000000000000000000000000c0de";
    let ingest = bearer(TOK_INGEST_A);
    let r =
        request("POST", &s.otlp_url("/v1/traces"), &[JSON, ("authorization", &ingest)], masked_trace_json(trace)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let masked = bearer(TOK_MASKED_A);
    let plain = bearer(TOK_READ_A);
    let leaks = |body: &[u8]| SECRETS.iter().filter(|v| body.windows(v.len()).any(|w| w == v.as_bytes())).count();

    for round in ["live", "blocks"] {
        for path in [format!("/api/traces/{trace}"), format!("/api/v2/traces/{trace}")] {
            for accept in ["application/json", "application/protobuf"] {
                let r = get(s, &path, &[("authorization", &masked), ("accept", accept)]).await;
                assert_eq!(r.status, 200, "{round} {path} {accept}: {}", r.text());
                assert_eq!(leaks(&r.body), 0, "{round} {path} {accept} leaks: {}", r.text());
                assert!(r.text().contains("[masked]") && r.text().contains("visible-1"), "{round} {path}");
                // The same read without a mask shows every value: the check above can fail.
                let r = get(s, &path, &[("authorization", &plain), ("accept", accept)]).await;
                assert_eq!(leaks(&r.body), 3, "{round} {path} {accept}");
            }
        }
        let r = get(s, "/api/search?q=%7B%7D&start=1699999000&end=1700001000", &[("authorization", &masked)]).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("c0de") && leaks(&r.body) == 0, "{}", r.text());
        let r = get(s, "/api/v2/search/tag/span.plain/values", &[("authorization", &masked)]).await;
        assert!(r.status == 200 && r.text().contains("visible-1"), "{}", r.text());
        let r = get(s, "/api/v2/search/tag/resource.service.name/values", &[("authorization", &masked)]).await;
        assert!(r.status == 200 && r.text().contains("svc-m"), "{}", r.text());
        assert_eq!(
            request("POST", &s.api_url("/flush"), &[("authorization", &bearer(TOK_ADMIN))], "").await.status,
            204
        );
    }

    // Nothing can probe a masked value: every query naming a masked key is refused up front.
    for path in [
        "/api/search?q=%7B%20span.user.email%20%3D%20%22alice%40secret.example%22%20%7D",
        "/api/search?q=%7B%20.user.email%20!%3D%20nil%20%7D",
        "/api/search?q=%7B%7D%20%7C%20select(span.user.email)",
        "/api/search?q=%7B%20resource.k8s.namespace.name%20%3D~%20%22ns.*%22%20%7D",
        "/api/search?q=%7B%20span.http.request.header.authorization%20!%3D%20nil%20%7D",
        "/api/search?q=%7B%7D&q=%7B%20span.user.email%20!%3D%20nil%20%7D",
        "/api/search?tags=user.email%3Dalice",
        "/api/search?user.email=alice",
        "/api/metrics/query_range?q=%7B%7D%20%7C%20rate()%20by%20(span.user.email)",
        "/api/v2/search/tag/span.user.email/values",
        "/api/search/tag/user.email/values",
        "/api/v2/search/tag/span.plain/values?q=%7B%20span.user.email%20%3D%20%22alice%40secret.example%22%20%7D",
        "/api/v2/search/tags?q=%7B%20span.user.email%20%3D%20%22a%22%20%7D",
        "/metrics/generated?tenant=a",
    ] {
        let r = get(s, path, &[("authorization", &masked)]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(leaks(&r.body), 0);
        // The unmasked token may ask the same (so the 403 is the mask's doing).
        if !path.starts_with("/metrics") {
            assert_ne!(get(s, path, &[("authorization", &plain)]).await.status, 403, "{path}");
        }
    }
}
