//! TLS for the listeners (rustls, with the aws-lc-rs provider object_store already links): the
//! collector-shaped settings, building a rustls server configuration from PEM files, and
//! reloading it while serving. A listener holds a [`Reloading`] acceptor; each new connection
//! takes the configuration current at that moment, so a renewed certificate is served without a
//! restart and open connections keep the one they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::StartupError;

pub mod client;
pub mod peer;

/// `server.tls` and its per-listener overrides (`server.http_tls`, `server.otlp_grpc_tls`,
/// `server.otlp_http_tls`), the collector's `tls` shape. TLS is on when `cert_file` is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: the private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: CAs a client certificate must chain to. Set: every client must present one (mTLS).
    pub client_ca_file: PathBuf,
    /// Oldest protocol accepted: `1.2` or `1.3` (rustls speaks nothing older).
    pub min_version: String,
    /// How often the files are read again; changed files replace the served certificates.
    /// `0s`: never.
    #[serde(with = "spoor_process::duration")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            min_version: "1.2".into(),
            reload_interval: Duration::from_secs(60),
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Checks the settings that need no file. `key` names the block in messages.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if !self.enabled() {
            if !self.key_file.as_os_str().is_empty() || !self.client_ca_file.as_os_str().is_empty() {
                return Err(format!("{key}: key_file and client_ca_file need cert_file (TLS is off without it)"));
            }
            return Ok(());
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(format!("{key}: cert_file is set but key_file is not"));
        }
        self.versions().map(|_| ()).map_err(|e| format!("{key}.min_version: {e}"))
    }

    fn versions(&self) -> Result<&'static [&'static rustls::SupportedProtocolVersion], String> {
        match self.min_version.trim().trim_start_matches("TLS").trim_start_matches("tls").trim() {
            "" | "1.2" => Ok(TLS12_UP),
            "1.3" => Ok(TLS13_ONLY),
            "1.0" | "1.1" => Err(format!("TLS {} is not supported (too old); use 1.2 or 1.3", self.min_version)),
            other => Err(format!("unknown TLS version {other:?}; use 1.2 or 1.3")),
        }
    }
}

/// TLS as a client (the agent's exporters): the collector's client `tls` keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM CAs the server's certificate must chain to; empty: the system's trust store.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and key, for servers that require mTLS.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Accept any server certificate. For tests only: anyone in the path can read the data.
    pub insecure_skip_verify: bool,
    /// The name the server's certificate must carry instead of the endpoint's host.
    pub server_name_override: String,
}

impl ClientTlsConfig {
    /// Whether any key is set (a `host:port` endpoint then means TLS).
    pub fn is_set(&self) -> bool {
        *self != ClientTlsConfig::default()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.cert_file.as_os_str().is_empty() != self.key_file.as_os_str().is_empty() {
            return Err("tls: cert_file and key_file go together".into());
        }
        Ok(())
    }
}

static TLS12_UP: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The bytes of every file a configuration was built from, to tell whether a reload changes it.
type Snapshot = Vec<Vec<u8>>;

/// A listener's TLS acceptor whose configuration can be replaced while it serves.
pub struct Reloading {
    config: TlsConfig,
    /// Which listener, for log lines.
    what: String,
    current: RwLock<(Arc<ServerConfig>, Snapshot)>,
}

/// The acceptor for a listener, `None` when its TLS is off.
pub fn load(config: &TlsConfig, what: &str) -> Result<Option<Arc<Reloading>>, StartupError> {
    if !config.enabled() {
        return Ok(None);
    }
    let r = Reloading::new(config, what)?;
    tracing::info!(listener = what, mtls = !config.client_ca_file.as_os_str().is_empty(), "TLS on");
    Ok(Some(r))
}

