//! Jaeger's query API (the HTTP JSON API Jaeger UI calls) over the same reader as the Tempo
//! routes: `services`, operations, trace search, trace by ID, `dependencies`, and the
//! Monitor tab's `metrics/*`. Everything lives under `/jaeger/api/`; the routes whose paths
//! Tempo does not use are also under `/api/` (the trace routes are not: `/api/traces/{id}` is
//! Tempo's). Searches are TraceQL queries built from Jaeger's parameters and run by the one
//! engine; RED metrics and dependencies are TraceQL metrics and a scan over stored spans for
//! the window asked. docs/jaeger.md has the mapping and what differs.
//!
//! - `convert`: OTLP traces as Jaeger's JSON model.
//! - `envelope`: Jaeger's answer and error envelopes.
//! - `query`: services, operations, search, trace by ID, dependencies.
//! - `monitor`: `metrics/{latencies,calls,errors,minstep}`.

pub mod convert;
pub mod envelope;
pub mod monitor;
pub mod query;

use std::sync::Arc;

use axum::routing::get;

use crate::error::Error;
use crate::tempo::reader::Reader;
use envelope::failure;

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
