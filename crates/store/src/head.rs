//! Live traces, in memory, per tenant, grouped by trace and bounded.
//!
//! Admission (can these fragments come in?) and insertion are separate steps because the WAL
//! sits between them: the pipeline admits, writes the WAL, then inserts. Insertion never
//! refuses, so replaying the WAL rebuilds exactly what was acknowledged. Concurrent requests
//! admitted together can overshoot a limit by at most their own size; that bound is documented.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spoor_model::{Fragment, TraceId};

const SHARDS: usize = 16;

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_live_traces: usize,
    pub max_bytes_per_trace: usize,
    pub max_bytes_per_tenant: usize,
    /// All tenants together: bounds the head's memory whatever the number of tenants.
    pub max_bytes_total: usize,
}

/// Why a whole request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    LiveTracesExceeded,
    TenantBytesExceeded,
    /// The head as a whole is full: a server-wide overload, not one tenant's fault.
    TotalBytesExceeded,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::LiveTracesExceeded => "live_traces_exceeded",
            Refusal::TenantBytesExceeded => "tenant_bytes_exceeded",
            Refusal::TotalBytesExceeded => "live_bytes_exceeded",
        }
    }
}

/// The outcome of admission: what may go in, and the spans of traces that would grow past
/// `max_bytes_per_trace` (refused individually, reported as partial success).
#[derive(Debug, Default)]
pub struct Admitted {
    pub fragments: Vec<Fragment>,
    pub too_large_spans: usize,
    pub too_large_traces: usize,
}

#[derive(Default)]
struct LiveTrace {
    fragments: Vec<Bytes>,
    bytes: usize,
}

/// The traces of one tenant that are still coming in.
struct Live {
    shards: [Mutex<HashMap<TraceId, LiveTrace, ahash::RandomState>>; SHARDS],
    bytes: AtomicUsize,
    traces: AtomicUsize,
    spans: AtomicU64,
    /// Lowest WAL segment holding any of this data (u64::MAX while empty).
    min_segment: AtomicU64,
    /// When the first fragment arrived (ms since the head started; u64::MAX while empty).
    first_insert_ms: AtomicU64,
    /// Records from the Kafka-API log: partition -> (first, last) offset inserted here.
    log: Mutex<spoor_block::LogOffsets>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            shards: Default::default(),
            bytes: AtomicUsize::new(0),
            traces: AtomicUsize::new(0),
            spans: AtomicU64::new(0),
            min_segment: AtomicU64::new(u64::MAX),
            first_insert_ms: AtomicU64::new(u64::MAX),
            log: Mutex::default(),
        }
    }
}

/// Live traces cut from a tenant's head on their way into a block. They stay readable until
/// the block is durable and [`Head::release`] drops them; until then their WAL segments stay.
pub struct Frozen {
    pub tenant: String,
    /// The live generation's shards, moved as they were (no copy while the lock is held).
    shards: Vec<HashMap<TraceId, LiveTrace, ahash::RandomState>>,
    pub bytes: usize,
    pub spans: u64,
    pub min_segment: u64,
    /// The log records (partition -> first, last offset) this generation holds; empty with a WAL.
    pub log: spoor_block::LogOffsets,
}

impl Frozen {
    /// Trace IDs in ascending order: the order blocks are written in.
    pub fn sorted_ids(&self) -> Vec<TraceId> {
        let mut ids: Vec<TraceId> = self.shards.iter().flat_map(|s| s.keys().copied()).collect();
        ids.sort_unstable();
        ids
    }

    pub fn fragments(&self, id: &TraceId) -> &[Bytes] {
        self.shards[shard(id)].get(id).map_or(&[], |lt| &lt.fragments[..])
    }

    pub fn traces(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
}

#[derive(Default)]
struct TenantHead {
    live: RwLock<Live>,
    frozen: RwLock<Vec<Arc<Frozen>>>,
}

fn shard(id: &TraceId) -> usize {
    // Trace IDs are random; their last byte spreads traces evenly.
    id.0[15] as usize % SHARDS
}

/// A snapshot of one tenant's state in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantStats {
    pub traces: usize,
    pub bytes: usize,
    pub spans: u64,
    /// Bytes cut into blocks that are not durable yet.
    pub flushing_bytes: usize,
}

