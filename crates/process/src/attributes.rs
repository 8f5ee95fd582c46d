//! The collector's `attributes` processor: insert, update, upsert, delete, hash, extract and
//! convert actions on span attributes, with optional `include`/`exclude` span filters.
//!
//! The configuration is the collector's YAML, so a team can paste what it already runs:
//!
//! ```yaml
//! actions:
//!   - { key: environment, value: production, action: insert }
//!   - { key: user.email, action: hash }
//!   - { pattern: ^secret_, action: delete }
//!   - { key: http.url, pattern: '^.*/users/(?P<user_id>\d+)', action: extract }
//! include:
//!   match_type: strict
//!   services: [checkout]
//! ```
//!
//! Spoor adds `apply_to: [span, resource, event, link]` (default `[span]`, the collector's
//! behaviour) to run the same actions on resource, span-event and span-link attributes.
//!
//! The configuration is checked while it is deserialized, so a YAML error points at the line of
//! the offending entry and names it (`actions[1]: extract requires a pattern`).
//!
//! **Regular expressions are unanchored** everywhere in this processor (`pattern` of
//! delete/hash/extract, and `match_type: regexp` filters): a pattern matches if it matches any
//! part of the text, exactly as the collector behaves (its filter comments speak of a "full match"
//! but its code does a substring search). Write `^…$` to anchor.

use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use regex::{Regex, RegexSet};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spoor_model::otlp::{
    AnyValue, ArrayValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, KeyValueList, Span,
    any_value::Value,
};

use crate::{Counts, Error};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The `attributes` processor's configuration, in the collector's shape.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// Actions, run in this order on each attribute map.
    #[serde(default, deserialize_with = "de_actions")]
    pub actions: Vec<ActionConfig>,
    /// Only spans matching this are processed.
    #[serde(default, deserialize_with = "de_include")]
    pub include: Option<MatchConfig>,
    /// Spans matching this are not processed (checked after `include`).
    #[serde(default, deserialize_with = "de_exclude")]
    pub exclude: Option<MatchConfig>,
    /// Spoor extension: which attribute maps the actions run on. Default `[span]`.
    #[serde(default = "default_apply_to", deserialize_with = "de_apply_to")]
    pub apply_to: Vec<Target>,
}

fn default_apply_to() -> Vec<Target> {
    vec![Target::Span]
}

/// An attribute map the actions can run on (`apply_to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Span,
    Resource,
    Event,
    Link,
}

/// One entry of `actions`, as written. Checked when deserialized and again by
/// [`Attributes::new`] (for configurations built in code).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub key: Option<String>,
    /// A literal value (YAML string, int, float, bool, list or map).
    pub value: Option<serde_json::Value>,
    pub pattern: Option<String>,
    pub from_attribute: Option<String>,
    pub from_context: Option<String>,
    pub default_value: Option<serde_json::Value>,
    /// insert, update, upsert, delete, hash, extract, convert (case-insensitive).
    pub action: String,
    /// int, double or string (for `convert`).
    pub converted_type: Option<String>,
}

/// An `include` or `exclude` block.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `strict` or `regexp` (required).
    pub match_type: Option<String>,
    /// The collector's regexp cache settings; accepted and ignored (compiled sets need no cache).
    pub regexp: Option<RegexpCacheConfig>,
    /// Resource `service.name`.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub span_names: Vec<String>,
    /// `SPAN_KIND_SERVER` etc.; in strict mode `server`/`SERVER` are accepted too.
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// Span attributes; all must match.
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
    /// Resource attributes; all must match.
    #[serde(default)]
    pub resources: Vec<AttributeMatch>,
    /// Instrumentation scopes; any may match.
    #[serde(default)]
    pub libraries: Vec<LibraryMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexpCacheConfig {
    pub cacheenabled: Option<bool>,
    pub cachemaxnumentries: Option<u64>,
}

/// `{key, value}`: the attribute must exist and, if `value` is given, equal it (strict, typed)
/// or match it (regexp, against the value's string rendering).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    pub key: String,
    pub value: Option<serde_json::Value>,
}

