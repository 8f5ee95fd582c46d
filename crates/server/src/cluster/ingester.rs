//! An ingester: reads the partitions it owns from the log into the head, from which the
//! flusher cuts blocks as on a single node. What it reads is durable in the log, so it needs no
//! WAL; it only has to know where to start again:
//! - every few seconds it writes, per partition, the offset below which every record is in a
//!   block (`.cluster/offsets/<topic>/<p>/offset.json` in the bucket); a restart reads from there;
//! - a block names the log records it holds (`meta.log`), so records between that checkpoint and
//!   a crash that already made it into a block are skipped, not written twice.
//!
//! Blocks are written in cut order per tenant and a cut takes a tenant's whole live generation,
//! so a tenant's records up to the last offset of its newest block are all in blocks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use spoor_model::{Record, decode_any};
use spoor_store::{Blocks, Head};

use crate::cluster::log::Log;
use crate::config::Config;
use crate::metrics::{Metrics, names};

pub struct Ingester {
    log: Arc<Log>,
    head: Arc<Head>,
    blocks: Arc<Blocks>,
    metrics: Arc<Metrics>,
    topic: String,
    partitions: Vec<u32>,
    /// Live bytes above which fetching pauses (the log holds the rest meanwhile).
    max_live_bytes: usize,
    /// Per partition, the next offset to read (every record below it is in the head or a block).
    next: Mutex<BTreeMap<u32, i64>>,
    /// Checkpoints last written, to write only changes.
    written: Mutex<BTreeMap<u32, i64>>,
    checkpoint_every: Duration,
}

/// Where a partition's checkpoint lives. Four path parts, so the blocklist and its cleanup,
/// which look at `<tenant>/<block>/<file>` and `<tenant>/rollups/<id>/<file>`, never see it.
fn checkpoint_path(topic: &str, p: u32) -> Path {
    Path::from(".cluster").join("offsets").join(topic).join(format!("{p}")).join("offset.json")
}

impl Ingester {
    /// `partitions`: the ones this process owns (`IngesterConfig::owned`).
    pub fn new(
        log: Arc<Log>,
        head: Arc<Head>,
        blocks: Arc<Blocks>,
        metrics: Arc<Metrics>,
        config: &Config,
        partitions: Vec<u32>,
    ) -> Ingester {
        Ingester {
            log,
            head,
            blocks,
            metrics,
            topic: config.kafka.as_ref().map(|k| k.topic.clone()).unwrap_or_default(),
            partitions,
            max_live_bytes: config.limits.max_live_bytes,
            next: Mutex::new(BTreeMap::new()),
            written: Mutex::new(BTreeMap::new()),
            checkpoint_every: Duration::from_secs(config.ingester.checkpoint_interval_secs.max(1)),
        }
    }

    pub fn partitions(&self) -> &[u32] {
        &self.partitions
    }

    /// Reads every owned partition until the process stops; call after the blocklist is read.
    pub fn spawn(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) {
        let marks = Arc::new(self.blocks.log_marks());
        for &p in &self.partitions {
            let (this, marks) = (self.clone(), marks.clone());
            tasks.spawn(async move { this.consume(p, &marks).await });
        }
        let this = self.clone();
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(this.checkpoint_every).await;
                this.checkpoint().await;
            }
        });
    }

    async fn start_offset(&self, p: u32) -> Option<i64> {
        match self.blocks.store.get(&checkpoint_path(&self.topic, p)).await {
            Ok(r) => {
                let bytes = r.bytes().await.ok()?;
                let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
                v.get("offset")?.as_i64()
            }
            Err(_) => None,
        }
    }

    async fn consume(&self, p: u32, marks: &HashMap<String, BTreeMap<u32, i64>>) {
        let label = p.to_string();
        let pc = loop {
            match self.log.partition(p).await {
                Ok(pc) => break pc,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot open the partition; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut offset = match self.start_offset(p).await {
            Some(o) => o,
            None => Log::earliest(&pc).await.unwrap_or(0),
        };
        self.next.lock().unwrap().insert(p, offset);
        self.written.lock().unwrap().insert(p, offset);
        tracing::info!(partition = p, offset, "reading the log");
        loop {
            // Back-pressure: the log keeps what the head has no room for.
            while self.head.total_bytes() > self.max_live_bytes / 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (records, high) = match pc.fetch_records(offset, 1..8_000_000, 500).await {
                Ok(r) => r,
                Err(KafkaError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. }) => {
                    let earliest = Log::earliest(&pc).await.unwrap_or(offset);
                    if earliest > offset {
                        tracing::error!(
                            partition = p,
                            from = offset,
                            to = earliest,
                            "the log's retention removed records no block holds yet; they are lost"
                        );
                        offset = earliest;
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
                Err(e) => {
                    self.metrics.inc(names::LOG_ERRORS_TOTAL, &[("operation", "fetch")], 1.0);
                    tracing::warn!(partition = p, error = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let (mut consumed, mut skipped) = (0u64, 0u64);
            for r in records {
                if r.offset < offset {
                    continue; // a compressed batch starts before the offset asked for
                }
                offset = r.offset + 1;
                let Some(value) = r.record.value else { continue };
                let Some(Record::Spans { tenant, fragments }) = decode_any(&value) else {
                    tracing::warn!(partition = p, offset = r.offset, "a log record that is not spans; skipped");
                    continue;
                };
                if marks.get(&tenant).and_then(|m| m.get(&p)).is_some_and(|last| r.offset <= *last) {
                    skipped += 1;
                    continue;
                }
                self.head.insert_logged(&tenant, &fragments, p, r.offset);
                consumed += 1;
            }
            // After the inserts: everything below `next` is in the head or a block.
            self.next.lock().unwrap().insert(p, offset);
            self.metrics.inc(names::LOG_RECORDS_CONSUMED_TOTAL, &[("partition", &label)], consumed as f64);
            if skipped > 0 {
                self.metrics.inc(names::LOG_RECORDS_SKIPPED_TOTAL, &[("partition", &label)], skipped as f64);
            }
            self.metrics.set(names::LOG_LAG_RECORDS, &[("partition", &label)], (high - offset).max(0) as f64);
        }
    }

    /// Writes, per partition, the offset below which every record is in a block: the lowest
    /// offset still in memory, else the next one to read. (`next` is read first: a record
    /// inserted after that read is above it.)
    pub async fn checkpoint(&self) {
        let next = self.next.lock().unwrap().clone();
        let low = self.head.log_low_water();
        for (p, n) in next {
            let safe = low.get(&p).map_or(n, |l| (*l).min(n));
            if self.written.lock().unwrap().get(&p) == Some(&safe) {
                continue;
            }
            let body = serde_json::json!({ "offset": safe, "written_unix_nano": spoor_model::time::now_nanos() });
            let put = self.blocks.store.put(&checkpoint_path(&self.topic, p), PutPayload::from(body.to_string())).await;
            match put {
                Ok(_) => {
                    self.written.lock().unwrap().insert(p, safe);
                    self.metrics.set(names::LOG_COMMITTED_OFFSET, &[("partition", &p.to_string())], safe as f64);
                }
                Err(e) => {
                    self.metrics.inc(names::LOG_ERRORS_TOTAL, &[("operation", "checkpoint")], 1.0);
                    tracing::warn!(partition = p, error = %e, "cannot write the offset checkpoint; will retry");
                }
            }
        }
    }
}
