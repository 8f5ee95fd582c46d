//! Services, operations, trace search, trace by ID and dependencies, as Jaeger answers them.
//! Searches become TraceQL for the one engine (`search_query`); the service and operation
//! lists are TraceQL metrics (`count_over_time() by (...)`) over the recent window, so they
//! are exact for it rather than a sample of the newest traces.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value as Json, json};
use spoor_model::TraceId;
use spoor_model::otlp::TracesData;
use spoor_query::Plan;
use spoor_query::metrics::{Grid, Label, MetricsRequest};
use spoor_query::search::SearchRequest;
use spoor_traceql::ast::{Attribute, Scope};

use crate::auth::audit::ResultCount;
use crate::auth::mask::Masking;
use crate::error::Error;
use crate::jaeger::convert;
use crate::jaeger::envelope::{failure, success};
use crate::tempo::params::{Params, SECOND, check_size, go_duration, query_error};
use crate::tempo::reader::Reader;

const MICROS: u64 = 1_000;
const MILLIS: u64 = 1_000_000;
const HOUR: u64 = 3600 * SECOND;

/// How far back the service and operation lists look, at most (`search.max_metrics_duration_hours`
/// if smaller): within the full retention tier, where every span is there to filter on.
const LIST_WINDOW: u64 = 24 * HOUR;
/// Dependencies look back this far when `lookback` is absent (Jaeger's default).
const DEPENDENCY_LOOKBACK: u64 = 24 * HOUR;
/// Searches without `start` look back this far (the UI's "Last Hour").
const SEARCH_LOOKBACK: u64 = HOUR;

fn masking(mask: &Option<Extension<Masking>>, trace: &mut TracesData) {
    if let Some(Extension(Masking(m))) = mask {
        m.apply(trace);
    }
}

fn done(r: &Reader, endpoint: &str, started: Instant, result: Result<(Json, usize), Error>) -> Response {
    r.count_query(endpoint, started, &result);
    match result {
        Ok((data, total)) => {
            let mut resp = success(data, total);
            resp.extensions_mut().insert(ResultCount(total));
            resp
        }
        Err(e) => failure(e),
    }
}

pub async fn services(State(r): State<Arc<Reader>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let result = async {
        let names = label_tuples(&r, &r.tenants(&headers)?, "{ }", &["resource.service.name"]).await?;
        let list: Vec<Json> = names.into_iter().map(|mut t| Json::String(t.remove(0))).collect();
        let n = list.len();
        Ok((Json::Array(list), n))
    }
    .await;
    done(&r, "jaeger_services", started, result)
}

/// `GET /api/services/{service}/operations`: the operation names, as strings.
pub async fn service_operations(
    State(r): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let filter = format!("{{ resource.service.name = {} }}", literal(&service));
        let found = label_tuples(&r, &r.tenants(&headers)?, &filter, &["name"]).await?;
        let list: Vec<Json> = found.into_iter().map(|mut t| Json::String(t.remove(0))).collect();
        let n = list.len();
        Ok((Json::Array(list), n))
    }
    .await;
    done(&r, "jaeger_operations", started, result)
}

/// `GET /api/operations?service=&spanKind=`: `{name, spanKind}` pairs (`spanKind` empty for
/// an unspecified kind).
pub async fn operations(State(r): State<Arc<Reader>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let started = Instant::now();
    let result = async {
        let params = Params::parse(raw.as_deref().unwrap_or(""));
        let service = params
            .get("service")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::bad_request("parameter 'service' is required"))?;
        let mut filter = format!("resource.service.name = {}", literal(service));
        if let Some(kind) = params.get("spanKind").filter(|k| !k.is_empty()) {
            filter.push_str(&format!(" && kind = {}", span_kind(kind)?));
        }
        let found = label_tuples(&r, &r.tenants(&headers)?, &format!("{{ {filter} }}"), &["name", "kind"]).await?;
        let list: Vec<Json> = found
            .into_iter()
            .map(|t| {
                let kind = if t[1] == "unspecified" { "" } else { t[1].as_str() };
                json!({ "name": t[0], "spanKind": kind })
            })
            .collect();
        let n = list.len();
        Ok((Json::Array(list), n))
    }
    .await;
    done(&r, "jaeger_operations", started, result)
}

