//! Collector-grade processing in `spoor serve`, over loopback: the default scrubbing policy
//! keeps secrets out of the WAL, blocks, query results and logs; tail sampling keeps what the
//! ADR policy says and keeps the same traces across a crash; per-tenant rate limits and the
//! memory limiter refuse with retry hints; overrides reload while the server runs.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

const QUIET: &[(&str, &str)] =
    &[("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"), ("SPOOR__COMPACTION__ENABLED", "false")];

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn kv(key: &str, s: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": s } })
}

fn export(service: &str, spans: Vec<Value>) -> String {
    json!({ "resourceSpans": [{
        "resource": { "attributes": [kv("service.name", service)] },
        "scopeSpans": [{ "scope": { "name": "test" }, "spans": spans }],
    }]})
    .to_string()
}

fn span(trace: &str, id: &str, start: u64, ms: u64, status: u8, attrs: Vec<Value>) -> Value {
    json!({
        "traceId": trace, "spanId": id, "name": "GET /checkout", "kind": 2,
        "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + ms * 1_000_000).to_string(),
        "status": { "code": status }, "attributes": attrs,
    })
}

async fn post(s: &Server, body: String, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request("POST", &s.otlp_url("/v1/traces"), &h, body).await
}

/// Every file under `dir`, concatenated (WAL segments are uncompressed protobuf).
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend(b);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

const SECRETS: &[&str] = &["xyz-bearer-secret", "hunter2-pass", "4111111111111111", "alice@example.com", "'blue-42'"];

