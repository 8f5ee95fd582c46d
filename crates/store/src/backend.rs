//! The object store behind blocks: local disk by default, or S3-compatible, GCS or Azure,
//! all through `object_store`, with retries and timeouts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Local,
    S3,
    Gcs,
    Azure,
}

/// Empty strings mean "not set": the SDK-standard environment variables (`AWS_*`) apply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// For S3-compatible stores (MinIO, Ceph, R2, …): `http(s)://host:port`. Empty: AWS.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Allow `http://` endpoints (test servers, in-cluster MinIO).
    pub allow_http: bool,
    /// `bucket.host` addressing instead of path-style `host/bucket`.
    pub virtual_hosted_style: bool,
    /// Server-side encryption asked for on every object written.
    pub sse: SseConfig,
    /// TLS for an `https://` endpoint, in the shape of every client `tls` block.
    pub tls: S3TlsConfig,
}

/// `storage.s3.tls`: the keys of the server's `ClientTlsConfig` (this crate sits below the
/// server, so it spells them out). object_store's own client (reqwest's) takes extra CAs and the
/// test-only skip of verification; for a client certificate or a server name override the
/// server passes its own client in [`Options::http`] (without one, those keys are refused at
/// start rather than ignored).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3TlsConfig {
    /// PEM CAs trusted besides the system's (a private CA in front of MinIO or Ceph).
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Accept any server certificate. For tests only.
    pub insecure_skip_verify: bool,
    pub server_name_override: String,
}

/// `storage.s3.sse`: S3 server-side encryption, sent as headers on every PUT (the store
/// encrypts; Spoor never sees the keys).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// `SSE-S3` (keys managed by S3), `SSE-KMS` (a KMS key), or empty for the bucket's default.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `SSE-KMS`: the key's ID or ARN; empty: the account's default KMS key for S3.
    pub kms_key_id: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            allow_http: false,
            virtual_hosted_style: false,
            sse: SseConfig::default(),
            tls: S3TlsConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcsConfig {
    pub bucket: String,
    /// Service-account JSON key file; empty: `GOOGLE_*` environment / workload identity.
    pub service_account_path: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    /// Empty: `AZURE_*` environment.
    pub access_key: String,
}

pub struct Options<'a> {
    pub kind: BackendKind,
    pub local_path: &'a Path,
    pub prefix: &'a str,
    pub s3: &'a S3Config,
    pub gcs: &'a GcsConfig,
    pub azure: &'a AzureConfig,
    pub request_timeout: Duration,
    pub max_retries: usize,
    /// Seal the blocks of the local backend under this master key. Remote backends store what
    /// they are given and rely on the provider's server-side encryption (docs/security.md).
    pub seal: Option<Arc<spoor_seal::MasterKey>>,
    /// The S3 client's HTTP, when built above this crate: the server's rustls client, for the
    /// `tls` keys object_store's own client cannot honour (a client certificate, a server name
    /// override). None: object_store's client, with `s3.tls`'s CA and skip-verify applied.
    pub http: Option<Arc<dyn object_store::client::HttpConnector>>,
}

/// An injected [`Options::http`], as the builder takes it.
#[derive(Debug)]
struct SharedHttp(Arc<dyn object_store::client::HttpConnector>);

impl object_store::client::HttpConnector for SharedHttp {
    fn connect(&self, options: &object_store::ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        self.0.connect(options)
    }
}

