//! The TraceQL engine. One evaluator for live traces and blocks: both are presented as Arrow
//! record batches in the block layout (`spoor_block::schema`), live ones through
//! `spoor_block::encode_batch`.
//!
//! - [`Plan`] (plan.rs, spanset.rs, eval/): a checked query compiled for evaluation; which
//!   columns it reads, a per-span prefilter for pruning, and evaluation over whole traces.
//! - search.rs: a search over the head and the blocks of a tenant: pruning, newest traces
//!   first, deterministic limits, merging fragments of a trace found in several places.
//! - metrics.rs, metrics/: TraceQL metrics queries (`| rate() by (...)`) over the same scan, as
//!   partial aggregates per block that merge.
//! - graph.rs: service dependencies (parent service → child service calls) over a window.
//!
//! Modules import each other one way only (tags, metrics, graph → search → plan → spanset → eval),
//! never this file, which only declares them and re-exports the public API.

mod error;
mod eval;
pub mod graph;
pub mod hit;
pub mod metrics;
mod plan;
pub mod search;
mod spanset;
pub mod tags;

pub use error::{Error, Result};
pub use hit::{SpanHit, SpansetHit, TraceHit, Value};
pub use plan::Plan;
