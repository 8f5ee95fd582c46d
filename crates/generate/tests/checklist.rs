//! The span-metrics and service-graph checklists of the collector contract (§7.9, §7.10), as
//! far as they apply to Prometheus-shaped output (see docs/metrics.md for the ones that do not).

use spoor_generate::config::{Dimension, GeneratorConfig};
use spoor_generate::{Family, Generator, Value};
use spoor_model::otlp::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status, any_value,
};

const NOW: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }) }
}

#[derive(Clone)]
struct S {
    trace: u8,
    id: u8,
    parent: u8,
    kind: i32,
    name: &'static str,
    ms: u64,
    error: bool,
    attrs: Vec<KeyValue>,
}

fn span(trace: u8, id: u8, parent: u8, kind: i32) -> S {
    S { trace, id, parent, kind, name: "op", ms: 10, error: false, attrs: vec![] }
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn to_span(s: &S) -> Span {
    Span {
        trace_id: vec![s.trace; 16],
        span_id: vec![s.id; 8],
        parent_span_id: if s.parent == 0 { vec![] } else { vec![s.parent; 8] },
        name: s.name.into(),
        kind: s.kind,
        start_time_unix_nano: NOW - s.ms * MS,
        end_time_unix_nano: NOW,
        attributes: s.attrs.clone(),
        status: Some(Status { code: if s.error { 2 } else { 0 }, message: String::new() }),
        ..Span::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: &[S]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource, dropped_attributes_count: 0 }),
            scope_spans: vec![ScopeSpans { spans: spans.iter().map(to_span).collect(), ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

fn svc(name: &str) -> Vec<KeyValue> {
    vec![kv("service.name", name)]
}

fn family<'a>(fams: &'a [Family], name: &str) -> Option<&'a Family> {
    fams.iter().find(|f| f.name == name)
}

/// (labels rendered `k=v,…`, value) of a counter family.
fn counter(fams: &[Family], name: &str) -> Vec<(String, f64)> {
    family(fams, name).map_or_else(Vec::new, |f| {
        f.series
            .iter()
            .map(|s| {
                let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let Value::Counter(v) = s.value else { panic!("{name} is not a counter") };
                (labels.join(","), v)
            })
            .collect()
    })
}

fn histogram(fams: &[Family], name: &str, labels: &str) -> spoor_generate::Histogram {
    let f = family(fams, name).unwrap_or_else(|| panic!("no {name}"));
    f.series
        .iter()
        .find_map(|s| {
            let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            match &s.value {
                Value::Histogram(h) if l.join(",") == labels => Some(h.clone()),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no {name}{{{labels}}}"))
}

fn generator(edit: impl FnOnce(&mut GeneratorConfig)) -> Generator {
    let mut c = GeneratorConfig::default();
    edit(&mut c);
    Generator::new(&c).unwrap()
}

const T: &str = "single-tenant";
const A_GET_X: &str = "service=A,span_kind=SPAN_KIND_SERVER,span_name=GET /x,status_code=STATUS_CODE_UNSET";

// §7.9 Span metrics

#[test]
fn c9_1_three_server_spans_one_series_with_buckets() {
    let g = generator(|c| c.span_metrics.histogram_buckets = vec![0.002, 0.004, 0.006, 0.008, 0.01, 0.05]);
    let spans: Vec<S> = [1, 3, 20]
        .iter()
        .enumerate()
        .map(|(i, ms)| S { name: "GET /x", ms: *ms, ..span(1, i as u8 + 1, 0, SERVER) })
        .collect();
    g.observe(T, &request(svc("A"), &spans), NOW);
    let snap = g.snapshot(T);
    assert_eq!(counter(&snap, "traces_spanmetrics_calls_total"), [(A_GET_X.to_string(), 3.0)]);
    let h = histogram(&snap, "traces_spanmetrics_latency", A_GET_X);
    assert_eq!(h.count, 3.0);
    assert!((h.sum - 0.024).abs() < 1e-12);
    assert_eq!(h.counts, [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "≤2ms, ≤4ms, ≤50ms");
    // Tempo's default buckets put the same spans in ≤2ms, ≤4ms and ≤32ms.
    let g = generator(|_| {});
    g.observe(T, &request(svc("A"), &spans), NOW);
    let h = histogram(&g.snapshot(T), "traces_spanmetrics_latency", A_GET_X);
    assert_eq!(h.counts[..6], [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    assert_eq!(h.bounds.len(), 14);
}

#[test]
fn c9_2_error_span_is_its_own_series() {
    let g = generator(|_| {});
    let spans =
        [S { name: "GET /x", ..span(1, 1, 0, SERVER) }, S { name: "GET /x", error: true, ..span(1, 2, 0, SERVER) }];
    g.observe(T, &request(svc("A"), &spans), NOW);
    let calls = counter(&g.snapshot(T), "traces_spanmetrics_calls_total");
    assert_eq!(
        calls,
        [
            ("service=A,span_kind=SPAN_KIND_SERVER,span_name=GET /x,status_code=STATUS_CODE_ERROR".to_string(), 1.0),
            (A_GET_X.to_string(), 1.0)
        ]
    );
}

#[test]
fn c9_3_dimension_defaults_and_missing_dimensions() {
    let g = generator(|c| {
        c.span_metrics.dimensions = vec![
            Dimension::WithDefault { name: "http.method".into(), default: "GET".into() },
            Dimension::Name("http.route".into()),
        ]
    });
    g.observe(T, &request(svc("A"), &[span(1, 1, 0, SERVER)]), NOW);
    let calls = counter(&g.snapshot(T), "traces_spanmetrics_calls_total");
    // A missing dimension without a default is an empty label, which Prometheus drops.
    assert_eq!(
        calls[0].0,
        "http_method=GET,service=A,span_kind=SPAN_KIND_SERVER,span_name=op,status_code=STATUS_CODE_UNSET"
    );
}

#[test]
fn c9_4_span_attribute_wins_over_resource_attribute() {
    let g = generator(|c| c.span_metrics.dimensions = vec![Dimension::Name("env".into())]);
    let resource = vec![kv("service.name", "A"), kv("env", "from-resource")];
    let spans = [S { attrs: vec![kv("env", "from-span")], ..span(1, 1, 0, SERVER) }, span(1, 2, 0, SERVER)];
    g.observe(T, &request(resource, &spans), NOW);
    let calls: Vec<String> =
        counter(&g.snapshot(T), "traces_spanmetrics_calls_total").into_iter().map(|c| c.0).collect();
    assert!(calls[0].starts_with("env=from-resource,"), "{calls:?}");
    assert!(calls[1].starts_with("env=from-span,"), "{calls:?}");
}

#[test]
fn c9_5_excluding_status_code_merges_ok_and_error() {
    let g = generator(|c| c.span_metrics.intrinsic_dimensions.status_code = false);
    let spans = [span(1, 1, 0, SERVER), S { error: true, ..span(1, 2, 0, SERVER) }];
    g.observe(T, &request(svc("A"), &spans), NOW);
    assert_eq!(
        counter(&g.snapshot(T), "traces_spanmetrics_calls_total"),
        [("service=A,span_kind=SPAN_KIND_SERVER,span_name=op".to_string(), 2.0)]
    );
}

#[test]
fn c9_6_counters_are_cumulative_across_snapshots() {
    let g = generator(|_| {});
    let spans: Vec<S> = (1..=3).map(|i| span(1, i, 0, SERVER)).collect();
    g.observe(T, &request(svc("A"), &spans), NOW);
    assert_eq!(counter(&g.snapshot(T), "traces_spanmetrics_calls_total")[0].1, 3.0);
    g.observe(T, &request(svc("A"), &spans[..2]), NOW + 1000 * MS);
    assert_eq!(counter(&g.snapshot(T), "traces_spanmetrics_calls_total")[0].1, 5.0);
}

#[test]
fn c9_7_end_before_start_counts_as_zero() {
    let g = generator(|_| {});
    let mut req = request(svc("A"), &[span(1, 1, 0, SERVER)]);
    let s = &mut req.resource_spans[0].scope_spans[0].spans[0];
    s.start_time_unix_nano = NOW + 5 * MS;
    g.observe(T, &req, NOW);
    let h = histogram(
        &g.snapshot(T),
        "traces_spanmetrics_latency",
        "service=A,span_kind=SPAN_KIND_SERVER,span_name=op,status_code=STATUS_CODE_UNSET",
    );
    assert_eq!((h.sum, h.counts[0]), (0.0, 1.0));
}

#[test]
fn c9_8_exemplars_carry_trace_and_span_ids() {
    let g = generator(|_| {});
    g.observe(T, &request(svc("A"), &[S { ms: 3, ..span(0xab, 0xcd, 0, SERVER) }]), NOW);
    let h = histogram(
        &g.snapshot(T),
        "traces_spanmetrics_latency",
        "service=A,span_kind=SPAN_KIND_SERVER,span_name=op,status_code=STATUS_CODE_UNSET",
    );
    let ex = h.exemplars[1].as_ref().expect("an exemplar on the ≤4ms bucket");
    assert_eq!(ex.labels, [("traceID".to_string(), "ab".repeat(16)), ("spanID".to_string(), "cd".repeat(8))]);
    assert!((ex.value - 0.003).abs() < 1e-12);
    assert_eq!(ex.timestamp_ms, (NOW / MS) as i64);
    assert!(h.exemplars[0].is_none());
    let g = generator(|c| c.span_metrics.exemplars = false);
    g.observe(T, &request(svc("A"), &[span(1, 1, 0, SERVER)]), NOW);
    let h = histogram(
        &g.snapshot(T),
        "traces_spanmetrics_latency",
        "service=A,span_kind=SPAN_KIND_SERVER,span_name=op,status_code=STATUS_CODE_UNSET",
    );
    assert!(h.exemplars.iter().all(Option::is_none));
}

#[test]
fn c9_10_idle_series_go_stale() {
    let g = generator(|c| {
        c.registry.stale_duration = std::time::Duration::from_secs(300);
        c.ingestion_time_range_slack = std::time::Duration::ZERO;
        c.processors = vec!["span-metrics".into()];
    });
    g.observe(T, &request(svc("A"), &[span(1, 1, 0, SERVER)]), NOW);
    g.observe(T, &request(svc("B"), &[span(1, 2, 0, SERVER)]), NOW + 120_000 * MS);
    g.tick(NOW + 360_000 * MS);
    let calls = counter(&g.snapshot(T), "traces_spanmetrics_calls_total");
    assert_eq!(calls.len(), 1, "A idle for 6 minutes is gone: {calls:?}");
    assert!(calls[0].0.starts_with("service=B"));
    assert_eq!(g.counts(T).active_series, 1 + 1 + 17);
}

#[test]
fn c9_11_two_resources_two_series() {
    let g = generator(|_| {});
    let mut req = request(svc("A"), &[span(1, 1, 0, SERVER)]);
    req.resource_spans.extend(request(svc("B"), &[span(1, 2, 0, SERVER)]).resource_spans);
    g.observe(T, &req, NOW);
    let calls = counter(&g.snapshot(T), "traces_spanmetrics_calls_total");
    assert!(calls[0].0.starts_with("service=A") && calls[1].0.starts_with("service=B"), "{calls:?}");
}

#[test]
fn size_counts_encoded_bytes_and_multiplier_scales() {
    use prost::Message;
    let g = generator(|c| c.span_metrics.span_multiplier_key = "sampling.ratio".into());
    let mut s = span(1, 1, 0, SERVER);
    s.attrs.push(KeyValue {
        key: "sampling.ratio".into(),
        value: Some(AnyValue { value: Some(any_value::Value::DoubleValue(0.25)) }),
    });
    let req = request(svc("A"), &[s.clone()]);
    g.observe(T, &req, NOW);
    let snap = g.snapshot(T);
    assert_eq!(counter(&snap, "traces_spanmetrics_calls_total")[0].1, 4.0);
    let size = to_span(&s).encoded_len() as f64;
    assert_eq!(counter(&snap, "traces_spanmetrics_size_total")[0].1, size * 4.0);
}

#[test]
fn series_limit_folds_into_overflow_and_counts() {
    // One span-metrics label set costs 1 + 1 + 17 series.
    let g = generator(|c| {
        c.registry.max_active_series = 2 * 19;
        c.processors = vec!["span-metrics".into()];
    });
    let spans: Vec<S> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, n)| S { name: n, ..span(1, i as u8 + 1, 0, SERVER) })
        .collect();
    g.observe(T, &request(svc("A"), &spans), NOW);
    let calls = counter(&g.snapshot(T), "traces_spanmetrics_calls_total");
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0], ("metric_overflow=true".to_string(), 2.0));
    let c = g.counts(T);
    assert_eq!((c.series_limited, c.active_series), (2, 38));
}

#[test]
fn a_tenant_can_have_its_own_series_budget() {
    let g = generator(|c| c.processors = vec!["span-metrics".into()]);
    g.set_series_limits([("small".to_string(), 19)].into());
    let spans: Vec<S> =
        ["a", "b"].iter().enumerate().map(|(i, n)| S { name: n, ..span(1, i as u8 + 1, 0, SERVER) }).collect();
    for t in ["small", "big"] {
        g.observe(t, &request(svc("A"), &spans), NOW);
    }
    assert_eq!(g.counts("small").series_limited, 1);
    assert_eq!(g.counts("big").series_limited, 0);
    // Lifted while running: new series fit again.
    g.set_series_limits(Default::default());
    g.observe("small", &request(svc("A"), &[S { name: "c", ..span(1, 3, 0, SERVER) }]), NOW);
    assert_eq!((g.counts("small").series_limited, g.counts("small").active_series), (1, 38));
}

#[test]
fn a_runaway_label_is_capped() {
    let g = generator(|c| {
        c.registry.max_cardinality_per_label = 3;
        c.processors = vec!["span-metrics".into()];
    });
    // A span name with an ID in it: every span a new value.
    let spans: Vec<S> = (1..=10u8)
        .map(|i| S { name: Box::leak(format!("GET /users/{i}").into_boxed_str()), ..span(1, i, 0, SERVER) })
        .collect();
    g.observe(T, &request(svc("A"), &spans), NOW);
    let calls = counter(&g.snapshot(T), "traces_spanmetrics_calls_total");
    let names: Vec<&str> =
        calls.iter().map(|(l, _)| l.split(",span_name=").nth(1).unwrap().split(',').next().unwrap()).collect();
    assert_eq!(names, ["GET /users/1", "GET /users/2", "GET /users/3", "__cardinality_overflow__"]);
    assert_eq!(calls[3].1, 7.0, "every span is still counted");
    assert_eq!(g.counts(T).label_values_limited, 7);
}

#[test]
fn filter_policies_choose_the_spans_counted() {
    let yaml = "span_metrics:\n  filter_policies:\n    - include: {match_type: strict, attributes: [{key: kind, value: SPAN_KIND_SERVER}]}\n      exclude: {match_type: regex, attributes: [{key: name, value: health}]}\n";
    let c: GeneratorConfig = serde_saphyr::from_str(yaml).unwrap();
    let g = Generator::new(&c).unwrap();
    let spans = [
        S { name: "GET /x", ..span(1, 1, 0, SERVER) },
        S { name: "GET /healthz", ..span(1, 2, 0, SERVER) },
        S { name: "SELECT", ..span(1, 3, 1, CLIENT) },
    ];
    g.observe(T, &request(svc("A"), &spans), NOW);
    let calls = counter(&g.snapshot(T), "traces_spanmetrics_calls_total");
    assert_eq!(
        calls,
        [("service=A,span_kind=SPAN_KIND_SERVER,span_name=GET /x,status_code=STATUS_CODE_UNSET".to_string(), 1.0)]
    );
    // The service graph still sees every span.
    assert_eq!(counter(&g.snapshot(T), "traces_service_graph_request_total").len(), 1);
}

#[test]
fn old_spans_are_not_counted() {
    let g = generator(|_| {});
    g.observe(T, &request(svc("A"), &[span(1, 1, 0, SERVER)]), NOW + 31_000 * MS);
    assert!(g.snapshot(T).is_empty());
    assert_eq!(g.counts(T).spans_too_old, 1);
    let g = generator(|c| c.ingestion_time_range_slack = std::time::Duration::ZERO);
    g.observe(T, &request(svc("A"), &[span(1, 1, 0, SERVER)]), NOW + 31_000 * MS);
    assert!(!g.snapshot(T).is_empty());
}

#[test]
fn tenants_are_apart() {
    let g = generator(|_| {});
    g.observe("t1", &request(svc("A"), &[span(1, 1, 0, SERVER)]), NOW);
    g.observe("t2", &request(svc("B"), &[span(1, 1, 0, SERVER)]), NOW);
    assert_eq!(g.tenants(), ["t1", "t2"]);
    assert!(counter(&g.snapshot("t1"), "traces_spanmetrics_calls_total")[0].0.starts_with("service=A"));
    assert!(counter(&g.snapshot("t2"), "traces_spanmetrics_calls_total")[0].0.starts_with("service=B"));
}

// §7.10 Service graph

const EDGE_AB: &str = "client=A,server=B";

fn graph_only(edit: impl FnOnce(&mut GeneratorConfig)) -> Generator {
    generator(|c| {
        c.processors = vec!["service-graphs".into()];
        edit(c);
    })
}

#[test]
fn c10_1_client_and_server_pair() {
    let g = graph_only(|_| {});
    g.observe(T, &request(svc("A"), &[S { ms: 300, ..span(1, 7, 0, CLIENT) }]), NOW);
    g.observe(T, &request(svc("B"), &[S { ms: 150, ..span(1, 8, 7, SERVER) }]), NOW);
    let snap = g.snapshot(T);
    assert_eq!(counter(&snap, "traces_service_graph_request_total"), [(EDGE_AB.to_string(), 1.0)]);
    assert_eq!(counter(&snap, "traces_service_graph_request_failed_total"), [(EDGE_AB.to_string(), 0.0)]);
    let client = histogram(&snap, "traces_service_graph_request_client_seconds", EDGE_AB);
    let server = histogram(&snap, "traces_service_graph_request_server_seconds", EDGE_AB);
    assert!((client.sum - 0.3).abs() < 1e-9 && (server.sum - 0.15).abs() < 1e-9);
    assert_eq!(client.counts[2], 1.0, "0.3 s is in the ≤0.4 bucket");
    assert_eq!(server.counts[1], 1.0, "0.15 s is in the ≤0.2 bucket");
    assert_eq!(&client.bounds[..], &[0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8]);
    assert_eq!(g.counts(T).pending_edges, 0);
}

#[test]
fn c10_2_either_side_error_fails_the_request() {
    let g = graph_only(|_| {});
    g.observe(T, &request(svc("A"), &[span(1, 7, 0, CLIENT)]), NOW);
    g.observe(T, &request(svc("B"), &[S { error: true, ..span(1, 8, 7, SERVER) }]), NOW);
    g.observe(T, &request(svc("A"), &[S { error: true, ..span(2, 7, 0, CLIENT) }]), NOW);
    g.observe(T, &request(svc("B"), &[span(2, 8, 7, SERVER)]), NOW);
    let snap = g.snapshot(T);
    assert_eq!(counter(&snap, "traces_service_graph_request_total"), [(EDGE_AB.to_string(), 2.0)]);
    assert_eq!(counter(&snap, "traces_service_graph_request_failed_total"), [(EDGE_AB.to_string(), 2.0)]);
}

#[test]
fn c10_3_server_before_client() {
    let g = graph_only(|_| {});
    g.observe(T, &request(svc("B"), &[span(1, 8, 7, SERVER)]), NOW);
    assert_eq!(g.counts(T).pending_edges, 1);
    g.observe(T, &request(svc("A"), &[span(1, 7, 0, CLIENT)]), NOW);
    assert_eq!(counter(&g.snapshot(T), "traces_service_graph_request_total"), [(EDGE_AB.to_string(), 1.0)]);
}

#[test]
fn c10_4_producer_consumer_is_messaging() {
    let g = graph_only(|c| c.service_graphs.enable_messaging_system_latency_histogram = true);
    g.observe(T, &request(svc("A"), &[span(1, 7, 0, PRODUCER)]), NOW);
    let mut consumer = request(svc("B"), &[span(1, 8, 7, CONSUMER)]);
    // The consumer starts 250 ms after the producer ended.
    let s = &mut consumer.resource_spans[0].scope_spans[0].spans[0];
    s.start_time_unix_nano = NOW + 250 * MS;
    s.end_time_unix_nano = NOW + 300 * MS;
    g.observe(T, &consumer, NOW);
    let snap = g.snapshot(T);
    let labels = "client=A,connection_type=messaging_system,server=B";
    assert_eq!(counter(&snap, "traces_service_graph_request_total"), [(labels.to_string(), 1.0)]);
    let m = histogram(&snap, "traces_service_graph_request_messaging_system_seconds", labels);
    assert!((m.sum - 0.25).abs() < 1e-9);
}

#[test]
fn c10_5_database_client_completes_at_once() {
    let g = graph_only(|_| {});
    let db = S { attrs: vec![kv("db.name", "orders")], ..span(1, 7, 0, CLIENT) };
    let named = S { attrs: vec![kv("db.system", "postgresql"), kv("server.address", "pg-1")], ..span(1, 9, 0, CLIENT) };
    let by_addr = S {
        attrs: vec![
            kv("db.system", "redis"),
            kv("network.peer.address", "10.0.0.5"),
            KeyValue {
                key: "network.peer.port".into(),
                value: Some(AnyValue { value: Some(any_value::Value::IntValue(6379)) }),
            },
        ],
        ..span(1, 10, 0, CLIENT)
    };
    let peer = S { attrs: vec![kv("db.system", "mysql"), kv("peer.service", "billing-db")], ..span(1, 11, 0, CLIENT) };
    g.observe(T, &request(svc("A"), &[db, named, by_addr, peer]), NOW);
    let snap = g.snapshot(T);
    let totals: Vec<String> = counter(&snap, "traces_service_graph_request_total").into_iter().map(|c| c.0).collect();
    assert_eq!(
        totals,
        [
            "client=A,connection_type=database,server=10.0.0.5:6379",
            "client=A,connection_type=database,server=billing-db",
            "client=A,connection_type=database,server=orders",
            "client=A,connection_type=database,server=pg-1",
        ]
    );
    let h = histogram(
        &snap,
        "traces_service_graph_request_server_seconds",
        "client=A,connection_type=database,server=orders",
    );
    assert!((h.sum - 0.01).abs() < 1e-9, "server latency is the client span's duration");
    assert_eq!(g.counts(T).pending_edges, 0);
}

#[test]
fn c10_6_client_with_peer_becomes_virtual_server_after_wait() {
    let g = graph_only(|c| c.service_graphs.enable_virtual_node_label = true);
    g.observe(
        T,
        &request(svc("A"), &[S { attrs: vec![kv("peer.service", "stripe-api")], ..span(1, 7, 0, CLIENT) }]),
        NOW,
    );
    g.tick(NOW + 9_000 * MS);
    assert!(g.snapshot(T).is_empty(), "still waiting for a server span");
    g.tick(NOW + 10_000 * MS);
    assert_eq!(
        counter(&g.snapshot(T), "traces_service_graph_request_total"),
        [("client=A,connection_type=virtual_node,server=stripe-api,virtual_node=server".to_string(), 1.0)]
    );
}

#[test]
fn c10_7_root_server_span_is_called_by_user_or_its_peer() {
    let g = graph_only(|_| {});
    g.observe(T, &request(svc("B"), &[span(1, 8, 0, SERVER)]), NOW);
    g.observe(
        T,
        &request(svc("C"), &[S { attrs: vec![kv("peer.service", "mobile-app")], ..span(2, 8, 0, SERVER) }]),
        NOW,
    );
    g.tick(NOW + 10_000 * MS);
    let snap = g.snapshot(T);
    assert_eq!(
        counter(&snap, "traces_service_graph_request_total"),
        [
            ("client=mobile-app,connection_type=virtual_node,server=C".to_string(), 1.0),
            ("client=user,connection_type=virtual_node,server=B".to_string(), 1.0)
        ]
    );
    // A virtual client measured nothing.
    let c = histogram(
        &snap,
        "traces_service_graph_request_client_seconds",
        "client=user,connection_type=virtual_node,server=B",
    );
    assert_eq!(c.count, 0.0);
}

#[test]
fn uninstrumented_messaging_is_a_broker_node() {
    let g = graph_only(|_| {});
    // A producer nobody consumed (yet), and a root consumer fed by an uninstrumented producer.
    g.observe(
        T,
        &request(svc("A"), &[S { attrs: vec![kv("messaging.system", "kafka")], ..span(1, 7, 0, PRODUCER) }]),
        NOW,
    );
    g.observe(
        T,
        &request(svc("B"), &[S { attrs: vec![kv("messaging.system", "kafka")], ..span(2, 8, 0, CONSUMER) }]),
        NOW,
    );
    g.tick(NOW + 10_000 * MS);
    assert_eq!(
        counter(&g.snapshot(T), "traces_service_graph_request_total"),
        [
            ("client=A,connection_type=virtual_node,server=kafka".to_string(), 1.0),
            ("client=kafka,connection_type=virtual_node,server=B".to_string(), 1.0)
        ]
    );
}

#[test]
fn c10_8_unpaired_client_without_peer_expires_counted() {
    let g = graph_only(|_| {});
    g.observe(T, &request(svc("A"), &[span(1, 7, 0, CLIENT)]), NOW);
    g.observe(T, &request(svc("B"), &[span(2, 8, 5, SERVER)]), NOW);
    g.tick(NOW + 10_000 * MS);
    let snap = g.snapshot(T);
    assert!(family(&snap, "traces_service_graph_request_total").is_none());
    assert_eq!(
        counter(&snap, "traces_service_graph_unpaired_spans_total"),
        [("client=A".to_string(), 1.0), ("server=B".to_string(), 1.0)]
    );
    let c = g.counts(T);
    assert_eq!((c.expired_edges, c.pending_edges), (2, 0));
}

#[test]
fn c10_9_full_store_drops_and_counts() {
    let g = graph_only(|c| c.service_graphs.max_items = 2);
    let clients: Vec<S> = (1..=3).map(|i| span(i, 7, 0, CLIENT)).collect();
    g.observe(T, &request(svc("A"), &clients), NOW);
    let c = g.counts(T);
    assert_eq!((c.pending_edges, c.dropped_spans), (2, 1));
    assert_eq!(counter(&g.snapshot(T), "traces_service_graph_dropped_spans_total"), [("client=A".to_string(), 1.0)]);
    // The kept halves still pair.
    g.observe(T, &request(svc("B"), &[span(1, 8, 7, SERVER), span(2, 8, 7, SERVER)]), NOW);
    assert_eq!(counter(&g.snapshot(T), "traces_service_graph_request_total"), [(EDGE_AB.to_string(), 2.0)]);
}

#[test]
fn c10_10_same_span_id_in_two_traces_never_pairs() {
    let g = graph_only(|_| {});
    g.observe(T, &request(svc("A"), &[span(1, 7, 0, CLIENT)]), NOW);
    g.observe(T, &request(svc("B"), &[span(2, 8, 7, SERVER)]), NOW);
    assert!(g.snapshot(T).is_empty());
    assert_eq!(g.counts(T).pending_edges, 2);
}

#[test]
fn c10_11_resource_without_service_name_is_ignored() {
    let g = graph_only(|_| {});
    g.observe(T, &request(vec![kv("host.name", "h")], &[span(1, 7, 0, CLIENT)]), NOW);
    g.observe(T, &request(svc("B"), &[span(1, 8, 7, SERVER)]), NOW);
    assert!(g.snapshot(T).is_empty());
    assert_eq!(g.counts(T).pending_edges, 1, "only B's half waits");
}

#[test]
fn c10_12_dimensions_with_client_server_prefix() {
    let g = graph_only(|c| {
        c.service_graphs.dimensions = vec!["env".into()];
        c.service_graphs.enable_client_server_prefix = true;
    });
    g.observe(T, &request(vec![kv("service.name", "A"), kv("env", "prod")], &[span(1, 7, 0, CLIENT)]), NOW);
    g.observe(T, &request(vec![kv("service.name", "B"), kv("env", "staging")], &[span(1, 8, 7, SERVER)]), NOW);
    assert_eq!(
        counter(&g.snapshot(T), "traces_service_graph_request_total"),
        [("client=A,client_env=prod,server=B,server_env=staging".to_string(), 1.0)]
    );
}

#[test]
fn internal_spans_are_not_edges() {
    let g = graph_only(|_| {});
    g.observe(T, &request(svc("A"), &[span(1, 7, 3, 1), span(1, 8, 7, 0)]), NOW);
    assert!(g.snapshot(T).is_empty());
    assert_eq!(g.counts(T).pending_edges, 0);
}

#[test]
fn config_mistakes_name_their_key() {
    let bad = |edit: fn(&mut GeneratorConfig)| {
        let mut c = GeneratorConfig::default();
        edit(&mut c);
        Generator::new(&c).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(
        bad(|c| c.processors = vec!["host-info".into()]).contains("metrics_generator.processors: unknown processor")
    );
    assert!(bad(|c| c.span_metrics.histogram_buckets = vec![1.0, 0.5]).contains("span_metrics.histogram_buckets"));
    assert!(bad(|c| c.registry.inject_tenant_id_as = "a.b".into()).contains("inject_tenant_id_as"));
    let yaml = "processors: [span-metrics]\nspan_metrics:\n  dimensions: [http.method, {name: env, default: dev}]\n";
    let c: GeneratorConfig = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(c.span_metrics.dimensions[1], Dimension::WithDefault { name: "env".into(), default: "dev".into() });
    assert!(serde_saphyr::from_str::<GeneratorConfig>("span_metrics:\n  dimension: []\n").is_err());
}
