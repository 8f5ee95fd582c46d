//! The processors' input: one span with its resource and the time it was seen.

use spoor_model::otlp::{KeyValue, Span};

/// One span as the processors see it.
pub(crate) struct Observation<'a> {
    /// The resource's `service.name`.
    pub service: Option<&'a str>,
    pub resource: &'a [KeyValue],
    pub span: &'a Span,
    /// Wall-clock time of the observation, unix nanoseconds.
    pub now_ns: u64,
}

impl Observation<'_> {
    pub fn now_ms(&self) -> i64 {
        (self.now_ns / 1_000_000) as i64
    }
}
