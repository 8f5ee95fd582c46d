//! Each lab's right answer, worked out from what the server stored during the lab's run, the
//! way a learner would find it: TraceQL search, traces by ID, the DORA API.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use serde_json::Value;
use spoor_model::ids::TraceId;
use spoor_model::otlp::{Span, TracesData, any_value};

use crate::http::Api;

/// One recorded run of a lab, as `check` reads it back.
pub struct Run {
    pub start_ns: u64,
    pub end_ns: u64,
    pub api: String,
    pub tenant: Option<String>,
    /// Spans received per tenant before the run (the noisy tenant's lab).
    pub received_before: BTreeMap<String, f64>,
}

pub struct Verdict {
    pub right: bool,
    /// On a right answer, the evidence; on a wrong one, a nudge that does not give it away.
    pub why: String,
}

/// CI/CD traces start minutes before they are sent: searches reach this far back, and then keep
/// only the traces that ended during the run.
const LOOKBACK_S: u64 = 900;

pub async fn judge(lab: u32, run: &Run, api: &Api, answer: &str) -> anyhow::Result<Verdict> {
    let given = normalize(answer);
    anyhow::ensure!(!given.is_empty(), "the answer is empty");
    match lab {
        1 => {
            let (service, of, total) = deepest(run, api, "{ status = error }", status_error).await?;
            Ok(Verdict {
                right: given == normalize(&service),
                why: if given == normalize(&service) {
                    format!("In {of} of {total} failing traces the deepest failing span is {service}'s.")
                } else {
                    "Open a failing trace and follow the error down: which failing span has no failing child?".into()
                },
            })
        }
        2 => slow_query(run, api, &given).await,
        3 => lead_time(run, api, answer).await,
        4 => {
            let timeout = |s: &Span| string_attr(s, "error.type") == Some("timeout");
            let (service, of, total) = deepest(run, api, "{ span.error.type = \"timeout\" }", timeout).await?;
            Ok(Verdict {
                right: given == normalize(&service),
                why: if given == normalize(&service) {
                    format!("In {of} of {total} traces with timeouts the deepest timed-out call waited for {service}.")
                } else {
                    "Look for the timed-out span with no timed-out span below it, and whom it was calling \
                     (peer.service)."
                        .into()
                },
            })
        }
        5 => incident_cause(run, api, &given).await,
        6 => noisy_tenant(run, api, answer.trim()).await,
        n => anyhow::bail!("there is no lab {n}"),
    }
}

/// Lower case, trimmed, quotes and a trailing `;` dropped, runs of spaces as one.
fn normalize(s: &str) -> String {
    let s = s.trim().trim_matches(|c| c == '"' || c == '\'' || c == '`').trim().trim_end_matches(';');
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn window(run: &Run, lookback_s: u64) -> (u64, u64) {
    ((run.start_ns / 1_000_000_000).saturating_sub(lookback_s), run.end_ns / 1_000_000_000 + 2)
}

async fn get_json(api: &Api, url: &str) -> anyhow::Result<Value> {
    let (status, body) = api.get(url, Some("application/json")).await?;
    anyhow::ensure!(status.is_success(), "{url}: {status}: {}", String::from_utf8_lossy(&body).trim());
    serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))
}

/// The search's traces that ended during the run (older runs of the same lab are not judged).
async fn search(run: &Run, api: &Api, q: &str) -> anyhow::Result<Vec<Value>> {
    let (start, end) = window(run, LOOKBACK_S);
    let url = format!(
        "{}/api/search?q={}&start={start}&end={end}&limit=40&spss=20",
        run.api,
        spoor_server::http::encode_query_value(q)
    );
    let v = get_json(api, &url).await?;
    let traces = v.get("traces").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(traces
        .into_iter()
        .filter(|t| {
            let start: u64 =
                t.get("startTimeUnixNano").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0);
            let ms = t.get("durationMs").and_then(Value::as_u64).unwrap_or(0);
            start + ms * 1_000_000 + 1_000_000_000 >= run.start_ns
        })
        .collect())
}

fn string_attr<'s>(s: &'s Span, key: &str) -> Option<&'s str> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(v) => Some(v.as_str()),
        _ => None,
    })
}

fn status_error(s: &Span) -> bool {
    s.status.as_ref().is_some_and(|st| st.code == 2)
}

