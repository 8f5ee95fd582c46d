//! `GET /api/metrics/query_range` and `GET /api/metrics/query`: TraceQL metrics over the head
//! and the blocks, answered in Tempo's JSON shape (tempo-compat §1.8).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};
use spoor_query::metrics::{self, Exemplar, Grid, Label, MetricsRequest, MetricsResult, Series};
use spoor_store::{Blocks, Head};
use spoor_traceql::ast::Root;

use crate::config::SearchConfig;
use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::search::{Params, check_size, count_query, go_duration, go_duration_string, metrics_json, query_error};
use crate::tenant;

const SECOND: u64 = 1_000_000_000;
/// `start` defaults to `end` minus this (or `since`).
const DEFAULT_SINCE: u64 = 3600 * SECOND;

pub async fn range(State(p): State<Arc<Pipeline>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    handle(&p, &headers, raw.as_deref().unwrap_or(""), false).await
}

pub async fn instant(State(p): State<Arc<Pipeline>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    handle(&p, &headers, raw.as_deref().unwrap_or(""), true).await
}

async fn handle(p: &Pipeline, headers: &HeaderMap, raw: &str, instant: bool) -> Response {
    let started = Instant::now();
    let result = run(p, headers, raw, instant).await;
    count_query(p, if instant { "metrics_query" } else { "metrics_query_range" }, started, &result);
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => crate::query::text_error(e),
    }
}

async fn run(p: &Pipeline, headers: &HeaderMap, raw: &str, instant: bool) -> Result<Json, Error> {
    let tenants = tenant::for_read(headers, p.config.tenancy.multitenancy_enabled)?;
    query_json(&p.head, &p.blocks, &p.config.search, &tenants, raw, instant).await
}