/// A Jaeger span kind as TraceQL's.
pub fn span_kind(kind: &str) -> Result<&'static str, Error> {
    Ok(match kind {
        "server" => "server",
        "client" => "client",
        "producer" => "producer",
        "consumer" => "consumer",
        "internal" => "internal",
        "unspecified" => "unspecified",
        other => {
            return Err(Error::bad_request(format!(
                "unsupported span kind {other:?}: use server, client, producer, consumer, internal or unspecified"
            )));
        }
    })
}

/// The distinct string values of the `by` attributes among spans matching `filter` in the
/// list window, sorted.
async fn label_tuples(r: &Reader, tenants: &[String], filter: &str, by: &[&str]) -> Result<Vec<Vec<String>>, Error> {
    let hours = r.search.max_metrics_duration_hours;
    let window = if hours == 0 { LIST_WINDOW } else { hours.saturating_mul(HOUR).min(LIST_WINDOW) };
    let end = spoor_model::time::now_nanos();
    let text = format!("{filter} | count_over_time() by ({})", by.join(", "));
    let query = spoor_traceql::parse(&text).map_err(|e| Error::internal(format!("{text}: {e}")))?;
    let grid = Grid::instant(end.saturating_sub(window), end).map_err(query_error)?;
    let req = MetricsRequest { query, grid, exemplars: 0 };
    let result = spoor_query::metrics::query_range(&r.head, &r.blocks, tenants, &req).await.map_err(query_error)?;
    let mut out = BTreeSet::new();
    for s in result.series {
        let values: Vec<String> = s
            .labels
            .into_iter()
            .filter_map(|(_, l)| match l {
                Label::Str(s) => Some(s),
                _ => None,
            })
            .collect();
        if values.len() == by.len() {
            out.insert(values);
        }
    }
    Ok(out.into_iter().collect())
}

/// A TraceQL string literal.
pub fn literal(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `GET /jaeger/api/traces`: a search (or, with `traceID`, those traces), whole traces newest
/// first.
pub async fn traces(
    State(r): State<Arc<Reader>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    mask: Option<Extension<Masking>>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let tenants = r.tenants(&headers)?;
        let params = Params::parse(raw.as_deref().unwrap_or(""));
        let ids: Vec<TraceId> =
            match params.0.iter().filter(|(k, _)| k == "traceID").map(|(_, v)| v).collect::<Vec<_>>() {
                ids if !ids.is_empty() => ids
                    .into_iter()
                    .map(|v| TraceId::parse_api(v).map_err(|e| Error::bad_request(format!("invalid traceID: {e}"))))
                    .collect::<Result<_, _>>()?,
                _ => search(&r, &tenants, &params).await?,
            };
        let mut out = Vec::new();
        for id in ids {
            if let Some(mut t) = fetch(&r, &tenants, &id, None).await? {
                masking(&mask, &mut t);
                out.push(convert::trace(&id.to_hex(), &t));
            }
        }
        let n = out.len();
        Ok((Json::Array(out), n))
    }
    .await;
    done(&r, "jaeger_search", started, result)
}

/// `GET /jaeger/api/traces/{id}` (optional `start`/`end` in µs narrow the blocks read).
pub async fn trace(
    State(r): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    mask: Option<Extension<Masking>>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let tenants = r.tenants(&headers)?;
        let id = TraceId::parse_api(&id).map_err(|e| Error::bad_request(format!("invalid trace ID: {e}")))?;
        let params = Params::parse(raw.as_deref().unwrap_or(""));
        let start = micros(&params, "start")?;
        let end = micros(&params, "end")?;
        let range = match (start, end) {
            (None, None) => None,
            (s, e) => {
                let (s, e) = (s.unwrap_or(0), e.unwrap_or(u64::MAX));
                if e < s {
                    return Err(Error::bad_request("invalid end: before start"));
                }
                Some((s, e))
            }
        };
        let mut t = fetch(&r, &tenants, &id, range)
            .await?
            .ok_or_else(|| Error::new(crate::error::Kind::NotFound, "trace not found"))?;
        masking(&mask, &mut t);
        Ok((json!([convert::trace(&id.to_hex(), &t)]), 1))
    }
    .await;
    done(&r, "jaeger_trace", started, result)
}

