//! Receivers for the other tracing protocols' HTTP endpoints, each on its own port as their
//! clients expect: Zipkin v2 (`POST /api/v2/spans`, JSON or proto3) and Jaeger's Thrift over
//! HTTP (`POST /api/traces`). Jaeger's gRPC `PostSpans` is served on the OTLP gRPC port
//! (`receive.rs`).
//!
//! A body is converted to an OTLP request at decode time, inside the front door, so these
//! requests take the same path as OTLP's: tenant, memory limiter and pacing before the body is
//! read, size limits while inflating, rate limits, scrubbing, head limits, the WAL. Only the
//! replies differ: 202 Accepted with no body, as Zipkin and Jaeger collectors answer, and
//! refusals in plain text.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use spoor_model::zipkin;

use crate::error::Error;
use crate::ingest::body::{Compression, Format};
use crate::ingest::receive::{self, Export, Ingest};
use crate::ingest::tenant;

/// `zipkin:` in the configuration: the Zipkin receiver, off unless the section is present.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ZipkinConfig {
    /// Where `POST /api/v2/spans` listens (Zipkin's port).
    pub listen: String,
    /// Tags that read as an integer, a float or a boolean are stored as that type (the
    /// collector's option of the same name); off: every tag stays a string, as Zipkin sends it.
    pub parse_string_tags: bool,
}

impl Default for ZipkinConfig {
    fn default() -> Self {
        ZipkinConfig { listen: "127.0.0.1:9411".into(), parse_string_tags: false }
    }
}

/// `jaeger:` in the configuration: the Thrift-over-HTTP receiver, off unless the section is
/// present. gRPC `PostSpans` is always served on the OTLP gRPC port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JaegerConfig {
    /// Where `POST /api/traces` (Thrift binary `Batch`) listens (the Jaeger collector's port).
    pub thrift_http_listen: String,
    /// A second gRPC listener for clients that dial the Jaeger collector's port (14250); it
    /// serves what the OTLP gRPC port does. Empty: none.
    pub grpc_listen: String,
}

impl Default for JaegerConfig {
    fn default() -> Self {
        JaegerConfig { thrift_http_listen: "127.0.0.1:14268".into(), grpc_listen: String::new() }
    }
}

pub fn zipkin_router<P: Ingest>(p: Arc<P>, config: &ZipkinConfig) -> axum::Router {
    let options = zipkin::Options { parse_string_tags: config.parse_string_tags };
    let handler = move |State(p): State<Arc<P>>, req: Request| async move {
        let format = match mime(&req).as_str() {
            // Zipkin's own server reads a body without a content type as JSON.
            "" | "application/json" => Format::ZipkinJson(options),
            "application/x-protobuf" | "application/protobuf" => Format::ZipkinProto(options),
            other => return unsupported(other, "application/json or application/x-protobuf"),
        };
        receive_http(p, req, format, "zipkin").await
    };
    axum::Router::new()
        .route("/api/v2/spans", post(handler))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: Zipkin v2 spans are accepted at POST /api/v2/spans\n")
        })
        .with_state(p)
}

pub fn jaeger_thrift_router<P: Ingest>(p: Arc<P>) -> axum::Router {
    let handler = |State(p): State<Arc<P>>, req: Request| async move {
        match mime(&req).as_str() {
            "application/x-thrift" | "application/vnd.apache.thrift.binary" => {
                receive_http(p, req, Format::JaegerThrift, "jaeger_thrift").await
            }
            other => unsupported(other, "application/x-thrift (a Thrift binary Batch)"),
        }
    };
    axum::Router::new()
        .route("/api/traces", post(handler))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: Jaeger Thrift batches are accepted at POST /api/traces\n")
        })
        .with_state(p)
}

/// The request's media type, lowercase, without parameters.
fn mime(req: &Request) -> String {
    let ct = receive::header_str(req.headers(), header::CONTENT_TYPE).unwrap_or("");
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn unsupported(mime: &str, want: &str) -> Response {
    receive::text_error(&Error::new(
        crate::error::Kind::UnsupportedMediaType,
        format!("unsupported content type {mime:?}; use {want}"),
    ))
}

async fn receive_http<P: Ingest>(p: Arc<P>, req: Request, format: Format, transport: &'static str) -> Response {
    let headers = req.headers().clone();
    let result = async {
        let tenant = tenant::for_write(&headers, p.multitenancy_enabled())?;
        let compression = Compression::parse(receive::header_str(&headers, header::CONTENT_ENCODING))?;
        let body = req.into_body();
        if let Err(e) = p.admit_early(&tenant) {
            receive::discard(body, p.max_request_bytes()).await;
            return Err(e);
        }
        let body = receive::read_body(body, p.max_request_bytes()).await?;
        let metadata = receive::metadata(&headers);
        p.ingest(Export { tenant, transport, body, compression, format, metadata }).await
    }
    .await;
    match result {
        // Spans refused one by one (OTLP's partial success) are named in the body; Zipkin and
        // Jaeger clients read only the status, so they are also counted in
        // `spoor_spans_refused_total`.
        Ok(resp) => match resp.partial_success.filter(|p| p.rejected_spans > 0) {
            Some(p) => (StatusCode::ACCEPTED, format!("{} spans rejected: {}\n", p.rejected_spans, p.error_message))
                .into_response(),
            None => StatusCode::ACCEPTED.into_response(),
        },
        Err(e) => receive::text_error(&e),
    }
}