/// `{name, version}` of an instrumentation scope; `version` optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryMatch {
    pub name: String,
    pub version: Option<String>,
}

// ----- validation during deserialization -----------------------------------------------------

/// Deserializes a list whose elements are checked one by one while the deserializer still
/// points at them, so the YAML error carries the element's line and the message names it
/// (`{field}[{i}]: …`).
pub(crate) fn de_checked_seq<'de, D, T, F>(d: D, field: &'static str, check: F) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: Fn(&T, &str) -> Result<(), Error>,
{
    struct Seed<'c, T, F> {
        at: String,
        check: &'c F,
        _t: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, F: Fn(&T, &str) -> Result<(), Error>> DeserializeSeed<'de> for Seed<'_, T, F> {
        type Value = T;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            let v = T::deserialize(d)?;
            (self.check)(&v, &self.at).map_err(de::Error::custom)?;
            Ok(v)
        }
    }
    struct V<T, F> {
        field: &'static str,
        check: F,
        _t: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, F: Fn(&T, &str) -> Result<(), Error>> Visitor<'de> for V<T, F> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list for `{}`", self.field)
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Vec<T>, S::Error> {
            let mut out = Vec::new();
            loop {
                let seed = Seed { at: format!("{}[{}]", self.field, out.len()), check: &self.check, _t: PhantomData };
                match s.next_element_seed(seed)? {
                    Some(v) => out.push(v),
                    None => return Ok(out),
                }
            }
        }
    }
    d.deserialize_seq(V { field, check, _t: PhantomData })
}

/// Deserializes `T` and checks it at once (errors carry the node's location).
pub(crate) fn de_checked<'de, D, T, F>(d: D, check: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: FnOnce(&T) -> Result<(), Error>,
{
    let v = T::deserialize(d)?;
    check(&v).map_err(de::Error::custom)?;
    Ok(v)
}

fn de_actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ActionConfig>, D::Error> {
    de_checked_seq(d, "actions", |a: &ActionConfig, at| compile_action(a, at).map(drop))
}

fn de_include<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MatchConfig>, D::Error> {
    de_checked(d, |m: &MatchConfig| compile_matcher(m, "include").map(drop)).map(Some)
}

fn de_exclude<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MatchConfig>, D::Error> {
    de_checked(d, |m: &MatchConfig| compile_matcher(m, "exclude").map(drop)).map(Some)
}

fn de_apply_to<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Target>, D::Error> {
    de_checked(d, |t: &Vec<Target>| check_apply_to(t))
}

