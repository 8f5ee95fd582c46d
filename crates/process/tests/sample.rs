//! Tail sampling: the conformance checklist of `specs/collector.md` §7.3 (items 1–21; 22 needs
//! OTTL, which Spoor refuses), the probabilistic vectors, eviction, caches, WAL replay and a
//! never-panics property.

use bytes::Bytes;
use prost::Message;
use spoor_model::otlp::{
    AnyValue, Event, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status, any_value::Value,
};
use spoor_model::{Fragment, TraceId};
use spoor_process::Error;
use spoor_process::sample::{Decision, Offer, PolicyConfig, PolicyKind, Sampler, StatusCodeConfig, TailSamplingConfig};

const T: &str = "tenant";
const MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Building traces

fn tid(n: u64) -> TraceId {
    let mut b = [0u8; 16];
    b[0] = 0xab;
    b[8..].copy_from_slice(&n.to_be_bytes());
    TraceId(b)
}

/// A span of `trace` from `start_ms` to `end_ms`.
fn span(trace: TraceId, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: trace.0.to_vec(),
        span_id: vec![7; 8],
        name: "op".into(),
        start_time_unix_nano: 1_700_000_000_000 * MS + start_ms * MS,
        end_time_unix_nano: 1_700_000_000_000 * MS + end_ms * MS,
        ..Default::default()
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

fn sv(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn with_attr(mut sp: Span, key: &str, value: Value) -> Span {
    sp.attributes.push(kv(key, value));
    sp
}

fn with_status(mut sp: Span, code: i32) -> Span {
    sp.status = Some(Status { message: String::new(), code });
    sp
}

fn fragment(trace: TraceId, resource: Vec<KeyValue>, spans: Vec<Span>) -> Fragment {
    let rs = ResourceSpans {
        resource: Some(Resource { attributes: resource, dropped_attributes_count: 0 }),
        scope_spans: vec![ScopeSpans { scope: None, spans: spans.clone(), schema_url: String::new() }],
        schema_url: String::new(),
    };
    Fragment { trace_id: trace, spans: spans.len() as u32, bytes: Bytes::from(rs.encode_to_vec()) }
}

/// One fragment holding `spans`.
fn trace_of(trace: TraceId, spans: Vec<Span>) -> Fragment {
    fragment(trace, vec![], spans)
}

// ---------------------------------------------------------------------------------------------
// Building samplers

fn config(yaml: &str) -> TailSamplingConfig {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// A sampler deciding after 1 s, with these `policies:` list items (YAML, one per line).
fn sampler(policies: &str) -> Sampler {
    sampler_with("", policies)
}

fn sampler_with(settings: &str, policies: &str) -> Sampler {
    let yaml = format!("decision_wait: 1s\n{settings}\npolicies:\n{policies}");
    Sampler::new(&config(&yaml)).unwrap()
}

/// Offers `fragments` (one trace) at `now` and returns its decision, made at `now + 1 s`.
fn decide_at(s: &mut Sampler, now: u64, fragments: Vec<Fragment>) -> Decision {
    for f in fragments {
        assert_eq!(s.offer(now, T, f, 1), Offer::Buffered);
    }
    let mut d = s.tick(now + 1000);
    assert_eq!(d.len(), 1, "{d:?}");
    d.remove(0)
}

fn sampled(s: &mut Sampler, fragments: Vec<Fragment>) -> bool {
    decide_at(s, 0, fragments).sampled
}

/// Spans in the decision's fragments.
fn spans_out(d: &Decision) -> u64 {
    d.fragments.iter().map(|(f, _)| f.spans as u64).sum()
}

// ---------------------------------------------------------------------------------------------
// §7.3 checklist

#[test]
fn c01_status_code_error_keeps_the_whole_trace_once() {
    let mut s = sampler("  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}");
    let t = tid(1);
    let ok: Vec<Span> = (0..50).map(|i| with_status(span(t, i, i + 1), 1)).collect();
    s.offer(0, T, trace_of(t, ok[..25].to_vec()), 1);
    s.offer(100, T, trace_of(t, vec![with_status(span(t, 0, 1), 2)]), 2);
    s.offer(200, T, trace_of(t, ok[25..].to_vec()), 3);
    assert!(s.tick(999).is_empty(), "nothing before decision_wait");
    let d = s.tick(1000);
    assert_eq!(d.len(), 1);
    assert!(d[0].sampled);
    assert_eq!(d[0].policy.as_deref(), Some("errors"));
    assert_eq!(spans_out(&d[0]), 51);
    assert_eq!(d[0].spans, 51);
    assert_eq!(d[0].fragments.iter().map(|(_, tok)| *tok).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(s.tick(5000).is_empty(), "decided once");

    let t = tid(2);
    let ok: Vec<Span> = (0..50).map(|i| with_status(span(t, i, i + 1), 1)).collect();
    let d = decide_at(&mut s, 10_000, vec![trace_of(t, ok)]);
    assert!(!d.sampled);
    assert!(d.fragments.is_empty());
    assert_eq!(d.policy, None);
    assert_eq!(s.stats().spans_sampled, 51);
    assert_eq!(s.stats().spans_not_sampled, 50);
    assert_eq!(s.bytes_in_memory(), 0);
}

#[test]
fn c02_latency_lower_bound_is_inclusive_without_upper() {
    let mut s = sampler("  - {name: slow, type: latency, latency: {threshold_ms: 5000}}");
    let t = tid(1);
    assert!(sampled(&mut s, vec![trace_of(t, vec![span(t, 0, 1000)]), trace_of(t, vec![span(t, 4500, 5000)])]));
    let t = tid(2);
    let mut short = span(t, 4500, 5000);
    short.end_time_unix_nano -= MS; // 4.999 s
    assert!(!sampled(&mut s, vec![trace_of(t, vec![span(t, 0, 1000), short])]));
    // Sub-millisecond remainders are truncated: 4999.9 ms is 4999 ms.
    let t = tid(3);
    let mut almost = span(t, 0, 5000);
    almost.end_time_unix_nano -= 100_000;
    assert!(!sampled(&mut s, vec![trace_of(t, vec![almost])]));
}

#[test]
fn c03_latency_lower_bound_is_exclusive_with_upper() {
    let mut s = sampler("  - {name: band, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}}");
    for (i, (ms, expect)) in [(5000, false), (5001, true), (10_000, true), (10_001, false)].into_iter().enumerate() {
        let t = tid(i as u64);
        assert_eq!(sampled(&mut s, vec![trace_of(t, vec![span(t, 0, ms)])]), expect, "{ms} ms");
    }
}

#[test]
fn c04_latency_ignores_gaps() {
    let mut s = sampler("  - {name: slow, type: latency, latency: {threshold_ms: 9000}}");
    let t = tid(1);
    assert!(sampled(&mut s, vec![trace_of(t, vec![span(t, 0, 1000)]), trace_of(t, vec![span(t, 9000, 10_000)])]));
}

/// SplitMix64, for reproducible "random" trace IDs.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_id(state: &mut u64) -> TraceId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&splitmix(state).to_le_bytes());
    b[8..].copy_from_slice(&splitmix(state).to_le_bytes());
    TraceId(b)
}

#[test]
fn c05_probabilistic_share_and_consistency() {
    let yaml = "  - {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 10}}";
    let mut a = sampler_with("num_traces: 200000", yaml);
    let mut state = 42;
    let ids: Vec<TraceId> = (0..100_000).map(|_| random_id(&mut state)).collect();
    for id in &ids {
        a.offer(0, T, trace_of(*id, vec![span(*id, 0, 1)]), 0);
    }
    let decisions = a.tick(1000);
    assert_eq!(decisions.len(), 100_000);
    let share = decisions.iter().filter(|d| d.sampled).count() as f64 / 1000.0;
    assert!((9.5..=10.5).contains(&share), "{share} %");

    // Another instance, another time, another order: the same answers.
    let mut b = sampler(yaml);
    for (i, d) in decisions.iter().rev().take(2000).enumerate() {
        let id = d.trace_id;
        let again = decide_at(&mut b, 50_000 + 10_000 * i as u64, vec![trace_of(id, vec![span(id, 0, 1)])]);
        assert_eq!(again.sampled, d.sampled);
    }
}

fn hex_id(hex: &str) -> TraceId {
    TraceId::parse_api(hex).unwrap()
}

fn probabilistic(pct: &str, salt: &str) -> Sampler {
    sampler(&format!("  - {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: {pct}{salt}}}}}"))
}

#[test]
fn c06_probabilistic_vectors() {
    let one = hex_id("0102030405060708090a0b0c0d0e0f10"); // hash ratio 0.8586
    let two = hex_id("5b8efff798038103d269b633813fc60c"); // hash ratio 0.5857
    for (id, pct, expect) in [(one, "85", false), (one, "86", true), (two, "59", true), (two, "58", false)] {
        for salt in ["", ", hash_salt: \"\"", ", hash_salt: default-hash-seed"] {
            let mut s = probabilistic(pct, salt);
            assert_eq!(sampled(&mut s, vec![trace_of(id, vec![span(id, 0, 1)])]), expect, "{id:?} at {pct}{salt}");
        }
    }
    // Another salt gives other answers for some IDs, and 100 / 0 are all / none.
    let mut state = 7;
    let ids: Vec<TraceId> = (0..200).map(|_| random_id(&mut state)).collect();
    let run = |pct: &str, salt: &str| -> Vec<bool> {
        let mut s = probabilistic(pct, salt);
        ids.iter().map(|id| sampled(&mut s, vec![trace_of(*id, vec![span(*id, 0, 1)])])).collect()
    };
    assert_ne!(run("50", ""), run("50", ", hash_salt: other"));
    assert!(run("100", "").into_iter().all(|x| x));
    assert!(run("0", "").into_iter().all(|x| !x));
}

#[test]
fn c07_string_attribute_exact() {
    let mut s = sampler("  - {name: k, type: string_attribute, string_attribute: {key: k, values: [a, b, \"\"]}}");
    let t = tid(1);
    assert!(sampled(&mut s, vec![trace_of(t, vec![span(t, 0, 1), with_attr(span(t, 0, 1), "k", sv("b"))])]));
    let t = tid(2);
    assert!(sampled(&mut s, vec![fragment(t, vec![kv("k", sv("a"))], vec![span(t, 0, 1)])]));
    let t = tid(3);
    let mut ev = span(t, 0, 1);
    ev.events.push(Event { name: "e".into(), attributes: vec![kv("k", sv("a"))], ..Default::default() });
    assert!(!sampled(&mut s, vec![trace_of(t, vec![ev])]), "event attributes are not looked at");
    let t = tid(4);
    assert!(!sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv(""))])]));
    let t = tid(5);
    assert!(!sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("c"))])]));
    let t = tid(6);
    assert!(!sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "other", sv("a"))])]));
}