/// Builds the configured store; the prefix, if any, is applied on top.
pub fn open(o: &Options) -> Result<Arc<dyn ObjectStore>> {
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: o.max_retries,
        retry_timeout: Duration::from_secs(60),
    };
    let client =
        object_store::ClientOptions::new().with_timeout(o.request_timeout).with_connect_timeout(Duration::from_secs(5));
    let store: Arc<dyn ObjectStore> = match o.kind {
        BackendKind::Local => {
            std::fs::create_dir_all(o.local_path).map_err(crate::error::io(o.local_path))?;
            // Deleting a block's last file removes its directory, as on an object store.
            let local = Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(o.local_path)?.with_automatic_cleanup(true),
            );
            match &o.seal {
                Some(key) => Arc::new(crate::sealed::SealedStore::new(local, key.clone())),
                None => local,
            }
        }
        BackendKind::S3 => {
            let c = o.s3;
            if c.bucket.is_empty() {
                return Err(Error::Config("storage.s3.bucket is required for the s3 backend".into()));
            }
            let client = match &o.http {
                Some(_) => client,
                None => s3_tls(client, &c.tls)?,
            };
            // Client options first: allow_http lives inside them and would be overwritten.
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_client_options(client)
                .with_bucket_name(&c.bucket)
                .with_region(&c.region)
                .with_allow_http(c.allow_http)
                .with_virtual_hosted_style_request(c.virtual_hosted_style)
                .with_retry(retry);
            if let Some(http) = &o.http {
                b = b.with_http_connector(SharedHttp(http.clone()));
            }
            if !c.endpoint.is_empty() {
                b = b.with_endpoint(&c.endpoint);
            }
            if !c.access_key_id.is_empty() {
                b = b.with_access_key_id(&c.access_key_id).with_secret_access_key(&c.secret_access_key);
            }
            if !c.session_token.is_empty() {
                b = b.with_token(&c.session_token);
            }
            match (c.sse.kind.as_str(), c.sse.kms_key_id.as_str()) {
                ("", "") => {}
                ("SSE-S3", "") => {
                    // object_store names SSE-S3 only through its configuration keys.
                    let key: object_store::aws::AmazonS3ConfigKey = "aws_server_side_encryption".parse()?;
                    b = b.with_config(key, "AES256");
                }
                ("SSE-KMS", key) => b = b.with_sse_kms_encryption(key),
                ("SSE-S3" | "", _) => {
                    return Err(Error::Config("storage.s3.sse.kms_key_id needs sse.type: SSE-KMS".into()));
                }
                (other, _) => {
                    return Err(Error::Config(format!(
                        "storage.s3.sse.type {other:?}: use SSE-S3 or SSE-KMS (or leave it empty)"
                    )));
                }
            }
            Arc::new(b.build()?)
        }
        BackendKind::Gcs => {
            let c = o.gcs;
            if c.bucket.is_empty() {
                return Err(Error::Config("storage.gcs.bucket is required for the gcs backend".into()));
            }
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&c.bucket)
                .with_retry(retry)
                .with_client_options(client);
            if !c.service_account_path.is_empty() {
                b = b.with_service_account_path(&c.service_account_path);
            }
            Arc::new(b.build()?)
        }
        BackendKind::Azure => {
            let c = o.azure;
            if c.container.is_empty() {
                return Err(Error::Config("storage.azure.container is required for the azure backend".into()));
            }
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&c.container)
                .with_retry(retry)
                .with_client_options(client);
            if !c.account.is_empty() {
                b = b.with_account(&c.account);
            }
            if !c.access_key.is_empty() {
                b = b.with_access_key(&c.access_key);
            }
            Arc::new(b.build()?)
        }
    };
    let prefix = o.prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        store
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix.to_owned()))
    })
}

/// `storage.s3.tls` applied to the object-store client.
fn s3_tls(mut client: object_store::ClientOptions, tls: &S3TlsConfig) -> Result<object_store::ClientOptions> {
    let unsupported = |key: &str| {
        Err(Error::Config(format!(
            "storage.s3.tls.{key}: the object-store client does not support it (use ca_file, insecure_skip_verify)"
        )))
    };
    if !tls.cert_file.as_os_str().is_empty() || !tls.key_file.as_os_str().is_empty() {
        return unsupported("cert_file");
    }
    if !tls.server_name_override.is_empty() {
        return unsupported("server_name_override");
    }
    if !tls.ca_file.as_os_str().is_empty() {
        let pem = std::fs::read(&tls.ca_file)
            .map_err(|e| Error::Config(format!("cannot read storage.s3.tls.ca_file {}: {e}", tls.ca_file.display())))?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::Config(format!("storage.s3.tls.ca_file {}: no usable PEM certificate ({e})", tls.ca_file.display()))
        })?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "storage.s3.tls.ca_file {}: no PEM certificate in it",
                tls.ca_file.display()
            )));
        }
        for c in certs {
            client = client.with_root_certificate(c);
        }
    }
    if tls.insecure_skip_verify {
        tracing::warn!("storage.s3.tls.insecure_skip_verify is on: the store's certificate is not checked");
        client = client.with_allow_invalid_certificates(true);
    }
    Ok(client)
}
