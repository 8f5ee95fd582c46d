//! Collector-grade processing, with no network stack so it can be tested and benchmarked
//! alone. Everything here works on decoded OTLP messages ([`spoor_model::otlp`]) or on the
//! per-trace fragments the WAL stores.
//!
//! - [`attributes`]: the collector's `attributes` processor (insert, update, upsert, delete,
//!   hash, extract, convert; include/exclude rules).
//! - [`redact`]: the collector's `redaction` processor.
//! - [`scrub`]: Spoor's default policy (on unless turned off): secret headers and keys dropped,
//!   card numbers and e-mail addresses masked, SQL literals replaced.
//! - [`sample`]: tail sampling with every collector policy type.
//! - [`duration`]: Go-style durations (`30s`, `200ms`, `1m30s`), re-exported from the model.

pub mod attributes;
pub use spoor_model::duration;
pub mod error;
pub mod redact;
pub mod sample;
pub mod scrub;

pub use error::Error;

/// What a scrubbing stage did to one request, for the per-stage metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Attributes removed (delete actions, secret keys, keys not allowed).
    pub deleted: u64,
    /// Values whose matching part was masked or hashed by a redaction rule.
    pub masked: u64,
    /// Values replaced by their SHA-256 (the `hash` action).
    pub hashed: u64,
    /// Attributes inserted, updated, extracted or converted.
    pub set: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.deleted += o.deleted;
        self.masked += o.masked;
        self.hashed += o.hashed;
        self.set += o.set;
    }
}
