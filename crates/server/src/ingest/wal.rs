//! The WAL as the ingest side shares it: the pipeline appends to it, the flusher releases its
//! segments, the sampler logs its decisions in it. Absent until replay has rebuilt the head
//! and after close, so every user has to handle "not open" (503, or nothing to release).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use spoor_model::{Record, decode_any};
use spoor_wal::{Wal, WriterThread};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::names;

pub struct WalSlot {
    config: spoor_wal::Config,
    wal: RwLock<Option<Wal>>,
    thread: Mutex<Option<WriterThread>>,
}

impl WalSlot {
    /// `seal`: the master key when encryption at rest is on.
    pub fn new(config: &Config, seal: Option<Arc<spoor_seal::MasterKey>>) -> WalSlot {
        WalSlot {
            config: spoor_wal::Config {
                dir: config.storage.data_dir.join("wal"),
                segment_bytes: config.wal.segment_bytes,
                durability: config.wal.durability,
                seal,
            },
            wal: RwLock::new(None),
            thread: Mutex::new(None),
        }
    }

    /// The open WAL, if it is.
    pub fn get(&self) -> Option<Wal> {
        self.wal.read().unwrap().clone()
    }

    pub fn stats(&self) -> Option<Arc<spoor_wal::Stats>> {
        self.wal.read().unwrap().as_ref().map(|w| w.stats().clone())
    }

    /// Hands every record on disk to `apply` (spans, or sampling decisions), then opens the
    /// WAL for appending; records metrics about the replay.
    pub fn replay(&self, metrics: &Metrics, mut apply: impl FnMut(u64, Record)) -> Result<(), spoor_wal::Error> {
        let start = Instant::now();
        let mut unreadable = 0u64;
        let seal = self.config.seal.as_deref();
        let stats = spoor_wal::replay_sealed(&self.config.dir, seal, |segment, payload| match decode_any(payload) {
            Some(record) => apply(segment, record),
            None => unreadable += 1,
        })?;
        let secs = start.elapsed().as_secs_f64();
        metrics.set(names::WAL_REPLAY_SECONDS, &[], secs);
        metrics.set(names::WAL_REPLAY_RECORDS, &[], stats.records as f64);
        metrics.inc(names::WAL_CORRUPT_RECORDS_TOTAL, &[], (stats.corrupt_records + unreadable) as f64);
        metrics.inc(names::WAL_TRUNCATED_BYTES_TOTAL, &[], stats.truncated_bytes as f64);
        tracing::info!(
            records = stats.records,
            segments = stats.segments,
            corrupt = stats.corrupt_records + unreadable,
            truncated_bytes = stats.truncated_bytes,
            seconds = secs,
            "WAL replayed"
        );
        let (wal, thread) = Wal::open(self.config.clone())?;
        *self.wal.write().unwrap() = Some(wal);
        *self.thread.lock().unwrap() = Some(thread);
        Ok(())
    }

    /// Closes the WAL and waits until every appended record is synced.
    pub fn close(&self) {
        self.wal.write().unwrap().take();
        if let Some(thread) = self.thread.lock().unwrap().take() {
            thread.join();
        }
    }
}
