//! The metrics generator through the real binary: OTLP/HTTP in, `/metrics/generated` out in
//! both scrape formats, tenants kept apart, per-tenant series budgets from the overrides file
//! (reloaded while running), spans counted before tail sampling, and Spoor's own counters.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, request};
use serde_json::{Value, json};

const QUIET: &[(&str, &str)] = &[("SPOOR__COMPACTION__ENABLED", "false")];

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// One SERVER span per name, of service `svc`, ending now; `error` marks every one failed.
fn body(svc: &str, trace: u32, names: &[&str], error: bool) -> String {
    let end = now_ns();
    let spans: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({
                "traceId": format!("{trace:032x}"), "spanId": format!("{:016x}", i + 1), "name": n, "kind": 2,
                "startTimeUnixNano": (end - 3_000_000).to_string(), "endTimeUnixNano": end.to_string(),
                "status": {"code": if error { 2 } else { 0 }},
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
        "scopeSpans": [{"spans": spans}],
    }]})
    .to_string()
}

async fn send(s: &Server, tenant: Option<&str>, body: String) {
    let mut h = vec![("content-type", "application/json")];
    if let Some(t) = tenant {
        h.push(("x-scope-orgid", t));
    }
    let r = request("POST", &s.otlp_url("/v1/traces"), &h, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn scrape(s: &Server, query: &str, accept: &str) -> (String, String) {
    let r = request("GET", &s.api_url(&format!("/metrics/generated{query}")), &[("accept", accept)], "").await;
    assert_eq!(r.status, 200);
    (r.headers["content-type"].to_str().unwrap().to_owned(), r.text())
}

/// The value of the one sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert!(lines.len() <= 1, "{prefix} matches {lines:?}");
    lines.first().map(|l| l[prefix.len()..].trim().split(' ').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_formats_tenants_and_series_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = dir.path().join("overrides.yaml");
    std::fs::write(&overrides, "overrides:\n  small:\n    metrics_generator:\n      max_active_series: 19\n").unwrap();
    let path = overrides.to_str().unwrap().to_owned();
    let mut env = QUIET.to_vec();
    env.extend([
        ("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true"),
        ("SPOOR__LIMITS__OVERRIDES_FILE", path.as_str()),
        ("SPOOR__LIMITS__OVERRIDES_POLL_SECS", "1"),
    ]);
    let s = Server::start(&dir.path().join("data"), &env);
    send(&s, Some("team-a"), body("cart", 1, &["GET /cart", "GET /cart", "POST /pay"], false)).await;
    send(&s, Some("team-a"), body("cart", 2, &["POST /pay"], true)).await;
    send(&s, Some("small"), body("shop", 3, &["a", "b", "c"], false)).await;

    // Prometheus text: no exemplars, counters typed by their full name, tenants labelled.
    let (ct, text) = scrape(&s, "", "text/plain").await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(text.contains("# TYPE traces_spanmetrics_calls_total counter\n"), "{text}");
    let calls = |svc: &str, name: &str, status: &str, tenant: &str| {
        format!(
            "traces_spanmetrics_calls_total{{service=\"{svc}\",span_kind=\"SPAN_KIND_SERVER\",span_name=\"{name}\",status_code=\"{status}\",tenant=\"{tenant}\"}}"
        )
    };
    assert_eq!(sample(&text, &calls("cart", "GET /cart", "STATUS_CODE_UNSET", "team-a")), Some(2.0));
    assert_eq!(sample(&text, &calls("cart", "POST /pay", "STATUS_CODE_UNSET", "team-a")), Some(1.0));
    assert_eq!(sample(&text, &calls("cart", "POST /pay", "STATUS_CODE_ERROR", "team-a")), Some(1.0));
    assert!(!text.contains(" # {"), "exemplars only in OpenMetrics");
    // The root SERVER spans were called by a user.
    let user_edge = "traces_service_graph_request_total{client=\"user\",connection_type=\"virtual_node\",server=\"cart\",tenant=\"team-a\"}";
    assert_eq!(sample(&text, user_edge), Some(4.0));
    // The small tenant's budget (19 series: one label set) folded "b" and "c" into overflow.
    assert_eq!(sample(&text, &calls("shop", "a", "STATUS_CODE_UNSET", "small")), Some(1.0));
    assert_eq!(sample(&text, "traces_spanmetrics_calls_total{metric_overflow=\"true\",tenant=\"small\"}"), Some(2.0));

    // OpenMetrics: the counter family without _total, exemplars on buckets, # EOF.
    let (ct, om) = scrape(&s, "?tenant=team-a", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5").await;
    assert!(ct.starts_with("application/openmetrics-text; version=1.0.0"), "{ct}");
    assert!(om.contains("# TYPE traces_spanmetrics_calls counter\n"));
    assert!(om.ends_with("# EOF\n"));
    assert!(!om.contains("tenant=\"small\""), "?tenant= limits the scrape to one tenant");
    let exemplar = om
        .lines()
        .find(|l| {
            l.starts_with("traces_spanmetrics_latency_bucket{")
                && l.contains("span_name=\"POST /pay\"")
                && l.contains(" # {")
        })
        .unwrap_or_else(|| panic!("no exemplar in\n{om}"));
    assert!(
        exemplar.contains(&format!("traceID=\"{:032x}\"", 1)) || exemplar.contains(&format!("traceID=\"{:032x}\"", 2)),
        "{exemplar}"
    );

    // Spoor's own counters.
    let own = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(own.contains("spoor_generator_spans_total{tenant=\"team-a\"} 4"), "{own}");
    // Two span-metrics observations, and the three user -> shop requests whose edge (24 series)
    // did not fit either.
    assert!(own.contains("spoor_generator_series_limited_total{tenant=\"small\"} 5"), "{own}");

    // The budget lifted while running: a new name gets its own series.
    std::fs::write(&overrides, "overrides:\n  small:\n    metrics_generator:\n      max_active_series: 1000\n")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        send(&s, Some("small"), body("shop", 4, &["d"], false)).await;
        let (_, text) = scrape(&s, "?tenant=small", "text/plain").await;
        if sample(&text, &calls("shop", "d", "STATUS_CODE_UNSET", "small")).is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new budget never applied:\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_counted_before_tail_sampling_and_generator_can_be_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spoor.yaml");
    // Keep only errors: the metrics must still count every span.
    std::fs::write(
        &config,
        "processors:\n  tail_sampling:\n    decision_wait: 1s\n    policies:\n      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n",
    )
    .unwrap();
    let mut s = Server::unstarted(&dir.path().join("data"));
    s.config = Some(config);
    s.env = QUIET.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.spawn();
    s.wait_ready();
    for trace in 1..=10 {
        send(&s, None, body("api", trace, &["GET /x"], trace == 10)).await;
    }
    let (_, text) = scrape(&s, "", "text/plain").await;
    let prefix = "traces_spanmetrics_calls_total{service=\"api\",span_kind=\"SPAN_KIND_SERVER\",span_name=\"GET /x\",status_code=";
    assert_eq!(sample(&text, &format!("{prefix}\"STATUS_CODE_UNSET\"}}")), Some(9.0), "{text}");
    assert_eq!(sample(&text, &format!("{prefix}\"STATUS_CODE_ERROR\"}}")), Some(1.0));
    // Single-tenant: no tenant label.
    assert!(!text.contains("tenant="));
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let mut env = QUIET.to_vec();
    env.push(("SPOOR__METRICS_GENERATOR__PROCESSORS", ""));
    let s = Server::start(&dir.path().join("data"), &env);
    send(&s, None, body("api", 1, &["GET /x"], false)).await;
    let (_, text) = scrape(&s, "", "text/plain").await;
    assert_eq!(text, "", "the generator is off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_label_values_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = QUIET.to_vec();
    env.push(("SPOOR__METRICS_GENERATOR__REGISTRY__MAX_CARDINALITY_PER_LABEL", "2"));
    let s = Server::start(&dir.path().join("data"), &env);
    send(&s, None, body("users", 1, &["GET /u/1", "GET /u/2", "GET /u/3", "GET /u/4", "GET /u/5"], false)).await;
    let (_, text) = scrape(&s, "", "text/plain").await;
    let prefix = "traces_spanmetrics_calls_total{service=\"users\",span_kind=\"SPAN_KIND_SERVER\",span_name=";
    let names: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(names.len(), 3, "{text}");
    assert_eq!(
        sample(&text, &format!("{prefix}\"__cardinality_overflow__\",status_code=\"STATUS_CODE_UNSET\"}}")),
        Some(3.0)
    );
    let own = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    assert!(own.contains("spoor_generator_label_values_limited_total{tenant=\"single-tenant\"} 3"), "{own}");
}