#[test]
fn c08_string_attribute_regex_is_unanchored() {
    let mut s = sampler(
        "  - {name: h, type: string_attribute, string_attribute: {key: url.path, values: [/health], enabled_regex_matching: true, cache_max_size: 10}}",
    );
    for (i, (path, expect)) in
        [("/healthz", true), ("/api/health/x", true), ("/health", true), ("/heal", false), ("/HEALTH", false)]
            .into_iter()
            .enumerate()
    {
        let t = tid(i as u64);
        let sp = with_attr(span(t, 0, 1), "url.path", sv(path));
        assert_eq!(sampled(&mut s, vec![trace_of(t, vec![sp])]), expect, "{path}");
    }
}

#[test]
fn c09_invert_match_plain_and_compatibility_modes() {
    let invert =
        "  - {name: not-x, type: string_attribute, string_attribute: {key: k, values: [x], invert_match: true}}";
    for mode in ["inverted_decisions: false", "inverted_decisions: true"] {
        let mut s = sampler_with(mode, invert);
        let t = tid(1);
        assert!(sampled(&mut s, vec![trace_of(t, vec![span(t, 0, 1)])]), "{mode}: no key → sampled");
        let t = tid(2);
        assert!(!sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("x"))])]), "{mode}");
        let t = tid(3);
        assert!(sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("y"))])]), "{mode}");
    }
    let both = format!("{invert}\n  - {{name: all, type: always_sample}}");
    let x = |n| {
        let t = tid(n);
        vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("x"))])]
    };
    // Upstream's inverted decisions: InvertNotSampled beats Sampled.
    let mut compat = sampler_with("inverted_decisions: true", &both);
    let d = decide_at(&mut compat, 0, x(4));
    assert!(!d.sampled);
    assert_eq!(d.policy.as_deref(), Some("not-x"));
    // Plain (ours): any sampled wins; a drop policy is the veto.
    let mut plain = sampler(&both);
    let d = decide_at(&mut plain, 0, x(5));
    assert!(d.sampled);
    assert_eq!(d.policy.as_deref(), Some("all"));
    let mut veto = sampler(&format!(
        "{both}\n  - {{name: veto, type: drop, drop: {{drop_sub_policy: [{{name: x, type: string_attribute, string_attribute: {{key: k, values: [x]}}}}]}}}}"
    ));
    assert!(!decide_at(&mut veto, 0, x(6)).sampled);
    // The inverted sampled answer loses to a plain not-sampled one.
    let mut compat = sampler_with(
        "inverted_decisions: true",
        &format!("{invert}\n  - {{name: err, type: status_code, status_code: {{status_codes: [ERROR]}}}}"),
    );
    let t = tid(7);
    assert!(!sampled(&mut compat, vec![trace_of(t, vec![span(t, 0, 1)])]));
}

