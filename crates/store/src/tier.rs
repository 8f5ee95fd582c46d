//! Tiered retention: a block ages from `full` (every span) to `sampled` (whole traces chosen by
//! the tenant's rules) and then out, leaving only rollups until `aggregated`.
//!
//! The full → sampled step is a rewrite, crash-safe the way compaction is: every full block of
//! one compaction window is merged (so each trace is seen whole, across the blocks holding its
//! parts); a first pass writes the rollups of every span (`crate::rollups`), which count only
//! once the inputs are gone; then the kept traces are written to one new block whose meta lists the inputs in
//! `replaces`, and only once that meta exists are the inputs deleted. A crash before the meta
//! leaves the inputs visible and the rewrite is redone; after it, cleanup deletes the inputs.
//! Blocks already past `sampled` when they leave `full` go through the same rewrite keeping
//! nothing, so what replaces them is an empty block that retention removes next.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use spoor_block::rollup::{RollupBuilder, RollupMeta, exemplar_ids};
use spoor_block::{BlockMeta, BlockWriter, Tier};
use spoor_model::TraceId;
use spoor_model::otlp::any_value::Value;
use spoor_model::otlp::{ResourceSpans, Span};
use spoor_model::time::now_nanos;

use crate::blocks::{Blocks, Downloaded, Priority, TmpFile, in_thread};
use crate::compact::merge;
use crate::error::Result;
use crate::fail;

/// A tenant's tiers, as ages of a block's newest span.
#[derive(Clone, Debug, PartialEq)]
pub struct TierPolicy {
    /// Until this age, every span.
    pub full: Duration,
    /// Until this age, the sampled tier.
    pub sampled: Duration,
    /// Until this age, rollups only; then nothing.
    pub aggregated: Duration,
    pub keep: KeepRules,
}

/// Which traces the sampled tier keeps. A trace is kept whole or not at all.
#[derive(Clone, Debug, PartialEq)]
pub struct KeepRules {
    /// Of the traces no other rule keeps, this share, by a stable hash of the trace ID.
    pub ratio: f64,
    /// Every trace with a span whose status is error.
    pub errors: bool,
    /// Every trace whose root is slower than this quantile of its (service, root operation,
    /// day), computed over the blocks being rewritten.
    pub slow_quantile: Option<f64>,
    /// Every trace in the keep set passed to the rewrite (stored exemplars; DORA deployments
    /// and incidents once that store exists).
    pub exemplars: bool,
}

/// Why a trace stayed in the sampled tier (the first rule that matched, in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeepReason {
    Exemplar,
    Error,
    Slow,
    Ratio,
}

impl KeepReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeepReason::Exemplar => "exemplar",
            KeepReason::Error => "error",
            KeepReason::Slow => "slow",
            KeepReason::Ratio => "ratio",
        }
    }
}

/// One full → sampled rewrite that ran.
#[derive(Clone, Debug)]
pub struct Resampled {
    pub tenant: String,
    pub inputs: Vec<BlockMeta>,
    pub output: BlockMeta,
    /// Written first: every span of the inputs, counted.
    pub rollup: RollupMeta,
    /// Traces kept, per reason.
    pub kept: BTreeMap<KeepReason, u64>,
    pub dropped_traces: u64,
    pub dropped_spans: u64,
    /// The inputs were past `sampled` already: nothing was kept.
    pub past_sampled: bool,
}

/// True for about `ratio` of all trace IDs, the same in every process and after restarts: the
/// ID's own (random) low bits, mixed so that hand-made sequential IDs spread too.
pub fn ratio_keeps(id: &TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let mut x = u64::from_be_bytes(id.0[8..].try_into().expect("16-byte IDs"))
        ^ u64::from_be_bytes(id.0[..8].try_into().expect("16-byte IDs"));
    // splitmix64's finalizer: a fixed bijection, no seed.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^= x >> 31;
    (x as f64) < ratio * (u64::MAX as f64)
}

