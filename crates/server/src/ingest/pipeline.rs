//! The data path, on one screen:
//!
//! ```text
//! receiver ─► front door: memory limiter ─► decompress ─► decode ─► tenant rate limit ─► scrub
//!          ─► validate + split by trace (copying the body's bytes when scrubbing changed
//!          nothing) ─► head limits ─► DORA events (synced to their store, before sampling)
//!          ─► metrics generator (every span, before sampling) ─► WAL
//!          (group-committed fsync) ─► acknowledge ─► tail sampler (decisions also to the WAL)
//!          ─► head (live traces) ─► [flusher] cut by size/age ─► block (Parquet) in the
//!          backend ─► WAL segments released
//! ```
//!
//! Everything after the WAL is rebuilt from it on start ([`Pipeline::replay`]), so the reply a
//! client gets is a promise the WAL keeps until the block holding it is durable (or its trace
//! is sampled out).

use std::sync::Arc;

use spoor_model::otlp::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use spoor_model::{Record, encode_record, split_encoded, split_request};
use spoor_store::head::Admitted;
use spoor_store::{Head, Refusal};

use crate::config::Config;
use crate::dora::store::Store as DoraStore;
use crate::error::{Error, StartupError};
use crate::generated::Generated;
use crate::http::Readiness;
use crate::ingest::front::FrontDoor;
use crate::ingest::pace::Pacer;
use crate::ingest::receive::{self, Export, Ingest};
use crate::ingest::sampling::Sampling;
use crate::ingest::wal::WalSlot;
use crate::metrics::Metrics;
use crate::metrics::names;

/// The ingest path of `spoor serve`: from a receiver's request to an acknowledged, durable,
/// live trace.
pub struct Pipeline {
    front: Arc<FrontDoor>,
    /// Back-pressure from the flush backlog, before a body is read.
    pacer: Pacer,
    head: Arc<Head>,
    wal: Arc<WalSlot>,
    /// Tail sampling: after the WAL.
    sampling: Option<Arc<Sampling>>,
    /// Span metrics and service graphs, from every admitted span (None when turned off).
    generated: Option<Arc<Generated>>,
    /// Deployments and incidents, durable before the WAL (None when `dora.enabled` is off).
    dora: Option<Arc<DoraStore>>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    multitenancy: bool,
    max_request_bytes: usize,
    max_bytes_per_trace: usize,
    /// `ingest.max_span_age_hours` in ns; 0: any age.
    max_span_age_ns: u64,
    retry_after_secs: u64,
    /// The scale-out's Kafka-API log, which takes the WAL's place (set once connected): an
    /// acknowledged request is in the log, and the ingesters owning its partitions hold it.
    log: std::sync::OnceLock<Arc<crate::cluster::log::Log>>,
    uses_log: bool,
}

/// A request ready for the WAL.
struct Prepared {
    tenant: String,
    /// Spans older than `ingest.max_span_age_hours`.
    too_old_spans: usize,
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
        if self.too_old_spans > 0 {
            messages.push(format!("{} spans rejected: older than ingest.max_span_age_hours", self.too_old_spans));
        }
        let a = &self.admitted;
        if a.too_large_spans > 0 {
            messages.push(format!(
                "{} spans rejected: {} traces would exceed max_bytes_per_trace ({max_bytes_per_trace} bytes)",
                a.too_large_spans, a.too_large_traces
            ));
        }
        let rejected = self.too_old_spans + self.invalid_spans + a.too_large_spans;
        let mut error_message = messages.join("; ");
        error_message.truncate(error_message.floor_char_boundary(1024));
        ExportTraceServiceResponse {
            partial_success: (rejected > 0 || !error_message.is_empty())
                .then_some(ExportTracePartialSuccess { rejected_spans: rejected as i64, error_message }),
        }
    }
}

impl Ingest for Pipeline {
    fn multitenancy_enabled(&self) -> bool {
        self.multitenancy
    }

    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// Everything that can refuse a request without its body, cheapest first: a refusal here
    /// costs microseconds, where one after the decode costs the decode.
    fn admit_early(&self, tenant: &str) -> Result<(), Error> {
        if !self.ready.is_ready() {
            return Err(self.unavailable(format!("not ready: {}; retry shortly", self.ready.reason())));
        }
        if let Some(s) = &self.sampling
            && !s.has_room()
        {
            return Err(self.unavailable(
                "sampler_full: tail sampling holds num_traces (or max_bytes) undecided traces; retry later".into(),
            ));
        }
        self.front.admit_early(tenant)?;
        self.pacer.admit().inspect_err(|_| {
            let labels = [("tenant", tenant), ("reason", Refusal::TotalBytesExceeded.reason())];
            self.metrics.inc(names::REQUESTS_REFUSED_TOTAL, &labels, 1.0);
        })
    }

