//! The data path, on one screen:
//!
//! ```text
//! receiver ─► decompress ─► decode ─► validate + split by trace ─► admit (limits)
//!          ─► WAL (group-committed fsync) ─► acknowledge ─► head (live traces)
//! ```
//!
//! Everything after the WAL is rebuilt from it on start ([`Pipeline::replay`]), so the reply a
//! client gets is a promise the WAL keeps.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use spoor_model::otlp::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use spoor_model::{decode_record, encode_record, split_request};
use spoor_store::head::Admitted;
use spoor_store::{Head, Limits, Refusal};
use spoor_wal::{Wal, WriterThread};

use crate::body::{self, Compression, Format};
use crate::config::{Config, Durability};
use crate::error::Error;
use crate::metrics::Metrics;

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

pub struct Pipeline {
    pub config: Config,
    pub head: Head,
    pub metrics: Metrics,
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
}

impl Pipeline {
    pub fn new(config: Config) -> Pipeline {
        let l = &config.limits;
        let head = Head::new(Limits {
            max_live_traces: l.max_live_traces,
            max_bytes_per_trace: l.max_bytes_per_trace,
            max_bytes_per_tenant: l.max_bytes_per_tenant,
            max_bytes_total: l.max_live_bytes,
        });
        Pipeline {
            config,
            head,
            metrics: Metrics::default(),
            wal: RwLock::new(None),
            wal_thread: Mutex::new(None),
            state: AtomicU8::new(STARTING),
        }
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

    /// Rebuilds the head from the WAL, opens it for appending, and turns ready.
    pub fn replay(&self) -> Result<(), spoor_wal::Error> {
        let start = Instant::now();
        let cfg = self.wal_config();
        let mut unreadable = 0u64;
        let stats = spoor_wal::replay(&cfg.dir, |payload| match decode_record(payload) {
            Some((tenant, fragments)) => self.head.insert(&tenant, &fragments),
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
        self.state.store(READY, Ordering::SeqCst);
        self.metrics.set("spoor_ready", &[], 1.0);
        Ok(())
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
            if let Err(e) = wal.append(record).await {
                tracing::warn!(error = %e, "WAL append failed; request not acknowledged");
                let labels = [("tenant", tenant.as_str()), ("reason", "wal_error")];
                self.metrics.inc("spoor_spans_refused_total", &labels, accepted as f64);
                return Err(self.unavailable(format!("cannot make spans durable: {e}; retry later")));
            }
            self.head.insert(tenant, &prepared.admitted.fragments);
            self.metrics.inc("spoor_spans_accepted_total", &[("tenant", tenant)], accepted as f64);
        }
        Ok(prepared.response(self.config.limits.max_bytes_per_trace))
    }

    /// Decode, validate, split by trace and admit: everything before the WAL.
    fn prepare(&self, export: Export) -> Result<Prepared, Error> {
        let Export { tenant, body, compression, format, .. } = export;
        let raw = body::decompress(body, compression, self.config.ingest.max_request_bytes)?;
        let req = body::decode(&raw, format)?;
        drop(raw);
        let split = split_request(&req);
        drop(req);
        let m = &self.metrics;
        let refused = |reason: &'static str, spans: usize| {
            m.inc("spoor_spans_refused_total", &[("tenant", &tenant), ("reason", reason)], spans as f64);
        };
        m.inc(
            "spoor_spans_received_total",
            &[("tenant", &tenant)],
            (split.accepted_spans + split.rejected_spans) as f64,
        );
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
        Ok(Prepared { tenant, invalid_spans: split.rejected_spans, invalid_message: split.message, admitted })
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