/// The full blocks of the oldest window whose every full block has aged out of `full` (a block's
/// tier is decided by its newest span; waiting for the whole window keeps a trace split across
/// its blocks decided once). Blocks past `aggregated` are retention's.
pub fn plan_resample(
    blocks: &[BlockMeta],
    window: Duration,
    policy: &TierPolicy,
    now_ns: u64,
) -> Option<Vec<BlockMeta>> {
    let window = window.as_nanos().max(1) as u64;
    let full_cutoff = now_ns.saturating_sub(policy.full.as_nanos() as u64);
    let gone_cutoff = now_ns.saturating_sub(policy.aggregated.as_nanos() as u64);
    let mut windows: BTreeMap<u64, Vec<&BlockMeta>> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.tier == Tier::Full && b.end_unix_nano >= gone_cutoff) {
        windows.entry(b.start_unix_nano / window).or_default().push(b);
    }
    windows
        .into_values()
        .find(|group| group.iter().all(|b| b.end_unix_nano < full_cutoff))
        .map(|group| group.into_iter().cloned().collect())
}

/// What the first pass learns about a trace's root.
struct Root {
    key: (String, String, u64),
    duration: u64,
}

const DAY_NS: u64 = 86_400 * 1_000_000_000;

fn service(rs: &ResourceSpans) -> &str {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

fn spans(fragments: &[ResourceSpans]) -> impl Iterator<Item = (&ResourceSpans, &Span)> {
    fragments.iter().flat_map(|rs| rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map(move |s| (rs, s))))
}

fn root_of(fragments: &[ResourceSpans]) -> Option<Root> {
    let (rs, s) = spans(fragments).find(|(_, s)| s.parent_span_id.iter().all(|b| *b == 0))?;
    Some(Root {
        key: (service(rs).to_owned(), s.name.clone(), s.start_time_unix_nano / DAY_NS),
        duration: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
    })
}

fn has_error(fragments: &[ResourceSpans]) -> bool {
    spans(fragments).any(|(_, s)| s.status.as_ref().is_some_and(|st| st.code == 2))
}

/// The nearest-rank quantile of each key's durations.
fn thresholds(mut durations: HashMap<(String, String, u64), Vec<u64>>, q: f64) -> HashMap<(String, String, u64), u64> {
    durations
        .drain()
        .filter_map(|(k, mut v)| {
            v.sort_unstable();
            let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
            v.get(rank - 1).map(|d| (k, *d))
        })
        .collect()
}

/// Decides one trace: the reason it stays, or None.
fn decide(
    id: &TraceId,
    fragments: &[ResourceSpans],
    rules: &KeepRules,
    slow: &HashMap<(String, String, u64), u64>,
    keep_ids: &HashSet<TraceId>,
) -> Option<KeepReason> {
    if rules.exemplars && keep_ids.contains(id) {
        return Some(KeepReason::Exemplar);
    }
    if rules.errors && has_error(fragments) {
        return Some(KeepReason::Error);
    }
    if rules.slow_quantile.is_some()
        && let Some(root) = root_of(fragments)
        && slow.get(&root.key).is_some_and(|t| root.duration > *t)
    {
        return Some(KeepReason::Slow);
    }
    ratio_keeps(id, rules.ratio).then_some(KeepReason::Ratio)
}

