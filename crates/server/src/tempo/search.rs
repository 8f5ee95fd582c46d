//! `GET /api/search`: TraceQL (or Tempo's legacy tag search) over the head and the blocks,
//! answered in Tempo's JSON shape (tempo-compat §1.5).

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use spoor_query::Plan;
use spoor_query::search::{SearchRequest, SearchResult};

use crate::auth::audit::ResultCount;
use crate::auth::mask::Masking;
use crate::auth::spans::{SpanFilter, SpanFiltering};
use crate::config::SearchConfig;
use crate::error::Error;
use crate::metrics::names;
use crate::tempo::json::search_json;
use crate::tempo::params::{Params, check_size, go_duration, query_error, text_error};
use crate::tempo::reader::Reader;

pub async fn handler(
    State(r): State<Arc<Reader>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    mask: Option<Extension<Masking>>,
    spans: Option<Extension<SpanFiltering>>,
) -> Response {
    let started = Instant::now();
    let result = async { search(&r, &r.tenants(&headers)?, raw.as_deref().unwrap_or("")).await }.await;
    if let Ok(found) = &result {
        let m = r.metrics();
        m.inc(names::SEARCH_INSPECTED_SPANS_TOTAL, &[], found.metrics.inspected_spans as f64);
        m.inc(names::SEARCH_INSPECTED_BYTES_TOTAL, &[], found.metrics.inspected_bytes as f64);
    }
    r.count_query("search", started, &result);
    match result {
        Ok(found) => {
            let mut answer = search_json(&found);
            if let Some(Extension(Masking(m))) = &mask {
                m.apply_search_json(&mut answer);
            }
            // The query itself was restricted by the guard; what remains is the trace summary.
            if spans.is_some() {
                SpanFilter::apply_search_json(&mut answer);
            }
            let mut resp = axum::Json(answer).into_response();
            resp.extensions_mut().insert(ResultCount(found.traces.len()));
            partial_header(&mut resp, &found.missing);
            resp
        }
        Err(e) => text_error(e),
    }
}

/// `Spoor-Partial-Results` on an answer some source (a querier's ingesters) did not contribute
/// to: it may lack their live traces. Tempo's JSON has no place for it outside trace by ID.
pub fn partial_header(resp: &mut Response, missing: &[String]) {
    if missing.is_empty() {
        return;
    }
    let mut text = missing.join("; ");
    text.truncate(text.floor_char_boundary(512));
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&text.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), "?"))
    {
        resp.headers_mut().insert("spoor-partial-results", v);
    }
}

/// A search from its raw query string to its result, newest traces first; the HTTP handler
/// and `spoor query` (reading blocks directly) share it.
pub async fn search(r: &Reader, tenants: &[String], raw: &str) -> Result<SearchResult, Error> {
    search_progressively(r, tenants, raw, None).await
}

/// [`search`], handing `progress` the answer so far as blocks are read (one tenant's only: a
/// federated search answers once, at the end).
pub async fn search_progressively(
    r: &Reader,
    tenants: &[String],
    raw: &str,
    mut progress: Option<&mut (dyn FnMut(SearchResult) + Send)>,
) -> Result<SearchResult, Error> {
    let req = request_from(r, raw)?;
    let mut all = SearchResult::default();
    if tenants.len() > 1 {
        progress = None;
    }
    for t in tenants {
        // A querier of the scale-out: the ingesters' live traces stand in for its own head.
        let remote = match &r.live {
            Some(l) => l.search(t, raw, &mut all.missing).await,
            None => Vec::new(),
        };
        let found = spoor_query::search::search_with_remote(
            &r.head,
            remote,
            &r.blocks,
            t,
            &req,
            // Reborrowed for one tenant; the coercion shortens the closure's lifetime to match.
            progress.as_mut().map(|p| &mut **p as &mut (dyn FnMut(SearchResult) + Send)),
        )
        .await
        .map_err(query_error)?;
        all.traces.extend(found.traces);
        all.metrics += &found.metrics;
    }
    if tenants.len() > 1 {
        all.traces.sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then_with(|| a.trace_id.cmp(&b.trace_id)));
        all.traces.truncate(req.limit);
    }
    Ok(all)
}