fn check_apply_to(t: &[Target]) -> Result<(), Error> {
    if t.is_empty() {
        return Err(Error::config("apply_to", "must name at least one of span, resource, event, link"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Compiled processor
// ---------------------------------------------------------------------------------------------

/// Request context for `from_context`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// Request headers / gRPC metadata, names lowercase; a name may repeat.
    pub metadata: &'a [(String, String)],
    /// The client's address (`client.address`).
    pub client_address: Option<&'a str>,
}

/// A compiled `attributes` processor.
#[derive(Clone, Debug)]
pub struct Attributes {
    actions: Vec<Action>,
    include: Option<Matcher>,
    exclude: Option<Matcher>,
    span: bool,
    resource: bool,
    event: bool,
    link: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetMode {
    Insert,
    Update,
    Upsert,
}

#[derive(Clone, Debug)]
enum Source {
    Value(AnyValue),
    Attribute(String),
    Context(ContextKey),
}

#[derive(Clone, Debug)]
enum ContextKey {
    /// Lowercased header name.
    Metadata(String),
    ClientAddress,
    /// `auth.<attr>`: Spoor has no authenticator output yet, so always missing.
    Auth,
}

#[derive(Clone, Copy, Debug)]
enum ConvertTo {
    Int,
    Double,
    String,
}

/// `key` and/or `pattern`: which attributes a delete or hash touches.
#[derive(Clone, Debug)]
struct KeySelector {
    key: Option<String>,
    pattern: Option<Regex>,
}

impl KeySelector {
    fn matches(&self, k: &str) -> bool {
        self.key.as_deref() == Some(k) || self.pattern.as_ref().is_some_and(|p| p.is_match(k))
    }
}

#[derive(Clone, Debug)]
enum Action {
    Set { key: String, mode: SetMode, source: Source, default: Option<AnyValue> },
    Delete(KeySelector),
    Hash(KeySelector),
    Extract { key: String, regex: Regex, names: Vec<String> },
    Convert { key: String, to: ConvertTo },
}

impl Attributes {
    /// Checks and compiles a configuration.
    pub fn new(cfg: &AttributesConfig) -> Result<Attributes, Error> {
        let actions = cfg
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| compile_action(a, &format!("actions[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let include = cfg.include.as_ref().map(|m| compile_matcher(m, "include")).transpose()?;
        let exclude = cfg.exclude.as_ref().map(|m| compile_matcher(m, "exclude")).transpose()?;
        check_apply_to(&cfg.apply_to)?;
        let has = |t| cfg.apply_to.contains(&t);
        Ok(Attributes {
            actions,
            include,
            exclude,
            span: has(Target::Span),
            resource: has(Target::Resource),
            event: has(Target::Event),
            link: has(Target::Link),
        })
    }

    /// Runs the actions on every span (and, per `apply_to`, resource, event and link) that
    /// passes the filters. Filters are evaluated on the request as it arrived, before any
    /// action of this processor ran. A resource is processed when at least one of its spans
    /// passes (or, with no filters, always).
    pub fn apply(&self, req: &mut ExportTraceServiceRequest, ctx: &Context) -> Counts {
        let mut counts = Counts::default();
        if self.actions.is_empty() {
            return counts;
        }
        let filtered = self.include.is_some() || self.exclude.is_some();
        let mut pass: Vec<bool> = Vec::new();
        for rs in &mut req.resource_spans {
            if filtered {
                pass.clear();
                let res_attrs: &[KeyValue] = rs.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or(&[]);
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        pass.push(self.passes(res_attrs, ss.scope.as_ref(), span));
                    }
                }
            }
            if self.resource
                && (!filtered || pass.iter().any(|p| *p))
                && let Some(r) = rs.resource.as_mut()
            {
                counts += self.run(&mut r.attributes, ctx);
            }
            let mut i = 0;
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    let ok = !filtered || pass[i];
                    i += 1;
                    if !ok {
                        continue;
                    }
                    if self.span {
                        counts += self.run(&mut span.attributes, ctx);
                    }
                    if self.event {
                        for e in &mut span.events {
                            counts += self.run(&mut e.attributes, ctx);
                        }
                    }
                    if self.link {
                        for l in &mut span.links {
                            counts += self.run(&mut l.attributes, ctx);
                        }
                    }
                }
            }
        }
        counts
    }

    fn passes(&self, res: &[KeyValue], scope: Option<&InstrumentationScope>, span: &Span) -> bool {
        if let Some(m) = &self.include
            && !m.matches(res, scope, span)
        {
            return false;
        }
        if let Some(m) = &self.exclude
            && m.matches(res, scope, span)
        {
            return false;
        }
        true
    }

    /// Runs every action, in order, on one attribute map.
    fn run(&self, attrs: &mut Vec<KeyValue>, ctx: &Context) -> Counts {
        let mut c = Counts::default();
        for a in &self.actions {
            match a {
                Action::Set { key, mode, source, default } => {
                    let pos = attrs.iter().position(|kv| kv.key == *key);
                    let skip = match mode {
                        SetMode::Insert => pos.is_some(),
                        SetMode::Update => pos.is_none(),
                        SetMode::Upsert => false,
                    };
                    if skip {
                        continue;
                    }
                    let v = match source {
                        Source::Value(v) => Some(v.clone()),
                        Source::Attribute(src) => {
                            attrs.iter().find(|kv| kv.key == *src).map(|kv| kv.value.clone().unwrap_or_default())
                        }
                        Source::Context(k) => context_value(ctx, k).map(string_value),
                    };
                    let Some(v) = v.or_else(|| default.clone()) else { continue };
                    match pos {
                        Some(p) => attrs[p].value = Some(v),
                        None => attrs.push(KeyValue { key: key.clone(), value: Some(v) }),
                    }
                    c.set += 1;
                }
                Action::Delete(sel) => {
                    let before = attrs.len();
                    attrs.retain(|kv| !sel.matches(&kv.key));
                    c.deleted += (before - attrs.len()) as u64;
                }
                Action::Hash(sel) => {
                    for kv in attrs.iter_mut().filter(|kv| sel.matches(&kv.key)) {
                        let h = sha256_value(kv.value.as_ref());
                        kv.value = Some(string_value(h));
                        c.hashed += 1;
                    }
                }
                Action::Extract { key, regex, names } => {
                    let Some(Value::StringValue(s)) =
                        attrs.iter().find(|kv| kv.key == *key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    else {
                        continue;
                    };
                    let Some(caps) = regex.captures(s) else { continue };
                    let found: Vec<(String, String)> = names
                        .iter()
                        .map(|n| (n.clone(), caps.name(n).map_or(String::new(), |m| m.as_str().to_owned())))
                        .collect();
                    for (k, v) in found {
                        upsert(attrs, k, string_value(v));
                        c.set += 1;
                    }
                }
                Action::Convert { key, to } => {
                    let Some(kv) = attrs.iter_mut().find(|kv| kv.key == *key) else { continue };
                    if let Some(v) = convert(kv.value.as_ref(), *to) {
                        kv.value = Some(v);
                        c.set += 1;
                    }
                }
            }
        }
        c
    }
}

fn upsert(attrs: &mut Vec<KeyValue>, key: String, v: AnyValue) {
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(v),
        None => attrs.push(KeyValue { key, value: Some(v) }),
    }
}

fn context_value(ctx: &Context, k: &ContextKey) -> Option<String> {
    match k {
        ContextKey::ClientAddress => ctx.client_address.map(str::to_owned),
        ContextKey::Auth => None,
        ContextKey::Metadata(name) => {
            let mut vals = ctx.metadata.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
            let first = vals.next()?;
            let mut out = first.to_owned();
            for v in vals {
                out.push(';');
                out.push_str(v);
            }
            Some(out)
        }
    }
}

pub(crate) fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(s.into())) }
}