#[test]
fn c10_numeric_attribute() {
    let mut s = sampler(
        "  - {name: c4xx, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 400, max_value: 499}}",
    );
    for (i, (v, expect)) in [
        (Value::IntValue(404), true),
        (Value::IntValue(400), true),
        (Value::IntValue(499), true),
        (Value::IntValue(500), false),
        (sv("404"), false),
        (Value::DoubleValue(404.0), false),
    ]
    .into_iter()
    .enumerate()
    {
        let t = tid(i as u64);
        let sp = with_attr(span(t, 0, 1), "http.status_code", v.clone());
        assert_eq!(sampled(&mut s, vec![trace_of(t, vec![sp])]), expect, "{v:?}");
    }
    let mut min_only = sampler(
        "  - {name: ge400, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 400}}",
    );
    let t = tid(9);
    let sp = with_attr(span(t, 0, 1), "http.status_code", Value::IntValue(500));
    assert!(sampled(&mut min_only, vec![trace_of(t, vec![sp])]));
    let t = tid(10);
    let sp = with_attr(span(t, 0, 1), "http.status_code", Value::IntValue(399));
    assert!(!sampled(&mut min_only, vec![trace_of(t, vec![sp])]));
}

#[test]
fn c11_boolean_attribute_is_typed() {
    let mut s = sampler("  - {name: b, type: boolean_attribute, boolean_attribute: {key: k, value: true}}");
    let t = tid(1);
    assert!(sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", Value::BoolValue(true))])]));
    let t = tid(2);
    assert!(!sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("true"))])]));
    let t = tid(3);
    assert!(!sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", Value::BoolValue(false))])]));
    let mut f = sampler("  - {name: b, type: boolean_attribute, boolean_attribute: {key: k, value: false}}");
    let t = tid(4);
    assert!(!sampled(&mut f, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("x"))])]), "OURS: typed only");
}

fn spans_n(t: TraceId, n: usize) -> Vec<Fragment> {
    // Split over fragments to check the count is over the whole trace.
    let all: Vec<Span> = (0..n).map(|i| span(t, i as u64, i as u64 + 1)).collect();
    all.chunks(7).map(|c| trace_of(t, c.to_vec())).collect()
}

#[test]
fn c12_span_count() {
    let mut s = sampler("  - {name: n, type: span_count, span_count: {min_spans: 2, max_spans: 20}}");
    for (i, (n, expect)) in [(1, false), (2, true), (20, true), (21, false)].into_iter().enumerate() {
        assert_eq!(sampled(&mut s, spans_n(tid(i as u64), n)), expect, "{n} spans");
    }
    let mut open = sampler("  - {name: n, type: span_count, span_count: {min_spans: 2, max_spans: 0}}");
    assert!(sampled(&mut open, spans_n(tid(9), 1000)));
}

#[test]
fn c13_trace_state() {
    let long = "v".repeat(250);
    let mut s =
        sampler(&format!("  - {{name: ts, type: trace_state, trace_state: {{key: vendor, values: [v1, {long}]}}}}"));
    for (i, (state, expect)) in [
        ("vendor=v1,other=x", true),
        ("other=x, vendor=v1", true),
        ("vendor=v2", false),
        ("vendor=v1,vendor=v2", false),
        ("Vendor=v1", false),
        ("vendor=v1,garbage", false),
        ("", false),
    ]
    .into_iter()
    .enumerate()
    {
        let t = tid(i as u64);
        let mut sp = span(t, 0, 1);
        sp.trace_state = state.into();
        assert_eq!(sampled(&mut s, vec![trace_of(t, vec![sp])]), expect, "{state:?}");
    }
    // len(key) + len(value) ≥ 256: dropped from the configuration.
    let t = tid(20);
    let mut sp = span(t, 0, 1);
    sp.trace_state = format!("vendor={long}");
    assert!(!sampled(&mut s, vec![trace_of(t, vec![sp])]));
}

#[test]
fn c13b_trace_flags() {
    let mut s = sampler("  - {name: f, type: trace_flags}");
    let t = tid(1);
    let mut sp = span(t, 0, 1);
    sp.flags = 0x101;
    assert!(sampled(&mut s, vec![trace_of(t, vec![span(t, 0, 1), sp])]));
    let t = tid(2);
    let mut sp = span(t, 0, 1);
    sp.flags = 0x100;
    assert!(!sampled(&mut s, vec![trace_of(t, vec![sp])]));
}

#[test]
fn c14_rate_limiting_token_bucket() {
    let mut s = sampler("  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 100}}");
    for n in 0..3 {
        for f in spans_n(tid(n), 100) {
            s.offer(0, T, f, 0);
        }
    }
    let d = s.tick(1000);
    assert_eq!(d.iter().map(|d| d.sampled).collect::<Vec<_>>(), [true, true, false]);
    for f in spans_n(tid(3), 100) {
        s.offer(1000, T, f, 0);
    }
    assert!(s.tick(2000)[0].sampled, "one second refills 100 tokens");
    assert!(!decide_at(&mut s, 100_000, spans_n(tid(4), 201)).sampled, "bigger than the burst");
    assert!(!decide_at(&mut s, 1_000_000, spans_n(tid(5), 201)).sampled);
    assert!(decide_at(&mut s, 2_000_000, spans_n(tid(6), 200)).sampled);
}

#[test]
fn c14b_bytes_limiting() {
    let t = tid(1);
    let one = trace_of(t, vec![span(t, 0, 1)]);
    let size = one.bytes.len();
    let mut s = sampler(&format!(
        "  - {{name: b, type: bytes_limiting, bytes_limiting: {{bytes_per_second: {size}, burst_capacity: {}}}}}",
        2 * size
    ));
    for n in 0..3 {
        let t = tid(n);
        s.offer(0, T, trace_of(t, vec![span(t, 0, 1)]), 0);
    }
    assert_eq!(s.tick(1000).iter().map(|d| d.sampled).collect::<Vec<_>>(), [true, true, false]);
}

