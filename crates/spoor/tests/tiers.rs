//! Tiered retention through the real binary: traces sent over OTLP/HTTP with old timestamps,
//! flushed into blocks placed by their own time, then one on-demand compaction cycle moves each
//! into its tier (full, sampled, rollups only, gone).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

/// Flushes only when asked, compacts only when asked.
const QUIET: &[(&str, &str)] = &[
    ("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"),
    ("SPOOR__COMPACTION__ENABLED", "false"),
    ("SPOOR__STORAGE__BLOCKLIST_POLL_SECS", "1"),
];

const DAY: u64 = 86_400 * 1_000_000_000;
const MS: u64 = 1_000_000;

/// A trace as the test sends it: a root and one child, both of service `api`.
struct Sent {
    id: String,
    start: u64,
    root_ns: u64,
    error: bool,
}

/// IDs that look like real ones (random bits everywhere), the same on every run.
fn trace_id(group: u64, i: u64) -> String {
    let mut x = group.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    format!("{:016x}{:016x}", next(), next())
}

fn body(traces: &[Sent]) -> String {
    let mut spans = Vec::new();
    for t in traces {
        let status = if t.error { r#","status":{"code":2}"# } else { "" };
        spans.push(format!(
            r#"{{"traceId":"{}","spanId":"00000000000000a1","name":"GET /","kind":2,"startTimeUnixNano":"{}","endTimeUnixNano":"{}"}}"#,
            t.id,
            t.start,
            t.start + t.root_ns
        ));
        spans.push(format!(
            r#"{{"traceId":"{}","spanId":"00000000000000b2","parentSpanId":"00000000000000a1","name":"SELECT","kind":3,"startTimeUnixNano":"{}","endTimeUnixNano":"{}"{status}}}"#,
            t.id,
            t.start + MS,
            t.start + 2 * MS
        ));
    }
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"api"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// `n` traces starting `age` ago, a second apart: `errors` of them with an error span, `slow` of
/// them with a 10 s root, the rest with roots of 10 ms and a little.
fn group(group: u64, age: u64, n: u64, errors: u64, slow: u64) -> Vec<Sent> {
    let base = now_ns() - age;
    (0..n)
        .map(|i| Sent {
            id: trace_id(group, i),
            start: base + i * 1_000_000_000,
            root_ns: if i >= errors && i < errors + slow { 10_000 * MS } else { 10 * MS + i * 1000 },
            error: i < errors,
        })
        .collect()
}

async fn send(s: &Server, traces: &[Sent]) {
    let r = request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body(traces)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204, "flush: {}", r.text());
}

async fn compact(s: &Server) {
    let r = request("POST", &s.api_url("/api/admin/compact"), &[], "").await;
    assert_eq!(r.status, 204, "compact: {}", r.text());
}

/// 2 when the trace is there whole, 0 when it is gone; anything else fails the test.
async fn spans_of(s: &Server, id: &str) -> usize {
    let got = fetch_span_ids(s, id).await;
    assert!(got.is_empty() || got.len() == 2, "trace {id} is partial or doubled: {got:?}");
    got.len()
}

async fn metric(s: &Server, name_and_labels: &str) -> f64 {
    let text = request("GET", &s.api_url("/metrics"), &[], "").await.text();
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

async fn traces(s: &Server, what: &str, reason: &str) -> f64 {
    metric(s, &format!("spoor_tier_traces_{what}_total{{tenant=\"single-tenant\",reason=\"{reason}\"}}")).await
}

/// A metrics query's samples summed per series (keyed by the series' label values), over
/// `[start, end]` (unix ns) in steps of an hour.
async fn counts(s: &Server, query: &str, (start, end): (u64, u64)) -> Result<BTreeMap<String, f64>, String> {
    let q: String = query
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let url = s.api_url(&format!(
        "/api/metrics/query_range?q={q}&start={}&end={}&step=1h",
        start / 1_000_000_000,
        end / 1_000_000_000
    ));
    let r = request("GET", &url, &[], "").await;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.text()));
    }
    let mut out = BTreeMap::new();
    for series in r.json()["series"].as_array().unwrap() {
        let labels: Vec<String> = series["labels"].as_array().unwrap().iter().map(|l| label(&l["value"])).collect();
        let sum: f64 = series["samples"].as_array().unwrap().iter().filter_map(|v| v["value"].as_f64()).sum();
        *out.entry(labels.join(",")).or_default() += sum;
    }
    Ok(out)
}

