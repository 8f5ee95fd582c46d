//! DORA metrics from CI/CD traces (docs/dora.md): the events worth keeping (deployments,
//! incidents, the change that started a pipeline), found in a decoded request at ingest
//! ([`extract`]), and the four figures and their levels computed from them ([`figures`]), also
//! as Prometheus series ([`series`]).
//!
//! Pure: the server keeps the events durable and answers the API; everything here is testable
//! without it.

pub mod extract;
pub mod figures;
pub mod series;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

/// Something DORA needs from one span, kept per tenant. Keyed by (kind, trace, span) so a span
/// sent twice (a client's retry) counts once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Deployment(Deployment),
    Incident(Incident),
    /// The start of a CI/CD trace's root span: the change (push, merge) that started the
    /// pipeline, for the lead time of the trace's deployments.
    Change(Change),
}

impl Event {
    /// What makes two events the same: their kind, trace ID and span ID.
    pub fn key(&self) -> (u8, &str, &str) {
        match self {
            Event::Deployment(d) => (0, &d.trace_id, &d.span_id),
            Event::Incident(i) => (1, &i.trace_id, &i.span_id),
            Event::Change(c) => (2, &c.trace_id, &c.span_id),
        }
    }

    /// When it happened, for retention: a deployment's or incident's end, a change's start.
    pub fn time_ns(&self) -> u64 {
        match self {
            Event::Deployment(d) => d.end_ns,
            Event::Incident(i) => i.end_ns,
            Event::Change(c) => c.start_ns,
        }
    }
}

/// A deployment span (docs/dora.md, "Definitions"). Empty strings for what the span did not say.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Deployment {
    /// Lower-case hex.
    pub trace_id: String,
    pub span_id: String,
    pub start_ns: u64,
    /// The deployment's time.
    pub end_ns: u64,
    pub environment: String,
    pub service: String,
    pub failed: bool,
    /// `deployment.id`, which an incident's `incident.cause.deployment.id` names.
    pub deployment_id: String,
    pub revision: String,
    pub branch: String,
    pub repository: String,
    pub change_id: String,
    pub pipeline: String,
    pub run_id: String,
    /// `cicd.pipeline.result` as sent (informational: the outcome follows `deployment.status`
    /// and the span status).
    pub result: String,
}

/// An incident span: opened at its start, resolved at its end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Incident {
    pub trace_id: String,
    pub span_id: String,
    pub incident_id: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub environment: String,
    pub service: String,
    /// `incident.cause.deployment.id`, empty when no cause is known.
    pub cause_deployment_id: String,
}

/// A root span of a CI/CD trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Change {
    pub trace_id: String,
    pub span_id: String,
    pub start_ns: u64,
}
