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

const HELP: &[(&str, &str, &str)] = &[
    ("spoor_requests_total", "counter", "Export requests received, by transport and outcome code."),
    ("spoor_spans_received_total", "counter", "Spans decoded from export requests, by tenant."),
    ("spoor_spans_accepted_total", "counter", "Spans acknowledged after the WAL made them durable, by tenant."),
    (
        "spoor_spans_refused_total",
        "counter",
        "Spans refused, by tenant and reason; every refusal is reported to the client.",
    ),
    ("spoor_wal_records_total", "counter", "Records appended to the WAL."),
    ("spoor_wal_bytes_total", "counter", "Bytes appended to the WAL, framing included."),
    ("spoor_wal_fsyncs_total", "counter", "fdatasync calls; each covers every record queued meanwhile (group commit)."),
    (
        "spoor_wal_write_errors_total",
        "counter",
        "Failed WAL writes or syncs; the affected requests were not acknowledged.",
    ),
    ("spoor_wal_segments_created_total", "counter", "WAL segment files created since start."),
    ("spoor_wal_fsync_duration_seconds", "histogram", "Latency of WAL fdatasync calls."),
    ("spoor_wal_replay_seconds", "gauge", "Time the last start-up WAL replay took."),
    ("spoor_wal_replay_records", "gauge", "Records applied by the last start-up replay."),
    ("spoor_wal_corrupt_records_total", "counter", "Corrupt WAL records skipped during replay."),
    ("spoor_wal_truncated_bytes_total", "counter", "Bytes of torn WAL tails truncated during replay."),
    ("spoor_live_traces", "gauge", "Live traces held in memory, by tenant."),
    ("spoor_live_bytes", "gauge", "Encoded bytes of live traces, by tenant."),
    ("spoor_live_spans", "gauge", "Spans held in live traces, by tenant."),
    ("spoor_flushing_bytes", "gauge", "Encoded bytes of live traces cut into blocks not yet durable, by tenant."),
    ("spoor_flushes_total", "counter", "Blocks flushed from live traces, by tenant and outcome."),
    ("spoor_flush_seconds_total", "counter", "Time spent writing and uploading flushed blocks."),
    ("spoor_flushed_spans_total", "counter", "Spans written into blocks by flushes, by tenant."),
    ("spoor_wal_segments_released_total", "counter", "WAL segments deleted because their spans are in durable blocks."),
    ("spoor_blocks", "gauge", "Visible blocks in the backend, by tenant."),
    ("spoor_block_bytes", "gauge", "Bytes of visible blocks (data and filter), by tenant."),
    ("spoor_block_spans", "gauge", "Spans in visible blocks, by tenant."),
    ("spoor_blocklist_polls_total", "counter", "Blocklist reads from the backend, by outcome."),
    ("spoor_block_cache_bytes", "gauge", "Memory held by cached block footers and page indexes."),
    ("spoor_compactions_total", "counter", "Compactions, by tenant and outcome."),
    ("spoor_compacted_input_blocks_total", "counter", "Blocks merged away by compaction, by tenant."),
    ("spoor_compaction_duplicate_spans_total", "counter", "Duplicate spans dropped by compaction, by tenant."),
    ("spoor_blocks_deleted_total", "counter", "Blocks deleted, by tenant and reason (compacted, retention, cleanup)."),
    ("spoor_retention_deleted_bytes_total", "counter", "Bytes of blocks deleted by retention, by tenant."),
    ("spoor_queries_total", "counter", "Search and tag queries, by endpoint and outcome (ok, bad_request, error)."),
    ("spoor_query_seconds_total", "counter", "Time spent answering search and tag queries, by endpoint."),
    ("spoor_search_inspected_spans_total", "counter", "Spans whose prefilter columns searches looked at."),
    ("spoor_search_inspected_bytes_total", "counter", "Bytes of blocks searches fetched."),
    ("spoor_ready", "gauge", "1 when the server is ready to ingest and query."),
    ("spoor_generator_spans_total", "counter", "Spans the metrics generator counted, by tenant."),
    (
        "spoor_generator_spans_discarded_total",
        "counter",
        "Spans the metrics generator left out, by tenant and reason (too_old: ended before the ingestion slack).",
    ),
    (
        "spoor_generator_active_series",
        "gauge",
        "Generated series held, by tenant (a histogram counts its buckets, _sum and _count).",
    ),
    (
        "spoor_generator_series_limited_total",
        "counter",
        "Observations folded into metric_overflow series because the tenant's max_active_series was reached.",
    ),
    (
        "spoor_remote_write_requests_total",
        "counter",
        "remote_write requests, by endpoint and outcome (ok, retried, failed_permanent, failed_retries_exhausted).",
    ),
    ("spoor_remote_write_samples_total", "counter", "Samples delivered to remote_write endpoints, by endpoint."),
    (
        "spoor_remote_write_samples_failed_total",
        "counter",
        "Samples dropped after a permanent error or the last retry, by endpoint.",
    ),
    ("spoor_remote_write_bytes_total", "counter", "Compressed bytes delivered to remote_write endpoints, by endpoint."),
    ("spoor_remote_write_seconds_total", "counter", "Time spent in remote_write requests (not waits between retries)."),
    (
        "spoor_generator_label_values_limited_total",
        "counter",
        "Observations whose label value became __cardinality_overflow__ (max_cardinality_per_label), by tenant.",
    ),
    ("spoor_generator_pending_edges", "gauge", "Service-graph half edges waiting for their other half, by tenant."),
    (
        "spoor_generator_expired_edges_total",
        "counter",
        "Service-graph half edges that expired with no peer to name, by tenant.",
    ),
    (
        "spoor_generator_dropped_spans_total",
        "counter",
        "Spans the service graph dropped because the pending-edge store was full, by tenant.",
    ),
    (
        "spoor_requests_refused_total",
        "counter",
        "Requests refused before decoding, by tenant and reason (memory_limited).",
    ),
    ("spoor_memory_resident_bytes", "gauge", "Resident memory as the memory limiter last measured it."),
    ("spoor_overrides_reloads_total", "counter", "Reloads of the per-tenant overrides file, by outcome."),
    (
        "spoor_processed_attributes_total",
        "counter",
        "Attributes changed by a processor before the WAL, by tenant, processor and action (deleted, masked, hashed, set).",
    ),
    (
        "spoor_sampling_traces_total",
        "counter",
        "Tail-sampling decisions, by deciding policy and decision (sampled, not_sampled, dropped).",
    ),
    ("spoor_sampling_spans_total", "counter", "Spans decided by tail sampling, by decision."),
    ("spoor_sampling_new_traces_total", "counter", "Traces the sampler started buffering."),
    ("spoor_sampling_evicted_traces_total", "counter", "Traces evicted from the sampler over num_traces or max_bytes."),
    (
        "spoor_sampling_dropped_too_early_total",
        "counter",
        "Traces evicted before their decision (their spans were dropped).",
    ),
    (
        "spoor_sampling_late_spans_total",
        "counter",
        "Spans arriving after their trace's decision, by the decision they followed.",
    ),
    ("spoor_sampling_policy_errors_total", "counter", "Policy evaluations that failed (e.g. an undecodable fragment)."),
    (
        "spoor_sampling_traces_in_memory",
        "gauge",
        "Traces held by the sampler (undecided, plus decided ones kept for late spans).",
    ),
    ("spoor_sampling_bytes_in_memory", "gauge", "Encoded bytes of fragments waiting for a decision."),
    ("spoor_agent_queue_items", "gauge", "Agent: items in the persistent queue (queued and in flight)."),
    ("spoor_agent_queue_bytes", "gauge", "Agent: payload bytes in the persistent queue."),
    (
        "spoor_agent_queue_disk_bytes",
        "gauge",
        "Agent: bytes of queue segment files (counted against agent.queue.max_bytes).",
    ),
    ("spoor_agent_queue_in_flight", "gauge", "Agent: queue items being exported."),
    ("spoor_agent_queue_oldest_age_seconds", "gauge", "Agent: age of the oldest item not yet delivered."),
    ("spoor_agent_queue_corrupt_items_total", "counter", "Agent: corrupt queue records skipped."),
    ("spoor_agent_queue_full_total", "counter", "Agent: pushes refused because the queue was at max_bytes."),
    ("spoor_agent_forwarded_spans_total", "counter", "Agent: spans delivered downstream, by endpoint."),
    (
        "spoor_agent_dropped_spans_total",
        "counter",
        "Agent: spans given up on, by reason (permanent, retries_exhausted, rejected_downstream).",
    ),
    ("spoor_agent_export_attempts_total", "counter", "Agent: export attempts, by endpoint."),
    ("spoor_agent_export_retries_total", "counter", "Agent: export attempts that were retries, by endpoint."),
    (
        "spoor_agent_export_timeouts_total",
        "counter",
        "Agent: export attempts cut off by the per-attempt timeout, by endpoint.",
    ),
    ("spoor_agent_export_delivered_total", "counter", "Agent: requests delivered, by endpoint."),
    ("spoor_agent_export_failed_total", "counter", "Agent: requests given up on, by endpoint and reason."),
    ("spoor_agent_export_latency_seconds", "gauge", "Agent: latency of the last successful export, by endpoint."),
    ("spoor_agent_resolutions_total", "counter", "Agent: DNS resolutions of the load-balancing resolver, by outcome."),
    ("spoor_agent_backend_updates_total", "counter", "Agent: changes of the load-balancing backend list."),
    ("spoor_agent_backends", "gauge", "Agent: backends in the load-balancing ring."),
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
            self.set("spoor_live_traces", &[("tenant", &tenant)], s.traces as f64);
            self.set("spoor_live_bytes", &[("tenant", &tenant)], s.bytes as f64);
            self.set("spoor_live_spans", &[("tenant", &tenant)], s.spans as f64);
            self.set("spoor_flushing_bytes", &[("tenant", &tenant)], s.flushing_bytes as f64);
        }
        // Tenants whose last block went away must read 0, not their last value.
        for ((name, _), v) in self.gauges.lock().unwrap().iter_mut() {
            if name.starts_with("spoor_block") {
                *v = 0.0;
            }
        }
        self.set("spoor_block_cache_bytes", &[], blocks.cached_bytes() as f64);
        for (tenant, s) in blocks.stats() {
            self.set("spoor_blocks", &[("tenant", &tenant)], s.blocks as f64);
            self.set("spoor_block_bytes", &[("tenant", &tenant)], s.bytes as f64);
            self.set("spoor_block_spans", &[("tenant", &tenant)], s.spans as f64);
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
                ("spoor_wal_records_total", load(&w.records)),
                ("spoor_wal_bytes_total", load(&w.bytes)),
                ("spoor_wal_fsyncs_total", load(&w.syncs)),
                ("spoor_wal_write_errors_total", load(&w.write_errors)),
                ("spoor_wal_segments_created_total", load(&w.segments)),
            ] {
                samples.entry(name).or_default().push(format!("{name} {v}"));
            }
            let name = "spoor_wal_fsync_duration_seconds";
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
