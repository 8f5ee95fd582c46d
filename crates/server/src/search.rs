//! `GET /api/search`: TraceQL (or Tempo's legacy tag search) over the head and the blocks,
//! answered in Tempo's JSON shape (tempo-compat §1.5).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};
use spoor_model::json::any_value_json;
use spoor_model::otlp::AnyValue;
use spoor_query::search::{SearchMetrics, SearchRequest, SearchResult};
use spoor_query::{Plan, SpanHit, SpansetHit, TraceHit, Value};
use spoor_store::{Blocks, Head};

use crate::config::SearchConfig;
use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::tenant;
use spoor_model::ids::hex;

pub async fn handler(State(p): State<Arc<Pipeline>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let started = std::time::Instant::now();
    let result = run(&p, &headers, raw.as_deref().unwrap_or("")).await;
    if let Ok(body) = &result {
        let m = &body["metrics"];
        let count = |k: &str| m[k].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        p.metrics.inc("spoor_search_inspected_spans_total", &[], count("inspectedSpans"));
        p.metrics.inc("spoor_search_inspected_bytes_total", &[], count("inspectedBytes"));
    }
    count_query(&p, "search", started, &result);
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => crate::query::text_error(e),
    }
}

/// `spoor_queries_total` and `spoor_query_seconds_total` for one query.
pub fn count_query<T>(p: &Pipeline, endpoint: &str, started: std::time::Instant, result: &Result<T, Error>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Error::BadRequest(_) | Error::Unauthenticated(_)) => "bad_request",
        Err(_) => "error",
    };
    p.metrics.inc("spoor_queries_total", &[("endpoint", endpoint), ("outcome", outcome)], 1.0);
    p.metrics.inc("spoor_query_seconds_total", &[("endpoint", endpoint)], started.elapsed().as_secs_f64());
}

async fn run(p: &Pipeline, headers: &HeaderMap, raw: &str) -> Result<Json, Error> {
    let tenants = tenant::for_read(headers, p.config.tenancy.multitenancy_enabled)?;
    search_json(&p.head, &p.blocks, &p.config.search, &tenants, raw).await
}

/// A search from its raw query string to the response body; the HTTP handler and
/// `spoor query` (reading blocks directly) share it.
pub async fn search_json(
    head: &Head,
    blocks: &Blocks,
    cfg: &SearchConfig,
    tenants: &[String],
    raw: &str,
) -> Result<Json, Error> {
    let params = Params::parse(raw);
    let req = request(&params, cfg)?;
    let mut all = SearchResult::default();
    for t in tenants {
        let found = spoor_query::search::search(head, blocks, t, &req).await.map_err(query_error)?;
        all.traces.extend(found.traces);
        add_metrics(&mut all.metrics, &found.metrics);
    }
    if tenants.len() > 1 {
        all.traces.sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then_with(|| a.trace_id.cmp(&b.trace_id)));
        all.traces.truncate(req.limit);
    }
    Ok(response_json(&all))
}

pub fn query_error(e: spoor_query::Error) -> Error {
    if e.is_bad_request() { Error::BadRequest(e.to_string()) } else { Error::Internal(e.to_string()) }
}

fn add_metrics(into: &mut SearchMetrics, m: &SearchMetrics) {
    into.inspected_traces += m.inspected_traces;
    into.inspected_spans += m.inspected_spans;
    into.inspected_bytes += m.inspected_bytes;
    into.total_blocks += m.total_blocks;
    into.completed_blocks += m.completed_blocks;
    into.total_block_bytes += m.total_block_bytes;
}