pub struct Head {
    limits: Limits,
    tenants: RwLock<HashMap<String, Arc<TenantHead>>>,
    total_bytes: AtomicUsize,
    started: Instant,
    /// WAL segments of records appended but not inserted yet: segment -> count.
    pins: Mutex<BTreeMap<u64, usize>>,
}

/// Keeps a WAL segment (and later ones) from release while a record written there is on its
/// way into the head.
pub struct Pin<'a> {
    head: &'a Head,
    segment: u64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut pins = self.head.pins.lock().unwrap();
        if let Some(n) = pins.get_mut(&self.segment) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.segment);
            }
        }
    }
}

impl Head {
    pub fn new(limits: Limits) -> Head {
        Head {
            limits,
            tenants: RwLock::new(HashMap::new()),
            total_bytes: AtomicUsize::new(0),
            started: Instant::now(),
            pins: Mutex::new(BTreeMap::new()),
        }
    }

    fn tenant(&self, tenant: &str) -> Arc<TenantHead> {
        if let Some(t) = self.tenants.read().unwrap().get(tenant) {
            return t.clone();
        }
        self.tenants.write().unwrap().entry(tenant.to_owned()).or_default().clone()
    }

    /// Decides what of `fragments` may enter. Whole-request refusals come first so a client
    /// that retries later resends everything; per-trace refusals are final for those spans.
    pub fn admit(&self, tenant: &str, fragments: Vec<Fragment>) -> Result<Admitted, Refusal> {
        let th = self.tenant(tenant);
        let t = th.live.read().unwrap();
        let incoming: usize = fragments.iter().map(|f| f.bytes.len()).sum();
        if self.total_bytes.load(Ordering::Relaxed) + incoming > self.limits.max_bytes_total {
            return Err(Refusal::TotalBytesExceeded);
        }
        if t.bytes.load(Ordering::Relaxed) + incoming > self.limits.max_bytes_per_tenant {
            return Err(Refusal::TenantBytesExceeded);
        }
        let mut out = Admitted::default();
        let mut growth: HashMap<TraceId, usize, ahash::RandomState> = HashMap::default();
        let mut new_traces = 0;
        for f in fragments {
            let existing = {
                let shard = t.shards[shard(&f.trace_id)].lock().unwrap();
                shard.get(&f.trace_id).map(|lt| lt.bytes)
            };
            let grown = growth.entry(f.trace_id).or_insert(0);
            if existing.unwrap_or(0) + *grown + f.bytes.len() > self.limits.max_bytes_per_trace {
                out.too_large_spans += f.spans as usize;
                out.too_large_traces += 1;
                continue;
            }
            if existing.is_none() && *grown == 0 {
                new_traces += 1;
            }
            *grown += f.bytes.len();
            out.fragments.push(f);
        }
        if new_traces > 0 && t.traces.load(Ordering::Relaxed) + new_traces > self.limits.max_live_traces {
            return Err(Refusal::LiveTracesExceeded);
        }
        Ok(out)
    }

