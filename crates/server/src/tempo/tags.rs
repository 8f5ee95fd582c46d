//! Tag names and tag values (tempo-compat §1.6–1.7): what Grafana's query builder and
//! autocomplete call. v1 speaks bare attribute names; v2 TraceQL identifiers, typed values, and
//! a `q` filter that is parsed leniently (a `q` that does not parse is ignored, as in Tempo).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use spoor_query::Value;
use spoor_query::tags::{NameScope, TagQuery};
use spoor_traceql::ast::{Attribute, FieldExpr, Intrinsic, Root, SpansetExpr, SpansetQuery, Stage};

use crate::auth::spans::{SpanFilter, SpanFiltering};
use crate::error::Error;
use crate::tempo::params::{Params, go_duration_string, query_error, text_error};
use crate::tempo::reader::Reader;

/// The intrinsic scope's fixed list, in Tempo's order.
const INTRINSICS: [&str; 25] = [
    "duration",
    "name",
    "status",
    "statusMessage",
    "kind",
    "rootServiceName",
    "rootName",
    "traceDuration",
    "event:name",
    "event:timeSinceStart",
    "link:spanID",
    "link:traceID",
    "instrumentation:name",
    "instrumentation:version",
    "trace:id",
    "span:id",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "span:duration",
    "span:name",
    "span:kind",
    "trace:rootName",
    "trace:rootService",
    "trace:duration",
];

const STATUS: [&str; 3] = ["ok", "error", "unset"];
const KINDS: [&str; 6] = ["client", "server", "producer", "consumer", "internal", "unspecified"];

/// The span filter of the caller's token, when it has one.
type Spans = Option<Extension<SpanFiltering>>;

fn filter_of(spans: &Spans) -> Option<&SpanFilter> {
    spans.as_ref().map(|Extension(SpanFiltering(f))| f.as_ref())
}

pub async fn names_v1(
    State(p): State<Arc<Reader>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    spans: Spans,
) -> Response {
    let started = std::time::Instant::now();
    respond(&p, "tags", started, names(&p, &headers, raw.as_deref().unwrap_or(""), 1, filter_of(&spans)).await)
}

pub async fn names_v2(
    State(p): State<Arc<Reader>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    spans: Spans,
) -> Response {
    let started = std::time::Instant::now();
    respond(&p, "tags", started, names(&p, &headers, raw.as_deref().unwrap_or(""), 2, filter_of(&spans)).await)
}

/// `/api/search/tag/{tag}/values`: the route captures `{tag}/values` whole, since the tag
/// itself may contain `/` (Tempo's router pattern is `{tagName:.*}`).
pub async fn values_v1(
    State(p): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    spans: Spans,
) -> Response {
    tag_values(&p, &headers, &rest, raw.as_deref().unwrap_or(""), 1, filter_of(&spans)).await
}

pub async fn values_v2(
    State(p): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    spans: Spans,
) -> Response {
    tag_values(&p, &headers, &rest, raw.as_deref().unwrap_or(""), 2, filter_of(&spans)).await
}

async fn tag_values(
    p: &Reader,
    headers: &HeaderMap,
    rest: &str,
    raw: &str,
    version: u8,
    spans: Option<&SpanFilter>,
) -> Response {
    let Some(tag) = rest.strip_suffix("/values") else { return axum::http::StatusCode::NOT_FOUND.into_response() };
    let started = std::time::Instant::now();
    respond(p, "tag_values", started, values(p, headers, tag, raw, version, spans).await)
}

fn respond(p: &Reader, endpoint: &str, started: std::time::Instant, r: Result<Json, Error>) -> Response {
    p.count_query(endpoint, started, &r);
    match r {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => text_error(e),
    }
}

/// The scope parameter: None means every scope.
fn scope_param(params: &Params) -> Result<Option<NameScope>, Error> {
    Ok(match params.get("scope").unwrap_or("") {
        "" | "none" | "all" => None,
        "resource" => Some(NameScope::Resource),
        "span" => Some(NameScope::Span),
        "intrinsic" => Some(NameScope::Intrinsic),
        "event" => Some(NameScope::Event),
        "link" => Some(NameScope::Link),
        "instrumentation" => Some(NameScope::Instrumentation),
        other => return Err(Error::bad_request(format!("invalid scope: {other}"))),
    })
}

