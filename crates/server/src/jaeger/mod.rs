//! Jaeger's query API (the HTTP JSON API Jaeger UI calls) over the same reader as the Tempo
//! routes: `services`, operations, trace search, trace by ID, `dependencies`, and the
//! Monitor tab's `metrics/*`. Everything lives under `/jaeger/api/`; the routes whose paths
//! Tempo does not use are also under `/api/` (the trace routes are not: `/api/traces/{id}` is
//! Tempo's). Searches are TraceQL queries built from Jaeger's parameters and run by the one
//! engine; RED metrics and dependencies are TraceQL metrics and a scan over stored spans for
//! the window asked. docs/jaeger.md has the mapping and what differs.
//!
//! - `convert`: OTLP traces as Jaeger's JSON model.
//! - `query`: services, operations, search, trace by ID, dependencies.
//! - `monitor`: `metrics/{latencies,calls,errors,minstep}`.

pub mod convert;
pub mod monitor;
pub mod query;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

use crate::error::Error;
use crate::tempo::reader::Reader;

pub fn router(reader: Arc<Reader>) -> axum::Router {
    let shared = || {
        axum::Router::new()
            .route("/services", get(query::services))
            .route("/services/{service}/operations", get(query::service_operations))
            .route("/operations", get(query::operations))
            .route("/dependencies", get(query::dependencies))
            .route("/metrics/{metric}", get(monitor::handler))
    };
    let jaeger = shared()
        .route("/traces", get(query::traces))
        .route("/traces/{id}", get(query::trace))
        .fallback(|| async { failure(Error::new(crate::error::Kind::NotFound, "no such Jaeger API route")) });
    axum::Router::new().nest("/jaeger/api", jaeger).nest("/api", shared()).with_state(reader)
}

/// Jaeger's envelope for an answer: `data` and `total`, `limit` and `offset` (always 0: the
/// API has no paging), `errors` null.
pub fn success(data: Json, total: usize) -> Response {
    axum::Json(json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": Json::Null })).into_response()
}

/// Jaeger's envelope for a refusal: the status, and `errors` naming it.
pub fn failure(e: Error) -> Response {
    let status = e.http_status();
    let body = json!({
        "data": Json::Null,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{ "code": status.as_u16(), "msg": e.to_string() }],
    });
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Some(v) = e.retry_after_secs().and_then(|secs| secs.to_string().parse().ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}
