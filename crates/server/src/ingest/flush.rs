//! Behind the head: cutting live traces into generations of bounded size, writing them into
//! blocks in order (a failed upload stays first in line and is retried; its traces stay readable
//! meanwhile), and releasing the WAL segments whose every record is durable in a block (or
//! decided out by the sampler).
//!
//! Cutting and writing are separate so that a slow write never lets the next cut grow: the cut
//! loop swaps out a tenant's live traces as soon as they reach `max_block_bytes` (a pointer swap,
//! checked ten times a second), and the drain loop writes the queued cuts one after another.

use std::collections::VecDeque;
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
    /// Cut generations waiting for their block, oldest first.
    queue: Mutex<VecDeque<Arc<Frozen>>>,
    /// One writer at a time: writes are CPU-bound and ordered per tenant.
    writing: tokio::sync::Mutex<()>,
    /// Wakes the drain loop when a cut is queued.
    queued: tokio::sync::Notify,
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
            queue: Mutex::new(VecDeque::new()),
            writing: tokio::sync::Mutex::new(()),
            queued: tokio::sync::Notify::new(),
        }
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Moves the tenants' live traces (every tenant with data when `tenants` is None) into
    /// blocks, after whatever was queued before. Returns once all of it is durable, or the first
    /// error (the traces stay in memory, in the WAL and in the queue, and are retried).
    pub async fn flush(&self, tenants: Option<Vec<String>>) -> Result<(), Error> {
        self.cut(tenants.unwrap_or_else(|| self.head.tenants_with_data()));
        self.drain().await
    }

    /// Queues a cut of each tenant's live traces.
    fn cut(&self, tenants: Vec<String>) {
        let mut queue = self.queue.lock().unwrap();
        let before = queue.len();
        queue.extend(tenants.iter().filter_map(|t| self.head.cut(t)));
        if queue.len() > before {
            self.queued.notify_one();
        }
    }

    /// Cuts the tenants that are due (see [`Flusher::due`]).
    pub fn cut_due(&self) {
        let due = self.due();
        if !due.is_empty() {
            self.cut(due);
        }
    }

    /// Writes every queued cut into a block, oldest first; stops at the first failure, which
    /// stays first in line.
    pub async fn drain(&self) -> Result<(), Error> {
        let _one_at_a_time = self.writing.lock().await;
        let mut result = Ok(());
        loop {
            let Some(frozen) = self.queue.lock().unwrap().front().cloned() else { break };
            if let Err(e) = self.write(&frozen).await {
                result = Err(e);
                break;
            }
            // Only this (locked) writer pops, so the front is still `frozen`.
            self.queue.lock().unwrap().pop_front();
        }
        self.release_wal().await;
        result
    }

    /// Resolves when a cut has been queued since the last call.
    pub async fn queued(&self) {
        self.queued.notified().await
    }

    async fn write(&self, frozen: &Arc<Frozen>) -> Result<(), Error> {
        let start = Instant::now();
        let tenant = frozen.tenant.as_str();
        match self.blocks.flush(frozen.clone()).await {
            Ok(meta) => {
                self.head.release(frozen);
                let secs = start.elapsed().as_secs_f64();
                self.metrics.inc(names::FLUSHES_TOTAL, &[("tenant", tenant), ("outcome", "ok")], 1.0);
                self.metrics.inc(names::FLUSH_SECONDS_TOTAL, &[], secs);
                self.metrics.inc(names::FLUSHED_SPANS_TOTAL, &[("tenant", tenant)], meta.spans as f64);
                let bytes = (meta.data_bytes + meta.filter_bytes) as f64;
                self.metrics.inc(names::FLUSHED_BYTES_TOTAL, &[("tenant", tenant)], bytes);
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
                self.metrics.inc(names::FLUSHES_TOTAL, &[("tenant", tenant), ("outcome", "error")], 1.0);
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

    /// Tenants whose live traces should be cut now: by size, by age, or, when nothing is
    /// waiting to be written, every tenant with data once the head is past half its limit
    /// (many small tenants can fill it without any one reaching `max_block_bytes`).
    fn due(&self) -> Vec<String> {
        let idle = self.queue.lock().unwrap().is_empty();
        if idle && self.head.total_bytes() * 2 > self.max_live_bytes {
            return self.head.tenants_with_data();
        }
        self.head.due(self.config.max_block_bytes, Duration::from_secs(self.config.max_block_age_secs))
    }
}
