//! The front door every receiving process shares (`spoor serve` before its WAL, `spoor agent`
//! before its queue): memory admission → decompress → decode → tenant rate → scrub. Each step
//! refuses as early and as cheaply as it can; what passes is a decoded, scrubbed request.

use std::sync::Arc;
use std::time::Instant;

use spoor_model::otlp::ExportTraceServiceRequest;
use spoor_process::Counts;

use crate::config::Config;
use crate::error::{Error, StartupError};
use crate::ingest::body::{self, Format};
use crate::ingest::limits::{Admission, InFlight};
use crate::ingest::processors::Scrubbing;
use crate::ingest::receive::Export;
use crate::metrics::Metrics;
use crate::metrics::names;

pub struct FrontDoor {
    /// Memory limiter and per-tenant rates.
    pub admission: Admission,
    /// Attribute actions, redaction and the default policy.
    scrubbing: Scrubbing,
    max_request_bytes: usize,
    metrics: Arc<Metrics>,
}

/// A request through the front door.
pub struct Opened<'a> {
    pub tenant: String,
    pub request: ExportTraceServiceRequest,
    /// The decompressed body, when asked for and the request is protobuf: a caller that
    /// finds nothing changed can pass it on without encoding the request again.
    pub raw: Option<Vec<u8>>,
    /// What scrubbing changed.
    pub scrubbed: Counts,
    /// The request's share of the memory estimate, held until this is dropped.
    _in_flight: Option<InFlight<'a>>,
}

impl FrontDoor {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<FrontDoor, StartupError> {
        Ok(FrontDoor {
            admission: Admission::new(&config.limits, &config.memory_limiter())?,
            scrubbing: Scrubbing::new(&config.processors)?,
            max_request_bytes: config.ingest.max_request_bytes,
            metrics,
        })
    }

    /// Before the body is read: a refusal here costs no memory.
    pub fn admit_early(&self, tenant: &str) -> Result<(), Error> {
        self.admission.early(tenant, &self.metrics)
    }

    /// Runs a request through every step; `keep_raw` keeps the decompressed protobuf body.
    pub fn open(&self, export: Export, keep_raw: bool) -> Result<Opened<'_>, Error> {
        let Export { tenant, body, compression, format, metadata, .. } = export;
        let m = &self.metrics;
        // Refused before decoding: an overloaded process must not spend memory to say no.
        let in_flight = self.admission.request(&tenant, body.len(), m)?;
        let raw = body::decompress(body, compression, self.max_request_bytes)?;
        let raw_bytes = raw.len() as u64;
        let mut request = body::decode(&raw, format)?;
        let raw = (keep_raw && format == Format::Protobuf).then_some(raw);
        let spans: usize = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        m.inc(names::SPANS_RECEIVED_TOTAL, &[("tenant", &tenant)], spans as f64);
        // Before any per-span work: a tenant over its rate costs a decode, nothing more.
        self.admission.rate.admit(&tenant, spans as u64, raw_bytes, Instant::now()).inspect_err(|_| {
            m.inc(names::SPANS_REFUSED_TOTAL, &[("tenant", &tenant), ("reason", "rate_limited")], spans as f64);
        })?;
        // Scrubbed before anything touches disk.
        let ctx = spoor_process::attributes::Context { metadata: &metadata, client_address: None };
        let scrubbed = self.scrubbing.apply(&mut request, &ctx, &tenant, m);
        Ok(Opened { tenant, request, raw, scrubbed, _in_flight: in_flight })
    }
}