fn label(v: &serde_json::Value) -> String {
    v["stringValue"].as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// What the metrics queries of the test answer: by service and by status over the 40-day
/// data, by service across the 2- and 10-day data, a rate over the 40-day data (as counts).
async fn answers(s: &Server, forty: (u64, u64), recent: (u64, u64)) -> Vec<BTreeMap<String, f64>> {
    let mut out = Vec::new();
    for (query, range) in [
        ("{ } | count_over_time() by (resource.service.name)", forty),
        ("{ } | count_over_time() by (status)", forty),
        ("{ } | count_over_time() by (resource.service.name)", recent),
        ("{ } | count_over_time() by (name, kind)", recent),
        ("{ } | quantile_over_time(duration, .5, .99) by (resource.service.name)", recent),
        ("{ } | histogram_over_time(duration) by (status)", forty),
    ] {
        out.push(counts(s, query, range).await.unwrap_or_else(|e| panic!("{query}: {e}")));
    }
    let rate = counts(s, "{ } | rate() by (resource.service.name)", forty).await.unwrap();
    out.push(rate.into_iter().map(|(k, v)| (k, (v * 3600.0).round())).collect());
    out
}

fn blocks_json(data: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["blocks", "list", "--json", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_traces_land_in_their_tier_after_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, QUIET);

    // One block per age: 2 days (full), 10 days (sampled), 40 days (rollups only), 100 days (gone).
    let two = group(2, 2 * DAY, 50, 5, 0);
    let ten = group(10, 10 * DAY, 440, 20, 20);
    let forty = group(40, 40 * DAY, 30, 3, 0);
    let hundred = group(100, 100 * DAY, 30, 3, 0);
    for g in [&two, &ten, &forty, &hundred] {
        send(&s, g).await;
    }
    let before = blocks_json(&data);
    assert_eq!(before.as_array().unwrap().len(), 4);
    for b in before.as_array().unwrap() {
        // Placed by their own time: every block's range is its group's, not the arrival's.
        let end = b["meta"]["end_unix_nano"].as_u64().unwrap();
        assert!(end < now_ns() - DAY, "a block of old spans ends at arrival time: {b}");
        assert!(b["meta"].get("tier").is_none(), "flushed blocks are full (the default, not written)");
    }
    for t in two.iter().chain(&ten).chain(&forty).chain(&hundred) {
        assert_eq!(spans_of(&s, &t.id).await, 2, "every old trace is accepted and readable");
    }

    let forty_range = (forty[0].start - 3600 * 1_000_000_000, forty[29].start + 3600 * 1_000_000_000);
    let recent_range = (ten[0].start - 3600 * 1_000_000_000, two[49].start + 3600 * 1_000_000_000);
    let before = answers(&s, forty_range, recent_range).await;
    let api = |n: f64| BTreeMap::from([("api".to_owned(), n)]);
    assert_eq!(before[0], api(60.0), "raw spans, before any tiering");
    assert_eq!(before[1], BTreeMap::from([("error".to_owned(), 3.0), ("unset".to_owned(), 57.0)]));
    assert_eq!(before[2], api(980.0));
    assert_eq!(before[6], api(60.0));
    assert!(!before[4].is_empty() && !before[5].is_empty());
    let old = (hundred[0].start - 3600 * 1_000_000_000, hundred[29].start + 3600 * 1_000_000_000);
    assert_eq!(counts(&s, "{ } | count_over_time()", old).await.unwrap().values().sum::<f64>(), 60.0);

    let end_ms = (ten[439].start + 3_600_000_000_000) / 1_000_000;
    let url = s.api_url(&format!("/jaeger/api/dependencies?endTs={end_ms}&lookback={}", 3 * 3_600_000));
    assert_eq!(request("GET", &url, &[], "").await.status, 200, "dependencies over raw spans");

    compact(&s).await;
    for round in 0..2 {
        // Metrics answer the same from rollups where traces were sampled or dropped, across the
        // boundary with the full tier too.
        assert_eq!(answers(&s, forty_range, recent_range).await, before, "round {round}");
        assert!(counts(&s, "{ } | count_over_time()", old).await.unwrap().is_empty(), "the 100-day data is gone");
        // Dependencies need every span: refused where traces were sampled, not undercounted.
        let end_ms = (ten[439].start + 3_600_000_000_000) / 1_000_000;
        let url = s.api_url(&format!("/jaeger/api/dependencies?endTs={end_ms}&lookback={}", 3 * 3_600_000));
        let r = request("GET", &url, &[], "").await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("full retention tier"), "{}", r.text());
        // A search that reaches the sampled tier says so; one within the full tier does not.
        for (range, sampled) in [
            ((ten[0].start - 3_600_000_000_000, ten[439].start + 1), 1),
            ((two[0].start - 3_600_000_000_000, two[49].start + 1), 0),
        ] {
            let url = s.api_url(&format!(
                "/api/search?q=%7B%7D&start={}&end={}",
                range.0 / 1_000_000_000,
                range.1 / 1_000_000_000
            ));
            let r = request("GET", &url, &[], "").await;
            assert_eq!(r.status, 200, "{}", r.text());
            let body = r.json();
            assert_eq!(body["metrics"]["sampledTierBlocks"].as_u64().unwrap_or(0), sampled, "{body}");
        }
        for (query, why) in [
            ("{ status = error } | count_over_time()", "filter on"),
            ("{ } | count_over_time() by (span.http.route)", "group by"),
            ("{ } | quantile_over_time(span.size, .9)", "of duration only"),
            ("{ } | sum_over_time(duration)", "of duration only"),
        ] {
            let e = counts(&s, query, forty_range).await.expect_err(query);
            assert!(e.starts_with("400") && e.contains(why), "{query}: {e}");
        }

        // 2 days: whole.
        for t in &two {
            assert_eq!(spans_of(&s, &t.id).await, 2, "round {round}: a 2-day trace");
        }
        // 10 days: every error and every slow trace whole, about 10 % of the rest.
        let mut kept_rest = 0;
        for t in &ten {
            let n = spans_of(&s, &t.id).await;
            if t.error || t.root_ns >= 10_000 * MS {
                assert_eq!(n, 2, "round {round}: an error or slow 10-day trace was dropped");
            } else if n == 2 {
                kept_rest += 1;
            }
        }
        assert!((20..=65).contains(&kept_rest), "round {round}: {kept_rest} of the 400 others kept, not about 10 %");
        // 40 and 100 days: no traces.
        for t in forty.iter().chain(&hundred) {
            assert_eq!(spans_of(&s, &t.id).await, 0, "round {round}: a 40- or 100-day trace survived");
        }
        let after = blocks_json(&data);
        let tiers: Vec<(&str, u64)> = after
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["meta"]["tier"].as_str().unwrap_or("full"), b["meta"]["spans"].as_u64().unwrap()))
            .collect();
        assert_eq!(tiers.len(), 2, "round {round}: the 2-day block and the sampled one: {tiers:?}");
        assert!(tiers.contains(&("full", 100)), "{tiers:?}");
        let sampled = tiers.iter().find(|(t, _)| *t == "sampled").expect("a sampled block");
        assert_eq!(
            sampled.1 as usize,
            2 * (kept_rest + 40),
            "round {round}: the sampled block holds the kept traces whole"
        );

        // A second cycle (and a restart) changes nothing: counters are per process.
        if round == 0 {
            // Rollups name an exemplar trace per row, and the sampled tier keeps those too (the
            // first rule that matched counts a trace).
            let exemplar = traces(&s, "kept", "exemplar").await;
            let (error, slow, ratio) = (
                traces(&s, "kept", "error").await,
                traces(&s, "kept", "slow").await,
                traces(&s, "kept", "ratio").await,
            );
            assert!(exemplar > 0.0 && error + exemplar >= 20.0 && slow > 0.0 && ratio > 0.0);
            assert_eq!(exemplar + error + slow + ratio, (40 + kept_rest) as f64);
            assert_eq!(traces(&s, "dropped", "sampled_out").await, (400 - kept_rest) as f64);
            assert_eq!(traces(&s, "dropped", "aggregated").await, 30.0);
            assert_eq!(traces(&s, "dropped", "expired").await, 30.0);
            assert_eq!(
                metric(&s, "spoor_tier_spans{tenant=\"single-tenant\",tier=\"sampled\"}").await,
                sampled.1 as f64
            );
            assert_eq!(metric(&s, "spoor_tier_spans{tenant=\"single-tenant\",tier=\"full\"}").await, 100.0);
            s.restart();
            compact(&s).await;
        } else {
            assert_eq!(traces(&s, "dropped", "sampled_out").await, 0.0, "nothing is sampled twice");
        }
    }
    let table =
        Command::new(env!("CARGO_BIN_EXE_spoor")).args(["blocks", "list", "--data-dir"]).arg(&data).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("TIER") && table.contains("sampled") && table.contains("full"), "{table}");
    // Two rollups: the 10-day window's (880 spans) and the 40-day one's (60).
    assert!(
        table.contains("single-tenant: 2 rollups (aggregated tier)") && table.contains("940 spans counted"),
        "{table}"
    );
}

