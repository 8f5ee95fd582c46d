//! The data path, on one screen:
//!
//! ```text
//! receiver ─► memory limiter ─► decompress ─► decode ─► tenant rate limit ─► scrub (attributes,
//!          redaction, default policy) ─► validate + split by trace ─► head limits
//!          ─► metrics generator (every span, before sampling) ─► WAL (group-committed fsync)
//!          ─► acknowledge ─► tail sampler (decisions also to the WAL) ─► head (live traces)
//!          ─► cut by size/age ─► block (Parquet) in the backend ─► WAL segments released
//! ```
//!
//! Everything after the WAL is rebuilt from it on start ([`Pipeline::replay`]), so the reply a
//! client gets is a promise the WAL keeps until the block holding it is durable (or its trace
//! is sampled out).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use spoor_model::otlp::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use spoor_model::{Record, decode_any, encode_record, split_request};
use spoor_store::head::Admitted;
use spoor_store::{Blocks, Frozen, Head, Limits, Refusal};
use spoor_wal::{Wal, WriterThread};

use crate::body::{self, Compression, Format};
use crate::config::{Config, Durability};
use crate::error::Error;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::processors::Scrubbing;
use crate::sampling::Sampling;

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

pub struct Pipeline {
    pub config: Config,
    pub head: Head,
    pub blocks: Blocks,
    pub metrics: Metrics,
    /// Memory limiter and per-tenant rates.
    pub admission: Admission,
    /// Attribute actions, redaction and the default policy: before the WAL.
    scrubbing: Scrubbing,
    /// Tail sampling: after the WAL.
    pub sampling: Option<Sampling>,
    /// Span metrics and service graphs, from every admitted span (None when turned off).
    pub generator: Option<spoor_generate::Generator>,
    /// Where generated series are pushed (possibly nowhere).
    pub remote_write: crate::remote_write::RemoteWrite,
    /// One flush at a time: flushes are CPU-bound and ordered per tenant.
    flush_lock: tokio::sync::Mutex<()>,
    /// Cut traces whose block failed to upload; retried, and readable meanwhile.
    unflushed: Mutex<Vec<Arc<Frozen>>>,
    wal: RwLock<Option<Wal>>,
    wal_thread: Mutex<Option<WriterThread>>,
    state: AtomicU8,
}

/// A request ready for the WAL.
struct Prepared {
    tenant: String,
    invalid_spans: usize,
    invalid_message: String,
    admitted: Admitted,
}

impl Prepared {
    /// The OTLP reply: partial success names every span refused individually, and why.
    fn response(&self, max_bytes_per_trace: usize) -> ExportTraceServiceResponse {
        let mut messages = Vec::new();
        if !self.invalid_message.is_empty() {
            messages.push(self.invalid_message.clone());
        }
        let a = &self.admitted;
        if a.too_large_spans > 0 {
            messages.push(format!(
                "{} spans rejected: {} traces would exceed max_bytes_per_trace ({max_bytes_per_trace} bytes)",
                a.too_large_spans, a.too_large_traces
            ));
        }
        let rejected = self.invalid_spans + a.too_large_spans;
        let mut error_message = messages.join("; ");
        error_message.truncate(error_message.floor_char_boundary(1024));
        ExportTraceServiceResponse {
            partial_success: (rejected > 0 || !error_message.is_empty())
                .then_some(ExportTracePartialSuccess { rejected_spans: rejected as i64, error_message }),
        }
    }
}

/// One export request as a receiver hands it over.
pub struct Export {
    pub tenant: String,
    pub transport: &'static str,
    pub body: Vec<u8>,
    pub compression: Compression,
    pub format: Format,
    /// Request headers (lowercase names) for processors that read them.
    pub metadata: Vec<(String, String)>,
}

impl crate::receive::Ingest for Pipeline {
    fn multitenancy_enabled(&self) -> bool {
        self.config.tenancy.multitenancy_enabled
    }

    fn max_request_bytes(&self) -> usize {
        self.config.ingest.max_request_bytes
    }

    fn admit_early(&self, tenant: &str) -> Result<(), Error> {
        self.admission.early(tenant, &self.metrics)
    }

    async fn ingest(self: Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        Pipeline::ingest(&self, export).await
    }
}

