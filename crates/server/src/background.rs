//! The loops that run beside request handling: flushing live traces into blocks, polling the
//! blocklist, and (in one process per backend) compaction, retention and cleanup.

use std::sync::Arc;
use std::time::Duration;

use spoor_store::compact::Policy;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::generated::{self, Generated};
use crate::ingest::flush::Flusher;
use crate::ingest::front::FrontDoor;
use crate::ingest::pipeline::Pipeline;
use crate::metrics::Metrics;
use crate::metrics::names;
use crate::tempo::reader::Reader;

/// The roles a process runs, as the loops need them.
pub struct Roles<'a> {
    pub config: &'a Config,
    pub reader: &'a Arc<Reader>,
    pub metrics: &'a Arc<Metrics>,
    /// The ingest path and its flusher; absent in a query-only process.
    pub ingest: Option<(&'a Arc<Pipeline>, &'a Arc<Flusher>)>,
    pub generated: Option<&'a Arc<Generated>>,
}

pub fn spawn(r: Roles<'_>, tasks: &mut JoinSet<()>) {
    if let Some((pipeline, flusher)) = r.ingest {
        tasks.spawn(cut_loop(flusher.clone()));
        tasks.spawn(drain_loop(flusher.clone()));
        if pipeline.samples() {
            tasks.spawn(sampler(pipeline.clone()));
        }
        let watched = Watched { flusher: Some(flusher.clone()), generated: r.generated.cloned() };
        spawn_admission(pipeline.front(), r.config, r.metrics, watched, tasks);
    }
    if let Some(g) = r.generated {
        tasks.spawn(generated::run(g.clone()));
        if g.pushes() {
            tasks.spawn(generated::push(g.clone()));
        }
    }
    tasks.spawn(poller(r.reader.clone(), r.metrics.clone(), r.config.storage.blocklist_poll_secs));
    if r.config.compaction.enabled {
        tasks.spawn(compactor(r.reader.clone(), r.metrics.clone(), r.config.clone()));
    }
}

/// What the admission loops act on besides the limits themselves (none of it in the agent).
#[derive(Default)]
pub struct Watched {
    /// Flushed when memory runs short.
    pub flusher: Option<Arc<Flusher>>,
    /// Told the new per-tenant series budgets when the overrides change.
    pub generated: Option<Arc<Generated>>,
}

