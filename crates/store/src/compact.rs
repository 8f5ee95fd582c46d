//! Compaction and retention, run by one process per backend.
//!
//! Compaction merges small blocks of one tenant and time window into one: a k-way merge of the
//! blocks' trace streams (each sorted by trace ID) into a new writer, which drops duplicate
//! spans. Memory stays bounded: inputs are streamed from local copies a batch at a time and one
//! trace is held at once. Crash safety comes from ordering: the output's meta lists the inputs
//! in `replaces`, so the moment it exists readers ignore the inputs; only then are the inputs
//! deleted (meta first). A crash in between leaves replaced blocks that cleanup deletes later.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;
use spoor_block::{BlockMeta, BlockWriter, META_FILE, TraceIter};
use spoor_model::TraceId;
use spoor_model::otlp::ResourceSpans;
use spoor_model::time::now_nanos;

use crate::blocks::{Blocks, Downloaded, Priority, TmpFile, in_thread};
use crate::error::Result;
use crate::fail;

#[derive(Clone, Debug)]
pub struct Policy {
    /// Blocks are merged only with blocks whose start falls in the same window.
    pub window: Duration,
    /// A merge takes at most this many blocks; freshly flushed blocks of a window still being
    /// written wait until this many have come (or the window is over), so that each is rewritten
    /// once into a big block rather than again and again into a growing one.
    pub max_input_blocks: usize,
    /// An output block holds at most about this many spans; bigger blocks are left alone.
    pub max_block_spans: u64,
    /// Objects of a block without meta older than this are leftovers of a crash: deleted.
    pub orphan_grace: Duration,
}

/// One compaction that ran.
#[derive(Clone, Debug)]
pub struct Compacted {
    pub tenant: String,
    pub inputs: Vec<String>,
    pub output: BlockMeta,
    pub input_spans: u64,
}

/// Picks the next merge for a tenant, merging only what pays for its rewrite:
/// - flushed blocks (level 0) of a window, once `max_input_blocks` of them are there or the
///   window is over (at `now_ns`);
/// - compacted blocks again only while their window holds more than `max_input_blocks` blocks.
///
/// Within a level the smallest blocks go first, within the span budget; blocks over half of it
/// are never inputs. The lowest level wins, then the biggest merge.
pub fn plan(blocks: &[BlockMeta], policy: &Policy, now_ns: u64) -> Option<Vec<BlockMeta>> {
    let window = policy.window.as_nanos().max(1) as u64;
    // Keyed by tier too: a merge never mixes tiers (a sampled block holds whole traces chosen by
    // rules a full block has not been through).
    let mut windows: BTreeMap<(u64, spoor_block::Tier), Vec<&BlockMeta>> = BTreeMap::new();
    for b in blocks {
        windows.entry((b.start_unix_nano / window, b.tier)).or_default().push(b);
    }
    let mut best: Option<(u32, Vec<BlockMeta>)> = None;
    for ((w, _), group) in windows {
        let over = w < now_ns / window;
        let crowded = group.len() > policy.max_input_blocks;
        let mut levels: BTreeMap<u32, Vec<&BlockMeta>> = BTreeMap::new();
        for b in group.into_iter().filter(|b| b.spans < policy.max_block_spans / 2) {
            levels.entry(b.compaction_level).or_default().push(b);
        }
        for (level, mut candidates) in levels {
            let wanted = match (level, over) {
                (0, true) => 2,
                (0, false) => policy.max_input_blocks,
                _ if crowded => 2,
                _ => continue,
            };
            candidates.sort_by_key(|b| (b.spans, b.block_id.clone()));
            let mut chosen = Vec::new();
            let mut spans = 0;
            for b in candidates {
                if chosen.len() == policy.max_input_blocks || spans + b.spans > policy.max_block_spans {
                    break;
                }
                spans += b.spans;
                chosen.push(b.clone());
            }
            if chosen.len() >= wanted.max(2)
                && best
                    .as_ref()
                    .is_none_or(|(l, b)| (level, std::cmp::Reverse(chosen.len())) < (*l, std::cmp::Reverse(b.len())))
            {
                best = Some((level, chosen));
            }
            break;
        }
    }
    best.map(|(_, chosen)| chosen)
}