fn tag_query(p: &Reader, params: &Params, filter: Option<FieldExpr>) -> Result<TagQuery, Error> {
    let cfg = &p.search;
    let limit = params.uint("limit")?.map_or(cfg.max_tag_values, |n| (n as usize).clamp(1, cfg.max_tag_values));
    Ok(TagQuery {
        range: params.range(cfg.max_search_duration_hours)?,
        filter,
        limit,
        max_bytes: cfg.max_bytes_per_tag_values_query,
    })
}

pub(crate) async fn names(
    p: &Reader,
    headers: &HeaderMap,
    raw: &str,
    version: u8,
    spans: Option<&SpanFilter>,
) -> Result<Json, Error> {
    let tenants = p.tenants(headers)?;
    let params = Params::parse(raw);
    let scope = scope_param(&params)?;
    let filter = if version == 2 { lenient_filter(params.get("q").unwrap_or(""))? } else { None };
    // A filtered token's names and values come from the spans it may see only.
    let filter = match spans {
        Some(s) => Some(s.and(filter)),
        None => filter,
    };
    let q = tag_query(p, &params, filter)?;
    let mut found = spoor_query::tags::TagNames::default();
    for t in &tenants {
        let names = spoor_query::tags::names(&p.head, &p.blocks, t, &q).await.map_err(query_error)?;
        found.merge(names);
    }
    let limited = |set: &BTreeSet<String>| -> Vec<String> { set.iter().take(q.limit).cloned().collect() };
    if version == 1 {
        let names: Vec<String> = match scope {
            None => limited(&found.span.union(&found.resource).cloned().collect()),
            Some(NameScope::Intrinsic) => INTRINSICS.iter().map(|s| s.to_string()).collect(),
            Some(s) => limited(found.scope(s)),
        };
        return Ok(json!({ "tagNames": names, "metrics": {} }));
    }
    let mut scopes = Vec::new();
    for s in [
        NameScope::Resource,
        NameScope::Span,
        NameScope::Intrinsic,
        NameScope::Event,
        NameScope::Link,
        NameScope::Instrumentation,
    ] {
        if scope.is_some_and(|want| want != s) {
            continue;
        }
        let tags = if s == NameScope::Intrinsic {
            INTRINSICS.iter().map(|s| s.to_string()).collect()
        } else {
            limited(found.scope(s))
        };
        if !tags.is_empty() {
            scopes.push(json!({ "name": s.as_str(), "tags": tags }));
        }
    }
    Ok(json!({ "scopes": scopes, "metrics": {} }))
}

/// The `{tag}` segment percent-decoded, twice if needed: older Grafana encodes it twice and
/// one layer is removed by its data-source proxy.
fn decode_tag(tag: &str) -> String {
    let once = tag.to_owned();
    if once.contains('%') {
        let decoded = Params::parse(&format!("t={once}"));
        decoded.get("t").unwrap_or(&once).to_owned()
    } else {
        once
    }
}

