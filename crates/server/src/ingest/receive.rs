//! OTLP receivers: HTTP (`POST /v1/traces`, protobuf or JSON) and gRPC
//! (`TraceService/Export`), and Jaeger's gRPC `CollectorService/PostSpans` on the same gRPC
//! port (a unary method like Export; only the message and the reply differ).
//!
//! gRPC is served by axum over HTTP/2 (h2c) rather than a gRPC framework: Export is one unary
//! method, and handling the 5-byte message framing here gives full control over size limits,
//! streaming decompression and the exact status codes and retry hints OTLP asks for.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use spoor_model::jaeger;
use spoor_model::otlp::{ExportTraceServiceResponse, ProtoAny, ProtoDuration, RetryInfo, RpcStatus};

use crate::error::{Error, code};
use crate::ingest::body::{Compression, Format};
use crate::ingest::tenant;
use crate::metrics::{Metrics, names};

/// One export request as a receiver hands it over.
pub struct Export {
    pub tenant: String,
    pub transport: &'static str,
    pub body: Vec<u8>,
    pub compression: Compression,
    pub format: Format,
    /// Request headers (lowercase names) for processors that read them.
    pub metadata: Vec<(String, String)>,
}

pub const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the receivers hand requests to: the server's pipeline, or the agent.
pub trait Ingest: Send + Sync + 'static {
    fn multitenancy_enabled(&self) -> bool;
    fn max_request_bytes(&self) -> usize;
    /// Checked before the body is read: a refusal here costs no memory.
    fn admit_early(&self, _tenant: &str) -> Result<(), Error> {
        Ok(())
    }
    fn ingest(
        self: Arc<Self>,
        export: Export,
    ) -> impl std::future::Future<Output = Result<ExportTraceServiceResponse, Error>> + Send;
}

/// `spoor_requests_total` for one export request, by transport and outcome.
pub fn count_request<T>(m: &Metrics, transport: &str, result: &Result<T, Error>) {
    let code = match result {
        Ok(_) => "ok",
        Err(e) => e.kind().label(),
    };
    m.inc(names::REQUESTS_TOTAL, &[("transport", transport), ("code", code)], 1.0);
}

pub fn http_router<P: Ingest>(p: Arc<P>) -> axum::Router {
    axum::Router::new()
        .route("/v1/traces", post(http_export::<P>))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: OTLP/HTTP traces are accepted at POST /v1/traces\n") })
        .with_state(p)
}

pub fn grpc_router<P: Ingest>(p: Arc<P>) -> axum::Router {
    axum::Router::new()
        .route(GRPC_EXPORT_PATH, post(grpc_export::<P>))
        .route(jaeger::POST_SPANS_PATH, post(grpc_post_spans::<P>))
        .fallback(|req: Request| async move { grpc_error(&unimplemented(req.uri().path())) })
        .with_state(p)
}

fn unimplemented(path: &str) -> Error {
    Error::unsupported(format!(
        "unknown gRPC method {path}; this port serves {GRPC_EXPORT_PATH} and {}",
        jaeger::POST_SPANS_PATH
    ))
}

/// Reads a refused request's body without keeping it, so an HTTP/1 client hears the refusal
/// instead of a reset connection (it is still writing when the answer is ready).
pub async fn discard(mut body: Body, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > limit {
            break;
        }
    }
}

/// Reads a body, refusing it once it passes `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, Error> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::too_large(format!("request body is larger than the {limit} byte limit")))
        }
        Err(e) => Err(Error::bad_request(format!("cannot read request body: {e}"))),
    }
}

pub fn header_str(h: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Request headers the processors may read (`from_context: metadata.<name>`), lowercase.
pub fn metadata(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .filter(|(k, _)| !matches!(k.as_str(), "authorization" | "cookie" | "content-length" | "content-type"))
        .collect()
}

async fn http_export<P: Ingest>(State(p): State<Arc<P>>, req: Request) -> Response {
    let headers = req.headers().clone();
    let content_type = header_str(&headers, header::CONTENT_TYPE).unwrap_or("").to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_owned();
    let format = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type {mime:?}; use application/x-protobuf or application/json\n"),
            )
                .into_response();
        }
    };
    let result = async {
        let tenant = tenant::for_write(&headers, p.multitenancy_enabled())?;
        let compression = Compression::parse(header_str(&headers, header::CONTENT_ENCODING))?;
        let body = req.into_body();
        if let Err(e) = p.admit_early(&tenant) {
            discard(body, p.max_request_bytes()).await;
            return Err(e);
        }
        let body = read_body(body, p.max_request_bytes()).await?;
        let metadata = metadata(&headers);
        p.ingest(Export { tenant, transport: "http", body, compression, format, metadata }).await
    }
    .await;
    match result {
        Ok(resp) => http_reply(StatusCode::OK, format, encode_response(&resp, format), None),
        Err(e) => http_error(&e, format),
    }
}