impl Blocks {
    /// One compaction for `tenant`, if there is something to merge.
    pub async fn compact_tenant(&self, tenant: &str, policy: &Policy) -> Result<Option<Compacted>> {
        let metas: Vec<BlockMeta> = self.visible(tenant).iter().map(|b| b.meta().clone()).collect();
        let Some(inputs) = plan(&metas, policy, now_nanos()) else { return Ok(None) };
        let mut files = Vec::with_capacity(inputs.len());
        for m in &inputs {
            files.push(self.download(m).await?);
        }
        let id = spoor_block::new_block_id();
        let out_path = self.tmp_dir().join(format!("{id}.parquet"));
        let (t, options, path) = (tenant.to_owned(), self.write_options().clone(), out_path.clone());
        let level = inputs.iter().map(|m| m.compaction_level).max().unwrap_or(0) + 1;
        let replaces: Vec<String> = inputs.iter().map(|m| m.block_id.clone()).collect();
        let replaces2 = replaces.clone();
        let tier = inputs[0].tier;
        let mut log = spoor_block::LogOffsets::new();
        inputs.iter().for_each(|m| spoor_block::merge_log_offsets(&mut log, &m.log));
        let seal = self.seal().cloned();
        let built = in_thread(Priority::Background, self.build_cpu_ns(), move || -> Result<spoor_block::Finished> {
            let iters = files.into_iter().map(Downloaded::traces).collect::<Result<Vec<_>>>()?;
            let (out, sealed) = TmpFile::create(&path, seal.as_deref())?;
            let mut w = BlockWriter::new(out, &t, &id, &options)?;
            merge(iters, |trace_id, fragments| Ok(w.push_decoded(trace_id, fragments)?))?;
            let mut built = w.finish()?;
            sealed.finish(&path)?;
            built.meta.compaction_level = level;
            built.meta.replaces = replaces2;
            built.meta.tier = tier;
            built.meta.log = log;
            Ok(built)
        })
        .await;
        let published = match built {
            Ok(built) => self.publish(built, &out_path, "compact").await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&out_path).await;
        let output = published?;
        for (i, old) in replaces.iter().enumerate() {
            self.delete(tenant, old).await?;
            if i == 0 {
                fail::point("compact.after_first_delete");
            }
        }
        Ok(Some(Compacted {
            tenant: tenant.to_owned(),
            input_spans: inputs.iter().map(|m| m.spans).sum(),
            inputs: replaces,
            output,
        }))
    }

    /// Deletes blocks whose newest span is older than the tenant's maximum age. Returns the
    /// deleted blocks' metas.
    pub async fn apply_retention(&self, tenant: &str, max_age: Duration) -> Result<Vec<BlockMeta>> {
        let cutoff = now_nanos().saturating_sub(max_age.as_nanos() as u64);
        let mut deleted = Vec::new();
        for b in self.all(tenant) {
            let m = b.meta();
            if m.end_unix_nano < cutoff {
                self.delete(tenant, &m.block_id).await?;
                deleted.push(m.clone());
            }
        }
        Ok(deleted)
    }

