//! `GET /api/metrics/query_range` and `GET /api/metrics/query`: TraceQL metrics over the head
//! and the blocks, answered in Tempo's JSON shape (tempo-compat §1.8).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use spoor_query::metrics::{self, Grid, MetricsRequest, MetricsResult};
use spoor_traceql::ast::Root;

use crate::config::SearchConfig;
use crate::error::Error;
use crate::tempo::json::{instant_json, range_json};
use crate::tempo::params::{
    Params, SECOND, check_size, go_duration, go_duration_string, query_error, text_error, timestamp,
};
use crate::tempo::reader::Reader;

/// `start` defaults to `end` minus this (or `since`).
const DEFAULT_SINCE: u64 = 3600 * SECOND;

pub async fn range(State(r): State<Arc<Reader>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    handle(&r, &headers, raw.as_deref().unwrap_or(""), false).await
}

pub async fn instant(State(r): State<Arc<Reader>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    handle(&r, &headers, raw.as_deref().unwrap_or(""), true).await
}

async fn handle(r: &Reader, headers: &HeaderMap, raw: &str, instant: bool) -> Response {
    let started = Instant::now();
    let result = async { query(r, &r.tenants(headers)?, raw, instant).await }.await;
    r.count_query(if instant { "metrics_query" } else { "metrics_query_range" }, started, &result);
    match result {
        Ok(answer) => axum::Json(answer.json()).into_response(),
        Err(e) => text_error(e),
    }
}

/// A metrics query's result and the grid its samples sit on.
pub struct Answer {
    pub result: MetricsResult,
    pub grid: Grid,
    pub instant: bool,
}

impl Answer {
    /// Tempo's JSON for it: `query_range`'s series of samples, or `query`'s one value each.
    pub fn json(&self) -> serde_json::Value {
        if self.instant { instant_json(&self.result) } else { range_json(&self.result, &self.grid) }
    }
}

/// A metrics query from its raw query string to its result (range, or instant when
/// `instant`); the HTTP handlers and `spoor query` (reading blocks directly) share it.
pub async fn query(r: &Reader, tenants: &[String], raw: &str, instant: bool) -> Result<Answer, Error> {
    let req = request(&Params::parse(raw), instant, spoor_model::time::now_nanos(), &r.search)?;
    let result = metrics::query_range(&r.head, &r.blocks, tenants, &req).await.map_err(query_error)?;
    Ok(Answer { result, grid: req.grid, instant })
}

/// Whether `text` parses as a TraceQL metrics query (`{ } | rate()`), so a client can pick the
/// metrics endpoints over search; a query that does not parse is not one, and whichever
/// endpoint gets it reports the parse error.
pub fn is_metrics_query(text: &str) -> bool {
    spoor_traceql::parse(text).is_ok_and(|q| matches!(q.root, Root::Metrics(_)))
}

/// The request from its parameters; `now` (unix ns) is the default end.
fn request(params: &Params, instant: bool, now: u64, cfg: &SearchConfig) -> Result<MetricsRequest, Error> {
    let given = |name: &str| params.get(name).filter(|v| !v.trim().is_empty());
    let text = given("q").or_else(|| given("query")).ok_or_else(|| Error::bad_request("missing query: q"))?;
    check_size(text, cfg)?;
    let max_range = cfg.max_metrics_duration_hours.saturating_mul(3600 * SECOND);
    let end = given("end").map(|v| timestamp("end", v)).transpose()?.unwrap_or(now);
    let start = match given("start") {
        Some(v) => timestamp("start", v)?,
        None => end.saturating_sub(given("since").map(since).transpose()?.unwrap_or(DEFAULT_SINCE)),
    };
    if end <= start {
        return Err(Error::bad_request("end must be greater than start"));
    }
    if max_range > 0 && end - start > max_range {
        return Err(Error::bad_request(format!(
            "metrics query time range exceeds the maximum allowed duration of {}",
            go_duration_string(max_range.min(i64::MAX as u64) as i64)
        )));
    }
    let query = spoor_traceql::parse(text).map_err(|e| Error::bad_request(format!("invalid TraceQL query: {e}")))?;
    if !matches!(query.root, Root::Metrics(_)) {
        return Err(Error::bad_request("not a metrics query"));
    }
    let grid = if instant {
        Grid::instant(start, end)
    } else {
        let step = match given("step") {
            Some(v) => step(v)?,
            None => metrics::default_step(start, end),
        };
        if (end - start) / step > metrics::MAX_INTERVALS {
            return Err(Error::bad_request(format!(
                "step of {} is too small, minimum step for given range is {}",
                go_duration_string(step as i64),
                go_duration_string(metrics::min_step(start, end) as i64)
            )));
        }
        Grid::range(start, end, step)
    }
    .map_err(query_error)?;
    let exemplars = (params.uint("exemplars")?.unwrap_or(0) as usize).min(cfg.max_exemplars);
    Ok(MetricsRequest { query, grid, exemplars })
}

