//! TLS as a client (the agent's exporters, remote_write, the OIDC key set's URL): a rustls
//! client configuration from the collector-shaped `tls` keys (CA file or the system's trust
//! store, client certificate, server name override, and the test-only skip of verification),
//! and the connector an HTTP client dials with.

use std::path::Path;
use std::sync::Arc;

use crate::tls::ClientTlsConfig;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls_platform_verifier::BuilderVerifierExt;

/// A connector for `http://` and `https://` URLs; `https://` uses `tls`. `http2`: gRPC, whose
/// servers insist on negotiating h2; otherwise HTTP/1.1, as OTLP/HTTP goes in plaintext.
pub fn connector(http2: bool, tls: &ClientTlsConfig) -> Result<HttpsConnector<HttpConnector>, String> {
    let config = client_config(tls)?;
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    // hyper-rustls refuses http:// URLs unless told otherwise.
    tcp.enforce_http(false);
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    if !tls.server_name_override.is_empty() {
        let name = ServerName::try_from(tls.server_name_override.clone())
            .map_err(|e| format!("tls.server_name_override {:?}: {e}", tls.server_name_override))?;
        builder = builder.with_server_name_resolver(FixedServerNameResolver::new(name));
    }
    // The builder sets ALPN to the protocols enabled here.
    Ok(if http2 { builder.enable_http2().wrap_connector(tcp) } else { builder.enable_http1().wrap_connector(tcp) })
}

pub(crate) fn client_config(tls: &ClientTlsConfig) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        tracing::warn!("tls.insecure_skip_verify is on: the server's certificate is not checked");
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else if !tls.ca_file.as_os_str().is_empty() {
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates(&tls.ca_file, "ca_file")? {
            roots.add(c).map_err(|e| format!("tls.ca_file {}: not a usable CA: {e}", tls.ca_file.display()))?;
        }
        builder.with_root_certificates(roots)
    } else {
        match builder.clone().with_platform_verifier() {
            Ok(b) => b,
            // No trust store on this machine: https:// fails at the handshake, saying so;
            // plaintext endpoints are unaffected.
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the system's trust store; set tls.ca_file for https:// endpoints");
                builder.with_root_certificates(rustls::RootCertStore::empty())
            }
        }
    };
    if tls.cert_file.as_os_str().is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs = certificates(&tls.cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| format!("tls.key_file {}: no usable PEM private key ({e})", tls.key_file.display()))?;
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("tls.cert_file {} and key_file {}: {e}", tls.cert_file.display(), tls.key_file.display()))
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read tls.{key} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.{key} {}: bad PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.{key} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake signatures are still
/// checked, so the session is at least with whoever holds that certificate's key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The object store's HTTP client when `storage.s3.tls` asks for what object_store's own
/// (reqwest) client cannot do: a client certificate (a bucket behind an mTLS gateway) or a
/// server name override. It is this module's rustls client, so every `tls` block in Spoor means
/// the same thing; object_store keeps its retries and signing around it.
#[derive(Debug, Clone)]
pub struct StoreHttp {
    client: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, object_store::client::HttpRequestBody>,
    /// Until the response's head arrives (object_store's own client counts the body too; a
    /// stalled body still ends at the connection's failure or the retry layer's deadline).
    timeout: std::time::Duration,
}

impl StoreHttp {
    pub fn new(tls: &ClientTlsConfig, timeout: std::time::Duration) -> Result<StoreHttp, String> {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector(false, tls)?);
        Ok(StoreHttp { client, timeout })
    }
}

impl object_store::client::HttpConnector for StoreHttp {
    fn connect(&self, _: &object_store::ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.clone()))
    }
}

#[async_trait::async_trait]
impl object_store::client::HttpService for StoreHttp {
    async fn call(
        &self,
        request: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        use http_body_util::BodyExt;
        use object_store::client::{HttpError, HttpErrorKind, HttpResponseBody};
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no response within storage.request_timeout_secs",
                );
                return Err(HttpError::new(HttpErrorKind::Timeout, e));
            }
            // Connect errors (refused, TLS handshake) are retried by object_store as such. The
            // client error's own text is only "client error (Connect)": the causes say what failed.
            Ok(Err(e)) => {
                let kind = if e.is_connect() { HttpErrorKind::Connect } else { HttpErrorKind::Request };
                return Err(HttpError::new(kind, std::io::Error::other(with_causes(&e))));
            }
            Ok(Ok(r)) => r,
        };
        let (parts, body) = response.into_parts();
        let body = HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)));
        Ok(object_store::client::HttpResponse::from_parts(parts, body))
    }
}

/// An error and its causes, `a: b: c` (hyper's own text is only "client error (Connect)").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