/// Over the traces `q` finds: the spans that `marked` holds for while none of their descendants
/// does, and the service each points at (the callee for a client span, else its own). Answers
/// the most common service, in how many traces, and of how many.
async fn deepest(
    run: &Run,
    api: &Api,
    q: &str,
    marked: impl Fn(&Span) -> bool,
) -> anyhow::Result<(String, usize, usize)> {
    let traces = search(run, api, q).await?;
    anyhow::ensure!(
        !traces.is_empty(),
        "no trace of the lab's run matches {q}: did `spoor lab start` run against this server?"
    );
    let mut votes: BTreeMap<String, usize> = BTreeMap::new();
    for t in &traces {
        let Some(id) = t.get("traceID").and_then(Value::as_str) else { continue };
        let id = TraceId::parse_api(id).map_err(|e| anyhow::anyhow!("trace ID {id:?} from the search: {e}"))?;
        let Some(trace) = crate::trace::remote(&run.api, &id, api).await? else { continue };
        let mut found: Vec<String> = innermost(&trace, &marked);
        found.sort();
        found.dedup();
        for s in found {
            *votes.entry(s).or_default() += 1;
        }
    }
    let (service, n) =
        votes.into_iter().max_by_key(|(_, n)| *n).context("the matching traces have no such span any more")?;
    Ok((service, n, traces.len()))
}

/// Services that the innermost `marked` spans of `trace` point at.
fn innermost(trace: &TracesData, marked: &impl Fn(&Span) -> bool) -> Vec<String> {
    let mut spans: Vec<(&str, &Span)> = Vec::new();
    for rs in &trace.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("unknown");
        for ss in &rs.scope_spans {
            spans.extend(ss.spans.iter().map(|s| (service, s)));
        }
    }
    let parent_of: HashMap<&[u8], &[u8]> =
        spans.iter().map(|(_, s)| (s.span_id.as_slice(), s.parent_span_id.as_slice())).collect();
    // A span with a marked descendant is not innermost: mark every ancestor of a marked span.
    let mut has_marked_below: std::collections::HashSet<&[u8]> = Default::default();
    for (_, s) in spans.iter().filter(|(_, s)| marked(s)) {
        let mut p = s.parent_span_id.as_slice();
        while !p.is_empty() && has_marked_below.insert(p) {
            p = parent_of.get(p).copied().unwrap_or_default();
        }
    }
    spans
        .iter()
        .filter(|(_, s)| marked(s) && !has_marked_below.contains(s.span_id.as_slice()))
        .map(|(service, s)| match (s.kind, string_attr(s, "peer.service")) {
            (3, Some(peer)) => peer.to_owned(),
            _ => (*service).to_owned(),
        })
        .collect()
}

async fn slow_query(run: &Run, api: &Api, given: &str) -> anyhow::Result<Verdict> {
    let q =
        "{ span.db.system = \"postgresql\" && duration > 1s } | select(span.db.collection.name, span.db.query.text)";
    let traces = search(run, api, q).await?;
    let mut votes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for t in &traces {
        for set in t.get("spanSets").and_then(Value::as_array).into_iter().flatten() {
            for span in set.get("spans").and_then(Value::as_array).into_iter().flatten() {
                let attr = |k: &str| {
                    span.get("attributes")?
                        .as_array()?
                        .iter()
                        .find(|a| a.get("key").and_then(Value::as_str) == Some(k))?
                        .pointer("/value/stringValue")?
                        .as_str()
                        .map(str::to_owned)
                };
                if let (Some(table), Some(statement)) = (attr("db.collection.name"), attr("db.query.text")) {
                    *votes.entry((table, statement)).or_default() += 1;
                }
            }
        }
    }
    let ((table, statement), n) = votes
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .context("no PostgreSQL span over 1 s in the lab's run: did `spoor lab start 2` run against this server?")?;
    let right = given == normalize(&table) || given == normalize(&statement);
    Ok(Verdict {
        right,
        why: if right {
            format!("{n} queries over a second, all `{statement}` on {table}.")
        } else {
            "Search for PostgreSQL spans over a second and look at their db.query.text.".into()
        },
    })
}

/// `5m12s`, `312s`, `312`, `312.5`: seconds.
fn seconds(answer: &str) -> Option<f64> {
    let a = answer.trim();
    a.parse::<f64>().ok().filter(|s| s.is_finite()).or_else(|| spoor_model::duration::parse(a).map(|d| d.as_secs_f64()))
}

async fn deployments(run: &Run, api: &Api, lookback_s: u64) -> anyhow::Result<Value> {
    let (start, end) = window(run, lookback_s);
    get_json(api, &format!("{}/api/dora/deployments?start={start}&end={end}&hints=false", run.api)).await
}

