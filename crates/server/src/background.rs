//! The loops that run beside request handling: flushing live traces into blocks, polling the
//! blocklist, and (in one process per backend) compaction, retention and cleanup.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use spoor_model::TraceId;
use spoor_store::compact::Policy;
use spoor_store::tier::TierPolicy;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::generated::{self, Generated};
use crate::ingest::flush::Flusher;
use crate::ingest::front::FrontDoor;
use crate::ingest::limits::OverridesFile;
use crate::ingest::pipeline::Pipeline;
use crate::metrics::Metrics;
use crate::metrics::names;
use crate::retention::{self, TenantRetention};
use crate::tempo::reader::Reader;

/// The roles a process runs, as the loops need them.
pub struct Roles<'a> {
    pub config: &'a Config,
    pub reader: &'a Arc<Reader>,
    pub metrics: &'a Arc<Metrics>,
    /// The ingest path and its flusher; absent in a query-only process.
    pub ingest: Option<(&'a Arc<Pipeline>, &'a Arc<Flusher>)>,
    pub generated: Option<&'a Arc<Generated>>,
    pub compactor: &'a Arc<Compactor>,
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
    if r.config.compaction.enabled && r.config.roles.has(crate::cluster::Role::Compactor) {
        tasks.spawn(compactor(r.compactor.clone()));
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

/// The compactor lease's term. Renewed before each tenant's step; one step (a merge of at most
/// `compaction.max_input_blocks` blocks, or a tier rewrite of a window) must finish inside it.
const LEASE_SECS: u64 = 300;

/// Trace IDs per tenant that the sampled tier keeps whatever its other rules say
/// (`retention.sampled_keep.exemplars`). Whoever knows of traces worth keeping adds them here;
/// the DORA store's deployments and incidents are added at each rewrite (`Compactor::dora`).
pub type KeepSet = Arc<RwLock<HashMap<String, HashSet<TraceId>>>>;

/// Compaction, tiered retention and cleanup: one cycle at a time, from the loop (when
/// `compaction.enabled`) or on demand (`POST /api/admin/compact`).
pub struct Compactor {
    reader: Arc<Reader>,
    metrics: Arc<Metrics>,
    config: Config,
    policy: Policy,
    pub keep: KeepSet,
    /// Deployments' and incidents' traces are kept in the sampled tier: the delivery view
    /// links to them. Only a process that ingests has the store.
    dora: Option<Arc<crate::dora::store::Store>>,
    running: tokio::sync::Mutex<()>,
    /// With the scale-out any number of processes may run the compactor role on one bucket:
    /// only the lease's holder compacts (spoor_store::lease).
    lease: Option<spoor_store::lease::Lease>,
}

impl Compactor {
    pub fn new(
        reader: Arc<Reader>,
        metrics: Arc<Metrics>,
        config: Config,
        dora: Option<Arc<crate::dora::store::Store>>,
    ) -> Compactor {
        let c = &config.compaction;
        let policy = Policy {
            window: Duration::from_secs(c.window_secs.max(1)),
            max_input_blocks: c.max_input_blocks.max(2),
            max_block_spans: c.max_block_spans,
            orphan_grace: Duration::from_secs(c.orphan_grace_secs),
        };
        let lease = config.kafka.is_some().then(|| {
            let holder =
                format!("{}/{}/{:x}", crate::cluster::hostname(), std::process::id(), spoor_model::time::now_nanos());
            spoor_store::lease::Lease::new("compactor", holder, Duration::from_secs(LEASE_SECS))
        });
        Compactor {
            reader,
            metrics,
            config,
            policy,
            keep: KeepSet::default(),
            dora,
            running: Default::default(),
            lease,
        }
    }

    /// Whether this process may compact now (always, without the scale-out). Asked before
    /// every tenant's step, so the lease is renewed well inside its term while a cycle runs.
    async fn may_compact(&self) -> Result<bool, spoor_store::Error> {
        let Some(lease) = &self.lease else { return Ok(true) };
        match lease.hold(self.reader.blocks.store.as_ref()).await? {
            spoor_store::lease::Held::Yes => Ok(true),
            spoor_store::lease::Held::No { holder, .. } => {
                tracing::debug!(holder, "another compactor holds the lease");
                Ok(false)
            }
        }
    }

    /// One cycle; a cycle already running (the loop's) is waited for first.
    pub async fn run_once(&self) -> Result<(), spoor_store::Error> {
        let _one_at_a_time = self.running.lock().await;
        self.cycle().await
    }

    /// Cleanup first: a compacted block is merged again only once the blocks it replaced are
    /// gone, so a replaced block can never reappear.
    async fn cycle(&self) -> Result<(), spoor_store::Error> {
        let (r, m) = (&self.reader, &self.metrics);
        if !self.may_compact().await? {
            return Ok(());
        }
        let removed = r.blocks.cleanup(&self.policy).await?;
        if removed > 0 {
            m.inc(names::BLOCKS_DELETED_TOTAL, &[("tenant", "*"), ("reason", "cleanup")], removed as f64);
        }
        // Read every cycle, as the front door re-reads it: a broken file skips retention (never
        // applies a policy nobody wrote) and is reported.
        let overrides = self.tenant_retention();
        let mut tenants = r.blocks.tenants();
        tenants.extend(r.blocks.rollup_tenants());
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            if !self.may_compact().await? {
                return Ok(());
            }
            match &overrides {
                Ok(o) => match self.config.retention.policy(&tenant, o.get(&tenant)) {
                    Ok(retention::Policy::MaxAge(age)) => self.single_tier(&tenant, age).await?,
                    Ok(retention::Policy::Tiers(p)) => self.tiers(&tenant, &p).await?,
                    Err(e) => tracing::warn!(tenant, error = e, "bad retention override; retention skipped"),
                },
                Err(e) => tracing::warn!(error = e, "cannot read the overrides file; retention skipped"),
            }
            self.compact(&tenant).await?;
        }
        Ok(())
    }

    fn tenant_retention(&self) -> Result<HashMap<String, TenantRetention>, String> {
        let path = &self.config.limits.overrides_file;
        if path.as_os_str().is_empty() {
            return Ok(HashMap::new());
        }
        let file = OverridesFile::load(path)?;
        Ok(file.overrides.into_iter().filter_map(|(t, o)| o.retention.map(|r| (t, r))).collect())
    }

    async fn single_tier(&self, tenant: &str, age: Duration) -> Result<(), spoor_store::Error> {
        let m = &self.metrics;
        for meta in self.reader.blocks.apply_retention(tenant, age).await? {
            tracing::info!(tenant, block = meta.block_id, "block deleted by retention");
            m.inc(names::BLOCKS_DELETED_TOTAL, &[("tenant", tenant), ("reason", "retention")], 1.0);
            let bytes = (meta.data_bytes + meta.filter_bytes) as f64;
            m.inc(names::RETENTION_DELETED_BYTES_TOTAL, &[("tenant", tenant)], bytes);
        }
        Ok(())
    }

    /// Full blocks past `full` are rewritten first, so what must outlive them is written
    /// before anything is deleted; then what aged out of its tier goes.
    async fn tiers(&self, tenant: &str, p: &TierPolicy) -> Result<(), spoor_store::Error> {
        let (r, m) = (&self.reader, &self.metrics);
        let mut keep = self.keep.read().unwrap().get(tenant).cloned().unwrap_or_default();
        if let Some(d) = &self.dora {
            keep.extend(d.kept_traces(tenant));
        }
        // Bounded per cycle so one tenant's backlog cannot starve the others.
        for _ in 0..64 {
            let done = match r.blocks.resample_tenant(tenant, self.policy.window, p, &keep).await {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(e) => {
                    m.inc(names::TIER_REWRITES_TOTAL, &[("tenant", tenant), ("outcome", "error")], 1.0);
                    return Err(e);
                }
            };
            tracing::info!(
                tenant,
                inputs = done.inputs.len(),
                block = done.output.block_id,
                kept_spans = done.output.spans,
                dropped_traces = done.dropped_traces,
                "blocks moved to the sampled tier"
            );
            m.inc(names::TIER_REWRITES_TOTAL, &[("tenant", tenant), ("outcome", "ok")], 1.0);
            m.inc(names::ROLLUP_ROWS_WRITTEN_TOTAL, &[("tenant", tenant)], done.rollup.rows as f64);
            for (reason, n) in &done.kept {
                m.inc(names::TIER_TRACES_KEPT_TOTAL, &[("tenant", tenant), ("reason", reason.as_str())], *n as f64);
            }
            let reason = if done.past_sampled { "aggregated" } else { "sampled_out" };
            let labels = [("tenant", tenant), ("reason", reason)];
            m.inc(names::TIER_TRACES_DROPPED_TOTAL, &labels, done.dropped_traces as f64);
            m.inc(names::TIER_SPANS_DROPPED_TOTAL, &labels, done.dropped_spans as f64);
            let inputs = done.inputs.len() as f64;
            m.inc(names::BLOCKS_DELETED_TOTAL, &[("tenant", tenant), ("reason", "tiered")], inputs);
        }
        let gone = spoor_model::time::now_nanos().saturating_sub(p.aggregated.as_nanos() as u64);
        for rollup in r.blocks.expire_rollups(tenant, gone).await? {
            tracing::info!(tenant, rollup = rollup.rollup_id, "rollup deleted by retention");
            m.inc(names::ROLLUPS_DELETED_TOTAL, &[("tenant", tenant)], 1.0);
        }
        for (meta, past_aggregated) in r.blocks.apply_tiers(tenant, p).await? {
            tracing::info!(tenant, block = meta.block_id, tier = meta.tier.as_str(), "block deleted by retention");
            let reason = if past_aggregated { "expired" } else { "aggregated" };
            let labels = [("tenant", tenant), ("reason", reason)];
            m.inc(names::TIER_TRACES_DROPPED_TOTAL, &labels, meta.traces as f64);
            m.inc(names::TIER_SPANS_DROPPED_TOTAL, &labels, meta.spans as f64);
            m.inc(names::BLOCKS_DELETED_TOTAL, &[("tenant", tenant), ("reason", "retention")], 1.0);
            let bytes = (meta.data_bytes + meta.filter_bytes) as f64;
            m.inc(names::RETENTION_DELETED_BYTES_TOTAL, &[("tenant", tenant)], bytes);
        }
        Ok(())
    }

    async fn compact(&self, tenant: &str) -> Result<(), spoor_store::Error> {
        let (r, m) = (&self.reader, &self.metrics);
        // Bounded per cycle so one busy tenant cannot starve retention of the others.
        for _ in 0..4 {
            match r.blocks.compact_tenant(tenant, &self.policy).await {
                Ok(Some(c)) => {
                    tracing::info!(
                        tenant,
                        inputs = c.inputs.len(),
                        block = c.output.block_id,
                        spans = c.output.spans,
                        "blocks compacted"
                    );
                    m.inc(names::COMPACTIONS_TOTAL, &[("tenant", tenant), ("outcome", "ok")], 1.0);
                    m.inc(names::COMPACTED_INPUT_BLOCKS_TOTAL, &[("tenant", tenant)], c.inputs.len() as f64);
                    let dupes = c.input_spans.saturating_sub(c.output.spans) as f64;
                    m.inc(names::COMPACTION_DUPLICATE_SPANS_TOTAL, &[("tenant", tenant)], dupes);
                    let written = (c.output.data_bytes + c.output.filter_bytes) as f64;
                    m.inc(names::COMPACTION_WRITTEN_BYTES_TOTAL, &[("tenant", tenant)], written);
                    m.inc(names::COMPACTION_WRITTEN_SPANS_TOTAL, &[("tenant", tenant)], c.output.spans as f64);
                    m.inc(
                        names::BLOCKS_DELETED_TOTAL,
                        &[("tenant", tenant), ("reason", "compacted")],
                        c.inputs.len() as f64,
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    m.inc(names::COMPACTIONS_TOTAL, &[("tenant", tenant), ("outcome", "error")], 1.0);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

async fn compactor(c: Arc<Compactor>) {
    let every = Duration::from_secs(c.config.compaction.interval_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = c.run_once().await {
            tracing::warn!(error = %e, "compaction cycle failed; retrying next interval");
        }
    }
}
