//! Where traces live: the head (live traces in memory, per tenant), blocks in an object store
//! (local disk or S3-compatible), the blocklist every process polls, compaction and retention.

pub mod backend;
pub mod blocks;
pub mod compact;
pub mod error;
pub mod fail;
pub mod head;
pub mod lease;
pub mod rollups;
pub mod sealed;
pub mod tier;

pub use backend::{AzureConfig, BackendKind, GcsConfig, S3Config};
pub use blocks::{BlockStats, Blocks};
pub use error::Error;
pub use head::{Frozen, Head, Limits, Refusal, TenantStats};
