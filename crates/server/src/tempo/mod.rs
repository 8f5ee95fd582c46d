//! The Tempo-compatible HTTP API (tempo-compat §1): trace by ID, search, tags and tag values,
//! TraceQL metrics (also as Tempo's streaming gRPC service, [`stream`]), and the process endpoints. Query handlers take only the [`reader::Reader`]; the
//! process endpoints see every role through [`admin::Admin`]. Errors are plain text, as Tempo's are.

pub mod admin;
pub mod json;
pub mod live;
pub mod metrics_query;
pub mod params;
pub mod reader;
pub mod search;
pub mod stream;
pub mod tags;
pub mod traces;

use std::sync::Arc;

use axum::routing::{get, post};

use admin::Admin;

pub fn router(admin: Admin) -> axum::Router {
    let queries = axum::Router::new()
        .route("/api/traces/{id}", get(traces::v1))
        .route("/api/v2/traces/{id}", get(traces::v2))
        .route("/api/search", get(search::handler))
        .route("/api/metrics/query_range", get(metrics_query::range))
        .route("/api/metrics/query", get(metrics_query::instant))
        .route("/api/search/tags", get(tags::names_v1))
        .route("/api/v2/search/tags", get(tags::names_v2))
        .route("/api/search/tag/{*tag}", get(tags::values_v1))
        .route("/api/v2/search/tag/{*tag}", get(tags::values_v2))
        // Grafana's streaming search: gRPC over the same port (HTTP/2).
        .route("/tempopb.StreamingQuerier/{method}", post(stream::handler))
        .with_state(admin.reader.clone());
    let generated = axum::Router::new().route("/metrics/generated", get(crate::generated::scrape)).with_state(
        crate::generated::Scraped {
            generated: admin.generated.clone(),
            dora: admin.dora.clone(),
            multitenancy: admin.reader.multitenancy(),
        },
    );
    let process = axum::Router::new()
        .route("/api/echo", get(|| async { "echo\n" }))
        .route("/ready", get(admin::ready))
        .route("/metrics", get(admin::metrics))
        .route("/api/status/buildinfo", get(admin::buildinfo))
        .route("/flush", post(admin::flush).get(admin::flush))
        .route("/api/admin/compact", post(admin::compact))
        .with_state(Arc::new(admin));
    queries.merge(generated).merge(process)
}
