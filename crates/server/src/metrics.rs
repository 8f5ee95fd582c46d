//! Spoor's own metrics, rendered in the Prometheus text format on `/metrics`.
//!
//! Counters are keyed by (name, labels) in one mutex-guarded map: a handful of increments per
//! request, not per span, so contention is negligible and there is no dependency to carry.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), f64>>,
    gauges: Mutex<BTreeMap<(&'static str, Labels), f64>>,
}

/// Every series name Spoor publishes, one constant each: code names a series only through
/// these, and each has a row in the HELP table (a unit test holds the two together).
pub mod names {
    pub const REQUESTS_TOTAL: &str = "spoor_requests_total";
    pub const AUTH_REFUSED_TOTAL: &str = "spoor_auth_refused_requests_total";
    pub const SPANS_RECEIVED_TOTAL: &str = "spoor_spans_received_total";
    pub const SPANS_ACCEPTED_TOTAL: &str = "spoor_spans_accepted_total";
    pub const SPANS_REFUSED_TOTAL: &str = "spoor_spans_refused_total";
    pub const LOG_RECORDS_CONSUMED_TOTAL: &str = "spoor_log_records_consumed_total";
    pub const LOG_RECORDS_SKIPPED_TOTAL: &str = "spoor_log_records_skipped_total";
    pub const LOG_LAG_RECORDS: &str = "spoor_log_lag_records";
    pub const LOG_COMMITTED_OFFSET: &str = "spoor_log_committed_offset";
    pub const LOG_ERRORS_TOTAL: &str = "spoor_log_errors_total";
    pub const QUERIER_INGESTER_ERRORS_TOTAL: &str = "spoor_querier_ingester_errors_total";
    pub const WAL_RECORDS_TOTAL: &str = "spoor_wal_records_total";
    pub const WAL_BYTES_TOTAL: &str = "spoor_wal_bytes_total";
    pub const WAL_FSYNCS_TOTAL: &str = "spoor_wal_fsyncs_total";
    pub const WAL_WRITE_ERRORS_TOTAL: &str = "spoor_wal_write_errors_total";
    pub const WAL_SEGMENTS_CREATED_TOTAL: &str = "spoor_wal_segments_created_total";
    pub const WAL_FSYNC_DURATION_SECONDS: &str = "spoor_wal_fsync_duration_seconds";
    pub const WAL_REPLAY_SECONDS: &str = "spoor_wal_replay_seconds";
    pub const WAL_REPLAY_RECORDS: &str = "spoor_wal_replay_records";
    pub const WAL_CORRUPT_RECORDS_TOTAL: &str = "spoor_wal_corrupt_records_total";
    pub const WAL_TRUNCATED_BYTES_TOTAL: &str = "spoor_wal_truncated_bytes_total";
    pub const LIVE_TRACES: &str = "spoor_live_traces";
    pub const LIVE_BYTES: &str = "spoor_live_bytes";
    pub const LIVE_SPANS: &str = "spoor_live_spans";
    pub const FLUSHING_BYTES: &str = "spoor_flushing_bytes";
    pub const FLUSHES_TOTAL: &str = "spoor_flushes_total";
    pub const FLUSH_SECONDS_TOTAL: &str = "spoor_flush_seconds_total";
    pub const FLUSHED_SPANS_TOTAL: &str = "spoor_flushed_spans_total";
    pub const FLUSHED_BYTES_TOTAL: &str = "spoor_flushed_bytes_total";
    pub const BLOCK_BUILD_CPU_SECONDS_TOTAL: &str = "spoor_block_build_cpu_seconds_total";
    pub const WAL_SEGMENTS_RELEASED_TOTAL: &str = "spoor_wal_segments_released_total";
    pub const BLOCKS: &str = "spoor_blocks";
    pub const BLOCK_BYTES: &str = "spoor_block_bytes";
    pub const BLOCK_SPANS: &str = "spoor_block_spans";
    pub const BLOCKLIST_POLLS_TOTAL: &str = "spoor_blocklist_polls_total";
    pub const BLOCK_CACHE_BYTES: &str = "spoor_block_cache_bytes";
    pub const COMPACTIONS_TOTAL: &str = "spoor_compactions_total";
    pub const COMPACTED_INPUT_BLOCKS_TOTAL: &str = "spoor_compacted_input_blocks_total";
    pub const COMPACTION_DUPLICATE_SPANS_TOTAL: &str = "spoor_compaction_duplicate_spans_total";
    pub const COMPACTION_WRITTEN_BYTES_TOTAL: &str = "spoor_compaction_written_bytes_total";
    pub const COMPACTION_WRITTEN_SPANS_TOTAL: &str = "spoor_compaction_written_spans_total";
    pub const BLOCKS_DELETED_TOTAL: &str = "spoor_blocks_deleted_total";
    pub const RETENTION_DELETED_BYTES_TOTAL: &str = "spoor_retention_deleted_bytes_total";
    pub const TIER_BYTES: &str = "spoor_tier_bytes";
    pub const TIER_SPANS: &str = "spoor_tier_spans";
    pub const TIER_REWRITES_TOTAL: &str = "spoor_tier_rewrites_total";
    pub const TIER_TRACES_KEPT_TOTAL: &str = "spoor_tier_traces_kept_total";
    pub const TIER_TRACES_DROPPED_TOTAL: &str = "spoor_tier_traces_dropped_total";
    pub const TIER_SPANS_DROPPED_TOTAL: &str = "spoor_tier_spans_dropped_total";
    pub const ROLLUP_ROWS: &str = "spoor_tier_rollup_rows";
    pub const ROLLUP_BYTES: &str = "spoor_tier_rollup_bytes";
    pub const ROLLUP_ROWS_WRITTEN_TOTAL: &str = "spoor_tier_rollup_rows_written_total";
    pub const ROLLUPS_DELETED_TOTAL: &str = "spoor_tier_rollups_deleted_total";
    pub const QUERIES_TOTAL: &str = "spoor_queries_total";
    pub const QUERY_SECONDS_TOTAL: &str = "spoor_query_seconds_total";
    pub const SEARCH_INSPECTED_SPANS_TOTAL: &str = "spoor_search_inspected_spans_total";
    pub const SEARCH_INSPECTED_BYTES_TOTAL: &str = "spoor_search_inspected_bytes_total";
    pub const READY: &str = "spoor_ready";
    pub const GENERATOR_SPANS_TOTAL: &str = "spoor_generator_spans_total";
    pub const GENERATOR_SPANS_DISCARDED_TOTAL: &str = "spoor_generator_spans_discarded_total";
    pub const GENERATOR_ACTIVE_SERIES: &str = "spoor_generator_active_series";
    pub const GENERATOR_SERIES_LIMITED_TOTAL: &str = "spoor_generator_series_limited_total";
    pub const REMOTE_WRITE_REQUESTS_TOTAL: &str = "spoor_remote_write_requests_total";
    pub const REMOTE_WRITE_SAMPLES_TOTAL: &str = "spoor_remote_write_samples_total";
    pub const REMOTE_WRITE_SAMPLES_FAILED_TOTAL: &str = "spoor_remote_write_samples_failed_total";
    pub const REMOTE_WRITE_BYTES_TOTAL: &str = "spoor_remote_write_bytes_total";
    pub const REMOTE_WRITE_SECONDS_TOTAL: &str = "spoor_remote_write_seconds_total";
    pub const GENERATOR_LABEL_VALUES_LIMITED_TOTAL: &str = "spoor_generator_label_values_limited_total";
    pub const GENERATOR_PENDING_EDGES: &str = "spoor_generator_pending_edges";
    pub const GENERATOR_EXPIRED_EDGES_TOTAL: &str = "spoor_generator_expired_edges_total";
    pub const GENERATOR_DROPPED_SPANS_TOTAL: &str = "spoor_generator_dropped_spans_total";
    pub const REQUESTS_REFUSED_TOTAL: &str = "spoor_requests_refused_total";
    pub const MEMORY_RESIDENT_BYTES: &str = "spoor_memory_resident_bytes";
    pub const OVERRIDES_RELOADS_TOTAL: &str = "spoor_overrides_reloads_total";
    pub const PROCESSED_ATTRIBUTES_TOTAL: &str = "spoor_processed_attributes_total";
    pub const SAMPLING_TRACES_TOTAL: &str = "spoor_sampling_traces_total";
    pub const SAMPLING_SPANS_TOTAL: &str = "spoor_sampling_spans_total";
    pub const SAMPLING_NEW_TRACES_TOTAL: &str = "spoor_sampling_new_traces_total";
    pub const SAMPLING_EVICTED_TRACES_TOTAL: &str = "spoor_sampling_evicted_traces_total";
    pub const SAMPLING_DROPPED_TOO_EARLY_TOTAL: &str = "spoor_sampling_dropped_too_early_total";
    pub const SAMPLING_LATE_SPANS_TOTAL: &str = "spoor_sampling_late_spans_total";
    pub const SAMPLING_POLICY_ERRORS_TOTAL: &str = "spoor_sampling_policy_errors_total";
    pub const SAMPLING_TRACES_IN_MEMORY: &str = "spoor_sampling_traces_in_memory";
    pub const SAMPLING_BYTES_IN_MEMORY: &str = "spoor_sampling_bytes_in_memory";
    pub const AGENT_QUEUE_ITEMS: &str = "spoor_agent_queue_items";
    pub const AGENT_QUEUE_BYTES: &str = "spoor_agent_queue_bytes";
    pub const AGENT_QUEUE_DISK_BYTES: &str = "spoor_agent_queue_disk_bytes";
    pub const AGENT_QUEUE_IN_FLIGHT: &str = "spoor_agent_queue_in_flight";
    pub const AGENT_QUEUE_OLDEST_AGE_SECONDS: &str = "spoor_agent_queue_oldest_age_seconds";
    pub const AGENT_QUEUE_CORRUPT_ITEMS_TOTAL: &str = "spoor_agent_queue_corrupt_items_total";
    pub const AGENT_QUEUE_FULL_TOTAL: &str = "spoor_agent_queue_full_total";
    pub const AGENT_FORWARDED_SPANS_TOTAL: &str = "spoor_agent_forwarded_spans_total";
    pub const AGENT_REROUTED_SPANS_TOTAL: &str = "spoor_agent_rerouted_spans_total";
    pub const AGENT_DROPPED_SPANS_TOTAL: &str = "spoor_agent_dropped_spans_total";
    pub const AGENT_EXPORT_ATTEMPTS_TOTAL: &str = "spoor_agent_export_attempts_total";
    pub const AGENT_EXPORT_RETRIES_TOTAL: &str = "spoor_agent_export_retries_total";
    pub const AGENT_EXPORT_TIMEOUTS_TOTAL: &str = "spoor_agent_export_timeouts_total";
    pub const AGENT_EXPORT_DELIVERED_TOTAL: &str = "spoor_agent_export_delivered_total";
    pub const AGENT_EXPORT_FAILED_TOTAL: &str = "spoor_agent_export_failed_total";
    pub const AGENT_EXPORT_LATENCY_SECONDS: &str = "spoor_agent_export_latency_seconds";
    pub const AGENT_RESOLUTIONS_TOTAL: &str = "spoor_agent_resolutions_total";
    pub const AGENT_BACKEND_UPDATES_TOTAL: &str = "spoor_agent_backend_updates_total";
    pub const AGENT_BACKENDS: &str = "spoor_agent_backends";
    pub const DORA_EVENTS: &str = "spoor_dora_events";
    pub const DORA_EVENTS_REFUSED_TOTAL: &str = "spoor_dora_events_refused_total";
}

