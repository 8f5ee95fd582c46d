//! A small OTLP trace exporter (gRPC or HTTP/protobuf) used by `spoor loadgen` and the tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use spoor_model::otlp::{ExportTraceServiceResponse, RetryInfo, RpcStatus};

pub use crate::body::Compression;
use crate::error::Error;
use crate::receive::GRPC_EXPORT_PATH;

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
    client: Client<HttpConnector, Full<Bytes>>,
}

impl OtlpClient {
    /// `endpoint` is `http://host:port`; the path is added per transport.
    pub fn new(transport: Transport, endpoint: &str, tenant: Option<String>) -> OtlpClient {
        let mut builder = Client::builder(TokioExecutor::new());
        if transport == Transport::Grpc {
            builder.http2_only(true);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
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
        let t = |e: &dyn std::fmt::Display| Error::Transport(format!("{}: {e}", self.url));
        let mut req = hyper::Request::post(&self.url);
        if let Some(headers) = req.headers_mut() {
            headers.extend(self.headers.clone());
            if let Some(tenant) = tenant {
                let value = hyper::header::HeaderValue::from_str(tenant)
                    .map_err(|_| Error::BadRequest(format!("tenant {tenant:?} is not a valid header value")))?;
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
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
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
                    Error::Transport(format!("{}: response without grpc-status (HTTP {})", self.url, parts.status))
                })?;
                if code == 0 {
                    if bytes.len() < 5 {
                        return Err(Error::Transport(format!("{}: OK without a response message", self.url)));
                    }
                    return accepted(&bytes[5..]);
                }
                let retry_after_secs = get("grpc-status-details-bin").and_then(decode_retry_info);
                let message = get("grpc-message").map(percent_decode).unwrap_or_default();
                Ok(Outcome::Refused { code, message, retry_after_secs })
            }
        }
    }
}

fn compress(request: Bytes, compression: Compression) -> Result<(Bytes, Option<&'static str>), Error> {
    use std::io::Write;
    let fail = |e: std::io::Error| Error::Internal(format!("compression failed: {e}"));
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
        .map_err(|e| Error::Transport(format!("undecodable ExportTraceServiceResponse: {e}")))?;
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

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date turned into the whole
/// seconds (rounded up) from `now` until then; a date in the past means 0.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?;
    let wait = std::time::Duration::from_secs(at).saturating_sub(now);
    Some(wait.as_secs() + (wait.subsec_nanos() > 0) as u64)
}

/// Seconds since the epoch of an HTTP-date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms recipients must accept.
pub fn parse_http_date(value: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = |m: &str| MONTHS.iter().position(|&n| n == m).map(|i| i as u32 + 1);
    let words: Vec<&str> = value.split_whitespace().collect();
    let (day, mon, year, time) = match words.as_slice() {
        [_, d, m, y, t, "GMT"] => (d.parse().ok()?, month(m)?, y.parse::<i64>().ok()?, *t),
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            let y: i64 = y.parse().ok()?;
            // Two-digit years: RFC 9110 says to take the one that is not more than 50 years ahead.
            (
                d.parse().ok()?,
                month(m)?,
                if y < 70 {
                    2000 + y
                } else if y < 100 {
                    1900 + y
                } else {
                    y
                },
                *t,
            )
        }
        [_, m, d, t, y] => (d.parse().ok()?, month(m)?, y.parse().ok()?, *t),
        _ => return None,
    };
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, mon, day);
    Some(days as u64 * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784111777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"), Some(1835481599));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49 GMT"), None);
        assert_eq!(parse_http_date("tomorrow"), None);
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = UNIX_EPOCH + Duration::from_millis(784_111_777_000 - 2_500);
        assert_eq!(parse_retry_after("3", now), Some(3));
        assert_eq!(parse_retry_after(" 120 ", now), Some(120));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(3));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now), Some(0));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
