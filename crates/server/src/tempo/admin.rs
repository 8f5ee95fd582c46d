//! The process's own endpoints on the API port, as Tempo serves them: readiness, `/flush`,
//! `/metrics` (Spoor's own), the generated series, build info and echo.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::background::Compactor;
use crate::generated::{self, Generated};
use crate::http::Readiness;
use crate::ingest::flush::Flusher;
use crate::ingest::wal::WalSlot;
use crate::tempo::params::text_error;
use crate::tempo::reader::Reader;

/// The Tempo release whose API this server follows; Grafana gates features on it.
pub const TEMPO_API_VERSION: &str = "2.9.0";

/// What the process endpoints look at: every role the process runs.
pub struct Admin {
    pub reader: Arc<Reader>,
    pub ready: Arc<Readiness>,
    /// Absent in a query-only process.
    pub flusher: Option<Arc<Flusher>>,
    pub wal: Option<Arc<WalSlot>>,
    pub generated: Option<Arc<Generated>>,
    /// The DORA store, whose series the scrape endpoint shows too.
    pub dora: Option<Arc<crate::dora::store::Store>>,
    /// Runs a compaction cycle on demand, in any process (an operator's call).
    pub compactor: Arc<Compactor>,
}

pub async fn ready(State(a): State<Arc<Admin>>) -> Response {
    if a.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", a.ready.reason())).into_response()
    }
}

/// Like Tempo's ingester `/flush`: every tenant's live traces become blocks; answers 204 once
/// they are durable in the backend.
pub async fn flush(State(a): State<Arc<Admin>>) -> Response {
    let Some(flusher) = &a.flusher else { return StatusCode::NO_CONTENT.into_response() };
    match flusher.flush(None).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => text_error(e),
    }
}

/// `POST /api/admin/compact`: one compaction cycle (cleanup, tiered retention, merges) now;
/// answers 204 once it is done. For operators and tests; the loop runs the same cycle.
pub async fn compact(State(a): State<Arc<Admin>>) -> Response {
    match a.compactor.run_once().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => text_error(crate::error::Error::internal(format!("compaction failed: {e}")).with_source(e)),
    }
}

pub async fn metrics(State(a): State<Arc<Admin>>) -> Response {
    let m = a.reader.metrics();
    if let Some(g) = &a.generated {
        generated::publish(&g.generator, m);
    }
    let wal = a.wal.as_ref().and_then(|w| w.stats());
    let body = m.render(wal.as_deref(), &a.reader.head, &a.reader.blocks);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

pub async fn buildinfo() -> Response {
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