#[test]
fn c15_and() {
    let mut s = sampler(
        "  - name: both
    type: and
    and:
      and_sub_policy:
        - {name: k, type: string_attribute, string_attribute: {key: k, values: [a]}}
        - {name: all, type: probabilistic, probabilistic: {sampling_percentage: 100}}",
    );
    let t = tid(1);
    assert!(sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("a"))])]));
    let t = tid(2);
    assert!(!sampled(&mut s, vec![trace_of(t, vec![with_attr(span(t, 0, 1), "k", sv("b"))])]));
}

#[test]
fn c15b_not() {
    let mut s = sampler(
        "  - {name: ok, type: not, not: {not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}}}",
    );
    let t = tid(1);
    assert!(sampled(&mut s, vec![trace_of(t, vec![span(t, 0, 1)])]));
    let t = tid(2);
    assert!(!sampled(&mut s, vec![trace_of(t, vec![with_status(span(t, 0, 1), 2)])]));
}

#[test]
fn c16_drop_is_evaluated_first_and_wins() {
    let mut s = sampler(
        "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - name: no-health
    type: drop
    drop:
      drop_sub_policy:
        - {name: health, type: string_attribute, string_attribute: {key: url.path, values: [/health]}}",
    );
    let t = tid(1);
    let sp = with_status(with_attr(span(t, 0, 1), "url.path", sv("/health")), 2);
    let d = decide_at(&mut s, 0, vec![trace_of(t, vec![sp])]);
    assert!(!d.sampled);
    assert_eq!(d.policy.as_deref(), Some("no-health"));
    let st = s.stats();
    assert_eq!(st.traces_dropped, 1);
    assert_eq!(st.traces_not_sampled, 0);
    assert_eq!(st.decisions[&("no-health".to_string(), "dropped")], 1);
    // The drop stopped evaluation before the (first-listed) status policy.
    for d in ["sampled", "not_sampled", "dropped"] {
        assert_eq!(st.decisions[&("errors".to_string(), d)], 0);
    }
    let t = tid(2);
    let sp = with_status(with_attr(span(t, 0, 1), "url.path", sv("/api")), 2);
    let d = decide_at(&mut s, 0, vec![trace_of(t, vec![sp])]);
    assert!(d.sampled);
    assert_eq!(s.stats().decisions[&("no-health".to_string(), "not_sampled")], 1);
    assert_eq!(s.stats().decisions[&("errors".to_string(), "sampled")], 1);
}

#[test]
fn c17_composite_budgets_without_fall_through() {
    let mut s = sampler(
        "  - name: mix
    type: composite
    composite:
      max_total_spans_per_second: 100
      policy_order: [a, b, c]
      composite_sub_policy:
        - {name: a, type: string_attribute, string_attribute: {key: a, values: [yes]}}
        - {name: b, type: string_attribute, string_attribute: {key: b, values: [yes]}}
        - {name: c, type: always_sample}
      rate_allocation:
        - {policy: a, percent: 50}
        - {policy: b, percent: 25}",
    );
    let ab = |t: TraceId| -> Vec<Fragment> {
        let spans = (0..10).map(|i| with_attr(with_attr(span(t, i, i + 1), "a", sv("yes")), "b", sv("yes"))).collect();
        vec![trace_of(t, spans)]
    };
    for n in 0..6 {
        for f in ab(tid(n)) {
            s.offer(0, T, f, 0);
        }
    }
    let d = s.tick(1000);
    assert_eq!(d.iter().map(|d| d.sampled).collect::<Vec<_>>(), [true, true, true, true, true, false]);
    assert_eq!(d[0].policy.as_deref(), Some("mix"));
    // A new second, a new budget.
    assert!(decide_at(&mut s, 5000, ab(tid(10))).sampled);
    // Only C matches: no allocation, never sampled.
    for n in 20..25 {
        assert!(!decide_at(&mut s, n * 10_000, spans_n(tid(n), 1)).sampled);
    }
}

#[test]
fn c17b_composite_zero_percent_is_an_equal_share() {
    let mut s = sampler(
        "  - name: mix
    type: composite
    composite:
      max_total_spans_per_second: 90
      composite_sub_policy:
        - {name: a, type: always_sample}
        - {name: b, type: always_sample}
        - {name: c, type: always_sample}
      rate_allocation: [{policy: a, percent: 0}]",
    );
    for n in 0..4 {
        for f in spans_n(tid(n), 10) {
            s.offer(0, T, f, 0);
        }
    }
    assert_eq!(s.tick(1000).iter().filter(|d| d.sampled).count(), 3, "30 spans of 90 / 3");
}

#[test]
fn c18_late_spans_follow_the_decision() {
    let mut s = Sampler::new(&config(
        "decision_wait: 2s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
    ))
    .unwrap();
    let (yes, no) = (tid(1), tid(2));
    s.offer(0, T, trace_of(yes, vec![with_status(span(yes, 0, 1), 2)]), 1);
    s.offer(0, T, trace_of(no, vec![span(no, 0, 1)]), 1);
    s.offer(1500, T, trace_of(yes, vec![span(yes, 1, 2)]), 2);
    s.offer(1500, T, trace_of(no, vec![span(no, 1, 2)]), 2);
    assert!(s.tick(1999).is_empty());
    let d = s.tick(2100);
    assert_eq!(d.len(), 2);
    assert!(d[0].sampled && !d[1].sampled);
    assert_eq!(spans_out(&d[0]), 2, "both fragments together");
    let late = trace_of(yes, vec![span(yes, 3, 4)]);
    assert_eq!(s.offer(4000, T, late.clone(), 3), Offer::Forward(late, 3));
    let late = trace_of(no, vec![span(no, 3, 4)]);
    assert_eq!(s.offer(4000, T, late.clone(), 3), Offer::Drop(late));
    assert_eq!(s.stats().late_spans_forwarded, 1);
    assert_eq!(s.stats().late_spans_dropped, 1);
    assert!(s.tick(100_000).is_empty());
}

#[test]
fn c19_num_traces_evicts_the_oldest_undecided() {
    let mut s = sampler_with("num_traces: 2", "  - {name: all, type: always_sample}");
    for n in 1..=3 {
        assert_eq!(s.offer(n, T, trace_of(tid(n), vec![span(tid(n), 0, 1)]), n), Offer::Buffered);
    }
    assert_eq!(s.stats().dropped_too_early, 1);
    assert_eq!(s.stats().evicted, 1);
    assert_eq!(s.traces_in_memory(), 2);
    let d = s.tick(10_000);
    assert_eq!(d.iter().map(|d| d.trace_id).collect::<Vec<_>>(), [tid(2), tid(3)]);
    assert!(d.iter().all(|d| d.sampled));
    assert_eq!(s.stats().new_traces, 3);
}

