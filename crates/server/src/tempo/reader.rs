//! The read side every query handler takes: live traces (the head; empty in a query-only
//! process) and the backend's blocks, with the search limits and tenancy to apply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use spoor_model::TraceId;
use spoor_store::{Blocks, Head};

use crate::config::{Config, SearchConfig};
use crate::error::{Error, Kind, StartupError};
use crate::ingest::tenant;
use crate::metrics::Metrics;
use crate::metrics::names;

pub struct Reader {
    pub head: Arc<Head>,
    pub blocks: Arc<Blocks>,
    pub search: SearchConfig,
    /// A querier of the scale-out: the ingesters whose live traces it reads.
    pub live: Option<Arc<crate::cluster::live::Ingesters>>,
    multitenancy: bool,
    metrics: Arc<Metrics>,
}

impl Reader {
    pub fn new(head: Arc<Head>, blocks: Arc<Blocks>, config: &Config, metrics: Arc<Metrics>) -> Reader {
        Reader {
            head,
            blocks,
            search: config.search.clone(),
            live: None,
            multitenancy: config.tenancy.multitenancy_enabled,
            metrics,
        }
    }

    /// Whether reads name their tenants (`X-Scope-OrgID`).
    pub fn multitenancy(&self) -> bool {
        self.multitenancy
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The tenants a query reads (`a|b` federates), or why it may not.
    pub fn tenants(&self, headers: &HeaderMap) -> Result<Vec<String>, Error> {
        tenant::for_read(headers, self.multitenancy)
    }

    /// The trace's fragments: live, flushing, and from every block that may hold it (blocks
    /// outside `range` [start, end] in unix nanos are skipped).
    pub async fn find_trace(
        &self,
        tenant: &str,
        id: &TraceId,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<bytes::Bytes>, Error> {
        self.find_trace_reporting(tenant, id, range, &mut Vec::new()).await
    }

    /// [`Reader::find_trace`], adding to `missed` the sources that did not answer (a querier's
    /// ingesters), so the answer can say it may be partial.
    pub async fn find_trace_reporting(
        &self,
        tenant: &str,
        id: &TraceId,
        range: Option<(u64, u64)>,
        missed: &mut Vec<String>,
    ) -> Result<Vec<bytes::Bytes>, Error> {
        let mut out = self.head.get(tenant, id).unwrap_or_default();
        if let Some(l) = &self.live {
            out.extend(l.trace(tenant, id, missed).await);
        }
        let from_blocks = self
            .blocks
            .find_trace(tenant, id, range)
            .await
            .map_err(|e| Error::internal(format!("reading blocks: {e}")).with_source(e))?;
        out.extend(from_blocks);
        Ok(out)
    }

    /// `spoor_queries_total` and `spoor_query_seconds_total` for one query.
    pub fn count_query<T>(&self, endpoint: &str, started: Instant, result: &Result<T, Error>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if matches!(e.kind(), Kind::BadRequest | Kind::Unauthenticated) => "bad_request",
            Err(_) => "error",
        };
        self.metrics.inc(names::QUERIES_TOTAL, &[("endpoint", endpoint), ("outcome", outcome)], 1.0);
        self.metrics.inc(names::QUERY_SECONDS_TOTAL, &[("endpoint", endpoint)], started.elapsed().as_secs_f64());
    }
}

/// The S3 client's HTTP when `storage.s3.tls` names a client certificate or a server name
/// override, which object_store's own client cannot do: the server's rustls client.
fn store_http(
    st: &crate::config::StorageConfig,
) -> Result<Option<Arc<dyn object_store::client::HttpConnector>>, StartupError> {
    let t = &st.s3.tls;
    if st.backend != spoor_store::backend::BackendKind::S3
        || (t.cert_file.as_os_str().is_empty()
            && t.key_file.as_os_str().is_empty()
            && t.server_name_override.is_empty())
    {
        return Ok(None);
    }
    let tls = crate::tls::ClientTlsConfig {
        ca_file: t.ca_file.clone(),
        cert_file: t.cert_file.clone(),
        key_file: t.key_file.clone(),
        insecure_skip_verify: t.insecure_skip_verify,
        server_name_override: t.server_name_override.clone(),
    };
    tls.validate().map_err(|e| StartupError::new(format!("storage.s3: {e}")))?;
    let http = crate::tls::client::StoreHttp::new(&tls, Duration::from_secs(st.request_timeout_secs))
        .map_err(|e| StartupError::new(format!("storage.s3: {e}")))?;
    Ok(Some(Arc::new(http)))
}

/// The configured backend's blocks; `tmp` holds blocks being written or compacted.
pub fn open_blocks(config: &Config, tmp: std::path::PathBuf) -> Result<Blocks, StartupError> {
    let st = &config.storage;
    let seal = st.encryption.load()?;
    let store = spoor_store::backend::open(&spoor_store::backend::Options {
        kind: st.backend,
        local_path: &st.local_path(),
        prefix: &st.prefix,
        s3: &st.s3,
        gcs: &st.gcs,
        azure: &st.azure,
        request_timeout: Duration::from_secs(st.request_timeout_secs),
        max_retries: st.max_retries,
        seal: seal.clone(),
        http: store_http(st)?,
    })
    .map_err(|e| StartupError::new(format!("cannot open the block storage backend: {e}")).with_source(e))?;
    let mut options = spoor_block::WriteOptions::default();
    if config.blocks.row_group_spans > 0 {
        options.row_group_spans = config.blocks.row_group_spans;
    }
    if !config.blocks.dedicated_columns {
        options.dedicated = spoor_block::DedicatedPolicy::Fixed(Vec::new());
    }
    Ok(Blocks::new(store, tmp, options, st.block_cache_bytes).with_seal(seal))
}