/// A trace assembled from every tenant read, or None.
async fn fetch(
    r: &Reader,
    tenants: &[String],
    id: &TraceId,
    range: Option<(u64, u64)>,
) -> Result<Option<TracesData>, Error> {
    let mut fragments: Vec<bytes::Bytes> = Vec::new();
    for t in tenants {
        fragments.extend(r.find_trace(t, id, range).await?);
    }
    if fragments.is_empty() {
        return Ok(None);
    }
    let assembled = spoor_model::trace::assemble(fragments.iter().map(|b| &b[..]))
        .map_err(|e| Error::internal(format!("stored trace {id} does not decode: {e}")))?;
    Ok(Some(assembled.trace))
}

/// A parameter in unix microseconds, as nanoseconds.
fn micros(params: &Params, name: &str) -> Result<Option<u64>, Error> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(MICROS))
            .map(Some)
            .ok_or_else(|| Error::bad_request(format!("invalid {name}: {v:?} is not unix microseconds"))),
    }
}

/// A parameter in milliseconds (unix time or a duration), as nanoseconds.
pub fn millis(params: &Params, name: &str) -> Result<Option<u64>, Error> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            v.parse::<u64>().ok().and_then(|n| n.checked_mul(MILLIS)).map(Some).ok_or_else(|| {
                Error::bad_request(format!("invalid {name}: {v:?} is not a whole number of milliseconds"))
            })
        }
    }
}

/// The IDs of the traces a Jaeger search finds, newest first.
async fn search(r: &Reader, tenants: &[String], params: &Params) -> Result<Vec<TraceId>, Error> {
    let text = search_query(params)?;
    check_size(&text, &r.search)?;
    let query = spoor_traceql::parse(&text).map_err(|e| Error::bad_request(format!("invalid search: {e}")))?;
    let cfg = &r.search;
    let limit = match params.uint("limit")? {
        None | Some(0) => cfg.default_result_limit,
        Some(n) if n > cfg.max_result_limit => {
            return Err(Error::bad_request(format!(
                "invalid limit: {n} is more than max_result_limit ({})",
                cfg.max_result_limit
            )));
        }
        Some(n) => n,
    } as usize;
    let end = micros(params, "end")?.unwrap_or_else(spoor_model::time::now_nanos);
    let start = match micros(params, "start")? {
        Some(s) => s,
        None => end.saturating_sub(match params.get("lookback").filter(|v| !v.is_empty() && *v != "custom") {
            Some(v) => lookback(v)?,
            None => SEARCH_LOOKBACK,
        }),
    };
    if end < start {
        return Err(Error::bad_request("invalid end: before start"));
    }
    let max = cfg.max_search_duration_hours.saturating_mul(HOUR);
    if max > 0 && end - start > max {
        return Err(Error::bad_request(format!(
            "the search range (start to end) exceeds max_search_duration_hours ({}h)",
            cfg.max_search_duration_hours
        )));
    }
    let req = SearchRequest {
        plan: Arc::new(Plan::new(&query).map_err(query_error)?),
        limit,
        spss: 1,
        range: Some((start, end)),
        min_duration: None,
        max_duration: None,
    };
    let mut hits = Vec::new();
    for t in tenants {
        let found = spoor_query::search::search(&r.head, &r.blocks, t, &req).await.map_err(query_error)?;
        hits.extend(found.traces);
    }
    hits.sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then_with(|| a.trace_id.cmp(&b.trace_id)));
    hits.truncate(limit);
    Ok(hits.into_iter().map(|h| h.trace_id).collect())
}