/// The spans of `traces` as two exports: every root, then every child, so each trace is split
/// across two blocks of one window.
async fn send_split(s: &Server, traces: &[Sent]) {
    let all = body(traces);
    let parsed: serde_json::Value = serde_json::from_str(&all).unwrap();
    for parents in [false, true] {
        let mut half = parsed.clone();
        let spans = half["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array_mut().unwrap();
        spans.retain(|sp| sp.get("parentSpanId").is_some() == parents);
        let r =
            request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], half.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = request("POST", &s.api_url("/flush"), &[], "").await;
        assert_eq!(r.status, 204, "flush: {}", r.text());
    }
}

/// Kept trace IDs (each checked whole), and the metrics answers over the two ranges.
async fn outcome(s: &Server, ten: &[Sent], ranges: [(u64, u64); 2]) -> (Vec<String>, Vec<BTreeMap<String, f64>>) {
    let mut kept = Vec::new();
    for t in ten {
        if spans_of(s, &t.id).await == 2 {
            kept.push(t.id.clone());
        } else {
            assert!(!t.error && t.root_ns < 10_000 * MS, "an error or slow trace was lost");
        }
    }
    let mut answers = Vec::new();
    for range in ranges {
        for q in ["{ } | count_over_time() by (resource.service.name)", "{ } | count_over_time() by (status)"] {
            answers.push(counts(s, q, range).await.unwrap_or_else(|e| panic!("{q}: {e}")));
        }
    }
    (kept, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_step_of_a_tier_rewrite_loses_and_doubles_nothing() {
    let ten = group(10, 10 * DAY, 200, 10, 10);
    let forty = group(40, 40 * DAY, 20, 2, 0);
    let hour = 3600 * 1_000_000_000;
    let ranges = [(ten[0].start - hour, ten[199].start + hour), (forty[0].start - hour, forty[19].start + hour)];
    let env = [QUIET, &[("SPOOR__COMPACTION__ORPHAN_GRACE_SECS", "0")]].concat();
    // The oldest window goes first: with the 40-day data there, the crash lands in the rewrite
    // that keeps nothing; without it, in the one that keeps traces.
    for with_forty in [false, true] {
        let mut reference = None;
        for point in [
            "",
            "tier.rollup_before_meta",
            "tier.after_rollup",
            "tier.before_meta",
            "tier.after_meta",
            "tier.after_first_delete",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let mut s = Server::start(&data, &env);
            send_split(&s, &ten).await;
            if with_forty {
                send_split(&s, &forty).await;
            }
            let forty_spans = if with_forty { BTreeMap::from([("api".to_owned(), 40.0)]) } else { BTreeMap::new() };
            if !point.is_empty() {
                s.kill9();
                s.env.push(("SPOOR_FAILPOINT".into(), point.into()));
                s.spawn();
                s.wait_ready();
                let r = try_request("POST", &s.api_url("/api/admin/compact")).await;
                assert!(r.is_err(), "{point}: the process should have died mid-rewrite, got {:?}", r.map(|r| r.status));
                let status = s.child.as_mut().unwrap().wait().unwrap();
                assert!(!status.success(), "{point}: should have aborted");
                s.child = None;
                s.env.pop();
                s.spawn();
                s.wait_ready();
                // Whatever the crash left, every span is counted once before the rewrite is redone.
                let (_, answers) = outcome(&s, &ten, ranges).await;
                assert_eq!(answers[0], BTreeMap::from([("api".to_owned(), 400.0)]), "{point}");
                assert_eq!(answers[2], forty_spans, "{point}");
            }
            compact(&s).await;
            // A second cycle removes what the crash left (replaced inputs, orphan files) and
            // changes nothing else.
            compact(&s).await;
            let got = outcome(&s, &ten, ranges).await;
            assert_eq!(got.1[0], BTreeMap::from([("api".to_owned(), 400.0)]), "{point}");
            assert_eq!(got.1[1], BTreeMap::from([("error".to_owned(), 10.0), ("unset".to_owned(), 390.0)]), "{point}");
            assert_eq!(got.1[2], forty_spans, "{point}");
            for t in &forty {
                assert_eq!(spans_of(&s, &t.id).await, 0, "{point}: a 40-day trace survived");
            }
            let blocks = blocks_json(&data);
            let tiers: Vec<&str> =
                blocks.as_array().unwrap().iter().map(|b| b["meta"]["tier"].as_str().unwrap_or("full")).collect();
            assert_eq!(tiers, ["sampled"], "{point}: one sampled block, nothing replaced left: {blocks}");
            let rollups = std::fs::read_dir(data.join("blocks/single-tenant/rollups")).unwrap().count();
            assert_eq!(rollups, 1 + usize::from(with_forty), "{point}: one rollup per window, no leftovers");
            match &reference {
                None => reference = Some(got),
                // The redone rewrite decides exactly as an uninterrupted one.
                Some(r) => assert_eq!(&got, r, "{point}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_backdates_its_traces_for_tier_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, QUIET);
    let out = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["loadgen", "--endpoint", &format!("http://{}", s.http), "--transport", "http"])
        .args(["--spans", "500", "--duration", "60", "--backdate", "240h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204);
    let blocks = blocks_json(&data);
    let meta = &blocks[0]["meta"];
    let (start, end) = (meta["start_unix_nano"].as_u64().unwrap(), meta["end_unix_nano"].as_u64().unwrap());
    let spans = meta["spans"].as_u64().unwrap();
    assert!(end < now_ns() - 239 * 3600 * 1_000_000_000 && start > now_ns() - 241 * 3600 * 1_000_000_000, "{meta}");
    compact(&s).await;
    let blocks = blocks_json(&data);
    assert_eq!(blocks[0]["meta"]["tier"], "sampled", "{blocks}");
    // loadgen's traces call from service to service: the rollup has service-graph edges.
    let rollups: Vec<_> = std::fs::read_dir(data.join("blocks/single-tenant/rollups")).unwrap().flatten().collect();
    assert_eq!(rollups.len(), 1);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rollups[0].path().join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["spans"].as_u64(), Some(spans), "the rollup counts every span of the block: {meta}");
    assert!(meta["edge_rows"].as_u64().unwrap() > 0, "{meta}");
    assert!(rollups[0].path().join("edges.parquet").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_are_per_tenant_in_the_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let overrides = dir.path().join("overrides.yaml");
    // "long" keeps every span for 1000 hours; "short" uses the defaults; "single" has the
    // single-tier policy of the main config's `retention.tenants`.
    std::fs::write(&overrides, "overrides:\n  long:\n    retention:\n      tiers:\n        full: 1000h\n        sampled: 1500h\n        aggregated: 2000h\n").unwrap();
    let config = dir.path().join("spoor.yaml");
    std::fs::write(&config, "retention:\n  tenants:\n    single: 48\n").unwrap();
    let mut s = Server::unstarted(&data);
    s.env = [QUIET, &[("SPOOR__TENANCY__MULTITENANCY_ENABLED", "true")]]
        .concat()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.env.push(("SPOOR__LIMITS__OVERRIDES_FILE".into(), overrides.display().to_string()));
    s.config = Some(config);
    s.spawn();
    s.wait_ready();
    let traces = group(10, 10 * DAY, 40, 2, 0);
    for tenant in ["long", "short", "single"] {
        let headers = [("content-type", "application/json"), ("x-scope-orgid", tenant)];
        let r = request("POST", &s.otlp_url("/v1/traces"), &headers, body(&traces)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204);
    compact(&s).await;
    let mut tiers = BTreeMap::new();
    for b in blocks_json(&data).as_array().unwrap() {
        let tier = b["meta"]["tier"].as_str().unwrap_or("full").to_owned();
        tiers.insert(b["meta"]["tenant"].as_str().unwrap().to_owned(), (tier, b["meta"]["spans"].as_u64().unwrap()));
    }
    assert_eq!(tiers["long"], ("full".to_owned(), 80), "{tiers:?}");
    assert_eq!(tiers["short"].0, "sampled", "{tiers:?}");
    assert!(tiers["short"].1 < 80 && tiers["short"].1 >= 4, "{tiers:?}");
    assert!(!tiers.contains_key("single"), "single-tier: deleted whole at 48 hours: {tiers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_bound_how_old_accepted_spans_may_be() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[QUIET, &[("SPOOR__INGEST__MAX_SPAN_AGE_HOURS", "720")]].concat());
    let ten = group(10, 10 * DAY, 5, 0, 0);
    let forty = group(40, 40 * DAY, 5, 0, 0);
    let both: Vec<Sent> = ten.into_iter().chain(forty).collect();
    let r = request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body(&both)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reply = r.json();
    assert_eq!(reply["partialSuccess"]["rejectedSpans"].to_string().trim_matches('"'), "10", "{reply}");
    assert!(reply["partialSuccess"]["errorMessage"].as_str().unwrap().contains("max_span_age_hours"), "{reply}");
    for (i, t) in both.iter().enumerate() {
        assert_eq!(spans_of(&s, &t.id).await, if i < 5 { 2 } else { 0 }, "trace {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_work_with_encryption_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("master.key");
    std::fs::write(&key, "7".repeat(64)).unwrap();
    let env = [QUIET, &[("SPOOR__STORAGE__ENCRYPTION__KEY_FILE", key.to_str().unwrap())]].concat();
    let s = Server::start(&data, &env);
    let ten = group(10, 10 * DAY, 100, 5, 5);
    let forty = group(40, 40 * DAY, 10, 1, 0);
    send(&s, &ten).await;
    send(&s, &forty).await;
    compact(&s).await;
    for t in ten.iter().filter(|t| t.error || t.root_ns >= 10_000 * MS) {
        assert_eq!(spans_of(&s, &t.id).await, 2);
    }
    let hour = 3_600_000_000_000;
    let range = (forty[0].start - hour, forty[9].start + hour);
    let got = counts(&s, "{ } | count_over_time() by (status)", range).await.unwrap();
    assert_eq!(got, BTreeMap::from([("error".to_owned(), 1.0), ("unset".to_owned(), 19.0)]));
    // Nothing in the rollups' files is plaintext.
    for entry in std::fs::read_dir(data.join("blocks/single-tenant/rollups")).unwrap().flatten() {
        let bytes = std::fs::read(entry.path().join("meta.json")).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("spoor-rollup-1"), "a rollup meta in plaintext");
    }
}

/// A pipeline trace, a push (root) and a deploy span; with `dora`, the deploy span carries the
/// attributes that make it a deployment in the DORA store.
fn pipeline_body(id: &str, start: u64, dora: bool) -> String {
    let attrs = if dora {
        r#","attributes":[{"key":"cicd.pipeline.task.type","value":{"stringValue":"deploy"}},{"key":"deployment.environment.name","value":{"stringValue":"production"}}]"#
    } else {
        ""
    };
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"jenkins"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{id}","spanId":"00000000000000a1","name":"push","kind":1,"startTimeUnixNano":"{start}","endTimeUnixNano":"{}"}},{{"traceId":"{id}","spanId":"00000000000000b2","parentSpanId":"00000000000000a1","name":"deploy","kind":1,"startTimeUnixNano":"{}","endTimeUnixNano":"{}"{attrs}}}]}}]}}]}}"#,
        start + 60_000 * MS,
        start + 1_000 * MS,
        start + 50_000 * MS
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_traces_outlive_the_sampled_tiers_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::unstarted(&data);
    // No ratio, no error or slow rule: only the keep set (rollup exemplars, DORA) keeps a trace.
    let rules = [
        ("SPOOR__RETENTION__SAMPLED_KEEP__RATIO", "0"),
        ("SPOOR__RETENTION__SAMPLED_KEEP__ERRORS", "false"),
        ("SPOOR__RETENTION__SAMPLED_KEEP__SLOW", "off"),
    ];
    s.env = [QUIET, &rules].concat().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.spawn();
    s.wait_ready();
    // Ten deployments and ten look-alike pipelines (same service, names and kinds) in the same
    // seconds, ten days ago: a rollup row keeps one exemplar per minute, DORA every deployment.
    let start = now_ns() - 10 * DAY;
    let (mut deploys, mut lookalikes) = (Vec::new(), Vec::new());
    for i in 0..10 {
        for (dora, ids) in [(true, &mut deploys), (false, &mut lookalikes)] {
            let id = trace_id(if dora { 31 } else { 32 }, i);
            let body = pipeline_body(&id, start + i * 1_000 * MS, dora);
            let r = request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            ids.push(id);
        }
    }
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204);
    let dora = request("GET", &s.api_url("/api/dora?environment=production&since=30d"), &[], "").await;
    assert!(dora.text().contains("\"deployments\":10"), "{}", dora.text());
    compact(&s).await;
    let tiers: Vec<String> = blocks_json(&data)
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["meta"]["tier"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(tiers, ["sampled"], "one sampled block");
    for id in &deploys {
        assert_eq!(spans_of(&s, id).await, 2, "deployment {id} is kept whole\n{}", s.log());
    }
    let mut kept = 0;
    for id in &lookalikes {
        kept += spans_of(&s, id).await / 2;
    }
    // At most an exemplar per (row, minute): two rows, the ten seconds within two minutes.
    assert!(kept <= 4, "{kept} look-alike pipelines kept: only exemplars should be");
}
