//! The compiled processor: actions ready to run and `include`/`exclude` filters with their
//! patterns compiled, and how a filter matches a span.

use regex::{Regex, RegexSet};
use spoor_model::otlp::{AnyValue, InstrumentationScope, KeyValue, Span, any_value::Value};

use super::value::value_to_string;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SetMode {
    Insert,
    Update,
    Upsert,
}

#[derive(Clone, Debug)]
pub(super) enum Source {
    Value(AnyValue),
    Attribute(String),
    Context(ContextKey),
}

#[derive(Clone, Debug)]
pub(super) enum ContextKey {
    /// Lowercased header name.
    Metadata(String),
    ClientAddress,
    /// `auth.<attr>`: Spoor has no authenticator output yet, so always missing.
    Auth,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum ConvertTo {
    Int,
    Double,
    String,
}

/// `key` and/or `pattern`: which attributes a delete or hash touches.
#[derive(Clone, Debug)]
pub(super) struct KeySelector {
    pub key: Option<String>,
    pub pattern: Option<Regex>,
}

impl KeySelector {
    pub fn matches(&self, k: &str) -> bool {
        self.key.as_deref() == Some(k) || self.pattern.as_ref().is_some_and(|p| p.is_match(k))
    }
}

#[derive(Clone, Debug)]
pub(super) enum Action {
    Set { key: String, mode: SetMode, source: Source, default: Option<AnyValue> },
    Delete(KeySelector),
    Hash(KeySelector),
    Extract { key: String, regex: Regex, names: Vec<String> },
    Convert { key: String, to: ConvertTo },
}

/// The collector's kind names, as OTLP/JSON spells them.
pub(super) const SPAN_KINDS: [&str; 6] = spoor_model::otlp::SPAN_KIND_NAMES;

fn kind_name(kind: i32) -> &'static str {
    usize::try_from(kind).ok().and_then(|k| SPAN_KINDS.get(k)).copied().unwrap_or("")
}

#[derive(Clone, Debug)]
pub(super) enum StrSet {
    Strict(Vec<String>),
    Regexp(RegexSet),
}

impl StrSet {
    fn matches(&self, s: &str) -> bool {
        match self {
            StrSet::Strict(v) => v.iter().any(|x| x == s),
            StrSet::Regexp(r) => r.is_match(s),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) enum ValueCond {
    Exists,
    Equals(AnyValue),
    Regexp(Regex),
}

#[derive(Clone, Debug)]
pub(super) struct AttrCond {
    pub key: String,
    pub value: ValueCond,
}

impl AttrCond {
    fn matches(&self, attrs: &[KeyValue]) -> bool {
        let Some(kv) = attrs.iter().find(|kv| kv.key == self.key) else { return false };
        match &self.value {
            ValueCond::Exists => true,
            ValueCond::Equals(v) => kv.value.as_ref().is_some_and(|x| x == v),
            ValueCond::Regexp(r) => kv.value.as_ref().is_some_and(|x| r.is_match(&value_to_string(x))),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct LibCond {
    pub name: StrSet,
    pub version: Option<StrSet>,
}

#[derive(Clone, Debug)]
pub(super) struct Matcher {
    pub services: Option<StrSet>,
    pub span_names: Option<StrSet>,
    pub span_kinds: Option<StrSet>,
    pub attributes: Vec<AttrCond>,
    pub resources: Vec<AttrCond>,
    pub libraries: Vec<LibCond>,
}

impl Matcher {
    /// All given fields must match; within a list field any item may match; `attributes`
    /// and `resources` items must all match.
    pub fn matches(&self, res: &[KeyValue], scope: Option<&InstrumentationScope>, span: &Span) -> bool {
        if let Some(s) = &self.services {
            let svc = res.iter().find(|kv| kv.key == "service.name").and_then(|kv| {
                match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.as_str()),
                    _ => None,
                }
            });
            if !svc.is_some_and(|n| s.matches(n)) {
                return false;
            }
        }
        if let Some(s) = &self.span_names
            && !s.matches(&span.name)
        {
            return false;
        }
        if let Some(s) = &self.span_kinds
            && !s.matches(kind_name(span.kind))
        {
            return false;
        }
        if !self.attributes.iter().all(|c| c.matches(&span.attributes)) {
            return false;
        }
        if !self.resources.iter().all(|c| c.matches(res)) {
            return false;
        }
        if !self.libraries.is_empty() {
            let (name, version) = scope.map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
            if !self
                .libraries
                .iter()
                .any(|l| l.name.matches(name) && l.version.as_ref().is_none_or(|v| v.matches(version)))
            {
                return false;
            }
        }
        true
    }
}