/// The UI's `lookback`: `1h`, `2d`, `30m`…
fn lookback(v: &str) -> Result<u64, Error> {
    let bad = || Error::bad_request(format!("invalid lookback: {v:?} is not a duration such as 1h or 2d"));
    if let Some(days) = v.strip_suffix('d') {
        return days.parse::<u64>().ok().and_then(|d| d.checked_mul(24 * HOUR)).ok_or_else(bad);
    }
    go_duration(v).ok_or_else(bad)
}

/// Jaeger's search parameters as one TraceQL spanset: service, operation, every tag and the
/// duration bounds hold on the same span, as in Jaeger's own stores.
pub fn search_query(params: &Params) -> Result<String, Error> {
    let service = params
        .get("service")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::bad_request("parameter 'service' is required"))?;
    let mut conds = vec![format!("resource.service.name = {}", literal(service))];
    if let Some(op) = params.get("operation").filter(|s| !s.is_empty()) {
        conds.push(format!("name = {}", literal(op)));
    }
    for (_, raw) in params.0.iter().filter(|(k, _)| k == "tags") {
        for (k, v) in tags(raw)? {
            conds.push(tag_condition(&k, &v));
        }
    }
    let duration = |name: &str| -> Result<Option<u64>, Error> {
        match params.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => go_duration(v).map(Some).ok_or_else(|| {
                Error::bad_request(format!("invalid {name}: {v:?} is not a duration such as 1.2s or 100ms"))
            }),
        }
    };
    let (min, max) = (duration("minDuration")?, duration("maxDuration")?);
    if let (Some(min), Some(max)) = (min, max)
        && max < min
    {
        return Err(Error::bad_request("invalid maxDuration: less than minDuration"));
    }
    if let Some(min) = min {
        conds.push(format!("duration >= {min}ns"));
    }
    if let Some(max) = max {
        conds.push(format!("duration <= {max}ns"));
    }
    Ok(format!("{{ {} }}", conds.join(" && ")))
}

/// `tags`: Jaeger's JSON object (`{"http.status_code":"200"}`), or logfmt (`k=v k2="a b"`).
fn tags(raw: &str) -> Result<Vec<(String, String)>, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if raw.starts_with('{') {
        let map: BTreeMap<String, Json> = serde_json::from_str(raw)
            .map_err(|e| Error::bad_request(format!("invalid tags: not a JSON object of strings: {e}")))?;
        return map
            .into_iter()
            .map(|(k, v)| match v {
                Json::String(s) => Ok((k, s)),
                Json::Number(_) | Json::Bool(_) => Ok((k, v.to_string())),
                _ => Err(Error::bad_request(format!("invalid tags: the value of {k:?} is not a string"))),
            })
            .collect();
    }
    let bad =
        || Error::bad_request(format!("invalid tags: {raw:?} is neither a JSON object nor logfmt (k=v k2=\"v 2\")"));
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(bad)?;
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad());
        }
        rest = &rest[eq + 1..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(bad)?;
            let v = &quoted[..end];
            rest = &quoted[end + 1..];
            v
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let v = &rest[..end];
            rest = &rest[end..];
            v
        };
        out.push((key.to_owned(), value.to_owned()));
        rest = rest.trim_start();
    }
    Ok(out)
}

