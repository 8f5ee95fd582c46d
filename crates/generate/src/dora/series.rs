//! The DORA events as Prometheus series, rebuilt from the durable events at each scrape (so
//! they are exact, survive restarts and need no registry of their own):
//! `spoor_dora_deployments_total{environment,service,outcome}`,
//! `spoor_dora_lead_time_seconds` (histogram), `spoor_dora_incidents_total{environment,service}`
//! and `spoor_dora_time_to_restore_seconds` (histogram).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Event;
use super::figures::Changes;
use crate::family::{Family, Histogram, Kind, Labels, Series, Value};

pub const DEPLOYMENTS_TOTAL: &str = "spoor_dora_deployments_total";
pub const LEAD_TIME_SECONDS: &str = "spoor_dora_lead_time_seconds";
pub const INCIDENTS_TOTAL: &str = "spoor_dora_incidents_total";
pub const TIME_TO_RESTORE_SECONDS: &str = "spoor_dora_time_to_restore_seconds";

/// Bucket bounds at the level thresholds (docs/dora.md) and between them: 5 m, 15 m, 1 h, 4 h,
/// 1 d, 1 w, 30 d, 180 d.
const BOUNDS: [f64; 8] = [300.0, 900.0, 3600.0, 14_400.0, 86_400.0, 604_800.0, 2_592_000.0, 15_552_000.0];

/// The four families of one tenant's events (empty families left out). `now_ms` stamps them.
pub fn families(events: &[&Event], now_ms: i64) -> Vec<Family> {
    let changes = Changes::new(events);
    let bounds: Arc<[f64]> = Arc::from(&BOUNDS[..]);
    let mut deployments: BTreeMap<Labels, f64> = BTreeMap::new();
    let mut incidents: BTreeMap<Labels, f64> = BTreeMap::new();
    let mut lead: BTreeMap<Labels, Histogram> = BTreeMap::new();
    let mut restore: BTreeMap<Labels, Histogram> = BTreeMap::new();
    for e in events {
        match e {
            Event::Deployment(d) => {
                let place = place(&d.environment, &d.service);
                let outcome = if d.failed { "failure" } else { "success" };
                let mut labels = place.clone();
                labels.push(("outcome".into(), outcome.into()));
                labels.sort();
                *deployments.entry(labels).or_default() += 1.0;
                if let (false, Some(l)) = (d.failed, changes.lead_time(d)) {
                    observe(lead.entry(place).or_insert_with(|| empty(&bounds)), l);
                }
            }
            Event::Incident(i) => {
                let place = place(&i.environment, &i.service);
                *incidents.entry(place.clone()).or_default() += 1.0;
                let seconds = i.end_ns.saturating_sub(i.start_ns) as f64 / 1e9;
                observe(restore.entry(place).or_insert_with(|| empty(&bounds)), seconds);
            }
            Event::Change(_) => {}
        }
    }
    // No creation time: the counts are rebuilt from stored events, so remote_write must not
    // put a 0 sample before them (that is for series that start counting now).
    let series = |labels: Labels, value: Value| Series { labels, value, updated_ms: now_ms, created_ms: i64::MIN };
    let out = vec![
        Family {
            name: DEPLOYMENTS_TOTAL.into(),
            kind: Kind::Counter,
            help: "Deployments seen in CI/CD traces, by outcome.",
            series: deployments.into_iter().map(|(l, v)| series(l, Value::Counter(v))).collect(),
        },
        Family {
            name: LEAD_TIME_SECONDS.into(),
            kind: Kind::Histogram,
            help: "Lead time of successful deployments: their end minus their trace's root span start.",
            series: lead.into_iter().map(|(l, h)| series(l, Value::Histogram(h))).collect(),
        },
        Family {
            name: INCIDENTS_TOTAL.into(),
            kind: Kind::Counter,
            help: "Incidents resolved (incident spans ended).",
            series: incidents.into_iter().map(|(l, v)| series(l, Value::Counter(v))).collect(),
        },
        Family {
            name: TIME_TO_RESTORE_SECONDS.into(),
            kind: Kind::Histogram,
            help: "Time to restore: incident span durations, opened to resolved.",
            series: restore.into_iter().map(|(l, h)| series(l, Value::Histogram(h))).collect(),
        },
    ];
    out.into_iter().filter(|f| !f.series.is_empty()).collect()
}

fn place(environment: &str, service: &str) -> Labels {
    vec![("environment".into(), environment.into()), ("service".into(), service.into())]
}

fn empty(bounds: &Arc<[f64]>) -> Histogram {
    Histogram {
        bounds: bounds.clone(),
        counts: vec![0.0; bounds.len() + 1],
        sum: 0.0,
        count: 0.0,
        exemplars: vec![None; bounds.len() + 1],
        classic: true,
        native: None,
    }
}

fn observe(h: &mut Histogram, v: f64) {
    let i = h.bounds.iter().position(|&b| v <= b).unwrap_or(h.bounds.len());
    h.counts[i] += 1.0;
    h.sum += v;
    h.count += 1.0;
}