/// A metrics query from its raw query string to the response body (range, or instant when
/// `instant`); the HTTP handlers and `spoor query` (reading blocks directly) share it.
pub async fn query_json(
    head: &Head,
    blocks: &Blocks,
    cfg: &SearchConfig,
    tenants: &[String],
    raw: &str,
    instant: bool,
) -> Result<Json, Error> {
    let req = request(&Params::parse(raw), instant, crate::pipeline::unix_nanos(), cfg)?;
    let result = metrics::query_range(head, blocks, tenants, &req).await.map_err(query_error)?;
    Ok(if instant { instant_json(&result) } else { range_json(&result, &req.grid) })
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
    let text = given("q").or_else(|| given("query")).ok_or_else(|| Error::BadRequest("missing query: q".into()))?;
    check_size(text, cfg)?;
    let max_range = cfg.max_metrics_duration_hours.saturating_mul(3600 * SECOND);
    let end = given("end").map(|v| timestamp("end", v)).transpose()?.unwrap_or(now);
    let start = match given("start") {
        Some(v) => timestamp("start", v)?,
        None => end.saturating_sub(given("since").map(since).transpose()?.unwrap_or(DEFAULT_SINCE)),
    };
    if end <= start {
        return Err(Error::BadRequest("end must be greater than start".into()));
    }
    if max_range > 0 && end - start > max_range {
        return Err(Error::BadRequest(format!(
            "metrics query time range exceeds the maximum allowed duration of {}",
            go_duration_string(max_range.min(i64::MAX as u64) as i64)
        )));
    }
    let query = spoor_traceql::parse(text).map_err(|e| Error::BadRequest(format!("invalid TraceQL query: {e}")))?;
    if !matches!(query.root, Root::Metrics(_)) {
        return Err(Error::BadRequest("not a metrics query".into()));
    }
    let grid = if instant {
        Grid::instant(start, end)
    } else {
        let step = match given("step") {
            Some(v) => step(v)?,
            None => metrics::default_step(start, end),
        };
        if (end - start) / step > metrics::MAX_INTERVALS {
            return Err(Error::BadRequest(format!(
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

/// Unix seconds (up to 10 digits), nanoseconds (more digits), fractional seconds or RFC3339.
fn timestamp(name: &str, v: &str) -> Result<u64, Error> {
    let bad = || Error::BadRequest(format!("invalid {name}: {v:?} is not unix seconds, nanoseconds or RFC3339"));
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = v.parse().map_err(|_| bad())?;
        return if v.len() <= 10 { n.checked_mul(SECOND).ok_or_else(bad) } else { Ok(n) };
    }
    // Decimal seconds exactly: a float would round `1700000000.25` to a neighbouring ns.
    if let Some((whole, frac)) = v.split_once('.')
        && !whole.is_empty()
        && whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        let kept = &frac[..frac.len().min(9)];
        let nanos = if kept.is_empty() {
            0
        } else {
            kept.parse::<u64>().map_err(|_| bad())? * 10u64.pow(9 - kept.len() as u32)
        };
        return whole.parse::<u64>().ok().and_then(|s| s.checked_mul(SECOND)?.checked_add(nanos)).ok_or_else(bad);
    }
    if let Ok(secs) = v.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64 / SECOND as f64 {
            Ok((secs * SECOND as f64).round() as u64)
        } else {
            Err(bad())
        };
    }
    rfc3339(v).ok_or_else(bad)
}

/// `2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.5+02:00` as unix ns (not before 1970).
fn rfc3339(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = v.get(r)?;
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &v[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(9)];
        nanos = kept.parse::<i64>().ok()? * 10i64.pow(9 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (h, m) = (rest[1..3].parse::<i64>().ok()?, rest[4..6].parse::<i64>().ok()?);
            sign * (h * 3600 + m * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()?.checked_mul(SECOND)?.checked_add(nanos as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `since`: a Prometheus duration (Go's units plus d, w and y).
fn since(v: &str) -> Result<u64, Error> {
    let bad = || Error::BadRequest(format!("invalid since: {v:?} is not a duration such as 1h"));
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
        .ok_or_else(|| Error::BadRequest(format!("invalid step: {v:?} is not a positive duration such as 30s")))
}

/// An OTLP `AnyValue` in JSON, typed as the label is.
fn label_json(l: &Label) -> Json {
    match l {
        Label::Str(s) => json!({ "stringValue": s }),
        Label::Int(i) => json!({ "intValue": i.to_string() }),
        Label::Float(f) => json!({ "doubleValue": number(f.0) }),
        Label::Bool(b) => json!({ "boolValue": b }),
        Label::Duration(ns) => json!({ "stringValue": go_duration_string(*ns) }),
    }
}

/// A double as protobuf JSON writes it: NaN and infinities as strings.
fn number(f: f64) -> Json {
    if f.is_nan() {
        json!("NaN")
    } else if f.is_infinite() {
        json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(f)
    }
}

fn labels_json(labels: &[(String, Label)]) -> Json {
    Json::Array(labels.iter().map(|(k, v)| json!({ "key": k, "value": label_json(v) })).collect())
}

fn exemplar_json(e: &Exemplar) -> Json {
    let labels = [
        ("trace:id".to_owned(), Label::Str(spoor_model::ids::hex(&e.trace_id))),
        ("span:id".to_owned(), Label::Str(spoor_model::ids::hex(&e.span_id))),
    ];
    let mut m = Map::new();
    m.insert("labels".into(), labels_json(&labels));
    // Zero is left out, as protobuf JSON leaves out defaults.
    if e.value != 0.0 {
        m.insert("value".into(), number(e.value));
    }
    m.insert("timestampMs".into(), json!((e.start_unix_nano / 1_000_000).to_string()));
    Json::Object(m)
}

fn series_json(s: &Series, timestamps: &[u64]) -> Json {
    let samples: Vec<Json> = timestamps
        .iter()
        .zip(&s.values)
        .filter(|(_, v)| !v.is_nan())
        .map(|(t, &v)| {
            let mut m = Map::new();
            m.insert("timestampMs".into(), json!((t / 1_000_000).to_string()));
            if v != 0.0 {
                m.insert("value".into(), number(v));
            }
            Json::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("labels".into(), labels_json(&s.labels));
    m.insert("samples".into(), Json::Array(samples));
    if !s.exemplars.is_empty() {
        m.insert("exemplars".into(), Json::Array(s.exemplars.iter().map(exemplar_json).collect()));
    }
    Json::Object(m)
}

fn range_json(r: &MetricsResult, grid: &Grid) -> Json {
    let timestamps = grid.timestamps();
    partial(
        r,
        json!({
            "series": r.series.iter().map(|s| series_json(s, &timestamps)).collect::<Vec<_>>(),
            "metrics": metrics_json(&r.metrics),
        }),
    )
}

/// Marks an answer that left groups out, in Tempo's words.
fn partial(r: &MetricsResult, mut body: Json) -> Json {
    if r.truncated {
        body["status"] = json!("PARTIAL");
        body["message"] = json!(format!(
            "Response exceeds maximum series limit of {}, a partial response is returned. Warning: the accuracy of each individual value is not guaranteed.",
            metrics::MAX_SERIES
        ));
    }
    body
}

/// One value per series: its first sample.
fn instant_json(r: &MetricsResult) -> Json {
    let series: Vec<Json> = r
        .series
        .iter()
        .filter_map(|s| {
            let v = *s.values.iter().find(|v| !v.is_nan())?;
            let mut m = Map::new();
            m.insert("labels".into(), labels_json(&s.labels));
            if v != 0.0 {
                m.insert("value".into(), number(v));
            }
            Some(Json::Object(m))
        })
        .collect();
    partial(r, json!({ "series": series, "metrics": metrics_json(&r.metrics) }))
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
    fn timestamps_in_every_form() {
        assert_eq!(timestamp("t", "1700000000").unwrap(), NOW);
        assert_eq!(timestamp("t", "1700000000000000000").unwrap(), NOW);
        assert_eq!(timestamp("t", "1700000000.25").unwrap(), NOW + SECOND / 4);
        assert_eq!(timestamp("t", "2023-11-14T22:13:20Z").unwrap(), NOW);
        assert_eq!(timestamp("t", "2023-11-14T23:13:20.5+01:00").unwrap(), NOW + SECOND / 2);
        assert_eq!(timestamp("t", "1970-01-01T00:00:00Z").unwrap(), 0);
        for bad in ["soon", "-1", "2023-13-14T22:13:20Z", "2023-11-14T22:13:20", "NaN"] {
            assert!(timestamp("t", bad).is_err(), "{bad}");
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
            err("q={}|rate()&start=0&end=100000"),
            "metrics query time range exceeds the maximum allowed duration of 24h0m0s"
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

    #[test]
    fn json_shapes() {
        let grid = Grid::range(0, 2 * SECOND, SECOND).unwrap();
        let series = Series {
            labels: vec![("span.code".into(), Label::Int(200)), ("p".into(), Label::Float(metrics::FloatLabel(0.5)))],
            values: vec![0.0, f64::NAN, 2.5],
            exemplars: vec![Exemplar {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                start_unix_nano: 1_500_000_000,
                value: f64::NAN,
            }],
        };
        let r = MetricsResult { series: vec![series], truncated: false, metrics: Default::default() };
        assert_eq!(
            range_json(&r, &grid),
            json!({
                "series": [{
                    "labels": [
                        { "key": "span.code", "value": { "intValue": "200" } },
                        { "key": "p", "value": { "doubleValue": 0.5 } },
                    ],
                    "samples": [{ "timestampMs": "0" }, { "timestampMs": "2000", "value": 2.5 }],
                    "exemplars": [{
                        "labels": [
                            { "key": "trace:id", "value": { "stringValue": "01010101010101010101010101010101" } },
                            { "key": "span:id", "value": { "stringValue": "0202020202020202" } },
                        ],
                        "value": "NaN",
                        "timestampMs": "1500",
                    }],
                }],
                "metrics": {},
            })
        );
        assert_eq!(
            instant_json(&r),
            json!({ "series": [{ "labels": range_json(&r, &grid)["series"][0]["labels"].clone() }], "metrics": {} })
        );
    }
}
