//! Policies compiled from their configuration, and their evaluation over one buffered trace.

use std::collections::HashSet;

use prost::Message;
use regex::RegexSet;
use spoor_model::otlp::{AnyValue, ResourceSpans, Span, any_value::Value};
use spoor_model::{Fragment, TraceId};

use super::config::{PolicyConfig, PolicyKind, status_code_number};

/// One policy's answer for one trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Sampled,
    NotSampled,
    /// Upstream's deprecated inverted answers (only with `inverted_decisions: true`).
    InvertSampled,
    InvertNotSampled,
    /// A `drop` policy matched: not sampled, whatever the others say.
    Dropped,
}

impl Verdict {
    /// The metric label of this answer.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verdict::Sampled | Verdict::InvertSampled => "sampled",
            Verdict::NotSampled | Verdict::InvertNotSampled => "not_sampled",
            Verdict::Dropped => "dropped",
        }
    }

    /// Sampled or inverted-sampled, as `and`, `not`, `drop` and `composite` read their
    /// sub-policies (inverted answers count as plain ones there).
    fn yes(self) -> bool {
        matches!(self, Verdict::Sampled | Verdict::InvertSampled)
    }

    fn from(yes: bool) -> Verdict {
        if yes { Verdict::Sampled } else { Verdict::NotSampled }
    }
}

/// The trace being decided: its fragments, decoded on first need.
pub(crate) struct TraceView<'a> {
    pub id: TraceId,
    pub spans: u64,
    pub bytes: u64,
    fragments: &'a [(Fragment, u64)],
    decoded: Option<Vec<ResourceSpans>>,
    /// Fragments that did not decode (their spans are invisible to the policies).
    pub decode_errors: u64,
}

impl<'a> TraceView<'a> {
    pub fn new(id: TraceId, spans: u64, bytes: u64, fragments: &'a [(Fragment, u64)]) -> TraceView<'a> {
        TraceView { id, spans, bytes, fragments, decoded: None, decode_errors: 0 }
    }

    fn resources(&mut self) -> &[ResourceSpans] {
        if self.decoded.is_none() {
            let mut out = Vec::with_capacity(self.fragments.len());
            for (f, _) in self.fragments {
                match ResourceSpans::decode(f.bytes.clone()) {
                    Ok(rs) => out.push(rs),
                    Err(_) => self.decode_errors += 1,
                }
            }
            self.decoded = Some(out);
        }
        self.decoded.as_deref().unwrap_or_default()
    }

    fn all_spans(&mut self) -> impl Iterator<Item = &Span> {
        self.resources().iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans)
    }

    fn any_span(&mut self, f: impl FnMut(&Span) -> bool) -> bool {
        self.all_spans().any(f)
    }

    /// Whether a resource or span attribute `key` satisfies `f` (which is also told whether the
    /// attribute is a span's).
    fn any_attribute(&mut self, key: &str, mut f: impl FnMut(&Value, bool) -> bool) -> bool {
        let mut check = |attrs: &[spoor_model::otlp::KeyValue], on_span: bool| {
            attrs
                .iter()
                .any(|kv| kv.key == key && matches!(&kv.value, Some(AnyValue { value: Some(v) }) if f(v, on_span)))
        };
        for rs in self.resources() {
            if rs.resource.as_ref().is_some_and(|r| check(&r.attributes, false)) {
                return true;
            }
            if rs.scope_spans.iter().flat_map(|ss| &ss.spans).any(|s| check(&s.attributes, true)) {
                return true;
            }
        }
        false
    }
}

/// A token bucket in thousandths of a token, refilled by the caller's millisecond clock.
#[derive(Debug)]
pub(crate) struct Bucket {
    per_second: u128,
    capacity: u128,
    level: u128,
    last_ms: Option<u64>,
}

impl Bucket {
    pub fn new(per_second: u64, burst: u64) -> Bucket {
        Bucket { per_second: per_second as u128, capacity: burst as u128 * 1000, level: 0, last_ms: None }
    }

