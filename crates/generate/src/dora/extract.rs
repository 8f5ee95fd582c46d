//! The DORA events in a decoded request: deployments, incidents, and the root spans of CI/CD
//! traces. This runs on the ingest hot path for every admitted request, so a span that carries
//! no CI/CD attribute, `deployment.id` or `incident.id` costs a few byte compares per
//! attribute and no allocation.
//!
//! Three vocabularies map onto one model (the tables are in docs/dora.md): the OpenTelemetry
//! CI/CD semantic conventions, the Jenkins OpenTelemetry plugin's legacy names, and ArgoCD sync
//! spans.

use spoor_model::ids::hex;
use spoor_model::otlp::{ExportTraceServiceRequest, KeyValue, Span};

use super::{Change, Deployment, Event, Incident};
use crate::labels::text_value;

/// OTLP's `STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: i32 = 2;

/// Prefixes of CI/CD attributes: a span, or a resource, with one belongs to a pipeline.
/// (`deployment.*` alone does not: many services name their environment on every span.)
const CICD: [&str; 5] = ["cicd.", "ci.pipeline.", "vcs.", "git.", "argocd."];
/// On a resource only pipeline attributes count: services and controllers may name their
/// repository or revision (`vcs.*`) on every span, and that must not make their root spans
/// changes.
const RESOURCE_CICD: [&str; 2] = ["cicd.pipeline.", "ci.pipeline."];
/// Span attributes that make a deployment or an incident without any CI/CD attribute.
const OTHER: [&str; 2] = ["deployment.id", "incident.id"];

/// Every DORA event in `req` (empty, without allocating, when nothing matches).
pub fn extract(req: &ExportTraceServiceRequest) -> Vec<Event> {
    let mut events = Vec::new();
    // Trace IDs of CI/CD spans, so a root span without attributes of its own still counts
    // when its trace is a CI/CD trace sent in the same request.
    let mut cicd_traces: Vec<&[u8]> = Vec::new();
    let mut unmarked_roots = false;
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let resource_cicd = resource_pipeline(resource);
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let root = span.parent_span_id.is_empty();
            let span_cicd = cicd(&span.attributes);
            // Deployments and incidents are told by attributes of the span itself.
            let candidate = span_cicd || other(&span.attributes);
            if !(candidate || resource_cicd) {
                unmarked_roots |= root;
                continue;
            }
            let a = Attrs { span: &span.attributes, resource };
            let mut deploy = false;
            if candidate {
                // An incident's trace is not a pipeline: its root is no change.
                if let Some(i) = incident(span, &a) {
                    events.push(Event::Incident(i));
                    continue;
                }
                if let Some(d) = deployment(span, &a) {
                    events.push(Event::Deployment(d));
                    deploy = true;
                }
            }
            if !(span_cicd || resource_cicd || deploy) {
                unmarked_roots |= root;
            } else if root {
                events.push(Event::Change(change(span)));
            } else if !cicd_traces.contains(&&span.trace_id[..]) {
                cicd_traces.push(&span.trace_id);
            }
        }
    }
    if unmarked_roots && !cicd_traces.is_empty() {
        for rs in &req.resource_spans {
            let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            if resource_pipeline(resource) {
                continue;
            }
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                if span.parent_span_id.is_empty()
                    && !cicd(&span.attributes)
                    && !other(&span.attributes)
                    && cicd_traces.contains(&&span.trace_id[..])
                {
                    events.push(Event::Change(change(span)));
                }
            }
        }
    }
    events
}

/// Whether any key is a CI/CD attribute. The first byte rules out nearly every key before
/// any prefix compare.
fn cicd(attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| {
        matches!(kv.key.as_bytes().first(), Some(b'c' | b'v' | b'g' | b'a'))
            && CICD.iter().any(|m| kv.key.starts_with(m))
    })
}

fn resource_pipeline(attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| kv.key.starts_with('c') && RESOURCE_CICD.iter().any(|m| kv.key.starts_with(m)))
}

fn other(attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| matches!(kv.key.as_bytes().first(), Some(b'd' | b'i')) && OTHER.contains(&kv.key.as_str()))
}

fn change(span: &Span) -> Change {
    Change { trace_id: hex(&span.trace_id), span_id: hex(&span.span_id), start_ns: span.start_time_unix_nano }
}

/// A span's attributes, then its resource's.
struct Attrs<'a> {
    span: &'a [KeyValue],
    resource: &'a [KeyValue],
}

