//! The object store behind blocks: local disk by default, or S3-compatible, GCS or Azure,
//! all through `object_store`, with retries and timeouts.

use std::path::Path;
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
            // Client options first: allow_http lives inside them and would be overwritten.
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_client_options(client)
                .with_bucket_name(&c.bucket)
                .with_region(&c.region)
                .with_allow_http(c.allow_http)
                .with_virtual_hosted_style_request(c.virtual_hosted_style)
                .with_retry(retry);
            if !c.endpoint.is_empty() {
                b = b.with_endpoint(&c.endpoint);
            }
            if !c.access_key_id.is_empty() {
                b = b.with_access_key_id(&c.access_key_id).with_secret_access_key(&c.secret_access_key);
            }
            if !c.session_token.is_empty() {
                b = b.with_token(&c.session_token);
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