#[test]
fn c20_decision_caches() {
    // Sampled cache: the entry leaves memory at decision, late spans are forwarded from the cache.
    let mut s = sampler_with(
        "decision_cache: {sampled_cache_size: 1000, non_sampled_cache_size: 1000}",
        "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
    );
    let (yes, no) = (tid(1), tid(2));
    assert!(decide_at(&mut s, 0, vec![trace_of(yes, vec![with_status(span(yes, 0, 1), 2)])]).sampled);
    assert!(!decide_at(&mut s, 0, vec![trace_of(no, vec![span(no, 0, 1)])]).sampled);
    assert_eq!(s.traces_in_memory(), 0);
    let late = trace_of(yes, vec![span(yes, 1, 2)]);
    assert_eq!(s.offer(5000, T, late.clone(), 9), Offer::Forward(late, 9));
    let late = trace_of(no, vec![with_status(span(no, 1, 2), 2)]);
    assert_eq!(s.offer(5000, T, late.clone(), 9), Offer::Drop(late));

    // No cache, entry evicted: late spans start a fresh decision on the late spans only.
    let mut s =
        sampler_with("num_traces: 1", "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}");
    assert!(!decide_at(&mut s, 0, vec![trace_of(no, vec![span(no, 0, 1)])]).sampled);
    assert_eq!(s.traces_in_memory(), 1, "decided entry kept for late spans");
    let late = trace_of(no, vec![span(no, 1, 2)]);
    assert_eq!(s.offer(1500, T, late.clone(), 9), Offer::Drop(late));
    // A new trace pushes the decided entry out (an eviction, but not "too early").
    assert_eq!(s.offer(1600, T, trace_of(yes, vec![span(yes, 0, 1)]), 9), Offer::Buffered);
    assert_eq!(s.stats().evicted, 1);
    assert_eq!(s.stats().dropped_too_early, 0);
    assert_eq!(s.tick(2600).len(), 1);
    assert_eq!(s.offer(3000, T, trace_of(no, vec![with_status(span(no, 2, 3), 2)]), 9), Offer::Buffered);
    assert!(s.tick(3999).is_empty());
    let d = s.tick(4000);
    assert_eq!(d.len(), 1);
    assert!(d[0].sampled, "decided again on the late spans only");
    assert_eq!(d[0].spans, 1);
}

fn config_error(yaml: &str) -> String {
    match serde_saphyr::from_str::<TailSamplingConfig>(yaml) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn c21_config_errors_name_the_policy_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "policies:\n  - {name: a, type: always_sample}\n  - {name: a, type: always_sample}\n",
            "line 3",
            "policy \"a\": duplicate policy name",
        ),
        ("policies:\n  - {name: a, type: always_sample}\n  - {type: always_sample}\n", "line 3", "needs a name"),
        (
            "policies:\n  - {name: a, type: always_sample}\n  - {name: b, type: sometimes}\n",
            "line 3",
            "policy \"b\": unknown policy type \"sometimes\"",
        ),
        (
            "policies:\n  - name: errs\n    type: status_code\n    status_code: {status_codes: [ERROR, FOO]}\n",
            "line 2",
            "policy \"errs\": status_code.status_codes: \"FOO\" is not a status code",
        ),
        ("policies:\n  - {name: e, type: status_code, status_code: {status_codes: []}}\n", "line 2", "policy \"e\""),
        (
            "policies:\n  - {name: n, type: numeric_attribute, numeric_attribute: {key: k}}\n",
            "line 2",
            "policy \"n\": numeric_attribute: set min_value, max_value or both",
        ),
        (
            "policies:\n  - {name: re, type: string_attribute, string_attribute: {key: k, values: [\"(\"], enabled_regex_matching: true}}\n",
            "line 2",
            "policy \"re\": string_attribute.values: invalid regular expression",
        ),
        (
            "policies:\n  - {name: o, type: ottl_condition, ottl_condition: {span: ['attributes[\"x\"] == 1']}}\n",
            "line 2",
            "policy \"o\": `ottl_condition` policies are not supported",
        ),
        (
            "policies:\n  - name: both\n    type: and\n    and:\n      and_sub_policy:\n        - {name: inner, type: status_code, status_code: {status_codes: [BAD]}}\n",
            "line 6",
            "policy \"inner\": status_code.status_codes",
        ),
        (
            "policies:\n  - name: c\n    type: composite\n    composite:\n      max_total_spans_per_second: 10\n      composite_sub_policy: [{name: d, type: drop, drop: {drop_sub_policy: [{name: x, type: always_sample}]}}]\n",
            "line 2",
            "policy \"c\": composite.composite_sub_policy[0]: policy \"d\" cannot be used inside a composite policy",
        ),
        ("policies:\n  - {name: x, type: always_sample, statuscode: {}}\n", "line 2", "statuscode"),
        ("num_traces: 5\npolicies: []\n", "line 2", "at least one policy"),
        (
            "policies:\n  - {name: l, type: latency, latency: {threshold_ms: 10, upper_threshold_ms: 5}}\n",
            "line 2",
            "policy \"l\": latency.upper_threshold_ms",
        ),
    ];
    for (yaml, line, message) in cases {
        let e = config_error(yaml);
        assert!(e.contains(line) && e.contains(message), "want {line:?} and {message:?}, got:\n{e}");
    }
}

#[test]
fn configs_built_in_code_are_checked_too() {
    let bad = PolicyConfig::new("errs", PolicyKind::StatusCode(StatusCodeConfig { status_codes: vec!["FOO".into()] }));
    let cfg = TailSamplingConfig { policies: vec![bad], ..TailSamplingConfig::default() };
    match Sampler::new(&cfg) {
        Err(Error::Config { at, message }) => {
            assert_eq!(at, "tail_sampling.policies[0] (\"errs\").status_code.status_codes");
            assert!(message.contains("FOO"), "{message}");
        }
        other => panic!("{:?}", other.err()),
    }
    let all = PolicyConfig::new("a", PolicyKind::AlwaysSample);
    let cfg = TailSamplingConfig { policies: vec![all.clone(), all], ..TailSamplingConfig::default() };
    assert!(matches!(Sampler::new(&cfg), Err(Error::Config { message, .. }) if message.contains("duplicate")));
    assert!(Sampler::new(&TailSamplingConfig::default()).is_err(), "no policies");
}