/// Query-string parameters, decoded leniently: one Grafana version sent `q` unencoded, so raw
/// `{`, `}`, `"` and spaces are accepted, and a `%` that starts no escape stays a `%`.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(raw: &str) -> Params {
        Params(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A positive integer parameter; absent or empty → None.
    pub fn uint(&self, name: &str) -> Result<Option<u32>, Error> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::BadRequest(format!("invalid {name}: {v:?} is not a non-negative integer"))),
        }
    }

    /// `start`/`end` in unix seconds as a nanosecond range (end inclusive to its last ns);
    /// None when neither is given.
    pub fn range(&self, max_hours: u64) -> Result<Option<(u64, u64)>, Error> {
        let (start, end) = (self.uint("start")?.unwrap_or(0), self.uint("end")?.unwrap_or(0));
        if start == 0 && end == 0 {
            return Ok(None);
        }
        if end <= start {
            return Err(Error::BadRequest(format!("http parameter start must be before end: {start} >= {end}")));
        }
        if max_hours > 0 && u64::from(end - start) > max_hours * 3600 {
            return Err(Error::BadRequest(format!(
                "range specified by start and end exceeds {max_hours}h. received start={start} end={end}"
            )));
        }
        Ok(Some((u64::from(start) * 1_000_000_000, u64::from(end) * 1_000_000_000 + 999_999_999)))
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex_digit(b.get(i + 1)), hex_digit(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: Option<&u8>) -> Option<u8> {
    (*c? as char).to_digit(16).map(|d| d as u8)
}

const KNOWN: [&str; 9] = ["q", "tags", "minDuration", "maxDuration", "limit", "spss", "start", "end", "query"];

fn request(params: &Params, cfg: &SearchConfig) -> Result<SearchRequest, Error> {
    let q = params.get("q").or_else(|| params.get("query")).filter(|q| !q.trim().is_empty());
    let tags = params.get("tags").filter(|t| !t.trim().is_empty());
    if q.is_some() && tags.is_some() {
        return Err(Error::BadRequest("invalid request: q and tags cannot both be given".into()));
    }
    let range = params.range(cfg.max_search_duration_hours)?;
    let mut legacy: Vec<(String, String)> = match tags {
        Some(t) => logfmt(t)?,
        None => Vec::new(),
    };
    // Very old Grafana sent each tag as its own parameter.
    if q.is_none() && tags.is_none() && range.is_none() {
        legacy.extend(params.0.iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())).cloned());
    }
    let text = match q {
        Some(q) => q.to_owned(),
        None => legacy_query(&legacy),
    };
    check_size(&text, cfg)?;
    let query = spoor_traceql::parse(&text).map_err(|e| Error::BadRequest(format!("invalid TraceQL query: {e}")))?;
    let plan = Arc::new(Plan::new(&query).map_err(query_error)?);
    let limit = match params.uint("limit")? {
        None => cfg.default_result_limit,
        Some(0) => return Err(Error::BadRequest("invalid limit: must be a positive number".into())),
        Some(n) if n > cfg.max_result_limit => {
            return Err(Error::BadRequest(format!(
                "invalid limit: {n} is more than max_result_limit ({})",
                cfg.max_result_limit
            )));
        }
        Some(n) => n,
    };
    let spss = match params.uint("spss")? {
        None | Some(0) => cfg.default_spans_per_span_set,
        Some(n) if n > cfg.max_spans_per_span_set => {
            return Err(Error::BadRequest(format!(
                "invalid spss: {n} is more than max_spans_per_span_set ({})",
                cfg.max_spans_per_span_set
            )));
        }
        Some(n) => n,
    };
    let duration = |name: &str| -> Result<Option<u64>, Error> {
        match params.get(name) {
            None | Some("") => Ok(None),
            Some(v) => go_duration(v)
                .map(Some)
                .ok_or_else(|| Error::BadRequest(format!("invalid {name}: {v:?} is not a duration such as 100ms"))),
        }
    };
    let (min_duration, max_duration) = (duration("minDuration")?, duration("maxDuration")?);
    if let (Some(min), Some(max)) = (min_duration, max_duration)
        && max < min
    {
        return Err(Error::BadRequest("invalid maxDuration: must be greater than minDuration".into()));
    }
    Ok(SearchRequest { plan, limit: limit as usize, spss: spss as usize, range, min_duration, max_duration })
}

/// `k=v k2="v v"`.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, Error> {
    let bad = || Error::BadRequest(format!("invalid tags: {s:?} is not logfmt (key=value key2=\"value 2\")"));
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(bad)?;
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad());
        }
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(bad)?;
            value = quoted[..end].to_owned();
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = &rest[end..];
        }
        out.push((key.to_owned(), value));
        rest = rest.trim_start();
    }
    Ok(out)
}

