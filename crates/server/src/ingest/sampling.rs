//! Tail sampling after the WAL.
//!
//! Acknowledged fragments wait in the sampler until their trace's `decision_wait` is over;
//! sampled traces then go to the head, the others are dropped. Each batch of decisions is
//! appended to the WAL as a record of its own, so a replay after a crash re-applies exactly the
//! decisions made before it and only re-decides traces that had none. WAL segments stay until
//! every fragment in them is decided and, if sampled, in a durable block.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use spoor_model::{Fragment, TraceId};
use spoor_process::sample::{Decision, Offer, Sampler, TailSamplingConfig};

use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::metrics::names;

pub struct Sampling {
    sampler: Mutex<Sampler>,
    clock: Instant,
}

/// What became of fragments handed to the sampler.
#[derive(Default)]
pub struct Offered {
    /// Late spans of traces already sampled: store them now (all from the given segment).
    pub forward: Vec<Fragment>,
    pub dropped_spans: u64,
}

impl Sampling {
    pub fn new(cfg: &TailSamplingConfig) -> Result<Sampling, StartupError> {
        let sampler = Sampler::new(cfg).map_err(|e| StartupError::new(format!("processors.tail_sampling: {e}")))?;
        Ok(Sampling { sampler: Mutex::new(sampler), clock: Instant::now() })
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// False when the sampler is full and configured to push back instead of evicting.
    pub fn has_room(&self) -> bool {
        self.sampler.lock().unwrap().has_room()
    }

    /// Buffers fragments that are durable in WAL segment `segment`.
    pub fn offer(&self, tenant: &str, fragments: &[Fragment], segment: u64) -> Offered {
        let now = self.now_ms();
        let mut out = Offered::default();
        let mut s = self.sampler.lock().unwrap();
        for f in fragments {
            match s.offer(now, tenant, f.clone(), segment) {
                Offer::Buffered => {}
                Offer::Forward(f, _) => out.forward.push(f),
                Offer::Drop(f) => out.dropped_spans += f.spans as u64,
            }
        }
        out
    }

    /// Decides every trace whose wait is over.
    pub fn tick(&self) -> Vec<Decision> {
        let now = self.now_ms();
        self.sampler.lock().unwrap().tick(now)
    }

    /// Re-applies decisions read back from the WAL.
    pub fn apply(&self, tenant: &str, decisions: &[(TraceId, bool)]) -> Vec<Decision> {
        let now = self.now_ms();
        let mut s = self.sampler.lock().unwrap();
        decisions.iter().filter_map(|(id, sampled)| s.apply(now, tenant, *id, *sampled)).collect()
    }

    pub fn low_water(&self) -> Option<u64> {
        self.sampler.lock().unwrap().low_water()
    }

    /// Sampled fragments grouped by (tenant, WAL segment), ready for `Head::insert`.
    pub fn sampled_by_segment(decisions: &[Decision]) -> BTreeMap<(String, u64), Vec<Fragment>> {
        let mut out: BTreeMap<(String, u64), Vec<Fragment>> = BTreeMap::new();
        for d in decisions.iter().filter(|d| d.sampled) {
            for (f, segment) in &d.fragments {
                out.entry((d.tenant.clone(), *segment)).or_default().push(f.clone());
            }
        }
        out
    }

    /// Decisions per tenant, as WAL records.
    pub fn records(decisions: &[Decision]) -> Vec<Vec<u8>> {
        let mut by_tenant: BTreeMap<&str, Vec<(TraceId, bool)>> = BTreeMap::new();
        for d in decisions {
            by_tenant.entry(&d.tenant).or_default().push((d.trace_id, d.sampled));
        }
        by_tenant.into_iter().map(|(t, ds)| spoor_model::encode_decisions(t, &ds)).collect()
    }

    /// Copies the sampler's counters into the metrics registry.
    pub fn publish(&self, m: &Metrics) {
        let s = self.sampler.lock().unwrap();
        let st = s.stats();
        for ((policy, decision), n) in &st.decisions {
            m.set(names::SAMPLING_TRACES_TOTAL, &[("policy", policy), ("decision", decision)], *n as f64);
        }
        m.set(names::SAMPLING_SPANS_TOTAL, &[("decision", "sampled")], st.spans_sampled as f64);
        m.set(names::SAMPLING_SPANS_TOTAL, &[("decision", "not_sampled")], st.spans_not_sampled as f64);
        m.set(names::SAMPLING_NEW_TRACES_TOTAL, &[], st.new_traces as f64);
        m.set(names::SAMPLING_EVICTED_TRACES_TOTAL, &[], st.evicted as f64);
        m.set(names::SAMPLING_DROPPED_TOO_EARLY_TOTAL, &[], st.dropped_too_early as f64);
        m.set(names::SAMPLING_LATE_SPANS_TOTAL, &[("decision", "sampled")], st.late_spans_forwarded as f64);
        m.set(names::SAMPLING_LATE_SPANS_TOTAL, &[("decision", "not_sampled")], st.late_spans_dropped as f64);
        m.set(names::SAMPLING_POLICY_ERRORS_TOTAL, &[], st.policy_errors as f64);
        m.set(names::SAMPLING_TRACES_IN_MEMORY, &[], s.traces_in_memory() as f64);
        m.set(names::SAMPLING_BYTES_IN_MEMORY, &[], s.bytes_in_memory() as f64);
    }
}
