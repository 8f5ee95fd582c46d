//! The `tail_sampling` configuration, in the collector's YAML shape.
//!
//! A policy is written as `{name, type, <type>: {...}}`, exactly as the collector writes it:
//!
//! ```yaml
//! tail_sampling:
//!   decision_wait: 10s
//!   num_traces: 100000
//!   policies:
//!     - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
//!     - {name: slow, type: latency, latency: {threshold_ms: 1000}}
//!     - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
//! ```
//!
//! Checks run while the YAML is read (so a YAML reader's error carries the line and column of
//! the offending policy, and the message names it) and again in [`Sampler::new`] for
//! configurations built in code.
//!
//! [`Sampler::new`]: super::Sampler::new

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;

/// The collector's `tail_sampling` processor settings, plus two of ours (`max_bytes`,
/// `inverted_decisions`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// Time from a trace's first fragment to its decision.
    #[serde(with = "crate::duration", default = "defaults::decision_wait")]
    pub decision_wait: Duration,
    /// Traces held at once (undecided ones plus decided ones kept to route late spans).
    #[serde(default = "defaults::num_traces")]
    pub num_traces: usize,
    /// OURS: byte budget of buffered (undecided) fragments.
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: usize,
    /// Accepted for compatibility; a sizing hint upstream, unused here.
    #[serde(default)]
    pub expected_new_traces_per_sec: u64,
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// Stop evaluating policies at the first that says sampled.
    #[serde(default)]
    pub sample_on_first_match: bool,
    /// On shutdown, drop undecided traces instead of deciding them on partial data.
    #[serde(default)]
    pub drop_pending_traces_on_shutdown: bool,
    /// When full, push back (see [`Sampler::has_room`]) instead of evicting the oldest trace.
    ///
    /// [`Sampler::has_room`]: super::Sampler::has_room
    #[serde(default)]
    pub block_on_overflow: bool,
    /// OURS: `false` (default) gives `invert_match` policies plain sampled/not-sampled answers;
    /// `true` keeps upstream's deprecated inverted decisions, where an inverted "not sampled"
    /// vetoes every other policy.
    #[serde(default)]
    pub inverted_decisions: bool,
    #[serde(deserialize_with = "policies")]
    pub policies: Vec<PolicyConfig>,
}

mod defaults {
    use std::time::Duration;

    pub fn decision_wait() -> Duration {
        Duration::from_secs(30)
    }
    pub fn num_traces() -> usize {
        50_000
    }
    pub fn max_bytes() -> usize {
        256 << 20
    }
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: defaults::decision_wait(),
            num_traces: defaults::num_traces(),
            max_bytes: defaults::max_bytes(),
            expected_new_traces_per_sec: 0,
            decision_cache: DecisionCacheConfig::default(),
            sample_on_first_match: false,
            drop_pending_traces_on_shutdown: false,
            block_on_overflow: false,
            inverted_decisions: false,
            policies: Vec::new(),
        }
    }
}

/// LRU caches of decided trace IDs; `0` turns a cache off.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionCacheConfig {
    pub sampled_cache_size: usize,
    pub non_sampled_cache_size: usize,
}

/// One named policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub struct PolicyConfig {
    pub name: String,
    pub policy: PolicyKind,
}

impl PolicyConfig {
    pub fn new(name: impl Into<String>, policy: PolicyKind) -> PolicyConfig {
        PolicyConfig { name: name.into(), policy }
    }
}

/// A policy's type and settings.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyKind {
    AlwaysSample,
    Latency(LatencyConfig),
    NumericAttribute(NumericAttributeConfig),
    Probabilistic(ProbabilisticConfig),
    StatusCode(StatusCodeConfig),
    StringAttribute(StringAttributeConfig),
    BooleanAttribute(BooleanAttributeConfig),
    SpanCount(SpanCountConfig),
    TraceState(TraceStateConfig),
    TraceFlags,
    RateLimiting(RateLimitingConfig),
    BytesLimiting(BytesLimitingConfig),
    And(AndConfig),
    Not(NotConfig),
    Drop(DropConfig),
    Composite(CompositeConfig),
}

