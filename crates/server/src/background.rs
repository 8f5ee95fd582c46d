//! The loops that run beside request handling: flushing live traces into blocks, polling the
//! blocklist, and (in one process per backend) compaction, retention and cleanup.

use std::sync::Arc;
use std::time::Duration;

use spoor_store::compact::Policy;
use tokio::task::JoinSet;

use crate::pipeline::Pipeline;

pub fn spawn(p: &Arc<Pipeline>, tasks: &mut JoinSet<()>) {
    if p.config.ingest.enabled {
        tasks.spawn(flusher(p.clone()));
        if p.sampling.is_some() {
            tasks.spawn(sampler(p.clone()));
        }
        if p.generator.is_some() {
            tasks.spawn(crate::generated::run(p.clone()));
            if !p.remote_write.is_empty() {
                tasks.spawn(crate::generated::push(p.clone()));
            }
        }
    }
    tasks.spawn(poller(p.clone()));
    if p.config.compaction.enabled {
        tasks.spawn(compactor(p.clone()));
    }
    if p.admission.memory.is_some() {
        tasks.spawn(memory_watch(p.clone()));
    }
    if !p.config.limits.overrides_file.as_os_str().is_empty() {
        tasks.spawn(overrides_reloader(p.clone()));
    }
}

/// Decides traces ten times a second (decisions are due `decision_wait` after a trace's first span).
async fn sampler(p: Arc<Pipeline>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.sample_tick().await;
    }
}

/// Samples resident memory every `check_interval`; the limiter refuses data above the soft limit.
async fn memory_watch(p: Arc<Pipeline>) {
    let Some(m) = &p.admission.memory else { return };
    let mut over_hard = false;
    loop {
        tokio::time::sleep(m.interval()).await;
        let hard = m.check();
        p.metrics.set("spoor_memory_resident_bytes", &[], m.rss() as f64);
        if hard && !over_hard {
            tracing::warn!(rss = m.rss(), hard_limit = m.hard_limit(), "memory over the hard limit");
        }
        over_hard = hard;
        // Live traces are most of what the server holds and all it can give back on its own:
        // while refusing, write them to blocks (the WAL keeps them safe either way).
        if m.is_refusing() && p.head.total_bytes() > 0 {
            tracing::info!(rss = m.rss(), live_bytes = p.head.total_bytes(), "memory pressure: flushing live traces");
            if let Err(e) = p.flush(None).await {
                tracing::warn!(error = %e, "flush under memory pressure failed");
            }
        }
    }
}

/// Re-reads the per-tenant overrides file when it changes; a broken file keeps the old limits.
async fn overrides_reloader(p: Arc<Pipeline>) {
    let every = Duration::from_secs(p.config.limits.overrides_poll_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        match p.admission.rate.reload() {
            Ok(true) => {
                p.metrics.inc("spoor_overrides_reloads_total", &[("outcome", "ok")], 1.0);
                if let Some(g) = &p.generator {
                    g.set_series_limits(p.admission.rate.series_limits());
                }
                tracing::info!(file = %p.config.limits.overrides_file.display(), "per-tenant overrides reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                p.metrics.inc("spoor_overrides_reloads_total", &[("outcome", "error")], 1.0);
                tracing::warn!(error = %e, "cannot reload per-tenant overrides; keeping the previous ones");
            }
        }
    }
}

/// Checks every second which tenants are due; a failed upload backs off up to 30 s.
async fn flusher(p: Arc<Pipeline>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::time::sleep(backoff).await;
        let Some(due) = p.due_for_flush() else { continue };
        match p.flush(Some(due)).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(_) => backoff = (backoff * 2).min(Duration::from_secs(30)),
        }
    }
}

async fn poller(p: Arc<Pipeline>) {
    let every = Duration::from_secs(p.config.storage.blocklist_poll_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        match p.blocks.poll().await {
            Ok(_) => p.metrics.inc("spoor_blocklist_polls_total", &[("outcome", "ok")], 1.0),
            Err(e) => {
                p.metrics.inc("spoor_blocklist_polls_total", &[("outcome", "error")], 1.0);
                tracing::warn!(error = %e, "blocklist poll failed");
            }
        }
    }
}

async fn compactor(p: Arc<Pipeline>) {
    let c = &p.config.compaction;
    let policy = Policy {
        window: Duration::from_secs(c.window_secs.max(1)),
        max_input_blocks: c.max_input_blocks.max(2),
        max_block_spans: c.max_block_spans,
        orphan_grace: Duration::from_secs(c.orphan_grace_secs),
    };
    let every = Duration::from_secs(c.interval_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = compaction_cycle(&p, &policy).await {
            tracing::warn!(error = %e, "compaction cycle failed; retrying next interval");
        }
    }
}

/// Cleanup first: a compacted block is merged again only once the blocks it replaced are gone,
/// so a replaced block can never reappear.
async fn compaction_cycle(p: &Pipeline, policy: &Policy) -> Result<(), spoor_store::Error> {
    let m = &p.metrics;
    let removed = p.blocks.cleanup(policy).await?;
    if removed > 0 {
        m.inc("spoor_blocks_deleted_total", &[("tenant", "*"), ("reason", "cleanup")], removed as f64);
    }
    for tenant in p.blocks.tenants() {
        for meta in p.blocks.apply_retention(&tenant, p.config.retention.max_age(&tenant)).await? {
            tracing::info!(tenant, block = meta.block_id, "block deleted by retention");
            m.inc("spoor_blocks_deleted_total", &[("tenant", &tenant), ("reason", "retention")], 1.0);
            let bytes = (meta.data_bytes + meta.filter_bytes) as f64;
            m.inc("spoor_retention_deleted_bytes_total", &[("tenant", &tenant)], bytes);
        }
        // Bounded per cycle so one busy tenant cannot starve retention of the others.
        for _ in 0..4 {
            match p.blocks.compact_tenant(&tenant, policy).await {
                Ok(Some(c)) => {
                    tracing::info!(
                        tenant,
                        inputs = c.inputs.len(),
                        block = c.output.block_id,
                        spans = c.output.spans,
                        "blocks compacted"
                    );
                    m.inc("spoor_compactions_total", &[("tenant", &tenant), ("outcome", "ok")], 1.0);
                    m.inc("spoor_compacted_input_blocks_total", &[("tenant", &tenant)], c.inputs.len() as f64);
                    let dupes = c.input_spans.saturating_sub(c.output.spans) as f64;
                    m.inc("spoor_compaction_duplicate_spans_total", &[("tenant", &tenant)], dupes);
                    m.inc(
                        "spoor_blocks_deleted_total",
                        &[("tenant", &tenant), ("reason", "compacted")],
                        c.inputs.len() as f64,
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    m.inc("spoor_compactions_total", &[("tenant", &tenant), ("outcome", "error")], 1.0);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