#[test]
fn config_defaults_and_round_trip() {
    let c = config("policies: [{name: a, type: always_sample}]");
    assert_eq!(c.decision_wait, std::time::Duration::from_secs(30));
    assert_eq!(c.num_traces, 50_000);
    assert_eq!(c.max_bytes, 256 << 20);
    assert!(!c.inverted_decisions && !c.block_on_overflow && !c.sample_on_first_match);
    let full = config(ADR_CONFIG);
    let text = serde_saphyr::to_string(&full).unwrap();
    assert_eq!(config(&text), full, "{text}");
    let nested = config(
        "policies:
  - name: mix
    type: composite
    composite:
      max_total_spans_per_second: 100
      policy_order: [a]
      composite_sub_policy:
        - {name: a, type: and, and: {and_sub_policy: [{name: x, type: trace_flags}, {name: y, type: span_count, span_count: {min_spans: 2}}]}}
      rate_allocation: [{policy: a, percent: 100}]
  - {name: n, type: not, not: {not_sub_policy: {name: z, type: boolean_attribute, boolean_attribute: {key: k, value: true}}}}
  - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 5}}
  - {name: b, type: bytes_limiting, bytes_limiting: {bytes_per_second: 5}}
  - {name: t, type: trace_state, trace_state: {key: k, values: [v]}}",
    );
    let text = serde_saphyr::to_string(&nested).unwrap();
    assert_eq!(config(&text), nested, "{text}");
}

#[test]
fn sample_on_first_match_stops_at_the_first_sampled() {
    let mut s = sampler_with(
        "sample_on_first_match: true",
        "  - {name: all, type: always_sample}\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
    );
    let t = tid(1);
    assert!(sampled(&mut s, vec![trace_of(t, vec![with_status(span(t, 0, 1), 2)])]));
    assert_eq!(s.stats().decisions[&("all".to_string(), "sampled")], 1);
    assert_eq!(s.stats().decisions[&("errors".to_string(), "sampled")], 0);
    assert_eq!(s.stats().decisions[&("errors".to_string(), "not_sampled")], 0);
}

// ---------------------------------------------------------------------------------------------
// The ADR policy: errors, slow traces and 10 % of the rest.

const ADR_CONFIG: &str = "
decision_wait: 10s
num_traces: 100000
expected_new_traces_per_sec: 1000
decision_cache:
  sampled_cache_size: 10000
  non_sampled_cache_size: 10000
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: slow
    type: latency
    latency: {threshold_ms: 1000}
  - name: baseline
    type: probabilistic
    probabilistic: {sampling_percentage: 10}
";

#[test]
fn adr_policy_keeps_errors_and_slow_traces_and_a_tenth_of_the_rest() {
    let mut s = Sampler::new(&config(ADR_CONFIG)).unwrap();
    let mut state = 1;
    let mut kind = Vec::new();
    for n in 0..20_000u64 {
        let t = random_id(&mut state);
        let (sp, k) = match n % 10 {
            0 => (with_status(span(t, 0, 20), 2), "error"),
            1 => (span(t, 0, 1000 + n % 5000), "slow"),
            _ => (span(t, 0, 999), "rest"),
        };
        kind.push(k);
        // Two fragments per trace, from two resources.
        s.offer(n / 10, T, fragment(t, vec![kv("service.name", sv("a"))], vec![sp]), 0);
        s.offer(n / 10, T, fragment(t, vec![kv("service.name", sv("b"))], vec![span(t, 5, 6)]), 0);
    }
    let decisions = s.tick(20_000);
    assert_eq!(decisions.len(), 20_000);
    let mut rest = (0u64, 0u64);
    for (d, k) in decisions.iter().zip(&kind) {
        match *k {
            "error" => assert!(d.sampled && d.policy.as_deref() == Some("errors")),
            "slow" => assert!(d.sampled && d.policy.as_deref() == Some("slow")),
            _ => {
                rest.0 += 1;
                rest.1 += d.sampled as u64;
                if d.sampled {
                    assert_eq!(d.policy.as_deref(), Some("baseline"));
                }
            }
        }
        assert_eq!(spans_out(d), if d.sampled { 2 } else { 0 });
    }
    // Binomial(16000, 0.1): mean 1600, σ = 37.9; accept ±5σ.
    let (n, k) = rest;
    assert_eq!(n, 16_000);
    let sigma = (n as f64 * 0.1 * 0.9).sqrt();
    assert!((k as f64 - n as f64 * 0.1).abs() < 5.0 * sigma, "{k} of {n}");
    assert_eq!(s.stats().traces_sampled, 4000 + k);
    assert_eq!(s.traces_in_memory(), 0, "decisions went to the caches");
}

// ---------------------------------------------------------------------------------------------
// Memory limits

#[test]
fn max_bytes_evicts_the_oldest_undecided_traces() {
    let t = tid(0);
    let size = trace_of(t, vec![span(t, 0, 1)]).bytes.len();
    let mut s = sampler_with(&format!("max_bytes: {}", 3 * size), "  - {name: all, type: always_sample}");
    for n in 0..5 {
        let t = tid(n);
        assert_eq!(s.offer(n, T, trace_of(t, vec![span(t, 0, 1)]), n), Offer::Buffered);
        assert!(s.bytes_in_memory() <= 3 * size);
    }
    assert_eq!(s.stats().dropped_too_early, 2);
    assert_eq!(s.low_water(), Some(2));
    let d = s.tick(10_000);
    assert_eq!(d.iter().map(|d| d.trace_id).collect::<Vec<_>>(), [tid(2), tid(3), tid(4)]);
    // A fragment bigger than the whole budget cannot be held.
    let t = tid(9);
    let big = trace_of(t, (0..10).map(|i| span(t, i, i + 1)).collect());
    assert_eq!(s.offer(20_000, T, big.clone(), 1), Offer::Drop(big));
    assert_eq!(s.bytes_in_memory(), 0);
    assert_eq!(s.low_water(), None);
}