/// Tempo's legacy tag search as TraceQL: a case-insensitive substring of a span or resource
/// attribute (the unscoped attribute looks in both).
fn legacy_query(tags: &[(String, String)]) -> String {
    if tags.is_empty() {
        return "{ }".into();
    }
    let conds: Vec<String> = tags
        .iter()
        .map(|(k, v)| {
            let attr =
                spoor_traceql::ast::Attribute::Attr { scope: spoor_traceql::ast::Scope::Unscoped, name: k.clone() };
            let pattern = format!("(?i).*{}.*", regex::escape(v));
            format!("{attr} =~ {}", serde_json::to_string(&pattern).unwrap_or_default())
        })
        .collect();
    format!("{{ {} }}", conds.join(" && "))
}

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, units ns us µs ms s m h.
pub fn go_duration(s: &str) -> Option<u64> {
    spoor_process::duration::parse(s).map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `716.666666ms`, `1.5µs`, `0s`. Tempo reports
/// duration attributes this way.
pub fn go_duration_string(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, digits: u32| -> String {
        let div = 10u64.pow(digits);
        let (whole, rest) = (v / div, v % div);
        if rest == 0 {
            whole.to_string()
        } else {
            let s = format!("{whole}.{rest:0width$}", width = digits as usize);
            s.trim_end_matches('0').to_owned()
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 6));
    }
    let (h, m) = (u / 3_600_000_000_000, (u / 60_000_000_000) % 60);
    let s = frac(u % 60_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// A reported value as an OTLP `AnyValue` in JSON.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Nil => json!({ "stringValue": "nil" }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Int(i) => json!({ "intValue": i.to_string() }),
        Value::Float(f) if f.is_finite() => json!({ "doubleValue": f }),
        Value::Float(f) => {
            json!({ "doubleValue": if f.is_nan() { "NaN" } else if *f > 0.0 { "Infinity" } else { "-Infinity" } })
        }
        Value::Str(s) => json!({ "stringValue": s }),
        Value::Duration(ns) => json!({ "stringValue": go_duration_string(*ns) }),
        Value::Status(s) => json!({ "stringValue": s.as_str() }),
        Value::Kind(k) => json!({ "stringValue": k.as_str() }),
        Value::Any(bytes) => {
            use prost::Message;
            match AnyValue::decode(&bytes[..]) {
                Ok(any) => any_value_json(&any),
                Err(_) => json!({}),
            }
        }
    }
}

fn attributes_json(attrs: &[(String, Value)]) -> Json {
    Json::Array(attrs.iter().map(|(k, v)| json!({ "key": k, "value": value_json(v) })).collect())
}

fn span_json(s: &SpanHit) -> Json {
    let mut m = Map::new();
    m.insert("spanID".into(), json!(hex(&s.span_id)));
    if !s.name.is_empty() {
        m.insert("name".into(), json!(s.name));
    }
    m.insert("startTimeUnixNano".into(), json!(s.start_unix_nano.to_string()));
    m.insert("durationNanos".into(), json!(s.duration_nano.to_string()));
    if !s.attributes.is_empty() {
        m.insert("attributes".into(), attributes_json(&s.attributes));
    }
    Json::Object(m)
}

fn spanset_json(s: &SpansetHit) -> Json {
    let mut m = Map::new();
    m.insert("spans".into(), Json::Array(s.spans.iter().map(span_json).collect()));
    if s.matched > 0 {
        m.insert("matched".into(), json!(s.matched));
    }
    if !s.attributes.is_empty() {
        m.insert("attributes".into(), attributes_json(&s.attributes));
    }
    Json::Object(m)
}

