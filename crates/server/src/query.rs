//! The Tempo-compatible query API: trace by ID (v1 and v2), echo, build info, readiness,
//! `/flush` and `/metrics`. Errors are plain text, as Tempo's are.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prost::Message;
use serde_json::json;
use spoor_model::TraceId;
use spoor_model::json::{IdStyle, trace_to_json};
use spoor_model::otlp::{TraceByIdMetrics, TraceByIdResponse};

use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::tenant;

/// The Tempo release whose API this server follows; Grafana gates features on it.
pub const TEMPO_API_VERSION: &str = "2.9.0";

pub fn router(p: Arc<Pipeline>) -> axum::Router {
    axum::Router::new()
        .route("/api/echo", get(|| async { "echo\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/metrics/generated", get(crate::generated::scrape))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(crate::search::handler))
        .route("/api/metrics/query_range", get(crate::metrics_query::range))
        .route("/api/metrics/query", get(crate::metrics_query::instant))
        .route("/api/search/tags", get(crate::tags::names_v1))
        .route("/api/v2/search/tags", get(crate::tags::names_v2))
        .route("/api/search/tag/{*tag}", get(crate::tags::values_v1))
        .route("/api/v2/search/tag/{*tag}", get(crate::tags::values_v2))
        .route("/flush", post(flush).get(flush))
        .with_state(p)
}

pub(crate) fn text_error(e: Error) -> Response {
    let status = e.http_status();
    if status == StatusCode::NOT_FOUND {
        return status.into_response();
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{e}\n")).into_response()
}

async fn ready(State(p): State<Arc<Pipeline>>) -> Response {
    if p.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", p.not_ready_reason())).into_response()
    }
}

/// Like Tempo's ingester `/flush`: every tenant's live traces become blocks; answers 204 once
/// they are durable in the backend.
async fn flush(State(p): State<Arc<Pipeline>>) -> Response {
    if !p.config.ingest.enabled {
        return StatusCode::NO_CONTENT.into_response();
    }
    match p.flush(None).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => text_error(e),
    }
}

async fn metrics(State(p): State<Arc<Pipeline>>) -> Response {
    if let Some(g) = &p.generator {
        crate::generated::publish(g, &p.metrics);
    }
    let wal = p.wal_stats();
    let body = p.metrics.render(wal.as_deref(), &p.head, &p.blocks);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": format!("{TEMPO_API_VERSION}+spoor.{}", env!("CARGO_PKG_VERSION")),
        "revision": option_env!("SPOOR_GIT_REVISION").unwrap_or("unknown"),
        "branch": "main",
        "buildUser": "spoor",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/protobuf"))
}

/// Parses and checks the shared parameters; returns the assembled trace or `NotFound`.
async fn lookup(
    p: &Pipeline,
    headers: &HeaderMap,
    id: &str,
    params: &HashMap<String, String>,
) -> Result<spoor_model::trace::Assembled, Error> {
    let tenants = tenant::for_read(headers, p.config.tenancy.multitenancy_enabled)?;
    let id = TraceId::parse_api(id).map_err(|e| Error::BadRequest(e.to_string()))?;
    let secs = |name: &str| -> Result<u32, Error> {
        match params.get(name).map(String::as_str) {
            None | Some("") => Ok(0),
            Some(v) => v.parse().map_err(|_| Error::BadRequest(format!("invalid {name}: {v:?} is not unix seconds"))),
        }
    };
    let (start, end) = (secs("start")?, secs("end")?);
    if (start != 0 || end != 0) && end <= start {
        return Err(Error::BadRequest(format!("http parameter start must be before end: {start} >= {end}")));
    }
    // Live traces are always searched: a time range only narrows which blocks are read.
    let range =
        (start != 0 || end != 0).then(|| (start as u64 * 1_000_000_000, end as u64 * 1_000_000_000 + 999_999_999));
    let mut fragments: Vec<bytes::Bytes> = Vec::new();
    for t in &tenants {
        fragments.extend(p.find_trace(t, &id, range).await?);
    }
    if fragments.is_empty() {
        return Err(Error::NotFound);
    }
    let assembled = spoor_model::trace::assemble(fragments.iter().map(|b| &b[..]))
        .map_err(|e| Error::Internal(format!("stored trace {id} does not decode: {e}")))?;
    Ok(assembled)
}

async fn trace_v1(
    State(p): State<Arc<Pipeline>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    trace_by_id(&p, &headers, &id, &params, 1).await
}

async fn trace_v2(
    State(p): State<Arc<Pipeline>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    trace_by_id(&p, &headers, &id, &params, 2).await
}

/// v1 answers a `Trace` (JSON: `batches`); v2 a `TraceByIDResponse` (JSON: `trace.resourceSpans`).
async fn trace_by_id(
    p: &Pipeline,
    headers: &HeaderMap,
    id: &str,
    params: &HashMap<String, String>,
    version: u8,
) -> Response {
    let t = match lookup(p, headers, id, params).await {
        Ok(t) => t,
        Err(e) => return text_error(e),
    };
    match (version, wants_protobuf(headers)) {
        (1, true) => ([(header::CONTENT_TYPE, "application/protobuf")], t.trace.encode_to_vec()).into_response(),
        (1, false) => axum::Json(json!({ "batches": trace_to_json(&t.trace, IdStyle::Base64) })).into_response(),
        (_, true) => {
            let resp = TraceByIdResponse {
                trace: Some(t.trace),
                metrics: Some(TraceByIdMetrics { inspected_bytes: t.inspected_bytes }),
                status: 0,
                message: String::new(),
            };
            ([(header::CONTENT_TYPE, "application/protobuf")], resp.encode_to_vec()).into_response()
        }
        (_, false) => axum::Json(json!({
            "trace": { "resourceSpans": trace_to_json(&t.trace, IdStyle::Base64) },
            "metrics": { "inspectedBytes": t.inspected_bytes.to_string() },
        }))
        .into_response(),
    }
}