#[test]
fn block_on_overflow_pushes_back_instead_of_evicting() {
    let mut s = sampler_with("num_traces: 2\nblock_on_overflow: true", "  - {name: all, type: always_sample}");
    assert!(s.has_room());
    s.offer(0, T, trace_of(tid(1), vec![span(tid(1), 0, 1)]), 0);
    assert!(s.has_room());
    s.offer(0, T, trace_of(tid(2), vec![span(tid(2), 0, 1)]), 0);
    assert!(!s.has_room());
    // A caller ignoring has_room still gets its fragment buffered, nothing is evicted.
    s.offer(0, T, trace_of(tid(3), vec![span(tid(3), 0, 1)]), 0);
    assert_eq!(s.stats().evicted, 0);
    assert_eq!(s.tick(1000).len(), 3);
    // Decided entries kept for late spans never block.
    assert!(s.has_room());
    assert_eq!(s.traces_in_memory(), 3);
    s.offer(2000, T, trace_of(tid(4), vec![span(tid(4), 0, 1)]), 0);
    assert!(s.has_room());
    assert_eq!(s.traces_in_memory(), 2);
    assert_eq!(s.stats().dropped_too_early, 0);

    let t = tid(5);
    let size = trace_of(t, vec![span(t, 0, 1)]).bytes.len();
    let mut s =
        sampler_with(&format!("max_bytes: {size}\nblock_on_overflow: true"), "  - {name: all, type: always_sample}");
    s.offer(0, T, trace_of(t, vec![span(t, 0, 1)]), 0);
    assert!(!s.has_room());
    s.tick(1000);
    assert!(s.has_room());
}

#[test]
fn tenants_never_share_a_trace() {
    let mut s = sampler("  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}");
    let t = tid(1);
    s.offer(0, "a", trace_of(t, vec![with_status(span(t, 0, 1), 2)]), 0);
    s.offer(0, "b", trace_of(t, vec![span(t, 0, 1)]), 0);
    let d = s.tick(1000);
    assert_eq!(d.len(), 2);
    assert_eq!((d[0].tenant.as_str(), d[0].sampled), ("a", true));
    assert_eq!((d[1].tenant.as_str(), d[1].sampled), ("b", false));
    let late = trace_of(t, vec![span(t, 1, 2)]);
    assert!(matches!(s.offer(2000, "a", late.clone(), 0), Offer::Forward(..)));
    assert!(matches!(s.offer(2000, "b", late, 0), Offer::Drop(..)));
}

#[test]
fn undecodable_fragments_count_as_errors_and_follow_their_trace() {
    let mut s = sampler("  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}");
    let t = tid(1);
    let garbage = Fragment { trace_id: t, spans: 3, bytes: Bytes::from_static(&[0xff, 0xff, 0xff]) };
    let d = decide_at(&mut s, 0, vec![garbage.clone(), trace_of(t, vec![with_status(span(t, 0, 1), 2)])]);
    assert!(d.sampled);
    assert_eq!(d.fragments[0].0, garbage);
    assert_eq!(d.spans, 4);
    assert_eq!(s.stats().policy_errors, 1);
    assert_eq!(s.stats().decode_errors, 1);
}

// ---------------------------------------------------------------------------------------------
// WAL replay, low water, shutdown

#[test]
fn low_water_is_the_smallest_buffered_token() {
    let mut s = sampler("  - {name: all, type: always_sample}");
    assert_eq!(s.low_water(), None);
    s.offer(0, T, trace_of(tid(1), vec![span(tid(1), 0, 1)]), 5);
    s.offer(100, T, trace_of(tid(2), vec![span(tid(2), 0, 1)]), 3);
    s.offer(200, T, trace_of(tid(1), vec![span(tid(1), 1, 2)]), 7);
    s.offer(300, T, trace_of(tid(3), vec![span(tid(3), 0, 1)]), 6);
    assert_eq!(s.low_water(), Some(3));
    assert_eq!(s.tick(1000).len(), 1); // trace 1: tokens 5 and 7
    assert_eq!(s.low_water(), Some(3));
    assert_eq!(s.tick(1100).len(), 1); // trace 2: token 3
    assert_eq!(s.low_water(), Some(6));
    assert_eq!(s.tick(1300).len(), 1);
    assert_eq!(s.low_water(), None);
    // Late spans are forwarded, never held: the low water stays empty.
    assert!(matches!(s.offer(2000, T, trace_of(tid(1), vec![span(tid(1), 1, 2)]), 1), Offer::Forward(_, 1)));
    assert_eq!(s.low_water(), None);
}

/// A mixed workload: (arrival ms, trace n, fragment, token).
fn workload() -> Vec<(u64, u64, Fragment, u64)> {
    let mut out = Vec::new();
    for n in 0..60u64 {
        let t = tid(n);
        let first = if n % 3 == 0 { with_status(span(t, 0, 5), 2) } else { span(t, 0, 5) };
        out.push((n * 50, n, trace_of(t, vec![first]), n / 10));
        out.push((n * 50 + 400, n, trace_of(t, vec![span(t, 1, 2), span(t, 2, 3)]), n / 10 + 1));
    }
    out.sort_by_key(|w| w.0);
    out
}

#[test]
fn apply_replays_exactly_what_tick_decided() {
    let policies = "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 30}}";
    for settings in ["", "decision_cache: {sampled_cache_size: 100, non_sampled_cache_size: 100}"] {
        // The live run.
        let mut live = sampler_with(settings, policies);
        let mut decided = Vec::new();
        for (at, _, f, token) in workload() {
            decided.extend(live.tick(at));
            assert_eq!(live.offer(at, T, f, token), Offer::Buffered);
        }
        decided.extend(live.tick(100_000));
        assert_eq!(decided.len(), 60);
        assert!(decided.iter().any(|d| d.sampled) && decided.iter().any(|d| !d.sampled));

        // The replay: same fragments, decisions applied from the WAL instead of ticks.
        let mut replay = sampler_with(settings, policies);
        for (_, _, f, token) in workload() {
            assert_eq!(replay.offer(0, T, f, token), Offer::Buffered);
        }
        let replayed: Vec<Decision> =
            decided.iter().filter_map(|d| replay.apply(0, T, d.trace_id, d.sampled)).collect();
        assert_eq!(replayed.len(), 60);
        for (a, b) in decided.iter().zip(&replayed) {
            assert_eq!((a.trace_id, a.sampled, a.spans), (b.trace_id, b.sampled, b.spans));
            assert_eq!(a.fragments, b.fragments);
            assert_eq!(b.policy, None);
        }
        assert_eq!(replay.stats().traces_sampled, live.stats().traces_sampled);
        assert_eq!(replay.stats().spans_sampled, live.stats().spans_sampled);
        assert_eq!(replay.low_water(), None);
        assert!(replay.tick(1_000_000).is_empty(), "nothing left to decide: {settings}");
        // Late spans follow the replayed decisions.
        for d in &decided {
            let late = trace_of(d.trace_id, vec![span(d.trace_id, 9, 10)]);
            match replay.offer(2_000_000, T, late, 99) {
                Offer::Forward(..) => assert!(d.sampled),
                Offer::Drop(_) => assert!(!d.sampled),
                Offer::Buffered => panic!("replayed decision forgotten"),
            }
        }
    }
}

