use spoor_model::otlp::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status, any_value,
};

use super::figures::{Filter, Level, compute, deployments, median, quantile};
use super::series::families;
use super::{Change, Deployment, Event, Incident};

const S: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * S;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }) }
}

fn span(trace: u8, id: u8, parent: u8, start: u64, end: u64, attrs: &[(&str, &str)], error: bool) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: "s".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        status: error.then(|| Status { message: String::new(), code: 2 }),
        ..Default::default()
    }
}

fn request(resource: &[(&str, &str)], spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn deploy(trace: &str, end: u64, env: &str, service: &str, failed: bool, id: &str) -> Event {
    Event::Deployment(Deployment {
        trace_id: trace.into(),
        span_id: format!("{trace}-d"),
        start_ns: end.saturating_sub(10 * S),
        end_ns: end,
        environment: env.into(),
        service: service.into(),
        failed,
        deployment_id: id.into(),
        ..Default::default()
    })
}

fn change(trace: &str, start: u64) -> Event {
    Event::Change(Change { trace_id: trace.into(), span_id: format!("{trace}-r"), start_ns: start })
}

fn incident(id: &str, start: u64, end: u64, env: &str, service: &str, cause: &str) -> Event {
    Event::Incident(Incident {
        trace_id: id.into(),
        span_id: id.into(),
        incident_id: id.into(),
        start_ns: start,
        end_ns: end,
        environment: env.into(),
        service: service.into(),
        cause_deployment_id: cause.into(),
    })
}

#[test]
fn medians_average_the_two_middle_values() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0]), Some(3.0));
    assert_eq!(median(&[1.0, 2.0, 10.0]), Some(2.0));
    assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), Some(3.0));
    assert_eq!(quantile(&[], 0.9), None);
    assert_eq!(quantile(&[5.0], 0.9), Some(5.0));
    // Position (11-1)·0.9 = 9: the tenth value.
    let v: Vec<f64> = (1..=11).map(f64::from).collect();
    assert_eq!(quantile(&v, 0.9), Some(10.0));
    // Position (3-1)·0.9 = 1.8: 20 + 0.8·(40-20).
    assert_eq!(quantile(&[10.0, 20.0, 40.0], 0.9), Some(36.0));
}

