//! Live traces across processes: an ingester serves what its head holds on two internal
//! routes, and a querier asks every ingester (concurrently, each bounded by
//! `querier.ingester_timeout_ms`) and reads the answers as if they were its own head. A trace is
//! thus searchable from any querier as soon as its ingester has read it from the log, with no
//! wait for a flush.
//!
//! The routes are served by `tempo/live.rs`. The body of both: per trace, its 16-byte ID, a u32
//! fragment count, and each fragment as a u32 length and its bytes (little-endian): the head's
//! own encoded fragments, unchanged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spoor_model::TraceId;
use spoor_query::search::RemoteLive;

use crate::cluster::config::QuerierConfig;
use crate::error::StartupError;
use crate::metrics::{Metrics, names};

/// The routes' body for `traces` (tempo/live.rs serves it).
pub fn frame(traces: &[(TraceId, Vec<Bytes>)]) -> Vec<u8> {
    let size: usize = traces.iter().map(|(_, f)| 20 + f.iter().map(|b| 4 + b.len()).sum::<usize>()).sum();
    let mut out = Vec::with_capacity(size);
    for (id, fragments) in traces {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&(fragments.len() as u32).to_le_bytes());
        for f in fragments {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
    }
    out
}

fn unframe(mut body: Bytes) -> Result<RemoteLive, String> {
    let mut out = Vec::new();
    while body.has_remaining() {
        if body.remaining() < 20 {
            return Err("truncated trace header".into());
        }
        let id = TraceId::from_slice(&body.split_to(16)).ok_or("bad trace ID")?;
        let n = body.get_u32_le() as usize;
        let mut fragments = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            if body.remaining() < 4 {
                return Err("truncated fragment length".into());
            }
            let len = body.get_u32_le() as usize;
            if body.remaining() < len {
                return Err("truncated fragment".into());
            }
            fragments.push(body.split_to(len));
        }
        out.push((id, fragments));
    }
    Ok(out)
}

/// The querier's side: the ingesters to ask.
pub struct Ingesters {
    urls: Vec<String>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// `Authorization` for the ingesters when their API port checks tokens.
    authorization: Option<HeaderValue>,
    metrics: Arc<Metrics>,
}

impl Ingesters {
    pub fn new(config: &QuerierConfig, metrics: Arc<Metrics>) -> Result<Option<Arc<Ingesters>>, StartupError> {
        if config.ingesters.is_empty() {
            return Ok(None);
        }
        let connector = crate::tls::client::connector(false, &config.tls)
            .map_err(|e| StartupError::new(format!("querier.tls: {e}")))?;
        let authorization = match config.token_file.as_os_str().is_empty() {
            true => None,
            false => {
                let token = std::fs::read_to_string(&config.token_file).map_err(|e| {
                    StartupError::new(format!("querier.token_file {}: {e}", config.token_file.display()))
                })?;
                Some(
                    HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                        .map_err(|_| StartupError::new("querier.token_file: not a valid header value"))?,
                )
            }
        };
        Ok(Some(Arc::new(Ingesters {
            urls: config.ingesters.iter().map(|u| u.trim_end_matches('/').to_owned()).collect(),
            timeout: Duration::from_millis(config.ingester_timeout_ms.max(1)),
            client: Client::builder(TokioExecutor::new()).build(connector),
            authorization,
            metrics,
        })))
    }

    /// The trace's live fragments, from every ingester that answers in time; `missed` gets the
    /// ones that did not (the answer may lack their part).
    pub async fn trace(&self, tenant: &str, id: &TraceId, missed: &mut Vec<String>) -> Vec<Bytes> {
        let path = format!("/internal/live/traces/{}", id.to_hex());
        self.ask(tenant, &path, missed).await.into_iter().flat_map(|(_, f)| f).collect()
    }

    /// The live traces matching a search (its raw query string), from every ingester.
    pub async fn search(&self, tenant: &str, raw_query: &str, missed: &mut Vec<String>) -> RemoteLive {
        self.ask(tenant, &format!("/internal/live/search?{raw_query}"), missed).await
    }

    async fn ask(&self, tenant: &str, path: &str, missed: &mut Vec<String>) -> RemoteLive {
        let asks = self.urls.iter().map(|base| async move {
            let got = tokio::time::timeout(self.timeout, self.get(base, tenant, path)).await;
            let why = match got {
                Ok(Ok(traces)) => return Ok(traces),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {:?}", self.timeout),
            };
            self.metrics.inc(names::QUERIER_INGESTER_ERRORS_TOTAL, &[("ingester", base)], 1.0);
            tracing::warn!(ingester = base, error = why, "ingester left out of a query: its live traces are missing");
            Err(format!("ingester {base}: {why}"))
        });
        let mut out = Vec::new();
        for r in futures_util::future::join_all(asks).await {
            match r {
                Ok(traces) => out.extend(traces),
                Err(e) => missed.push(e),
            }
        }
        out
    }

    async fn get(&self, base: &str, tenant: &str, path: &str) -> Result<RemoteLive, String> {
        let mut req = Request::get(format!("{base}{path}")).header("X-Scope-OrgID", tenant);
        if let Some(a) = &self.authorization {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        let req = req.body(Body::empty()).map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if status != StatusCode::OK {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
        }
        unframe(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_an_error() {
        let id = TraceId([7; 16]);
        let traces = vec![(id, vec![Bytes::from_static(b"ab"), Bytes::from_static(b"")]), (TraceId([1; 16]), vec![])];
        let body = Bytes::from(frame(&traces));
        assert_eq!(unframe(body.clone()).unwrap(), traces);
        assert!(unframe(body.slice(..body.len() - 21)).is_err());
        assert!(unframe(body.slice(..10)).is_err());
    }
}
