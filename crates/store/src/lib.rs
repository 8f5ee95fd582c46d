//! Storage: for now the head, where live traces wait per tenant, grouped by trace.
//! (Blocks on disk and object storage come next; see docs/architecture.md.)

pub mod head;

pub use head::{Head, Limits, Refusal, TenantStats};
