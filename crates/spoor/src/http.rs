//! The CLI's one HTTP client for Spoor's API: a GET with the tenant header when one is given,
//! answering the status and the whole body (`spoor query --server`, `spoor loadgen`'s trace and
//! search modes).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Empty<Bytes>>,
    tenant: Option<String>,
}

impl Api {
    /// `tenant`: sent as `X-Scope-OrgID` (`a|b` federates reads).
    pub fn new(tenant: Option<&str>) -> Api {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Api { client, tenant: tenant.map(str::to_owned) }
    }

    /// GETs `url`, asking for `accept` when given.
    pub async fn get(&self, url: &str, accept: Option<&str>) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let mut req = hyper::Request::get(url);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some(t) = &self.tenant {
            req = req.header("x-scope-orgid", t);
        }
        let resp = self.client.request(req.body(Empty::new())?).await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
