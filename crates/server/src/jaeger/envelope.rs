//! Jaeger's envelopes: every answer is `{data, total, limit, offset, errors}`, a refusal too.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use crate::error::Error;

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