impl Reloading {
    /// Reads and checks the files; any problem stops the process, naming the file.
    pub fn new(config: &TlsConfig, what: &str) -> Result<Arc<Reloading>, StartupError> {
        let snapshot = read_files(config).map_err(StartupError::new)?;
        let server = build(config, &snapshot).map_err(|e| StartupError::new(format!("TLS for {what}: {e}")))?;
        Ok(Arc::new(Reloading {
            config: config.clone(),
            what: what.to_owned(),
            current: RwLock::new((server, snapshot)),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        tokio_rustls::TlsAcceptor::from(current.0.clone())
    }

    /// Reads the files again; when they changed and make a good configuration, it replaces the
    /// served one. Bad new files are logged and the old certificates stay in service: an
    /// operator mid-way through replacing a key and a certificate must not take the port down.
    pub fn reload(&self) -> Result<bool, String> {
        let snapshot = read_files(&self.config)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == snapshot {
            return Ok(false);
        }
        let server = build(&self.config, &snapshot)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (server, snapshot);
        Ok(true)
    }

    /// Reloads every `reload_interval` until `stop` turns true.
    pub async fn watch(self: Arc<Self>, stop: watch::Receiver<bool>) {
        if self.config.reload_interval.is_zero() {
            return;
        }
        let me = self.clone();
        crate::reload::every(
            self.config.reload_interval,
            stop,
            move || me.reload(),
            || tracing::info!(listener = %self.what, "TLS certificates reloaded"),
            |e| {
                tracing::warn!(
                    listener = %self.what,
                    error = %e,
                    "cannot reload TLS certificates; still serving the previous ones"
                )
            },
        )
        .await
    }
}

fn read_files(config: &TlsConfig) -> Result<Snapshot, String> {
    let mut out = vec![read(&config.cert_file, "cert_file")?, read(&config.key_file, "key_file")?];
    if !config.client_ca_file.as_os_str().is_empty() {
        out.push(read(&config.client_ca_file, "client_ca_file")?);
    }
    Ok(out)
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read TLS {key} {}: {e}", path.display()))
}

/// A rustls configuration from the files' bytes (`[cert, key, ca?]`).
fn build(config: &TlsConfig, files: &Snapshot) -> Result<Arc<ServerConfig>, String> {
    let certs = certificates(&files[0], &config.cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_slice(&files[1])
        .map_err(|e| format!("TLS key_file {}: no usable PEM private key ({e})", config.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(config.versions()?)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match files.get(2) {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca, &config.client_ca_file, "client_ca_file")? {
                roots.add(c).map_err(|e| {
                    format!("TLS client_ca_file {}: not a usable CA certificate: {e}", config.client_ca_file.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("TLS client_ca_file {}: {e}", config.client_ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "TLS cert_file {} and key_file {} do not make a usable pair: {e}",
            config.cert_file.display(),
            config.key_file.display()
        )
    })?;
    // gRPC clients (grpcio, Go) insist on negotiating h2; HTTP/1 clients get http/1.1.
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn certificates(pem: &[u8], path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS {key} {}: bad PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("TLS {key} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_files() {
        let on = TlsConfig { cert_file: "c.pem".into(), key_file: "k.pem".into(), ..TlsConfig::default() };
        assert!(on.validate("server.tls").is_ok());
        let no_key = TlsConfig { key_file: PathBuf::new(), ..on.clone() };
        assert!(no_key.validate("server.tls").unwrap_err().contains("key_file"));
        let old = TlsConfig { min_version: "1.1".into(), ..on.clone() };
        assert!(old.validate("server.tls").unwrap_err().contains("server.tls.min_version: TLS 1.1 is not supported"));
        let ca_only = TlsConfig { client_ca_file: "ca.pem".into(), ..TlsConfig::default() };
        assert!(ca_only.validate("server.http_tls").unwrap_err().contains("need cert_file"));
        assert!(TlsConfig::default().validate("server.tls").is_ok());
    }

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let cfg = TlsConfig { cert_file: cert.clone(), key_file: key.clone(), ..TlsConfig::default() };
        let err = Reloading::new(&cfg, "OTLP/gRPC").err().unwrap().to_string();
        assert!(err.contains("cert_file") && err.contains("cert.pem"), "{err}");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = Reloading::new(&cfg, "OTLP/gRPC").err().unwrap().to_string();
        assert!(err.contains("no PEM certificate") && err.contains("cert.pem"), "{err}");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let err = Reloading::new(&cfg, "OTLP/gRPC").err().unwrap().to_string();
        assert!(err.contains("key_file") && err.contains("key.pem"), "{err}");
    }
}
