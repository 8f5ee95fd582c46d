//! Change-failure hints: the deployed service's error ratio and p95 span duration in the hour
//! before and the hour after a deployment, so a bad deploy shows before anyone opens an
//! incident. They come from TraceQL metrics over the stored spans (the code behind
//! `/api/metrics/query`): the generator's span-metrics registry holds only current counters,
//! not history by time. Stored spans are what sampling kept, so with tail sampling the ratios
//! are those of the kept traces.

use serde::Serialize;

use crate::error::Error;
use crate::tempo::metrics_query;
use crate::tempo::reader::Reader;

const HOUR_NS: u64 = 3_600 * 1_000_000_000;

/// One window's figures; None where the window had no spans (or is still in the future).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Window {
    pub spans: u64,
    pub error_ratio: Option<f64>,
    pub p95_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Hints {
    pub before: Window,
    pub after: Window,
}

/// The hints for a deployment of `service` at `at_ns`, with `now_ns` bounding the hour after.
pub async fn hints(r: &Reader, tenants: &[String], service: &str, at_ns: u64, now_ns: u64) -> Result<Hints, Error> {
    let before = window(r, tenants, service, at_ns.saturating_sub(HOUR_NS), at_ns).await?;
    let after = window(r, tenants, service, at_ns, at_ns.saturating_add(HOUR_NS).min(now_ns)).await?;
    Ok(Hints { before, after })
}

async fn window(r: &Reader, tenants: &[String], service: &str, start: u64, end: u64) -> Result<Window, Error> {
    if end <= start {
        return Ok(Window::default());
    }
    let svc = format!("resource.service.name = {}", quote(service));
    let all = value(r, tenants, &format!("{{ {svc} }} | count_over_time()"), start, end).await?.unwrap_or(0.0);
    if all <= 0.0 {
        return Ok(Window::default());
    }
    let errors = value(r, tenants, &format!("{{ {svc} && status = error }} | count_over_time()"), start, end)
        .await?
        .unwrap_or(0.0);
    let p95 = value(r, tenants, &format!("{{ {svc} }} | quantile_over_time(duration, .95)"), start, end).await?;
    Ok(Window { spans: all as u64, error_ratio: Some(errors / all), p95_seconds: p95 })
}

/// The one value of an instant metrics query over `[start, end)`, None without samples.
async fn value(r: &Reader, tenants: &[String], q: &str, start: u64, end: u64) -> Result<Option<f64>, Error> {
    let raw = format!("q={}&start={start}&end={end}", crate::http::encode_query_value(q));
    let answer = metrics_query::query(r, tenants, &raw, true).await?;
    Ok(answer.result.series.first().and_then(|s| s.values.iter().copied().find(|v| !v.is_nan())))
}

/// A TraceQL string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempo::params::Params;

    #[test]
    fn queries_survive_the_query_string() {
        let q = format!("{{ resource.service.name = {} }} | count_over_time()", quote("a \"b\" & c\\"));
        assert_eq!(Params::parse(&format!("q={}", crate::http::encode_query_value(&q))).get("q"), Some(q.as_str()));
        assert!(spoor_traceql::parse(&q).is_ok());
    }
}
