//! The four DORA figures over a window, exactly as docs/dora.md defines them, and the
//! deployments behind them.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::{Deployment, Event, Incident};

const NS: f64 = 1e9;
const DAY_NS: f64 = 86_400e9;

/// Which events count: `[start_ns, end_ns)` by a deployment's or incident's end, in one
/// environment and one service when given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub environment: Option<String>,
    pub service: Option<String>,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Filter {
    fn window(&self, t: u64) -> bool {
        self.start_ns <= t && t < self.end_ns
    }

    fn deployment(&self, d: &Deployment) -> bool {
        self.window(d.end_ns) && self.place(&d.environment, &d.service)
    }

    fn incident(&self, i: &Incident) -> bool {
        self.window(i.end_ns) && self.place(&i.environment, &i.service)
    }

    fn place(&self, environment: &str, service: &str) -> bool {
        self.environment.as_deref().is_none_or(|e| e == environment)
            && self.service.as_deref().is_none_or(|s| s == service)
    }
}

/// What `GET /api/dora` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Set in a `by=service` answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub deployments: u64,
    pub failed_deployments: u64,
    pub deployment_frequency_per_day: f64,
    pub lead_time_seconds: Stats,
    /// None without deployments.
    pub change_failure_rate: Option<f64>,
    pub time_to_restore_seconds: Restore,
    pub incidents: u64,
    pub levels: Levels,
}

/// A median and 90th percentile, None without values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Restore {
    pub median: Option<f64>,
}

/// The DORA research's performance levels; None where a figure has no data.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Levels {
    pub deployment_frequency: Option<Level>,
    pub lead_time: Option<Level>,
    pub change_failure_rate: Option<Level>,
    pub time_to_restore: Option<Level>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Elite,
    High,
    Medium,
    Low,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Elite => "elite",
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
        }
    }
}

const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;
const WEEK: f64 = 7.0 * DAY;

/// Deployments per day: elite on demand (at least daily), high at least weekly, medium at
/// least monthly (30 days).
pub fn deployment_frequency_level(per_day: f64) -> Level {
    if per_day >= 1.0 {
        Level::Elite
    } else if per_day >= 1.0 / 7.0 {
        Level::High
    } else if per_day >= 1.0 / 30.0 {
        Level::Medium
    } else {
        Level::Low
    }
}

/// Median lead time: elite under an hour, high up to a week, medium up to six months (180 days).
pub fn lead_time_level(seconds: f64) -> Level {
    if seconds < HOUR {
        Level::Elite
    } else if seconds <= WEEK {
        Level::High
    } else if seconds <= 180.0 * DAY {
        Level::Medium
    } else {
        Level::Low
    }
}

/// Change failure rate: elite up to 15 %, high up to 30 %, medium up to 45 %.
pub fn change_failure_rate_level(rate: f64) -> Level {
    if rate <= 0.15 {
        Level::Elite
    } else if rate <= 0.30 {
        Level::High
    } else if rate <= 0.45 {
        Level::Medium
    } else {
        Level::Low
    }
}

/// Median time to restore: elite under an hour, high under a day, medium up to a week.
pub fn time_to_restore_level(seconds: f64) -> Level {
    if seconds < HOUR {
        Level::Elite
    } else if seconds < DAY {
        Level::High
    } else if seconds <= WEEK {
        Level::Medium
    } else {
        Level::Low
    }
}

/// The median: the middle value, or the mean of the two middle ones for an even count.
/// `sorted` ascending.
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The `q` quantile by linear interpolation between the closest ranks (position `(n-1)·q`,
/// numpy's default). `sorted` ascending.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = last as f64 * q.clamp(0.0, 1.0);
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(if lo == hi { sorted[lo] } else { sorted[lo] + (sorted[hi] - sorted[lo]) * frac })
}

/// Where lead times come from: each CI/CD trace's change time (its root span's start).
pub struct Changes<'a>(HashMap<&'a str, u64>);

