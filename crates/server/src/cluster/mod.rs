//! The scale-out: the roles of `spoor serve` on separate processes, with a Kafka-API log
//! (Apache Kafka, Redpanda, tansu) between the receivers and the ingesters instead of the WAL.
//!
//! ```text
//! distributor: receivers ─► front door ─► split by trace ─► produce to partition hash(trace) % N
//!              (acks=all) ─► acknowledge
//! ingester:    partitions p % replicas == ordinal ─► fetch ─► skip records a block already holds
//!              ─► head ─► blocks (named by their log records) ─► offset checkpoint in the bucket
//! querier:     blocks from the bucket + the ingesters' live traces (fan-out, bounded wait)
//! compactor:   compaction under a lease object written with create-if-absent
//! ```
//!
//! Acknowledged data lives in the log (replicated by the topic's replication factor) until an
//! ingester's block holds it; nothing here elects or agrees: the broker and the object store's
//! conditional writes do.

pub mod config;
pub mod ingester;
pub mod live;
pub mod log;

pub use config::{IngesterConfig, KafkaConfig, QuerierConfig, Role};

/// This machine's name (a StatefulSet pod's is `<set>-<ordinal>`): `ingester.ordinal` when
/// unset, and part of the compactor lease's holder name.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default()
}