    /// Removes what crashes leave behind: blocks replaced by a visible compacted block, and
    /// block files without a meta older than the grace period. Returns how many blocks went.
    pub async fn cleanup(&self, policy: &Policy) -> Result<usize> {
        let mut removed = 0;
        for tenant in self.tenants() {
            let visible: HashSet<String> = self.visible(&tenant).iter().map(|b| b.meta().block_id.clone()).collect();
            for b in self.all(&tenant) {
                if !visible.contains(&b.meta().block_id) {
                    self.delete(&tenant, &b.meta().block_id).await?;
                    removed += 1;
                }
            }
        }
        // Orphans: (tenant, block) -> (has meta, newest modification)
        let mut dirs: HashMap<(String, String), (bool, SystemTime)> = HashMap::new();
        // The same for rollups: a tier rewrite cut short between a rollup's data and its meta.
        let mut rollup_dirs: HashMap<(String, String), (bool, SystemTime)> = HashMap::new();
        let mut objects = self.store.list(None);
        while let Some(o) = objects.try_next().await? {
            let parts: Vec<String> = o.location.parts().map(|p| p.as_ref().to_owned()).collect();
            if let [tenant, block, file] = parts.as_slice() {
                let e = dirs.entry((tenant.clone(), block.clone())).or_insert((false, UNIX_EPOCH));
                e.0 |= file == META_FILE;
                e.1 = e.1.max(o.last_modified.into());
            } else if let [tenant, dir, id, file] = parts.as_slice()
                && dir == spoor_block::rollup::ROLLUP_DIR
            {
                let e = rollup_dirs.entry((tenant.clone(), id.clone())).or_insert((false, UNIX_EPOCH));
                e.0 |= file == META_FILE;
                e.1 = e.1.max(o.last_modified.into());
            }
        }
        let now = SystemTime::now();
        for ((tenant, block), (has_meta, modified)) in dirs {
            if !has_meta && now.duration_since(modified).unwrap_or_default() > policy.orphan_grace {
                tracing::info!(tenant, block, "deleting the files of a block that never got its meta");
                self.delete(&tenant, &block).await?;
                removed += 1;
            }
        }
        for ((tenant, id), (has_meta, modified)) in rollup_dirs {
            if !has_meta && now.duration_since(modified).unwrap_or_default() > policy.orphan_grace {
                tracing::info!(tenant, rollup = id, "deleting the data of a rollup that never got its meta");
                let dir = object_store::path::Path::from(tenant.as_str())
                    .join(spoor_block::rollup::ROLLUP_DIR)
                    .join(id.as_str());
                for file in [spoor_block::DATA_FILE, spoor_block::rollup::EDGES_FILE] {
                    match self.store.delete(&dir.clone().join(file)).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// K-way merge of trace streams sorted by trace ID: `emit` sees each trace once, with the
/// fragments of every input that holds it.
pub fn merge(mut iters: Vec<TraceIter>, mut emit: impl FnMut(TraceId, Vec<ResourceSpans>) -> Result<()>) -> Result<()> {
    let mut heads: Vec<Option<(TraceId, Vec<ResourceSpans>)>> = Vec::with_capacity(iters.len());
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        let next = it.next().transpose()?;
        if let Some((id, _)) = &next {
            heap.push(Reverse((*id, i)));
        }
        heads.push(next);
    }
    while let Some(Reverse((id, _))) = heap.peek().copied() {
        let mut fragments = Vec::new();
        while let Some(Reverse((next_id, i))) = heap.peek().copied() {
            if next_id != id {
                break;
            }
            heap.pop();
            let (_, f) = heads[i].take().expect("heap entries have heads");
            fragments.extend(f);
            heads[i] = iters[i].next().transpose()?;
            if let Some((nid, _)) = &heads[i] {
                heap.push(Reverse((*nid, i)));
            }
        }
        emit(id, fragments)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, start_s: u64, spans: u64) -> BlockMeta {
        BlockMeta {
            format: spoor_block::FORMAT.into(),
            block_id: id.into(),
            tenant: "t".into(),
            start_unix_nano: start_s * 1_000_000_000,
            end_unix_nano: start_s * 1_000_000_000 + 1,
            spans,
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
            tier: Default::default(),
            log: Default::default(),
        }
    }

    fn ids(v: Option<Vec<BlockMeta>>) -> Option<Vec<String>> {
        v.map(|v| v.into_iter().map(|m| m.block_id).collect())
    }

    const HOUR: u64 = 3600;

    fn policy(max_input_blocks: usize) -> Policy {
        Policy {
            window: Duration::from_secs(HOUR),
            max_input_blocks,
            max_block_spans: 1000,
            orphan_grace: Duration::from_secs(3600),
        }
    }

    #[test]
    fn flushed_blocks_wait_for_a_full_merge_or_the_end_of_their_window() {
        let p = policy(3);
        let now = |s: u64| s * 1_000_000_000;
        // Alone in its window: nothing to do, even once the window is over.
        assert_eq!(ids(plan(&[meta("a", 0, 10), meta("b", 4000, 10)], &p, now(9 * HOUR))), None);
        // Two in the current window: they wait for a third; once the window is over they merge.
        let two = [meta("a", 0, 10), meta("b", 10, 10)];
        assert_eq!(ids(plan(&two, &p, now(100))), None);
        assert_eq!(ids(plan(&two, &p, now(HOUR + 1))), Some(vec!["a".into(), "b".into()]));
        // Big blocks are left alone; at most 3 inputs, smallest first.
        let blocks = [meta("a", 0, 10), meta("b", 10, 600), meta("c", 20, 30), meta("d", 30, 20), meta("e", 40, 5)];
        assert_eq!(ids(plan(&blocks, &p, now(100))), Some(vec!["e".into(), "a".into(), "d".into()]));
        // The span budget caps the group.
        let blocks = [meta("a", 0, 400), meta("b", 10, 400), meta("c", 20, 400)];
        assert_eq!(ids(plan(&blocks, &p, now(2 * HOUR))), Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn compacted_blocks_merge_again_only_in_a_crowded_window() {
        let p = policy(3);
        let level = |id: &str, spans: u64, l: u32| BlockMeta { compaction_level: l, ..meta(id, 0, spans) };
        let later = 5 * HOUR * 1_000_000_000;
        // Three compacted blocks: not crowded, left alone.
        let blocks = [level("a", 100, 1), level("b", 100, 1), level("c", 100, 1)];
        assert_eq!(ids(plan(&blocks, &p, later)), None);
        // A fourth makes the window crowded: the smallest merge.
        let blocks = [level("a", 100, 1), level("b", 90, 1), level("c", 100, 1), level("d", 80, 2)];
        assert_eq!(ids(plan(&blocks, &p, later)), Some(vec!["b".into(), "a".into(), "c".into()]));
        // Flushed blocks go first: level 0 wins over level 1.
        let blocks = [level("a", 100, 1), level("b", 90, 1), level("c", 100, 1), level("x", 10, 0), level("y", 10, 0)];
        assert_eq!(ids(plan(&blocks, &p, later)), Some(vec!["x".into(), "y".into()]));
    }
}