/// The `hash` action's digest: SHA-256, lowercase hex, of the value's canonical bytes (string:
/// UTF-8; bool: one byte 1/0; int: 8 bytes little-endian; double: IEEE-754 bits, 8 bytes
/// little-endian). Other types (bytes, list, map, empty), and the empty string, give the empty
/// string, as the collector does.
pub fn sha256_value(v: Option<&AnyValue>) -> String {
    let mut buf = [0u8; 8];
    let bytes: &[u8] = match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.as_bytes(),
        Some(Value::BoolValue(b)) => {
            buf[0] = *b as u8;
            &buf[..1]
        }
        Some(Value::IntValue(i)) => {
            buf = i.to_le_bytes();
            &buf
        }
        Some(Value::DoubleValue(f)) => {
            buf = f.to_bits().to_le_bytes();
            &buf
        }
        _ => &[],
    };
    if bytes.is_empty() {
        return String::new();
    }
    hex(&Sha256::digest(bytes))
}

pub(crate) use spoor_model::ids::hex;

fn convert(v: Option<&AnyValue>, to: ConvertTo) -> Option<AnyValue> {
    let v = v?.value.as_ref();
    let out = match (to, v) {
        (ConvertTo::Int, Some(Value::DoubleValue(f))) => Value::IntValue(f.trunc() as i64),
        (ConvertTo::Int, Some(Value::BoolValue(b))) => Value::IntValue(*b as i64),
        (ConvertTo::Int, Some(Value::StringValue(s))) => Value::IntValue(s.parse::<i64>().ok()?),
        (ConvertTo::Double, Some(Value::IntValue(i))) => Value::DoubleValue(*i as f64),
        (ConvertTo::Double, Some(Value::BoolValue(b))) => Value::DoubleValue(if *b { 1.0 } else { 0.0 }),
        (ConvertTo::Double, Some(Value::StringValue(s))) => Value::DoubleValue(s.parse::<f64>().ok()?),
        (ConvertTo::String, Some(Value::StringValue(_))) => return None,
        (ConvertTo::String, v) => Value::StringValue(render(v)),
        _ => return None,
    };
    Some(AnyValue { value: Some(out) })
}