impl PolicyKind {
    /// The `type` value that selects this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            PolicyKind::AlwaysSample => "always_sample",
            PolicyKind::Latency(_) => "latency",
            PolicyKind::NumericAttribute(_) => "numeric_attribute",
            PolicyKind::Probabilistic(_) => "probabilistic",
            PolicyKind::StatusCode(_) => "status_code",
            PolicyKind::StringAttribute(_) => "string_attribute",
            PolicyKind::BooleanAttribute(_) => "boolean_attribute",
            PolicyKind::SpanCount(_) => "span_count",
            PolicyKind::TraceState(_) => "trace_state",
            PolicyKind::TraceFlags => "trace_flags",
            PolicyKind::RateLimiting(_) => "rate_limiting",
            PolicyKind::BytesLimiting(_) => "bytes_limiting",
            PolicyKind::And(_) => "and",
            PolicyKind::Not(_) => "not",
            PolicyKind::Drop(_) => "drop",
            PolicyKind::Composite(_) => "composite",
        }
    }
}

/// `latency`: whole milliseconds from the earliest start to the latest end of the trace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyConfig {
    pub threshold_ms: i64,
    /// `0`: no upper bound (and `threshold_ms` is inclusive); otherwise
    /// `threshold_ms < duration ≤ upper_threshold_ms`.
    pub upper_threshold_ms: i64,
}

/// `numeric_attribute`: an int attribute within `[min_value, max_value]`; `0` means unbounded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NumericAttributeConfig {
    pub key: String,
    pub min_value: i64,
    pub max_value: i64,
    pub invert_match: bool,
}

/// `probabilistic`: a share of trace IDs chosen by hash, the same on every instance.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Empty means the collector's default salt, `default-hash-seed`.
    pub hash_salt: String,
    pub sampling_percentage: f64,
}

/// `status_code`: any span with one of these codes (`OK`, `ERROR`, `UNSET`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusCodeConfig {
    pub status_codes: Vec<String>,
}

/// `string_attribute`: a string attribute equal to one of `values` (or, with
/// `enabled_regex_matching`, containing a match of one of them — patterns are not anchored).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StringAttributeConfig {
    pub key: String,
    pub values: Vec<String>,
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility; Rust's regex engine needs no match cache.
    pub cache_max_size: usize,
    pub invert_match: bool,
}

impl Default for StringAttributeConfig {
    fn default() -> Self {
        StringAttributeConfig {
            key: String::new(),
            values: Vec::new(),
            enabled_regex_matching: false,
            cache_max_size: 128,
            invert_match: false,
        }
    }
}

/// `boolean_attribute`: a bool-typed attribute equal to `value`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    pub key: String,
    pub value: bool,
    pub invert_match: bool,
}

/// `span_count`: `min_spans ≤ spans` and (`max_spans` = 0 or `spans ≤ max_spans`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SpanCountConfig {
    pub min_spans: u64,
    pub max_spans: u64,
}

/// `trace_state`: a span whose W3C tracestate has `key` set to one of `values`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TraceStateConfig {
    pub key: String,
    pub values: Vec<String>,
}

/// `rate_limiting`: token bucket of `spans_per_second`, burst twice that.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitingConfig {
    pub spans_per_second: u64,
}

/// `bytes_limiting`: token bucket over encoded trace bytes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BytesLimitingConfig {
    pub bytes_per_second: u64,
    /// `0`: twice `bytes_per_second`.
    pub burst_capacity: u64,
}

/// `and`: sampled when every sub-policy says sampled.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AndConfig {
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `not`: the opposite of its sub-policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotConfig {
    pub not_sub_policy: Box<PolicyConfig>,
}