    /// Takes `cost` tokens if the bucket holds them.
    pub fn take(&mut self, now_ms: u64, cost: u64) -> bool {
        self.level = match self.last_ms {
            None => self.capacity,
            Some(last) => (self.level + now_ms.saturating_sub(last) as u128 * self.per_second).min(self.capacity),
        };
        self.last_ms = Some(self.last_ms.map_or(now_ms, |l| l.max(now_ms)));
        let need = cost as u128 * 1000;
        if need <= self.level {
            self.level -= need;
            true
        } else {
            false
        }
    }
}

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// `floor((2^64 − 1) × percentage / 100)`, exactly (the percentage is taken as the exact
/// binary fraction the f64 holds).
pub(crate) fn probabilistic_threshold(percentage: f64) -> u64 {
    if percentage.is_nan() || percentage <= 0.0 {
        return 0;
    }
    if percentage >= 100.0 {
        return u64::MAX;
    }
    // percentage = mantissa × 2^exponent, mantissa < 2^53.
    let bits = percentage.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if raw_exp == 0 { (frac, -1074) } else { (frac | (1 << 52), raw_exp - 1075) };
    // (2^64 − 1) × mantissa < 2^117 fits; percentage < 100 bounds a positive exponent to
    // mantissa × 2^exponent < 100, so the shift cannot overflow either.
    let scaled = u64::MAX as u128 * mantissa as u128;
    let value = if exponent >= 0 {
        (scaled << exponent) / 100
    } else {
        // floor(floor(a / 100) / 2^k) = floor(a / (100 × 2^k)).
        let k = -exponent as u32;
        if k >= 128 { 0 } else { (scaled / 100) >> k }
    };
    value.min(u64::MAX as u128) as u64
}

/// The default salt of upstream's probabilistic sampler.
pub(crate) const DEFAULT_SALT: &str = "default-hash-seed";

/// The value of `key` in a W3C `tracestate` header, `Err` when the header is malformed.
pub(crate) fn tracestate_value<'s>(header: &'s str, key: &str) -> Result<Option<&'s str>, ()> {
    let mut found = None;
    let mut seen: Vec<&str> = Vec::new();
    for member in header.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (k, v) = member.split_once('=').ok_or(())?;
        if !valid_key(k) || !valid_value(v) || seen.contains(&k) {
            return Err(());
        }
        seen.push(k);
        if seen.len() > 32 {
            return Err(());
        }
        if k == key {
            found = Some(v);
        }
    }
    Ok(found)
}

fn valid_key(k: &str) -> bool {
    let tail = |s: &str| s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'));
    match k.split_once('@') {
        None => k.len() <= 256 && k.as_bytes().first().is_some_and(u8::is_ascii_lowercase) && tail(k),
        Some((tenant, system)) => {
            (1..=241).contains(&tenant.len())
                && tenant.as_bytes()[0].is_ascii_lowercase() | tenant.as_bytes()[0].is_ascii_digit()
                && tail(tenant)
                && (1..=14).contains(&system.len())
                && system.as_bytes()[0].is_ascii_lowercase()
                && tail(system)
        }
    }
}

fn valid_value(v: &str) -> bool {
    (1..=256).contains(&v.len())
        && v.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !v.ends_with(' ')
}

/// A policy ready to evaluate. Stateful ones (rate, bytes, composite) keep their state here.
#[derive(Debug)]
pub(crate) enum Policy {
    AlwaysSample,
    Latency { lower_ms: u64, upper_ms: Option<u64> },
    Numeric { key: String, min: i64, max: i64, invert: bool },
    Probabilistic { salt: Vec<u8>, threshold: u64 },
    StatusCode { codes: [bool; 3] },
    StringExact { key: String, values: HashSet<String>, invert: bool },
    StringRegex { key: String, patterns: RegexSet, invert: bool },
    Boolean { key: String, value: bool, invert: bool },
    SpanCount { min: u64, max: u64 },
    TraceState { key: String, values: Vec<String> },
    TraceFlags,
    Rate(Bucket),
    Bytes(Bucket),
    And(Vec<Policy>),
    Not(Box<Policy>),
    Drop(Vec<Policy>),
    Composite(Composite),
}

#[derive(Debug)]
pub(crate) struct Composite {
    max_total: u64,
    /// Sub-policy, its span budget per second, spans used in the current second.
    subs: Vec<(Policy, u64, u64)>,
    window: Option<u64>,
}

