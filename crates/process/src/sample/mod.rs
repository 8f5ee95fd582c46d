//! Tail sampling: the collector's `tail_sampling` processor over per-trace fragments.
//!
//! The server writes fragments to its WAL and then [`offer`](Sampler::offer)s them here. The
//! sampler buffers them per (tenant, trace ID) until `decision_wait` has passed since the
//! trace's first fragment, then [`tick`](Sampler::tick) runs the policies and hands back a
//! [`Decision`] with the fragments to store (none when not sampled). Each fragment carries the
//! caller's token (the WAL segment), so the server knows which segments are still needed
//! ([`low_water`](Sampler::low_water)) and can replay decisions after a crash
//! ([`apply`](Sampler::apply)). Nothing here reads a clock: every call takes the caller's
//! monotonic milliseconds, which makes the sampler deterministic and testable.
//!
//! Behaviour follows the collector (see `specs/collector.md` §2), with these choices of ours:
//!
//! - A trace is decided as soon as `now_ms ≥ first arrival + decision_wait` (no 1-second
//!   batches). Fragments are decoded only when a policy needs span data; a fragment that does
//!   not decode counts as a policy-evaluation error (`policy_errors`, `decode_errors`), is
//!   invisible to the policies and otherwise follows its trace's decision.
//! - Tenants never share a buffer or a cache entry. Stateful policies (`rate_limiting`,
//!   `bytes_limiting`, `composite`) are shared by all tenants: their budgets are global.
//! - Memory is bounded by `num_traces` (undecided traces plus decided ones kept to route late
//!   spans), by `max_bytes` of buffered fragments, and by the decision-cache sizes. Over the
//!   trace limit, decided entries go first (oldest decided first), then the oldest undecided
//!   trace; over the byte budget, the oldest undecided traces go. Undecided victims count in
//!   `dropped_too_early` at once. With `block_on_overflow`, undecided traces are never evicted:
//!   [`has_room`](Sampler::has_room) turns false and the caller must stop offering.
//! - `invert_match` gives plain answers unless `inverted_decisions` is set (upstream's
//!   deprecated InvertSampled/InvertNotSampled, where an inverted "not sampled" vetoes all).
//! - Attribute policies match typed values only: `numeric_attribute` ints, `boolean_attribute`
//!   bools, `string_attribute` strings (upstream reads other types as 0, false or "").
//!   Regular expressions are not anchored, as upstream (`/health` matches `/healthz`).
//! - `ottl_condition` is not supported (a configuration error).

mod cache;
mod config;
mod policy;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem;

use spoor_model::{Fragment, TraceId};

use self::cache::{AsKey, Key, KeyRef, Lru};
pub use self::config::{
    AndConfig, BooleanAttributeConfig, BytesLimitingConfig, CompositeConfig, DecisionCacheConfig, DropConfig,
    LatencyConfig, NotConfig, NumericAttributeConfig, PolicyConfig, PolicyKind, ProbabilisticConfig, RateAllocation,
    RateLimitingConfig, SpanCountConfig, StatusCodeConfig, StringAttributeConfig, TailSamplingConfig, TraceStateConfig,
};
use self::policy::{Policy, TraceView, Verdict};
use crate::error::Error;

/// What [`Sampler::offer`] did with a fragment.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Held until its trace is decided.
    Buffered,
    /// A late fragment of a trace already sampled: store it now (with its token).
    Forward(Fragment, u64),
    /// A late fragment of a trace not sampled, or one that could not be held (its trace was
    /// evicted at once to respect `max_bytes`): discard it.
    Drop(Fragment),
}

/// The outcome for one trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub tenant: String,
    pub trace_id: TraceId,
    pub sampled: bool,
    /// The policy that decided: the first that said sampled, or the `drop` policy (or, with
    /// `inverted_decisions`, the inverted policy that vetoed). `None` when nothing matched or
    /// the decision was replayed by [`Sampler::apply`].
    pub policy: Option<String>,
    /// The buffered fragments and their tokens, in arrival order; empty when not sampled.
    pub fragments: Vec<(Fragment, u64)>,
    /// Spans the trace had when decided (sampled or not).
    pub spans: u64,
}