/// `drop`: drops the trace (whatever other policies say) when every sub-policy says sampled.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DropConfig {
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite`: the first sub-policy that says sampled decides, within its share of a
/// per-second span budget.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompositeConfig {
    pub max_total_spans_per_second: u64,
    /// Accepted for compatibility; sub-policies run in `composite_sub_policy` order, as upstream.
    pub policy_order: Vec<String>,
    pub composite_sub_policy: Vec<PolicyConfig>,
    pub rate_allocation: Vec<RateAllocation>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateAllocation {
    pub policy: String,
    /// Share of `max_total_spans_per_second`; `0` means an equal share.
    pub percent: u64,
}

/// The YAML form: a name, a type, and one settings block per type (only the one named by
/// `type` is used, as in the collector).
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency: Option<LatencyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    numeric_attribute: Option<NumericAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probabilistic: Option<ProbabilisticConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_code: Option<StatusCodeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    string_attribute: Option<StringAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boolean_attribute: Option<BooleanAttributeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    span_count: Option<SpanCountConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_state: Option<TraceStateConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limiting: Option<RateLimitingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes_limiting: Option<BytesLimitingConfig>,
    /// Read only so that the `ottl_condition` type can be refused by name.
    #[allow(dead_code)]
    #[serde(default, skip_serializing)]
    ottl_condition: Option<IgnoredAny>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    and: Option<AndConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not: Option<NotConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drop: Option<DropConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    composite: Option<CompositeConfig>,
}

impl TryFrom<RawPolicy> for PolicyConfig {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<PolicyConfig, String> {
        let name = raw.name;
        let what = describe(&name, &raw.kind);
        let policy = match raw.kind.as_str() {
            "always_sample" => PolicyKind::AlwaysSample,
            "latency" => PolicyKind::Latency(raw.latency.unwrap_or_default()),
            "numeric_attribute" => PolicyKind::NumericAttribute(raw.numeric_attribute.unwrap_or_default()),
            "probabilistic" => PolicyKind::Probabilistic(raw.probabilistic.unwrap_or_default()),
            "status_code" => PolicyKind::StatusCode(raw.status_code.unwrap_or_default()),
            "string_attribute" => PolicyKind::StringAttribute(raw.string_attribute.unwrap_or_default()),
            "boolean_attribute" => PolicyKind::BooleanAttribute(raw.boolean_attribute.unwrap_or_default()),
            "span_count" => PolicyKind::SpanCount(raw.span_count.unwrap_or_default()),
            "trace_state" => PolicyKind::TraceState(raw.trace_state.unwrap_or_default()),
            "trace_flags" => PolicyKind::TraceFlags,
            "rate_limiting" => PolicyKind::RateLimiting(raw.rate_limiting.unwrap_or_default()),
            "bytes_limiting" => PolicyKind::BytesLimiting(raw.bytes_limiting.unwrap_or_default()),
            "and" => PolicyKind::And(raw.and.unwrap_or_default()),
            "drop" => PolicyKind::Drop(raw.drop.unwrap_or_default()),
            "composite" => PolicyKind::Composite(raw.composite.unwrap_or_default()),
            "not" => match raw.not {
                Some(not) => PolicyKind::Not(not),
                None => return Err(format!("{what}: a `not` policy needs `not: {{not_sub_policy: ...}}`")),
            },
            "ottl_condition" => {
                return Err(format!(
                    "{what}: `ottl_condition` policies are not supported by Spoor; use the other policy types"
                ));
            }
            "" => return Err(format!("{what}: `type` is missing")),
            other => return Err(format!("{what}: unknown policy type {other:?} (expected one of {TYPES})")),
        };
        let config = PolicyConfig { name, policy };
        check_own(&config).map_err(|(at, message)| format!("{what}: {at}: {message}"))?;
        Ok(config)
    }
}

const TYPES: &str = "always_sample, latency, numeric_attribute, probabilistic, status_code, string_attribute, \
     boolean_attribute, span_count, trace_state, trace_flags, rate_limiting, bytes_limiting, and, not, drop, composite";

fn describe(name: &str, kind: &str) -> String {
    if name.is_empty() { format!("unnamed {kind} policy") } else { format!("policy {name:?}") }
}

impl From<PolicyConfig> for RawPolicy {
    fn from(p: PolicyConfig) -> RawPolicy {
        let mut raw = RawPolicy { name: p.name, kind: p.policy.type_name().to_owned(), ..RawPolicy::default() };
        match p.policy {
            PolicyKind::AlwaysSample | PolicyKind::TraceFlags => {}
            PolicyKind::Latency(c) => raw.latency = Some(c),
            PolicyKind::NumericAttribute(c) => raw.numeric_attribute = Some(c),
            PolicyKind::Probabilistic(c) => raw.probabilistic = Some(c),
            PolicyKind::StatusCode(c) => raw.status_code = Some(c),
            PolicyKind::StringAttribute(c) => raw.string_attribute = Some(c),
            PolicyKind::BooleanAttribute(c) => raw.boolean_attribute = Some(c),
            PolicyKind::SpanCount(c) => raw.span_count = Some(c),
            PolicyKind::TraceState(c) => raw.trace_state = Some(c),
            PolicyKind::RateLimiting(c) => raw.rate_limiting = Some(c),
            PolicyKind::BytesLimiting(c) => raw.bytes_limiting = Some(c),
            PolicyKind::And(c) => raw.and = Some(c),
            PolicyKind::Not(c) => raw.not = Some(c),
            PolicyKind::Drop(c) => raw.drop = Some(c),
            PolicyKind::Composite(c) => raw.composite = Some(c),
        }
        raw
    }
}

/// Status codes by their OTLP numbers (UNSET 0, OK 1, ERROR 2).
pub(crate) fn status_code_number(name: &str) -> Option<i32> {
    match name {
        "UNSET" => Some(0),
        "OK" => Some(1),
        "ERROR" => Some(2),
        _ => None,
    }
}

/// Checks one policy's own settings, and that its sub-policies are of types allowed there
/// (their own settings were checked when they were read). `Err((key, message))`.
fn check_own(p: &PolicyConfig) -> Result<(), (String, String)> {
    let fail = |at: &str, message: String| Err((at.to_owned(), message));
    match &p.policy {
        PolicyKind::AlwaysSample | PolicyKind::TraceFlags => {}
        PolicyKind::Latency(c) => {
            if c.threshold_ms < 0 || c.upper_threshold_ms < 0 {
                return fail("latency", "thresholds cannot be negative".into());
            }
            if c.upper_threshold_ms != 0 && c.upper_threshold_ms <= c.threshold_ms {
                return fail("latency.upper_threshold_ms", "must be greater than threshold_ms (or 0 for none)".into());
            }
        }
        PolicyKind::NumericAttribute(c) => {
            if c.key.is_empty() {
                return fail("numeric_attribute.key", "is empty".into());
            }
            if c.min_value == 0 && c.max_value == 0 {
                return fail("numeric_attribute", "set min_value, max_value or both (0 means unbounded)".into());
            }
            if c.min_value != 0 && c.max_value != 0 && c.min_value > c.max_value {
                return fail("numeric_attribute", "min_value is greater than max_value".into());
            }
        }
        PolicyKind::Probabilistic(c) => {
            if c.sampling_percentage.is_nan() {
                return fail("probabilistic.sampling_percentage", "is not a number".into());
            }
        }
        PolicyKind::StatusCode(c) => {
            if c.status_codes.is_empty() {
                return fail("status_code.status_codes", "is empty (use OK, ERROR or UNSET)".into());
            }
            if let Some(bad) = c.status_codes.iter().find(|s| status_code_number(s).is_none()) {
                return fail(
                    "status_code.status_codes",
                    format!("{bad:?} is not a status code (use OK, ERROR or UNSET)"),
                );
            }
        }
        PolicyKind::StringAttribute(c) => {
            if c.key.is_empty() {
                return fail("string_attribute.key", "is empty".into());
            }
            if c.enabled_regex_matching
                && let Err(e) = regex::RegexSet::new(c.values.iter().filter(|v| !v.is_empty()))
            {
                return fail("string_attribute.values", format!("invalid regular expression: {e}"));
            }
        }
        PolicyKind::BooleanAttribute(c) => {
            if c.key.is_empty() {
                return fail("boolean_attribute.key", "is empty".into());
            }
        }
        PolicyKind::SpanCount(c) => {
            if c.max_spans != 0 && c.max_spans < c.min_spans {
                return fail("span_count.max_spans", "is less than min_spans (use 0 for no upper bound)".into());
            }
        }
        PolicyKind::TraceState(c) => {
            if c.key.is_empty() {
                return fail("trace_state.key", "is empty".into());
            }
        }
        PolicyKind::RateLimiting(c) => {
            if c.spans_per_second == 0 {
                return fail("rate_limiting.spans_per_second", "must be greater than 0".into());
            }
        }
        PolicyKind::BytesLimiting(c) => {
            if c.bytes_per_second == 0 {
                return fail("bytes_limiting.bytes_per_second", "must be greater than 0".into());
            }
        }
        PolicyKind::And(c) => check_subs("and.and_sub_policy", &c.and_sub_policy, false)?,
        PolicyKind::Not(c) => check_subs("not.not_sub_policy", std::slice::from_ref(&*c.not_sub_policy), false)?,
        PolicyKind::Drop(c) => check_subs("drop.drop_sub_policy", &c.drop_sub_policy, false)?,
        PolicyKind::Composite(c) => {
            if c.max_total_spans_per_second == 0 {
                return fail("composite.max_total_spans_per_second", "must be greater than 0".into());
            }
            check_subs("composite.composite_sub_policy", &c.composite_sub_policy, true)?;
            let names: BTreeSet<&str> = c.composite_sub_policy.iter().map(|s| s.name.as_str()).collect();
            if names.len() != c.composite_sub_policy.len() || names.contains("") {
                return fail("composite.composite_sub_policy", "sub-policies need unique, non-empty names".into());
            }
            if let Some(a) = c.rate_allocation.iter().find(|a| !names.contains(a.policy.as_str())) {
                return fail("composite.rate_allocation", format!("{:?} is not a composite_sub_policy", a.policy));
            }
        }
    }
    Ok(())
}

fn check_subs(at: &str, subs: &[PolicyConfig], in_composite: bool) -> Result<(), (String, String)> {
    if subs.is_empty() {
        return Err((at.to_owned(), "needs at least one sub-policy".into()));
    }
    for (i, s) in subs.iter().enumerate() {
        if matches!(s.policy, PolicyKind::Drop(_) | PolicyKind::Composite(_)) {
            let place = if in_composite { "a composite" } else { "an and/not/drop" };
            return Err((
                format!("{at}[{i}]"),
                format!("{} cannot be used inside {place} policy", describe(&s.name, s.policy.type_name())),
            ));
        }
    }
    Ok(())
}

/// Checks a policy tree built in code (YAML input was checked while read).
pub(crate) fn check_tree(p: &PolicyConfig, at: &str) -> Result<(), Error> {
    check_own(p).map_err(|(key, message)| Error::config(format!("{at}.{key}"), message))?;
    let subs: &[PolicyConfig] = match &p.policy {
        PolicyKind::And(c) => &c.and_sub_policy,
        PolicyKind::Not(c) => std::slice::from_ref(&*c.not_sub_policy),
        PolicyKind::Drop(c) => &c.drop_sub_policy,
        PolicyKind::Composite(c) => &c.composite_sub_policy,
        _ => &[],
    };
    let key = match &p.policy {
        PolicyKind::And(_) => "and.and_sub_policy",
        PolicyKind::Not(_) => "not.not_sub_policy",
        PolicyKind::Drop(_) => "drop.drop_sub_policy",
        _ => "composite.composite_sub_policy",
    };
    for (i, s) in subs.iter().enumerate() {
        check_tree(s, &format!("{at}.{key}[{i}]"))?;
    }
    Ok(())
}

impl TailSamplingConfig {
    /// Every check the YAML reader makes, for configurations built in code.
    pub fn validate(&self) -> Result<(), Error> {
        const AT: &str = "tail_sampling";
        if self.num_traces == 0 {
            return Err(Error::config(format!("{AT}.num_traces"), "must be greater than 0"));
        }
        if self.max_bytes == 0 {
            return Err(Error::config(format!("{AT}.max_bytes"), "must be greater than 0"));
        }
        if self.policies.is_empty() {
            return Err(Error::config(format!("{AT}.policies"), "needs at least one policy"));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("{AT}.policies[{i}]");
            if p.name.is_empty() {
                return Err(Error::config(format!("{at}.name"), "policy names cannot be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(Error::config(format!("{at}.name"), format!("duplicate policy name {:?}", p.name)));
            }
            check_tree(p, &format!("{at} ({:?})", p.name))?;
        }
        Ok(())
    }
}

/// Reads `policies`, rejecting empty and duplicate names at the policy that has them.
fn policies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PolicyConfig>, D::Error> {
    struct List;
    struct Item<'a>(&'a [PolicyConfig]);

    impl<'de> DeserializeSeed<'de> for Item<'_> {
        type Value = PolicyConfig;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PolicyConfig, D::Error> {
            let p = PolicyConfig::deserialize(d)?;
            if p.name.is_empty() {
                return Err(de::Error::custom(format!("{} policy: every policy needs a name", p.policy.type_name())));
            }
            if self.0.iter().any(|q| q.name == p.name) {
                return Err(de::Error::custom(format!("policy {:?}: duplicate policy name", p.name)));
            }
            Ok(p)
        }
    }

    impl<'de> Visitor<'de> for List {
        type Value = Vec<PolicyConfig>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of policies")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<PolicyConfig>, A::Error> {
            let mut out = Vec::new();
            while let Some(p) = seq.next_element_seed(Item(&out))? {
                out.push(p);
            }
            if out.is_empty() {
                return Err(de::Error::custom("tail_sampling needs at least one policy"));
            }
            Ok(out)
        }
    }

    d.deserialize_seq(List)
}