/// The loops behind a front door's limits, in every receiving process: resident memory
/// sampled every `check_interval` (and, past the soft limit, live traces flushed), and the
/// per-tenant overrides file re-read when it changes.
pub fn spawn_admission(
    front: &Arc<FrontDoor>,
    config: &Config,
    metrics: &Arc<Metrics>,
    watched: Watched,
    tasks: &mut JoinSet<()>,
) {
    if front.admission.memory.is_some() {
        tasks.spawn(memory_watch(front.clone(), watched.flusher, metrics.clone()));
    }
    if !config.limits.overrides_file.as_os_str().is_empty() {
        let every = Duration::from_secs(config.limits.overrides_poll_secs.max(1));
        let file = config.limits.overrides_file.display().to_string();
        tasks.spawn(overrides_reloader(front.clone(), watched.generated, metrics.clone(), every, file));
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
async fn memory_watch(front: Arc<FrontDoor>, flusher: Option<Arc<Flusher>>, metrics: Arc<Metrics>) {
    let Some(m) = &front.admission.memory else { return };
    let mut over_hard = false;
    loop {
        tokio::time::sleep(m.interval()).await;
        let hard = m.check();
        metrics.set(names::MEMORY_RESIDENT_BYTES, &[], m.rss() as f64);
        if hard && !over_hard {
            tracing::warn!(rss = m.rss(), hard_limit = m.hard_limit(), "memory over the hard limit");
        }
        over_hard = hard;
        // Live traces are most of what the server holds and all it can give back on its own:
        // while refusing, write them to blocks (the WAL keeps them safe either way).
        let Some(flusher) = &flusher else { continue };
        let live_bytes = flusher.head().total_bytes();
        if m.is_refusing() && live_bytes > 0 {
            tracing::info!(rss = m.rss(), live_bytes, "memory pressure: flushing live traces");
            if let Err(e) = flusher.flush(None).await {
                tracing::warn!(error = %e, "flush under memory pressure failed");
            }
        }
    }
}

/// Re-reads the per-tenant overrides file when it changes; a broken file keeps the old limits.
async fn overrides_reloader(
    front: Arc<FrontDoor>,
    generated: Option<Arc<Generated>>,
    metrics: Arc<Metrics>,
    every: Duration,
    file: String,
) {
    loop {
        tokio::time::sleep(every).await;
        let rate = &front.admission.rate;
        match rate.reload() {
            Ok(true) => {
                metrics.inc(names::OVERRIDES_RELOADS_TOTAL, &[("outcome", "ok")], 1.0);
                if let Some(g) = &generated {
                    g.generator.set_series_limits(rate.series_limits());
                }
                tracing::info!(file, "per-tenant overrides reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                metrics.inc(names::OVERRIDES_RELOADS_TOTAL, &[("outcome", "error")], 1.0);
                tracing::warn!(error = %e, "cannot reload per-tenant overrides; keeping the previous ones");
            }
        }
    }
}

/// Cuts due tenants ten times a second: a cut is a pointer swap, and cutting often keeps every
/// block near `max_block_bytes` however fast data arrives and however long a write takes.
async fn cut_loop(f: Arc<Flusher>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        f.cut_due();
    }
}

/// Writes cuts into blocks as they are queued (and retries every second what is still queued);
/// a failed upload backs off up to 30 s.
async fn drain_loop(f: Arc<Flusher>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = f.queued() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match f.drain().await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn poller(r: Arc<Reader>, metrics: Arc<Metrics>, poll_secs: u64) {
    let every = Duration::from_secs(poll_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        match r.blocks.poll().await {
            Ok(_) => metrics.inc(names::BLOCKLIST_POLLS_TOTAL, &[("outcome", "ok")], 1.0),
            Err(e) => {
                metrics.inc(names::BLOCKLIST_POLLS_TOTAL, &[("outcome", "error")], 1.0);
                tracing::warn!(error = %e, "blocklist poll failed");
            }
        }
    }
}

async fn compactor(r: Arc<Reader>, metrics: Arc<Metrics>, config: Config) {
    let c = &config.compaction;
    let policy = Policy {
        window: Duration::from_secs(c.window_secs.max(1)),
        max_input_blocks: c.max_input_blocks.max(2),
        max_block_spans: c.max_block_spans,
        orphan_grace: Duration::from_secs(c.orphan_grace_secs),
    };
    let every = Duration::from_secs(c.interval_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = compaction_cycle(&r, &metrics, &config, &policy).await {
            tracing::warn!(error = %e, "compaction cycle failed; retrying next interval");
        }
    }
}

/// Cleanup first: a compacted block is merged again only once the blocks it replaced are gone,
/// so a replaced block can never reappear.
async fn compaction_cycle(r: &Reader, m: &Metrics, config: &Config, policy: &Policy) -> Result<(), spoor_store::Error> {
    let removed = r.blocks.cleanup(policy).await?;
    if removed > 0 {
        m.inc(names::BLOCKS_DELETED_TOTAL, &[("tenant", "*"), ("reason", "cleanup")], removed as f64);
    }
    for tenant in r.blocks.tenants() {
        for meta in r.blocks.apply_retention(&tenant, config.retention.max_age(&tenant)).await? {
            tracing::info!(tenant, block = meta.block_id, "block deleted by retention");
            m.inc(names::BLOCKS_DELETED_TOTAL, &[("tenant", &tenant), ("reason", "retention")], 1.0);
            let bytes = (meta.data_bytes + meta.filter_bytes) as f64;
            m.inc(names::RETENTION_DELETED_BYTES_TOTAL, &[("tenant", &tenant)], bytes);
        }
        // Bounded per cycle so one busy tenant cannot starve retention of the others.
        for _ in 0..4 {
            match r.blocks.compact_tenant(&tenant, policy).await {
                Ok(Some(c)) => {
                    tracing::info!(
                        tenant,
                        inputs = c.inputs.len(),
                        block = c.output.block_id,
                        spans = c.output.spans,
                        "blocks compacted"
                    );
                    m.inc(names::COMPACTIONS_TOTAL, &[("tenant", &tenant), ("outcome", "ok")], 1.0);
                    m.inc(names::COMPACTED_INPUT_BLOCKS_TOTAL, &[("tenant", &tenant)], c.inputs.len() as f64);
                    let dupes = c.input_spans.saturating_sub(c.output.spans) as f64;
                    m.inc(names::COMPACTION_DUPLICATE_SPANS_TOTAL, &[("tenant", &tenant)], dupes);
                    let written = (c.output.data_bytes + c.output.filter_bytes) as f64;
                    m.inc(names::COMPACTION_WRITTEN_BYTES_TOTAL, &[("tenant", &tenant)], written);
                    m.inc(names::COMPACTION_WRITTEN_SPANS_TOTAL, &[("tenant", &tenant)], c.output.spans as f64);
                    m.inc(
                        names::BLOCKS_DELETED_TOTAL,
                        &[("tenant", &tenant), ("reason", "compacted")],
                        c.inputs.len() as f64,
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    m.inc(names::COMPACTIONS_TOTAL, &[("tenant", &tenant), ("outcome", "error")], 1.0);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