/// Counters since start. Trace decisions are disjoint: `traces_sampled + traces_not_sampled +
/// traces_dropped` traces were decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per top-level policy and its own answer (`sampled`, `not_sampled`, `dropped`): traces it
    /// was evaluated on. Policies skipped by `sample_on_first_match` or after a drop are not
    /// counted. Every (policy, answer) pair is present from the start.
    pub decisions: BTreeMap<(String, &'static str), u64>,
    pub traces_sampled: u64,
    pub traces_not_sampled: u64,
    /// Not sampled because a `drop` policy matched.
    pub traces_dropped: u64,
    pub spans_sampled: u64,
    /// Spans of traces not sampled or dropped.
    pub spans_not_sampled: u64,
    /// Traces seen for the first time (or again after their decision was forgotten).
    pub new_traces: u64,
    /// Undecided traces evicted (their spans are lost).
    pub dropped_too_early: u64,
    pub spans_dropped_too_early: u64,
    /// All evictions, decided or not.
    pub evicted: u64,
    /// Spans of already-decided traces, forwarded or dropped at once.
    pub late_spans_forwarded: u64,
    pub late_spans_dropped: u64,
    /// Policy-evaluation errors (fragments that did not decode).
    pub policy_errors: u64,
    pub decode_errors: u64,
    /// Calls to [`Sampler::apply`].
    pub decisions_applied: u64,
    /// Undecided traces dropped by [`Sampler::drain`] with `drop_pending_traces_on_shutdown`.
    pub dropped_on_shutdown: u64,
}

#[derive(Clone, Copy)]
struct Flags {
    first_match: bool,
    inverted: bool,
}