/// A value's string rendering, as the collector's `AsString`: strings as they are, ints in
/// base 10, doubles in the shortest round-trip form (exponent form below 1e-6 and from 1e21
/// on), bools `true`/`false`, bytes in standard base64, lists and maps as JSON (map keys
/// sorted), empty as "".
pub fn value_to_string(v: &AnyValue) -> String {
    render(v.value.as_ref())
}

fn render(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(f)) => format_double(*f),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => to_json(Some(v)).to_string(),
    }
}

fn format_double(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Rust writes `1e21` / `1.5e-7`; the collector (ES6 style) writes `1e+21` / `1.5e-7`.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

fn to_json(v: Option<&Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(f)) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Some(Value::BytesValue(b)) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(|v| to_json(v.value.as_ref())).collect()),
        Some(Value::KvlistValue(kvs)) => {
            let mut entries: Vec<&KeyValue> = kvs.values.iter().collect();
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            let mut m = serde_json::Map::new();
            for kv in entries {
                m.insert(kv.key.clone(), to_json(kv.value.as_ref().and_then(|v| v.value.as_ref())));
            }
            J::Object(m)
        }
    }
}

/// A YAML literal as an OTLP value: strings, integers (int64), floats, bools, lists, maps.
pub(crate) fn json_to_any(v: &serde_json::Value) -> Option<AnyValue> {
    use serde_json::Value as J;
    let out = match v {
        J::Null => return None,
        J::Bool(b) => Value::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64()?),
        },
        J::String(s) => Value::StringValue(s.clone()),
        J::Array(a) => {
            Value::ArrayValue(ArrayValue { values: a.iter().map(|v| json_to_any(v).unwrap_or_default()).collect() })
        }
        J::Object(m) => Value::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| KeyValue { key: k.clone(), value: json_to_any(v) }).collect(),
        }),
    };
    Some(AnyValue { value: Some(out) })
}

fn regex(p: &str, at: &str) -> Result<Regex, Error> {
    Regex::new(p).map_err(|e| Error::config(at, format!("bad regular expression {p:?}: {e}")))
}

