//! The ingester's side of the scale-out's live reads (the querier's is `cluster/live.rs`): what
//! this process's head holds, by trace ID and by TraceQL, for queriers to search with the blocks.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use spoor_model::TraceId;

use crate::cluster::live::frame;
use crate::error::Error;
use crate::tempo::params::{query_error, text_error};
use crate::tempo::reader::Reader;

pub const TRACE_ROUTE: &str = "/internal/live/traces/{id}";
pub const SEARCH_ROUTE: &str = "/internal/live/search";

/// The ingester's side: its head, by trace ID and by TraceQL.
pub fn router(reader: Arc<Reader>) -> Router {
    Router::new().route(TRACE_ROUTE, get(trace)).route(SEARCH_ROUTE, get(search)).with_state(reader)
}

async fn trace(State(r): State<Arc<Reader>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let result = (|| {
        let tenants = r.tenants(&headers)?;
        let id = TraceId::parse_api(&id).map_err(|e| Error::bad_request(e.to_string()))?;
        let mut out = Vec::new();
        for t in &tenants {
            if let Some(f) = r.head.get(t, &id) {
                out.push((id, f));
            }
        }
        Ok::<_, Error>(out)
    })();
    match result {
        Ok(traces) => framed(&traces),
        Err(e) => text_error(e),
    }
}

async fn search(State(r): State<Arc<Reader>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let result = async {
        let tenants = r.tenants(&headers)?;
        let req = crate::tempo::search::request_from(&r, raw.as_deref().unwrap_or(""))?;
        let mut out = Vec::new();
        for t in &tenants {
            out.extend(spoor_query::search::live_matches(&r.head, t, &req).await.map_err(query_error)?);
        }
        Ok::<_, Error>(out)
    }
    .await;
    match result {
        Ok(traces) => framed(&traces),
        Err(e) => text_error(e),
    }
}

fn framed(traces: &[(TraceId, Vec<Bytes>)]) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], frame(traces)).into_response()
}
