//! Behind the head: cutting live traces into blocks, retrying cuts whose upload failed (they
//! stay readable meanwhile), and releasing the WAL segments whose every record is durable in
//! a block (or decided out by the sampler).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spoor_store::{Blocks, Frozen, Head};

use crate::config::BlocksConfig;
use crate::error::Error;
use crate::ingest::sampling::Sampling;
use crate::ingest::wal::WalSlot;
use crate::metrics::Metrics;
use crate::metrics::names;

pub struct Flusher {
    head: Arc<Head>,
    blocks: Arc<Blocks>,
    wal: Arc<WalSlot>,
    sampling: Option<Arc<Sampling>>,
    metrics: Arc<Metrics>,
    config: BlocksConfig,
    max_live_bytes: usize,
    /// One flush at a time: flushes are CPU-bound and ordered per tenant.
    lock: tokio::sync::Mutex<()>,
    /// Cut traces whose block failed to upload; retried, and readable meanwhile.
    unflushed: Mutex<Vec<Arc<Frozen>>>,
}

impl Flusher {
    pub fn new(
        head: Arc<Head>,
        blocks: Arc<Blocks>,
        wal: Arc<WalSlot>,
        sampling: Option<Arc<Sampling>>,
        metrics: Arc<Metrics>,
        config: BlocksConfig,
        max_live_bytes: usize,
    ) -> Flusher {
        Flusher {
            head,
            blocks,
            wal,
            sampling,
            metrics,
            config,
            max_live_bytes,
            lock: tokio::sync::Mutex::new(()),
            unflushed: Mutex::new(Vec::new()),
        }
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Moves the tenants' live traces into blocks (every tenant with data when `tenants` is
    /// None), retrying earlier failed uploads first. Returns once all of it is durable, or the
    /// first error (the traces stay in memory and the WAL, and are retried).
    pub async fn flush(&self, tenants: Option<Vec<String>>) -> Result<(), Error> {
        let _one_at_a_time = self.lock.lock().await;
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
                self.metrics.inc(names::FLUSHES_TOTAL, &[("tenant", &tenant), ("outcome", "ok")], 1.0);
                self.metrics.inc(names::FLUSH_SECONDS_TOTAL, &[], secs);
                self.metrics.inc(names::FLUSHED_SPANS_TOTAL, &[("tenant", &tenant)], meta.spans as f64);
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
                self.metrics.inc(names::FLUSHES_TOTAL, &[("tenant", &tenant), ("outcome", "error")], 1.0);
                tracing::warn!(tenant, error = %e, "flush failed; the traces stay in memory and the WAL, retrying");
                Err(Error::unavailable(format!("flush failed: {e}"), 1).with_source(e))
            }
        }
    }

    /// Deletes the WAL segments whose every record is in a durable block.
    async fn release_wal(&self) {
        let Some(wal) = self.wal.get() else { return };
        let sampler_low = || self.sampling.as_ref().and_then(|s| s.low_water());
        if self.head.low_water().is_none() && sampler_low().is_none() {
            // Everything is flushed: close the active segment so it can go too.
            if let Err(e) = wal.rotate().await {
                tracing::warn!(error = %e, "cannot rotate the WAL");
                return;
            }
        }
        let low = self.head.low_water().unwrap_or(u64::MAX).min(sampler_low().unwrap_or(u64::MAX));
        match wal.release_before(low) {
            Ok(n) => self.metrics.inc(names::WAL_SEGMENTS_RELEASED_TOTAL, &[], n as f64),
            Err(e) => tracing::warn!(error = %e, "cannot release WAL segments"),
        }
    }

    /// Tenants whose live traces should become blocks now: by size, by age, or because the
    /// head as a whole is past half its memory limit.
    pub fn due(&self) -> Option<Vec<String>> {
        let pending = !self.unflushed.lock().unwrap().is_empty();
        if self.head.total_bytes() * 2 > self.max_live_bytes {
            return Some(self.head.tenants_with_data());
        }
        let due = self.head.due(self.config.max_block_bytes, Duration::from_secs(self.config.max_block_age_secs));
        (!due.is_empty() || pending).then_some(due)
    }
}