/// One tag as a TraceQL condition. Jaeger's values are text; an attribute stored as an int,
/// float or bool matches the text of its value. The tags Jaeger derives from OTLP fields
/// (`error`, `span.kind`, `otel.status_code`) match those fields too.
fn tag_condition(key: &str, value: &str) -> String {
    let attr = Attribute::Attr { scope: Scope::Unscoped, name: key.to_owned() }.to_string();
    let mut alts = vec![format!("{attr} = {}", literal(value))];
    if let Ok(i) = value.parse::<i64>() {
        alts.push(format!("{attr} = {i}"));
    }
    if let Ok(f) = value.parse::<f64>()
        && f.is_finite()
    {
        // TraceQL needs a decimal point to read a float.
        alts.push(format!("{attr} = {f:?}"));
    }
    if let Ok(b) = value.parse::<bool>() {
        alts.push(format!("{attr} = {b}"));
    }
    match (key, value) {
        ("error", "true") => alts.push("status = error".into()),
        ("span.kind", k) if span_kind(k).is_ok() => alts.push(format!("kind = {k}")),
        ("otel.status_code", "ERROR") => alts.push("status = error".into()),
        ("otel.status_code", "OK") => alts.push("status = ok".into()),
        _ => {}
    }
    format!("({})", alts.join(" || "))
}

/// `GET /api/dependencies?endTs=&lookback=` (ms; optional `service` keeps its own edges):
/// `[{parent, child, callCount}]` from the spans stored for the window.
pub async fn dependencies(State(r): State<Arc<Reader>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let started = Instant::now();
    let result = async {
        let tenants = r.tenants(&headers)?;
        let params = Params::parse(raw.as_deref().unwrap_or(""));
        let end = millis(&params, "endTs")?.unwrap_or_else(spoor_model::time::now_nanos);
        let lookback = millis(&params, "lookback")?.unwrap_or(DEPENDENCY_LOOKBACK);
        if lookback == 0 {
            return Err(Error::bad_request("invalid lookback: must be positive"));
        }
        let max = r.search.max_search_duration_hours.saturating_mul(HOUR);
        if max > 0 && lookback > max {
            return Err(Error::bad_request(format!(
                "invalid lookback: more than max_search_duration_hours ({}h)",
                r.search.max_search_duration_hours
            )));
        }
        let range = (end.saturating_sub(lookback), end);
        let mut edges: BTreeMap<(String, String), u64> = BTreeMap::new();
        for t in &tenants {
            let (found, _) =
                spoor_query::graph::dependencies(&r.head, &r.blocks, t, range).await.map_err(query_error)?;
            for e in found {
                *edges.entry((e.parent, e.child)).or_default() += e.calls;
            }
        }
        let service = params.get("service").filter(|s| !s.is_empty());
        let list: Vec<Json> = edges
            .into_iter()
            .filter(|((p, c), _)| service.is_none_or(|s| s == p || s == c))
            .map(|((parent, child), calls)| json!({ "parent": parent, "child": child, "callCount": calls }))
            .collect();
        let n = list.len();
        Ok((Json::Array(list), n))
    }
    .await;
    done(&r, "jaeger_dependencies", started, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_become_one_spanset() {
        let p = Params::parse(
            "service=shop&operation=GET%20%2Fa&tags=%7B%22http.status_code%22%3A%22200%22%7D&minDuration=1.5ms&maxDuration=1s",
        );
        assert_eq!(
            search_query(&p).unwrap(),
            r#"{ resource.service.name = "shop" && name = "GET /a" && (.http.status_code = "200" || .http.status_code = 200 || .http.status_code = 200.0) && duration >= 1500000ns && duration <= 1000000000ns }"#
        );
        let p = Params::parse("service=shop&tags=error%3Dtrue%20note%3D%22a%20b%22");
        assert_eq!(
            search_query(&p).unwrap(),
            r#"{ resource.service.name = "shop" && (.error = "true" || .error = true || status = error) && (.note = "a b") }"#
        );
        for bad in ["tags=%7Bx", "tags=novalue", "minDuration=5", "minDuration=2s&maxDuration=1s", ""] {
            let p = Params::parse(&format!("service=s&{bad}"));
            let p = if bad.is_empty() { Params::parse("") } else { p };
            assert!(search_query(&p).is_err(), "{bad}");
        }
        for q in ["service=s&tags=k%3Dv", "service=s&tags=%7B%22k%22%3A%22v%22%7D"] {
            assert!(spoor_traceql::parse(&search_query(&Params::parse(q)).unwrap()).is_ok(), "{q}");
        }
    }
}