    async fn ingest(self: Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        Pipeline::ingest(&self, export).await
    }
}

impl Pipeline {
    /// The ingest path over `head` and `wal`; `generated` counts every admitted span, `dora`
    /// keeps their DORA events.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        head: Arc<Head>,
        wal: Arc<WalSlot>,
        sampling: Option<Arc<Sampling>>,
        generated: Option<Arc<Generated>>,
        dora: Option<Arc<DoraStore>>,
        metrics: Arc<Metrics>,
        ready: Arc<Readiness>,
    ) -> Result<Pipeline, StartupError> {
        let front = Arc::new(FrontDoor::new(config, metrics.clone())?);
        if let Some(g) = &generated {
            g.generator.set_series_limits(front.admission.rate.series_limits());
        }
        Ok(Pipeline {
            front,
            pacer: Pacer::new(head.clone(), config.limits.max_live_bytes, config.limits.retry_after_secs),
            head,
            wal,
            sampling,
            generated,
            dora,
            metrics,
            ready,
            multitenancy: config.tenancy.multitenancy_enabled,
            max_request_bytes: config.ingest.max_request_bytes,
            max_bytes_per_trace: config.limits.max_bytes_per_trace,
            max_span_age_ns: config.ingest.max_span_age_hours.saturating_mul(3_600_000_000_000),
            retry_after_secs: config.limits.retry_after_secs,
            log: std::sync::OnceLock::new(),
            uses_log: config.kafka.is_some(),
        })
    }

    /// Appends to `log` from now on, instead of the WAL.
    pub fn set_log(&self, log: Arc<crate::cluster::log::Log>) {
        let _ = self.log.set(log);
    }

    /// Its front door, for the loops that watch and reload the limits.
    pub fn front(&self) -> &Arc<FrontDoor> {
        &self.front
    }

    /// Whether tail sampling runs (and needs its clock ticked).
    pub fn samples(&self) -> bool {
        self.sampling.is_some()
    }

    /// Rebuilds the head from the WAL and opens it for appending.
    pub fn replay(&self) -> Result<(), spoor_wal::Error> {
        self.wal.replay(&self.metrics, |segment, record| match record {
            Record::Spans { tenant, fragments } => self.store(&tenant, &fragments, segment),
            Record::Decisions { tenant, decisions } => {
                // With sampling turned off since, everything in the WAL was already stored.
                if let Some(s) = &self.sampling {
                    self.store_sampled(&s.apply(&tenant, &decisions));
                }
            }
        })
    }

    fn unavailable(&self, message: String) -> Error {
        Error::unavailable(message, 1)
    }

    /// The ingest path. Returns the OTLP response to send, or the error that refuses it.
    pub async fn ingest(self: &Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        let transport = export.transport;
        let result = self.ingest_inner(export).await;
        receive::count_request(&self.metrics, transport, &result);
        result
    }

    /// After [`Ingest::admit_early`] let the request in and its body was read.
    async fn ingest_inner(self: &Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        // Where acknowledged spans are kept: the WAL, or (a distributor of the scale-out) the
        // Kafka-API log, which the ingesters owning its partitions read into their heads.
        let log = match self.uses_log {
            true => Some(
                self.log
                    .get()
                    .cloned()
                    .ok_or_else(|| self.unavailable("not connected to the Kafka-API log yet".into()))?,
            ),
            false => None,
        };
        let wal = match &log {
            Some(_) => None,
            None => Some(self.wal.get().ok_or_else(|| self.unavailable("shutting down".into()))?),
        };
        // CPU work (inflate, decode, re-encode per trace) runs off the async threads.
        let this = self.clone();
        let prepared = tokio::task::spawn_blocking(move || this.prepare(export))
            .await
            .map_err(|e| Error::internal(format!("ingest task failed: {e}")))??;
        let tenant = &prepared.tenant;
        let accepted: usize = prepared.admitted.fragments.iter().map(|f| f.spans as usize).sum();
        if accepted > 0 {
            let refused = |reason: &'static str| {
                let labels = [("tenant", tenant.as_str()), ("reason", reason)];
                self.metrics.inc(names::SPANS_REFUSED_TOTAL, &labels, accepted as f64);
            };
            if let Some(log) = &log {
                log.append(tenant, &prepared.admitted.fragments).await.inspect_err(|e| {
                    tracing::warn!(error = %e, "log append failed; request not acknowledged");
                    refused("log_error");
                })?;
            } else if let Some(wal) = &wal {
                let record = encode_record(tenant, &prepared.admitted.fragments);
                // Keeps the segment from release between the append and the insert.
                let _pin = self.head.pin(wal.active_segment());
                let segment = match wal.append(record).await {
                    Ok(segment) => segment,
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL append failed; request not acknowledged");
                        refused("wal_error");
                        return Err(self
                            .unavailable(format!("cannot make spans durable: {e}; retry later"))
                            .with_source(e));
                    }
                };
                self.store(tenant, &prepared.admitted.fragments, segment);
            }
            self.metrics.inc(names::SPANS_ACCEPTED_TOTAL, &[("tenant", tenant)], accepted as f64);
        }
        Ok(prepared.response(self.max_bytes_per_trace))
    }

    /// Through the front door, then validate, split by trace and admit: everything before the WAL.
    fn prepare(&self, export: Export) -> Result<Prepared, Error> {
        let mut opened = self.front.open(export, true)?;
        let owned = std::mem::take(&mut opened.tenant);
        let tenant = owned.as_str();
        let refused = |reason: &'static str, spans: usize| {
            self.metrics.inc(names::SPANS_REFUSED_TOTAL, &[("tenant", tenant), ("reason", reason)], spans as f64);
        };
        let too_old_spans = drop_older_than(&mut opened.request, self.max_span_age_ns);
        if too_old_spans > 0 {
            refused("too_old", too_old_spans);
            opened.raw = None; // the bytes still hold what was dropped
        }
        // A request scrubbing left alone is cut from its own bytes: encoding every span again
        // cost more than the copy.
        let split = match &opened.raw {
            Some(raw) if opened.scrubbed == spoor_process::Counts::default() => {
                split_encoded(raw).unwrap_or_else(|| split_request(&opened.request))
            }
            _ => split_request(&opened.request),
        };
        if split.rejected_spans > 0 {
            refused("invalid", split.rejected_spans);
        }
        let admitted = self.head.admit(tenant, split.fragments).map_err(|refusal| {
            refused(refusal.reason(), split.accepted_spans);
            match refusal {
                Refusal::TotalBytesExceeded => Error::unavailable(
                    format!("{}: the server's live traces are at limits.max_live_bytes; retry later", refusal.reason()),
                    self.retry_after_secs,
                ),
                _ => Error::rate_limited(
                    format!("{}: tenant {tenant} is over its live-trace limits; retry later", refusal.reason()),
                    self.retry_after_secs,
                ),
            }
        })?;
        if admitted.too_large_spans > 0 {
            refused("trace_too_large", admitted.too_large_spans);
        }
        let now = spoor_model::time::now_nanos();
        // Durable before the WAL, and idempotent, so no replay has to find them again: a
        // request whose events cannot be stored is refused and retried. (Before the generator,
        // so a refused request's spans are not counted twice when the client retries.)
        if let Some(d) = &self.dora {
            let events = spoor_generate::dora::extract::extract(&opened.request);
            if !events.is_empty() {
                d.record(tenant, events, now).inspect_err(|_| refused("dora_error", split.accepted_spans))?;
            }
        }
        // Counted once admitted, from the spans already decoded: metrics see every span,
        // whatever tail sampling keeps. (Not on replay: those spans were counted before.)
        if let Some(g) = &self.generated {
            g.generator.observe(tenant, &opened.request, now);
        }
        Ok(Prepared {
            tenant: owned,
            too_old_spans,
            invalid_spans: split.rejected_spans,
            invalid_message: split.message,
            admitted,
        })
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
            if let Some(wal) = self.wal.get() {
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

    /// Stops ingest and waits until every appended record is synced.
    pub fn close(&self) {
        self.ready.set_stopping();
        self.wal.close();
    }
}

/// Drops the spans that ended more than `max_age_ns` ago (0: none); returns how many.
fn drop_older_than(request: &mut spoor_model::otlp::ExportTraceServiceRequest, max_age_ns: u64) -> usize {
    if max_age_ns == 0 {
        return 0;
    }
    let cutoff = spoor_model::time::now_nanos().saturating_sub(max_age_ns);
    let mut dropped = 0;
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            let before = ss.spans.len();
            ss.spans.retain(|s| s.end_time_unix_nano.max(s.start_time_unix_nano) >= cutoff);
            dropped += before - ss.spans.len();
        }
    }
    dropped
}