fn compile_action(a: &ActionConfig, at: &str) -> Result<Action, Error> {
    let name = a.action.to_ascii_lowercase();
    let err = |m: String| Error::config(at, m);
    let key = a.key.as_deref().filter(|k| !k.is_empty());
    let unused = |fields: &[(&str, bool)]| -> Result<(), Error> {
        match fields.iter().find(|(_, set)| *set) {
            Some((f, _)) => Err(err(format!("{name} does not take `{f}`"))),
            None => Ok(()),
        }
    };
    match name.as_str() {
        "insert" | "update" | "upsert" => {
            let mode = match name.as_str() {
                "insert" => SetMode::Insert,
                "update" => SetMode::Update,
                _ => SetMode::Upsert,
            };
            let key = key.ok_or_else(|| err(format!("{name} requires a key")))?;
            unused(&[("pattern", a.pattern.is_some()), ("converted_type", a.converted_type.is_some())])?;
            let literal = a.value.as_ref().filter(|v| !v.is_null());
            let sources = [literal.is_some(), a.from_attribute.is_some(), a.from_context.is_some()];
            let source = match sources.iter().filter(|s| **s).count() {
                0 => return Err(err(format!("{name} requires one of value, from_attribute or from_context"))),
                1 => {
                    if let Some(v) = literal {
                        if a.default_value.is_some() {
                            return Err(err("default_value applies only with from_attribute or from_context".into()));
                        }
                        Source::Value(json_to_any(v).unwrap_or_default())
                    } else if let Some(src) = &a.from_attribute {
                        Source::Attribute(src.clone())
                    } else {
                        let c = a.from_context.as_deref().unwrap_or_default();
                        Source::Context(if c == "client.address" {
                            ContextKey::ClientAddress
                        } else if c.starts_with("auth.") {
                            ContextKey::Auth
                        } else {
                            let name = c.strip_prefix("metadata.").unwrap_or(c);
                            if name.is_empty() {
                                return Err(err("from_context names no key".into()));
                            }
                            ContextKey::Metadata(name.to_ascii_lowercase())
                        })
                    }
                }
                _ => return Err(err("only one of value, from_attribute and from_context may be set".into())),
            };
            let default = a.default_value.as_ref().and_then(json_to_any);
            Ok(Action::Set { key: key.to_owned(), mode, source, default })
        }
        "delete" | "hash" => {
            unused(&[
                ("value", a.value.is_some()),
                ("from_attribute", a.from_attribute.is_some()),
                ("from_context", a.from_context.is_some()),
                ("default_value", a.default_value.is_some()),
                ("converted_type", a.converted_type.is_some()),
            ])?;
            let pattern = a.pattern.as_deref().map(|p| regex(p, at)).transpose()?;
            if key.is_none() && pattern.is_none() {
                return Err(err(format!("{name} requires a key or a pattern")));
            }
            let sel = KeySelector { key: key.map(str::to_owned), pattern };
            Ok(if name == "delete" { Action::Delete(sel) } else { Action::Hash(sel) })
        }
        "extract" => {
            let key = key.ok_or_else(|| err("extract requires a key".into()))?;
            unused(&[
                ("value", a.value.is_some()),
                ("from_attribute", a.from_attribute.is_some()),
                ("from_context", a.from_context.is_some()),
                ("default_value", a.default_value.is_some()),
                ("converted_type", a.converted_type.is_some()),
            ])?;
            let p = a.pattern.as_deref().ok_or_else(|| err("extract requires a pattern".into()))?;
            let regex = regex(p, at)?;
            let names: Vec<String> = regex.capture_names().flatten().map(str::to_owned).collect();
            if names.is_empty() {
                return Err(err(format!("extract pattern {p:?} has no named group (?P<name>…)")));
            }
            if names.len() + 1 != regex.captures_len() {
                return Err(err(format!("extract pattern {p:?} has an unnamed group; use (?P<name>…) or (?:…)")));
            }
            Ok(Action::Extract { key: key.to_owned(), regex, names })
        }
        "convert" => {
            let key = key.ok_or_else(|| err("convert requires a key".into()))?;
            unused(&[
                ("value", a.value.is_some()),
                ("pattern", a.pattern.is_some()),
                ("from_attribute", a.from_attribute.is_some()),
                ("from_context", a.from_context.is_some()),
                ("default_value", a.default_value.is_some()),
            ])?;
            let to = match a.converted_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("int") => ConvertTo::Int,
                Some("double") => ConvertTo::Double,
                Some("string") => ConvertTo::String,
                Some(other) => {
                    return Err(err(format!("convert: converted_type {other:?} is not one of int, double, string")));
                }
                None => return Err(err("convert requires converted_type (int, double or string)".into())),
            };
            Ok(Action::Convert { key: key.to_owned(), to })
        }
        "" => Err(err("action is empty (insert, update, upsert, delete, hash, extract, convert)".into())),
        other => Err(err(format!("unknown action {other:?} (insert, update, upsert, delete, hash, extract, convert)"))),
    }
}

// ----- include / exclude ---------------------------------------------------------------------

/// The collector's kind names, as OTLP/JSON spells them.
const SPAN_KINDS: [&str; 6] = spoor_model::otlp::SPAN_KIND_NAMES;

fn kind_name(kind: i32) -> &'static str {
    usize::try_from(kind).ok().and_then(|k| SPAN_KINDS.get(k)).copied().unwrap_or("")
}