#[test]
fn the_window_is_start_inclusive_and_end_exclusive() {
    let events = [deploy("a", 10 * DAY, "prod", "api", false, ""), deploy("b", 12 * DAY, "prod", "api", false, "")];
    let refs: Vec<&Event> = events.iter().collect();
    let f = Filter { start_ns: 10 * DAY, end_ns: 12 * DAY, ..Filter::default() };
    let fig = compute(&refs, &f);
    assert_eq!(fig.deployments, 1);
    assert_eq!(fig.deployment_frequency_per_day, 0.5);
    let f = Filter { start_ns: 10 * DAY + 1, end_ns: 12 * DAY + 1, ..Filter::default() };
    assert_eq!(deployments(&refs, &f).iter().map(|r| r.trace_id.as_str()).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn figures_follow_the_definitions() {
    let events = [
        change("t1", DAY),
        deploy("t1", DAY + 600 * S, "prod", "api", false, "d1"),
        change("t2", 2 * DAY),
        deploy("t2", 2 * DAY + 1800 * S, "prod", "api", false, "d2"),
        change("t3", 3 * DAY),
        deploy("t3", 3 * DAY + 60 * S, "prod", "web", true, "d3"),
        // No change known: counts, but has no lead time.
        deploy("t4", 4 * DAY, "prod", "web", false, "d4"),
        deploy("t5", 4 * DAY, "staging", "api", false, "d5"),
        incident("i1", 2 * DAY + 3600 * S, 2 * DAY + 5400 * S, "prod", "api", "d2"),
        incident("i2", 5 * DAY, 5 * DAY + 600 * S, "prod", "web", ""),
        // Names a failed deployment: counted once, as a failure.
        incident("i3", 5 * DAY, 5 * DAY + 60 * S, "prod", "web", "d3"),
    ];
    let refs: Vec<&Event> = events.iter().collect();
    let f = Filter { environment: Some("prod".into()), service: None, start_ns: 0, end_ns: 10 * DAY };
    let fig = compute(&refs, &f);
    assert_eq!(fig.deployments, 4);
    assert_eq!(fig.failed_deployments, 1);
    assert_eq!(fig.deployment_frequency_per_day, 0.3);
    assert_eq!(fig.lead_time_seconds.median, Some(1200.0));
    assert_eq!(fig.lead_time_seconds.p90, Some(600.0 + 0.9 * 1200.0));
    assert_eq!(fig.change_failure_rate, Some(0.5));
    assert_eq!(fig.incidents, 3);
    assert_eq!(fig.time_to_restore_seconds.median, Some(600.0));
    assert_eq!(fig.levels.deployment_frequency, Some(Level::High));
    assert_eq!(fig.levels.lead_time, Some(Level::Elite));
    assert_eq!(fig.levels.change_failure_rate, Some(Level::Low));
    assert_eq!(fig.levels.time_to_restore, Some(Level::Elite));

    let api = Filter { service: Some("api".into()), ..f.clone() };
    let fig = compute(&refs, &api);
    assert_eq!((fig.deployments, fig.failed_deployments, fig.incidents), (2, 0, 1));
    assert_eq!(fig.change_failure_rate, Some(0.5));
    assert_eq!(super::figures::services(&refs, &f), ["api", "web"]);

    let rows = deployments(&refs, &api);
    assert_eq!(rows[1].caused_incidents, ["i1"]);
    assert_eq!(rows[1].lead_time_seconds, Some(1800.0));
    assert_eq!(rows[1].change_time, Some(2.0 * 86_400.0));

    let none = compute(&[], &f);
    assert_eq!(none.change_failure_rate, None);
    assert_eq!(none.levels.deployment_frequency, Some(Level::Low));
    assert_eq!(none.levels.lead_time, None);
    let json = serde_json::to_value(&none).unwrap();
    assert_eq!(json["lead_time_seconds"], serde_json::json!({"median": null, "p90": null}));
    assert!(json.get("service").is_none());
}

#[test]
fn levels_at_their_thresholds() {
    use super::figures::*;
    assert_eq!(deployment_frequency_level(1.0), Level::Elite);
    assert_eq!(deployment_frequency_level(1.0 / 7.0), Level::High);
    assert_eq!(deployment_frequency_level(0.1), Level::Medium);
    assert_eq!(deployment_frequency_level(0.01), Level::Low);
    assert_eq!(lead_time_level(3599.0), Level::Elite);
    assert_eq!(lead_time_level(3600.0), Level::High);
    assert_eq!(lead_time_level(604_800.0), Level::High);
    assert_eq!(lead_time_level(604_801.0), Level::Medium);
    assert_eq!(lead_time_level(200.0 * 86_400.0), Level::Low);
    assert_eq!(change_failure_rate_level(0.15), Level::Elite);
    assert_eq!(change_failure_rate_level(0.3), Level::High);
    assert_eq!(change_failure_rate_level(0.45), Level::Medium);
    assert_eq!(change_failure_rate_level(0.46), Level::Low);
    assert_eq!(time_to_restore_level(3599.0), Level::Elite);
    assert_eq!(time_to_restore_level(86_399.0), Level::High);
    assert_eq!(time_to_restore_level(604_800.0), Level::Medium);
    assert_eq!(time_to_restore_level(604_801.0), Level::Low);
}

#[test]
fn nothing_to_extract_from_ordinary_spans() {
    let req = request(&[("service.name", "api")], vec![span(1, 1, 0, S, 2 * S, &[("http.route", "/x")], false)]);
    assert!(super::extract::extract(&req).is_empty());
    // An environment or a revision on every span of a service makes no pipeline of it.
    let req = request(
        &[("service.name", "api"), ("deployment.environment.name", "prod"), ("vcs.ref.head.revision", "abc")],
        vec![span(1, 1, 0, S, 2 * S, &[("deployment.name", "api")], false)],
    );
    assert!(super::extract::extract(&req).is_empty());
    // A deployment.id alone (with an environment) is a deployment, and its own change.
    let req = request(
        &[("service.name", "api"), ("deployment.environment.name", "prod")],
        vec![span(1, 1, 0, S, 2 * S, &[("deployment.id", "d1")], false)],
    );
    let events = super::extract::extract(&req);
    assert!(matches!(&events[..], [Event::Deployment(_), Event::Change(_)]), "{events:?}");
}

#[test]
fn extracts_the_opentelemetry_conventions() {
    let req = request(
        &[("service.name", "ci"), ("deployment.environment.name", "prod")],
        vec![
            span(1, 1, 0, S, 100 * S, &[("cicd.pipeline.name", "main")], false),
            span(1, 2, 1, 50 * S, 90 * S, &[("cicd.pipeline.task.type", "build")], false),
            span(
                1,
                3,
                1,
                90 * S,
                100 * S,
                &[
                    ("cicd.pipeline.task.type", "deploy"),
                    ("deployment.name", "checkout"),
                    ("vcs.ref.head.revision", "abc"),
                    ("deployment.status", "succeeded"),
                ],
                true,
            ),
            span(2, 4, 0, 5 * S, 7 * S, &[("incident.id", "INC-1"), ("incident.cause.deployment.id", "d9")], false),
        ],
    );
    let events = super::extract::extract(&req);
    assert_eq!(events.len(), 3, "{events:?}");
    let Event::Change(c) = &events[0] else { panic!("{events:?}") };
    assert_eq!((c.trace_id.as_str(), c.start_ns), ("01010101010101010101010101010101", S));
    let Event::Deployment(d) = &events[1] else { panic!("{events:?}") };
    // deployment.status wins over the span's error status.
    assert!(!d.failed);
    assert_eq!((d.service.as_str(), d.environment.as_str(), d.revision.as_str()), ("checkout", "prod", "abc"));
    assert_eq!(d.end_ns, 100 * S);
    let Event::Incident(i) = &events[2] else { panic!("{events:?}") };
    assert_eq!((i.service.as_str(), i.environment.as_str(), i.cause_deployment_id.as_str()), ("ci", "prod", "d9"));
    // Incidents are not changes, even as roots.
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Change(_))).count(), 1);
}