impl Blocks {
    /// Moves one window of `tenant`'s full blocks that aged out of `full` into the sampled tier,
    /// if there is one. `keep_ids` are traces to keep whatever the other rules say.
    pub async fn resample_tenant(
        &self,
        tenant: &str,
        window: Duration,
        policy: &TierPolicy,
        keep_ids: &HashSet<TraceId>,
    ) -> Result<Option<Resampled>> {
        let metas: Vec<BlockMeta> = self.visible(tenant).iter().map(|b| b.meta().clone()).collect();
        let now = now_nanos();
        let Some(inputs) = plan_resample(&metas, window, policy, now) else { return Ok(None) };
        let sampled_cutoff = now.saturating_sub(policy.sampled.as_nanos() as u64);
        let past_sampled = inputs.iter().all(|m| m.end_unix_nano < sampled_cutoff);
        let rules = policy.keep.clone();

        // Pass 1, over every span: the rollups (written before anything is dropped) and the
        // slow thresholds, from every root in the window.
        let mut files = Vec::with_capacity(inputs.len());
        for m in &inputs {
            files.push(self.download(m).await?);
        }
        let quantile = rules.slow_quantile.filter(|_| !past_sampled);
        let ((rows, edges), slow) = in_thread(Priority::Background, self.build_cpu_ns(), move || {
            let iters = files.into_iter().map(Downloaded::traces).collect::<Result<Vec<_>>>()?;
            let mut durations: HashMap<(String, String, u64), Vec<u64>> = HashMap::new();
            let mut rollups = RollupBuilder::default();
            merge(iters, |trace_id, fragments| {
                rollups.add_trace(trace_id, &fragments);
                if quantile.is_some()
                    && let Some(root) = root_of(&fragments)
                {
                    durations.entry(root.key).or_default().push(root.duration);
                }
                Ok(())
            })?;
            Ok((rollups.finish(), quantile.map(|q| thresholds(durations, q)).unwrap_or_default()))
        })
        .await?;
        let mut keep_ids = keep_ids.clone();
        if rules.exemplars {
            // A rollup's exemplar must lead to a trace while the sampled tier lasts.
            keep_ids.extend(exemplar_ids(&rows));
        }
        let id = spoor_block::new_block_id();
        let covers: Vec<String> = inputs.iter().map(|m| m.block_id.clone()).collect();
        let range = (
            inputs.iter().map(|m| m.start_unix_nano).min().unwrap_or(0),
            inputs.iter().map(|m| m.end_unix_nano).max().unwrap_or(0),
        );
        let rollup = self.write_rollup(tenant, &id, &covers, range, &rows, &edges).await?;
        fail::point("tier.after_rollup");

        // Pass 2: the kept traces, whole, into one block that replaces the inputs.
        let mut files = Vec::with_capacity(inputs.len());
        for m in &inputs {
            files.push(self.download(m).await?);
        }
        let out_path = self.tmp_dir().join(format!("{id}.parquet"));
        let (t, options, path) = (tenant.to_owned(), self.write_options().clone(), out_path.clone());
        let level = inputs.iter().map(|m| m.compaction_level).max().unwrap_or(0) + 1;
        let replaces: Vec<String> = inputs.iter().map(|m| m.block_id.clone()).collect();
        let replaces2 = replaces.clone();
        let seal = self.seal().cloned();
        type Tally = (spoor_block::Finished, BTreeMap<KeepReason, u64>, u64, u64);
        let built = in_thread(Priority::Background, self.build_cpu_ns(), move || -> Result<Tally> {
            let iters = files.into_iter().map(Downloaded::traces).collect::<Result<Vec<_>>>()?;
            let (out, sealed) = TmpFile::create(&path, seal.as_deref())?;
            let mut w = BlockWriter::new(out, &t, &id, &options)?;
            let (mut kept, mut dropped_traces, mut dropped_spans) = (BTreeMap::new(), 0u64, 0u64);
            merge(iters, |trace_id, fragments| {
                let reason = if past_sampled { None } else { decide(&trace_id, &fragments, &rules, &slow, &keep_ids) };
                match reason {
                    Some(r) => {
                        *kept.entry(r).or_insert(0) += 1;
                        Ok(w.push_decoded(trace_id, fragments)?)
                    }
                    None => {
                        dropped_traces += 1;
                        dropped_spans += spans(&fragments).count() as u64;
                        Ok(())
                    }
                }
            })?;
            let mut built = w.finish()?;
            sealed.finish(&path)?;
            built.meta.compaction_level = level;
            built.meta.replaces = replaces2;
            built.meta.tier = Tier::Sampled;
            if built.meta.spans == 0 {
                // Nothing kept: the empty block still stands for the inputs' time range, so
                // retention removes it when it would have removed them.
                (built.meta.start_unix_nano, built.meta.end_unix_nano) = range;
            }
            Ok((built, kept, dropped_traces, dropped_spans))
        })
        .await;
        let (published, tally) = match built {
            Ok((built, kept, dt, ds)) => (self.publish(built, &out_path, "tier").await, Some((kept, dt, ds))),
            Err(e) => (Err(e), None),
        };
        let _ = tokio::fs::remove_file(&out_path).await;
        let output = published?;
        let (kept, dropped_traces, dropped_spans) = tally.unwrap_or_default();
        for (i, old) in replaces.iter().enumerate() {
            self.delete(tenant, old).await?;
            if i == 0 {
                fail::point("tier.after_first_delete");
            }
        }
        Ok(Some(Resampled {
            tenant: tenant.to_owned(),
            inputs,
            output,
            rollup,
            kept,
            dropped_traces,
            dropped_spans,
            past_sampled,
        }))
    }