#[derive(Clone, Debug)]
enum StrSet {
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
enum ValueCond {
    Exists,
    Equals(AnyValue),
    Regexp(Regex),
}

#[derive(Clone, Debug)]
struct AttrCond {
    key: String,
    value: ValueCond,
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
struct LibCond {
    name: StrSet,
    version: Option<StrSet>,
}

#[derive(Clone, Debug)]
struct Matcher {
    services: Option<StrSet>,
    span_names: Option<StrSet>,
    span_kinds: Option<StrSet>,
    attributes: Vec<AttrCond>,
    resources: Vec<AttrCond>,
    libraries: Vec<LibCond>,
}

impl Matcher {
    /// All given fields must match; within a list field any item may match; `attributes`
    /// and `resources` items must all match.
    fn matches(&self, res: &[KeyValue], scope: Option<&InstrumentationScope>, span: &Span) -> bool {
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

fn compile_matcher(m: &MatchConfig, at: &str) -> Result<Matcher, Error> {
    let regexp = match m.match_type.as_deref() {
        Some("strict") => false,
        Some("regexp") => true,
        Some(other) => {
            return Err(Error::config(format!("{at}.match_type"), format!("{other:?} is not one of strict, regexp")));
        }
        None => return Err(Error::config(format!("{at}.match_type"), "is required (strict or regexp)")),
    };
    if m.services.is_empty()
        && m.span_names.is_empty()
        && m.span_kinds.is_empty()
        && m.attributes.is_empty()
        && m.resources.is_empty()
        && m.libraries.is_empty()
    {
        return Err(Error::config(
            at,
            "names no field to match (services, span_names, span_kinds, attributes, resources, libraries)",
        ));
    }
    let set = |items: &[String], field: &str| -> Result<Option<StrSet>, Error> {
        if items.is_empty() {
            return Ok(None);
        }
        Ok(Some(if regexp {
            for (i, p) in items.iter().enumerate() {
                regex(p, &format!("{at}.{field}[{i}]"))?;
            }
            StrSet::Regexp(RegexSet::new(items).map_err(|e| Error::config(format!("{at}.{field}"), e.to_string()))?)
        } else {
            StrSet::Strict(items.to_vec())
        }))
    };
    let kinds: Vec<String> = if regexp {
        m.span_kinds.clone()
    } else {
        m.span_kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let up = k.to_ascii_uppercase();
                let full = if up.starts_with("SPAN_KIND_") { up } else { format!("SPAN_KIND_{up}") };
                if SPAN_KINDS.contains(&full.as_str()) {
                    Ok(full)
                } else {
                    Err(Error::config(
                        format!("{at}.span_kinds[{i}]"),
                        format!("unknown span kind {k:?} (one of {})", SPAN_KINDS.join(", ")),
                    ))
                }
            })
            .collect::<Result<_, _>>()?
    };
    let conds = |items: &[AttributeMatch], field: &str| -> Result<Vec<AttrCond>, Error> {
        items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let at = format!("{at}.{field}[{i}]");
                if a.key.is_empty() {
                    return Err(Error::config(at, "key is empty"));
                }
                let value = match a.value.as_ref().filter(|v| !v.is_null()) {
                    None => ValueCond::Exists,
                    Some(v) if regexp => match v {
                        serde_json::Value::String(p) => ValueCond::Regexp(regex(p, &at)?),
                        _ => return Err(Error::config(at, "with match_type regexp, value must be a string pattern")),
                    },
                    Some(v) => ValueCond::Equals(json_to_any(v).unwrap_or_default()),
                };
                Ok(AttrCond { key: a.key.clone(), value })
            })
            .collect()
    };
    let libraries = m
        .libraries
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let at = format!("libraries[{i}]");
            Ok(LibCond {
                name: set(std::slice::from_ref(&l.name), &format!("{at}.name"))?.expect("one item"),
                version: l
                    .version
                    .as_ref()
                    .map(|v| set(std::slice::from_ref(v), &format!("{at}.version")))
                    .transpose()?
                    .flatten(),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Matcher {
        services: set(&m.services, "services")?,
        span_names: set(&m.span_names, "span_names")?,
        span_kinds: set(&kinds, "span_kinds")?,
        attributes: conds(&m.attributes, "attributes")?,
        resources: conds(&m.resources, "resources")?,
        libraries,
    })
}