/// The configured backend's blocks; `tmp` holds blocks being written or compacted.
pub fn open_blocks(config: &Config, tmp: std::path::PathBuf) -> Result<Blocks, Error> {
    let st = &config.storage;
    let store = spoor_store::backend::open(&spoor_store::backend::Options {
        kind: st.backend,
        local_path: &st.local_path(),
        prefix: &st.prefix,
        s3: &st.s3,
        gcs: &st.gcs,
        azure: &st.azure,
        request_timeout: Duration::from_secs(st.request_timeout_secs),
        max_retries: st.max_retries,
    })
    .map_err(|e| Error::Startup(format!("cannot open the block storage backend: {e}")))?;
    let mut options = spoor_block::WriteOptions::default();
    if config.blocks.row_group_spans > 0 {
        options.row_group_spans = config.blocks.row_group_spans;
    }
    Ok(Blocks::new(store, tmp, options, st.block_cache_bytes))
}

impl Pipeline {
    pub fn new(config: Config) -> Result<Pipeline, Error> {
        // The data dir belongs to the ingesting process (it holds the lock); a query-only one
        // may share it, so it keeps its scratch files elsewhere.
        let tmp = if config.ingest.enabled {
            config.storage.data_dir.join("tmp")
        } else {
            std::env::temp_dir().join(format!("spoor-{}", std::process::id()))
        };
        // Leftovers of a crash: temporary block files are never reused.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::Startup(format!("cannot create {}: {e}", tmp.display())))?;
        let blocks = open_blocks(&config, tmp)?;
        let l = &config.limits;
        let head = Head::new(Limits {
            max_live_traces: l.max_live_traces,
            max_bytes_per_trace: l.max_bytes_per_trace,
            max_bytes_per_tenant: l.max_bytes_per_tenant,
            max_bytes_total: l.max_live_bytes,
        });
        let admission = Admission::new(&config)?;
        let scrubbing = Scrubbing::new(&config.processors)?;
        let sampling = config.processors.tail_sampling().map(Sampling::new).transpose()?;
        let generator =
            spoor_generate::Generator::new(&config.metrics_generator).map_err(|e| Error::Startup(e.to_string()))?;
        let generator = (generator.is_enabled() && config.ingest.enabled).then_some(generator);
        if let Some(g) = &generator {
            g.set_series_limits(admission.rate.series_limits());
        }
        let remote_write = crate::remote_write::RemoteWrite::new(&config.metrics_generator.remote_write)?;
        Ok(Pipeline {
            config,
            head,
            blocks,
            metrics: Metrics::default(),
            admission,
            scrubbing,
            sampling,
            generator,
            remote_write,
            flush_lock: tokio::sync::Mutex::new(()),
            unflushed: Mutex::new(Vec::new()),
            wal: RwLock::new(None),
            wal_thread: Mutex::new(None),
            state: AtomicU8::new(STARTING),
        })
    }

    fn wal_config(&self) -> spoor_wal::Config {
        spoor_wal::Config {
            dir: self.config.storage.data_dir.join("wal"),
            segment_bytes: self.config.wal.segment_bytes,
            durability: match self.config.wal.durability {
                Durability::Fsync => spoor_wal::Durability::Fsync,
                Durability::Os => spoor_wal::Durability::Os,
            },
        }
    }

    /// Rebuilds the head from the WAL and opens it for appending.
    pub fn replay(&self) -> Result<(), spoor_wal::Error> {
        let start = Instant::now();
        let cfg = self.wal_config();
        let mut unreadable = 0u64;
        let stats = spoor_wal::replay(&cfg.dir, |segment, payload| match decode_any(payload) {
            Some(Record::Spans { tenant, fragments }) => self.store(&tenant, &fragments, segment),
            Some(Record::Decisions { tenant, decisions }) => {
                // With sampling turned off since, everything in the WAL was already stored.
                if let Some(s) = &self.sampling {
                    self.store_sampled(&s.apply(&tenant, &decisions));
                }
            }
            None => unreadable += 1,
        })?;
        let secs = start.elapsed().as_secs_f64();
        self.metrics.set("spoor_wal_replay_seconds", &[], secs);
        self.metrics.set("spoor_wal_replay_records", &[], stats.records as f64);
        self.metrics.inc("spoor_wal_corrupt_records_total", &[], (stats.corrupt_records + unreadable) as f64);
        self.metrics.inc("spoor_wal_truncated_bytes_total", &[], stats.truncated_bytes as f64);
        tracing::info!(
            records = stats.records,
            segments = stats.segments,
            corrupt = stats.corrupt_records + unreadable,
            truncated_bytes = stats.truncated_bytes,
            seconds = secs,
            "WAL replayed"
        );
        let (wal, thread) = Wal::open(cfg)?;
        *self.wal.write().unwrap() = Some(wal);
        *self.wal_thread.lock().unwrap() = Some(thread);
        Ok(())
    }