impl<'a> Changes<'a> {
    pub fn new(events: &[&'a Event]) -> Changes<'a> {
        let mut m: HashMap<&str, u64> = HashMap::new();
        for e in events {
            if let Event::Change(c) = e {
                let t = m.entry(&c.trace_id).or_insert(c.start_ns);
                *t = (*t).min(c.start_ns);
            }
        }
        Changes(m)
    }

    /// A deployment's change time (unix ns); None when its trace's root span never arrived.
    pub fn change_ns(&self, d: &Deployment) -> Option<u64> {
        self.0.get(d.trace_id.as_str()).copied()
    }

    /// A deployment's lead time in seconds (0 for a root span that started after it ended).
    pub fn lead_time(&self, d: &Deployment) -> Option<f64> {
        self.change_ns(d).map(|c| d.end_ns.saturating_sub(c) as f64 / NS)
    }
}

/// The `deployment.id`s an incident names as its cause.
fn causes<'a>(events: &[&'a Event]) -> HashMap<&'a str, Vec<&'a str>> {
    let mut m: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in events {
        if let Event::Incident(i) = e
            && !i.cause_deployment_id.is_empty()
        {
            m.entry(i.cause_deployment_id.as_str()).or_default().push(i.incident_id.as_str());
        }
    }
    m
}

/// The figures over `events` (every event of the tenant: changes and causes are looked up
/// outside the window).
pub fn compute(events: &[&Event], f: &Filter) -> Figures {
    let changes = Changes::new(events);
    let causes = causes(events);
    let mut deployments = 0u64;
    let mut failed = 0u64;
    let mut caused = 0u64;
    let mut lead_times = Vec::new();
    let mut restores = Vec::new();
    for e in events {
        match e {
            Event::Deployment(d) if f.deployment(d) => {
                deployments += 1;
                if d.failed {
                    failed += 1;
                    continue;
                }
                if !d.deployment_id.is_empty() && causes.contains_key(d.deployment_id.as_str()) {
                    caused += 1;
                }
                lead_times.extend(changes.lead_time(d));
            }
            Event::Incident(i) if f.incident(i) => restores.push(i.end_ns.saturating_sub(i.start_ns) as f64 / NS),
            _ => {}
        }
    }
    lead_times.sort_by(f64::total_cmp);
    restores.sort_by(f64::total_cmp);
    let days = f.end_ns.saturating_sub(f.start_ns) as f64 / DAY_NS;
    let successful = deployments - failed;
    let per_day = if days > 0.0 { successful as f64 / days } else { 0.0 };
    let lead_time_seconds = Stats { median: median(&lead_times), p90: quantile(&lead_times, 0.9) };
    let change_failure_rate = (deployments > 0).then(|| (failed + caused) as f64 / deployments as f64);
    let time_to_restore_seconds = Restore { median: median(&restores) };
    let levels = Levels {
        deployment_frequency: Some(deployment_frequency_level(per_day)),
        lead_time: lead_time_seconds.median.map(lead_time_level),
        change_failure_rate: change_failure_rate.map(change_failure_rate_level),
        time_to_restore: time_to_restore_seconds.median.map(time_to_restore_level),
    };
    Figures {
        service: f.service.clone(),
        deployments,
        failed_deployments: failed,
        deployment_frequency_per_day: per_day,
        lead_time_seconds,
        change_failure_rate,
        time_to_restore_seconds,
        incidents: restores.len() as u64,
        levels,
    }
}

/// The services with a deployment or an incident in the window (and environment), sorted.
pub fn services(events: &[&Event], f: &Filter) -> Vec<String> {
    let all = Filter { service: None, ..f.clone() };
    let mut out = BTreeSet::new();
    for e in events {
        match e {
            Event::Deployment(d) if all.deployment(d) => out.insert(d.service.clone()),
            Event::Incident(i) if all.incident(i) => out.insert(i.service.clone()),
            _ => false,
        };
    }
    out.into_iter().collect()
}