impl Policy {
    /// Compiles a checked configuration (see `config::check_tree`).
    pub fn compile(cfg: &PolicyConfig) -> Policy {
        match &cfg.policy {
            PolicyKind::AlwaysSample => Policy::AlwaysSample,
            PolicyKind::Latency(c) => Policy::Latency {
                lower_ms: c.threshold_ms.max(0) as u64,
                upper_ms: (c.upper_threshold_ms > 0).then_some(c.upper_threshold_ms as u64),
            },
            PolicyKind::NumericAttribute(c) => Policy::Numeric {
                key: c.key.clone(),
                min: if c.min_value == 0 { i64::MIN } else { c.min_value },
                max: if c.max_value == 0 { i64::MAX } else { c.max_value },
                invert: c.invert_match,
            },
            PolicyKind::Probabilistic(c) => Policy::Probabilistic {
                salt: if c.hash_salt.is_empty() { DEFAULT_SALT } else { &c.hash_salt }.as_bytes().to_vec(),
                threshold: probabilistic_threshold(c.sampling_percentage),
            },
            PolicyKind::StatusCode(c) => {
                let mut codes = [false; 3];
                for code in c.status_codes.iter().filter_map(|s| status_code_number(s)) {
                    codes[code as usize] = true;
                }
                Policy::StatusCode { codes }
            }
            PolicyKind::StringAttribute(c) => {
                let values = c.values.iter().filter(|v| !v.is_empty());
                if c.enabled_regex_matching {
                    Policy::StringRegex {
                        key: c.key.clone(),
                        patterns: RegexSet::new(values).unwrap_or_else(|_| RegexSet::empty()),
                        invert: c.invert_match,
                    }
                } else {
                    Policy::StringExact {
                        key: c.key.clone(),
                        values: values.cloned().collect(),
                        invert: c.invert_match,
                    }
                }
            }
            PolicyKind::BooleanAttribute(c) => {
                Policy::Boolean { key: c.key.clone(), value: c.value, invert: c.invert_match }
            }
            PolicyKind::SpanCount(c) => Policy::SpanCount { min: c.min_spans, max: c.max_spans },
            PolicyKind::TraceState(c) => Policy::TraceState {
                key: c.key.clone(),
                values: c.values.iter().filter(|v| c.key.len() + v.len() < 256).cloned().collect(),
            },
            PolicyKind::TraceFlags => Policy::TraceFlags,
            PolicyKind::RateLimiting(c) => {
                Policy::Rate(Bucket::new(c.spans_per_second, c.spans_per_second.saturating_mul(2)))
            }
            PolicyKind::BytesLimiting(c) => {
                let burst = if c.burst_capacity == 0 { c.bytes_per_second.saturating_mul(2) } else { c.burst_capacity };
                Policy::Bytes(Bucket::new(c.bytes_per_second, burst))
            }
            PolicyKind::And(c) => Policy::And(c.and_sub_policy.iter().map(Policy::compile).collect()),
            PolicyKind::Not(c) => Policy::Not(Box::new(Policy::compile(&c.not_sub_policy))),
            PolicyKind::Drop(c) => Policy::Drop(c.drop_sub_policy.iter().map(Policy::compile).collect()),
            PolicyKind::Composite(c) => {
                let n = c.composite_sub_policy.len().max(1) as u64;
                let max_total = c.max_total_spans_per_second;
                let subs = c
                    .composite_sub_policy
                    .iter()
                    .map(|sub| {
                        let budget = match c.rate_allocation.iter().find(|a| a.policy == sub.name) {
                            None => 0,
                            Some(a) if a.percent == 0 => max_total / n,
                            Some(a) => (max_total as u128 * a.percent as u128 / 100).min(u64::MAX as u128) as u64,
                        };
                        (Policy::compile(sub), budget, 0)
                    })
                    .collect();
                Policy::Composite(Composite { max_total, subs, window: None })
            }
        }
    }

    pub fn is_drop(&self) -> bool {
        matches!(self, Policy::Drop(_))
    }