    /// Reads the blocklist for the first time, then answers ready. A backend that cannot be
    /// reached does not stop ingest (the WAL holds everything); polling retries.
    pub async fn start_serving(&self) {
        // Bounded: an unreachable backend must not keep ingest from starting.
        let limit = Duration::from_secs(self.config.storage.request_timeout_secs.max(1));
        match tokio::time::timeout(limit, self.blocks.poll()).await {
            Ok(Ok(n)) => tracing::info!(blocks = n, "blocklist read"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the blocklist yet; will retry"),
            Err(_) => tracing::warn!("reading the blocklist takes over {limit:?}; serving meanwhile, will retry"),
        }
        self.state.store(READY, Ordering::SeqCst);
        self.metrics.set("spoor_ready", &[], 1.0);
    }

    /// Moves the tenants' live traces into blocks (every tenant with data when `tenants` is
    /// None), retrying earlier failed uploads first. Returns once all of it is durable, or the
    /// first error (the traces stay in memory and the WAL, and are retried).
    pub async fn flush(&self, tenants: Option<Vec<String>>) -> Result<(), Error> {
        let _one_at_a_time = self.flush_lock.lock().await;
        let retry: Vec<Arc<Frozen>> = std::mem::take(&mut *self.unflushed.lock().unwrap());
        let mut result = Ok(());
        for (i, frozen) in retry.iter().enumerate() {
            if let Err(e) = self.flush_frozen(frozen.clone()).await {
                self.unflushed.lock().unwrap().extend(retry[i..].iter().cloned());
                return Err(e);
            }
        }
        for tenant in tenants.unwrap_or_else(|| self.head.tenants_with_data()) {
            let Some(frozen) = self.head.cut(&tenant) else { continue };
            if let Err(e) = self.flush_frozen(frozen.clone()).await {
                self.unflushed.lock().unwrap().push(frozen);
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        self.release_wal().await;
        result
    }

    async fn flush_frozen(&self, frozen: Arc<Frozen>) -> Result<(), Error> {
        let start = Instant::now();
        let tenant = frozen.tenant.clone();
        match self.blocks.flush(frozen.clone()).await {
            Ok(meta) => {
                self.head.release(&frozen);
                let secs = start.elapsed().as_secs_f64();
                self.metrics.inc("spoor_flushes_total", &[("tenant", &tenant), ("outcome", "ok")], 1.0);
                self.metrics.inc("spoor_flush_seconds_total", &[], secs);
                self.metrics.inc("spoor_flushed_spans_total", &[("tenant", &tenant)], meta.spans as f64);
                tracing::info!(
                    tenant,
                    block = meta.block_id,
                    spans = meta.spans,
                    traces = meta.traces,
                    bytes = meta.data_bytes,
                    seconds = secs,
                    "block flushed"
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.inc("spoor_flushes_total", &[("tenant", &tenant), ("outcome", "error")], 1.0);
                tracing::warn!(tenant, error = %e, "flush failed; the traces stay in memory and the WAL, retrying");
                Err(Error::Unavailable { message: format!("flush failed: {e}"), retry_after_secs: 1 })
            }
        }
    }

    /// Deletes the WAL segments whose every record is in a durable block.
    async fn release_wal(&self) {
        let Some(wal) = self.wal.read().unwrap().clone() else { return };
        if self.head.low_water().is_none() && self.sampling.as_ref().and_then(|s| s.low_water()).is_none() {
            // Everything is flushed: close the active segment so it can go too.
            if let Err(e) = wal.rotate().await {
                tracing::warn!(error = %e, "cannot rotate the WAL");
                return;
            }
        }
        let sampler_low = self.sampling.as_ref().and_then(|s| s.low_water()).unwrap_or(u64::MAX);
        let low = self.head.low_water().unwrap_or(u64::MAX).min(sampler_low);
        match wal.release_before(low) {
            Ok(n) => self.metrics.inc("spoor_wal_segments_released_total", &[], n as f64),
            Err(e) => tracing::warn!(error = %e, "cannot release WAL segments"),
        }
    }

    /// Tenants whose live traces should become blocks now: by size, by age, or because the
    /// head as a whole is past half its memory limit.
    pub fn due_for_flush(&self) -> Option<Vec<String>> {
        let b = &self.config.blocks;
        let pending = !self.unflushed.lock().unwrap().is_empty();
        if self.head.total_bytes() * 2 > self.config.limits.max_live_bytes {
            return Some(self.head.tenants_with_data());
        }
        let due = self.head.due(b.max_block_bytes, Duration::from_secs(b.max_block_age_secs));
        (!due.is_empty() || pending).then_some(due)
    }

    /// The trace's fragments: live, flushing, and from every block that may hold it (blocks
    /// outside `range` [start, end] in unix nanos are skipped).
    pub async fn find_trace(
        &self,
        tenant: &str,
        id: &spoor_model::TraceId,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<bytes::Bytes>, Error> {
        let mut out = self.head.get(tenant, id).unwrap_or_default();
        let from_blocks = self
            .blocks
            .find_trace(tenant, id, range)
            .await
            .map_err(|e| Error::Internal(format!("reading blocks: {e}")))?;
        out.extend(from_blocks);
        Ok(out)
    }

    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::SeqCst) == READY
    }

    pub fn not_ready_reason(&self) -> &'static str {
        match self.state.load(Ordering::SeqCst) {
            STARTING => "replaying the WAL",
            STOPPING => "shutting down",
            _ => "ready",
        }
    }

    fn unavailable(&self, message: String) -> Error {
        Error::Unavailable { message, retry_after_secs: 1 }
    }

    /// The ingest path. Returns the OTLP response to send, or the error that refuses it.
    pub async fn ingest(self: &Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        let transport = export.transport;
        let result = self.ingest_inner(export).await;
        let code = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics.inc("spoor_requests_total", &[("transport", transport), ("code", code)], 1.0);
        result
    }

    async fn ingest_inner(self: &Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        if !self.is_ready() {
            return Err(self.unavailable(format!("not ready: {}; retry shortly", self.not_ready_reason())));
        }
        if let Some(s) = &self.sampling
            && !s.has_room()
        {
            return Err(Error::Unavailable {
                message: "sampler_full: tail sampling holds num_traces (or max_bytes) undecided traces; retry later"
                    .into(),
                retry_after_secs: 1,
            });
        }
        let Some(wal) = self.wal.read().unwrap().clone() else {
            return Err(self.unavailable("shutting down".into()));
        };
        // CPU work (inflate, decode, re-encode per trace) runs off the async threads.
        let this = self.clone();
        let prepared = tokio::task::spawn_blocking(move || this.prepare(export))
            .await
            .map_err(|e| Error::Internal(format!("ingest task failed: {e}")))??;
        let tenant = &prepared.tenant;
        let accepted: usize = prepared.admitted.fragments.iter().map(|f| f.spans as usize).sum();
        if accepted > 0 {
            let record = encode_record(tenant, &prepared.admitted.fragments);
            // Keeps the segment from release between the append and the insert.
            let _pin = self.head.pin(wal.active_segment());
            let segment = match wal.append(record).await {
                Ok(segment) => segment,
                Err(e) => {
                    tracing::warn!(error = %e, "WAL append failed; request not acknowledged");
                    let labels = [("tenant", tenant.as_str()), ("reason", "wal_error")];
                    self.metrics.inc("spoor_spans_refused_total", &labels, accepted as f64);
                    return Err(self.unavailable(format!("cannot make spans durable: {e}; retry later")));
                }
            };
            self.store(tenant, &prepared.admitted.fragments, segment);
            self.metrics.inc("spoor_spans_accepted_total", &[("tenant", tenant)], accepted as f64);
        }
        Ok(prepared.response(self.config.limits.max_bytes_per_trace))
    }

    /// Decode, validate, split by trace and admit: everything before the WAL.
    fn prepare(&self, export: Export) -> Result<Prepared, Error> {
        let Export { tenant, body, compression, format, metadata, .. } = export;
        let m = &self.metrics;
        let refused = |reason: &'static str, spans: usize| {
            m.inc("spoor_spans_refused_total", &[("tenant", &tenant), ("reason", reason)], spans as f64);
        };
        // Refused before decoding: an overloaded server must not spend memory to say no.
        let _in_flight = self.admission.request(&tenant, body.len(), m)?;
        let raw = body::decompress(body, compression, self.config.ingest.max_request_bytes)?;
        let raw_bytes = raw.len() as u64;
        let mut req = body::decode(&raw, format)?;
        drop(raw);
        let spans: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        m.inc("spoor_spans_received_total", &[("tenant", &tenant)], spans as f64);
        // Before any per-span work: a tenant over its rate costs a decode, nothing more.
        self.admission.rate.admit(&tenant, spans as u64, raw_bytes, Instant::now()).inspect_err(|_| {
            refused("rate_limited", spans);
        })?;
        // Scrubbed before anything touches disk.
        let ctx = spoor_process::attributes::Context { metadata: &metadata, client_address: None };
        self.scrubbing.apply(&mut req, &ctx, &tenant, m);
        let split = split_request(&req);
        if split.rejected_spans > 0 {
            refused("invalid", split.rejected_spans);
        }
        let admitted = self.head.admit(&tenant, split.fragments).map_err(|refusal| {
            refused(refusal.reason(), split.accepted_spans);
            let retry_after_secs = self.config.limits.retry_after_secs;
            match refusal {
                Refusal::TotalBytesExceeded => Error::Unavailable {
                    message: format!(
                        "{}: the server's live traces are at limits.max_live_bytes; retry later",
                        refusal.reason()
                    ),
                    retry_after_secs,
                },
                _ => Error::Limited {
                    message: format!(
                        "{}: tenant {tenant} is over its live-trace limits; retry later",
                        refusal.reason()
                    ),
                    retry_after_secs,
                },
            }
        })?;
        if admitted.too_large_spans > 0 {
            refused("trace_too_large", admitted.too_large_spans);
        }
        // Counted once admitted, from the spans already decoded: metrics see every span,
        // whatever tail sampling keeps. (Not on replay: those spans were counted before.)
        if let Some(g) = &self.generator {
            g.observe(&tenant, &req, unix_nanos());
        }
        drop(req);
        Ok(Prepared { tenant, invalid_spans: split.rejected_spans, invalid_message: split.message, admitted })
    }

    /// Durable fragments from WAL segment `segment`: to the sampler when there is one (which
    /// may store late spans of sampled traces at once), else straight to the head.
    fn store(&self, tenant: &str, fragments: &[spoor_model::Fragment], segment: u64) {
        match &self.sampling {
            None => self.head.insert(tenant, fragments, segment),
            Some(s) => {
                let offered = s.offer(tenant, fragments, segment);
                if !offered.forward.is_empty() {
                    self.head.insert(tenant, &offered.forward, segment);
                }
            }
        }
    }

    fn store_sampled(&self, decisions: &[spoor_process::sample::Decision]) {
        for ((tenant, segment), fragments) in Sampling::sampled_by_segment(decisions) {
            self.head.insert(&tenant, &fragments, segment);
        }
    }

    /// Decides the traces whose wait is over: sampled ones go to the head, and the decisions
    /// go to the WAL so a replay keeps the same traces.
    pub async fn sample_tick(&self) {
        let Some(s) = &self.sampling else { return };
        // Keeps the sampler's segments while decided fragments move to the head.
        let _pin = s.low_water().map(|low| self.head.pin(low));
        let decisions = s.tick();
        if !decisions.is_empty() {
            self.store_sampled(&decisions);
            let wal = self.wal.read().unwrap().clone();
            if let Some(wal) = wal {
                for record in Sampling::records(&decisions) {
                    if let Err(e) = wal.append(record).await {
                        // Only costs a re-decision of these traces after a crash.
                        tracing::warn!(error = %e, "cannot log sampling decisions");
                    }
                }
            }
        }
        s.publish(&self.metrics);
    }

    pub fn wal_stats(&self) -> Option<Arc<spoor_wal::Stats>> {
        self.wal.read().unwrap().as_ref().map(|w| w.stats().clone())
    }

    /// Stops ingest and waits until every appended record is synced.
    pub fn close(&self) {
        self.begin_shutdown();
        self.wal.write().unwrap().take();
        if let Some(thread) = self.wal_thread.lock().unwrap().take() {
            thread.join();
        }
    }

    /// Refuses new ingest (503) and turns `/ready` off; in-flight requests carry on.
    pub fn begin_shutdown(&self) {
        self.state.store(STOPPING, Ordering::SeqCst);
        self.metrics.set("spoor_ready", &[], 0.0);
    }
}

pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