#[test]
fn maps_jenkins_legacy_names_and_argocd_syncs() {
    let req = request(
        &[("service.name", "jenkins")],
        vec![
            // A root with no attribute of its own: a change because its trace is a CI/CD one.
            span(3, 1, 0, S, 60 * S, &[], false),
            span(
                3,
                2,
                1,
                40 * S,
                60 * S,
                &[
                    ("ci.pipeline.name", "shop/main"),
                    ("ci.pipeline.task.type", "deploy"),
                    ("ci.pipeline.run.result", "FAILURE"),
                    ("git.branch", "main"),
                    ("git.repository", "https://git.example/shop"),
                    ("deployment.environment.name", "staging"),
                ],
                true,
            ),
            span(
                4,
                1,
                9,
                S,
                2 * S,
                &[
                    ("argocd.app.name", "cart"),
                    ("argocd.sync.phase", "Succeeded"),
                    ("argocd.sync.revision", "f00"),
                    ("argocd.app.destination.namespace", "prod"),
                ],
                false,
            ),
        ],
    );
    let events = super::extract::extract(&req);
    let deployments: Vec<&Deployment> =
        events.iter().filter_map(|e| if let Event::Deployment(d) = e { Some(d) } else { None }).collect();
    assert_eq!(deployments.len(), 2, "{events:?}");
    let j = deployments[0];
    assert!(j.failed);
    assert_eq!(
        (j.service.as_str(), j.pipeline.as_str(), j.result.as_str(), j.branch.as_str(), j.repository.as_str()),
        ("jenkins", "shop/main", "failure", "main", "https://git.example/shop")
    );
    let a = deployments[1];
    assert!(!a.failed);
    assert_eq!((a.service.as_str(), a.environment.as_str(), a.revision.as_str()), ("cart", "prod", "f00"));
    let changes: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::Change(_))).collect();
    assert_eq!(changes.len(), 1, "{events:?}");
}

#[test]
fn series_count_every_event() {
    let events = [
        change("t1", 0),
        deploy("t1", 600 * S, "prod", "api", false, ""),
        deploy("t2", 700 * S, "prod", "api", true, ""),
        incident("i1", 0, 7200 * S, "prod", "api", ""),
    ];
    let refs: Vec<&Event> = events.iter().collect();
    let fams = families(&refs, 0);
    let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "spoor_dora_deployments_total",
            "spoor_dora_lead_time_seconds",
            "spoor_dora_incidents_total",
            "spoor_dora_time_to_restore_seconds"
        ]
    );
    assert_eq!(fams[0].series.len(), 2);
    let crate::Value::Histogram(h) = &fams[1].series[0].value else { panic!() };
    assert_eq!((h.count, h.sum, h.counts[1]), (1.0, 600.0, 1.0));
    let crate::Value::Histogram(h) = &fams[3].series[0].value else { panic!() };
    assert_eq!((h.count, h.counts[3]), (1.0, 1.0));
}
