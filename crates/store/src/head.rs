//! Live traces, in memory, per tenant, grouped by trace and bounded.
//!
//! Admission (can these fragments come in?) and insertion are separate steps because the WAL
//! sits between them: the pipeline admits, writes the WAL, then inserts. Insertion never
//! refuses, so replaying the WAL rebuilds exactly what was acknowledged. Concurrent requests
//! admitted together can overshoot a limit by at most their own size; that bound is documented.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

#[derive(Default)]
struct TenantHead {
    shards: [Mutex<HashMap<TraceId, LiveTrace>>; SHARDS],
    bytes: AtomicUsize,
    traces: AtomicUsize,
    spans: AtomicU64,
}

fn shard(id: &TraceId) -> usize {
    // Trace IDs are random; their last byte spreads traces evenly.
    id.0[15] as usize % SHARDS
}

/// A snapshot of one tenant's live state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantStats {
    pub traces: usize,
    pub bytes: usize,
    pub spans: u64,
}

pub struct Head {
    limits: Limits,
    tenants: RwLock<HashMap<String, Arc<TenantHead>>>,
    total_bytes: AtomicUsize,
}

impl Head {
    pub fn new(limits: Limits) -> Head {
        Head { limits, tenants: RwLock::new(HashMap::new()), total_bytes: AtomicUsize::new(0) }
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
        let t = self.tenant(tenant);
        let incoming: usize = fragments.iter().map(|f| f.bytes.len()).sum();
        if self.total_bytes.load(Ordering::Relaxed) + incoming > self.limits.max_bytes_total {
            return Err(Refusal::TotalBytesExceeded);
        }
        if t.bytes.load(Ordering::Relaxed) + incoming > self.limits.max_bytes_per_tenant {
            return Err(Refusal::TenantBytesExceeded);
        }
        let mut out = Admitted::default();
        let mut growth: HashMap<TraceId, usize> = HashMap::new();
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

    /// Adds fragments unconditionally (they are already durable).
    pub fn insert(&self, tenant: &str, fragments: &[Fragment]) {
        let t = self.tenant(tenant);
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

    /// The fragments of one trace, in arrival order.
    pub fn get(&self, tenant: &str, id: &TraceId) -> Option<Vec<Bytes>> {
        let t = self.tenants.read().unwrap().get(tenant)?.clone();
        let shard = t.shards[shard(id)].lock().unwrap();
        shard.get(id).map(|lt| lt.fragments.clone())
    }

    pub fn stats(&self) -> Vec<(String, TenantStats)> {
        let mut out: Vec<_> = self
            .tenants
            .read()
            .unwrap()
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    TenantStats {
                        traces: t.traces.load(Ordering::Relaxed),
                        bytes: t.bytes.load(Ordering::Relaxed),
                        spans: t.spans.load(Ordering::Relaxed),
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
        h.insert("t", &a.fragments);
        let a = h.admit("t", vec![frag(1, 41)]).unwrap();
        assert_eq!(a.fragments.len(), 0);
        assert_eq!(h.get("t", &TraceId([1; 16])).unwrap().len(), 1);
        assert_eq!(h.get("other", &TraceId([1; 16])), None);
    }

    #[test]
    fn tenant_limits_refuse_whole_requests() {
        let h = head(2, 1000, 100);
        let a = h.admit("t", vec![frag(1, 10), frag(2, 10)]).unwrap();
        h.insert("t", &a.fragments);
        assert_eq!(h.admit("t", vec![frag(3, 10)]).unwrap_err(), Refusal::LiveTracesExceeded);
        // Existing traces may still grow.
        assert!(h.admit("t", vec![frag(1, 10)]).is_ok());
        assert_eq!(h.admit("t", vec![frag(1, 81)]).unwrap_err(), Refusal::TenantBytesExceeded);
        // Another tenant is unaffected.
        assert!(h.admit("u", vec![frag(3, 10)]).is_ok());
        assert_eq!(h.stats()[0].1, TenantStats { traces: 2, bytes: 20, spans: 4 });
    }

    #[test]
    fn total_bytes_bound_all_tenants() {
        let h = head(100, 1000, 100); // 200 bytes in all
        for (tenant, trace) in [("a", 1), ("b", 2)] {
            let a = h.admit(tenant, vec![frag(trace, 90)]).unwrap();
            h.insert(tenant, &a.fragments);
        }
        assert_eq!(h.admit("c", vec![frag(3, 30)]).unwrap_err(), Refusal::TotalBytesExceeded);
        assert!(h.admit("c", vec![frag(3, 20)]).is_ok());
    }
}