#[test]
fn apply_before_the_fragments_arrive_decides_late_spans() {
    for settings in ["", "decision_cache: {sampled_cache_size: 10, non_sampled_cache_size: 10}"] {
        let mut s = sampler_with(settings, "  - {name: all, type: always_sample}");
        assert_eq!(s.apply(0, T, tid(1), false), None);
        assert_eq!(s.apply(0, T, tid(2), true), None);
        let f = trace_of(tid(1), vec![span(tid(1), 0, 1)]);
        assert_eq!(s.offer(0, T, f.clone(), 0), Offer::Drop(f));
        let f = trace_of(tid(2), vec![span(tid(2), 0, 1)]);
        assert_eq!(s.offer(0, T, f.clone(), 0), Offer::Forward(f, 0));
        assert_eq!(s.stats().decisions_applied, 2);
        assert!(s.tick(10_000).is_empty());
    }
}

#[test]
fn drain_decides_or_drops_pending_traces() {
    let policies = "  - {name: all, type: always_sample}";
    let mut s = sampler(policies);
    s.offer(0, T, trace_of(tid(1), vec![span(tid(1), 0, 1)]), 4);
    s.offer(900, T, trace_of(tid(2), vec![span(tid(2), 0, 1)]), 5);
    let d = s.drain(950);
    assert_eq!(d.iter().map(|d| (d.trace_id, d.sampled)).collect::<Vec<_>>(), [(tid(1), true), (tid(2), true)]);
    assert_eq!(s.low_water(), None);
    assert!(s.tick(10_000).is_empty());

    let mut s = sampler_with("drop_pending_traces_on_shutdown: true", policies);
    s.offer(0, T, trace_of(tid(1), vec![span(tid(1), 0, 1)]), 4);
    assert!(s.drain(10).is_empty());
    assert_eq!(s.stats().dropped_on_shutdown, 1);
    assert_eq!((s.low_water(), s.bytes_in_memory(), s.pending_traces()), (None, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Robustness

#[test]
fn sampler_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Sampler>();
    send::<Decision>();
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Offer { trace: u8, tenant: bool, spans: u32, bytes: Vec<u8>, valid: bool },
        Tick(u16),
        Apply { trace: u8, sampled: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<bool>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..200), any::<bool>())
                .prop_map(|(trace, tenant, spans, bytes, valid)| Op::Offer { trace, tenant, spans, bytes, valid }),
            2 => any::<u16>().prop_map(Op::Tick),
            1 => (any::<u8>(), any::<bool>()).prop_map(|(trace, sampled)| Op::Apply { trace, sampled }),
        ]
    }

    const EVERYTHING: &str = "decision_wait: 300ms
num_traces: 20
max_bytes: 2000
decision_cache: {sampled_cache_size: 5, non_sampled_cache_size: 0}
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR, UNSET]}}
  - {name: slow, type: latency, latency: {threshold_ms: 3, upper_threshold_ms: 10}}
  - {name: num, type: numeric_attribute, numeric_attribute: {key: n, min_value: 1, invert_match: true}}
  - {name: str, type: string_attribute, string_attribute: {key: s, values: [a, 'b.*'], enabled_regex_matching: true}}
  - {name: bool, type: boolean_attribute, boolean_attribute: {key: b, value: true}}
  - {name: count, type: span_count, span_count: {min_spans: 3}}
  - {name: state, type: trace_state, trace_state: {key: k, values: [v]}}
  - {name: flags, type: trace_flags}
  - {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 50}}
  - {name: bytes, type: bytes_limiting, bytes_limiting: {bytes_per_second: 500}}
  - {name: and, type: and, and: {and_sub_policy: [{name: x, type: always_sample}, {name: y, type: not, not: {not_sub_policy: {name: z, type: trace_flags}}}]}}
  - {name: drop, type: drop, drop: {drop_sub_policy: [{name: d, type: string_attribute, string_attribute: {key: s, values: [drop]}}]}}
  - name: comp
    type: composite
    composite:
      max_total_spans_per_second: 100
      composite_sub_policy: [{name: c1, type: span_count, span_count: {min_spans: 1}}, {name: c2, type: always_sample}]
      rate_allocation: [{policy: c1, percent: 60}, {policy: c2, percent: 0}]
  - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 33.3}}
";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn offer_and_tick_never_panic(ops in proptest::collection::vec(op(), 1..200), block in any::<bool>(), inverted in any::<bool>()) {
            let mut cfg = config(EVERYTHING);
            cfg.block_on_overflow = block;
            cfg.inverted_decisions = inverted;
            let mut s = Sampler::new(&cfg).unwrap();
            let mut now = 0u64;
            let mut offered = 0u64;
            let mut out = 0u64;
            for op in ops {
                match op {
                    Op::Offer { trace, tenant, spans, bytes, valid } => {
                        let t = tid(trace as u64 % 40);
                        let f = if valid {
                            let mut sp = span(t, 0, bytes.len() as u64);
                            sp.trace_state = String::from_utf8_lossy(&bytes).into_owned();
                            sp.flags = bytes.first().copied().unwrap_or(0) as u32;
                            let sp = with_attr(sp, "s", sv(if bytes.len() % 2 == 0 { "drop" } else { "b1" }));
                            trace_of(t, vec![sp; 1 + bytes.len() % 4])
                        } else {
                            Fragment { trace_id: t, spans, bytes: Bytes::from(bytes) }
                        };
                        offered += 1;
                        match s.offer(now, if tenant { "a" } else { "b" }, f, now) {
                            Offer::Buffered => {}
                            Offer::Forward(..) | Offer::Drop(_) => out += 1,
                        }
                    }
                    Op::Tick(dt) => {
                        now += dt as u64 % 700;
                        for d in s.tick(now) {
                            prop_assert!(d.sampled || d.fragments.is_empty());
                            out += d.fragments.len() as u64;
                        }
                    }
                    Op::Apply { trace, sampled } => {
                        if let Some(d) = s.apply(now, "a", tid(trace as u64 % 40), sampled) {
                            out += d.fragments.len() as u64;
                        }
                    }
                }
                if !block {
                    prop_assert!(s.bytes_in_memory() <= 2000);
                    prop_assert!(s.traces_in_memory() <= 20);
                }
                prop_assert!(s.pending_traces() <= s.traces_in_memory());
                prop_assert_eq!(s.low_water().is_none(), s.pending_traces() == 0);
            }
            for d in s.drain(now) {
                out += d.fragments.len() as u64;
            }
            prop_assert_eq!(s.bytes_in_memory(), 0);
            prop_assert_eq!(s.low_water(), None);
            prop_assert!(out <= offered);
        }
    }
}