/// The search a raw query string asks for (also what an ingester evaluates for a querier).
pub fn request_from(r: &Reader, raw: &str) -> Result<SearchRequest, Error> {
    request(&Params::parse(raw), &r.search)
}

const KNOWN: [&str; 9] = ["q", "tags", "minDuration", "maxDuration", "limit", "spss", "start", "end", "query"];

fn request(params: &Params, cfg: &SearchConfig) -> Result<SearchRequest, Error> {
    let q = params.get("q").or_else(|| params.get("query")).filter(|q| !q.trim().is_empty());
    let tags = params.get("tags").filter(|t| !t.trim().is_empty());
    if q.is_some() && tags.is_some() {
        return Err(Error::bad_request("invalid request: q and tags cannot both be given"));
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
    let query = spoor_traceql::parse(&text).map_err(|e| Error::bad_request(format!("invalid TraceQL query: {e}")))?;
    let plan = Arc::new(Plan::new(&query).map_err(query_error)?);
    let limit = match params.uint("limit")? {
        None => cfg.default_result_limit,
        Some(0) => return Err(Error::bad_request("invalid limit: must be a positive number")),
        Some(n) if n > cfg.max_result_limit => {
            return Err(Error::bad_request(format!(
                "invalid limit: {n} is more than max_result_limit ({})",
                cfg.max_result_limit
            )));
        }
        Some(n) => n,
    };
    let spss = match params.uint("spss")? {
        None | Some(0) => cfg.default_spans_per_span_set,
        Some(n) if n > cfg.max_spans_per_span_set => {
            return Err(Error::bad_request(format!(
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
                .ok_or_else(|| Error::bad_request(format!("invalid {name}: {v:?} is not a duration such as 100ms"))),
        }
    };
    let (min_duration, max_duration) = (duration("minDuration")?, duration("maxDuration")?);
    if let (Some(min), Some(max)) = (min_duration, max_duration)
        && max < min
    {
        return Err(Error::bad_request("invalid maxDuration: must be greater than minDuration"));
    }
    Ok(SearchRequest { plan, limit: limit as usize, spss: spss as usize, range, min_duration, max_duration })
}

/// `k=v k2="v v"`.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, Error> {
    let bad = || Error::bad_request(format!("invalid tags: {s:?} is not logfmt (key=value key2=\"value 2\")"));
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
/// attribute (the unscoped attribute looks in both). Regexes match strings only, so a value
/// that reads as a number or a boolean also matches that typed value
/// (`http.status_code=402` finds the int 402).
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
            let text = format!("{attr} =~ {}", serde_json::to_string(&pattern).unwrap_or_default());
            let typed = if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
                Some(v.clone())
            } else {
                v.parse::<f64>().ok().filter(|f| f.is_finite() && v.contains('.')).map(|f| format!("{f:?}"))
            };
            match typed {
                Some(value) => format!("({text} || {attr} = {value})"),
                None => text,
            }
        })
        .collect();
    format!("{{ {} }}", conds.join(" && "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_tags_become_traceql() {
        let tags = logfmt("service.name=shop http.url=\"/a b\"").unwrap();
        assert_eq!(legacy_query(&tags), r#"{ .service.name =~ "(?i).*shop.*" && .http.url =~ "(?i).*/a b.*" }"#);
        assert!(logfmt("novalue").is_err());
        let tags = logfmt("http.status_code=402 ok=true ratio=0.5 v=1e3").unwrap();
        assert_eq!(
            legacy_query(&tags),
            r#"{ (.http.status_code =~ "(?i).*402.*" || .http.status_code = 402) && (.ok =~ "(?i).*true.*" || .ok = true) && (.ratio =~ "(?i).*0\\.5.*" || .ratio = 0.5) && .v =~ "(?i).*1e3.*" }"#
        );
    }
}