    /// Deletes what aged out of a tier: every block past `aggregated`, and sampled blocks past
    /// `sampled` (rollups stay). Full blocks past `sampled` are left to [`Blocks::resample_tenant`],
    /// which writes what must outlive them first. Returns the deleted metas and whether each
    /// was past `aggregated`.
    pub async fn apply_tiers(&self, tenant: &str, policy: &TierPolicy) -> Result<Vec<(BlockMeta, bool)>> {
        let now = now_nanos();
        let sampled = now.saturating_sub(policy.sampled.as_nanos() as u64);
        let gone = now.saturating_sub(policy.aggregated.as_nanos() as u64);
        let mut deleted = Vec::new();
        for b in self.all(tenant) {
            let m = b.meta();
            let past_aggregated = m.end_unix_nano < gone;
            if past_aggregated || (m.tier == Tier::Sampled && m.end_unix_nano < sampled) {
                self.delete(tenant, &m.block_id).await?;
                deleted.push((m.clone(), past_aggregated));
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_stable_and_about_right() {
        let ids: Vec<TraceId> = (0u32..20_000).map(|i| TraceId(u128::from(i).to_be_bytes())).collect();
        let kept = ids.iter().filter(|id| ratio_keeps(id, 0.1)).count();
        assert!((1_700..2_300).contains(&kept), "{kept} of 20000 at 0.1");
        // The same answer every time: no seed anywhere.
        assert_eq!(ids.iter().filter(|id| ratio_keeps(id, 0.1)).count(), kept);
        assert!(ids.iter().all(|id| ratio_keeps(id, 1.0)));
        assert!(!ids.iter().any(|id| ratio_keeps(id, 0.0)));
        // A bigger ratio keeps a superset.
        assert!(ids.iter().filter(|id| ratio_keeps(id, 0.1)).all(|id| ratio_keeps(id, 0.2)));
    }

    #[test]
    fn slow_threshold_is_the_nearest_rank_quantile() {
        let mut d = HashMap::new();
        d.insert(("s".to_owned(), "op".to_owned(), 0), (1..=100).rev().collect::<Vec<u64>>());
        let t = thresholds(d, 0.95);
        assert_eq!(t[&("s".to_owned(), "op".to_owned(), 0)], 95);
    }

    fn meta(id: &str, start_h: u64, end_h: u64, tier: Tier) -> BlockMeta {
        let h = 3_600_000_000_000u64;
        BlockMeta {
            format: spoor_block::FORMAT.into(),
            block_id: id.into(),
            tenant: "t".into(),
            start_unix_nano: start_h * h,
            end_unix_nano: end_h * h,
            spans: 1,
            traces: 1,
            row_groups: 1,
            data_bytes: 1,
            filter_bytes: 1,
            compaction_level: 0,
            replaces: Vec::new(),
            created_unix_nano: 0,
            dedicated_columns: Vec::new(),
            columns: Vec::new(),
            keys: Default::default(),
            tier,
            log: Default::default(),
        }
    }

    #[test]
    fn a_window_leaves_full_only_once_all_its_full_blocks_have() {
        let hour = Duration::from_secs(3600);
        let policy = TierPolicy {
            full: hour * 10,
            sampled: hour * 20,
            aggregated: hour * 30,
            keep: KeepRules { ratio: 0.1, errors: true, slow_quantile: Some(0.95), exemplars: true },
        };
        let now = 100 * 3_600_000_000_000u64;
        let ids = |v: Option<Vec<BlockMeta>>| v.map(|v| v.into_iter().map(|m| m.block_id).collect::<Vec<_>>());
        // Window 80: one block still young (its newest span 95h): the window waits.
        let blocks = [meta("a", 80, 81, Tier::Full), meta("b", 80, 95, Tier::Full), meta("s", 70, 71, Tier::Sampled)];
        assert_eq!(ids(plan_resample(&blocks, hour, &policy, now)), None);
        // Both old: the oldest such window goes, sampled blocks never.
        let blocks = [meta("a", 80, 81, Tier::Full), meta("b", 80, 85, Tier::Full), meta("c", 75, 76, Tier::Full)];
        assert_eq!(ids(plan_resample(&blocks, hour, &policy, now)), Some(vec!["c".into()]));
        // Past aggregated: retention's, not a rewrite's.
        assert_eq!(ids(plan_resample(&[meta("x", 10, 11, Tier::Full)], hour, &policy, now)), None);
    }
}