    /// Pins `segment` until the returned guard drops: call before appending to the WAL with
    /// the WAL's active segment, drop after [`Head::insert`].
    pub fn pin(&self, segment: u64) -> Pin<'_> {
        *self.pins.lock().unwrap().entry(segment).or_insert(0) += 1;
        Pin { head: self, segment }
    }

    /// Adds fragments unconditionally (they are already durable in WAL segment `segment`).
    pub fn insert(&self, tenant: &str, fragments: &[Fragment], segment: u64) {
        self.insert_from(tenant, fragments, segment, None)
    }

    /// [`Head::insert`] of the fragments of log record `offset` of `partition` (the
    /// scale-out's ingesters): the generation remembers which records it holds, so its block
    /// says so and a restart does not read them again.
    pub fn insert_logged(&self, tenant: &str, fragments: &[Fragment], partition: u32, offset: i64) {
        self.insert_from(tenant, fragments, 0, Some((partition, offset)))
    }

    /// The lowest log offset per partition still only in memory (live or flushing).
    pub fn log_low_water(&self) -> BTreeMap<u32, i64> {
        let mut low: BTreeMap<u32, i64> = BTreeMap::new();
        let mut add = |log: &spoor_block::LogOffsets| {
            for (p, (first, _)) in log {
                let l = low.entry(*p).or_insert(*first);
                *l = (*l).min(*first);
            }
        };
        for th in self.tenants.read().unwrap().values() {
            add(&th.live.read().unwrap().log.lock().unwrap());
            th.frozen.read().unwrap().iter().for_each(|f| add(&f.log));
        }
        low
    }

    fn insert_from(&self, tenant: &str, fragments: &[Fragment], segment: u64, logged: Option<(u32, i64)>) {
        let th = self.tenant(tenant);
        let t = th.live.read().unwrap();
        if let Some((p, offset)) = logged {
            let mut log = t.log.lock().unwrap();
            let e = log.entry(p).or_insert((offset, offset));
            *e = (e.0.min(offset), e.1.max(offset));
        }
        t.min_segment.fetch_min(segment, Ordering::SeqCst);
        let now = self.started.elapsed().as_millis() as u64;
        t.first_insert_ms.fetch_min(now, Ordering::Relaxed);
        for f in fragments {
            let mut shard = t.shards[shard(&f.trace_id)].lock().unwrap();
            let lt = shard.entry(f.trace_id).or_insert_with(|| {
                t.traces.fetch_add(1, Ordering::Relaxed);
                LiveTrace::default()
            });
            lt.fragments.push(f.bytes.clone());
            lt.bytes += f.bytes.len();
            t.bytes.fetch_add(f.bytes.len(), Ordering::Relaxed);
            self.total_bytes.fetch_add(f.bytes.len(), Ordering::Relaxed);
            t.spans.fetch_add(f.spans as u64, Ordering::Relaxed);
        }
    }

    /// The fragments of one trace, live and flushing. Live first: a cut publishes the frozen
    /// generation before it lets go of the live lock, so a cut racing this read can make it see
    /// a fragment twice (assembly drops the copy), never zero times.
    pub fn get(&self, tenant: &str, id: &TraceId) -> Option<Vec<Bytes>> {
        let th = self.tenants.read().unwrap().get(tenant)?.clone();
        let mut out: Vec<Bytes> = Vec::new();
        if let Some(lt) = th.live.read().unwrap().shards[shard(id)].lock().unwrap().get(id) {
            out.extend(lt.fragments.iter().cloned());
        }
        for f in th.frozen.read().unwrap().iter() {
            out.extend(f.fragments(id).iter().cloned());
        }
        (!out.is_empty()).then_some(out)
    }

    /// Every trace of a tenant in memory, live and flushing, fragments merged per trace, in
    /// ascending ID order (the order of a block): what a search reads of the head. Fragments
    /// are reference-counted, so this copies pointers, not data.
    pub fn snapshot(&self, tenant: &str) -> Vec<(TraceId, Vec<Bytes>)> {
        let Some(th) = self.tenants.read().unwrap().get(tenant).cloned() else { return Vec::new() };
        let mut all: HashMap<TraceId, Vec<Bytes>, ahash::RandomState> = HashMap::default();
        {
            // Live before frozen, as in `get`: a racing cut can show a fragment twice, never zero times.
            let live = th.live.read().unwrap();
            for shard in &live.shards {
                for (id, lt) in shard.lock().unwrap().iter() {
                    all.entry(*id).or_default().extend(lt.fragments.iter().cloned());
                }
            }
        }
        for f in th.frozen.read().unwrap().iter() {
            for shard in &f.shards {
                for (id, lt) in shard {
                    all.entry(*id).or_default().extend(lt.fragments.iter().cloned());
                }
            }
        }
        let mut out: Vec<(TraceId, Vec<Bytes>)> = all.into_iter().collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    /// Tenants whose live data should become a block: at least `max_bytes`, or older than `max_age`.
    pub fn due(&self, max_bytes: usize, max_age: Duration) -> Vec<String> {
        let now = self.started.elapsed().as_millis() as u64;
        let mut out: Vec<String> = Vec::new();
        for (name, th) in self.tenants.read().unwrap().iter() {
            let t = th.live.read().unwrap();
            let first = t.first_insert_ms.load(Ordering::Relaxed);
            if t.bytes.load(Ordering::Relaxed) >= max_bytes
                || (first != u64::MAX && now.saturating_sub(first) >= max_age.as_millis() as u64)
            {
                out.push(name.clone());
            }
        }
        out.sort();
        out
    }

    /// Every tenant with live data.
    pub fn tenants_with_data(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (name, th) in self.tenants.read().unwrap().iter() {
            if th.live.read().unwrap().bytes.load(Ordering::Relaxed) > 0 {
                out.push(name.clone());
            }
        }
        out.sort();
        out
    }

    /// Moves a tenant's live traces aside for flushing. They stay readable (and counted
    /// against `max_bytes_total`) until [`Head::release`]. None when there is nothing live.
    pub fn cut(&self, tenant: &str) -> Option<Arc<Frozen>> {
        let th = self.tenants.read().unwrap().get(tenant)?.clone();
        // The write lock waits for inserts in progress, so nothing lands in the old generation
        // after it is taken; the frozen generation is listed before the lock goes, so readers
        // find every trace in one or the other.
        let mut live = th.live.write().unwrap();
        if live.bytes.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let old = std::mem::take(&mut *live);
        let frozen = Arc::new(Frozen {
            tenant: tenant.to_owned(),
            bytes: old.bytes.load(Ordering::Relaxed),
            spans: old.spans.load(Ordering::Relaxed),
            min_segment: old.min_segment.load(Ordering::SeqCst),
            log: old.log.into_inner().unwrap(),
            shards: old.shards.into_iter().map(|s| s.into_inner().unwrap()).collect(),
        });
        th.frozen.write().unwrap().push(frozen.clone());
        drop(live);
        Some(frozen)
    }

    /// Forgets flushed traces: their block is durable.
    pub fn release(&self, frozen: &Arc<Frozen>) {
        let Some(th) = self.tenants.read().unwrap().get(&frozen.tenant).cloned() else { return };
        let mut list = th.frozen.write().unwrap();
        let before = list.len();
        list.retain(|f| !Arc::ptr_eq(f, frozen));
        if list.len() < before {
            self.total_bytes.fetch_sub(frozen.bytes, Ordering::Relaxed);
        }
    }

    /// The lowest WAL segment whose records are still only in memory (live, flushing, or on
    /// their way in); None when nothing is. Segments below it may be deleted.
    pub fn low_water(&self) -> Option<u64> {
        let mut low = self.pins.lock().unwrap().keys().next().copied().unwrap_or(u64::MAX);
        for th in self.tenants.read().unwrap().values() {
            low = low.min(th.live.read().unwrap().min_segment.load(Ordering::SeqCst));
            for f in th.frozen.read().unwrap().iter() {
                low = low.min(f.min_segment);
            }
        }
        (low != u64::MAX).then_some(low)
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> Vec<(String, TenantStats)> {
        let mut out: Vec<_> = self
            .tenants
            .read()
            .unwrap()
            .iter()
            .map(|(name, th)| {
                let t = th.live.read().unwrap();
                (
                    name.clone(),
                    TenantStats {
                        traces: t.traces.load(Ordering::Relaxed),
                        bytes: t.bytes.load(Ordering::Relaxed),
                        spans: t.spans.load(Ordering::Relaxed),
                        flushing_bytes: th.frozen.read().unwrap().iter().map(|f| f.bytes).sum(),
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(trace: u8, len: usize) -> Fragment {
        Fragment { trace_id: TraceId([trace; 16]), spans: 2, bytes: Bytes::from(vec![0; len]) }
    }

    fn head(traces: usize, per_trace: usize, per_tenant: usize) -> Head {
        Head::new(Limits {
            max_live_traces: traces,
            max_bytes_per_trace: per_trace,
            max_bytes_per_tenant: per_tenant,
            max_bytes_total: 2 * per_tenant,
        })
    }

    #[test]
    fn too_large_trace_is_refused_per_trace() {
        let h = head(10, 100, 10_000);
        let a = h.admit("t", vec![frag(1, 60), frag(2, 10), frag(1, 60)]).unwrap();
        assert_eq!(a.fragments.len(), 2);
        assert_eq!((a.too_large_spans, a.too_large_traces), (2, 1));
        h.insert("t", &a.fragments, 1);
        let a = h.admit("t", vec![frag(1, 41)]).unwrap();
        assert_eq!(a.fragments.len(), 0);
        assert_eq!(h.get("t", &TraceId([1; 16])).unwrap().len(), 1);
        assert_eq!(h.get("other", &TraceId([1; 16])), None);
    }

    #[test]
    fn tenant_limits_refuse_whole_requests() {
        let h = head(2, 1000, 100);
        let a = h.admit("t", vec![frag(1, 10), frag(2, 10)]).unwrap();
        h.insert("t", &a.fragments, 1);
        assert_eq!(h.admit("t", vec![frag(3, 10)]).unwrap_err(), Refusal::LiveTracesExceeded);
        // Existing traces may still grow.
        assert!(h.admit("t", vec![frag(1, 10)]).is_ok());
        assert_eq!(h.admit("t", vec![frag(1, 81)]).unwrap_err(), Refusal::TenantBytesExceeded);
        // Another tenant is unaffected.
        assert!(h.admit("u", vec![frag(3, 10)]).is_ok());
        assert_eq!(h.stats()[0].1, TenantStats { traces: 2, bytes: 20, spans: 4, flushing_bytes: 0 });
    }

    #[test]
    fn total_bytes_bound_all_tenants() {
        let h = head(100, 1000, 100); // 200 bytes in all
        for (tenant, trace) in [("a", 1), ("b", 2)] {
            let a = h.admit(tenant, vec![frag(trace, 90)]).unwrap();
            h.insert(tenant, &a.fragments, 1);
        }
        assert_eq!(h.admit("c", vec![frag(3, 30)]).unwrap_err(), Refusal::TotalBytesExceeded);
        assert!(h.admit("c", vec![frag(3, 20)]).is_ok());
    }

    #[test]
    fn cut_moves_live_traces_aside_until_released() {
        let h = head(10, 1000, 10_000);
        assert_eq!(h.low_water(), None);
        let a = h.admit("t", vec![frag(1, 10), frag(2, 10)]).unwrap();
        h.insert("t", &a.fragments, 3);
        let pin = h.pin(5);
        assert_eq!(h.low_water(), Some(3));
        let frozen = h.cut("t").unwrap();
        assert_eq!((frozen.traces(), frozen.min_segment, frozen.bytes), (2, 3, 20));
        assert!(h.cut("t").is_none(), "nothing live left");
        // New data goes to a fresh generation; the trace reads from both.
        let a = h.admit("t", vec![frag(1, 5)]).unwrap();
        h.insert("t", &a.fragments, 6);
        assert_eq!(h.get("t", &TraceId([1; 16])).unwrap().len(), 2);
        assert_eq!(h.total_bytes(), 25);
        h.release(&frozen);
        assert_eq!(h.get("t", &TraceId([1; 16])).unwrap().len(), 1);
        assert_eq!(h.get("t", &TraceId([2; 16])), None);
        assert_eq!((h.total_bytes(), h.low_water()), (5, Some(5)));
        drop(pin);
        assert_eq!(h.low_water(), Some(6));
    }

    #[test]
    fn due_by_size_or_age() {
        let h = head(10, 1000, 10_000);
        let a = h.admit("big", vec![frag(1, 100)]).unwrap();
        h.insert("big", &a.fragments, 1);
        let a = h.admit("small", vec![frag(2, 10)]).unwrap();
        h.insert("small", &a.fragments, 1);
        assert_eq!(h.due(50, Duration::from_secs(60)), vec!["big".to_string()]);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(h.due(50, Duration::from_millis(10)), vec!["big".to_string(), "small".to_string()]);
        assert_eq!(h.tenants_with_data(), vec!["big".to_string(), "small".to_string()]);
    }
}