struct Named {
    name: String,
    policy: Policy,
    /// This policy's keys in [`Stats::decisions`], for sampled, not sampled and dropped.
    keys: [(String, &'static str); 3],
}

/// One buffered (or decided and remembered) trace.
struct Trace {
    /// Distinguishes this entry from earlier ones of the same key in the queues.
    seq: u64,
    spans: u64,
    bytes: usize,
    fragments: Vec<(Fragment, u64)>,
    /// `None` while buffering.
    decided: Option<bool>,
}

/// The tail-sampling state machine (see the module docs).
pub struct Sampler {
    wait_ms: u64,
    num_traces: usize,
    max_bytes: usize,
    block: bool,
    drop_on_shutdown: bool,
    flags: Flags,
    /// `drop` policies first, then the others, each group in configuration order.
    policies: Vec<Named>,
    traces: HashMap<Key, Trace>,
    /// Undecided traces by deadline (= arrival order): (deadline ms, seq, key). Entries whose
    /// trace was decided early or evicted are skipped, and compacted away when they pile up.
    pending: VecDeque<(u64, u64, Key)>,
    /// Decided entries kept for late spans, oldest decision first: (seq, key).
    decided: VecDeque<(u64, Key)>,
    undecided: usize,
    sampled_cache: Lru,
    not_sampled_cache: Lru,
    /// Buffered fragments per token.
    tokens: BTreeMap<u64, usize>,
    bytes: usize,
    next_seq: u64,
    stats: Stats,
}

impl Sampler {
    pub fn new(cfg: &TailSamplingConfig) -> Result<Sampler, Error> {
        cfg.validate()?;
        let mut stats = Stats::default();
        let mut policies: Vec<Named> = cfg
            .policies
            .iter()
            .map(|p| {
                let keys = ["sampled", "not_sampled", "dropped"].map(|d| (p.name.clone(), d));
                for k in &keys {
                    stats.decisions.insert(k.clone(), 0);
                }
                Named { name: p.name.clone(), policy: Policy::compile(p), keys }
            })
            .collect();
        policies.sort_by_key(|p| !p.policy.is_drop());
        Ok(Sampler {
            wait_ms: cfg.decision_wait.as_millis().min(u64::MAX as u128) as u64,
            num_traces: cfg.num_traces,
            max_bytes: cfg.max_bytes,
            block: cfg.block_on_overflow,
            drop_on_shutdown: cfg.drop_pending_traces_on_shutdown,
            flags: Flags { first_match: cfg.sample_on_first_match, inverted: cfg.inverted_decisions },
            policies,
            traces: HashMap::new(),
            pending: VecDeque::new(),
            decided: VecDeque::new(),
            undecided: 0,
            sampled_cache: Lru::new(cfg.decision_cache.sampled_cache_size),
            not_sampled_cache: Lru::new(cfg.decision_cache.non_sampled_cache_size),
            tokens: BTreeMap::new(),
            bytes: 0,
            next_seq: 0,
            stats,
        })
    }

    /// A fragment arriving at `now_ms`. `token` is opaque (the server passes the WAL segment
    /// number) and comes back with the fragment.
    pub fn offer(&mut self, now_ms: u64, tenant: &str, fragment: Fragment, token: u64) -> Offer {
        let spans = fragment.spans as u64;
        let len = fragment.bytes.len();
        let probe = KeyRef(tenant, fragment.trace_id);
        let probe: &dyn AsKey = &probe;
        let seq = if let Some(trace) = self.traces.get_mut(probe) {
            match trace.decided {
                Some(true) => {
                    self.stats.late_spans_forwarded += spans;
                    return Offer::Forward(fragment, token);
                }
                Some(false) => {
                    self.stats.late_spans_dropped += spans;
                    return Offer::Drop(fragment);
                }
                None => {
                    trace.spans += spans;
                    trace.bytes += len;
                    trace.fragments.push((fragment, token));
                    trace.seq
                }
            }
        } else if self.sampled_cache.touch(probe) {
            self.stats.late_spans_forwarded += spans;
            return Offer::Forward(fragment, token);
        } else if self.not_sampled_cache.touch(probe) {
            self.stats.late_spans_dropped += spans;
            return Offer::Drop(fragment);
        } else {
            let key = Key { tenant: tenant.into(), id: fragment.trace_id };
            let seq = self.next_seq;
            self.next_seq += 1;
            let trace = Trace { seq, spans, bytes: len, fragments: vec![(fragment, token)], decided: None };
            self.traces.insert(key.clone(), trace);
            self.pending.push_back((now_ms.saturating_add(self.wait_ms), seq, key));
            self.undecided += 1;
            self.stats.new_traces += 1;
            seq
        };
        *self.tokens.entry(token).or_default() += 1;
        self.bytes += len;
        match self.make_room(seq) {
            Some(mut evicted) => match evicted.fragments.pop() {
                Some((fragment, _)) => Offer::Drop(fragment),
                None => Offer::Buffered,
            },
            None => Offer::Buffered,
        }
    }

    /// True unless `block_on_overflow` is set and `num_traces` undecided traces or `max_bytes`
    /// are held (the server then refuses requests).
    pub fn has_room(&self) -> bool {
        !self.block || (self.undecided < self.num_traces && self.bytes < self.max_bytes)
    }

    /// Decides every trace whose `decision_wait` has passed, in arrival order.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some((deadline, _, _)) = self.pending.front() {
            if *deadline > now_ms {
                break;
            }
            let (_, seq, key) = self.pending.pop_front().expect("front exists");
            if self.is_undecided(&key, seq) {
                out.push(self.decide(now_ms, key));
            }
        }
        out
    }

