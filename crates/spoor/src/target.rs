//! Where OTLP goes: the `--endpoint` and `--transport` flags that `spoor loadgen` and
//! `spoor demo` share, and the exporter they make from them.

use spoor_agent::client::{OtlpClient, Transport};

#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Server endpoint, e.g. http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// grpc or http (protobuf).
    #[arg(long, default_value = "grpc")]
    pub transport: String,
}

impl Target {
    pub fn transport(&self) -> anyhow::Result<Transport> {
        match self.transport.as_str() {
            "grpc" => Ok(Transport::Grpc),
            "http" => Ok(Transport::Http),
            other => anyhow::bail!("--transport must be grpc or http, not {other:?}"),
        }
    }

    /// An exporter to `--endpoint` for `tenant` (X-Scope-OrgID), with the token and CA of `access`.
    pub fn client(&self, tenant: Option<String>, access: &crate::http::Access) -> anyhow::Result<OtlpClient> {
        let mut headers = hyper::HeaderMap::new();
        if let Some(a) = access.authorization()? {
            headers.insert(hyper::header::AUTHORIZATION, a);
        }
        Ok(OtlpClient::with_tls(self.transport()?, &self.endpoint, tenant, &access.tls())
            .map_err(anyhow::Error::msg)?
            .with_headers(headers))
    }
}
