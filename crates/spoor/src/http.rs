//! The CLI's one HTTP client for Spoor's API: a GET with the tenant header when one is given,
//! answering the status and the whole body (`spoor query --server`, `spoor trace --server`,
//! `spoor loadgen`'s trace and search modes). A server with auth or TLS on is reached with
//! [`Access`]: a bearer token, and a CA for `https://` servers the system does not trust.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use spoor_server::tls::ClientTlsConfig;

/// How the CLI reaches a server with auth or TLS on.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Access {
    /// Bearer token for a server with `auth.enabled` (better from the environment: a flag shows in `ps`).
    #[arg(long, env = "SPOOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA that an `https://` server's certificate chains to, when the system's trust store does not hold it.
    #[arg(long, env = "SPOOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl Access {
    /// The client TLS settings for `https://` endpoints.
    pub fn tls(&self) -> ClientTlsConfig {
        ClientTlsConfig { ca_file: self.ca_file.clone().unwrap_or_default(), ..Default::default() }
    }

    /// `Authorization: Bearer …`, when there is a token.
    pub fn authorization(&self) -> anyhow::Result<Option<hyper::header::HeaderValue>> {
        let Some(token) = &self.token else { return Ok(None) };
        let mut value = hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("--token holds a character that cannot go in an HTTP header"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

#[derive(Clone)]
pub struct Api {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    tenant: Option<String>,
    authorization: Option<hyper::header::HeaderValue>,
}

impl Api {
    /// `tenant`: sent as `X-Scope-OrgID` (`a|b` federates reads). `access`: the token to send
    /// and the CA to trust; errors name the file at fault.
    pub fn with_access(tenant: Option<&str>, access: &Access) -> anyhow::Result<Api> {
        let connector = spoor_server::tls::client::connector(false, &access.tls()).map_err(anyhow::Error::msg)?;
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Api { client, tenant: tenant.map(str::to_owned), authorization: access.authorization()? })
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
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a.clone());
        }
        let resp = self.client.request(req.body(Empty::new())?).await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