    /// This policy's answer for `trace` at `now_ms`. `inverted`: give `invert_match` policies
    /// upstream's inverted answers.
    pub fn evaluate(&mut self, trace: &mut TraceView, now_ms: u64, inverted: bool) -> Verdict {
        let attribute = |matched: bool, invert: bool| match (invert, matched, inverted) {
            (false, m, _) => Verdict::from(m),
            (true, m, false) => Verdict::from(!m),
            (true, true, true) => Verdict::InvertNotSampled,
            (true, false, true) => Verdict::InvertSampled,
        };
        match self {
            Policy::AlwaysSample => Verdict::Sampled,
            Policy::Latency { lower_ms, upper_ms } => {
                let (mut start, mut end) = (u64::MAX, 0u64);
                for s in trace.all_spans() {
                    start = start.min(s.start_time_unix_nano);
                    end = end.max(s.end_time_unix_nano);
                }
                if start == u64::MAX {
                    return Verdict::NotSampled;
                }
                let ms = end.saturating_sub(start) / 1_000_000;
                Verdict::from(match upper_ms {
                    None => ms >= *lower_ms,
                    Some(upper) => *lower_ms < ms && ms <= *upper,
                })
            }
            Policy::Numeric { key, min, max, invert } => {
                let m = trace.any_attribute(key, |v, _| matches!(v, Value::IntValue(i) if (*min..=*max).contains(i)));
                attribute(m, *invert)
            }
            Policy::Probabilistic { salt, threshold } => Verdict::from(fnv1a64(&[salt, &trace.id.0]) <= *threshold),
            Policy::StatusCode { codes } => Verdict::from(trace.any_span(|s| {
                let code = s.status.as_ref().map_or(0, |st| st.code);
                (0..3).contains(&code) && codes[code as usize]
            })),
            Policy::StringExact { key, values, invert } => {
                let m = trace.any_attribute(key, |v, on_span| {
                    matches!(v, Value::StringValue(s) if !(on_span && s.is_empty()) && values.contains(s.as_str()))
                });
                attribute(m, *invert)
            }
            Policy::StringRegex { key, patterns, invert } => {
                let m = trace.any_attribute(key, |v, on_span| {
                    matches!(v, Value::StringValue(s) if !(on_span && s.is_empty()) && patterns.is_match(s))
                });
                attribute(m, *invert)
            }
            Policy::Boolean { key, value, invert } => {
                let m = trace.any_attribute(key, |v, _| matches!(v, Value::BoolValue(b) if b == value));
                attribute(m, *invert)
            }
            Policy::SpanCount { min, max } => Verdict::from(*min <= trace.spans && (*max == 0 || trace.spans <= *max)),
            Policy::TraceState { key, values } => Verdict::from(trace.any_span(
                |s| matches!(tracestate_value(&s.trace_state, key), Ok(Some(v)) if values.iter().any(|x| x == v)),
            )),
            Policy::TraceFlags => Verdict::from(trace.any_span(|s| s.flags & 1 == 1)),
            Policy::Rate(bucket) => Verdict::from(bucket.take(now_ms, trace.spans)),
            Policy::Bytes(bucket) => Verdict::from(bucket.take(now_ms, trace.bytes)),
            Policy::And(subs) => {
                for sub in subs {
                    if !sub.evaluate(trace, now_ms, inverted).yes() {
                        return Verdict::NotSampled;
                    }
                }
                Verdict::Sampled
            }
            Policy::Not(sub) => Verdict::from(!sub.evaluate(trace, now_ms, inverted).yes()),
            Policy::Drop(subs) => {
                for sub in subs {
                    if !sub.evaluate(trace, now_ms, inverted).yes() {
                        return Verdict::NotSampled;
                    }
                }
                Verdict::Dropped
            }
            Policy::Composite(c) => {
                let window = now_ms / 1000;
                if c.window != Some(window) {
                    c.window = Some(window);
                    c.subs.iter_mut().for_each(|s| s.2 = 0);
                }
                for (sub, budget, used) in &mut c.subs {
                    if sub.evaluate(trace, now_ms, inverted).yes() {
                        let after = used.saturating_add(trace.spans);
                        if after <= *budget && after <= c.max_total {
                            *used = after;
                            return Verdict::Sampled;
                        }
                        return Verdict::NotSampled;
                    }
                }
                Verdict::NotSampled
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_exact() {
        assert_eq!(probabilistic_threshold(100.0), u64::MAX);
        assert_eq!(probabilistic_threshold(0.0), 0);
        assert_eq!(probabilistic_threshold(50.0), u64::MAX / 2);
        assert_eq!(probabilistic_threshold(25.0), u64::MAX / 4);
        // 10 is not a binary fraction of 100: floor((2^64-1)/10).
        assert_eq!(probabilistic_threshold(10.0), u64::MAX / 10);
        assert_eq!(probabilistic_threshold(1.0), u64::MAX / 100);
        assert_eq!(probabilistic_threshold(f64::MIN_POSITIVE), 0);
        assert!(probabilistic_threshold(99.999_999_999) < u64::MAX);
    }

    #[test]
    fn fnv_vectors() {
        let salt = DEFAULT_SALT.as_bytes();
        let one: Vec<u8> = (1..=16).collect();
        assert_eq!(fnv1a64(&[salt, &one]), 0xdbcf_64d5_420f_4cad);
        let two = [0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c];
        assert_eq!(fnv1a64(&[salt, &two]), 0x95f1_76d2_91b1_d3f7);
        assert_eq!(fnv1a64(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn tracestate_parsing() {
        assert_eq!(tracestate_value("vendor=v1,other=x", "vendor"), Ok(Some("v1")));
        assert_eq!(tracestate_value(" a=1 ,\t,b@sys=2", "b@sys"), Ok(Some("2")));
        assert_eq!(tracestate_value("", "a"), Ok(None));
        assert!(tracestate_value("Vendor=v1", "vendor").is_err());
        assert!(tracestate_value("vendor", "vendor").is_err());
        assert!(tracestate_value("a=1,a=2", "a").is_err());
        assert!(tracestate_value("a=x=y", "a").is_err());
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(tracestate_value(&many.join(","), "k0").is_err());
    }

    #[test]
    fn bucket_refills_by_the_millisecond() {
        let mut b = Bucket::new(100, 200);
        assert!(b.take(0, 100));
        assert!(b.take(0, 100));
        assert!(!b.take(0, 1));
        assert!(b.take(10, 1));
        assert!(!b.take(10, 1));
        assert!(!b.take(5, 1), "a clock going back refills nothing");
        assert!(b.take(1010, 100));
        assert!(!b.take(100_000, 201));
    }
}
