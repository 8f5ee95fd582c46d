//! Trace by ID, v1 (`/api/traces/{id}`, a `Trace`) and v2 (`/api/v2/traces/{id}`, a
//! `TraceByIDResponse`), in JSON or protobuf: live traces and every block that may hold it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::json;
use spoor_model::TraceId;
use spoor_model::json::{IdStyle, trace_to_json};
use spoor_model::otlp::{TraceByIdMetrics, TraceByIdResponse};

use crate::auth::mask::Masking;
use crate::auth::spans::{SpanFilter, SpanFiltering};
use crate::error::Error;
use crate::tempo::params::{SECOND, text_error};
use crate::tempo::reader::Reader;

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/protobuf"))
}

/// Parses and checks the shared parameters; returns the assembled trace or `NotFound`.
async fn lookup(
    p: &Reader,
    headers: &HeaderMap,
    id: &str,
    params: &HashMap<String, String>,
    spans: Option<&SpanFilter>,
    missed: &mut Vec<String>,
) -> Result<spoor_model::trace::Assembled, Error> {
    let tenants = p.tenants(headers)?;
    let id = TraceId::parse_api(id).map_err(|e| Error::bad_request(e.to_string()))?;
    let secs = |name: &str| -> Result<u32, Error> {
        match params.get(name).map(String::as_str) {
            None | Some("") => Ok(0),
            Some(v) => v.parse().map_err(|_| Error::bad_request(format!("invalid {name}: {v:?} is not unix seconds"))),
        }
    };
    let (start, end) = (secs("start")?, secs("end")?);
    if (start != 0 || end != 0) && end <= start {
        return Err(Error::bad_request(format!("http parameter start must be before end: {start} >= {end}")));
    }
    // Live traces are always searched: a time range only narrows which blocks are read.
    let range = (start != 0 || end != 0).then(|| (start as u64 * SECOND, end as u64 * SECOND + SECOND - 1));
    let mut fragments: Vec<bytes::Bytes> = Vec::new();
    for t in &tenants {
        fragments.extend(p.find_trace_reporting(t, &id, range, missed).await?);
    }
    if fragments.is_empty() {
        return Err(Error::not_found());
    }
    let mut assembled = spoor_model::trace::assemble(fragments.iter().map(|b| &b[..]))
        .map_err(|e| Error::internal(format!("stored trace {id} does not decode: {e}")))?;
    if let Some(filter) = spans {
        // Decided on the stored spans, before anything is rendered or masked.
        let visible = filter.visible(id, &fragments).map_err(|e| Error::internal(format!("trace {id}: {e}")))?;
        SpanFilter::apply(&visible, &mut assembled.trace);
    }
    Ok(assembled)
}

pub async fn v1(
    State(p): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    mask: Option<Extension<Masking>>,
    spans: Option<Extension<SpanFiltering>>,
) -> Response {
    trace_by_id(&p, &headers, &id, &params, 1, mask, spans).await
}

pub async fn v2(
    State(p): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    mask: Option<Extension<Masking>>,
    spans: Option<Extension<SpanFiltering>>,
) -> Response {
    trace_by_id(&p, &headers, &id, &params, 2, mask, spans).await
}

/// v1 answers a `Trace` (JSON: `batches`); v2 a `TraceByIDResponse` (JSON: `trace.resourceSpans`).
async fn trace_by_id(
    p: &Reader,
    headers: &HeaderMap,
    id: &str,
    params: &HashMap<String, String>,
    version: u8,
    mask: Option<Extension<Masking>>,
    spans: Option<Extension<SpanFiltering>>,
) -> Response {
    let filter = spans.as_ref().map(|Extension(SpanFiltering(f))| f.as_ref());
    let mut missed = Vec::new();
    let mut t = match lookup(p, headers, id, params, filter, &mut missed).await {
        Ok(t) => t,
        Err(e) => {
            // A 404 may only mean that the ingester holding the trace did not answer.
            let mut resp = text_error(e);
            crate::tempo::search::partial_header(&mut resp, &missed);
            return resp;
        }
    };
    // Before any rendering, so no output format can carry a masked value.
    if let Some(Extension(Masking(m))) = &mask {
        m.apply(&mut t.trace);
    }
    // Tempo's PARTIAL: an ingester holding live spans of it may not have answered.
    let (status, message) = match missed.is_empty() {
        true => (0, String::new()),
        false => (1, missed.join("; ")),
    };
    let mut resp = match (version, wants_protobuf(headers)) {
        (1, true) => ([(header::CONTENT_TYPE, "application/protobuf")], t.trace.encode_to_vec()).into_response(),
        (1, false) => axum::Json(json!({ "batches": trace_to_json(&t.trace, IdStyle::Base64) })).into_response(),
        (_, true) => {
            let resp = TraceByIdResponse {
                trace: Some(t.trace),
                metrics: Some(TraceByIdMetrics { inspected_bytes: t.inspected_bytes }),
                status,
                message: message.clone(),
            };
            ([(header::CONTENT_TYPE, "application/protobuf")], resp.encode_to_vec()).into_response()
        }
        (_, false) => {
            let mut body = json!({
                "trace": { "resourceSpans": trace_to_json(&t.trace, IdStyle::Base64) },
                "metrics": { "inspectedBytes": t.inspected_bytes.to_string() },
            });
            if status != 0 {
                body["status"] = json!("PARTIAL");
                body["message"] = json!(message);
            }
            axum::Json(body).into_response()
        }
    };
    crate::tempo::search::partial_header(&mut resp, &missed);
    resp
}