/// One deployment as `GET /api/dora/deployments` lists it: everything a timeline shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Unix nanoseconds of the deployment's end, exactly (for the hints' windows).
    #[serde(skip)]
    pub end_ns: u64,
    /// Unix seconds of the deployment's end (its time) and start.
    pub time: f64,
    pub start: f64,
    pub service: String,
    pub environment: String,
    /// `success` or `failure`.
    pub outcome: &'static str,
    pub revision: String,
    pub branch: String,
    pub repository: String,
    pub change_id: String,
    pub pipeline: String,
    pub run_id: String,
    pub result: String,
    pub deployment_id: String,
    pub lead_time_seconds: Option<f64>,
    /// Unix seconds of the change (its trace's root span start), when known.
    pub change_time: Option<f64>,
    /// The `incident.id`s naming this deployment as their cause.
    pub caused_incidents: Vec<String>,
    pub trace_id: String,
    pub span_id: String,
}

/// The deployments in the window, oldest first.
pub fn deployments(events: &[&Event], f: &Filter) -> Vec<Row> {
    let changes = Changes::new(events);
    let causes = causes(events);
    let mut seen = HashSet::new();
    let mut rows: Vec<Row> = events
        .iter()
        .filter_map(|e| match e {
            Event::Deployment(d) if f.deployment(d) && seen.insert((&d.trace_id, &d.span_id)) => Some(d),
            _ => None,
        })
        .map(|d| {
            let lead = changes.lead_time(d);
            Row {
                end_ns: d.end_ns,
                time: d.end_ns as f64 / NS,
                start: d.start_ns as f64 / NS,
                service: d.service.clone(),
                environment: d.environment.clone(),
                outcome: if d.failed { "failure" } else { "success" },
                revision: d.revision.clone(),
                branch: d.branch.clone(),
                repository: d.repository.clone(),
                change_id: d.change_id.clone(),
                pipeline: d.pipeline.clone(),
                run_id: d.run_id.clone(),
                result: d.result.clone(),
                deployment_id: d.deployment_id.clone(),
                lead_time_seconds: lead,
                change_time: changes.change_ns(d).map(|c| c as f64 / NS),
                caused_incidents: (!d.deployment_id.is_empty())
                    .then(|| causes.get(d.deployment_id.as_str()))
                    .flatten()
                    .map(|ids| ids.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
                trace_id: d.trace_id.clone(),
                span_id: d.span_id.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.time.total_cmp(&b.time).then_with(|| a.trace_id.cmp(&b.trace_id)));
    rows
}

/// One incident as `GET /api/dora/deployments` lists it beside the deployments.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentRow {
    pub incident_id: String,
    /// Unix seconds: opened and resolved.
    pub start: f64,
    pub end: f64,
    pub duration_seconds: f64,
    pub service: String,
    pub environment: String,
    /// The `deployment.id` named as its cause, empty when none.
    pub cause_deployment_id: String,
    pub trace_id: String,
    pub span_id: String,
}

/// The incidents resolved in the window, oldest first.
pub fn incidents(events: &[&Event], f: &Filter) -> Vec<IncidentRow> {
    let mut rows: Vec<IncidentRow> = events
        .iter()
        .filter_map(|e| match e {
            Event::Incident(i) if f.incident(i) => Some(IncidentRow {
                incident_id: i.incident_id.clone(),
                start: i.start_ns as f64 / NS,
                end: i.end_ns as f64 / NS,
                duration_seconds: i.end_ns.saturating_sub(i.start_ns) as f64 / NS,
                service: i.service.clone(),
                environment: i.environment.clone(),
                cause_deployment_id: i.cause_deployment_id.clone(),
                trace_id: i.trace_id.clone(),
                span_id: i.span_id.clone(),
            }),
            _ => None,
        })
        .collect();
    rows.sort_by(|a, b| a.end.total_cmp(&b.end).then_with(|| a.trace_id.cmp(&b.trace_id)));
    rows
}