impl Attrs<'_> {
    /// The first of `keys` the span has, else the first its resource has.
    fn get(&self, keys: &[&str]) -> Option<String> {
        keys.iter()
            .find_map(|k| text_value(self.span, k))
            .or_else(|| keys.iter().find_map(|k| text_value(self.resource, k)))
    }

    /// The first of `keys` on the span alone.
    fn span_only(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| text_value(self.span, k))
    }
}

const ENVIRONMENT: &[&str] = &["deployment.environment.name", "deployment.environment"];
const TASK_TYPE: &[&str] = &["cicd.pipeline.task.type", "ci.pipeline.task.type"];
const DEPLOYMENT_ID: &[&str] = &["deployment.id"];
const ARGOCD_APP: &[&str] = &["argocd.app.name"];
const ARGOCD_PHASE: &[&str] = &["argocd.sync.phase"];

fn incident(span: &Span, a: &Attrs) -> Option<Incident> {
    let incident_id = a.span_only(&["incident.id"])?;
    Some(Incident {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        incident_id,
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano.max(span.start_time_unix_nano),
        environment: a.get(ENVIRONMENT).unwrap_or_default(),
        service: a.get(&["service.name"]).unwrap_or_default(),
        cause_deployment_id: a.span_only(&["incident.cause.deployment.id"]).unwrap_or_default(),
    })
}

fn deployment(span: &Span, a: &Attrs) -> Option<Deployment> {
    let argocd_sync = a.span_only(ARGOCD_APP).is_some() && a.span_only(ARGOCD_PHASE).is_some();
    let deploy_task = a.span_only(TASK_TYPE).is_some_and(|t| t.eq_ignore_ascii_case("deploy"));
    let deployment_id =
        a.span_only(DEPLOYMENT_ID).or_else(|| argocd_sync.then(|| a.span_only(&["argocd.sync.id"])).flatten());
    if !(deploy_task || deployment_id.is_some() || argocd_sync) {
        return None;
    }
    let environment = a
        .get(ENVIRONMENT)
        .or_else(|| argocd_sync.then(|| a.span_only(&["argocd.app.destination.namespace"])).flatten())?;
    let status = a
        .span_only(&["deployment.status"])
        .or_else(|| argocd_sync.then(|| a.span_only(ARGOCD_PHASE).map(|p| argocd_status(&p).to_string())).flatten());
    let failed = match status {
        Some(s) => s.eq_ignore_ascii_case("failed"),
        None => span.status.as_ref().is_some_and(|s| s.code == STATUS_CODE_ERROR),
    };
    let service = a
        .span_only(&["deployment.name"])
        .or_else(|| a.span_only(ARGOCD_APP))
        .or_else(|| text_value(a.resource, "service.name"))
        .unwrap_or_default();
    Some(Deployment {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano.max(span.start_time_unix_nano),
        environment,
        service,
        failed,
        deployment_id: deployment_id.unwrap_or_default(),
        revision: a.get(&["vcs.ref.head.revision", "git.commit", "argocd.sync.revision"]).unwrap_or_default(),
        branch: a.get(&["vcs.ref.head.name", "git.branch"]).unwrap_or_default(),
        repository: a
            .get(&["vcs.repository.url.full", "git.repository", "argocd.app.source.repo_url"])
            .unwrap_or_default(),
        change_id: a.get(&["vcs.change.id"]).unwrap_or_default(),
        pipeline: a.get(&["cicd.pipeline.name", "ci.pipeline.name", "ci.pipeline.id"]).unwrap_or_default(),
        run_id: a.get(&["cicd.pipeline.run.id", "ci.pipeline.run.id", "ci.pipeline.run.number"]).unwrap_or_default(),
        result: a
            .get(&["cicd.pipeline.result", "ci.pipeline.run.result"])
            .map(|r| result(&r).to_string())
            .unwrap_or_default(),
    })
}

/// A pipeline result in the OpenTelemetry vocabulary; Jenkins' upper-case results mapped.
pub fn result(r: &str) -> &str {
    match r {
        "SUCCESS" => "success",
        "FAILURE" | "UNSTABLE" => "failure",
        "ABORTED" => "cancellation",
        "NOT_BUILT" => "skip",
        other => other,
    }
}

/// An ArgoCD operation phase as a `deployment.status`: `failed` for `Failed` and `Error`,
/// else `succeeded` (a sync span ends when its operation has).
fn argocd_status(phase: &str) -> &'static str {
    match phase {
        "Failed" | "Error" => "failed",
        _ => "succeeded",
    }
}