const HELP: &[(&str, &str, &str)] = &[
    (
        names::REQUESTS_TOTAL,
        "counter",
        "Export requests received, by transport (grpc, http, zipkin, jaeger_grpc, jaeger_thrift) and outcome code.",
    ),
    (
        names::AUTH_REFUSED_TOTAL,
        "counter",
        "Requests refused by auth before any handler ran, by listener and code (unauthenticated, forbidden, bad_request).",
    ),
    (names::SPANS_RECEIVED_TOTAL, "counter", "Spans decoded from export requests, by tenant."),
    (
        names::LOG_RECORDS_CONSUMED_TOTAL,
        "counter",
        "Kafka-API log records an ingester put into its head, by partition.",
    ),
    (
        names::LOG_RECORDS_SKIPPED_TOTAL,
        "counter",
        "Log records an ingester skipped at start-up because a block already holds them, by partition.",
    ),
    (
        names::LOG_LAG_RECORDS,
        "gauge",
        "Records of a partition not yet read by its ingester (high watermark minus next offset).",
    ),
    (
        names::LOG_COMMITTED_OFFSET,
        "gauge",
        "Per partition, the offset below which every record is in a block (the checkpoint in the bucket).",
    ),
    (names::LOG_ERRORS_TOTAL, "counter", "Failed fetches and checkpoint writes of an ingester, by operation."),
    (
        names::QUERIER_INGESTER_ERRORS_TOTAL,
        "counter",
        "Ingesters a querier could not read live traces from in time (the answer was partial), by ingester.",
    ),
    (names::SPANS_ACCEPTED_TOTAL, "counter", "Spans acknowledged after the WAL made them durable, by tenant."),
    (
        names::SPANS_REFUSED_TOTAL,
        "counter",
        "Spans refused, by tenant and reason; every refusal is reported to the client.",
    ),
    (names::WAL_RECORDS_TOTAL, "counter", "Records appended to the WAL."),
    (names::WAL_BYTES_TOTAL, "counter", "Bytes appended to the WAL, framing included."),
    (names::WAL_FSYNCS_TOTAL, "counter", "fdatasync calls; each covers every record queued meanwhile (group commit)."),
    (
        names::WAL_WRITE_ERRORS_TOTAL,
        "counter",
        "Failed WAL writes or syncs; the affected requests were not acknowledged.",
    ),
    (names::WAL_SEGMENTS_CREATED_TOTAL, "counter", "WAL segment files created since start."),
    (names::WAL_FSYNC_DURATION_SECONDS, "histogram", "Latency of WAL fdatasync calls."),
    (names::WAL_REPLAY_SECONDS, "gauge", "Time the last start-up WAL replay took."),
    (names::WAL_REPLAY_RECORDS, "gauge", "Records applied by the last start-up replay."),
    (names::WAL_CORRUPT_RECORDS_TOTAL, "counter", "Corrupt WAL records skipped during replay."),
    (names::WAL_TRUNCATED_BYTES_TOTAL, "counter", "Bytes of torn WAL tails truncated during replay."),
    (names::LIVE_TRACES, "gauge", "Live traces held in memory, by tenant."),
    (names::LIVE_BYTES, "gauge", "Encoded bytes of live traces, by tenant."),
    (names::LIVE_SPANS, "gauge", "Spans held in live traces, by tenant."),
    (names::FLUSHING_BYTES, "gauge", "Encoded bytes of live traces cut into blocks not yet durable, by tenant."),
    (names::FLUSHES_TOTAL, "counter", "Blocks flushed from live traces, by tenant and outcome."),
    (names::FLUSH_SECONDS_TOTAL, "counter", "Time spent writing and uploading flushed blocks."),
    (names::FLUSHED_SPANS_TOTAL, "counter", "Spans written into blocks by flushes, by tenant."),
    (names::FLUSHED_BYTES_TOTAL, "counter", "Block bytes (data and filter) written by flushes, by tenant."),
    (
        names::BLOCK_BUILD_CPU_SECONDS_TOTAL,
        "counter",
        "CPU time of the threads building blocks, by stage (flush, compaction).",
    ),
    (names::WAL_SEGMENTS_RELEASED_TOTAL, "counter", "WAL segments deleted because their spans are in durable blocks."),
    (names::BLOCKS, "gauge", "Visible blocks in the backend, by tenant."),
    (names::BLOCK_BYTES, "gauge", "Bytes of visible blocks (data and filter), by tenant."),
    (names::BLOCK_SPANS, "gauge", "Spans in visible blocks, by tenant."),
    (names::BLOCKLIST_POLLS_TOTAL, "counter", "Blocklist reads from the backend, by outcome."),
    (names::BLOCK_CACHE_BYTES, "gauge", "Memory held by cached block footers and page indexes."),
    (names::COMPACTIONS_TOTAL, "counter", "Compactions, by tenant and outcome."),
    (names::COMPACTED_INPUT_BLOCKS_TOTAL, "counter", "Blocks merged away by compaction, by tenant."),
    (names::COMPACTION_DUPLICATE_SPANS_TOTAL, "counter", "Duplicate spans dropped by compaction, by tenant."),
    (
        names::COMPACTION_WRITTEN_BYTES_TOTAL,
        "counter",
        "Block bytes written by compaction, by tenant; over spoor_flushed_bytes_total: the write amplification.",
    ),
    (names::COMPACTION_WRITTEN_SPANS_TOTAL, "counter", "Spans re-encoded into compacted blocks, by tenant."),
    (names::BLOCKS_DELETED_TOTAL, "counter", "Blocks deleted, by tenant and reason (compacted, retention, cleanup)."),
    (names::RETENTION_DELETED_BYTES_TOTAL, "counter", "Bytes of blocks deleted by retention, by tenant."),
    (names::TIER_BYTES, "gauge", "Bytes of visible blocks (data and filter), by tenant and tier (full, sampled)."),
    (names::TIER_SPANS, "gauge", "Spans in visible blocks, by tenant and tier."),
    (names::TIER_REWRITES_TOTAL, "counter", "Full-to-sampled block rewrites, by tenant and outcome."),
    (
        names::TIER_TRACES_KEPT_TOTAL,
        "counter",
        "Traces kept by the full-to-sampled rewrite, by tenant and reason (exemplar, error, slow, ratio).",
    ),
    (
        names::TIER_TRACES_DROPPED_TOTAL,
        "counter",
        "Traces dropped by tiered retention, by tenant and reason (sampled_out: not kept by the sampled \
         tier's rules; aggregated: sampled blocks past the sampled tier; expired: past the aggregated tier).",
    ),
    (names::TIER_SPANS_DROPPED_TOTAL, "counter", "Spans dropped by tiered retention, by tenant and reason."),
    (names::ROLLUP_ROWS, "gauge", "Rows of listed rollups (per minute, service, span name, kind, status), by tenant."),
    (names::ROLLUP_BYTES, "gauge", "Bytes of listed rollups' data, by tenant."),
    (names::ROLLUP_ROWS_WRITTEN_TOTAL, "counter", "Rollup rows written by the full-to-sampled rewrite, by tenant."),
    (names::ROLLUPS_DELETED_TOTAL, "counter", "Rollups deleted past the aggregated tier, by tenant."),
    (names::QUERIES_TOTAL, "counter", "Search and tag queries, by endpoint and outcome (ok, bad_request, error)."),
    (names::QUERY_SECONDS_TOTAL, "counter", "Time spent answering search and tag queries, by endpoint."),
    (names::SEARCH_INSPECTED_SPANS_TOTAL, "counter", "Spans whose prefilter columns searches looked at."),
    (names::SEARCH_INSPECTED_BYTES_TOTAL, "counter", "Bytes of blocks searches fetched."),
    (names::READY, "gauge", "1 when the server is ready to ingest and query."),
    (names::GENERATOR_SPANS_TOTAL, "counter", "Spans the metrics generator counted, by tenant."),
    (names::DORA_EVENTS, "gauge", "DORA events (deployments, incidents, changes) kept in the store, by tenant."),
    (
        names::DORA_EVENTS_REFUSED_TOTAL,
        "counter",
        "DORA events not stored, by tenant and reason (too_old: past dora.retention_days; max_events: the tenant's store is full).",
    ),
    (
        names::GENERATOR_SPANS_DISCARDED_TOTAL,
        "counter",
        "Spans the metrics generator left out, by tenant and reason (too_old: ended before the ingestion slack).",
    ),
    (
        names::GENERATOR_ACTIVE_SERIES,
        "gauge",
        "Generated series held, by tenant (a histogram counts its buckets, _sum and _count).",
    ),
    (
        names::GENERATOR_SERIES_LIMITED_TOTAL,
        "counter",
        "Observations folded into metric_overflow series because the tenant's max_active_series was reached.",
    ),
    (
        names::REMOTE_WRITE_REQUESTS_TOTAL,
        "counter",
        "remote_write requests, by endpoint and outcome (ok, retried, failed_permanent, failed_retries_exhausted).",
    ),
    (names::REMOTE_WRITE_SAMPLES_TOTAL, "counter", "Samples delivered to remote_write endpoints, by endpoint."),
    (
        names::REMOTE_WRITE_SAMPLES_FAILED_TOTAL,
        "counter",
        "Samples dropped after a permanent error or the last retry, by endpoint.",
    ),
    (names::REMOTE_WRITE_BYTES_TOTAL, "counter", "Compressed bytes delivered to remote_write endpoints, by endpoint."),
    (names::REMOTE_WRITE_SECONDS_TOTAL, "counter", "Time spent in remote_write requests (not waits between retries)."),
    (
        names::GENERATOR_LABEL_VALUES_LIMITED_TOTAL,
        "counter",
        "Observations whose label value became __cardinality_overflow__ (max_cardinality_per_label), by tenant.",
    ),
    (names::GENERATOR_PENDING_EDGES, "gauge", "Service-graph half edges waiting for their other half, by tenant."),
    (
        names::GENERATOR_EXPIRED_EDGES_TOTAL,
        "counter",
        "Service-graph half edges that expired with no peer to name, by tenant.",
    ),
    (
        names::GENERATOR_DROPPED_SPANS_TOTAL,
        "counter",
        "Spans the service graph dropped because the pending-edge store was full, by tenant.",
    ),
    (
        names::REQUESTS_REFUSED_TOTAL,
        "counter",
        "Requests refused before decoding, by tenant and reason (memory_limited).",
    ),
    (names::MEMORY_RESIDENT_BYTES, "gauge", "Resident memory as the memory limiter last measured it."),
    (names::OVERRIDES_RELOADS_TOTAL, "counter", "Reloads of the per-tenant overrides file, by outcome."),
    (
        names::PROCESSED_ATTRIBUTES_TOTAL,
        "counter",
        "Attributes changed by a processor before the WAL, by tenant, processor and action (deleted, masked, hashed, set).",
    ),
    (
        names::SAMPLING_TRACES_TOTAL,
        "counter",
        "Tail-sampling decisions, by deciding policy and decision (sampled, not_sampled, dropped).",
    ),
    (names::SAMPLING_SPANS_TOTAL, "counter", "Spans decided by tail sampling, by decision."),
    (names::SAMPLING_NEW_TRACES_TOTAL, "counter", "Traces the sampler started buffering."),
    (names::SAMPLING_EVICTED_TRACES_TOTAL, "counter", "Traces evicted from the sampler over num_traces or max_bytes."),
    (
        names::SAMPLING_DROPPED_TOO_EARLY_TOTAL,
        "counter",
        "Traces evicted before their decision (their spans were dropped).",
    ),
    (
        names::SAMPLING_LATE_SPANS_TOTAL,
        "counter",
        "Spans arriving after their trace's decision, by the decision they followed.",
    ),
    (names::SAMPLING_POLICY_ERRORS_TOTAL, "counter", "Policy evaluations that failed (e.g. an undecodable fragment)."),
    (
        names::SAMPLING_TRACES_IN_MEMORY,
        "gauge",
        "Traces held by the sampler (undecided, plus decided ones kept for late spans).",
    ),
    (names::SAMPLING_BYTES_IN_MEMORY, "gauge", "Encoded bytes of fragments waiting for a decision."),
    (names::AGENT_QUEUE_ITEMS, "gauge", "Agent: items in the persistent queue (queued and in flight)."),
    (names::AGENT_QUEUE_BYTES, "gauge", "Agent: payload bytes in the persistent queue."),
    (
        names::AGENT_QUEUE_DISK_BYTES,
        "gauge",
        "Agent: bytes of queue segment files (counted against agent.queue.max_bytes).",
    ),
    (names::AGENT_QUEUE_IN_FLIGHT, "gauge", "Agent: queue items being exported."),
    (names::AGENT_QUEUE_OLDEST_AGE_SECONDS, "gauge", "Agent: age of the oldest item not yet delivered."),
    (names::AGENT_QUEUE_CORRUPT_ITEMS_TOTAL, "counter", "Agent: corrupt queue records skipped."),
    (names::AGENT_QUEUE_FULL_TOTAL, "counter", "Agent: pushes refused because the queue was at max_bytes."),
    (names::AGENT_FORWARDED_SPANS_TOTAL, "counter", "Agent: spans delivered downstream, by endpoint."),
    (
        names::AGENT_REROUTED_SPANS_TOTAL,
        "counter",
        "Agent: spans routed again because their backend left the ring before taking them, by that endpoint.",
    ),
    (
        names::AGENT_DROPPED_SPANS_TOTAL,
        "counter",
        "Agent: spans given up on, by reason (permanent, retries_exhausted, rejected_downstream).",
    ),
    (names::AGENT_EXPORT_ATTEMPTS_TOTAL, "counter", "Agent: export attempts, by endpoint."),
    (names::AGENT_EXPORT_RETRIES_TOTAL, "counter", "Agent: export attempts that were retries, by endpoint."),
    (
        names::AGENT_EXPORT_TIMEOUTS_TOTAL,
        "counter",
        "Agent: export attempts cut off by the per-attempt timeout, by endpoint.",
    ),
    (names::AGENT_EXPORT_DELIVERED_TOTAL, "counter", "Agent: requests delivered, by endpoint."),
    (names::AGENT_EXPORT_FAILED_TOTAL, "counter", "Agent: requests given up on, by endpoint and reason."),
    (names::AGENT_EXPORT_LATENCY_SECONDS, "gauge", "Agent: latency of the last successful export, by endpoint."),
    (
        names::AGENT_RESOLUTIONS_TOTAL,
        "counter",
        "Agent: lookups of the load-balancing resolver (DNS or Kubernetes EndpointSlices), by outcome.",
    ),
    (names::AGENT_BACKEND_UPDATES_TOTAL, "counter", "Agent: changes of the load-balancing backend list."),
    (names::AGENT_BACKENDS, "gauge", "Agent: backends in the load-balancing ring."),
];

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)], by: f64) {
        let key = (name, labels.iter().map(|(k, v)| (*k, v.to_string())).collect());
        *self.counters.lock().unwrap().entry(key).or_default() += by;
    }

    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let key = (name, labels.iter().map(|(k, v)| (*k, v.to_string())).collect());
        self.gauges.lock().unwrap().insert(key, value);
    }

    /// Renders everything, plus the WAL's own counters and the head's gauges.
    pub fn render(
        &self,
        wal: Option<&spoor_wal::Stats>,
        head: &spoor_store::Head,
        blocks: &spoor_store::Blocks,
    ) -> String {
        for (tenant, s) in head.stats() {
            self.set(names::LIVE_TRACES, &[("tenant", &tenant)], s.traces as f64);
            self.set(names::LIVE_BYTES, &[("tenant", &tenant)], s.bytes as f64);
            self.set(names::LIVE_SPANS, &[("tenant", &tenant)], s.spans as f64);
            self.set(names::FLUSHING_BYTES, &[("tenant", &tenant)], s.flushing_bytes as f64);
        }
        // Tenants whose last block went away must read 0, not their last value.
        for ((name, _), v) in self.gauges.lock().unwrap().iter_mut() {
            if name.starts_with("spoor_block")
                || [names::TIER_BYTES, names::TIER_SPANS, names::ROLLUP_ROWS, names::ROLLUP_BYTES].contains(name)
            {
                *v = 0.0;
            }
        }
        // After the reset above, which these names share a prefix with.
        let (flush, compaction) = blocks.build_cpu_seconds();
        self.set(names::BLOCK_BUILD_CPU_SECONDS_TOTAL, &[("stage", "flush")], flush);
        self.set(names::BLOCK_BUILD_CPU_SECONDS_TOTAL, &[("stage", "compaction")], compaction);
        self.set(names::BLOCK_CACHE_BYTES, &[], blocks.cached_bytes() as f64);
        for (tenant, s) in blocks.stats() {
            self.set(names::BLOCKS, &[("tenant", &tenant)], s.blocks as f64);
            self.set(names::BLOCK_BYTES, &[("tenant", &tenant)], s.bytes as f64);
            self.set(names::BLOCK_SPANS, &[("tenant", &tenant)], s.spans as f64);
        }
        for (tenant, tier, s) in blocks.tier_stats() {
            self.set(names::TIER_BYTES, &[("tenant", &tenant), ("tier", tier.as_str())], s.bytes as f64);
            self.set(names::TIER_SPANS, &[("tenant", &tenant), ("tier", tier.as_str())], s.spans as f64);
        }
        for tenant in blocks.rollup_tenants() {
            let rollups = blocks.rollups(&tenant);
            self.set(names::ROLLUP_ROWS, &[("tenant", &tenant)], rollups.iter().map(|r| r.rows).sum::<u64>() as f64);
            let bytes = rollups.iter().map(|r| r.data_bytes).sum::<u64>() as f64;
            self.set(names::ROLLUP_BYTES, &[("tenant", &tenant)], bytes);
        }
        self.render_with(wal)
    }

    /// Renders the registry alone (the agent has no WAL, head or blocks).
    pub fn render_registry(&self) -> String {
        self.render_with(None)
    }

    fn render_with(&self, wal: Option<&spoor_wal::Stats>) -> String {
        let mut samples: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let fmt_labels = |labels: &Labels| {
            if labels.is_empty() {
                String::new()
            } else {
                let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                format!("{{{}}}", inner.join(","))
            }
        };
        for map in [&self.counters, &self.gauges] {
            for ((name, labels), v) in map.lock().unwrap().iter() {
                samples.entry(name).or_default().push(format!("{name}{} {v}", fmt_labels(labels)));
            }
        }
        if let Some(w) = wal {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            for (name, v) in [
                (names::WAL_RECORDS_TOTAL, load(&w.records)),
                (names::WAL_BYTES_TOTAL, load(&w.bytes)),
                (names::WAL_FSYNCS_TOTAL, load(&w.syncs)),
                (names::WAL_WRITE_ERRORS_TOTAL, load(&w.write_errors)),
                (names::WAL_SEGMENTS_CREATED_TOTAL, load(&w.segments)),
            ] {
                samples.entry(name).or_default().push(format!("{name} {v}"));
            }
            let name = names::WAL_FSYNC_DURATION_SECONDS;
            let lines = samples.entry(name).or_default();
            let mut cumulative = 0;
            for (i, bound) in spoor_wal::FSYNC_BUCKETS.iter().enumerate() {
                cumulative += load(&w.fsync_buckets[i]);
                lines.push(format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}"));
            }
            cumulative += load(&w.fsync_buckets[spoor_wal::FSYNC_BUCKETS.len()]);
            lines.push(format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}"));
            lines.push(format!("{name}_sum {}", load(&w.fsync_nanos_sum) as f64 / 1e9));
            lines.push(format!("{name}_count {cumulative}"));
        }
        let mut out = String::new();
        for (name, kind, help) in HELP {
            if let Some(lines) = samples.remove(name) {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
            }
        }
        for (name, lines) in samples {
            let _ = writeln!(out, "# TYPE {name} untyped");
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// `"spoor_…"` string literals in the non-test code of every file below `dir`.
    fn literals(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                literals(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for piece in code.split('"').skip(1).step_by(2) {
                    if piece.starts_with("spoor_") && piece.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                        out.push((path.display().to_string(), piece.to_owned()));
                    }
                }
            }
        }
    }

    #[test]
    fn every_series_name_is_a_constant_with_help() {
        let helped: Vec<&str> = HELP.iter().map(|(name, _, _)| *name).collect();
        let mut unique = helped.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), helped.len(), "a series has two HELP rows");
        // Every constant has a row.
        let source = include_str!("metrics.rs");
        let consts =
            source.lines().filter_map(|l| l.trim().strip_prefix("pub const ")).filter_map(|l| l.split('"').nth(1));
        for name in consts {
            assert!(helped.contains(&name), "{name} has no HELP row");
        }
        // Code names series only through the constants (a prefix match on `spoor_block` aside).
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        literals(&root.join("src"), &mut found);
        literals(&root.join("../agent/src"), &mut found);
        found.retain(|(file, name)| {
            !(file.ends_with("metrics.rs") && (name == "spoor_block" || helped.contains(&name.as_str())))
        });
        assert!(found.is_empty(), "series named by a literal instead of metrics::names: {found:?}");
    }
}