pub(crate) async fn values(
    p: &Reader,
    headers: &HeaderMap,
    tag: &str,
    raw: &str,
    version: u8,
    spans: Option<&SpanFilter>,
) -> Result<Json, Error> {
    let tenants = p.tenants(headers)?;
    let params = Params::parse(raw);
    let tag = decode_tag(tag);
    let attr = if version == 1 {
        match tag.as_str() {
            "status.code" => return Ok(json!({ "tagValues": ["unset", "ok", "error"], "metrics": {} })),
            "error" => return Ok(json!({ "tagValues": ["true"], "metrics": {} })),
            _ => Attribute::Attr { scope: spoor_traceql::ast::Scope::Unscoped, name: tag.clone() },
        }
    } else {
        identifier(&tag).ok_or_else(|| {
            Error::bad_request(format!(
                "please provide a valid tagName: {tag:?} is not a valid intrinsic or scoped attribute \
                 (e.g. resource.service.name, span.http.method, .foo, name, status)"
            ))
        })?
    };
    if let Attribute::Intrinsic(i) = &attr {
        let fixed: Option<&[&str]> = match i {
            Intrinsic::Status => Some(&STATUS),
            Intrinsic::Kind => Some(&KINDS),
            Intrinsic::Duration | Intrinsic::TraceDuration => Some(&[]),
            _ => None,
        };
        if let Some(fixed) = fixed {
            let list: Vec<Json> = fixed.iter().map(|v| json!({ "type": "keyword", "value": v })).collect();
            return Ok(json!({ "tagValues": list, "metrics": {} }));
        }
    }
    let filter = if version == 2 { lenient_filter(params.get("q").unwrap_or(""))? } else { None };
    // A filtered token's names and values come from the spans it may see only.
    let filter = match spans {
        Some(s) => Some(s.and(filter)),
        None => filter,
    };
    let q = tag_query(p, &params, filter)?;
    let mut all: Vec<Value> = Vec::new();
    for t in &tenants {
        let found = spoor_query::tags::values(&p.head, &p.blocks, t, &attr, &q).await.map_err(query_error)?;
        for v in found {
            if !all.contains(&v) && all.len() < q.limit {
                all.push(v);
            }
        }
    }
    if version == 1 {
        let list: Vec<String> = all.iter().map(|v| typed(v).1).collect();
        return Ok(json!({ "tagValues": list, "metrics": {} }));
    }
    let list: Vec<Json> = all
        .iter()
        .map(|v| {
            let (kind, value) = typed(v);
            json!({ "type": kind, "value": value })
        })
        .collect();
    Ok(json!({ "tagValues": list, "metrics": {} }))
}

/// A value as v2 reports it: its type name and its text.
fn typed(v: &Value) -> (&'static str, String) {
    match v {
        Value::Str(s) => ("string", s.clone()),
        Value::Int(i) => ("int", i.to_string()),
        Value::Float(f) => ("float", f.to_string()),
        Value::Bool(b) => ("bool", b.to_string()),
        Value::Duration(ns) => ("duration", go_duration_string(*ns)),
        Value::Status(s) => ("keyword", s.as_str().to_owned()),
        Value::Kind(k) => ("keyword", k.as_str().to_owned()),
        Value::Nil => ("keyword", "nil".to_owned()),
        Value::Any(_) => ("string", String::new()),
    }
}

/// A v2 tag name as a TraceQL identifier: `resource.service.name`, `.foo`, `name`, `span:kind`.
fn identifier(tag: &str) -> Option<Attribute> {
    let query = spoor_traceql::parse_unchecked(&format!("{{ {tag} }}")).ok()?;
    match query.root {
        Root::Spans(SpansetQuery::Pipeline(p)) => match p.stages.as_slice() {
            [Stage::Spanset(SpansetExpr::Filter { expr: FieldExpr::Attr { attr, .. }, .. })] => Some(attr.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The tag endpoints' `q`: a single spanset filter. Partial queries as Grafana sends them
/// while the user types (`{ resource.cluster = }`) keep their complete conditions; a `q` with
/// none is ignored, not an error.
fn lenient_filter(q: &str) -> Result<Option<FieldExpr>, Error> {
    let q = q.trim();
    if q.is_empty() || q == "{}" {
        return Ok(None);
    }
    let query = spoor_traceql::parse(q).ok().or_else(|| {
        let inner = q.trim_start_matches('{').trim_end_matches('}');
        let kept: Vec<&str> = inner
            .split("&&")
            .map(str::trim)
            .filter(|c| !c.is_empty() && spoor_traceql::parse(&format!("{{ {c} }}")).is_ok())
            .collect();
        if kept.is_empty() { None } else { spoor_traceql::parse(&format!("{{ {} }}", kept.join(" && "))).ok() }
    });
    Ok(query.and_then(|query| match query.root {
        Root::Spans(SpansetQuery::Pipeline(p)) => match p.stages.into_iter().next() {
            Some(Stage::Spanset(SpansetExpr::Filter { expr, .. })) => Some(expr),
            _ => None,
        },
        _ => None,
    }))
}