fn secret_attrs() -> Vec<Value> {
    vec![
        kv("http.request.header.authorization", "Bearer xyz-bearer-secret"),
        kv("db.password", "hunter2-pass"),
        kv("payment.note", "card 4111111111111111 charged"),
        kv("user.contact", "mail alice@example.com today"),
        kv("db.statement", "SELECT * FROM orders WHERE colour = 'blue-42' AND id = 7"),
        kv("http.route", "/checkout"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_keeps_secrets_off_disk_out_of_queries_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = QUIET.to_vec();
    env.push(("RUST_LOG", "debug"));
    let s = Server::start(&data, &env);
    let trace = "5b8efff798038103d269b633813fc60c";
    let r = post(&s, export("shop", vec![span(trace, "0000000000000001", now_ns(), 5, 0, secret_attrs())]), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Acknowledged means in the WAL: scrubbed before it got there.
    let wal = all_bytes(&data.join("wal"));
    assert!(contains(&wal, "/checkout"), "the WAL holds the span");
    for secret in SECRETS {
        assert!(!contains(&wal, secret), "{secret} reached the WAL");
    }
    let live = request("GET", &s.api_url(&format!("/api/traces/{trace}")), &[("accept", "application/json")], "").await;
    assert_eq!(request("POST", &s.api_url("/flush"), &[], "").await.status, 204);
    let stored =
        request("GET", &s.api_url(&format!("/api/traces/{trace}")), &[("accept", "application/json")], "").await;
    for r in [&live, &stored] {
        assert_eq!(r.status, 200);
        let text = r.text();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} came back from a query: {text}");
        }
        assert!(text.contains("SELECT * FROM orders WHERE colour = ? AND id = ?"), "{text}");
        assert!(text.contains("card **** charged"), "{text}");
        assert!(!text.contains("http.request.header.authorization"), "{text}");
    }
    for secret in SECRETS {
        assert!(!s.log().contains(secret), "{secret} reached the debug log");
    }
    let metrics = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(
        metrics.contains(
            "spoor_processed_attributes_total{tenant=\"single-tenant\",processor=\"scrub\",action=\"deleted\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrubbing_can_be_turned_off_and_collector_processors_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spoor.yaml");
    // A collector's processors block, pasted as is.
    std::fs::write(
        &config,
        r#"
processors:
  scrub:
    enabled: false
  attributes/tidy:
    actions:
      - key: db.password
        action: delete
      - key: http.route
        action: hash
  redaction:
    allow_all_keys: true
    blocked_values: ["4[0-9]{12}(?:[0-9]{3})?"]
    summary: info
"#,
    )
    .unwrap();
    let mut s = Server::unstarted(&dir.path().join("data"));
    s.config = Some(config.clone());
    s.env = QUIET.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.spawn();
    s.wait_ready();
    let trace = "0102030405060708090a0b0c0d0e0f10";
    assert_eq!(
        post(&s, export("shop", vec![span(trace, "0000000000000002", now_ns(), 5, 0, secret_attrs())]), &[])
            .await
            .status,
        200
    );
    let text =
        request("GET", &s.api_url(&format!("/api/traces/{trace}")), &[("accept", "application/json")], "").await.text();
    assert!(!text.contains("hunter2-pass") && !text.contains("4111111111111111"), "{text}");
    assert!(text.contains("card **** charged") && text.contains("redaction.masked.count"), "{text}");
    // The default policy is off: the e-mail stays; the route is a SHA-256.
    assert!(text.contains("alice@example.com"), "{text}");
    assert!(text.contains("6bb1bd5a5a9d4b5c2ea5e1f6ed1b3e7f") || !text.contains("\"/checkout\""), "{text}");
    drop(s);

    // A mistake names the key and the line.
    std::fs::write(&config, "processors:\n  attributes:\n    actions:\n      - key: x\n        action: extract\n")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("pattern") && err.contains("line"), "{err}");
}

/// The shipped ADR policy: every error, every trace over 1 s, 10 % of the rest.
const ADR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/adr-sampling.yaml");

async fn search_ids(s: &Server, q: &str) -> std::collections::BTreeSet<String> {
    let q: String = q
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let url = s.api_url(&format!("/api/search?limit=100000&q={q}"));
    let v = request("GET", &url, &[], "").await.json();
    v["traces"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adr_sampling_keeps_errors_slow_and_a_tenth_and_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::unstarted(&dir.path().join("data"));
    s.config = Some(ADR.into());
    s.env = QUIET.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.env.push(("SPOOR__PROCESSORS__TAIL_SAMPLING__DECISION_WAIT".into(), "1s".into()));
    s.spawn();
    s.wait_ready();

    let (errors, slow, normal) = (50usize, 50usize, 1500usize);
    let base = now_ns() - 60_000_000_000;
    let mut spans = Vec::new();
    for i in 0..errors + slow + normal {
        let trace = format!(
            "{:016x}{:016x}",
            0x5eed_0000_0000_0000u64 + i as u64 * 7919,
            (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        let (status, ms) = if i < errors {
            (2, 10)
        } else if i < errors + slow {
            (0, 1500)
        } else {
            (0, 20)
        };
        // Two spans per trace from two requests: the decision waits for both.
        spans.push((trace.clone(), span(&trace, "00000000000000a1", base + i as u64 * 1000, ms, status, vec![])));
        spans.push((trace.clone(), span(&trace, "00000000000000a2", base + i as u64 * 1000, 1, 0, vec![])));
    }
    for chunk in spans.chunks(400) {
        let body = export("shop", chunk.iter().map(|(_, s)| s.clone()).collect());
        assert_eq!(post(&s, body, &[]).await.status, 200);
    }
    // Nothing is searchable until its decision; then the verdicts land.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let all = search_ids(&s, "{}").await;
    let errs = search_ids(&s, "{ status = error }").await;
    let slows = search_ids(&s, "{ duration > 1s }").await;
    assert_eq!(errs.len(), errors, "every error trace is kept");
    assert_eq!(slows.len(), slow, "every slow trace is kept");
    let kept_normal = all.len() - errors - slow;
    // Binomial(1500, 0.1): mean 150, sd 11.6; ±5 sd.
    assert!((92..=208).contains(&kept_normal), "kept {kept_normal} of {normal} normal traces");
    let metrics = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(metrics.contains("spoor_sampling_traces_total{policy=\"errors\",decision=\"sampled\"}"), "{metrics}");

    // kill -9 and replay: the decisions are in the WAL, so the same traces are kept.
    s.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(search_ids(&s, "{}").await, all);
    // A late span of a kept trace is stored at once; of a dropped one, dropped.
    let kept = errs.iter().next().unwrap().clone();
    let kept = format!("{kept:0>32}");
    assert_eq!(
        post(&s, export("shop", vec![span(&kept, "00000000000000a3", base, 1, 0, vec![])]), &[]).await.status,
        200
    );
    let t = request("GET", &s.api_url(&format!("/api/traces/{kept}")), &[("accept", "application/json")], "").await;
    assert!(t.text().contains("AAAAAAAAAKM="), "late span of a sampled trace is stored: {}", t.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_rate_limits_refuse_with_hints_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = dir.path().join("overrides.yaml");
    std::fs::write(
        &overrides,
        "overrides:\n  noisy:\n    ingestion:\n      rate_limit_spans: 100\n      burst_size_spans: 100\n",
    )
    .unwrap();
    let mut env = QUIET.to_vec();
    let path = overrides.to_str().unwrap().to_owned();
    env.extend([
        ("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true"),
        ("SPOOR__LIMITS__OVERRIDES_FILE", path.as_str()),
        ("SPOOR__LIMITS__OVERRIDES_POLL_SECS", "1"),
    ]);
    let s = Server::start(&dir.path().join("data"), &env);
    let ids: Vec<String> = (1..=60).map(|i| format!("{i:016x}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let body = json_spans("0000000000000000000000000000beef", &refs);
    assert_eq!(post(&s, body.clone(), &[("x-scope-orgid", "noisy")]).await.status, 200);
    let r = post(&s, body.clone(), &[("x-scope-orgid", "noisy")]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.headers["retry-after"], "5");
    assert!(r.text().contains("rate_limited"), "{}", r.text());
    // gRPC says RESOURCE_EXHAUSTED with a RetryInfo of the same 5 s...
    assert_eq!(grpc_export(&s, Some("noisy"), &body).await, (8, Some(5)));
    // ...and without one for a request larger than the burst: retrying cannot help.
    let ids: Vec<String> = (1..=101).map(|i| format!("{i:016x}")).collect();
    let huge = json_spans("0000000000000000000000000000beef", &ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(grpc_export(&s, Some("noisy"), &huge).await, (8, None));
    // Another tenant is not affected.
    for _ in 0..5 {
        assert_eq!(post(&s, body.clone(), &[("x-scope-orgid", "quiet")]).await.status, 200);
    }
    // Raised while running.
    std::fs::write(
        &overrides,
        "overrides:\n  noisy:\n    ingestion:\n      rate_limit_spans: 100000\n      burst_size_spans: 100000\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = post(&s, body.clone(), &[("x-scope-orgid", "noisy")]).await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "overrides were not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    // Refusals are counted (the first one, plus any while waiting for the reload).
    assert!(metrics.contains("spoor_spans_refused_total{tenant=\"noisy\",reason=\"rate_limited\"}"), "{metrics}");
    assert!(!metrics.contains("spoor_spans_refused_total{tenant=\"quiet\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limiter_refuses_with_unavailable_and_retry_hints() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spoor.yaml");
    // A hard limit below what the server itself takes: everything is refused.
    std::fs::write(
        &config,
        "processors:\n  memory_limiter:\n    check_interval: 100ms\n    limit_mib: 4\n    spike_limit_mib: 1\n",
    )
    .unwrap();
    let mut s = Server::unstarted(&dir.path().join("data"));
    s.config = Some(config);
    s.spawn();
    s.wait_ready();
    let r = post(&s, json_spans("0000000000000000000000000000beef", &["0000000000000001"]), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.text().contains("memory_limited"), "{}", r.text());
    let (code, retry) =
        grpc_export(&s, None, &json_spans("0000000000000000000000000000beef", &["0000000000000001"])).await;
    assert_eq!(code, 14, "UNAVAILABLE");
    assert!(retry.is_some(), "with RetryInfo");
}

/// Sends an OTLP/JSON body as protobuf over gRPC; returns (gRPC code, RetryInfo seconds).
async fn grpc_export(s: &Server, tenant: Option<&str>, json: &str) -> (i32, Option<u64>) {
    use prost::Message;
    use spoor_agent::client::{OtlpClient, Outcome, Transport};
    let req = spoor_model::json::decode_export_request(json.as_bytes()).unwrap();
    let client = OtlpClient::new(Transport::Grpc, &format!("http://{}", s.grpc), tenant.map(str::to_owned));
    match client.export(req.encode_to_vec().into()).await.expect("gRPC call") {
        Outcome::Accepted { .. } => (0, None),
        Outcome::Refused { code, retry_after_secs, .. } => (code, retry_after_secs),
    }
}