/// `since`: a Prometheus duration (Go's units plus d, w and y).
fn since(v: &str) -> Result<u64, Error> {
    let bad = || Error::bad_request(format!("invalid since: {v:?} is not a duration such as 1h"));
    if let Some(d) = go_duration(v) {
        return Ok(d);
    }
    let unit = match v.chars().last() {
        Some('d') => 86_400,
        Some('w') => 7 * 86_400,
        Some('y') => 365 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = v[..v.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(unit * SECOND).ok_or_else(bad)
}

/// `step`: a Go duration (`30s`) or float seconds (`30`, `0.5`).
fn step(v: &str) -> Result<u64, Error> {
    let step = match go_duration(v) {
        Some(d) => Some(d),
        None => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < u64::MAX as f64 / SECOND as f64)
            .map(|s| (s * SECOND as f64).round() as u64),
    };
    step.filter(|&s| s > 0)
        .ok_or_else(|| Error::bad_request(format!("invalid step: {v:?} is not a positive duration such as 30s")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000 * SECOND;

    fn req(query: &str, instant: bool) -> Result<MetricsRequest, Error> {
        request(&Params::parse(query), instant, NOW, &SearchConfig::default())
    }

    fn err(query: &str) -> String {
        match req(query, false) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{query} was accepted"),
        }
    }

    #[test]
    fn steps_and_since() {
        assert_eq!(step("30s").unwrap(), 30 * SECOND);
        assert_eq!(step("1.5").unwrap(), 1_500_000_000);
        assert_eq!(step("100ms").unwrap(), 100_000_000);
        assert!(step("0").is_err() && step("fast").is_err() && step("-1").is_err());
        assert_eq!(since("2h").unwrap(), 7200 * SECOND);
        assert_eq!(since("1d").unwrap(), 86_400 * SECOND);
        assert!(since("1q").is_err());
    }

    #[test]
    fn defaults_and_alignment() {
        // end defaults to now, start to an hour before: default step 15s.
        let r = req("q=%7B%7D%20%7C%20rate()", false).unwrap();
        assert_eq!(r.grid.step(), 15 * SECOND);
        // The end rounds up to a multiple of the step.
        assert_eq!(r.grid.span_range().1, NOW.div_ceil(15 * SECOND) * 15 * SECOND);
        let r = req("q={}|rate()&since=10m&step=1m", false).unwrap();
        // 1699999400s rounds down to 1699999380s, 1700000000s up to 1700000040s.
        assert_eq!(r.grid.timestamps().first(), Some(&(1_699_999_380 * SECOND)));
        assert_eq!(r.grid.timestamps().last(), Some(&(1_700_000_040 * SECOND)));
        assert_eq!(r.grid.len(), 12);
        let r = req("query={}|rate()&start=1700000000&end=1700000010&exemplars=500", true).unwrap();
        assert_eq!((r.grid.len(), r.exemplars), (1, SearchConfig::default().max_exemplars));
    }

    #[test]
    fn tempo_errors() {
        assert_eq!(err("q={}|rate()&start=20&end=10"), "end must be greater than start");
        assert_eq!(
            err("q={}|rate()&start=0&end=10000000"),
            "metrics query time range exceeds the maximum allowed duration of 2160h0m0s"
        );
        assert_eq!(
            err("q={}|rate()&start=1000&end=21000&step=1s"),
            "step of 1s is too small, minimum step for given range is 2s"
        );
        assert!(err("q={ nope }&start=1&end=2").starts_with("invalid TraceQL query: parse error"));
        assert_eq!(err("q={ }&start=1&end=2"), "not a metrics query");
        assert!(err("q={}|rate()&step=soon").contains("invalid step"));
        assert!(err("start=1&end=2").contains("missing query"));
    }

    #[test]
    fn metrics_queries_are_told_from_searches() {
        assert!(is_metrics_query("{ } | rate() by (resource.service.name)"));
        assert!(is_metrics_query("{ status = error } | count_over_time()"));
        assert!(!is_metrics_query("{ status = error }"));
        assert!(!is_metrics_query("{ nope } | rate()"));
    }
}
