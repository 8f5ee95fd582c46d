//! A small OTLP trace exporter (gRPC or HTTP/protobuf) used by `spoor loadgen` and the tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use spoor_model::otlp::{ExportTraceServiceResponse, RetryInfo, RpcStatus};

use spoor_server::error::Error;
pub use spoor_server::ingest::body::Compression;
use spoor_server::ingest::receive::GRPC_EXPORT_PATH;
use spoor_server::tls::ClientTlsConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// What the server said about one export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// OK / 200. `rejected` spans were refused individually (partial success).
    Accepted { rejected: i64, message: String },
    /// The request was refused as a whole. `code` is the gRPC code or the HTTP status.
    Refused { code: i32, message: String, retry_after_secs: Option<u64> },
}

#[derive(Clone)]
pub struct OtlpClient {
    transport: Transport,
    url: String,
    tenant: Option<String>,
    /// Sent with every request (before the tenant header, which wins).
    headers: hyper::HeaderMap,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl OtlpClient {
    /// `endpoint` is `http://host:port` (or `https://host:port`, trusting the system's CAs); the
    /// path is added per transport.
    pub fn new(transport: Transport, endpoint: &str, tenant: Option<String>) -> OtlpClient {
        // The default settings read no file and name no server, so nothing can fail.
        Self::with_tls(transport, endpoint, tenant, &ClientTlsConfig::default())
            .expect("default TLS settings build a client")
    }

    /// A client whose `https://` connections use `tls`; errors name the file at fault.
    pub fn with_tls(
        transport: Transport,
        endpoint: &str,
        tenant: Option<String>,
        tls: &ClientTlsConfig,
    ) -> Result<OtlpClient, String> {
        let connector = spoor_server::tls::client::connector(transport == Transport::Grpc, tls)?;
        Ok(Self::build(transport, endpoint, tenant, connector))
    }

    fn build(
        transport: Transport,
        endpoint: &str,
        tenant: Option<String>,
        connector: HttpsConnector<HttpConnector>,
    ) -> OtlpClient {
        let mut builder = Client::builder(TokioExecutor::new());
        if transport == Transport::Grpc {
            builder.http2_only(true);
        }
        let path = match transport {
            Transport::Grpc => GRPC_EXPORT_PATH,
            Transport::Http => "/v1/traces",
        };
        OtlpClient {
            transport,
            url: format!("{}{path}", endpoint.trim_end_matches('/')),
            tenant,
            headers: hyper::HeaderMap::new(),
            client: builder.build(connector),
        }
    }

    /// Extra headers sent with every request (an `X-Scope-OrgID` here is overridden by the
    /// tenant when there is one).
    pub fn with_headers(mut self, headers: hyper::HeaderMap) -> OtlpClient {
        self.headers = headers;
        self
    }

    /// Sends one encoded `ExportTraceServiceRequest`.
    pub async fn export(&self, request: Bytes) -> Result<Outcome, Error> {
        self.export_with(request, Compression::None).await
    }

    /// Sends one encoded `ExportTraceServiceRequest`, compressed as asked (gRPC: the message
    /// with `grpc-encoding`; HTTP: the body with `Content-Encoding`).
    pub async fn export_with(&self, request: Bytes, compression: Compression) -> Result<Outcome, Error> {
        self.export_as(request, compression, self.tenant.as_deref()).await
    }

    /// [`export_with`](Self::export_with) for the given tenant instead of the client's.
    pub async fn export_as(
        &self,
        request: Bytes,
        compression: Compression,
        tenant: Option<&str>,
    ) -> Result<Outcome, Error> {
        let (request, encoding) = compress(request, compression)?;
        let t = |e: &dyn std::fmt::Display| Error::transport(format!("{}: {e}", self.url));
        let mut req = hyper::Request::post(&self.url);
        if let Some(headers) = req.headers_mut() {
            headers.extend(self.headers.clone());
            if let Some(tenant) = tenant {
                let value = hyper::header::HeaderValue::from_str(tenant)
                    .map_err(|_| Error::bad_request(format!("tenant {tenant:?} is not a valid header value")))?;
                headers.insert("x-scope-orgid", value);
            }
        }
        let body = match self.transport {
            Transport::Grpc => {
                req = req.header("content-type", "application/grpc").header("te", "trailers");
                if let Some(enc) = encoding {
                    req = req.header("grpc-encoding", enc);
                }
                let mut framed = Vec::with_capacity(request.len() + 5);
                framed.push(encoding.is_some() as u8);
                framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
                framed.extend_from_slice(&request);
                Bytes::from(framed)
            }
            Transport::Http => {
                req = req.header("content-type", "application/x-protobuf");
                if let Some(enc) = encoding {
                    req = req.header("content-encoding", enc);
                }
                request
            }
        };
        let resp = self.client.request(req.body(Full::new(body)).map_err(|e| t(&e))?).await.map_err(|e| t(&e))?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(|e| t(&e))?;
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        match self.transport {
            Transport::Http => {
                let retry_after_secs = parts
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| spoor_server::retry::parse_retry_after(v, std::time::SystemTime::now()));
                if parts.status.is_success() {
                    accepted(&bytes)
                } else {
                    let message = RpcStatus::decode(&bytes[..])
                        .map(|s| s.message)
                        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
                    Ok(Outcome::Refused { code: parts.status.as_u16() as i32, message, retry_after_secs })
                }
            }
            Transport::Grpc => {
                // Trailers-only responses carry the status in the headers.
                let meta = trailers.unwrap_or_default();
                let get = |name: &str| meta.get(name).or_else(|| parts.headers.get(name)).and_then(|v| v.to_str().ok());
                let code: i32 = get("grpc-status").and_then(|v| v.parse().ok()).ok_or_else(|| {
                    Error::transport(format!("{}: response without grpc-status (HTTP {})", self.url, parts.status))
                })?;
                if code == 0 {
                    if bytes.len() < 5 {
                        return Err(Error::transport(format!("{}: OK without a response message", self.url)));
                    }
                    return accepted(&bytes[5..]);
                }
                let retry_after_secs = get("grpc-status-details-bin").and_then(decode_retry_info);
                let message =
                    get("grpc-message").map(|m| spoor_server::http::percent_decode(m, false)).unwrap_or_default();
                Ok(Outcome::Refused { code, message, retry_after_secs })
            }
        }
    }
}