/// An OTLP/HTTP refusal: the status, and a `google.rpc.Status` in the request's format.
pub fn http_error(e: &Error, format: Format) -> Response {
    let body = match format {
        Format::Json => {
            serde_json::to_vec(&spoor_model::json::rpc_status_json(e.grpc_code(), &e.to_string(), e.retry_after_secs()))
                .unwrap_or_default()
        }
        Format::Protobuf => rpc_status(e).encode_to_vec(),
        _ => return text_error(e),
    };
    http_reply(e.http_status(), format, body, e.retry_after_secs())
}

/// A refusal in plain text, for the HTTP receivers of protocols without an error body of
/// their own (Zipkin, Jaeger): the status, the reason, and `Retry-After` when retrying helps.
pub fn text_error(e: &Error) -> Response {
    let mut r =
        (e.http_status(), [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{e}\n")).into_response();
    if let Some(secs) = e.retry_after_secs() {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

fn encode_response(resp: &ExportTraceServiceResponse, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(&spoor_model::json::export_response_json(resp)).unwrap_or_default(),
        _ => resp.encode_to_vec(),
    }
}

fn http_reply(status: StatusCode, format: Format, body: Vec<u8>, retry_after: Option<u64>) -> Response {
    let ct = match format {
        Format::Json => "application/json",
        _ => "application/x-protobuf",
    };
    let mut r = (status, [(header::CONTENT_TYPE, ct)], body).into_response();
    if let Some(secs) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// `google.rpc.Status` for an error, with `RetryInfo` when the client should come back.
pub fn rpc_status(e: &Error) -> RpcStatus {
    let details = e
        .retry_after_secs()
        .map(|secs| ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: RetryInfo { retry_delay: Some(ProtoDuration { seconds: secs as i64, nanos: 0 }) }.encode_to_vec(),
        })
        .into_iter()
        .collect();
    RpcStatus { code: e.grpc_code(), message: e.to_string(), details }
}

async fn grpc_export<P: Ingest>(State(p): State<Arc<P>>, req: Request) -> Response {
    grpc_unary(p, req, Format::Protobuf, "grpc", |resp| resp.encode_to_vec()).await
}

/// Jaeger's PostSpans: its reply is empty, so spans refused one by one (partial success in
/// OTLP) are only counted in `spoor_spans_refused_total`.
async fn grpc_post_spans<P: Ingest>(State(p): State<Arc<P>>, req: Request) -> Response {
    grpc_unary(p, req, Format::JaegerProto, "jaeger_grpc", |_| jaeger::PostSpansResponse {}.encode_to_vec()).await
}

/// One unary call: the request message in `format`, the reply encoded by `reply`.
async fn grpc_unary<P: Ingest>(
    p: Arc<P>,
    req: Request,
    format: Format,
    transport: &'static str,
    reply: fn(&ExportTraceServiceResponse) -> Vec<u8>,
) -> Response {
    let headers = req.headers().clone();
    let result = async {
        let ct = header_str(&headers, header::CONTENT_TYPE).unwrap_or("");
        if !ct.starts_with("application/grpc") {
            return Err(Error::bad_request(format!("gRPC requires content-type application/grpc, got {ct:?}")));
        }
        let tenant = tenant::for_write(&headers, p.multitenancy_enabled())?;
        p.admit_early(&tenant)?;
        let limit = p.max_request_bytes();
        // One unary message: a 5-byte prefix (compressed flag, big-endian length) and the message.
        let frame = read_body(req.into_body(), limit.saturating_add(5)).await?;
        if frame.len() < 5 {
            return Err(Error::bad_request("truncated gRPC message frame"));
        }
        let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        if len > limit {
            return Err(Error::too_large(format!("gRPC message of {len} bytes is over the {limit} byte limit")));
        }
        if frame.len() != 5 + len {
            return Err(Error::bad_request(format!(
                "gRPC frame says {len} bytes but {} followed (a unary call takes exactly one message)",
                frame.len() - 5
            )));
        }
        let compression = match frame[0] {
            0 => Compression::None,
            1 => Compression::parse(Some(header_str(&headers, "grpc-encoding").unwrap_or("identity")))?,
            f => return Err(Error::bad_request(format!("invalid gRPC compressed flag {f}"))),
        };
        let mut body = frame;
        body.drain(..5);
        let metadata = metadata(&headers);
        p.ingest(Export { tenant, transport, body, compression, format, metadata }).await
    }
    .await;
    match result {
        Ok(resp) => {
            let msg = reply(&resp);
            let mut framed = Vec::with_capacity(5 + msg.len());
            framed.push(0);
            framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            framed.extend_from_slice(&msg);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(code::OK));
            let frames = futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(framed))),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-accept-encoding", "gzip,zstd,deflate,identity")
                .body(Body::new(http_body_util::StreamBody::new(frames)))
                .unwrap()
        }
        Err(e) => grpc_error(&e),
    }
}

/// A trailers-only gRPC response carrying the error.
pub fn grpc_error(e: &Error) -> Response {
    let status = rpc_status(e);
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", e.grpc_code())
        .header("grpc-message", crate::http::percent_encode(&e.to_string()));
    if !status.details.is_empty() {
        b = b.header(
            "grpc-status-details-bin",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec()),
        );
    }
    b.body(Body::empty()).unwrap()
}