    /// A decision replayed from the WAL: applied to the buffered trace (if any) exactly as if
    /// [`tick`](Sampler::tick) had made it, and remembered for late spans (in the decision
    /// cache, else as a decided entry). Returns the decision when a buffered trace was decided.
    pub fn apply(&mut self, now_ms: u64, tenant: &str, trace_id: TraceId, sampled: bool) -> Option<Decision> {
        let _ = now_ms;
        self.stats.decisions_applied += 1;
        let probe = KeyRef(tenant, trace_id);
        if let Some((key, trace)) = self.traces.get_key_value(&probe as &dyn AsKey) {
            let key = key.clone();
            if trace.decided.is_none() {
                let decision = self.finalize(key, sampled, false, None);
                self.compact_pending();
                return Some(decision);
            }
            // Already decided here: the replayed decision wins.
            self.traces.get_mut(&key).expect("present").decided = Some(sampled);
            return None;
        }
        let key = Key { tenant: tenant.into(), id: trace_id };
        let (cache, other) = self.caches(sampled);
        other.remove(&key);
        if cache.capacity() > 0 {
            cache.insert(&key);
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.traces
            .insert(key.clone(), Trace { seq, spans: 0, bytes: 0, fragments: Vec::new(), decided: Some(sampled) });
        self.decided.push_back((seq, key));
        self.make_room(u64::MAX);
        None
    }

    /// Shutdown: decides every undecided trace now, or, with `drop_pending_traces_on_shutdown`,
    /// drops them without a decision (a WAL replay then buffers them again).
    pub fn drain(&mut self, now_ms: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        for (_, seq, key) in mem::take(&mut self.pending) {
            if !self.is_undecided(&key, seq) {
                continue;
            }
            if self.drop_on_shutdown {
                let trace = self.traces.remove(&key).expect("undecided trace present");
                self.release(&trace);
                self.undecided -= 1;
                self.stats.dropped_on_shutdown += 1;
            } else {
                out.push(self.decide(now_ms, key));
            }
        }
        out
    }

    /// Smallest token of any fragment still buffered.
    pub fn low_water(&self) -> Option<u64> {
        self.tokens.keys().next().copied()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Traces held: undecided ones and decided ones remembered for late spans.
    pub fn traces_in_memory(&self) -> usize {
        self.traces.len()
    }

    /// Undecided traces.
    pub fn pending_traces(&self) -> usize {
        self.undecided
    }

    /// Bytes of buffered fragments.
    pub fn bytes_in_memory(&self) -> usize {
        self.bytes
    }

    fn is_undecided(&self, key: &Key, seq: u64) -> bool {
        self.traces.get(key).is_some_and(|t| t.seq == seq && t.decided.is_none())
    }

    /// (cache for this outcome, cache for the other).
    fn caches(&mut self, sampled: bool) -> (&mut Lru, &mut Lru) {
        if sampled {
            (&mut self.sampled_cache, &mut self.not_sampled_cache)
        } else {
            (&mut self.not_sampled_cache, &mut self.sampled_cache)
        }
    }

    /// Runs the policies on an undecided trace and settles it.
    fn decide(&mut self, now_ms: u64, key: Key) -> Decision {
        let trace = self.traces.get(&key).expect("undecided trace present");
        let mut view = TraceView::new(key.id, trace.spans, trace.bytes as u64, &trace.fragments);
        let (verdict, policy) = combine(&mut self.policies, &mut view, now_ms, self.flags, &mut self.stats);
        self.stats.decode_errors += view.decode_errors;
        self.stats.policy_errors += view.decode_errors;
        self.finalize(key, verdict == Verdict::Sampled, verdict == Verdict::Dropped, policy)
    }

    /// Records the decision of an undecided trace and releases its fragments.
    fn finalize(&mut self, key: Key, sampled: bool, dropped: bool, policy: Option<String>) -> Decision {
        let trace = self.traces.get_mut(&key).expect("undecided trace present");
        let fragments = mem::take(&mut trace.fragments);
        let spans = trace.spans;
        let bytes = mem::take(&mut trace.bytes);
        let seq = trace.seq;
        trace.decided = Some(sampled);
        self.undecided -= 1;
        self.bytes -= bytes;
        for (_, token) in &fragments {
            self.forget_token(*token);
        }
        if sampled {
            self.stats.traces_sampled += 1;
            self.stats.spans_sampled += spans;
        } else {
            *if dropped { &mut self.stats.traces_dropped } else { &mut self.stats.traces_not_sampled } += 1;
            self.stats.spans_not_sampled += spans;
        }
        let (cache, other) = self.caches(sampled);
        other.remove(&key);
        if cache.capacity() > 0 {
            cache.insert(&key);
            self.traces.remove(&key);
        } else {
            self.decided.push_back((seq, key.clone()));
        }
        Decision {
            tenant: key.tenant.to_string(),
            trace_id: key.id,
            sampled,
            policy,
            fragments: if sampled { fragments } else { Vec::new() },
            spans,
        }
    }

    fn forget_token(&mut self, token: u64) {
        if let Some(n) = self.tokens.get_mut(&token) {
            *n -= 1;
            if *n == 0 {
                self.tokens.remove(&token);
            }
        }
    }

    /// Returns an evicted or dropped undecided trace's bytes and tokens.
    fn release(&mut self, trace: &Trace) {
        self.bytes -= trace.bytes;
        for (_, token) in &trace.fragments {
            self.forget_token(*token);
        }
    }

    /// Evicts until the limits hold. Returns the trace `seq` if it was itself evicted.
    fn make_room(&mut self, seq: u64) -> Option<Trace> {
        let mut own = None;
        while self.traces.len() > self.num_traces {
            if self.evict_decided() {
                continue;
            }
            if self.block {
                break;
            }
            match self.evict_undecided() {
                Some(t) if t.seq == seq => own = Some(t),
                Some(_) => {}
                None => break,
            }
        }
        while !self.block && self.bytes > self.max_bytes {
            match self.evict_undecided() {
                Some(t) if t.seq == seq => own = Some(t),
                Some(_) => {}
                None => break,
            }
        }
        self.compact_pending();
        own
    }

    /// Forgets the oldest decided entry; false when there is none.
    fn evict_decided(&mut self) -> bool {
        while let Some((seq, key)) = self.decided.pop_front() {
            if self.traces.get(&key).is_some_and(|t| t.seq == seq && t.decided.is_some()) {
                self.traces.remove(&key);
                self.stats.evicted += 1;
                return true;
            }
        }
        false
    }

    /// Drops the oldest undecided trace.
    fn evict_undecided(&mut self) -> Option<Trace> {
        while let Some((_, seq, key)) = self.pending.pop_front() {
            if self.is_undecided(&key, seq) {
                let trace = self.traces.remove(&key).expect("undecided trace present");
                self.release(&trace);
                self.undecided -= 1;
                self.stats.evicted += 1;
                self.stats.dropped_too_early += 1;
                self.stats.spans_dropped_too_early += trace.spans;
                return Some(trace);
            }
        }
        None
    }

    /// Drops queue entries of traces decided early or gone, once they outnumber live ones.
    fn compact_pending(&mut self) {
        if self.pending.len() > 2 * self.undecided + 64 {
            let traces = &self.traces;
            self.pending.retain(|(_, seq, key)| traces.get(key).is_some_and(|t| t.seq == *seq && t.decided.is_none()));
        }
    }
}

/// Evaluates the policies in order and combines their answers (spec §2.6): a drop wins, then
/// an inverted "not sampled", then any "sampled", then an inverted "sampled" when nothing said
/// "not sampled". Returns Sampled, NotSampled or Dropped, and the deciding policy.
fn combine(
    policies: &mut [Named],
    trace: &mut TraceView,
    now_ms: u64,
    flags: Flags,
    stats: &mut Stats,
) -> (Verdict, Option<String>) {
    let (mut sampled, mut invert_sampled, mut invert_not_sampled) = (None, None, None);
    let mut not_sampled = false;
    for p in policies.iter_mut() {
        let verdict = p.policy.evaluate(trace, now_ms, flags.inverted);
        let slot = match verdict.label() {
            "sampled" => 0,
            "not_sampled" => 1,
            _ => 2,
        };
        if let Some(n) = stats.decisions.get_mut(&p.keys[slot]) {
            *n += 1;
        }
        match verdict {
            Verdict::Dropped => return (Verdict::Dropped, Some(p.name.clone())),
            Verdict::Sampled => {
                sampled.get_or_insert(&p.name);
                if flags.first_match {
                    break;
                }
            }
            Verdict::NotSampled => not_sampled = true,
            Verdict::InvertSampled => {
                invert_sampled.get_or_insert(&p.name);
            }
            Verdict::InvertNotSampled => {
                invert_not_sampled.get_or_insert(&p.name);
            }
        }
    }
    let name = |n: Option<&String>| n.cloned();
    if invert_not_sampled.is_some() {
        (Verdict::NotSampled, name(invert_not_sampled))
    } else if sampled.is_some() {
        (Verdict::Sampled, name(sampled))
    } else if invert_sampled.is_some() && !not_sampled {
        (Verdict::Sampled, name(invert_sampled))
    } else {
        (Verdict::NotSampled, None)
    }
}