pub fn trace_json(t: &TraceHit) -> Json {
    let mut m = Map::new();
    // Tempo strips leading zeros from trace IDs in search results.
    let id = hex(&t.trace_id.0);
    let id = id.trim_start_matches('0');
    m.insert("traceID".into(), json!(if id.is_empty() { "0" } else { id }));
    m.insert(
        "rootServiceName".into(),
        json!(match (&t.root_name, &t.root_service) {
            (None, _) => "<root span not yet received>",
            (Some(_), Some(s)) => s.as_str(),
            (Some(_), None) => "",
        }),
    );
    if let Some(name) = t.root_name.as_deref().filter(|n| !n.is_empty()) {
        m.insert("rootTraceName".into(), json!(name));
    }
    m.insert("startTimeUnixNano".into(), json!(t.start_unix_nano.to_string()));
    let ms = t.end_unix_nano.saturating_sub(t.start_unix_nano) / 1_000_000;
    if ms > 0 {
        m.insert("durationMs".into(), json!(ms));
    }
    if let Some(first) = t.spansets.first() {
        m.insert("spanSet".into(), spanset_json(first));
    }
    m.insert("spanSets".into(), Json::Array(t.spansets.iter().map(spanset_json).collect()));
    let stats: Map<String, Json> = t
        .service_stats
        .iter()
        .map(|(svc, (spans, errors))| {
            let mut s = Map::new();
            s.insert("spanCount".into(), json!(spans));
            if *errors > 0 {
                s.insert("errorCount".into(), json!(errors));
            }
            (svc.clone(), Json::Object(s))
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    if !stats.is_empty() {
        m.insert("serviceStats".into(), Json::Object(stats));
    }
    Json::Object(m)
}

pub fn metrics_json(m: &SearchMetrics) -> Json {
    let mut out = Map::new();
    let mut put = |k: &str, v: Json, zero: bool| {
        if !zero {
            out.insert(k.into(), v);
        }
    };
    put("inspectedTraces", json!(m.inspected_traces), m.inspected_traces == 0);
    put("inspectedBytes", json!(m.inspected_bytes.to_string()), m.inspected_bytes == 0);
    put("inspectedSpans", json!(m.inspected_spans.to_string()), m.inspected_spans == 0);
    put("totalBlocks", json!(m.total_blocks), m.total_blocks == 0);
    put("completedJobs", json!(m.completed_blocks), m.completed_blocks == 0);
    put("totalJobs", json!(m.total_blocks), m.total_blocks == 0);
    put("totalBlockBytes", json!(m.total_block_bytes.to_string()), m.total_block_bytes == 0);
    Json::Object(out)
}

fn response_json(r: &SearchResult) -> Json {
    json!({
        "traces": r.traces.iter().map(trace_json).collect::<Vec<_>>(),
        "metrics": metrics_json(&r.metrics),
    })
}

/// Refuses a TraceQL text longer than `search.max_query_expression_size_bytes`.
pub(crate) fn check_size(text: &str, cfg: &SearchConfig) -> Result<(), Error> {
    if text.len() > cfg.max_query_expression_size_bytes {
        return Err(Error::BadRequest(format!(
            "query is {} bytes, more than max_query_expression_size_bytes ({})",
            text.len(),
            cfg.max_query_expression_size_bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_query_strings() {
        let p = Params::parse("q={ name = \"a b\" }&limit=5&x=%7B%zz&y=a+b");
        assert_eq!(p.get("q"), Some("{ name = \"a b\" }"));
        assert_eq!(p.get("x"), Some("{%zz"));
        assert_eq!(p.get("y"), Some("a b"));
        assert_eq!(p.uint("limit").unwrap(), Some(5));
    }

    #[test]
    fn go_durations_both_ways() {
        assert_eq!(go_duration("100ms"), Some(100_000_000));
        assert_eq!(go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration("2µs"), Some(2_000));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration_string(716_666_666), "716.666666ms");
        assert_eq!(go_duration_string(1_500_000_000), "1.5s");
        assert_eq!(go_duration_string(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration_string(1_500), "1.5µs");
        assert_eq!(go_duration_string(0), "0s");
        assert_eq!(go_duration_string(120_000_000_000), "2m0s");
    }

    #[test]
    fn legacy_tags_become_traceql() {
        let tags = logfmt("service.name=shop http.url=\"/a b\"").unwrap();
        assert_eq!(legacy_query(&tags), r#"{ .service.name =~ "(?i).*shop.*" && .http.url =~ "(?i).*/a b.*" }"#);
        assert!(logfmt("novalue").is_err());
    }
}