async fn lead_time(run: &Run, api: &Api, answer: &str) -> anyhow::Result<Verdict> {
    let Some(given) = seconds(answer) else {
        anyhow::bail!("{answer:?} is not a duration: answer like 5m12s or 312 (seconds)");
    };
    let v = deployments(run, api, 60).await?;
    let last = v
        .get("deployments")
        .and_then(Value::as_array)
        .and_then(|d| d.last())
        .context("no deployment in the lab's run: did `spoor lab start 3` run against this server?")?;
    let truth = last
        .get("lead_time_seconds")
        .and_then(Value::as_f64)
        .context("the last deployment has no lead time yet (its pipeline's first span is missing)")?;
    let right = (given - truth).abs() <= 2.0;
    let service = last.get("service").and_then(Value::as_str).unwrap_or("?");
    Ok(Verdict {
        right,
        why: if right {
            format!(
                "The last deployment ({service}, {}) took {} from push to sync.",
                last.get("deployment_id").and_then(Value::as_str).unwrap_or("?"),
                spoor_server::tempo::params::go_duration_string((truth * 1000.0).round() as i64 * 1_000_000)
            )
        } else {
            "Lead time runs from the change (the pipeline trace's first span) to the end of the deployment; \
             take the newest deployment."
                .into()
        },
    })
}

async fn incident_cause(run: &Run, api: &Api, given: &str) -> anyhow::Result<Verdict> {
    // The failed deployment went out five minutes before the run's first traces were sent.
    let v = deployments(run, api, 600).await?;
    let incident = v
        .get("incidents")
        .and_then(Value::as_array)
        .and_then(|i| {
            i.iter().rev().find(|i| i.get("cause_deployment_id").and_then(Value::as_str).is_some_and(|c| !c.is_empty()))
        })
        .context("no incident with a cause in the lab's run: did `spoor lab start 5` run against this server?")?;
    let cause = incident.get("cause_deployment_id").and_then(Value::as_str).unwrap_or_default();
    let right = given == normalize(cause);
    Ok(Verdict {
        right,
        why: if right {
            format!(
                "Incident {} names deployment {cause} as its cause.",
                incident.get("incident_id").and_then(Value::as_str).unwrap_or("?")
            )
        } else {
            "Find the incident span and the deployment it names (incident.cause.deployment.id).".into()
        },
    })
}

/// `spoor_spans_received_total` per tenant, from the server's own metrics.
pub async fn received(api: &Api, base: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let url = format!("{base}/metrics");
    let (status, body) = api.get(&url, None).await?;
    anyhow::ensure!(status.is_success(), "{url}: {status}: {}", String::from_utf8_lossy(&body).trim());
    Ok(parse_received(&String::from_utf8_lossy(&body)))
}

fn parse_received(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("spoor_spans_received_total{")?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let tenant = labels.split(',').find_map(|kv| kv.strip_prefix("tenant=\""))?.strip_suffix('"')?;
            Some((tenant.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn noisy_tenant(run: &Run, api: &Api, given: &str) -> anyhow::Result<Verdict> {
    let now = received(api, &run.api).await?;
    let grown = |t: &str| now.get(t).copied().unwrap_or(0.0) - run.received_before.get(t).copied().unwrap_or(0.0);
    let own = run.tenant.as_deref().unwrap_or("single-tenant");
    let (noisiest, spans) = now
        .keys()
        .filter(|t| t.as_str() != own)
        .map(|t| (t.clone(), grown(t)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, n)| *n > 0.0)
        .context(
            "no other tenant sent spans during the run: lab 6 needs a server with tenancy.multitenancy_enabled: true",
        )?;
    let right = given == noisiest;
    Ok(Verdict {
        right,
        why: if right {
            format!("{noisiest} sent {spans} spans since the lab started; your tenant {own} sent {}.", grown(own))
        } else {
            "Compare the spans received per tenant (spoor_spans_received_total) with what they were.".into()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_compare_loosely_and_durations_parse() {
        assert_eq!(normalize("  'Terraform-Runner' "), "terraform-runner");
        assert_eq!(normalize("SELECT a\n  FROM b;"), "select a from b");
        assert_eq!(seconds("5m12s"), Some(312.0));
        assert_eq!(seconds("312.5"), Some(312.5));
        assert_eq!(seconds("five minutes"), None);
    }

    #[test]
    fn span_counts_per_tenant_come_from_the_exposition() {
        let text = "# HELP x\nspoor_spans_received_total{tenant=\"a\"} 12\nspoor_spans_received_total{tenant=\"team-b\"} 3e3\nspoor_spans_received_totally 1\n";
        let got = parse_received(text);
        assert_eq!(got.len(), 2);
        assert_eq!((got["a"], got["team-b"]), (12.0, 3000.0));
    }
}