fn compress(request: Bytes, compression: Compression) -> Result<(Bytes, Option<&'static str>), Error> {
    use std::io::Write;
    let fail = |e: std::io::Error| Error::internal(format!("compression failed: {e}"));
    Ok(match compression {
        Compression::None => (request, None),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&request).map_err(fail)?;
            (Bytes::from(enc.finish().map_err(fail)?), Some("gzip"))
        }
        Compression::Zstd => (Bytes::from(zstd::encode_all(&request[..], 1).map_err(fail)?), Some("zstd")),
        Compression::Deflate => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&request).map_err(fail)?;
            (Bytes::from(enc.finish().map_err(fail)?), Some("deflate"))
        }
    })
}

fn accepted(bytes: &[u8]) -> Result<Outcome, Error> {
    let resp = ExportTraceServiceResponse::decode(bytes)
        .map_err(|e| Error::transport(format!("undecodable ExportTraceServiceResponse: {e}")))?;
    let p = resp.partial_success.unwrap_or_default();
    Ok(Outcome::Accepted { rejected: p.rejected_spans, message: p.error_message })
}

fn decode_retry_info(b64: &str) -> Option<u64> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.trim_end_matches('=')).ok()?;
    let status = RpcStatus::decode(&raw[..]).ok()?;
    status.details.iter().find(|d| d.type_url.ends_with("google.rpc.RetryInfo")).and_then(|d| {
        // Whole seconds, rounded up: retrying early would be refused again.
        let delay = RetryInfo::decode(&d.value[..]).ok()?.retry_delay?;
        Some(delay.seconds.max(0) as u64 + (delay.nanos > 0) as u64)
    })
}
